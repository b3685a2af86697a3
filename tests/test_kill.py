"""Kill tests: real ``python -m oodkit`` processes SIGKILLed at seeded random moments
(including while a checkpoint or a results file is being written), then checked on disk
and resumed.

SIGKILL runs no cleanup handler, so a temporary file (``.NAME.XXXX.tmp``) may survive a
kill; what must never happen is a half-written file under its final name, or a temporary
file being taken for the real one.
"""
from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from oodkit.checkpoint import CheckpointError, load_checkpoint, load_model
from oodkit.cli import main
from oodkit.report import write_results

REPO = Path(__file__).resolve().parent.parent
SEED = 20240611
STEPS = 12
SAVE_EVERY = 2
TRAIN = ["train", "--data", "digits-0to4", "--net", "tiny", "-T", "20", "--steps", str(STEPS),
         "--save-every", str(SAVE_EVERY), "--device", "cpu", "--out", "m.pt"]
BENCH = ["bench", "digits-0to4-vs-noise", "--net", "tiny", "--steps", "30", "-T", "20", "--detectors", "loglik",
         "--bootstrap", "0", "--output-dir", "res", "--quiet"]


def _env(tmp_path: Path) -> dict:
    env = dict(os.environ)
    env["OODKIT_CACHE"] = str(tmp_path / "cache")
    # same thread count as this process, so that in-process and subprocess arithmetic agree bit for bit
    env["OMP_NUM_THREADS"] = str(torch.get_num_threads())
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.pop("OODKIT_DEBUG", None)
    return env


