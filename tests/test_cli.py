"""The oodkit command end to end on tiny data, error paths included."""
import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from oodkit import __version__
from oodkit.cli import main

TINY = ["--net", "tiny", "--steps", "20", "-T", "30", "--quiet"]


@pytest.fixture
def run(tmp_path, monkeypatch):
    monkeypatch.setenv("OODKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)

    def _run(*args):
        return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)

    return _run


def test_version_and_help(run):
    assert run("--version").output.strip() == f"oodkit, version {__version__}"
    out = run("--help").output
    for cmd in ("train", "score", "bench", "datasets"):
        assert cmd in out


def test_bench_end_to_end_and_cache(run, tmp_path):
    r = run("bench", "digits-0to4-vs-letters,noise", *TINY, "--detectors", "loglik,profile", "--output-dir", "res")
    assert r.exit_code == 0, r.output
    assert "training a tiny CDM" in r.output and "[profile]" in r.output and f"wrote {tmp_path / 'res'}/: results.csv" in r.output
    df = pd.read_csv(tmp_path / "res" / "results.csv")
    assert set(["detector", "id", "ood", "auroc", "aupr_in", "aupr_out", "fpr95_ood_accepted",
                "fpr95_id_rejected"]) <= set(df.columns)
    assert len(df) == 4 and set(df.ood) == {"letters", "noise"} and (df.id == "digits-0to4").all()
    assert df.auroc.between(0, 1).all()
    for f in ("results.md", "results.json", "scores.npz", "roc.png", "histograms.png"):
        assert (tmp_path / "res" / f).stat().st_size > 0, f
    meta = json.loads((tmp_path / "res" / "results.json").read_text())["meta"]
    assert meta["ood"] == ["letters", "noise"] and meta["T"] == 30
    scores = np.load(tmp_path / "res" / "scores.npz")
    assert scores["loglik/noise"].shape == (1000,)
    again = run("bench", "digits-0to4-vs-letters", *TINY, "--detectors", "loglik", "--output-dir", "res2")
    assert "reusing cached" in again.output


def test_train_then_score_then_bench_with_model(run, tmp_path):
    r = run("train", "--data", "digits-0to4", "--net", "tiny", "-T", "30", "--steps", "5", "--out", "m.pt",
            "--quiet")
    assert r.exit_code == 0 and "wrote m.pt (step 5)" in r.output, r.output
    r = run("score", "--model", "m.pt", "--data", "letters", "--out", "s.csv", "--quiet")
    assert r.exit_code == 0, r.output
    df = pd.read_csv(tmp_path / "s.csv")
    assert list(df.columns) == ["index", "bpd", "loglik", "posterior", "expected-t", "complexity", "typicality",
                                "profile"]
    assert len(df) == len(np.unique(df["index"])) and "fitted on digits-0to4" in r.output
    r = run("bench", "digits-0to4-vs-digits-5to9", "--model", "m.pt", "--detectors", "typicality", "--quiet",
            "--output-dir", "b")
    assert r.exit_code == 0 and "model: m.pt" in r.output, r.output


def test_train_ddpm_and_score_it(run, tmp_path, monkeypatch):
    r = run("train", "--model", "ddpm", "--data", "digits-0to4", "--net", "tiny", "-T", "20", "--steps", "3",
            "--out", "d.pt", "--quiet")
    assert r.exit_code == 0, r.output
    r = run("score", "--model", "d.pt", "--data", "letters", "--out", "s.csv", "--quiet")
    assert r.exit_code == 0, r.output
    df = pd.read_csv(tmp_path / "s.csv")
    assert list(df.columns) == ["index", "elbo-k", "itd", "recon"] and df.notna().all().all()
    # The multi-pass scores are computed once per image set: training, ID test (once, not once per
    # OOD set) and each OOD set.
    from oodkit.detectors.diffusion import DiffusionDetector
    sizes = []
    compute = DiffusionDetector._compute
    monkeypatch.setattr(DiffusionDetector, "_compute", lambda self, x: sizes.append(len(x)) or compute(self, x))
    r = run("bench", "digits-0to4-vs-noise,constant", "--model", "d.pt", "--detectors", "recon", "--quiet",
            "--output-dir", "b", "--max-train", "40", "--max-test", "30")
    assert r.exit_code == 0 and "[recon]" in r.output, r.output
    assert sizes == [40, 30, 30, 30]


