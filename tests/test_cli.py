"""The oodkit command end to end on tiny data, error paths included."""
import json
import os

import numpy as np
import pandas as pd
import pytest
import torch
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
    assert meta["ood"] == ["letters", "noise"] and meta["models"][0]["T"] == 30 and meta["status"] == "complete"
    assert meta["groups"] == {"letters": "far", "noise": "synthetic"} and meta["command"].startswith("oodkit bench")
    assert {"auroc_lo", "auroc_hi", "fpr95_ood_accepted_lo", "n_id", "n_ood", "group"} <= set(df.columns)
    assert (df.auroc_lo <= df.auroc).all() and (df.auroc <= df.auroc_hi).all()
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
    names = ["loglik", "posterior", "expected-t", "typicality", "complexity", "profile", "features", "fused"]
    # each score with the threshold its detector fitted on the model's training set, and the verdict
    assert list(df.columns) == ["index", "bpd"] + [c for n in names for c in (n, f"{n}_threshold", f"{n}_is_ood")]
    assert len(df) == len(np.unique(df["index"])) and "fitted on digits-0to4" in r.output
    r = run("bench", "digits-0to4-vs-digits-5to9", "--model", "m.pt", "--detectors", "typicality", "--quiet",
            "--output-dir", "b")
    assert r.exit_code == 0 and "model: m.pt" in r.output, r.output


@pytest.mark.slow
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
    monkeypatch.setattr(DiffusionDetector, "_compute",
                        lambda self, x, *shard: sizes.append(len(x)) or compute(self, x, *shard))
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
    (["bench", "digits-0to4-vs-noise", "--detectors", "loglik,energy"], "energy needs a model with a class head"),
    (["bench", "digits-0to4-vs-noise", "--detectors", "loglik@ddpm"], "detector loglik runs on a cdm model, not 'ddpm'"),
    (["bench", "digits-0to4-vs-noise", "--model", "missing.pt"], "checkpoint not found: missing.pt"),
    (["bench", "digits-0to4-vs-svhn", *TINY, "--data-root", "empty"], "svhn (test) not found"),
    (["score", "--model", "missing.pt", "--data", "digits", "--out", "x.csv"], "checkpoint not found"),
    (["train", "--data", "npz:nothere.npz", "--out", "m.pt"], "no such file: nothere.npz"),
])
def test_error_paths_are_one_line(run, args, message):
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 2, r.output
    assert message in r.output and "Traceback" not in r.output
    assert r.output.strip().count("\n") == 0 or r.output.strip().splitlines()[-1].startswith("Error:")


def test_bad_checkpoint_is_refused(run, tmp_path):
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint at all")
    r = CliRunner().invoke(main, ["score", "--model", "bad.pt", "--data", "digits", "--out", "x.csv"])
    assert r.exit_code == 2 and "truncated or not a checkpoint" in r.output


def test_datasets_lists_local_and_builtin(run, tmp_path):
    (tmp_path / "d").mkdir()
    np.savez(tmp_path / "d" / "mnist_test.npz", images=np.zeros((2, 28, 28), np.uint8))
    r = run("datasets", "--data-root", "d")
    assert r.exit_code == 0
    lines = {l.split()[0]: l for l in r.output.splitlines()[2:]}
    assert "npz: test" in lines["mnist"] and "built-in" in lines["digits"] and " - " in lines["svhn"]


