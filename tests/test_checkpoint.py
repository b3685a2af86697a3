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


# -- audit 7: checkpoints handed over by a careless or hostile user ---------------------------


def _edited(tmp_path, name, edit):
    path = save_checkpoint(tmp_path / "base.pt", tiny_model(), data={"dataset": "x"})
    ckpt = torch.load(path, weights_only=True)
    edit(ckpt)
    torch.save(ckpt, tmp_path / name)
    return tmp_path / name


@pytest.mark.parametrize("dtype", [torch.int64, torch.bool, torch.complex64])
def test_weights_of_a_kind_the_model_does_not_hold_are_refused(tmp_path, dtype):
    """Integer, bool and complex weights were cast without a word (bpd 26.7 against 7.7)."""
    def edit(c):
        c["state_dict"]["net.conv_in.weight"] = (c["state_dict"]["net.conv_in.weight"] * 100).to(dtype)

    with pytest.raises(CheckpointError, match=r"net.conv_in.weight holds .*values"):
        load_model(_edited(tmp_path, "bad.pt", edit))


def test_half_and_double_weights_still_load(tmp_path):
    for dtype in (torch.float16, torch.float64):
        def edit(c):
            c["state_dict"] = {k: v.to(dtype) if v.is_floating_point() else v for k, v in c["state_dict"].items()}

        load_model(_edited(tmp_path, f"{dtype}.pt", edit))


@pytest.mark.parametrize("field,value", [("train_state", "x"), ("data", [1]), ("model", "x"), ("net", 3),
                                         ("ema_state_dict", [1, 2])])
def test_malformed_fields_are_one_line(tmp_path, field, value):
    def edit(c):
        c[field] = value

    with pytest.raises(CheckpointError, match=field) as e:
        load_model(_edited(tmp_path, "bad.pt", edit))
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("value", ["abc", torch.zeros(3), torch.zeros(2, 2, dtype=torch.int64)])
def test_a_damaged_record_of_training_images_is_refused(tmp_path, value):
    """A damaged ``image_hashes`` was ignored: thresholds then sat on training images silently."""
    def edit(c):
        c["data"]["image_hashes"] = value

    with pytest.raises(CheckpointError, match="image_hashes"):
        load_model(_edited(tmp_path, "bad.pt", edit))


def test_init_refuses_a_checkpoint_missing_the_networks_own_weights(tmp_path):
    from oodkit.checkpoint import load_initial_weights

    def edit(c):
        c["state_dict"].pop("net.conv_in.weight")
        c["ema_state_dict"] = None

    with pytest.raises(CheckpointError, match="missing key net.conv_in.weight"):
        load_initial_weights(tiny_model(), _edited(tmp_path, "part.pt", edit))


def test_a_damaged_model_index_is_one_line(tmp_path):
    from oodkit.pretrained import list_models, load_model as load_named

    bad = tmp_path / "index.json"
    bad.write_text("{not json")
    with pytest.raises(CheckpointError, match="index"):
        list_models(bad)
    bad.write_text('{"m": "x"}')
    with pytest.raises(CheckpointError, match="index"):
        load_named("m", index_path=bad)
    bad.write_text('{"m": {"file": "m.pt"}}')
    with pytest.raises(CheckpointError, match="sha256"):
        load_named("m", index_path=bad)


def test_training_never_saves_weights_that_are_not_finite(tmp_path, monkeypatch):
    """A run whose weights went NaN a step before its loss did saved them over the last
    good checkpoint, and called that file good."""
    from oodkit import training
    from oodkit.training import TrainConfig, TrainingDiverged, fit_model

    real = training._step

    def poisoned(objective, model, opt, *args):  # the update of step 3 leaves a NaN weight behind
        out = real(objective, model, opt, *args)
        if args[3] == 3:
            with torch.no_grad():
                next(model.parameters()).fill_(float("nan"))
        return out

    monkeypatch.setattr(training, "_step", poisoned)
    x = torch.randint(0, 256, (32, 1, 8, 8), dtype=torch.uint8)
    out = tmp_path / "m.pt"
    with pytest.raises(TrainingDiverged, match="not finite") as e:
        fit_model(x, net="tiny", T=10, config=TrainConfig(steps=6, batch_size=8, save_every=1), out=out)
    assert "the last good checkpoint is" in str(e.value)
    assert load_model(out).train_steps == 3  # the file still holds the last finite weights


