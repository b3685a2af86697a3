"""The quickstart notebook runs end to end."""
from pathlib import Path

import nbformat
import pytest

nbclient = pytest.importorskip("nbclient")


@pytest.mark.slow
def test_quickstart_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("OODKIT_CACHE", str(tmp_path))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    path = Path(__file__).parents[1] / "notebooks" / "quickstart.ipynb"
    nb = nbformat.read(path, as_version=4)
    nbclient.NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "AUROC" in text and "bits/dim" in text
