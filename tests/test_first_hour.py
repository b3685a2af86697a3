"""The first hour of a new user: a fast, narrow help; a quiet library; inputs in the
layouts people have; CSVs that carry their thresholds."""
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from oodkit.checkpoint import save_checkpoint
from oodkit.cli import main
from oodkit.data import as_images, load_dataset

from .test_detectors import fixed_model

COMMANDS = [[], ["bench"], ["fit"], ["score"], ["train"], ["models"], ["datasets"]]


@pytest.mark.parametrize("cmd", COMMANDS, ids=lambda c: " ".join(c) or "oodkit")
def test_every_help_fits_80_columns(cmd):
    r = CliRunner().invoke(main, [*cmd, "--help"], terminal_width=80)
    assert r.exit_code == 0, r.output
    wide = [line for line in r.output.splitlines() if len(line) > 80]
    assert not wide, wide
    if cmd in (["bench"], ["fit"]):
        assert "upright:" in r.output and "fused:" in r.output  # the detector table, read from the registry


def test_help_and_import_load_neither_torch_nor_sklearn():
    code = ("import sys; import oodkit; from oodkit.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('torch', 'sklearn', 'pandas', 'matplotlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"


def test_library_calls_print_nothing_unless_asked(capsys, tmp_path):
    from oodkit import TrainConfig, fit_model
    from oodkit.detectors import make_detector

    x = as_images(load_dataset("digits-0to4", "train").images)
    fit_model(x[:64], net="tiny", T=10, config=TrainConfig(steps=2, batch_size=8, save_every=0), out=tmp_path / "m.pt")
    det = make_detector("fused", model=str(tmp_path / "m.pt")).fit(x)
    det.score_samples(x[:20])
    out = capsys.readouterr()
    assert out.out == "" and out.err == "", out
    make_detector("loglik", model=str(tmp_path / "m.pt"), progress=True).fit(x)
    assert capsys.readouterr().err != ""  # asked for: a progress bar


def test_log_prob_takes_uint8_pixels_in_either_layout():
    model = fixed_model()
    px = np.random.default_rng(0).integers(0, 256, (5, 8, 8, 1), dtype=np.uint8)
    want = model.log_prob(torch.from_numpy(px).permute(0, 3, 1, 2).float() * (2 / 255) - 1)
    torch.testing.assert_close(model.log_prob(px), want, rtol=0, atol=1e-6)  # (N, H, W, C)
    torch.testing.assert_close(model.log_prob(torch.from_numpy(px).permute(0, 3, 1, 2)), want, rtol=0, atol=1e-6)
    assert model.bpd(px).shape == (5,)
    with pytest.raises(TypeError, match=r"convert 8-bit pixels with oodkit.data.images.to_float\(oodkit.as_images"):
        model.logits(torch.from_numpy(px).permute(0, 3, 1, 2).contiguous())


def test_score_csv_of_a_model_has_thresholds_and_a_flat_folder_has_no_label(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OODKIT_CACHE", str(tmp_path / "cache"))
    save_checkpoint(tmp_path / "m.pt", fixed_model(), data={"dataset": "digits-0to4"})
    (tmp_path / "imgs").mkdir()
    for i in range(4):
        Image.fromarray(np.full((8, 8), 60 * i, np.uint8)).save(tmp_path / "imgs" / f"{i}.png")
    r = CliRunner().invoke(main, ["score", "--model", "m.pt", "--data", "folder:imgs", "--out", "s.csv", "--quiet"])
    assert r.exit_code == 0, r.output
    df = pd.read_csv(tmp_path / "s.csv")
    assert "label" not in df.columns and "path" in df.columns
    assert {"fused", "fused_threshold", "fused_is_ood", "loglik_threshold"} <= set(df.columns)
    assert (df["fused_is_ood"] == (df["fused"] < df["fused_threshold"])).all()


def test_a_warning_met_by_every_detector_is_shown_once_as_one_line(tmp_path, monkeypatch):
    """The audit of 2026-12-04: `oodkit fit` on the images the bundled model trained on
    printed the same warning four times, each with a source line of oodkit's."""
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(main, ["fit", "--model", "digits-0to4", "--data", "digits-0to4", "--out", "d.npz",
                                  "--quiet"])
    assert r.exit_code == 0, r.output
    warned = [line for line in r.output.splitlines() if "trained on 601 of these 601" in line]
    assert len(warned) == 1 and warned[0].startswith("Warning: "), r.output
    assert ".py:" not in r.output and "fit_representation" not in r.output, r.output
