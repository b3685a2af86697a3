"""The mistakes an audit tried, table-driven: each must end in exit status 2 with exactly
one 'Error: ...' line, no traceback, and a message that names the problem."""
from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from oodkit.cli import main
from oodkit.data import load_dataset

REPO = Path(__file__).resolve().parent.parent
TRAIN = ["train", "--data", "digits-0to4", "--net", "tiny", "-T", "10", "--steps", "2", "--quiet", "--device", "cpu"]
BENCH = ["bench", "digits-0to4-vs-noise", "--model", "m.pt", "--detectors", "loglik", "--bootstrap", "0", "--quiet",
         "--max-train", "40", "--max-test", "20", "--device", "cpu", "--output-dir", "res"]
SCORE = ["score", "--model", "m.pt", "--data", "letters", "--out", "s.csv", "--quiet"]
NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
NO_MPS = pytest.mark.skipif(torch.backends.mps.is_available(), reason="this machine has MPS")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """m.pt (a 2-step tiny CDM: lr 2e-4, seed 0, batch 64), a folder, a plain file and a
    file of random bytes."""
    d = tmp_path_factory.mktemp("bad")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(d)
        mp.setenv("OODKIT_CACHE", str(d / "cache"))
        r = CliRunner().invoke(main, TRAIN + ["--out", "m.pt"], catch_exceptions=False)
        assert r.exit_code == 0 and "wrote m.pt (step 2)" in r.output, r.output
    (d / "adir").mkdir()
    (d / "afile").write_text("not a folder")
    junk = random.Random(0).randbytes(4096)  # seeded: the same "random bytes" every run
    (d / "bytes.pt").write_bytes(junk)
    (d / "bytes.npz").write_bytes(junk)
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 17, (40, 8, 8), dtype=np.uint8) * 15
    np.savez(d / "one_class.npz", images=pixels, labels=np.zeros(40, np.int64))
    np.savez(d / "half_labels.npz", images=pixels, labels=np.arange(40) % 2 + 0.5)
    np.savez(d / "same.npz", images=np.repeat(pixels[:1], 40, axis=0))
    test = load_dataset("digits-0to4", "test")
    np.savez(d / "id_test_reversed.npz", images=test.images[::-1])
    return d


@pytest.fixture
def run(folder, monkeypatch):
    monkeypatch.chdir(folder)
    monkeypatch.setenv("OODKIT_CACHE", str(folder / "cache"))

    def _run(args):
        return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=True)

    return _run