def test_bench_fits_each_pair_on_training_images_aligned_like_its_test_images(tmp_path):
    """ID 12x12 against an 8x8 OOD set: the ID test images go 12 -> 8 -> 12, so every
    fitted statistic must come from training images that went 12 -> 8 -> 12 too."""
    from oodkit.bench import run_bench
    from oodkit.data import as_images, conform, load_dataset
    from oodkit.detectors import make_detector
    from oodkit.representation import clear_cache
    from .test_detectors import fixed_model

    digits = load_dataset("digits-0to4", "train")
    up = conform(as_images(digits.images), 12, 1).numpy().transpose(0, 2, 3, 1)
    np.savez(tmp_path / "big_train.npz", images=up[:200])
    np.savez(tmp_path / "big_test.npz", images=up[200:300])
    np.savez(tmp_path / "small_test.npz", images=as_images(load_dataset("letters", "test").images).numpy()
             .transpose(0, 2, 3, 1)[:80])
    model = fixed_model()
    model.net.config.image_size = 12
    from oodkit.checkpoint import save_checkpoint
    from oodkit import CDM, NoiseSchedule, UNet
    s = NoiseSchedule.uniform(50)
    net = UNet(ch=8, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(), dropout=0.0, in_channels=1,
               image_size=12, num_classes=s.num_classes)
    net.load_state_dict(model.net.state_dict())
    save_checkpoint(tmp_path / "m.pt", CDM(net, s))
    clear_cache()
    run_bench("big-vs-small,noise", model=str(tmp_path / "m.pt"), detectors=["typicality", "profile"],
              data_root=tmp_path, output_dir=tmp_path / "out", progress=False, bootstrap=0, echo=lambda m: None)
    meta = json.loads((tmp_path / "out" / "results.json").read_text())["meta"]
    assert meta["transform"]["small"]["align_px"] == 8 and meta["transform"]["noise"]["align_px"] == 12
    off = meta["offsets"]["typicality"]
    assert off["8"] != off["12"]  # the statistics differ between the two alignments
    from oodkit.checkpoint import load_model
    m = load_model(tmp_path / "m.pt")
    x_train = conform(torch.from_numpy(up[:200].transpose(0, 3, 1, 2)), 12, 1, ref_size=8)
    x_test = conform(torch.from_numpy(up[200:300].transpose(0, 3, 1, 2)), 12, 1, ref_size=8)
    det = make_detector("typicality", model=m, progress=False).fit(x_train)
    assert det.offset_ == pytest.approx(off["8"], rel=1e-9)
    scores = np.load(tmp_path / "out" / "scores.npz")
    np.testing.assert_allclose(scores["typicality/big@8px"], det.score_samples(x_test), rtol=1e-9)


def test_an_interrupted_bench_training_is_resumed_never_reused(run, tmp_path, monkeypatch):
    """The cache holds finished models only: a run killed mid-training leaves a partial
    file that the next run resumes, and 'reusing cached' appears only for a finished one."""
    import oodkit.bench as bench_mod
    from oodkit.checkpoint import load_model

    real = bench_mod.fit_model

    def killed(*args, config=None, **kw):
        import dataclasses
        real(*args, config=dataclasses.replace(config, steps=6), **kw)  # saves the partial file at step 6
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(bench_mod, "fit_model", killed)
    args = ["bench", "digits-0to4-vs-noise", "--net", "tiny", "--steps", "12", "-T", "20", "--detectors", "loglik",
            "--quiet", "--output-dir", "res", "--bootstrap", "0"]
    r = run(*args)
    assert r.exit_code == 130
    cached = list((tmp_path / "cache" / "models").glob("*.pt"))
    assert [p.name.endswith(".partial.pt") for p in cached] == [True]
    monkeypatch.setattr(bench_mod, "fit_model", real)
    r = run(*args)
    assert r.exit_code == 0 and "resuming the interrupted training" in r.output and "at step 6" in r.output, r.output
    final = [p for p in (tmp_path / "cache" / "models").glob("*.pt")]
    assert len(final) == 1 and not final[0].name.endswith(".partial.pt")
    assert load_model(final[0]).train_steps == 12
    assert "reusing cached" in run(*args).output


def test_a_new_run_replaces_an_old_runs_files_and_marks_completion(run, tmp_path):
    out = tmp_path / "res"
    out.mkdir()
    (out / "roc.png").write_bytes(b"old")
    (out / "results.json").write_text('{"meta": {"status": "complete"}}')
    r = run("bench", "digits-0to4-vs-noise", *TINY, "--detectors", "loglik", "--output-dir", "res",
            "--bootstrap", "0")
    assert r.exit_code == 0, r.output
    assert json.loads((out / "results.json").read_text())["meta"]["status"] == "complete"
    assert (out / "roc.png").read_bytes()[:4] == b"\x89PNG"
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("flags,message", [
    (dict(model="m.pt", steps=5), "set a model trained here; drop them with --model"),
    (dict(model="m.pt", net="tiny"), "set a model trained here; drop them with --model"),
    (dict(model=","), "names no checkpoint"),
    (dict(net="nosuch"), "--net 'nosuch': choose one of"),
])
def test_run_bench_refuses_contradictory_model_requests_before_any_work(tmp_path, monkeypatch, flags, message):
    """The library refuses what the CLI refuses (training settings beside a given model
    were silently ignored), before reading any data."""
    import oodkit.bench as bench

    monkeypatch.setattr(bench, "load_sets", lambda *a, **k: pytest.fail("read data before checking the request"))
    with pytest.raises(ValueError, match=message):
        bench.run_bench("digits", output_dir=tmp_path / "r", progress=False, echo=lambda m: None, **flags)


