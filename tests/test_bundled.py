"""Pretrained models ship their fitted default detectors: scoring with a pretrained name
costs only the passes over the scored images, and gives what fitting here gives."""
import shutil

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

import oodkit
import oodkit.pretrained as pretrained
from oodkit.checkpoint import CheckpointError
from oodkit.cli import main


def test_score_with_a_pretrained_name_reads_the_shipped_statistics_and_matches_fitting_here(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = lambda *a: CliRunner().invoke(main, [str(x) for x in a], catch_exceptions=False)
    r = run("score", "--model", "digits-0to4", "--data", "digits-5to9", "--out", "shipped.csv", "--quiet")
    assert r.exit_code == 0 and "statistics shipped with the model" in r.output, r.output
    # the digits model's statistics were fitted on all its 601 training images: the same as here
    r = run("score", "--model", "digits-0to4", "--data", "digits-5to9", "--fit-data", "digits-0to4",
            "--out", "here.csv", "--quiet")
    assert r.exit_code == 0, r.output
    shipped, here = pd.read_csv("shipped.csv"), pd.read_csv("here.csv")
    assert list(shipped.columns) == list(here.columns) and "fused_threshold" in shipped.columns
    # 1e-12 on the CPU that exported them; oneDNN picks fp32 kernels by instruction set, and
    # on an AVX-512 CPU the shipped and the fitted-here scores were 7e-6 apart (relative)
    np.testing.assert_allclose(shipped.drop(columns=["index"]).astype(float).to_numpy(),
                               here.drop(columns=["index"]).astype(float).to_numpy(), rtol=1e-4, atol=1e-9)


def test_the_shipped_detectors_load_by_name_and_score_in_one_pass():
    det = oodkit.load_detector("digits-0to4", name="fused")
    calls = []
    det.model_.net.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    x = oodkit.as_images(oodkit.load_dataset("letters", "test").images)
    assert det.score_samples(x).shape == (len(x),) and sum(calls) == len(x)
    assert (det.predict(x) == -1).mean() > 0.9  # letters are not digits


def test_damaged_shipped_statistics_are_refused(tmp_path, monkeypatch):
    weights = tmp_path / "weights"
    shutil.copytree(pretrained.PRETRAINED_DIR, weights)
    monkeypatch.setattr(pretrained, "PRETRAINED_DIR", weights)
    data = bytearray((weights / "digits-0to4.detectors.npz").read_bytes())
    data[len(data) // 2] ^= 1
    (weights / "digits-0to4.detectors.npz").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="detectors bundled with 'digits-0to4'.*reinstall"):
        oodkit.load_detectors("digits-0to4")