CASES = [
    # -- train: values out of range (click's own usage errors)
    ("train-grad-clip-neg", TRAIN + ["--out", "x.pt", "--grad-clip", "-1"], "Invalid value for '--grad-clip'"),
    ("train-steps-0", TRAIN + ["--out", "x.pt", "--steps", "0"], "Invalid value for '--steps'"),
    ("train-batch-0", TRAIN + ["--out", "x.pt", "--batch-size", "0"], "Invalid value for '--batch-size'"),
    ("train-save-every-neg", TRAIN + ["--out", "x.pt", "--save-every", "-1"], "Invalid value for '--save-every'"),
    ("train-image-size-0", TRAIN + ["--out", "x.pt", "--image-size", "0"], "Invalid value for '--image-size'"),
    ("train-ema-1", TRAIN + ["--out", "x.pt", "--ema-decay", "1"], "Invalid value for '--ema-decay'"),
    ("train-ema-neg", TRAIN + ["--out", "x.pt", "--ema-decay", "-0.1"], "Invalid value for '--ema-decay'"),
    ("train-lr-nan", TRAIN + ["--out", "x.pt", "--lr", "nan"], "not a finite number"),
    ("train-grad-clip-nan", TRAIN + ["--out", "x.pt", "--grad-clip", "nan"], "not a finite number"),
    ("train-image-size-4", TRAIN + ["--out", "x.pt", "--image-size", "4"], "4 is not in the range 8<=x<=64"),
    ("train-net-unknown", TRAIN + ["--out", "x.pt", "--net", "nosuch"], "--net 'nosuch'"),
    # -- bench: values out of range, empty lists
    ("bench-jpeg-0", BENCH + ["--jpeg-ood", "0"], "Invalid value for '--jpeg-ood'"),
    ("bench-jpeg-101", BENCH + ["--jpeg-ood", "101"], "Invalid value for '--jpeg-ood'"),
    ("bench-max-train-neg", BENCH + ["--max-train", "-1"], "Invalid value for '--max-train'"),
    ("bench-detectors-comma", BENCH + ["--detectors", ","], "names no detector"),
    ("bench-model-comma", BENCH + ["--model", ","], "names no checkpoint"),
    ("bench-model-empty", BENCH + ["--model", ""], "names no checkpoint"),
    ("bench-model-one-missing", BENCH + ["--model", "m.pt,missing.pt"], "checkpoint not found: missing.pt"),
    ("bench-model-random-bytes", BENCH + ["--model", "bytes.pt"], "truncated or not a checkpoint"),
    ("bench-spec-no-ood", BENCH[:1] + ["digits-0to4-vs-"] + BENCH[2:], "need an in-distribution set"),
    ("bench-detector-wrong-kind", BENCH + ["--detectors", "loglik@ddpm"], "runs on a cdm model"),
    # -- devices
    pytest.param("train-cuda", TRAIN + ["--out", "x.pt", "--device", "cuda"], "no CUDA GPU", marks=NO_CUDA),
    pytest.param("bench-cuda", BENCH + ["--device", "cuda"], "no CUDA GPU", marks=NO_CUDA),
    pytest.param("score-cuda-1", SCORE + ["--device", "cuda:1"], "no CUDA GPU", marks=NO_CUDA),
    ("train-device-nonsense", TRAIN + ["--out", "x.pt", "--device", "nonsense"], "is not a device"),
    ("score-device-nonsense", SCORE + ["--device", "nonsense"], "is not a device"),
    ("bench-device-meta", BENCH + ["--device", "meta"], "oodkit runs on cpu, cuda or mps"),
    pytest.param("train-device-mps", TRAIN + ["--out", "x.pt", "--device", "mps"], "mps",
                 marks=NO_MPS),
    pytest.param("score-device-mps", SCORE + ["--device", "mps"], "mps",
                 marks=NO_MPS),
    # -- output paths
    ("train-out-folder", TRAIN + ["--out", "adir"], "is a folder"),
    ("train-out-under-file", TRAIN + ["--out", "afile/m.pt"], "afile is a file, not a folder"),
    ("score-out-folder", SCORE[:-3] + ["--out", "adir", "--quiet"], "is a folder"),
    ("fit-out-folder", ["fit", "--model", "m.pt", "--data", "digits-0to4", "--out", "adir"], "is a folder"),
    ("bench-output-dir-file", BENCH + ["--output-dir", "afile"], "is a file, not a folder"),
    ("train-out-exists", TRAIN + ["--out", "m.pt"], "m.pt exists: pass --resume"),
    # -- resume with other settings than the checkpoint's
    ("resume-lr", TRAIN + ["--out", "m.pt", "--resume", "--steps", "3", "--lr", "1e-3"], "was trained with lr=0.0002"),
    ("resume-seed", TRAIN + ["--out", "m.pt", "--resume", "--steps", "3", "--seed", "1"], "was trained with seed=0"),
    ("resume-batch", TRAIN + ["--out", "m.pt", "--resume", "--steps", "3", "--batch-size", "32"],
     "was trained with batch_size=64"),
    ("resume-net", TRAIN + ["--out", "m.pt", "--resume", "--steps", "3", "--net", "compact"], "m.pt has network"),
    ("resume-T", TRAIN + ["--out", "m.pt", "--resume", "--steps", "3", "-T", "20"], "m.pt has network"),
    ("resume-data", TRAIN + ["--out", "m.pt", "--resume", "--steps", "3", "--data", "letters"], "dataset="),
    ("resume-kind", TRAIN + ["--out", "m.pt", "--resume", "--steps", "3", "--kind", "ddpm"], "is a cdm model"),
    ("resume-past-steps", TRAIN + ["--out", "m.pt", "--resume", "--steps", "1"], "already at step 2"),
    ("resume-missing", TRAIN + ["--out", "nothere.pt", "--resume"], "no checkpoint at nothere.pt"),
    ("resume-and-overwrite", TRAIN + ["--out", "m.pt", "--resume", "--overwrite"], "contradict"),
    ("resume-random-bytes", TRAIN + ["--out", "bytes.pt", "--resume"], "truncated or not a checkpoint"),
    # -- unreadable inputs
    ("score-model-random-bytes", SCORE[:1] + ["--model", "bytes.pt"] + SCORE[3:], "truncated or not a checkpoint"),
    ("score-model-missing", SCORE[:1] + ["--model", "missing.pt"] + SCORE[3:], "checkpoint not found: missing.pt"),
    ("score-model-folder", SCORE[:1] + ["--model", "adir"] + SCORE[3:], "checkpoint adir is a folder, not a file"),
    ("score-detector-random-bytes", ["score", "--detector", "bytes.pt", "--data", "letters", "--out", "s.csv"],
     "not a detector file"),
    ("score-detector-missing", ["score", "--detector", "no.npz", "--data", "letters", "--out", "s.csv"],
     "detector file not found"),
    ("score-data-unknown", SCORE[:3] + ["--data", "nosuch"] + SCORE[5:], "unknown data set 'nosuch'"),
    # options that do nothing for the data given are refused, not silently dropped
    ("score-resize-npz", SCORE[:3] + ["--data", "npz:id_test_reversed.npz", "--resize", "8"] + SCORE[5:],
     "--resize applies to folder: and tar: data"),
    ("score-resize-named", SCORE + ["--resize", "8"], "--resize applies to folder: and tar: data"),
    ("score-split-one-file", SCORE[:3] + ["--data", "npz:id_test_reversed.npz", "--split", "train"] + SCORE[5:],
     "without splits"),
    ("score-workers-npz", SCORE[:3] + ["--data", "npz:id_test_reversed.npz", "--num-workers", "2"] + SCORE[5:],
     "--num-workers applies to folder: data"),
    ("fit-data-unknown", ["fit", "--model", "m.pt", "--data", "nosuch", "--out", "f.npz"], "unknown data set 'nosuch'"),
    ("fit-detector-unknown", ["fit", "--model", "m.pt", "--data", "digits-0to4", "--out", "f.npz", "--detectors",
                              "nosuch"], "unknown detector 'nosuch'"),
    ("train-data-empty", ["train", "--data", "", "--net", "tiny", "--out", "x.pt"], "unknown data set ''"),
    ("train-npz-missing", ["train", "--data", "npz:nothere.npz", "--out", "x.pt"], "nothere.npz"),
    ("train-folder-empty", ["train", "--data", "folder:adir", "--out", "x.pt"], "no images"),
    # -- score's two sources
    ("score-model-and-detector", SCORE + ["--detector", "f.npz"], "give exactly one of --model"),
    ("score-neither", ["score", "--data", "letters", "--out", "s.csv"], "give exactly one of --model"),
    # -- failures this audit found, fixed since
    pytest.param("train-lr-1e308", TRAIN + ["--out", "x.pt", "--lr", "1e308"], "lr",
                 ),
    pytest.param("train-lr-1e40", TRAIN + ["--out", "x.pt", "--lr", "1e40"], "lr",
                 ),
    pytest.param("train-cdl-weight-nan", TRAIN + ["--out", "x.pt", "--kind", "ddpm", "--cdl-weight", "nan"],
                 "cdl"),
    pytest.param("fit-detectors-comma", ["fit", "--model", "m.pt", "--data", "digits-0to4", "--out", "f.npz",
                                         "--max-train", "10", "--detectors", ","], "names no detector",
                 ),
    pytest.param("bench-detector-empty-kind", BENCH + ["--detectors", "loglik@"], "loglik@",
                 ),
    pytest.param("train-npz-random-bytes", ["train", "--data", "npz:bytes.npz", "--net", "tiny", "--out", "x.pt"],
                 "!allow_pickle"),
    # -- failures the audit of 2026-12-04 found
    ("train-class-head-one-class", ["train", "--data", "npz:one_class.npz", "--class-head", "--net", "tiny", "-T", "10",
                                    "--steps", "2", "--quiet", "--out", "x.pt"], "at least 2 classes"),
    ("train-labels-not-integers", ["train", "--data", "npz:half_labels.npz", "--class-head", "--net", "tiny", "-T",
                                   "10", "--steps", "2", "--quiet", "--out", "x.pt"], "labels must be integers"),
    ("train-batch-larger-than-data", TRAIN + ["--out", "x.pt", "--batch-size", "5000"], "--batch-size 5000"),
    ("train-class-head-no-labels", ["train", "--data", "npz:same.npz", "--class-head", "--net", "tiny", "-T", "10",
                                    "--steps", "2", "--quiet", "--out", "x.pt"], "has no labels"),
    ("fit-images-all-the-same", ["fit", "--model", "m.pt", "--data", "npz:same.npz", "--out", "f.npz", "--quiet"],
     "all the same image"),
    ("score-out-not-a-table", SCORE[:-3] + ["--out", "s.npz", "--quiet"], ".csv or .parquet"),
    ("bench-ood-is-the-id-test-set-reordered", BENCH[:1] + ["digits-0to4-vs-npz:id_test_reversed.npz"] + BENCH[2:],
     "are images of the in-distribution set"),
]


