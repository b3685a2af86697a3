import os

import pytest
import torch

# OMP_NUM_THREADS wins, so that the suite can share a machine without oversubscribing it
torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", min(2, os.cpu_count() or 1))))


@pytest.fixture
def tiny_digits():
    """Digits 0-4 as uint8 (N, 1, 8, 8) training images."""
    from oodkit.data import as_images, load_dataset

    return as_images(load_dataset("digits-0to4", "train").images)
