"""Fitted detectors as files, thresholds, and the fit -> score --detector workflow."""
import json

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from oodkit.checkpoint import save_checkpoint
from oodkit.data import as_images, load_dataset
from oodkit.detectors import make_detector
from oodkit.detectors.persist import DetectorFileError, load_detector, load_detectors, save_detectors
from oodkit.representation import clear_cache

from .test_detectors import fixed_model

NAMES = ["loglik", "typicality", "profile", "profile-gmm", "features", "features-gauss", "fused", "complexity"]


@pytest.fixture(scope="module")
def imgs():
    return {"train": as_images(load_dataset("digits-0to4", "train").images),
            "test": as_images(load_dataset("digits-0to4", "test").images),
            "letters": as_images(load_dataset("letters", "test").images)}


@pytest.mark.parametrize("embed", [False, True])
def test_saved_and_loaded_detectors_score_identically(imgs, tmp_path, embed):
    clear_cache()
    save_checkpoint(tmp_path / "m.pt", fixed_model(seed=2))
    dets = {n: make_detector(n, model=str(tmp_path / "m.pt"), progress=False).fit(imgs["train"]) for n in NAMES}
    save_detectors(tmp_path / "d.npz", dets, embed_model=embed)
    back = load_detectors(tmp_path / "d.npz")
    assert list(back) == NAMES
    for n in NAMES:
        for k in ("test", "letters"):
            np.testing.assert_array_equal(back[n].score_samples(imgs[k]), dets[n].score_samples(imgs[k]), err_msg=n)
        assert back[n].offset_ == dets[n].offset_
    one = dets["profile"].save(tmp_path / "p.npz")
    np.testing.assert_array_equal(load_detector(one).predict(imgs["letters"]), dets["profile"].predict(imgs["letters"]))


def test_tampered_pickled_or_stale_files_are_refused(imgs, tmp_path):
    clear_cache()
    save_checkpoint(tmp_path / "m.pt", fixed_model(seed=2))
    det = make_detector("typicality", model=str(tmp_path / "m.pt"), progress=False).fit(imgs["train"])
    det.save(tmp_path / "d.npz")
    np.savez(tmp_path / "pickled.npz", __header__=np.array([{"format": "oodkit-detector"}], dtype=object))
    with pytest.raises(DetectorFileError, match="pickled objects"):
        load_detectors(tmp_path / "pickled.npz")
    (tmp_path / "junk.npz").write_bytes(b"nothing")
    with pytest.raises(DetectorFileError, match="not a detector file"):
        load_detectors(tmp_path / "junk.npz")
    with np.load(tmp_path / "d.npz") as z:
        arrays = dict(z)
    header = json.loads(arrays["__header__"].tobytes())
    header["format"] = "other"
    np.savez(tmp_path / "t.npz", **{**arrays, "__header__": np.frombuffer(json.dumps(header).encode(), np.uint8)})
    with pytest.raises(DetectorFileError, match="not an oodkit detector file"):
        load_detectors(tmp_path / "t.npz")
    # format versions 1 to 3 hold no calibration scores: refused with the fix, whatever the score
    header["format"] = "oodkit-detector"
    for version in (1, 2, 3):
        header["version"] = version
        np.savez(tmp_path / "old.npz", **{**arrays, "__header__": np.frombuffer(json.dumps(header).encode(), np.uint8)})
        with pytest.raises(DetectorFileError, match=rf"format version {version}, which holds no calibration scores "
                                                    r"\(conformal thresholds and p-values need them\): refit it "
                                                    r"with `oodkit fit`$"):
            load_detectors(tmp_path / "old.npz")
    header["version"] = 7
    np.savez(tmp_path / "v7.npz", **{**arrays, "__header__": np.frombuffer(json.dumps(header).encode(), np.uint8)})
    with pytest.raises(DetectorFileError, match=r"format version 7; this oodkit reads \[4\]"):
        load_detectors(tmp_path / "v7.npz")
    save_checkpoint(tmp_path / "m.pt", fixed_model(seed=3))  # the model changed under the detector
    with pytest.raises(DetectorFileError, match="has changed since the detector was fitted"):
        load_detectors(tmp_path / "d.npz")


def test_calibrate_accepts_the_requested_share_of_held_out_id(imgs):
    clear_cache()
    det = make_detector("profile", model=fixed_model(seed=4), progress=False).fit(imgs["train"][:300])
    val, held = imgs["train"][300:], imgs["test"]
    det.calibrate(val, tpr=0.9)
    assert (det.predict(val) == 1).mean() >= 0.9
    acc = (det.predict(held) == 1).mean()
    se = np.sqrt(0.9 * 0.1 / len(held))
    assert abs(acc - 0.9) < 4 * se + 1.0 / len(val), acc
    assert det.threshold_source_.startswith("calibrated")


