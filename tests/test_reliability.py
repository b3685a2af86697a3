"""Reliability II: special files, concurrent runs, outputs that would destroy inputs,
config values of the wrong type, and API parameters: each a one-line error naming what
is wrong (exit 2 on the command line), never a hang, a traceback or a silent change."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from oodkit.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from oodkit.cli import main
from oodkit.data import as_images, load_dataset
from oodkit.detectors import CDMDetector, DiffusionDetector, make_detector
from oodkit.detectors.persist import DetectorFileError, load_detectors

from .test_detectors import fixed_model


@pytest.fixture
def run(tmp_path, monkeypatch):
    monkeypatch.setenv("OODKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)

    def _run(*args):
        r = CliRunner().invoke(main, [str(a) for a in args])
        assert r.exception is None or isinstance(r.exception, SystemExit), r.output
        return r

    return _run


def _one_line_error(r, text):
    assert r.exit_code == 2, r.output
    lines = [ln for ln in r.output.splitlines() if ln.startswith("Error")]
    assert len(lines) == 1 and text in lines[0], r.output


@pytest.fixture
def fifo(tmp_path):
    path = tmp_path / "pipe.pt"
    os.mkfifo(path)
    return path


# -- special files ---------------------------------------------------------------------
@pytest.mark.parametrize("what", ["fifo", "dir", "dev"])
def test_special_files_as_inputs_are_refused_not_read(run, tmp_path, fifo, what):
    target = {"fifo": fifo, "dir": tmp_path, "dev": "/dev/zero"}[what]
    kind = {"fifo": "is a pipe", "dir": "is a folder", "dev": "is a device"}[what]
    with pytest.raises(CheckpointError, match=f"checkpoint {target} {kind}, not a"):
        load_checkpoint(target)
    with pytest.raises(DetectorFileError, match=f"detector file {target} {kind}"):
        load_detectors(target)
    _one_line_error(run("score", "--model", target, "--data", "digits", "--out", "s.csv"), kind)
    _one_line_error(run("score", "--detector", target, "--data", "digits", "--out", "s.csv"), kind)


@pytest.mark.parametrize("what", ["fifo", "symlink", "dev"])
def test_outputs_that_are_not_regular_files_are_never_replaced(run, tmp_path, fifo, what):
    save_checkpoint(tmp_path / "m.pt", fixed_model())
    (tmp_path / "keep.csv").write_text("precious\n")
    if what == "symlink":
        os.symlink(tmp_path / "keep.csv", tmp_path / "link.csv")
    out = {"fifo": fifo, "symlink": tmp_path / "link.csv", "dev": "/dev/null"}[what]
    r = run("score", "--model", "m.pt", "--data", "digits", "--out", out)
    _one_line_error(r, "exists and is not a regular file")
    assert (tmp_path / "keep.csv").read_text() == "precious\n"


def test_an_output_that_names_an_input_is_refused(run, tmp_path):
    save_checkpoint(tmp_path / "m.pt", fixed_model())
    np.savez(tmp_path / "d.npz", images=np.zeros((30, 8, 8), np.uint8))
    before = (tmp_path / "m.pt").read_bytes()
    _one_line_error(run("fit", "--model", "m.pt", "--data", "digits-0to4", "--detectors", "loglik", "--out", "m.pt"),
                    "--out m.pt is the --model checkpoint this command reads")
    _one_line_error(run("score", "--model", "m.pt", "--data", f"npz:{tmp_path / 'd.npz'}", "--out", "d.npz"),
                    "is the --data file this command reads")
    _one_line_error(run("train", "--data", "digits", "--init", "m.pt", "--out", "m.pt", "--overwrite", "--net", "tiny"),
                    "is the --init checkpoint this command reads")
    assert (tmp_path / "m.pt").read_bytes() == before


def test_every_kind_of_input_file_is_protected_from_the_output(run, tmp_path):
    """Audit 4: the check knew npz: and folder: data and missed the --calibrate-on file,
    tar: data, paths with {split} and files inside an input folder, and `fit` replaced
    any existing file (a score table) with a detector file."""
    import tarfile

    x = np.zeros((30, 8, 8), np.uint8) + np.arange(30, dtype=np.uint8)[:, None, None]
    np.savez(tmp_path / "cal.npz", images=x)
    np.savez(tmp_path / "sp_train.npz", images=x)
    np.savez(tmp_path / "sp_test.npz", images=x)
    (tmp_path / "shards").mkdir()
    np.savez(tmp_path / "shards" / "a.npz", images=x)
    with tarfile.open(tmp_path / "t.tar", "w") as t:
        t.add(tmp_path / "cal.npz", "x.npz")  # any member: the file must simply stay as it is
    (tmp_path / "scores.csv").write_text("index\n0\n")
    kept = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    fit = ["fit", "--model", "digits-0to4", "--detectors", "loglik", "--quiet"]
    _one_line_error(run(*fit, "--data", "digits-0to4", "--calibrate-on", "npz:cal.npz", "--out", "cal.npz"),
                    "is the --calibrate-on file this command reads")
    _one_line_error(run(*fit, "--data", "tar:t.tar", "--out", "t.tar"), "is the --data file this command reads")
    _one_line_error(run(*fit, "--data", "npz:sp_{split}.npz", "--out", "sp_train.npz"),
                    "is the --data file this command reads")
    _one_line_error(run(*fit, "--data", "npz:shards", "--out", "shards/a.npz"), "would be read as part of shards")
    _one_line_error(run(*fit, "--data", "npz:shards", "--out", "shards/new.npz"), "would be read as part of shards")
    _one_line_error(run("train", "--data", "tar:t.tar", "--net", "tiny", "--steps", "1", "--out", "t.tar",
                        "--overwrite", "--quiet"), "is the --data file this command reads")
    _one_line_error(run(*fit, "--data", "digits-0to4", "--out", "scores.csv"),
                    "exists and is not an oodkit detector file")
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file() and p in kept} == kept
    r = run(*fit, "--data", "digits-0to4", "--out", "det.npz")
    assert r.exit_code == 0 and run(*fit, "--data", "digits-0to4", "--out", "det.npz").exit_code == 0  # a refit


# -- concurrent runs -----------------------------------------------------------------------
_HOLDER = ("import fcntl, os, sys\n"
           "fd = os.open(sys.argv[1], os.O_CREAT | os.O_RDWR)\n"
           "fcntl.flock(fd, fcntl.LOCK_EX); os.write(fd, str(os.getpid()).encode())\n"
           "print('held', flush=True); sys.stdin.read()\n")


def _hold(lock):
    """Another process holding ``lock`` (as a running oodkit would), until its stdin closes."""
    p = subprocess.Popen([sys.executable, "-c", _HOLDER, str(lock)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         text=True)
    assert p.stdout.readline().strip() == "held"  # waits on the event, not on a clock
    return p


def test_a_second_run_on_a_locked_output_refuses_and_the_lock_dies_with_its_process(run, tmp_path):
    save_checkpoint(tmp_path / "m.pt", fixed_model())
    holder = _hold(tmp_path / ".s.csv.lock")
    try:
        _one_line_error(run("score", "--model", "m.pt", "--data", "digits-0to4", "--out", "s.csv", "--quiet"),
                        f"another oodkit run (pid {holder.pid}) is writing score file s.csv")
        assert not (tmp_path / "s.csv").exists()
    finally:
        holder.communicate("")  # the holder exits: the kernel releases its lock; the file stays behind
    holder = _hold(tmp_path / ".res.lock")
    try:
        _one_line_error(run("bench", "digits-0to4-vs-noise", "--model", "m.pt", "--output-dir", "res", "--quiet"),
                        "is writing results folder res")
    finally:
        holder.communicate("")
    r = run("score", "--model", "m.pt", "--data", "digits-0to4", "--out", "s.csv", "--quiet")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "s.csv").exists() and not (tmp_path / ".s.csv.lock").exists()


def test_an_output_in_a_folder_not_yet_made_is_locked_too(run, tmp_path, monkeypatch):
    """Audit 4: the lock was skipped when --out's folder did not exist yet, so two runs
    into a new folder were not kept apart."""
    import oodkit.atomic as atomic

    taken = []
    real = atomic.output_lock
    monkeypatch.setattr(atomic, "output_lock", lambda path, what: taken.append(str(path)) or real(path, what))
    r = run("score", "--detector", "digits-0to4", "--data", "digits-5to9", "--out", "new/deeper/s.csv", "--quiet")
    assert r.exit_code == 0 and taken == ["new/deeper/s.csv"], (taken, r.output)
    r = run("score", "--data", "digits-5to9", "--out", "other/deeper/s.csv", "--quiet")  # a usage error
    assert r.exit_code == 2 and not (tmp_path / "other").exists()  # leaves no folder behind


def test_torchrun_ranks_other_than_0_do_not_take_the_lock(run, tmp_path, monkeypatch):
    save_checkpoint(tmp_path / "m.pt", fixed_model())
    holder = _hold(tmp_path / ".s.csv.lock")  # rank 0 writing
    try:
        monkeypatch.setenv("RANK", "1")
        r = run("score", "--model", "m.pt", "--data", "digits-0to4", "--out", "s.csv", "--quiet")
        assert "another oodkit run" not in r.output, r.output
    finally:
        holder.communicate("")


# -- config files ---------------------------------------------------------------------------
@pytest.mark.parametrize("text, message", [
    ("steps = 2.7", "steps must be an integer, got 2.7 (float)"),
    ("steps = true", "steps must be an integer, got True (bool)"),
    ("hflip = 'yes'", "hflip must be true or false, got 'yes' (str)"),
    ("lr = '0.1'", "lr must be a number, got '0.1' (str)"),
    ("data = 2024-01-01", "data must be a plain value"),
    ("net = {a = 1}", "net must be a plain value"),
    ("train = 3", "[train] must be a table of settings"),
])
def test_config_values_of_the_wrong_type_are_refused(run, tmp_path, text, message):
    (tmp_path / "c.toml").write_text(text + "\n")
    r = run("train", "--data", "digits", "--out", "x.pt", "--config", "c.toml")
    assert r.exit_code == 2 and message in r.output, r.output
    assert not (tmp_path / "x.pt").exists()


def test_config_files_that_are_not_utf8_toml_are_refused(run, tmp_path):
    (tmp_path / "c.toml").write_bytes(b"\xff\xfesteps = 3\n")
    r = run("train", "--data", "digits", "--out", "x.pt", "--config", "c.toml")
    assert r.exit_code == 2 and "is not valid UTF-8 TOML" in r.output, r.output
    (tmp_path / "d.toml").write_text("data = 'digits'\nnet = 'nosuch'\n")  # an option's own name works
    r = run("train", "--out", "x.pt", "--config", "d.toml")
    assert r.exit_code == 2 and "--net 'nosuch'" in r.output, r.output


# -- API parameters -------------------------------------------------------------------------
@pytest.mark.parametrize("params, message", [
    ({"batch_size": 0}, "batch_size must be an integer in [1, 1000000], got 0"),
    ({"batch_size": -3}, "batch_size must be an integer"),
    ({"batch_size": 2.5}, "batch_size must be an integer"),
    ({"batch_size": "8"}, "batch_size must be an integer"),
    ({"contamination": "auto"}, "contamination must be a number in [0, 0.5)"),
    ({"contamination": None}, "contamination must be a number"),
    ({"device": "gpu7"}, "device must be None or a torch device"),
    ({"n_levels": 0}, "n_levels must be an integer"),
    ({"density": "kde"}, "density must be one of 'knn', 'gmm'"),
    ({"value_range": (1, 0)}, "value_range must be a (low, high) pair"),
    ({"layout": "hwc"}, "layout must be one of 'nhwc', 'nchw' or None"),
    ({"resize": "yes"}, "resize must be True or False"),
])
def test_detector_parameters_are_checked_by_name_before_any_work(params, message):
    calls = []
    model = fixed_model()
    model.net.register_forward_hook(lambda *a: calls.append(1))
    with pytest.raises(ValueError) as e:
        CDMDetector(model=model, **params).fit(np.zeros((30, 8, 8), np.uint8))
    assert message in str(e.value) and "CDMDetector parameter" in str(e.value)
    assert not calls  # refused before the network ran


def test_diffusion_detector_parameters_and_models_are_checked():
    with pytest.raises(ValueError, match="DiffusionDetector parameter n_points must be an integer"):
        DiffusionDetector(model=fixed_model(), score="itd", n_points=0).fit(np.zeros((4, 8, 8), np.uint8))
    with pytest.raises(ValueError, match="recon_levels must be a non-empty list"):
        DiffusionDetector(model=fixed_model(), score="recon", recon_levels=()).fit(np.zeros((4, 8, 8), np.uint8))


def test_tpr_and_calibration_sizes_are_checked():
    x = as_images(load_dataset("digits-0to4", "train").images)
    det = make_detector("loglik", model=fixed_model()).fit(x)
    for bad in ("0.95", None, 1.2):
        with pytest.raises(ValueError, match="tpr must"):
            det.calibrate(x[:50], tpr=bad)
    with pytest.raises(ValueError, match=r"tpr=0.99 needs at least 99 held-out ID images for its guarantee, got 20"):
        det.calibrate(x[:20], tpr=0.99)


# -- results that would mislead --------------------------------------------------------------
def test_a_set_against_itself_is_refused_and_tiny_sets_get_no_interval(run, tmp_path):
    save_checkpoint(tmp_path / "m.pt", fixed_model())
    r = run("bench", "digits-0to4-vs-digits-0to4", "--model", "m.pt", "--quiet", "--output-dir", "o")
    _one_line_error(r, "300 of the 300 images of OOD set digits-0to4 are images of the in-distribution set")
    r = run("bench", "digits-0to4-vs-noise", "--model", "m.pt", "--quiet", "--output-dir", "o", "--max-test", "3",
            "--detectors", "loglik")
    assert r.exit_code == 0, r.output
    assert "no 95 % interval for loglik on noise: 3 image(s) on one side" in r.output
    import json

    row = json.loads((tmp_path / "o" / "results.json").read_text())["results"][0]
    assert "auroc_lo" not in row or row["auroc_lo"] is None or row["auroc_lo"] != row["auroc_lo"]


def test_files_skipped_in_a_folder_are_reported(tmp_path):
    from PIL import Image

    from oodkit.data.sources import read_folder

    (tmp_path / "imgs").mkdir()
    for i in range(3):
        Image.fromarray(np.full((8, 8), i * 40, np.uint8)).save(tmp_path / "imgs" / f"{i}.png")
    (tmp_path / "imgs" / "notes.txt").write_text("not an image")
    with pytest.warns(UserWarning, match=r"skipped 1 file\(s\) that are not images .* e.g. notes.txt"):
        ds = read_folder(tmp_path / "imgs")
    assert len(ds) == 3 and ds.labels is None  # a flat folder has no labels (no column of zeros)


# -- resource limits -------------------------------------------------------------------------
def test_a_full_disk_or_a_name_too_long_is_one_line_naming_the_path(run, tmp_path, monkeypatch):
    import errno

    import oodkit.atomic
    import oodkit.streaming

    save_checkpoint(tmp_path / "m.pt", fixed_model())

    def full(path, data):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(oodkit.atomic, "atomic_write", full)
    monkeypatch.setattr(oodkit.streaming, "atomic_write", full)  # score writes each chunk's rows as it goes
    r = run("score", "--model", "m.pt", "--data", "digits-0to4", "--out", "s.csv", "--quiet")
    _one_line_error(r, "s.csv.parts/manifest.json: No space left on device (nothing was left half-written)")
    monkeypatch.undo()
    r = run("score", "--model", "m.pt", "--data", "digits-0to4", "--out", "x" * 300 + ".csv", "--quiet")
    _one_line_error(r, "File name too long")


@pytest.mark.parametrize("args, message", [
    (["bench", "digits[0-999999999]-vs-noise"], "classes are labels 0..99999"),
    (["train", "--data", "digits", "--out", "x.pt", "-T", "1000000000"], "1000000000 is not in the range 2<=x<=100000"),
    (["train", "--data", "digits", "--out", "x.pt", "--batch-size", "10000000000"], "is not in the range"),
    (["train", "--data", "digits", "--out", "x.pt", "--image-size", "100000"], "is not in the range 8<=x<=64"),
])
def test_sizes_that_cannot_be_allocated_are_refused_at_once(run, args, message):
    r = run(*args)
    assert r.exit_code == 2 and message in r.output, r.output


def test_labels_far_beyond_any_class_count_are_refused():
    from oodkit import TrainConfig, fit_model

    x = as_images(load_dataset("digits-0to4", "train").images)[:8]
    with pytest.raises(ValueError, match=r"labels go up to 10000000000: a class head takes labels 0..99999"):
        fit_model(x, net="tiny", T=10, config=TrainConfig(steps=1, batch_size=8), labels=np.r_[[10**10], [0] * 7],
                  model_options={"num_labels": "auto"})


def test_a_write_that_fails_names_the_users_file_for_every_writer(run, tmp_path, monkeypatch):
    """A full disk hits the temporary file; the error names the output the user gave (and a
    checkpoint is serialised before writing, so torch never sees the disk)."""
    import errno

    import oodkit.atomic

    def no_space(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device", src)

    monkeypatch.setattr(oodkit.atomic.os, "replace", no_space)
    r = run("train", "--data", "digits", "--net", "tiny", "-T", "10", "--steps", "2", "--batch-size", "8",
            "--save-every", "0", "--out", "t.pt", "--quiet")
    _one_line_error(r, "t.pt: No space left on device (nothing was left half-written)")
    assert not list(tmp_path.glob(".t.pt.*"))  # no temporary left behind


# -- the second audit of 2026-12-04 (the Python API and the environment) -------------------


def test_calibrating_on_images_the_network_trained_on_leaves_them_out_or_refuses(tmp_path, run):
    """`calibrate` on the bundled digits model's own training images said "301 held-out ID
    images" and then accepted 57 % of fresh ID images, not 95 %."""
    from oodkit.pretrained import load_model
    from oodkit.training import TrainConfig, fit_model

    x = as_images(load_dataset("digits-0to4", "train").images)
    fit_model(x[:200], net="tiny", T=10, config=TrainConfig(steps=2, batch_size=8, save_every=0),
              out=tmp_path / "m.pt")
    det = make_detector("loglik", model=load_model(tmp_path / "m.pt")).fit(x[400:])
    det.calibrate(x[:300], tpr=0.9)  # 200 it trained on, 100 it did not
    assert len(det.calibration_scores_) == 100 and "200 the network trained on were left out" in det.threshold_source_
    with pytest.raises(ValueError, match="trained on 200 of these 210 calibration images"):
        det.calibrate(x[:210], tpr=0.95)
    r = run("fit", "--model", "digits-0to4", "--data", "digits-0to4", "--max-train", "300", "--calibrate-on",
            "digits-0to4", "--calibrate-split", "train", "--out", "c.npz", "--quiet")
    _one_line_error(r, "the network was trained on 301 of these 301 calibration images")


