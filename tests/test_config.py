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


def test_top_level_settings_apply_beside_the_commands_table(tmp_path, monkeypatch):
    """Audit 4: with a [score] table, the file's top-level settings (fdr = 0.1) were dropped
    without a word. Top-level settings apply to every command and the command's table wins;
    other commands' tables are theirs; a top-level setting this command lacks is named."""
    monkeypatch.setenv("OODKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.toml").write_text('fdr = 0.1\nbatch-size = 64\n[score]\ndata = "digits-5to9"\nout = "s.csv"\n'
                                     'quiet = true\nbatch-size = 32\n[train]\nsteps = 5\n')
    # the shipped detectors' p-values are against images the network trained on: --fdr needs calibrated ones
    r = CliRunner().invoke(main, ["fit", "--model", "digits-0to4", "--data", "digits-0to4", "--detectors", "fused",
                                  "--calibrate-on", "digits-0to4", "--out", "cal.npz", "--quiet"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, ["score", "--detector", "cal.npz", "--config", "c.toml"])
    assert r.exit_code == 0, r.output
    header = (tmp_path / "s.csv").read_text().splitlines()[0]
    assert "fused_flagged" in header  # fdr from the top level
    (tmp_path / "d.toml").write_text('steps = 5\n[score]\ndata = "digits-5to9"\nout = "s.csv"\n')
    r = CliRunner().invoke(main, ["score", "--detector", "digits-0to4", "--config", "d.toml"])
    assert r.exit_code == 2 and "unknown setting 'steps'" in r.output and "[train]" in r.output, r.output
    (tmp_path / "e.toml").write_text('score = 3\n')  # meant as a [score] table: every command says so
    r = CliRunner().invoke(main, ["fit", "--model", "digits-0to4", "--data", "digits-0to4", "--out", "d.npz",
                                  "--config", "e.toml"])
    assert r.exit_code == 2 and "[score] must be a table of settings" in r.output, r.output
