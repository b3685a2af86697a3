"""The quickstart notebook runs end to end (``--slow``; needs the ``notebook`` extra)."""
from pathlib import Path

import pytest


@pytest.mark.slow
def test_quickstart_runs(tmp_path, monkeypatch):
    try:
        import nbclient
        import nbformat
    except ImportError:  # asked for with --slow: say what is missing instead of skipping quietly
        pytest.fail("the notebook test needs Jupyter: pip install -e '.[test,notebook]'")
    monkeypatch.setenv("OODKIT_CACHE", str(tmp_path))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    path = Path(__file__).parents[1] / "notebooks" / "quickstart.ipynb"
    nb = nbformat.read(path, as_version=4)
    nbclient.NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "AUROC" in text and "bits/dim" in text