def test_bench_runs_each_detector_on_its_preferred_model(run, tmp_path):
    for kind, out in [("cdm", "c.pt"), ("ddpm", "d.pt")]:
        r = run("train", "--model", kind, "--data", "digits-0to4", "--net", "tiny", "-T", "20", "--steps", "2",
                "--out", out, "--quiet")
        assert r.exit_code == 0, r.output
    r = run("bench", "digits-0to4-vs-noise", "--model", "c.pt,d.pt", "--detectors", "loglik,itd,itd@cdm,recon",
            "--max-train", "30", "--max-test", "20", "--quiet", "--output-dir", "b")
    assert r.exit_code == 0, r.output
    # ITD is the DDPM's baseline unless the CDM's Theorem 3.1 version is asked for by name
    meta = json.loads((tmp_path / "b" / "results.json").read_text())["meta"]
    assert meta["detector_models"] == {"loglik": "c.pt", "itd": "d.pt", "itd@cdm": "c.pt", "recon": "d.pt"}
    assert "on c.pt: loglik, itd@cdm" in r.output and "on d.pt: itd, recon" in r.output
    md = (tmp_path / "b" / "results.md").read_text()
    assert "Models: loglik, itd@cdm on `c.pt`; itd, recon on `d.pt`" in md
    s = np.load(tmp_path / "b" / "scores.npz")
    assert not np.allclose(s["itd/noise"], s["itd@cdm/noise"])


@pytest.mark.parametrize("args,message", [
    (["bench", "nosuch-vs-noise"], "unknown data set 'nosuch'"),
    (["bench", "digits-0to4"], "write IN-vs-OUT"),
    (["bench", "digits-0to4-vs-noise", "--detectors", "loglik,nosuch"], "unknown detector(s) ['nosuch']"),
    (["bench", "digits-0to4-vs-noise", "--detectors", "loglik,energy"], "energy needs a joint model"),
    (["bench", "digits-0to4-vs-noise", "--detectors", "loglik@ddpm"], "detector loglik runs on a cdm model, not 'ddpm'"),
    (["bench", "digits-0to4-vs-noise", "--model", "missing.pt"], "checkpoint not found: missing.pt"),
    (["bench", "digits-0to4-vs-svhn", *TINY, "--data-root", "empty"], "svhn (test) not found"),
    (["score", "--model", "missing.pt", "--data", "digits", "--out", "x.csv"], "checkpoint not found"),
    (["train", "--data", "npz:nothere.npz", "--out", "m.pt"], "no such file: nothere.npz"),
])
def test_error_paths_are_one_line(run, args, message):
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 1, r.output
    assert message in r.output and "Traceback" not in r.output
    assert r.output.strip().count("\n") == 0 or r.output.strip().splitlines()[-1].startswith("Error:")


def test_bad_checkpoint_is_refused(run, tmp_path):
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint at all")
    r = CliRunner().invoke(main, ["score", "--model", "bad.pt", "--data", "digits", "--out", "x.csv"])
    assert r.exit_code == 1 and "truncated or not a checkpoint" in r.output


def test_datasets_lists_local_and_builtin(run, tmp_path):
    (tmp_path / "d").mkdir()
    np.savez(tmp_path / "d" / "mnist_test.npz", images=np.zeros((2, 28, 28), np.uint8))
    r = run("datasets", "--data-root", "d")
    assert r.exit_code == 0
    lines = {l.split()[0]: l for l in r.output.splitlines()[2:]}
    assert "npz: test" in lines["mnist"] and "built-in" in lines["digits"] and " - " in lines["svhn"]