def test_set_params_after_fit_does_not_return_stale_scores(imgs):
    from sklearn.exceptions import NotFittedError

    det = make_detector("loglik", model=fixed_model(), progress=False).fit(imgs["train"])
    det.set_params(score="typicality")
    with pytest.raises(NotFittedError, match="score changed since fit"):
        det.score_samples(imgs["test"])


def test_cli_fit_then_score_with_the_detector_matches_bench(imgs, tmp_path, monkeypatch):
    from oodkit.cli import main

    monkeypatch.chdir(tmp_path)
    clear_cache()
    save_checkpoint(tmp_path / "m.pt", fixed_model(seed=7))
    run = lambda *a: CliRunner().invoke(main, [str(x) for x in a], catch_exceptions=False)
    r = run("fit", "--model", "m.pt", "--data", "digits-0to4", "--detectors", "loglik,profile", "--out", "det.npz",
            "--calibrate-on", "digits-0to4", "--tpr", "0.9", "--quiet")
    assert r.exit_code == 0, r.output
    r = run("score", "--detector", "det.npz", "--data", "letters", "--out", "s.csv", "--quiet")
    assert r.exit_code == 0, r.output
    df = pd.read_csv(tmp_path / "s.csv")
    assert {"loglik", "profile", "profile_threshold", "profile_is_ood"} <= set(df.columns)
    r = run("bench", "digits-0to4-vs-letters", "--model", "m.pt", "--detectors", "loglik,profile", "--quiet",
            "--output-dir", "b", "--bootstrap", "0")
    assert r.exit_code == 0, r.output
    s = np.load(tmp_path / "b" / "scores.npz")
    np.testing.assert_allclose(df["profile"], s["profile/letters"], rtol=1e-12)
    np.testing.assert_allclose(df["loglik"], s["loglik/letters"], rtol=1e-12)
    assert (df["profile_is_ood"] == (df["profile"] < df["profile_threshold"])).all()


