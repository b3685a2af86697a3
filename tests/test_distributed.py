"""Scoring over torch.distributed: ``torchrun --nproc-per-node 2 -m oodkit score`` (gloo,
CPU) writes one CSV equal, number for number, to the one-process run, chunk by chunk."""
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from oodkit.cli import main

REPO = Path(__file__).resolve().parent.parent


def _env(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", OODKIT_CACHE=str(tmp_path / "cache"))
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def test_two_process_gloo_scoring_equals_one_process(tmp_path):
    # batch 64 over 500 letters: 8 batches, 4 per process, the last one partial; the two processes
    # also read and write in chunks of 2 batches (the streaming path, its barriers under gloo)
    args = ["score", "--model", "digits-0to4", "--data", "letters", "--batch-size", "64", "--device", "cpu",
            "--quiet"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the one-process run here, with the thread count of the torchrun processes
    try:
        one = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "one.csv")])
    finally:
        torch.set_num_threads(threads)
    assert one.exit_code == 0, one.output
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
                          "--master-port", str(29600 + os.getpid() % 1000), "-m", "oodkit", *args, "--chunk", "128",
                          "--out", "two.csv"],
                         cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True, timeout=900)
    assert two.returncode == 0, two.stderr[-3000:]
    assert two.stdout.count("wrote two.csv") == 1  # rank 0 alone writes
    a, b = pd.read_csv(tmp_path / "one.csv"), pd.read_csv(tmp_path / "two.csv")
    pd.testing.assert_frame_equal(a, b, check_exact=True)


@pytest.mark.slow
def test_two_process_gloo_bench_equals_one_process(tmp_path):
    import json

    import numpy as np

    args = ["bench", "digits-0to4-vs-letters,noise", "--model", "digits-0to4", "--detectors", "loglik,fused",
            "--batch-size", "64", "--bootstrap", "0", "--device", "cpu", "--quiet"]
    one = subprocess.run([sys.executable, "-m", "oodkit", *args, "--output-dir", "one"], cwd=tmp_path,
                         env=_env(tmp_path), capture_output=True, text=True, timeout=900)
    assert one.returncode == 0, one.stderr
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
                          "--master-port", str(29700 + os.getpid() % 1000), "-m", "oodkit", *args,
                          "--output-dir", "two"], cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True,
                         timeout=900)
    assert two.returncode == 0, two.stderr[-3000:]
    assert two.stdout.count("wrote ") == 1  # rank 0 alone speaks and writes
    a, b = np.load(tmp_path / "one" / "scores.npz"), np.load(tmp_path / "two" / "scores.npz")
    assert sorted(a.files) == sorted(b.files)
    for k in a.files:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert json.loads((tmp_path / "two" / "results.json").read_text())["meta"]["processes"] == 2


def test_a_multi_pass_detector_runs_only_its_share_of_the_batches_in_each_process(tiny_models, monkeypatch):
    """Under torchrun a DDPM detector's passes are shared out like the CDM pass: rank r of
    2 runs batches r, r + 2, ... and the gathered scores are the one-process scores."""
    import numpy as np

    from oodkit import distributed
    from oodkit.data import as_images, load_dataset
    from oodkit.detectors import make_detector

    x = as_images(load_dataset("letters", "test").images)[:150]  # 5 batches of 32
    det = make_detector("recon", model=tiny_models["ddpm"], batch_size=32).prepare()
    whole = det.score_samples(x)
    calls, gathered = [], {}
    run = det._score_batch
    monkeypatch.setattr(det, "_score_batch", lambda m, xb: calls.append(len(xb)) or run(m, xb))
    for rank in (0, 1):
        monkeypatch.setattr(distributed, "rank_world", lambda rank=rank: (rank, 2))
        monkeypatch.setattr(distributed, "gather_in_order", lambda mine: gathered.update(mine) or list(mine.values()))
        det._cache = {}
        det.score_samples(x)
    assert calls == [32, 32, 22, 32, 32]  # rank 0: batches 0, 2, 4; rank 1: batches 1, 3
    np.testing.assert_array_equal(torch.cat([gathered[i] for i in sorted(gathered)]).numpy(), whole)
    calls.clear()
    det._cache = {}
    det.score_samples(x, shard=False)  # a process scoring images of its own runs them all, no collective
    assert len(calls) == 5


@pytest.mark.slow
def test_two_process_gloo_bench_of_ddpm_detectors_equals_one_process(tmp_path):
    import numpy as np

    from oodkit.data import as_images, load_dataset
    from oodkit.train_config import TrainConfig
    from oodkit.training import fit_model

    fit_model(as_images(load_dataset("digits-0to4", "train").images), kind="ddpm", net="tiny", T=20,
              config=TrainConfig(steps=2, save_every=0), out=tmp_path / "ddpm.pt", device="cpu")
    args = ["bench", "digits-0to4-vs-letters", "--model", "ddpm.pt", "--detectors", "recon,elbo-k", "--max-test",
            "150", "--batch-size", "32", "--bootstrap", "0", "--device", "cpu", "--quiet"]
    runs = {}
    for name, launcher in [("one", []), ("two", ["-m", "torch.distributed.run", "--nproc-per-node", "2",
                                                 "--master-port", str(29800 + os.getpid() % 100)])]:
        r = subprocess.run([sys.executable, *launcher, "-m", "oodkit", *args, "--output-dir", name], cwd=tmp_path,
                           env=_env(tmp_path), capture_output=True, text=True, timeout=900)
        assert r.returncode == 0, r.stderr[-3000:]
        runs[name] = np.load(tmp_path / name / "scores.npz")
    assert sorted(runs["one"].files) == sorted(runs["two"].files) and len(runs["one"].files) >= 4
    for k in runs["one"].files:
        np.testing.assert_array_equal(runs["one"][k], runs["two"][k], err_msg=k)


_WAIT_LONGER = """
import os, sys, time
import torch
from oodkit.distributed import barrier, maybe_init
maybe_init(torch.device("cpu"))
if os.environ["RANK"] == "1":
    time.sleep(6)  # longer than the join timeout: a slow shard, not a missing process
barrier()
print("passed", os.environ["RANK"], flush=True)
"""


def test_the_join_timeout_bounds_the_join_not_the_work_after_it(tmp_path):
    """Review: OODKIT_DIST_TIMEOUT went to init_process_group, which applies it to every
    later collective, so a rank waiting longer than it at a barrier died with a gloo
    traceback. Only the rendezvous is bounded by it now."""
    (tmp_path / "w.py").write_text(_WAIT_LONGER)
    env = dict(_env(tmp_path), OODKIT_DIST_TIMEOUT="2")
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port",
                        str(29800 + os.getpid() % 1000), "w.py"], cwd=tmp_path, env=env, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.count("passed") == 2, r.stderr[-2000:]
