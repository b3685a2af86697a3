import os
import pickle

import pytest
import torch

from oodkit import CDM, CheckpointError, NoiseSchedule, load_model, save_checkpoint, unet_from_preset
from oodkit.checkpoint import load_checkpoint


def tiny_model(T=20, seed=0):
    torch.manual_seed(seed)
    s = NoiseSchedule.linear(T)
    net = unet_from_preset("tiny", in_channels=1, image_size=8, num_classes=s.num_classes)
    torch.nn.init.normal_(net.head.weight, std=0.05)
    return CDM(net, s)


def test_round_trip_uses_ema_weights(tmp_path):
    model, ema_src = tiny_model(seed=0), tiny_model(seed=1)
    path = save_checkpoint(tmp_path / "m.pt", model, ema_state_dict=ema_src.state_dict(), data={"dataset": "x"})
    x = torch.rand(3, 1, 8, 8) * 2 - 1
    loaded = load_model(path)
    assert not loaded.training and loaded.data_info == {"dataset": "x"}
    torch.testing.assert_close(loaded.log_prob(x), ema_src.eval().log_prob(x), rtol=0, atol=0)
    raw = load_model(path, ema=False)
    torch.testing.assert_close(raw.log_prob(x), model.eval().log_prob(x), rtol=0, atol=0)
    assert raw.schedule == model.schedule and raw.image_shape == (1, 8, 8)
    # nothing but plain values and tensors inside
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["format"] == "oodkit" and ckpt["format_version"] == 1 and ckpt["kind"] == "cdm"


def test_refuses_non_checkpoints(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(os.urandom(2000))
    with pytest.raises(CheckpointError, match="truncated or not a checkpoint"):
        load_model(junk)
    plain = tmp_path / "plain.pt"
    torch.save({"weights": torch.zeros(3)}, plain)
    with pytest.raises(CheckpointError, match="not an oodkit checkpoint"):
        load_model(plain)
    with pytest.raises(CheckpointError, match="not found"):
        load_model(tmp_path / "missing.pt")
    with pytest.raises(CheckpointError, match="is a folder, not a file"):
        load_model(tmp_path)


def test_refuses_truncated(tmp_path):
    path = save_checkpoint(tmp_path / "m.pt", tiny_model())
    data = path.read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError) as e:
        load_model(cut)
    assert "\n" not in str(e.value)


class Payload:
    """Unpickling this would create a file: the loader must never execute it."""

    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


def test_refuses_pickled_objects_without_running_them(tmp_path):
    target = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    ckpt = {"format": "oodkit", "format_version": 1, "payload": Payload(str(target))}
    torch.save(ckpt, evil)
    assert not target.exists()
    with pytest.raises(CheckpointError, match="refusing .*pickled objects") as e:
        load_model(evil)
    assert not target.exists()
    assert "\n" not in str(e.value)
    raw = tmp_path / "raw.pkl"  # a bare pickle, not even a torch zip file
    raw.write_bytes(pickle.dumps(Payload(str(target))))
    with pytest.raises(CheckpointError):
        load_model(raw)
    assert not target.exists()


def test_refuses_future_version_and_incomplete(tmp_path):
    path = save_checkpoint(tmp_path / "m.pt", tiny_model())
    ckpt = torch.load(path, weights_only=True)
    torch.save({**ckpt, "format_version": 99}, tmp_path / "future.pt")
    with pytest.raises(CheckpointError, match="format version 99.*upgrade"):
        load_checkpoint(tmp_path / "future.pt")
    del ckpt["state_dict"]
    torch.save(ckpt, tmp_path / "incomplete.pt")
    with pytest.raises(CheckpointError, match="missing \\['state_dict'\\]"):
        load_model(tmp_path / "incomplete.pt")


def test_wrong_weights_are_a_clear_error(tmp_path):
    path = save_checkpoint(tmp_path / "m.pt", tiny_model())
    ckpt = torch.load(path, weights_only=True)
    ckpt["state_dict"] = {k: v[..., :1] if v.ndim else v for k, v in ckpt["state_dict"].items()}
    ckpt["ema_state_dict"] = None
    torch.save(ckpt, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="does not match its model"):
        load_model(tmp_path / "bad.pt")
