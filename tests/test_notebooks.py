"""Every notebook in ``notebooks/`` runs top to bottom in fast mode, so none can rot unnoticed."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient
from nbclient.util import run_sync

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


@pytest.fixture(scope="module")
def shared_kernel(shared_cache_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AsyncKernelManager]:
    """One python3 kernel for the fast suite's notebook runs: a kernel start and the torch and Lightning imports
    in it cost seconds per notebook. Its cache is the session's, as every other test's (a notebook whose data
    another test already decoded reuses it); :func:`execute_in_shared_kernel` gives each notebook a clean namespace
    and its own working directory. The slow stage still runs every notebook in a fresh kernel (:func:`execute`)."""
    env = {
        **os.environ,
        "NOTEBOOK_FAST": "1",
        "LIGHTNING_APP_CACHE": str(shared_cache_dir),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
        "MPLBACKEND": "module://matplotlib_inline.backend_inline",
    }
    env.pop("RUN_DIR", None)
    kernel = AsyncKernelManager(kernel_name="python3")
    run_sync(kernel.start_kernel)(cwd=str(tmp_path_factory.mktemp("shared_kernel")), env=env)
    yield kernel
    run_sync(kernel.shutdown_kernel)(now=True)


def execute_in_shared_kernel(
    kernel: AsyncKernelManager, notebook_path: Path, workdir: Path, **env: str
) -> nbformat.NotebookNode:
    """Run the notebook in ``kernel`` after a set-up cell that empties the namespace, moves into ``workdir`` and
    sets ``env`` (``RUN_DIR`` only when given); raise on any cell error. The set-up cell is not in the result."""
    setup = "\n".join(
        [
            "%reset -f",
            "import os as _os",
            f"_os.chdir({str(workdir)!r})",
            '_os.environ.pop("RUN_DIR", None)',
            f"_os.environ.update({json.dumps(env)})",
            "del _os",
        ]
    )
    notebook = nbformat.read(notebook_path, as_version=4)
    notebook.cells.insert(0, nbformat.v4.new_code_cell(setup))
    client = NotebookClient(notebook, timeout=CELL_TIMEOUT_S, km=kernel)
    try:
        client.execute()  # raises CellExecutionError naming the cell and its traceback
    finally:
        if client.kc is not None:
            client.kc.stop_channels()
    notebook.cells.pop(0)
    return notebook


#: The fast suite runs the notebooks in one shared kernel; the slow stage runs each in a fresh one as well.
KERNELS = [pytest.param(False, id="shared-kernel"), pytest.param(True, id="fresh-kernel", marks=pytest.mark.slow)]


def run_notebook(
    notebook_path: Path, workdir: Path, request: pytest.FixtureRequest, fresh_kernel: bool, **env: str
) -> nbformat.NotebookNode:
    if fresh_kernel:
        return execute(notebook_path, workdir, request.getfixturevalue("monkeypatch"), **env)
    return execute_in_shared_kernel(request.getfixturevalue("shared_kernel"), notebook_path, workdir, **env)


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


@pytest.mark.parametrize("fresh_kernel", KERNELS)
@pytest.mark.parametrize("notebook_path", NOTEBOOKS, ids=[path.stem for path in NOTEBOOKS])
def test_notebook_runs_in_fast_mode(notebook_path, tmp_path, request, fresh_kernel):
    executed = run_notebook(notebook_path, tmp_path, request, fresh_kernel)
    assert outputs_of_type(executed, "image/png"), "every notebook plots its learning curves"
    assert list(tmp_path.glob("runs/notebooks/*/version_0/events.out.tfevents.*"))


@pytest.mark.parametrize("fresh_kernel", KERNELS)
def test_review_notebook_shows_logged_images_and_text(tmp_path, request, write_image_and_text_run, fresh_kernel):
    run_dir = tmp_path / "image_text_run"
    write_image_and_text_run(run_dir, "a review the model got **wrong**")

    notebook = REPO_ROOT / "notebooks" / "review_run.ipynb"
    executed = run_notebook(notebook, tmp_path, request, fresh_kernel, RUN_DIR=str(run_dir))
    # One PNG for the curves, one for the logged image; the text comes back as Markdown.
    assert len(outputs_of_type(executed, "image/png")) == 2
    markdown = outputs_of_type(executed, "text/markdown")
    assert any("val/examples/text_summary" in text and "**wrong**" in text for text in markdown)
    assert not list(tmp_path.glob("runs/notebooks/*")), "with RUN_DIR given, nothing is trained"
