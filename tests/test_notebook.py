"""The walkthrough notebook runs top to bottom against a promoted champion."""

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from tests.tracked_store import MODEL_NAME

NOTEBOOK = Path(__file__).resolve().parents[1] / "experiments" / "course_reproduction" / "recommendations_for_one_user.ipynb"


@pytest.mark.slow
def test_the_walkthrough_notebook_executes_with_the_champion(tracked_store, champion, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracked_store.uri)
    monkeypatch.setenv("FASHIONBENCH_MODEL_NAME", MODEL_NAME)
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(notebook, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()  # the kernel inherits the env

    errors = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs
              if o.output_type == "error"]
    assert not errors
    printed = "".join(o.get("text", "") for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs)
    assert "favourites" in printed
    assert (tmp_path / "user_recommendations.png").stat().st_size > 0
    # The last cell shows the grid inline.
    assert "image/png" in notebook.cells[-1].outputs[0]["data"]