def test_malformed_detector_files_are_one_line_errors(imgs, tmp_path):
    clear_cache()
    save_checkpoint(tmp_path / "m.pt", fixed_model(seed=2))
    make_detector("loglik", model=str(tmp_path / "m.pt"), progress=False).fit(imgs["train"]).save(tmp_path / "d.npz")
    with np.load(tmp_path / "d.npz") as z:
        arrays = dict(z)
    header = json.loads(arrays["__header__"].tobytes())
    bad = [dict(header, detectors={}), {k: v for k, v in header.items() if k != "detectors"},
           json.loads(json.dumps(header).replace('"contamination"', '"nosuch"'))]
    for i, h in enumerate(bad):
        np.savez(tmp_path / f"b{i}.npz", **{**arrays, "__header__": np.frombuffer(json.dumps(h).encode(), np.uint8)})
        with pytest.raises(DetectorFileError):
            load_detectors(tmp_path / f"b{i}.npz")
    data = bytearray((tmp_path / "d.npz").read_bytes())
    data[len(data) // 3] ^= 0xFF
    (tmp_path / "crc.npz").write_bytes(bytes(data))
    with pytest.raises(DetectorFileError):
        load_detectors(tmp_path / "crc.npz")


def test_a_detector_file_finds_its_model_relative_to_itself(imgs, tmp_path, monkeypatch):
    clear_cache()
    (tmp_path / "proj").mkdir()
    save_checkpoint(tmp_path / "proj" / "m.pt", fixed_model(seed=2))
    monkeypatch.chdir(tmp_path / "proj")
    det = make_detector("loglik", model="m.pt", progress=False).fit(imgs["train"])
    det.save("d.npz")
    s = det.score_samples(imgs["letters"])
    (tmp_path / "proj").rename(tmp_path / "moved")  # the folder moves with both files
    monkeypatch.chdir(tmp_path)
    np.testing.assert_array_equal(load_detector(tmp_path / "moved" / "d.npz").score_samples(imgs["letters"]), s)


def test_fused_threshold_rejects_about_the_contamination_share_of_fresh_id(imgs):
    """The threshold comes from leave-one-out training scores: in-sample kNN scores would
    be too high and reject twice the intended share of fresh ID images."""
    clear_cache()
    det = make_detector("fused", model=fixed_model(seed=4), progress=False, contamination=0.1).fit(imgs["train"])
    rejected = (det.predict(imgs["test"]) == -1).mean()
    n = len(imgs["test"])
    assert abs(rejected - 0.1) < 4 * np.sqrt(0.1 * 0.9 / n) + 0.02, rejected


def test_a_file_finds_its_model_at_the_recorded_path_before_resolving_the_name(tmp_path, monkeypatch):
    """A model found by name is recorded with its path: loading tries that path first and
    resolves the name (which, for a registered URL, means a download) only when the path
    is gone."""
    import oodkit.pretrained as pretrained

    x = torch.randint(0, 256, (20, 1, 28, 28), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    det = make_detector("typicality", model="mnist", progress=False).fit(x)
    det.save(tmp_path / "d.npz")
    seen = []
    real = pretrained.resolve_model
    monkeypatch.setattr(pretrained, "resolve_model", lambda ref, *a, **k: seen.append(str(ref)) or real(ref, *a, **k))
    back = load_detector(tmp_path / "d.npz")
    assert "mnist" not in seen
    np.testing.assert_array_equal(back.score_samples(x), det.score_samples(x))


def test_a_detector_file_records_and_scores_in_the_arithmetic_it_was_fitted_in(tmp_path, monkeypatch):
    """`oodkit fit --precision bf16` fits in bf16 and says so in the file (the detectors'
    ``precision`` parameter);
    `score --detector` then scores in bf16 by default (no warning: its scores and the
    calibration scores come from one arithmetic), and in fp32 only when asked, with a
    warning that names the file's arithmetic. Files written before the parameter are fp32."""
    import warnings as w

    from oodkit.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OODKIT_CACHE", str(tmp_path / "cache"))
    clear_cache()
    save_checkpoint(tmp_path / "m.pt", fixed_model(seed=7))
    run = lambda *a: CliRunner().invoke(main, [str(x) for x in a])
    fit = ["fit", "--model", "m.pt", "--data", "digits-0to4", "--detectors", "loglik,fused", "--quiet",
           "--device", "cpu", "--calibrate-on", "digits-0to4", "--tpr", "0.9"]
    r = run(*fit, "--out", "bf.npz", "--precision", "bf16")
    assert r.exit_code == 0 and "in bf16" in r.output, r.output
    r = run(*fit, "--out", "fp.npz")
    assert r.exit_code == 0 and "bf16" not in r.output, r.output
    assert {d.precision for d in load_detectors(tmp_path / "bf.npz").values()} == {"bf16"}
    assert {d.precision for d in load_detectors(tmp_path / "fp.npz").values()} == {"fp32"}
    with w.catch_warnings():  # the shipped files predate the record: fp32, which they are
        w.simplefilter("ignore")
        assert {d.precision for d in load_detectors("digits-0to4").values()} == {"fp32"}

    score = ["score", "--detector", "bf.npz", "--data", "letters", "--quiet", "--device", "cpu"]
    r = run(*score, "--out", "default.csv")
    assert r.exit_code == 0 and "Warning:" not in r.output, r.output
    r = run(*score, "--out", "bf16.csv", "--precision", "bf16")
    assert r.exit_code == 0 and "Warning:" not in r.output, r.output
    r = run(*score, "--out", "fp32.csv", "--precision", "fp32")
    assert r.exit_code == 0, r.output
    warned = [line for line in r.output.splitlines() if line.startswith("Warning:")]
    assert len(warned) == 1 and "fitted in bf16" in warned[0] and "score in bf16" in warned[0], r.output
    default, bf16, fp32 = (pd.read_csv(tmp_path / f"{n}.csv") for n in ("default", "bf16", "fp32"))
    pd.testing.assert_frame_equal(default, bf16)
    assert not np.allclose(bf16["loglik"], fp32["loglik"], rtol=1e-7, atol=0)  # really another arithmetic

    # scored again by default, the calibration images give their calibration scores, bit for bit
    r = run("score", "--detector", "bf.npz", "--data", "digits-0to4", "--quiet", "--device", "cpu", "--out", "id.csv")
    assert r.exit_code == 0, r.output
    cal = load_detectors(tmp_path / "bf.npz")["fused"].calibration_scores_
    np.testing.assert_array_equal(np.sort(pd.read_csv(tmp_path / "id.csv")["fused"].to_numpy()), cal)

    # a file holding both (saved from Python) names no one default: the user names it, and the others warn
    save_detectors(tmp_path / "mixed.npz", {"loglik": load_detectors(tmp_path / "bf.npz")["loglik"],
                                            "fused": load_detectors(tmp_path / "fp.npz")["fused"]})
    r = run("score", "--detector", "mixed.npz", "--data", "letters", "--quiet", "--device", "cpu", "--out", "m.csv")
    assert r.exit_code == 2 and "fitted in different arithmetics (bf16, fp32)" in r.output, r.output
    r = run("score", "--detector", "mixed.npz", "--data", "letters", "--quiet", "--device", "cpu", "--out", "m.csv",
            "--precision", "bf16")
    assert r.exit_code == 0 and "fitted in fp32 and these scores are in bf16" in r.output, r.output
    assert "the file's own" not in r.output and "a file of their own" in r.output, r.output  # no one arithmetic is
    np.testing.assert_array_equal(pd.read_csv(tmp_path / "m.csv")["loglik"], bf16["loglik"])

    # the record is part of what the file's SHA-256 covers, and only known arithmetics load
    with np.load(tmp_path / "bf.npz") as z:
        arrays = dict(z)
    header = json.loads(arrays["__header__"].tobytes())
    for value, message in (("fp32", "does not match its SHA-256"), ("fp16", "precision must be one of .*'fp16'")):
        h = json.loads(json.dumps(header))
        for e in h["detectors"].values():
            e["params"]["precision"] = value
        np.savez(tmp_path / "t.npz", **{**arrays, "__header__": np.frombuffer(json.dumps(h).encode(), np.uint8)})
        with pytest.raises(DetectorFileError, match=message):
            load_detectors(tmp_path / "t.npz")


def test_the_command_offers_the_arithmetics_the_pass_knows():
    from oodkit.cli import PRECISION_CHOICES
    from oodkit.representation import PRECISIONS

    assert PRECISION_CHOICES == tuple(PRECISIONS)


def test_the_arithmetic_recorded_is_the_one_that_ran(tmp_path, monkeypatch):
    """Audit 4: `fit --precision tf32` on a CPU ran fp32 and recorded tf32, and a file
    fitted in TF32 on a GPU would have been scored in fp32 on a CPU without a warning (both
    sides were mapped through the scoring device). Detectors that run their own passes
    (the diffusion family) took `--precision bf16` and ran fp32 while the summary said bf16:
    now refused."""
    from oodkit.cli import main
    from oodkit.pipeline import Flow

    monkeypatch.chdir(tmp_path)
    clear_cache()
    save_checkpoint(tmp_path / "m.pt", fixed_model(seed=7))
    run = lambda *a: CliRunner().invoke(main, [str(x) for x in a])
    r = run("train", "--kind", "ddpm", "--data", "digits-0to4", "--net", "tiny", "--steps", "2", "-T", "20", "--out",
            "ddpm.pt", "--quiet", "--device", "cpu")
    assert r.exit_code == 0, r.output
    fit = ["fit", "--model", "m.pt", "--data", "digits-0to4", "--quiet", "--device", "cpu"]
    r = run(*fit, "--detectors", "loglik", "--precision", "tf32", "--out", "tf.npz")
    assert r.exit_code == 0 and "in bf16" not in r.output, r.output
    det = load_detectors(tmp_path / "tf.npz")["loglik"]
    assert det.precision == "tf32" and det.arithmetic_ == "fp32"
    r = run("score", "--detector", "tf.npz", "--data", "letters", "--quiet", "--device", "cpu", "--out", "s.csv",
            "--precision", "bf16")
    assert "fitted in fp32 and these scores are in bf16" in r.output, r.output

    # fitted in TF32 on a GPU (its record), scored on this CPU: fp32 here, and said so
    det.arithmetic_ = "tf32"
    save_detectors(tmp_path / "gpu.npz", {"loglik": det})
    r = run("score", "--detector", "gpu.npz", "--data", "letters", "--quiet", "--device", "cpu", "--out", "g.csv")
    assert r.exit_code == 0 and "fitted in tf32 and these scores are in fp32" in r.output, r.output

    for args in (["fit", "--model", "m.pt", "--data", "npz:nowhere.npz", "--detectors", "itd@cdm,loglik", "--max-train",
                  "40", "--precision", "bf16", "--out", "itd.npz"],  # refused before the data is looked for
                 ["score", "--model", "ddpm.pt", "--data", "letters", "--precision", "bf16", "--out", "d.csv"]):
        r = run(*args, "--quiet", "--device", "cpu")
        assert r.exit_code == 2 and "runs its own passes in fp32" in r.output, r.output
    x = as_images(load_dataset("digits-0to4").images[:30])
    for p in ("bf16", "tf32"):  # refused before any pass, also where tf32 would be fp32
        with pytest.raises(ValueError, match="itd runs its own passes in fp32"):
            Flow(precision=p).fit({"loglik": fixed_model(seed=7), "itd": fixed_model(seed=7)}, x)
        with pytest.raises(ValueError, match="itd runs its own passes in fp32"):
            make_detector("itd", model=fixed_model(seed=7), precision=p)

    # the Python API warns too, from the detector itself: scores of another arithmetic than the fit's
    from oodkit.detectors.base import ArithmeticWarning
    from oodkit.representation import represent

    import warnings

    fp = load_detectors(tmp_path / "tf.npz")["loglik"]  # tf32 on this CPU: fp32
    with pytest.warns(ArithmeticWarning, match="fitted in fp32 and these scores are in bf16"):
        fp.score_representation(represent(fp.model_, x, cache=None, precision="bf16"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fp.score_samples(x)