def test_a_detector_of_a_model_changed_in_memory_saves_the_weights_it_used(tmp_path):
    """Saved by reference to the unchanged file, it reloaded the original weights: scores
    up to 62 nats apart."""
    import torch

    from oodkit.detectors.persist import load_detector
    from oodkit.pretrained import load_model

    x = as_images(load_dataset("digits-0to4", "test").images)
    model = load_model("digits-0to4")
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1.05)
    det = make_detector("loglik", model=model).fit(x[:100])
    det.save(tmp_path / "d.npz")
    np.testing.assert_array_equal(load_detector(tmp_path / "d.npz").score_samples(x[100:]), det.score_samples(x[100:]))
    same = make_detector("loglik", model=load_model("digits-0to4")).fit(x[:100])
    same.save(tmp_path / "e.npz")  # unchanged: still saved by reference (a few kB, not the weights)
    assert (tmp_path / "e.npz").stat().st_size < (tmp_path / "d.npz").stat().st_size / 10


@pytest.mark.parametrize("mode", ["CMYK", "YCbCr", "P"])
def test_pil_images_in_any_mode_read_as_their_colours(mode):
    """CMYK, YCbCr and HSV images were read as raw bands, palette images as palette indices."""
    from PIL import Image

    rgb = [Image.fromarray(np.random.default_rng(i).integers(0, 256, (8, 8, 3), dtype=np.uint8)) for i in range(4)]
    other = [im.convert(mode) for im in rgb]
    back = as_images([im.convert("RGB") for im in other])  # the colours the mode holds (P and YCbCr round)
    assert torch_equal(as_images(other), back)


