"""Every notebook in ``notebooks/`` runs top to bottom in fast mode, so none can rot unnoticed."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

REPO_ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((REPO_ROOT / "notebooks").glob("*.ipynb"))
CELL_TIMEOUT_S = 120


def execute(notebook_path: Path, workdir: Path, monkeypatch: pytest.MonkeyPatch, **env: str) -> nbformat.NotebookNode:
    """Run the notebook in a fresh python3 kernel of this interpreter, in ``workdir``; raise on any cell error."""
    monkeypatch.setenv("NOTEBOOK_FAST", "1")
    # Whatever a kernel caches goes under the test's folder, never into the user's ~/.cache.
    monkeypatch.setenv("LIGHTNING_APP_CACHE", str(workdir / "cache"))
    # The kernel must import this checkout's packages, whatever an installed copy points at.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])))
    # Figures must come back as image/png outputs, even where the environment sets MPLBACKEND=Agg.
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    notebook = nbformat.read(notebook_path, as_version=4)
    client = NotebookClient(
        notebook, timeout=CELL_TIMEOUT_S, kernel_name="python3", resources={"metadata": {"path": str(workdir)}}
    )
    client.execute()  # raises CellExecutionError naming the cell and its traceback
    return notebook


def outputs_of_type(notebook: nbformat.NotebookNode, mime_type: str) -> list:
    return [
        output["data"][mime_type]
        for cell in notebook.cells
        for output in cell.get("outputs", [])
        if mime_type in output.get("data", {})
    ]


def test_there_are_notebooks():
    assert {"titanic.ipynb", "covid19.ipynb", "review_run.ipynb"} <= {path.name for path in NOTEBOOKS}


#: A committed notebook shows a metrics table and a figure or two, not a whole training log.
MAX_COMMITTED_BYTES = 400_000


@pytest.mark.parametrize("notebook_path", NOTEBOOKS, ids=[path.stem for path in NOTEBOOKS])
def test_committed_notebook_shows_the_results_of_a_full_run(notebook_path):
    """Committed as ``notebooks/execute.py`` saves them: every cell run in full mode, no error, small outputs."""
    notebook = nbformat.read(notebook_path, as_version=4)
    nbformat.validate(notebook)
    code_cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code_cells
    assert all(cell.execution_count is not None for cell in code_cells), (
        f"run python notebooks/execute.py {notebook_path.stem} before committing it"
    )
    outputs = [output for cell in code_cells for output in cell.outputs]
    assert not [output for output in outputs if output.output_type == "error"]
    streams = "".join(output.text for output in outputs if output.output_type == "stream")
    assert "FAST=True" not in streams, "commit the outputs of a full run, not of the fast mode"
    assert "\r" not in streams and "/tmp/" not in streams, "progress bars or machine-specific paths were saved"
    assert outputs_of_type(notebook, "image/png"), "a committed notebook shows its figures"
    assert notebook_path.stat().st_size < MAX_COMMITTED_BYTES


@pytest.mark.parametrize("notebook_path", NOTEBOOKS, ids=[path.stem for path in NOTEBOOKS])
def test_notebook_runs_in_fast_mode(notebook_path, tmp_path, monkeypatch):
    executed = execute(notebook_path, tmp_path, monkeypatch)
    assert outputs_of_type(executed, "image/png"), "every notebook plots its learning curves"
    assert list(tmp_path.glob("runs/notebooks/*/version_0/events.out.tfevents.*"))


def test_review_notebook_shows_logged_images_and_text(tmp_path, monkeypatch, write_image_and_text_run):
    run_dir = tmp_path / "image_text_run"
    write_image_and_text_run(run_dir, "a review the model got **wrong**")

    executed = execute(REPO_ROOT / "notebooks" / "review_run.ipynb", tmp_path, monkeypatch, RUN_DIR=str(run_dir))
    # One PNG for the curves, one for the logged image; the text comes back as Markdown.
    assert len(outputs_of_type(executed, "image/png")) == 2
    markdown = outputs_of_type(executed, "text/markdown")
    assert any("val/examples/text_summary" in text and "**wrong**" in text for text in markdown)
    assert not list(tmp_path.glob("runs/notebooks/*")), "with RUN_DIR given, nothing is trained"
