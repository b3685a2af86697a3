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