def torch_equal(a, b) -> bool:
    return a.shape == b.shape and bool((a == b).all())


def test_scoring_after_set_params_changed_what_fit_fixed_is_refused():
    """contamination, model and device changed after fit were silently ignored."""
    from sklearn.exceptions import NotFittedError

    x = as_images(load_dataset("digits-0to4", "test").images)
    for change in ({"contamination": 0.3}, {"model": "mnist"}, {"device": "cpu:0"}):
        det = CDMDetector(model="digits-0to4", score="loglik").fit(x[:100])
        det.set_params(**change)
        with pytest.raises(NotFittedError, match=f"{next(iter(change))} changed since fit"):
            det.predict(x[100:])


def test_an_ood_set_that_repeats_some_id_images_has_them_left_out(run):
    """`digits-0to4-vs-digits[4-9]` ran with its class-4 images, which are ID test images."""
    ood = np.concatenate([load_dataset("digits-0to4", "test").images[:10],
                          np.random.default_rng(0).integers(0, 17, (30, 8, 8, 1), dtype=np.uint8) * 15])
    np.savez("mixed.npz", images=ood)
    r = run("bench", "digits-0to4-vs-npz:mixed.npz", "--model", "digits-0to4", "--detectors", "loglik", "--bootstrap",
            "0", "--output-dir", "res")
    assert r.exit_code == 0 and "left out 10 of the 40 images of npz:mixed.npz" in r.output, r.output
    assert "| 30 |" in (Path("res") / "results.md").read_text()