class Proc:
    """One ``python -m oodkit ...`` run with stdout/stderr captured to files."""

    def __init__(self, args, cwd: Path, env: dict, tag: str):
        self.out_path, self.err_path = cwd / f"{tag}.out", cwd / f"{tag}.err"
        self._out, self._err = open(self.out_path, "wb"), open(self.err_path, "wb")
        self.p = subprocess.Popen([sys.executable, "-m", "oodkit", *args], cwd=cwd, env=env,
                                  stdout=self._out, stderr=self._err, stdin=subprocess.DEVNULL)
        self.t0 = time.monotonic()
        self.killed = False

    def wait_for(self, cond, timeout=900.0, poll=0.0005) -> bool:
        """Poll ``cond()`` until true (True) or the process ends (False): an event, not a
        clock (the timeout only stops a hung run, so a busy machine is slow, not failing)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if cond():
                return True
            if self.p.poll() is not None:
                return bool(cond())
            time.sleep(poll)
        raise AssertionError(f"timed out waiting; output so far:\n{self.text()}")

    def sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end and self.p.poll() is None:
            time.sleep(0.005)

    def kill(self) -> None:
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGKILL)  # this very process, by its id
            self.killed = True
        self.finish()

    def finish(self, timeout=900) -> int:
        rc = self.p.wait(timeout=timeout)
        self._out.close()
        self._err.close()
        if rc == -signal.SIGKILL:
            self.killed = True
        return rc

    def stdout(self) -> str:
        return self.out_path.read_text(errors="replace")

    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")

    def text(self) -> str:
        return self.stdout() + self.stderr()


def _temps(folder: Path, name: str) -> list:
    return sorted(p.name for p in folder.glob(f".{name}.*.tmp")) if folder.exists() else []


def _ckpt_step(path: Path):
    """The checkpoint's step, None when absent; fails when a file is under the final name
    but does not load (half-written)."""
    if not path.exists():
        return None
    try:
        ckpt = load_checkpoint(path)
    except CheckpointError as e:  # pragma: no cover - this is the failure the test looks for
        pytest.fail(f"{path.name} exists but does not load after a SIGKILL: {e}")
    return int(ckpt["train_state"]["step"])


def _progress(stderr: str) -> int:
    """Highest step tqdm showed (tqdm lags the real step, never leads it)."""
    steps = [int(m) for m in re.findall(rf"(\d+)/{STEPS}\b", stderr)]
    return max(steps, default=0)


# ----------------------------------------------------------------------------------------
# oodkit train: killed at random moments, resumed, bit-for-bit equal to an uninterrupted run
# ----------------------------------------------------------------------------------------
@pytest.mark.slow
def test_train_killed_at_random_moments_resumes_bit_for_bit(tmp_path, monkeypatch):
    rng = random.Random(SEED)
    env = _env(tmp_path)
    ck = tmp_path / "m.pt"
    litter_seen = []
    history = []  # (moment, checkpoint step after the kill, litter)

    def stat():
        try:
            st = ck.stat()
            return (st.st_ino, st.st_size, st.st_mtime_ns)
        except FileNotFoundError:
            return None

    def event_checkpoint_changes(proc):  # the moment m.pt appears or changes: with an atomic rename
        # it is whole at once; a writer that wrote the final name in place would be caught mid-file
        before = stat()
        proc.wait_for(lambda: stat() != before, poll=0.0002)
        proc.sleep(rng.uniform(0.0, 0.002))

    def event_mid_write(proc):  # while the next checkpoint's temporary file is being written
        before = set(_temps(tmp_path, "m.pt"))
        proc.wait_for(lambda: bool(set(_temps(tmp_path, "m.pt")) - before))
        proc.sleep(rng.uniform(0.0, 0.003))

    def event_random_in_training(proc):  # a random moment of the ~2 s of training (start-up takes ~4 s)
        proc.wait_for(lambda: "train:" in proc.stderr(), poll=0.005)
        proc.sleep(rng.uniform(0.0, 1.5))

    moments = [("random in training", event_random_in_training), ("as m.pt changes", event_checkpoint_changes),
               ("mid checkpoint write", event_mid_write)]
    prev_step = None
    for i, (what, event) in enumerate(moments):
        args = TRAIN + (["--resume"] if ck.exists() else [])
        proc = Proc(args, tmp_path, env, f"train{i}")
        event(proc)
        proc.kill()
        step = _ckpt_step(ck)
        litter = _temps(tmp_path, "m.pt")
        litter_seen += litter
        history.append((what, proc.killed, step, litter))
        if proc.killed:
            # a checkpoint never goes back, and at most one interval of work is lost
            if prev_step is not None:
                assert step is not None and step >= prev_step, history
            shown = _progress(proc.stderr())
            if shown:
                assert step is not None and shown - step <= SAVE_EVERY, (history, shown)
            if step is not None:
                assert step % SAVE_EVERY == 0 or step == STEPS, history
        else:  # it finished before the kill moment
            assert proc.p.returncode == 0, proc.text()
        # a leftover temporary is hidden and never matches *.pt (what tools and users look for)
        assert [p.name for p in tmp_path.glob("*.pt")] == ([ck.name] if step is not None else []), history
        prev_step = step

    # finish the run (resuming when there is a checkpoint), then compare with an uninterrupted one
    proc = Proc(TRAIN + (["--resume"] if ck.exists() else []), tmp_path, env, "train-final")
    rc = proc.finish()
    assert rc == 0, proc.text()
    assert f"wrote m.pt (step {STEPS})" in proc.stdout() and "Traceback" not in proc.text()

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OODKIT_CACHE", str(tmp_path / "cache"))
    ref_args = [a if a != "m.pt" else "ref.pt" for a in TRAIN] + ["--quiet"]
    r = CliRunner().invoke(main, ref_args, catch_exceptions=False)
    assert r.exit_code == 0, r.output
    a, b = load_checkpoint(ck), load_checkpoint(tmp_path / "ref.pt")
    assert a["train_state"]["step"] == b["train_state"]["step"] == STEPS
    for key in ("state_dict", "ema_state_dict"):
        assert a[key].keys() == b[key].keys()
        for k in a[key]:
            assert torch.equal(a[key][k], b[key][k]), (key, k, history)
    # the published file loads as a model at the target step
    assert load_model(ck).train_steps == STEPS
    # report: litter left by SIGKILL (allowed, but never under the final name)
    print(f"\nkill history: {history}\ntemporary files left by SIGKILL: {sorted(set(litter_seen))}")


# ----------------------------------------------------------------------------------------
# oodkit bench: killed at random moments, then rerun
# ----------------------------------------------------------------------------------------
def _cache_state(cache: Path) -> dict:
    """{'finished': bool, 'partial': bool}; fails on a half-written or unfinished file under
    a final (non-partial) name."""
    models = cache / "models"
    finished, partial = False, False
    if models.exists():
        for p in models.iterdir():
            if p.name.endswith(".tmp"):
                continue  # litter of a killed writer; never matched by *.pt
            if p.name.endswith(".partial.pt"):
                partial = True
                load_checkpoint(p)  # a partial file is written atomically too
                continue
            assert p.suffix == ".pt", p
            steps = load_model(p).train_steps
            assert steps == 30, f"{p.name} is under the final name but stopped at step {steps}"
            finished = True
    return {"finished": finished, "partial": partial}


def _check_results(res: Path) -> str | None:
    """Every results file present is complete and parseable; returns meta.status."""
    status = None
    if (res / "results.json").exists():
        doc = json.loads((res / "results.json").read_text())
        status = doc["meta"]["status"]
        assert status in ("running", "complete"), status
        if status == "complete":  # results.json is written last: everything it describes is there
            for f in ("results.csv", "results.md", "scores.npz", "roc.png", "histograms.png"):
                assert (res / f).exists(), f"status complete but {f} is missing"
            assert len(doc["results"]) == 1
    if (res / "results.csv").exists():
        df = pd.read_csv(res / "results.csv")
        assert len(df) == 1 and {"auroc", "detector", "ood"} <= set(df.columns)
    if (res / "scores.npz").exists():
        with np.load(res / "scores.npz") as z:
            assert set(z.files) == {"loglik/digits-0to4", "loglik/noise"}
            assert all(np.isfinite(z[k]).all() for k in z.files)
    for png in ("roc.png", "histograms.png"):
        if (res / png).exists():
            assert (res / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return status


@pytest.mark.slow
def test_bench_killed_at_random_moments_never_reuses_an_unfinished_model(tmp_path):
    rng = random.Random(SEED + 1)
    env = _env(tmp_path)
    cache, res = tmp_path / "cache", tmp_path / "res"
    models = cache / "models"
    history = []

    def final_model_exists():
        return models.exists() and any(p.suffix == ".pt" and not p.name.endswith(".partial.pt")
                                       for p in models.iterdir())

    def during_training(proc):
        proc.wait_for(lambda: "model: training" in proc.stdout(), poll=0.01)
        proc.sleep(rng.uniform(0.0, 4.0))

    def after_publish(proc):  # the cached model just appeared: kill while detectors are fitted
        proc.wait_for(final_model_exists, poll=0.001)
        proc.sleep(rng.uniform(0.0, 0.4))

    def results_write(proc):  # as a results file is written (res/.NAME.XXXX.tmp seen; small files are
        # renamed within ~0.1 ms, so the kill usually lands just after one write, before the next)
        def tmp_in_res():
            return res.exists() and any(p.name.endswith(".tmp") for p in res.iterdir())
        proc.wait_for(lambda: (res / "results.json").exists() and tmp_in_res(), poll=0.0005)
        proc.sleep(rng.uniform(0.0, 0.002))

    for i, (what, event) in enumerate([("during training", during_training), ("after publish", after_publish),
                                        ("at a results write", results_write)]):
        before = _cache_state(cache)
        proc = Proc(BENCH, tmp_path, env, f"bench{i}")
        event(proc)
        proc.kill()
        out = proc.stdout()
        if not proc.killed:  # it finished before the kill moment
            assert proc.p.returncode == 0, proc.text()
        if "reusing cached" in out:
            assert before["finished"], f"run {i} reused an unfinished model: {out}"
        assert "Traceback" not in proc.text()
        after = _cache_state(cache)
        status = _check_results(res)
        if status == "complete" and proc.killed:
            # killed after its last write: the folder must describe this run, finished
            doc = json.loads((res / "results.json").read_text())
            assert doc["meta"].get("seconds") is not None and doc["meta"].get("offsets"), doc["meta"]
        litter = sorted(p.name for d in (models, res) if d.exists() for p in d.iterdir() if p.name.endswith(".tmp"))
        history.append((what, proc.killed, after, status, litter))

    before = _cache_state(cache)
    proc = Proc(BENCH, tmp_path, env, "bench-final")
    assert proc.finish() == 0, proc.text()
    out = proc.stdout()
    if "reusing cached" in out:
        assert before["finished"], out
    else:
        assert not before["finished"], f"a finished cached model was not reused: {out}"
    assert _cache_state(cache)["finished"]
    assert _check_results(res) == "complete"
    assert not [p for p in models.glob("*.pt") if p.name.endswith(".partial.pt")]
    print(f"\nbench kill history: {history}")


# ----------------------------------------------------------------------------------------
# A kill between the two halves of a results-folder clean-up (deterministic, in-process)
# ----------------------------------------------------------------------------------------
def test_a_kill_during_the_clean_up_never_leaves_complete_without_its_files(tmp_path, monkeypatch):
    out = tmp_path / "res"
    out.mkdir()
    meta = {"status": "complete", "id": "a", "units": {}, "detector_models": {}}
    rows = [{"detector": "loglik", "id": "a", "ood": "b", "group": "far", "auroc": 0.5, "aupr_in": 0.5,
             "aupr_out": 0.5, "fpr95_ood_accepted": 1.0, "fpr95_id_rejected": 1.0, "n_id": 2, "n_ood": 2}]
    write_results(out, rows, {"loglik": {"a": np.zeros(2), "b": np.ones(2)}}, {}, meta, plots=False)
    assert json.loads((out / "results.json").read_text())["meta"]["status"] == "complete"

    real_unlink = Path.unlink
    calls = []

    def dying_unlink(self, *a, **k):  # SIGKILL right after the first file of the old run is removed
        real_unlink(self, *a, **k)
        calls.append(self.name)
        if len(calls) == 1:
            raise KeyboardInterrupt("killed")

    monkeypatch.setattr(Path, "unlink", dying_unlink)
    with pytest.raises(KeyboardInterrupt):
        write_results(out, [], {}, {}, {**meta, "status": "running"}, plots=False, clean=True)
    monkeypatch.setattr(Path, "unlink", real_unlink)
    doc = json.loads((out / "results.json").read_text()) if (out / "results.json").exists() else None
    if doc and doc["meta"]["status"] == "complete":
        missing = [f for f in ("results.csv", "results.md", "scores.npz") if not (out / f).exists()]
        assert not missing, f"results.json says complete, but {missing} are gone (removed first: {calls})"


# ----------------------------------------------------------------------------------------
# A kill between finishing the cached model and publishing it (deterministic, in-process:
# the window is one os.replace, too narrow to hit with a timed SIGKILL)
# ----------------------------------------------------------------------------------------
def test_bench_killed_between_finishing_and_publishing_resumes_without_retraining(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OODKIT_CACHE", str(tmp_path / "cache"))
    args = ["bench", "digits-0to4-vs-noise", "--net", "tiny", "--steps", "4", "-T", "20", "--detectors", "loglik",
            "--bootstrap", "0", "--output-dir", "res", "--quiet", "--max-train", "40", "--max-test", "20",
            "--device", "cpu"]
    real_replace = os.replace

    def dying_replace(src, dst, *a, **k):
        if str(src).endswith(".partial.pt"):
            raise KeyboardInterrupt("killed just before publishing")
        return real_replace(src, dst, *a, **k)

    monkeypatch.setattr(os, "replace", dying_replace)
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 130, r.output
    monkeypatch.setattr(os, "replace", real_replace)
    models = tmp_path / "cache" / "models"
    partial = [p for p in models.glob("*.pt")]
    assert len(partial) == 1 and partial[0].name.endswith(".partial.pt"), partial
    assert load_checkpoint(partial[0])["train_state"]["step"] == 4
    finished_weights = load_checkpoint(partial[0])["ema_state_dict"]
    assert not (tmp_path / "res" / "results.json").exists()

    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    assert "reusing cached" not in r.output and "training a tiny CDM" not in r.output, r.output
    assert "resuming the interrupted training" in r.output and "at step 4" in r.output, r.output
    final = list(models.glob("*.pt"))
    assert len(final) == 1 and not final[0].name.endswith(".partial.pt"), final
    assert load_model(final[0]).train_steps == 4
    published = load_checkpoint(final[0])["ema_state_dict"]
    assert all(torch.equal(published[k], finished_weights[k]) for k in finished_weights)
    assert json.loads((tmp_path / "res" / "results.json").read_text())["meta"]["status"] == "complete"
    assert "reusing cached" in CliRunner().invoke(main, args).output
