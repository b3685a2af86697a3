"""--config FILE.toml: settings as defaults, flags override, the resolved command recorded."""
import json

from click.testing import CliRunner

from oodkit.cli import main


def test_bench_reads_a_toml_config_and_flags_override_it(tmp_path, monkeypatch):
    monkeypatch.setenv("OODKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "b.toml").write_text('[bench]\nnet = "tiny"\nsteps = 8\nT = 20\ndetectors = ["loglik", "typicality"]\n'
                                     'max-test = 30\nbootstrap = 0\nquiet = true\noutput-dir = "from-config"\n')
    r = CliRunner().invoke(main, ["bench", "digits-0to4-vs-noise", "--config", "b.toml", "--max-test", "25"])
    assert r.exit_code == 0, r.output
    meta = json.loads((tmp_path / "from-config" / "results.json").read_text())["meta"]
    assert meta["detectors"] == ["loglik", "typicality"] and meta["n_test"] == 25
    assert "--max-test 25" in meta["command"] and "--steps 8" in meta["command"]
    (tmp_path / "bad.toml").write_text("nosuch = 1\n")
    r = CliRunner().invoke(main, ["bench", "digits-0to4-vs-noise", "--config", "bad.toml"])
    assert r.exit_code == 2 and "unknown setting 'nosuch'" in r.output
