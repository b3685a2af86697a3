"""Every file oodkit writes goes through oodkit.atomic: whole or not at all, ordinary
modes, and no temporaries left behind by writers that were killed."""
import os

import numpy as np
import pytest
import torch

from oodkit.atomic import atomic_path, atomic_write
from oodkit.detectors import make_detector

from .test_detectors import fixed_model

DEAD_PID = 2 ** 22 + 7  # above Linux's largest pid: no such process


def test_a_dead_writers_temporary_is_removed_by_the_next_write_of_any_file(tmp_path):
    """SIGKILL runs no handler, so its temporary survives; the next write to the same
    path removes it, whatever writes there (before, only checkpoints did)."""
    x = torch.randint(0, 256, (12, 1, 8, 8), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    det = make_detector("typicality", model=fixed_model(seed=1), progress=False).fit(x)
    stale = tmp_path / f".d.npz.{DEAD_PID}.abc.tmp"
    live = tmp_path / f".d.npz.{os.getpid()}.def.tmp"
    stale.write_bytes(b"half a file")
    live.write_bytes(b"being written")
    det.save(tmp_path / "d.npz")
    assert not stale.exists() and live.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["d.npz", live.name])


def test_a_failed_write_keeps_the_old_file_and_leaves_nothing(tmp_path):
    target = atomic_write(tmp_path / "r.csv", b"old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            with open(tmp, "wb") as f:
                f.write(b"new, half")
            raise RuntimeError("killed mid-write")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["r.csv"]


@pytest.mark.parametrize("mask", [0o022, 0o077])
def test_files_get_the_mode_an_ordinary_open_gives(tmp_path, mask):
    old = os.umask(mask)
    try:
        p = atomic_write(tmp_path / "a.json", b"{}")
    finally:
        os.umask(old)
    assert p.stat().st_mode & 0o777 == 0o666 & ~mask
    np.testing.assert_array_equal(np.frombuffer(p.read_bytes(), np.uint8), np.frombuffer(b"{}", np.uint8))


def test_dead_writers_temporaries_are_found_for_names_with_brackets(tmp_path):
    """Class-subset names (``cifar10[0-5]``) reach file names (the bench's model cache):
    the brackets are part of the name, not a glob pattern. Temporaries of another file
    whose name merely starts the same way are left alone."""
    target = tmp_path / "cifar10[0-5]-small.partial.pt"
    stale = tmp_path / f".{target.name}.{DEAD_PID}.abc.tmp"
    stale.write_bytes(b"half")
    other = tmp_path / ".cifar10[0-5]-small.partial.pt.500.pt.4194311.x.tmp"  # another target's temp
    other.write_bytes(b"not ours")
    atomic_write(target, b"whole")
    assert not stale.exists() and other.exists() and target.read_bytes() == b"whole"