def test_model_lists_are_split_and_stripped_alike_from_the_cli_and_the_library():
    from oodkit.bench import check_model_request

    assert check_model_request(" a.pt , b.pt,") == ["a.pt", "b.pt"]
    assert check_model_request(["a.pt", " ", "b.pt "]) == ["a.pt", "b.pt"]
    assert check_model_request(None) == []


def test_provenance_marks_changed_code_dirty_but_not_rewritten_results(tmp_path):
    """A benchmark rewrites its committed results as it runs; that must not mark the run
    '-dirty' (every rerun was), while a change to the package's code must."""
    import subprocess

    from oodkit.bench import _git_commit

    def git(*args):
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)

    (tmp_path / "oodkit").mkdir()
    (tmp_path / "oodkit" / "m.py").write_text("x = 1\n")
    (tmp_path / "results.md").write_text("old\n")
    git("init", "-q")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "c")
    head = subprocess.run(["git", "-C", str(tmp_path), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    (tmp_path / "results.md").write_text("new\n")
    assert _git_commit(tmp_path) == head
    (tmp_path / "oodkit" / "m.py").write_text("x = 2\n")
    assert _git_commit(tmp_path) == head + "-dirty"


def test_partial_results_are_written_while_a_bench_runs(tmp_path, monkeypatch):
    """A killed run keeps the pairs finished up to the last partial write (here: after
    every pair, as on a machine slow enough that each pair takes the whole interval)."""
    import oodkit.bench as bench

    seen = []
    real = bench._every
    monkeypatch.setattr(bench, "_every", lambda seconds, out, meta, write=None: real(
        0.0, out, meta, lambda *a, **k: (seen.append(len(a[1])), bench.write_results(*a, **k))))
    bench.run_bench("digits-0to4-vs-noise,constant", model="digits-0to4", detectors=["loglik"], bootstrap=0,
                    output_dir=tmp_path / "r", progress=False, echo=lambda m: None)
    assert seen[-2:] == [1, 2]  # the first pair written before the second was scored, then both


# -- audit 7: the command line as a new user meets it ----------------------------------------


def _one_error(r, *words):
    assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1, r.output
    for w in words:
        assert w in r.output, r.output


def test_diffusion_detectors_leave_out_the_images_the_network_trained_on(run, tmp_path):
    """`fit --detectors itd --calibrate-split train` printed a 0.95 guarantee on images the
    network trained on (0.353 of fresh images accepted); without --calibrate-on, no warning."""
    from oodkit.training import TrainConfig, fit_model
    from oodkit.data import as_images, load_dataset

    x = as_images(load_dataset("digits-0to4", "train").images)
    fit_model(x, kind="ddpm", net="tiny", T=10, config=TrainConfig(steps=1, batch_size=8, save_every=0),
              out=tmp_path / "d.pt")
    r = run("fit", "--model", "d.pt", "--data", "digits-0to4", "--detectors", "itd", "--max-train", "100",
            "--calibrate-on", "digits-0to4", "--calibrate-split", "train", "--max-calibrate", "200", "--out", "i.npz",
            "--quiet")
    _one_error(r, "trained on")
    r = run("fit", "--model", "d.pt", "--data", "digits-0to4", "--detectors", "itd", "--max-train", "60", "--out",
            "i.npz", "--quiet")
    assert r.exit_code == 0 and "trained on" in r.output, r.output
    from oodkit.detectors.persist import load_detector

    assert load_detector(tmp_path / "i.npz").threshold_guarantee() == "trained-on"


def test_options_that_would_be_ignored_are_refused(run):
    base = ("fit", "--model", "digits-0to4", "--data", "digits-0to4", "--detectors", "loglik", "--out", "d.npz")
    _one_error(run(*base, "--max-calibrate", "50"), "--calibrate-on")
    _one_error(run(*base, "--calibrate-split", "train"), "--calibrate-on")
    _one_error(run(*base, "--align-px", "1"), "--align-px")
    t = ("train", "--data", "digits-0to4", "--net", "tiny", "--steps", "2", "--out", "c.pt")
    _one_error(run(*t, "--cdl-weight", "1"), "--cdl-weight", "ddpm")
    _one_error(run(*t, "--var-type", "posterior"), "--var-type", "ddpm")


def test_a_file_named_like_a_pretrained_model_says_it_is_used(run, tmp_path):
    import shutil
    import warnings

    from oodkit.pretrained import PRETRAINED_DIR, resolve_model

    shutil.copy(PRETRAINED_DIR / "digits-0to4.pt", tmp_path / "digits-0to4")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        resolve_model("digits-0to4")
    assert any("pretrained" in str(w.message) and "./digits-0to4" in str(w.message) for w in caught)


def test_names_get_a_suggestion(run):
    _one_error(run("score", "--model", "digits-0to4", "--data", "mnsit", "--out", "s.csv"), "did you mean 'mnist'")
    _one_error(run("bench", "digits-0to4-vs-noise", "--detectors", "fusd"), "did you mean 'fused'")
    _one_error(run("score", "--model", "digits-0to4", "--data", "digits-0to4", "--out", ""), "--out", "empty")
    r = run("train", "--data", "digits-0to4", "--init", "digits-0to4", "--steps", "1", "--out", "c.pt")
    assert r.exit_code == 2 and "it is a tiny net: pass --net tiny" in r.output, r.output


def test_the_python_bench_takes_a_comma_list_and_noise_takes_a_set_name():
    import numpy as np
    from oodkit import run_bench
    from oodkit.data import load_dataset

    assert load_dataset("noise", "test", like="digits-0to4").images.shape[1:] == (8, 8, 1)
    with pytest.raises(ValueError, match="did you mean"):
        run_bench("digits-0to4-vs-noise", detectors="fusd")


def test_an_interrupted_score_says_how_to_resume(run, monkeypatch, capsys):
    import oodkit.streaming

    def stop(*a, **k):
        os.makedirs("s.csv.parts")  # one chunk had been written
        raise KeyboardInterrupt

    monkeypatch.setattr(oodkit.streaming, "score_in_chunks", stop)
    with pytest.raises(SystemExit) as e:
        from oodkit.cli import main

        main(["score", "--model", "digits-0to4", "--data", "digits-0to4", "--out", "s.csv", "--quiet"],
             standalone_mode=False)
    assert e.value.code == 130 and "s.csv.parts; run the same command again" in capsys.readouterr().err


def test_a_missing_detector_file_lists_the_pretrained_names(run):
    _one_error(run("score", "--detector", "fashionmnis", "--data", "digits-0to4", "--out", "s.csv"),
               "did you mean 'fashionmnist'", "pretrained name")


def test_a_copy_of_a_shipped_model_scores_with_its_shipped_statistics(run, tmp_path):
    """`score --model ./mnist.pt` (the shipped file, copied) refitted on 60,000 training
    images: minutes on two cores for what the shipped statistics give at once."""
    import shutil

    from oodkit.pretrained import PRETRAINED_DIR

    shutil.copy(PRETRAINED_DIR / "digits-0to4.pt", tmp_path / "copy.pt")
    r = run("score", "--model", "copy.pt", "--data", "digits-5to9", "--out", "s.csv")
    assert r.exit_code == 0 and "statistics shipped with the model" in r.output and "forward train" not in r.output
    want = run("score", "--model", "digits-0to4", "--data", "digits-5to9", "--out", "t.csv", "--quiet")
    assert want.exit_code == 0
    a, b = pd.read_csv(tmp_path / "s.csv"), pd.read_csv(tmp_path / "t.csv")
    pd.testing.assert_frame_equal(a, b)


def test_more_decoding_workers_than_the_cores_can_serve_are_refused(run, tmp_path):
    (tmp_path / "imgs").mkdir()
    _one_error(run("score", "--model", "digits-0to4", "--data", "folder:imgs", "--num-workers", str(10**4),
                   "--out", "s.csv"), "--num-workers", "CPU cores")


def test_bench_never_replaces_results_it_did_not_write(run, tmp_path):
    """A folder holding someone's own results.csv lost it to the run's clean-up."""
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "results.csv").write_text("my,own\n1,2\n")
    _one_error(run("bench", "digits-0to4-vs-noise", "--detectors", "loglik", "--output-dir", "mine"), "did not write")
    assert (tmp_path / "mine" / "results.csv").read_text() == "my,own\n1,2\n"
    r = run("bench", "digits-0to4-vs-noise", "--detectors", "loglik", "--output-dir", "ours", "--bootstrap", "0")
    assert r.exit_code == 0, r.output
    r = run("bench", "digits-0to4-vs-noise", "--detectors", "loglik", "--output-dir", "ours", "--bootstrap", "0")
    assert r.exit_code == 0, r.output  # its own results it replaces