def test_input_whose_order_or_kind_cannot_be_matched_to_images_is_refused():
    import pandas as pd
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from oodkit.data import ImageInputError

    x = torch.from_numpy(load_dataset("digits-0to4", "test").images[:20]).permute(0, 3, 1, 2)
    with pytest.raises(ImageInputError, match="shuffled DataLoader"):
        as_images(DataLoader(TensorDataset(x), batch_size=4, shuffle=True))
    assert as_images(DataLoader(TensorDataset(x), batch_size=4)).shape == (20, 1, 8, 8)
    with pytest.raises(ImageInputError, match="DataFrame is not a batch of images"):
        as_images(pd.DataFrame(x.reshape(20, -1).numpy()))


@pytest.mark.parametrize("args,match", [(("loglik",), {"contaminaton": 0.2}), (("profile",), {"n_neighbours": 50}),
                                        (("loglik",), {"score": "fused"}), ((None,), {})])
def test_make_detector_refuses_what_it_would_have_dropped(args, match):
    with pytest.raises(TypeError):
        make_detector(*args, model=fixed_model(seed=0), **match)


def test_a_stray_world_size_is_one_line_not_a_traceback(run, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    monkeypatch.delenv("MASTER_PORT", raising=False)
    r = run("score", "--detector", "digits-0to4", "--data", "digits-5to9", "--out", "s.csv", "--quiet")
    _one_line_error(r, "WORLD_SIZE=2 is set but")


def test_a_bootstrap_too_small_for_an_interval_is_refused(run):
    """--bootstrap 1 printed a "95 % interval" that excluded its own estimate."""
    r = run("bench", "digits-0to4-vs-noise", "--model", "digits-0to4", "--detectors", "loglik", "--bootstrap", "1",
            "--output-dir", "res")
    _one_line_error(r, "a 95 % interval needs at least 100 resamples")


def test_fit_data_beside_a_detector_file_is_refused_not_ignored(run):
    r = run("score", "--detector", "digits-0to4", "--fit-data", "digits", "--data", "digits-5to9", "--out", "s.csv")
    _one_line_error(r, "--fit-data fits a --model's ID statistics")


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has CUDA")
def test_a_detector_on_a_device_this_machine_lacks_is_refused_in_one_line():
    """CDMDetector(device="cuda") on a machine without a GPU raised torch's RuntimeError."""
    x = as_images(load_dataset("digits-0to4", "test").images[:40])
    for device, words in (("cuda", "no CUDA GPU"), ("meta", "oodkit runs on cpu, cuda or mps")):
        with pytest.raises(ValueError, match=words) as e:
            CDMDetector(model="digits-0to4", device=device).fit(x)
        assert "\n" not in str(e.value)


def test_empty_or_misplaced_environment_folders(tmp_path, monkeypatch):
    """OODKIT_DATA="" meant the working folder, not ./data; OODKIT_CACHE set to a file gave
    "[Errno 20] Not a directory: 'afile/models'"."""
    from oodkit.data.registry import default_root
    from oodkit.pretrained import cache_root

    monkeypatch.setenv("OODKIT_DATA", "")
    assert default_root() == Path("data")
    monkeypatch.setenv("OODKIT_CACHE", "")
    assert cache_root() == Path.home() / ".cache" / "oodkit"
    (tmp_path / "afile").write_text("x")
    monkeypatch.setenv("OODKIT_CACHE", str(tmp_path / "afile"))
    with pytest.raises(ValueError, match="is a file, not a folder"):
        cache_root()


def test_more_mixture_components_than_fitting_images_warns():
    """profile-gmm with n_components=500 on 100 images was cut to 100 without a word."""
    x = as_images(load_dataset("digits-0to4", "test").images[:60])
    with pytest.warns(UserWarning, match="n_components=500 is more than the 60 fitting images"):
        make_detector("profile-gmm", model=fixed_model(seed=0), n_components=500, n_levels=6).fit(x)


def test_scoring_in_another_arithmetic_than_the_fit_warns(tmp_path, monkeypatch):
    """Thresholds and p-values compare a score with calibration scores: both must come
    from the same arithmetic. Shipped statistics are fp32, so `--precision bf16` against
    them warns (one line) and says how to refit; statistics fitted here in bf16 do not."""
    from click.testing import CliRunner

    from oodkit.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OODKIT_CACHE", str(tmp_path / "cache"))
    args = ["score", "--model", "digits-0to4", "--data", "digits-5to9", "--out", "s.csv", "--quiet", "--device", "cpu"]
    r = CliRunner().invoke(main, args + ["--precision", "bf16"])
    assert r.exit_code == 0, r.output
    warnings = [line for line in r.output.splitlines() if line.startswith("Warning:") and "arithmetic" in line]
    assert len(warnings) == 1 and "fitted in fp32" in warnings[0] and "--fit-data" in warnings[0], r.output
    r = CliRunner().invoke(main, args + ["--precision", "bf16", "--fit-data", "digits-0to4"])
    assert r.exit_code == 0 and "fitted in" not in r.output, r.output  # (it warns that the net saw these images)
    r = CliRunner().invoke(main, args)  # (the shipped thresholds' other warning: set on training images)
    assert r.exit_code == 0 and "arithmetic" not in r.output, r.output
    r = CliRunner().invoke(main, args + ["--precision", "tf32"])  # a CUDA setting: fp32 on the CPU
    assert r.exit_code == 0 and "arithmetic" not in r.output, r.output
    # fitted here in bf16 whatever the fitting file is called (it once went by the word "shipped")
    np.savez("shipped_fit.npz", images=load_dataset("digits-0to4", "train").images)
    r = CliRunner().invoke(main, args + ["--precision", "bf16", "--fit-data", "npz:shipped_fit.npz"])
    assert r.exit_code == 0 and "fitted in" not in r.output, r.output


def test_a_process_group_that_never_forms_is_one_line_not_a_half_hour_wait(run, monkeypatch):
    """A leftover torchrun environment (WORLD_SIZE=2 with a master address and port) and
    no second process: torch's default wait for the peers is 30 minutes. OODKIT_DIST_TIMEOUT
    bounds it (default 10 minutes) and the wait ends in one line saying what to do."""
    import socket
    import time

    with socket.socket() as s:  # a free port
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for k, v in {"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
                 "MASTER_PORT": str(port), "OODKIT_DIST_TIMEOUT": "3"}.items():
        monkeypatch.setenv(k, v)
    start = time.monotonic()
    r = run("score", "--detector", "digits-0to4", "--data", "digits-5to9", "--out", "s.csv", "--quiet",
            "--device", "cpu")
    _one_line_error(r, "no other process joined within 3 s")
    assert time.monotonic() - start < 60
    monkeypatch.setenv("OODKIT_DIST_TIMEOUT", "soon")
    _one_line_error(run("score", "--detector", "digits-0to4", "--data", "digits-5to9", "--out", "s.csv", "--quiet",
                        "--device", "cpu"), "OODKIT_DIST_TIMEOUT")


def test_a_score_table_inside_the_image_folder_it_scores_may_be_replaced(run, tmp_path):
    """Only data files inside an input folder are protected: a rerun that replaces its own
    CSV beside the images it scored is fine."""
    from PIL import Image

    (tmp_path / "imgs").mkdir()
    for i in range(3):
        Image.fromarray(np.full((8, 8), 40 * i, np.uint8)).save(tmp_path / "imgs" / f"{i}.png")
    args = ["score", "--detector", "digits-0to4", "--data", "folder:imgs", "--out", "imgs/s.csv", "--quiet"]
    assert run(*args).exit_code == 0 and run(*args).exit_code == 0
    fit = ["fit", "--model", "digits-0to4", "--data", "folder:imgs", "--detectors", "loglik", "--out", "imgs/d.npz"]
    assert run(*fit).exit_code == 0 and run(*fit).exit_code == 0  # a folder: set reads images, never .npz


def test_small_things_audit_4_found(run, tmp_path, tiny_models):
    """A detector saved onto a folder, `datasets` with a data root that is not a folder,
    the note of a model whose detectors fit no statistics, and bench's threshold columns
    left empty without a word."""
    import pandas as pd

    from oodkit.detectors import make_detector

    det = make_detector("loglik", model=fixed_model(seed=0)).fit(load_dataset("digits-0to4", "train").images[:100])
    (tmp_path / "folder").mkdir()
    with pytest.raises(ValueError, match="is a folder; give a file name"):
        det.save(tmp_path / "folder")
    _one_line_error(run("datasets", "--data-root", "nowhere"), "--data-root nowhere does not exist")
    (tmp_path / "afile").write_text("x")
    _one_line_error(run("datasets", "--data-root", "afile"), "--data-root afile is not a folder")
    r = run("train", "--kind", "ddpm", "--data", "digits-0to4", "--net", "tiny", "--steps", "2", "-T", "20",
            "--out", "ddpm.pt", "--quiet", "--device", "cpu")
    assert r.exit_code == 0, r.output
    r = run("score", "--model", "ddpm.pt", "--data", "letters", "--out", "d.csv", "--quiet", "--device", "cpu")
    assert r.exit_code == 0 and "fit no ID statistics" in r.output and "no ID data" not in r.output, r.output
    r = run("bench", "digits-0to4-vs-letters", "--model", "digits-0to4", "--detectors", "loglik", "--max-test", "20",
            "--bootstrap", "0", "--output-dir", "b", "--quiet")
    assert r.exit_code == 0, r.output
    assert pd.read_csv(tmp_path / "b" / "results.csv")["id_accepted@0.95"].isna().all()
    assert "needs two halves of at least 19" in (tmp_path / "b" / "results.md").read_text()


def test_what_audit_5_found_first(run, tmp_path):
    """A fitted kNN detector (the default fused) could not be pickled (a lambda held the
    search); a CDMDetector given a DDPM checkpoint raised a raw AttributeError; a huge
    --bootstrap ran the whole model stage and then blamed --batch-size; -T 1 made models
    whose itd failed with 'empty integration span'."""
    import pickle

    from oodkit.detectors import CDMDetector

    x = load_dataset("digits-0to4", "train").images[:80]
    det = CDMDetector(fixed_model(seed=0)).fit(x)
    back = pickle.loads(pickle.dumps(det))
    np.testing.assert_array_equal(back.score_samples(x[:20]), det.score_samples(x[:20]))
    r = run("train", "--kind", "ddpm", "--data", "digits-0to4", "--net", "tiny", "--steps", "2", "-T", "20",
            "--out", "ddpm.pt", "--quiet", "--device", "cpu")
    assert r.exit_code == 0, r.output
    with pytest.raises(ValueError, match="ddpm.pt is a ddpm model; CDMDetector needs a cdm"):
        CDMDetector("ddpm.pt", score="loglik").fit(x)
    _one_line_error(run("bench", "digits-0to4-vs-digits-5to9", "--model", "digits-0to4", "--bootstrap", "99999999999",
                        "--quiet"), "--bootstrap")
    _one_line_error(run("train", "--data", "digits-0to4", "--net", "tiny", "--steps", "2", "-T", "1", "--out", "t.pt"),
                    "-T")


def test_what_audit_5_found_next(run, tmp_path):
    """An OOD set named twice was dropped or counted twice in the means; an empty
    --output-dir wrote into (and cleaned) the current folder; a warm-up longer than the run
    kept the learning rate below --lr without a word; the threshold columns left empty for
    a small test set said nothing on the console."""
    bench = ["bench", "--model", "digits-0to4", "--detectors", "loglik", "--bootstrap", "0", "--quiet"]
    for spec in ("digits-0to4-vs-digits-5to9,digits-5to9", "digits[0-4]-vs-digits[5-9],digits[ 5-9 ]"):
        _one_line_error(run(*bench[:1], spec, *bench[1:], "--output-dir", "o"), "named twice")
    _one_line_error(run(*bench[:1], "digits-0to4-vs-letters", *bench[1:], "--output-dir", ""), "--output-dir")
    r = run("train", "--data", "digits-0to4", "--net", "tiny", "--steps", "3", "--warmup", "100", "--out", "t.pt",
            "--quiet", "--device", "cpu")
    assert r.exit_code == 0 and "warm-up" in r.output and "never reaches" in r.output, r.output
    r = run(*bench[:1], "digits-0to4-vs-letters", *bench[1:], "--max-test", "20", "--output-dir", "small")
    assert r.exit_code == 0 and "are too few: a threshold" in r.output, r.output


def test_api_edges_audit_5_found():
    """save_detectors of nothing wrote a file load_detectors refused, and with its
    arguments swapped raised a raw AttributeError; model.sample passed a negative or
    fractional count and fractional steps on to torch."""
    from oodkit import load_model
    from oodkit.detectors import make_detector
    from oodkit.detectors.persist import save_detectors

    det = make_detector("loglik", model=fixed_model(seed=0)).fit(load_dataset("digits-0to4", "train").images[:60])
    with pytest.raises(ValueError, match="no detectors to save"):
        save_detectors("e.npz", {})
    with pytest.raises(TypeError, match=r"save_detectors\(path, \{name: detector\}\)"):
        save_detectors({"loglik": det}, "x.npz")
    m = load_model("digits-0to4")
    for n, steps, match in ((-1, 5, "n must be"), (2.5, 5, "n must be"), (1, 10.0, "steps must be")):
        with pytest.raises(ValueError, match=match):
            m.sample(n, steps=steps)


def test_an_image_size_the_nets_cannot_take_is_refused_before_the_data_is_read(run):
    """Audit 5: --image-size promised 1..4096 and the nets take 8..64; 65 was refused only
    after the data set had been read and resized."""
    from oodkit.cli import NET_SIZE
    from oodkit.detectors import CDMDetector
    from oodkit.nn.unet import IMAGE_SIZES

    assert (NET_SIZE.min, NET_SIZE.max) == IMAGE_SIZES
    for size in ("65", "7"):
        r = run("train", "--data", "npz:nowhere.npz", "--image-size", size, "--out", "t.pt")
        assert r.exit_code == 2 and "is not in the range 8<=x<=64" in r.output, r.output
        r = run("bench", "digits-0to4-vs-letters", "--image-size", size, "--steps", "2")
        assert r.exit_code == 2 and "is not in the range 8<=x<=64" in r.output, r.output
    with pytest.raises(ValueError, match="image_size must be"):
        CDMDetector(image_size=65).fit(load_dataset("digits-0to4", "train").images[:20])


def test_one_thing_named_two_ways(run):
    """Two spellings of one set (the registered view ``digits-5to9`` and ``digits[5-9]``)
    were both scored and counted twice in the means; ``--model a,a`` loaded and scored one
    checkpoint twice under one name."""
    from oodkit.bench import check_model_request
    from oodkit.data.registry import selection

    assert selection("digits-5to9") == selection("digits[5-9]") == selection("digits[9+5-8]") == \
        ("digits", (5, 6, 7, 8, 9))
    assert selection("digits-5to9[5+6]") == ("digits", (5, 6))
    assert selection("digits") == ("digits", None) and selection("cifar10[0-5]") == ("cifar10", (0, 1, 2, 3, 4, 5))
    bench = ["bench", "--model", "digits-0to4", "--detectors", "loglik", "--bootstrap", "0", "--quiet"]
    _one_line_error(run(bench[0], "digits-0to4-vs-digits-5to9,digits[5-9]", *bench[1:], "--output-dir", "o"),
                    "named twice")
    with pytest.raises(ValueError, match="named twice"):
        check_model_request("digits-0to4, digits-0to4")
    with pytest.raises(ValueError, match="named twice"):
        check_model_request(["a.pt", "./a.pt"])
    with pytest.raises(ValueError, match="named twice"):
        check_model_request(["a.pt", str(Path("a.pt").resolve())])


def test_loaders_that_reorder_or_batch_grey_images_are_read_as_given():
    """Samplers that shuffle other than ``shuffle=True`` (SubsetRandomSampler,
    WeightedRandomSampler, a DistributedSampler, which also keeps a share) gave scores in
    a shuffled order without a word; a DataLoader of 2-D grey images read each batch of B
    as one image with B channels (40 scores for 120 images)."""
    import torch
    from torch.utils.data import (DataLoader, Dataset, DistributedSampler, SequentialSampler, SubsetRandomSampler,
                                  TensorDataset, WeightedRandomSampler)

    from oodkit.data import ImageInputError

    x = torch.from_numpy(load_dataset("digits-0to4", "test").images[:20]).permute(0, 3, 1, 2)
    ds = TensorDataset(x)
    for sampler in (SubsetRandomSampler(range(20)), WeightedRandomSampler(torch.ones(20), 20),
                    DistributedSampler(ds, num_replicas=2, rank=0)):
        for loader in (DataLoader(ds, batch_size=4, sampler=sampler), DataLoader(ds, batch_size=None, sampler=sampler)):
            with pytest.raises(ImageInputError, match="order") as e:
                as_images(loader)
            assert "\n" not in str(e.value)
    assert torch.equal(as_images(DataLoader(ds, batch_size=4, sampler=SequentialSampler(ds))), x)

    class Grey(Dataset):  # (H, W) images, as many datasets give grey ones
        def __len__(self):
            return 20

        def __getitem__(self, i):
            return x[i, 0].numpy()

    for batch in (1, 3, 4, 7):
        assert torch.equal(as_images(DataLoader(Grey(), batch_size=batch)), x), batch
    assert torch.equal(as_images(DataLoader(Grey(), batch_size=None)), x)
    assert torch.equal(as_images(Grey()), x)


def test_a_tilde_in_a_path_is_the_home_folder(run, tmp_path, monkeypatch):
    """`folder:~/imgs`, `--data-root=~/data`, `--out='~/s.csv'` (the shell leaves a ~ after
    `:` or `=` alone) were read literally: "no such folder", and an --out of `~/...` wrote
    its parts into `./~/` and failed after scoring everything."""
    home = tmp_path / "home"
    (home / "imgs").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    px = load_dataset("digits-0to4", "test").images[:6]
    from PIL import Image

    for i, a in enumerate(px):
        Image.fromarray(a[..., 0]).save(home / "imgs" / f"{i}.png")
    np.savez(home / "d_test.npz", images=px)
    np.savez(home / "d_train.npz", images=px)
    common = ["--model", "digits-0to4", "--quiet", "--device", "cpu"]
    r = run("score", *common, "--data", "folder:~/imgs", "--out", "~/out/a.csv")
    assert r.exit_code == 0, r.output
    assert (home / "out" / "a.csv").is_file() and not (tmp_path / "~").exists()
    r = run("score", *common, "--data", "d", "--data-root=~", "--out", "~/b.csv")
    assert r.exit_code == 0 and (home / "b.csv").is_file(), r.output
    r = run("fit", "--model", "digits-0to4", "--data", "npz:~/d_train.npz", "--detectors", "loglik", "--out",
            "~/det.npz", "--quiet", "--device", "cpu")
    assert r.exit_code == 0 and (home / "det.npz").is_file(), r.output
    r = run("score", "--detector", "~/det.npz", "--data", "npz:~/d_test.npz", "--out", "~/c.csv", "--quiet",
            "--device", "cpu")
    assert r.exit_code == 0 and (home / "c.csv").is_file(), r.output


def test_what_audit_6_found_a_new_user_meets(run, tmp_path):
    """A detector file given as --model leaked torch's zip error; a path given without
    its npz: / folder: prefix said "no PATH_test.npz"; a missing named set did not say
    where it was looked for; fit --out det.csv wrote an .npz under a .csv name; --bootstrap's
    help promised 0 and up; model.log_prob advised a value_range it does not take."""
    import torch

    from oodkit import load_model

    r = run("fit", "--model", "digits-0to4", "--data", "digits-0to4", "--detectors", "loglik", "--out", "det.npz",
            "--quiet", "--device", "cpu")
    assert r.exit_code == 0, r.output
    _one_line_error(run("score", "--model", "det.npz", "--data", "digits-0to4", "--out", "s.csv"), "--detector")
    _one_line_error(run("fit", "--model", "digits-0to4", "--data", "digits-0to4", "--out", "det.csv"), ".npz")
    np.savez("plain.npz", images=load_dataset("digits-0to4", "test").images[:5])
    os.mkdir("plainfolder")
    _one_line_error(run("score", "--model", "digits-0to4", "--data", "plain.npz", "--out", "s.csv"), "npz:plain.npz")
    _one_line_error(run("score", "--model", "digits-0to4", "--data", "plainfolder", "--out", "s.csv"),
                    "folder:plainfolder")
    _one_line_error(run("score", "--model", "digits-0to4", "--data", "mnist", "--data-root", ".", "--out", "s.csv"),
                    "--data-root")
    from oodkit.metrics import MAX_BOOTSTRAP, MIN_BOOTSTRAP

    r = run("bench", "--help")
    assert "x>=0" not in r.output and f"{MIN_BOOTSTRAP}..{MAX_BOOTSTRAP:,}" in " ".join(r.output.split())
    model = load_model("digits-0to4")
    x01 = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    for method in ("log_prob", "bpd", "log_prob_levels"):  # the advice of each refusal, followed, works
        f = getattr(model, method)
        with pytest.raises(ValueError, match=r"value_range=\(0, 1\)"):
            f(x01)
        assert torch.equal(f(x01, value_range=(0, 1)), f(x01 * 2 - 1))
        with pytest.raises(ValueError, match=r"value_range=\(0, 255\)"):
            f(x01 * 255)
        torch.testing.assert_close(f(x01 * 255, value_range=(0, 255)), f(x01 * 2 - 1), rtol=1e-6, atol=1e-9)
        assert torch.equal(f(x01, value_range=(-1, 1)), f(x01.numpy(), value_range=(-1, 1)))


def test_calibrating_on_training_images_of_a_model_that_does_not_record_them_is_refused(run, tmp_path):
    """The shipped fashionmnist trained on the whole train split and records no image
    hashes: `--calibrate-split train` printed a 0.95 guarantee its thresholds did not keep
    (0.929 of fresh images accepted, measured)."""
    m = fixed_model(seed=0)
    assert getattr(m, "image_hashes", None) is None
    save_checkpoint(tmp_path / "m.pt", m)
    _one_line_error(run("fit", "--model", "m.pt", "--data", "digits-0to4", "--max-train", "300", "--detectors",
                        "loglik", "--calibrate-on", "digits-0to4", "--calibrate-split", "train", "--out", "d.npz"),
                    "--calibrate-split test")
    r = run("fit", "--model", "m.pt", "--data", "digits-0to4", "--detectors", "loglik", "--calibrate-on",
            "digits-0to4", "--out", "d.npz", "--quiet", "--device", "cpu")
    assert r.exit_code == 0, r.output


def test_what_audit_6_found_in_train_and_config_files(run, tmp_path):
    """Two keys of a config file for one option (kind and model, batch_size and batch-size):
    the last won, and a DDPM was trained where the file also said cdm; --seed -1 or 2**70
    ended in a numpy / torch traceback after the data was read; a config that sets nothing
    for the command ran with defaults without a word; a shared file's top-level `model`
    reached train as its old spelling of --kind; train --overwrite replaced any file; a
    pretrained name given to --init was "no checkpoint" (it is now its weights file)."""
    from oodkit import TrainConfig

    Path("k.toml").write_text('[train]\nkind = "cdm"\nmodel = "ddpm"\n')
    Path("b.toml").write_text('[train]\nbatch_size = 8\nbatch-size = 16\n')
    train = ["train", "--data", "digits-0to4", "--net", "tiny", "--steps", "1", "--warmup", "0", "--out", "k.pt",
             "--quiet", "--device", "cpu"]
    for toml in ("k.toml", "b.toml"):
        _one_line_error(run(*train, "--config", toml), "set the same option")
    for seed in ("-1", str(2**70)):
        r = run(*train, "--seed", seed)
        assert r.exit_code == 2 and "--seed" in r.output and "Traceback" not in r.output, r.output
    Path("s.toml").write_text("seed = -1\n")
    r = run(*train, "--config", "s.toml")
    assert r.exit_code == 2 and "seed" in r.output, r.output
    for cfg in (dict(seed=-1), dict(steps=1.5), dict(steps=True), dict(hflip="no"), dict(lr="0.1"),
                dict(batch_size=8.0)):
        with pytest.raises(ValueError, match=next(iter(cfg))):
            TrainConfig(**cfg).validate()
    Path("other.toml").write_text('[train]\nsteps = 3\n')
    r = run("score", "--model", "digits-0to4", "--data", "digits-5to9", "--out", "s.csv", "--quiet", "--config",
            "other.toml")
    assert r.exit_code == 0 and "sets nothing for `oodkit score`" in r.output, r.output
    Path("shared.toml").write_text('model = "digits-0to4"\n')
    _one_line_error(run(*train, "--config", "shared.toml"), "unknown setting 'model' for `oodkit train`")
    Path("notes.txt").write_text("my notes")
    _one_line_error(run(*train[:-5], "--out", "notes.txt", "--overwrite"), "exists and is not a checkpoint")
    assert Path("notes.txt").read_text() == "my notes"
    _one_line_error(run(*train[:-5], "--init", "no-such-model", "--out", "i.pt"), "pretrained name")
    r = run(*train[:-5], "--init", "digits-0to4", "--out", "i.pt", "--quiet", "--device", "cpu")
    assert r.exit_code == 0 and Path("i.pt").is_file(), r.output  # a pretrained name is its weights file


def test_a_detector_changed_after_fit_refuses_to_score_until_refitted(tiny_models):
    """DiffusionDetector scored on after set_params (score, n_points, seed, contamination)
    against its old threshold, and took batch_size=0 to a raw range() error; CDMDetector's
    fit_representation kept the first model after set_params(model=...) (fused scores of
    -61,000); a CDMDetector that trained its own model ignored changed training settings."""
    from sklearn.exceptions import NotFittedError

    from oodkit.representation import represent

    x = load_dataset("digits-0to4", "train").images[:80]
    det = make_detector("itd", model=tiny_models["ddpm"], n_points=4, n_offset=40).fit(x)
    assert det.n_features_in_ == 64
    det.score_samples(x[:3])
    for change in (dict(score="recon"), dict(n_points=5), dict(seed=1), dict(contamination=0.1)):
        bad = make_detector("itd", model=tiny_models["ddpm"], n_points=4, n_offset=40).fit(x).set_params(**change)
        with pytest.raises(NotFittedError, match=f"{next(iter(change))} changed since fit"):
            bad.score_samples(x[:3])
    with pytest.raises(ValueError, match="batch_size"):
        det.set_params(batch_size=0).score_samples(x[:3])

    m1, m2 = fixed_model(seed=0), fixed_model(seed=1)
    det = CDMDetector(model=m1, score="loglik").fit(x)
    det.set_params(model=m2).fit_representation(represent(m2, as_images(x), cache=None))
    assert det.model_ is m2
    np.testing.assert_array_equal(det.score_samples(x[:5]), CDMDetector(model=m2, score="loglik").fit(x)
                                  .score_samples(x[:5]))
    own = CDMDetector(model=None, score="loglik", net="tiny", steps=2, T=10).fit(x)
    with pytest.raises(NotFittedError, match="steps changed since fit"):
        own.set_params(steps=5).score_samples(x[:3])
    given = CDMDetector(model=m1, score="loglik").fit(x)
    given.set_params(steps=5, net="paper").score_samples(x[:3])  # training settings mean nothing beside a model
    # the same through a detector file, and values that are equal in another spelling
    import tempfile

    from oodkit import load_detector

    with tempfile.TemporaryDirectory() as d:
        save_checkpoint(Path(d) / "m1.pt", m1)
        CDMDetector(model=str(Path(d) / "m1.pt"), score="loglik").fit(x).save(Path(d) / "det.npz")
        loaded = load_detector(Path(d) / "det.npz")
        loaded.set_params(model=m2).fit_representation(represent(m2, as_images(x), cache=None))
        assert loaded.model_ is m2
        CDMDetector(model=Path(d) / "m1.pt", score="loglik").fit(x).set_params(
            model=str(Path(d) / "m1.pt")).score_samples(x[:3])
    recon = make_detector("recon", model=tiny_models["ddpm"], recon_levels=[5, 10], n_offset=40).fit(x)
    recon.set_params(recon_levels=(5, 10)).score_samples(x[:3])


def test_system_errors_read_as_a_path_and_words(run, monkeypatch):
    """A PermissionError reached the user as "[Errno 1] Operation not permitted: 'imm/x.pt'";
    flattened images (sklearn's load_digits().data) were told to add a batch axis."""
    import oodkit.cli as cli
    from oodkit.data import ImageInputError

    def denied(value):
        raise PermissionError(13, "Permission denied", "imm/x.pt")

    monkeypatch.setattr(cli, "_device", denied)
    _one_line_error(run("score", "--model", "digits-0to4", "--data", "digits-5to9", "--out", "s.csv"),
                    "imm/x.pt: Permission denied (check its permissions)")
    with pytest.raises(ImageInputError, match=r"x.reshape\(30, 8, 8\)"):
        as_images(np.zeros((30, 64), np.uint8))


def test_a_detector_that_trains_its_model_writes_it_only_where_it_may(tmp_path):
    """model_out replaced any file (a text file became a checkpoint) and model_out=5 gave a
    raw TypeError."""
    x = load_dataset("digits-0to4", "train").images[:64]
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    with pytest.raises(ValueError, match="exists and is not a checkpoint"):
        CDMDetector(model=None, score="loglik", net="tiny", steps=1, T=10, model_out=notes).fit(x)
    with pytest.raises(ValueError, match="exists and is not a checkpoint"):  # the library's own training too
        from oodkit import fit_model

        fit_model(as_images(x), net="tiny", T=10, out=notes)
    assert notes.read_text() == "mine"
    with pytest.raises(ValueError, match="model_out must be None or a file path"):
        CDMDetector(model=None, score="loglik", net="tiny", steps=1, T=10, model_out=5).fit(x)
    out = tmp_path / "m.pt"
    for _ in range(2):  # a model of an earlier fit is replaced
        CDMDetector(model=None, score="loglik", net="tiny", steps=1, T=10, model_out=out).fit(x)
    assert out.is_file()


def test_what_audit_6_found_in_bench_outputs(run, monkeypatch):
    """results.json held bare NaN (invalid JSON for strict readers); `fused@cdm,fused` ran one
    detector twice under two names; --jpeg-ood on held-out classes of the ID set did nothing
    without a word; datasets took a $OODKIT_DATA that is a file."""
    import json

    bench = ["bench", "digits-0to4-vs-digits-5to9", "--model", "digits-0to4", "--max-train", "100", "--quiet",
             "--device", "cpu"]
    r = run(*bench, "--max-test", "1", "--bootstrap", "0", "--detectors", "loglik", "--output-dir", "one")
    assert r.exit_code == 0, r.output

    def strict(c):
        raise ValueError(f"not JSON: {c}")

    json.loads(Path("one/results.json").read_text(), parse_constant=strict)
    _one_line_error(run(*bench, "--bootstrap", "0", "--detectors", "fused@cdm,fused", "--output-dir", "dd"),
                    "named twice")
    _one_line_error(run("fit", "--model", "digits-0to4", "--data", "digits-0to4", "--detectors", "loglik,loglik@cdm",
                        "--out", "d.npz"), "named twice")
    r = run(*bench, "--max-test", "40", "--bootstrap", "0", "--detectors", "loglik", "--jpeg-ood", "75",
            "--output-dir", "jp")
    assert r.exit_code == 0 and "--jpeg-ood" in r.output and "no OOD set" in r.output, r.output
    Path("afile").write_text("x")
    monkeypatch.setenv("OODKIT_DATA", "afile")
    _one_line_error(run("datasets"), "is not a folder")
