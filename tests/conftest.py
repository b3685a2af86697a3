"""Shared test set-up: thread count, an isolated cache for every test, the embedded
digits, and tiny models of every kind with seeded random weights (no training: the
numbers they give depend on nothing but the seed and the arithmetic)."""
import os

import pytest
import torch

# OMP_NUM_THREADS wins, so that the suite can share a machine without oversubscribing it
torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", min(2, os.cpu_count() or 1))))


def pytest_addoption(parser):
    parser.addoption("--slow", action="store_true", help="also run the tests marked slow (the full suite)")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: long end-to-end runs (kill/resume, training to a target); run with --slow")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--slow"):
        return
    skip = pytest.mark.skip(reason="slow: run with --slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """No test reads or writes the user's ~/.cache/oodkit."""
    monkeypatch.setenv("OODKIT_CACHE", str(tmp_path_factory.getbasetemp() / "oodkit-cache"))


@pytest.fixture
def tiny_digits():
    """Digits 0-4 as uint8 (N, 1, 8, 8) training images."""
    from oodkit.data import as_images, load_dataset

    return as_images(load_dataset("digits-0to4", "train").images)


@pytest.fixture(scope="session")
def tiny_models():
    """``{kind: model}`` on 8x8 grayscale images, T = 20: a CDM with a 3-class head and a
    rotation head (every CDM detector runs on it), a DDPM and a joint model."""
    from oodkit import CDM, DDPM, JointDiffusion, NoiseSchedule, unet_from_preset

    from .tiny import seeded as _seeded

    s = NoiseSchedule.uniform(20)
    cdm = CDM(unet_from_preset("tiny", in_channels=1, image_size=8, num_classes=s.num_classes), s, num_labels=3,
              rotations=4)
    ddpm = DDPM(unet_from_preset("tiny", in_channels=1, image_size=8, time_conditioning=True), s,
                image_shape=(1, 8, 8))
    joint = JointDiffusion(unet_from_preset("tiny", in_channels=1, image_size=8, time_conditioning=True), s,
                           num_labels=3, image_shape=(1, 8, 8))
    return {"cdm": _seeded(cdm, 1), "ddpm": _seeded(ddpm, 2), "joint": _seeded(joint, 3)}
