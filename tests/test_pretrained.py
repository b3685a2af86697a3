"""Pretrained names: resolution, export to half precision, checksum refusal, and the
download path against a local HTTP server."""
import functools
import http.server
import json
import threading

import pytest
import torch

from oodkit import pretrained
from oodkit.checkpoint import CheckpointError, file_sha256, load_model as load_path

from .test_detectors import fixed_model


@pytest.fixture
def registry(tmp_path, monkeypatch):
    """A model exported into a temporary pretrained folder under the name 'toy'."""
    from oodkit.checkpoint import save_checkpoint

    folder = tmp_path / "pretrained"
    folder.mkdir()
    model = fixed_model()
    save_checkpoint(tmp_path / "full.pt", model, ema_state_dict=model.state_dict(),
                    train_state={"step": 7, "optimizer": {}}, data={"dataset": "digits-0to4"})
    rec = pretrained.export_model(tmp_path / "full.pt", folder / "toy.pt", dataset="digits-0to4", test_bpd=1.0)
    rec["file"] = "toy.pt"
    (folder / "index.json").write_text(json.dumps({"toy": rec}))
    monkeypatch.setattr(pretrained, "PRETRAINED_DIR", folder)
    monkeypatch.setenv("OODKIT_CACHE", str(tmp_path / "cache"))
    return folder, rec, model


def test_a_name_loads_the_bundled_half_precision_model(registry):
    folder, rec, model = registry
    m = pretrained.load_model("toy")
    assert m.train_steps == 7 and rec["steps"] == 7 and m.data_info["dataset"] == "digits-0to4"
    raw = torch.load(folder / "toy.pt", weights_only=True)
    assert all(v.dtype == torch.float16 for v in raw["state_dict"].values() if v.is_floating_point())
    for k, v in model.state_dict().items():  # the weights, rounded to half precision
        torch.testing.assert_close(m.state_dict()[k], v.half().float() if v.is_floating_point() else v)
    assert [r["name"] for r in pretrained.list_models()] == ["toy"]
    assert pretrained.list_models()[0]["available"] == "bundled"


def test_a_path_wins_over_a_name_and_unknown_names_list_the_known(registry, tmp_path, monkeypatch):
    folder, _, _ = registry
    monkeypatch.chdir(folder)
    (folder / "toy").write_bytes(b"x")  # a file named like the model
    assert pretrained.resolve_model("toy") == pretrained.Path("toy")
    with pytest.raises(CheckpointError, match=r"checkpoint not found: nosuch \(pretrained names: toy\)"):
        pretrained.load_model("nosuch")


def test_a_damaged_bundled_file_is_refused(registry):
    folder, _, _ = registry
    data = bytearray((folder / "toy.pt").read_bytes())
    data[-100] ^= 0xFF
    (folder / "toy.pt").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="does not match its recorded SHA-256"):
        pretrained.load_model("toy")


def _serve(folder):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_download_is_checked_against_its_sha256(registry, tmp_path):
    folder, rec, _ = registry
    served = tmp_path / "served"
    served.mkdir()
    (served / "toy.pt").write_bytes((folder / "toy.pt").read_bytes())
    server = _serve(served)
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/toy.pt"
        (folder / "toy.pt").unlink()
        (folder / "index.json").write_text(json.dumps({"toy": {**rec, "file": None, "url": url}}))
        assert pretrained.list_models()[0]["available"] == "download"
        m = pretrained.load_model("toy")
        assert m.train_steps == 7
        cached = list((tmp_path / "cache" / "pretrained").glob("toy-*.pt"))
        assert len(cached) == 1 and file_sha256(cached[0]) == rec["sha256"]
        cached[0].unlink()
        bad = {**rec, "file": None, "url": url, "sha256": "0" * 64}
        (folder / "index.json").write_text(json.dumps({"toy": bad}))
        with pytest.raises(CheckpointError, match="refused"):
            pretrained.load_model("toy")
        assert not list((tmp_path / "cache" / "pretrained").iterdir())  # nothing half-written stays
    finally:
        server.shutdown()


def test_cli_models_and_score_by_name(registry, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from oodkit.cli import main

    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(main, ["models"])
    assert r.exit_code == 0 and "toy" in r.output and "digits-0to4" in r.output and "bundled" in r.output
    r = CliRunner().invoke(main, ["score", "--model", "toy", "--data", "letters", "--out", "s.csv", "--quiet"])
    assert r.exit_code == 0, r.output


def test_cli_models_keeps_its_columns_aligned_for_long_names(registry):
    """Class-subset names (``fashionmnist[0-4]``) and long hardware notes are wider than
    the short names: every column still starts at one offset."""
    from click.testing import CliRunner

    from oodkit.cli import main

    folder, rec, _ = registry
    index = json.loads((folder / "index.json").read_text())
    index["a-much-longer-model-name[0-4]"] = {**rec, "trained_on": "CPU, 1 thread, 61 min, on a long note"}
    (folder / "index.json").write_text(json.dumps(index))
    lines = CliRunner().invoke(main, ["models"]).output.splitlines()
    assert len(lines) == 3
    starts = [line.index(rec["sha256"][:16]) for line in lines[1:]]
    assert starts == [lines[0].index("sha256")] * 2
    assert [line.index("bundled") for line in lines[1:]] == [lines[0].index("available")] * 2