def test_resume_checks_the_weights_it_resumes(tmp_path):
    from oodkit.training import TrainConfig, fit_model

    x = torch.randint(0, 256, (32, 1, 8, 8), dtype=torch.uint8)
    out = tmp_path / "m.pt"
    fit_model(x, net="tiny", T=10, config=TrainConfig(steps=2, batch_size=8, save_every=1), out=out)
    ckpt = torch.load(out, weights_only=True)
    ckpt["ema_state_dict"]["net.conv_in.weight"][0] = float("nan")
    torch.save(ckpt, out)
    with pytest.raises(CheckpointError, match="NaN"):
        fit_model(x, net="tiny", T=10, config=TrainConfig(steps=4, batch_size=8, save_every=1), out=out, resume=True)
    for bad in ({"step": -100}, {"step": 10.7}, {"step": "x"}):
        ckpt = torch.load(out, weights_only=True)
        ckpt["ema_state_dict"]["net.conv_in.weight"][0] = 0.0
        ckpt["train_state"].update(bad)
        torch.save(ckpt, out)
        with pytest.raises(CheckpointError, match="step"):
            fit_model(x, net="tiny", T=10, config=TrainConfig(steps=4, batch_size=8, save_every=1), out=out,
                      resume=True)


def test_fit_refuses_detectors_the_models_kind_cannot_run(tmp_path, monkeypatch):
    """`oodkit fit --model DDPM --detectors loglik` died in an AttributeError (bench refused it)."""
    from click.testing import CliRunner

    from oodkit.cli import main
    from oodkit.training import TrainConfig, fit_model

    monkeypatch.chdir(tmp_path)
    x = torch.randint(0, 256, (32, 1, 8, 8), dtype=torch.uint8)
    fit_model(x, kind="ddpm", net="tiny", T=10, config=TrainConfig(steps=1, batch_size=8, save_every=0), out="d.pt")
    r = CliRunner().invoke(main, ["fit", "--model", "d.pt", "--data", "digits-0to4", "--detectors", "loglik",
                                  "--out", "x.npz"])
    assert r.exit_code == 2 and "needs a cdm" in r.output and len(r.output.strip().splitlines()) == 1, r.output


def test_files_handed_to_the_wrong_reader_say_which_reader(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from oodkit.cli import main
    from oodkit.detectors.persist import DetectorFileError, load_detector

    path = save_checkpoint(tmp_path / "m.pt", tiny_model())
    with pytest.raises(DetectorFileError, match="pass it with --model"):
        load_detector(path)
    torch.save(tiny_model().state_dict(), tmp_path / "bare.pt")
    with pytest.raises(CheckpointError, match=r"bare weights .*save_checkpoint"):
        load_model(tmp_path / "bare.pt")
    with pytest.raises(CheckpointError, match="empty model name"):
        load_model("")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.toml").write_bytes("\ufeffsplit = 'test'\n".encode())  # a byte-order mark, as Notepad writes
    r = CliRunner().invoke(main, ["score", "--model", "", "--data", "digits-0to4", "--out", "s.csv", "--config",
                                  "c.toml"])
    assert r.exit_code == 2 and "empty model name" in r.output and "TOML" not in r.output, r.output


@pytest.mark.parametrize("edit,match", [({"num_classes": 10**9}, "beyond what oodkit builds"),
                                        ({"ch": 16384}, "beyond what oodkit builds"),
                                        ({"dropout": float("nan")}, "dropout")])
def test_a_net_config_is_checked_before_its_layers_are_built(tmp_path, edit, match):
    """A 370 KB checkpoint with num_classes = 10**9 asked for 64 GB before failing; dropout
    NaN loaded and crashed at scoring."""
    def change(c):
        c["net"]["config"].update(edit)

    with pytest.raises(CheckpointError, match=match):
        load_model(_edited(tmp_path, "big.pt", change))
