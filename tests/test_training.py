import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import torch.multiprocessing as mp

from oodkit import TrainConfig, fit_model, load_model, train
from oodkit.checkpoint import load_checkpoint
from oodkit.training import TrainingDiverged

FAST = dict(batch_size=32, warmup=5, save_every=0)


@pytest.mark.slow
def test_tiny_cdm_lowers_its_loss(tiny_digits):
    from oodkit import CDM, NoiseSchedule, unet_from_preset

    torch.manual_seed(0)
    s = NoiseSchedule.uniform(100)
    model = CDM(unet_from_preset("tiny", in_channels=1, image_size=8, num_classes=s.num_classes), s)
    from oodkit.data import to_float

    x = to_float(tiny_digits[:256])

    def eval_loss(m):
        g = torch.Generator().manual_seed(123)
        return sum(m.loss(x, generator=g)[0].item() for _ in range(4)) / 4

    before = eval_loss(model)
    train(model, tiny_digits, TrainConfig(steps=150, lr=2e-3, ema_decay=0.9, **FAST), progress=False)
    after = eval_loss(model)
    assert after < 0.8 * before, (before, after)


def test_resume_is_bit_for_bit(tiny_digits, tmp_path):
    cfg = TrainConfig(steps=6, **FAST)
    kw = dict(net="tiny", T=50, progress=False, device="cpu")
    fit_model(tiny_digits, config=cfg, out=tmp_path / "straight.pt", **kw)
    fit_model(tiny_digits, config=TrainConfig(steps=3, **FAST), out=tmp_path / "split.pt", **kw)
    fit_model(tiny_digits, config=cfg, out=tmp_path / "split.pt", resume=True, **kw)
    a, b = load_checkpoint(tmp_path / "straight.pt"), load_checkpoint(tmp_path / "split.pt")
    assert a["train_state"]["step"] == b["train_state"]["step"] == 6
    for key in ("state_dict", "ema_state_dict"):
        for k in a[key]:
            assert torch.equal(a[key][k], b[key][k]), (key, k)
    for k, v in a["train_state"]["optimizer"]["state"].items():
        assert torch.equal(v["exp_avg"], b["train_state"]["optimizer"]["state"][k]["exp_avg"])


def test_resume_without_checkpoint_is_an_error(tiny_digits, tmp_path):
    from oodkit import CheckpointError

    with pytest.raises(CheckpointError, match="no checkpoint"):
        fit_model(tiny_digits, net="tiny", T=10, config=TrainConfig(steps=2, **FAST), out=tmp_path / "none.pt",
                  resume=True, progress=False)


def test_nan_loss_stops_with_a_clear_message(tiny_digits, tmp_path):
    from oodkit import CDM, NoiseSchedule, unet_from_preset

    s = NoiseSchedule.uniform(10)
    model = CDM(unet_from_preset("tiny", in_channels=1, image_size=8, num_classes=s.num_classes), s)
    model.loss = lambda x0, generator=None: (torch.tensor(float("nan"), requires_grad=True), {})
    with pytest.raises(TrainingDiverged, match="loss became nan at step 0: lower --lr"):
        train(model, tiny_digits, TrainConfig(steps=3, **FAST), progress=False)


def test_cpu_bf16_autocast_keeps_float32_logits(tiny_digits):
    from oodkit import CDM, NoiseSchedule, unet_from_preset
    from oodkit.data import to_float

    s = NoiseSchedule.uniform(10)
    model = CDM(unet_from_preset("tiny", in_channels=1, image_size=8, num_classes=s.num_classes), s)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        f = model.logits(to_float(tiny_digits[:4]))
        loss, _ = model.loss(to_float(tiny_digits[:4]))
    assert f.dtype == torch.float32 and torch.isfinite(loss)


def test_sigterm_saves_a_resumable_checkpoint(tmp_path):
    out = tmp_path / "killed.pt"
    cmd = [sys.executable, "-m", "oodkit", "train", "--data", "digits", "--net", "tiny", "-T", "20",
           "--steps", "100000", "--save-every", "3", "--batch-size", "16", "--out", str(out), "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 300
    while not out.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)  # the first periodic checkpoint: the training loop is running
    assert out.exists(), "training never started"
    proc.send_signal(signal.SIGTERM)
    output = proc.communicate(timeout=900)[0]
    assert proc.returncode != 0
    assert "interrupted at step" in output and "--resume" in output, output
    stopped_at = int(output.split("interrupted at step")[1].split(":")[0])
    ckpt = load_checkpoint(out)
    assert ckpt["train_state"]["step"] == stopped_at >= 3
    load_model(out)


def _ddp_worker(rank, world, port, images, out_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    model = fit_model(images, net="tiny", T=20, config=TrainConfig(steps=4, **FAST), device="cpu",
                      out=out_dir / "ddp.pt", progress=False)
    torch.save({k: v.clone() for k, v in model.state_dict().items()}, out_dir / f"rank{rank}.pt")
    torch.distributed.destroy_process_group()


def test_two_process_ddp_on_gloo(tiny_digits, tmp_path):
    port = 29500 + os.getpid() % 1000
    mp.spawn(_ddp_worker, args=(2, port, tiny_digits, tmp_path), nprocs=2, join=True)
    r0, r1 = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    assert all(torch.equal(r0[k], r1[k]) for k in r0)  # replicas stayed in sync
    ckpt = load_checkpoint(tmp_path / "ddp.pt")
    assert ckpt["train_state"]["world_size"] == 2 and ckpt["train_state"]["step"] == 4
    saved = load_model(tmp_path / "ddp.pt").state_dict()  # rank 0's EMA weights
    assert all(torch.equal(saved[k], v) for k, v in r0.items())


@pytest.mark.parametrize("kind", ["ddpm", "joint"])
def test_resume_of_every_kind_passes_the_model_settings_check(tiny_digits, tmp_path, kind):
    from oodkit.data import load_dataset

    labels = load_dataset("digits-0to4", "train").labels
    kw = dict(kind=kind, net="tiny", T=10, progress=False, out=tmp_path / "m.pt",
              labels=labels if kind == "joint" else None, model_options={"var_type": "posterior"})
    fit_model(tiny_digits, config=TrainConfig(steps=1, **FAST), **kw)
    fit_model(tiny_digits, config=TrainConfig(steps=2, **FAST), resume=True, **kw)
    assert load_checkpoint(tmp_path / "m.pt")["train_state"]["step"] == 2
    from oodkit import CheckpointError

    with pytest.raises(CheckpointError, match="has model var_type='posterior', this run asks 'beta'"):
        fit_model(tiny_digits, config=TrainConfig(steps=3, **FAST), resume=True,
                  **{**kw, "model_options": {"var_type": "beta"}})