@pytest.mark.parametrize("name,args,fragment", CASES, ids=[c.values[0] if hasattr(c, "marks") else c[0]
                                                          for c in CASES])
def test_bad_input_is_one_line_exit_2(run, folder, name, args, fragment):
    before = {p.name for p in folder.iterdir()}
    args = [f"{name}.pt" if a == "x.pt" else a for a in args]
    r = run(args)
    shown = f"args={args}\noutput={r.output!r}\nexception={r.exception!r}"
    assert r.exception is None or isinstance(r.exception, SystemExit), shown
    assert r.exit_code == 2, shown
    assert "Traceback" not in r.output, shown
    lines = [l for l in r.output.splitlines() if l.strip()]
    errors = [l for l in lines if l.startswith("Error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], shown
    if fragment.startswith("!"):  # a text the message must not hold
        assert fragment[1:] not in errors[0], shown
    else:
        assert fragment in errors[0], shown
    if name in ("train-out-folder", "train-out-exists", "train-out-under-file"):
        assert "training" not in r.output, "must fail before any training"
    # a refused command writes no file (bench may leave its empty --output-dir behind)
    new = [p for p in folder.iterdir() if p.name not in before and p.name != "cache"]
    assert not [f for p in new for f in ([p] if p.is_file() else p.rglob("*"))], shown
    assert (folder / "m.pt").exists()


def test_debug_shows_the_traceback(tmp_path):
    """`oodkit --debug ...` is the documented escape hatch: the full traceback, non-zero exit."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
               OODKIT_CACHE=str(tmp_path / "cache"))
    p = subprocess.run([sys.executable, "-m", "oodkit", "--debug", "score", "--model", "missing.pt", "--data", "letters",
                        "--out", "s.csv"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert p.returncode != 0
    assert "Traceback (most recent call last)" in p.stderr and "CheckpointError" in p.stderr
    assert "checkpoint not found: missing.pt" in p.stderr
    assert not (tmp_path / "s.csv").exists()


def test_a_value_error_from_inside_a_library_is_a_traceback_not_a_user_error(monkeypatch, tmp_path):
    """Only oodkit's own checks become one-line exit-2 errors: a ValueError a library
    raises is a bug, and hiding it behind "usage error" would hide the bug."""
    import numpy as np
    from click.testing import CliRunner

    import oodkit.bench
    from oodkit.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(oodkit.bench, "run_bench", lambda *a, **k: np.zeros(3).reshape(2))  # numpy raises
    r = CliRunner().invoke(main, ["bench", "digits", "--quiet"])
    assert r.exit_code == 1 and isinstance(r.exception, ValueError)
    monkeypatch.undo()
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(main, ["bench", "nosuch", "--quiet"])  # oodkit's own check: one line, exit 2
    assert r.exit_code == 2 and "nosuch" in r.output and "Traceback" not in r.output


def test_split_from_a_config_file_is_refused_for_a_single_file_too(run, folder):
    """--split set in a --config file is as much asked for as on the command line."""
    (folder / "split.toml").write_text('split = "train"\n')
    r = run(SCORE[:3] + ["--data", "npz:id_test_reversed.npz", "--config", "split.toml"] + SCORE[5:])
    assert r.exit_code == 2 and "without splits" in r.output, r.output


def test_a_usage_error_is_one_line_too(tmp_path, monkeypatch):
    """Click's own refusals (a missing option, a value out of range, a --config problem)
    printed four lines (Usage:, Try ..., a blank, Error:); the README promises one."""
    monkeypatch.chdir(tmp_path)
    for args, path in ((["score"], "score"), (["train", "--data", "digits", "--steps", "0", "--out", "x.pt"], "train"),
                       (["bench", "digits", "--bootstrap", "x"], "bench"), (["score", "--nope"], "score"),
                       (["score", "--data"], "score"), (["nosuchcommand"], None), (["--bogus"], None)):
        r = CliRunner().invoke(main, args, prog_name="oodkit")
        assert r.exit_code == 2, (args, r.output)
        lines = [ln for ln in r.output.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("Error: "), (args, r.output)
        assert lines[0].endswith(f"(see `oodkit {path} --help`)" if path else "(see `oodkit --help`)"), r.output
    r = CliRunner().invoke(main, [], prog_name="oodkit")  # the command alone: its help
    assert "Usage: oodkit" in r.output and "Error" not in r.output
    r = CliRunner().invoke(main, ["score", "--help"])
    assert r.exit_code == 0 and "Usage:" in r.output
    r = CliRunner().invoke(main, ["--version"])
    assert r.exit_code == 0 and "oodkit" in r.output
