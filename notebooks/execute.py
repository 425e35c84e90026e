"""Execute the notebooks in full mode and save them with their outputs, as they are committed.

    python notebooks/execute.py                    # every notebook
    python notebooks/execute.py titanic covid19    # some of them

Each notebook runs top to bottom in a fresh kernel inside a temporary folder (its runs and checkpoints go there,
so printed paths are relative ones like ``runs/notebooks/titanic/version_0``); the saved copy keeps stdout, the
figures and the tables, and drops progress bars, stderr (Lightning's set-up lines) and execution timestamps,
so the committed files stay small and readable on the repository page. ``tests/test_notebooks.py`` reruns every
notebook in fast mode and checks the committed copies.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOKS_DIR = Path(__file__).resolve().parent
REPO_ROOT = NOTEBOOKS_DIR.parent
CELL_TIMEOUT_S = 1800


def is_noise(output: nbformat.NotebookNode) -> bool:
    """stderr, and the progress bars' redraws (carriage returns, cursor moves, blank chunks) on stdout."""
    if output.output_type != "stream":
        return False
    return output.name == "stderr" or "\r" in output.text or "\x1b" in output.text or not output.text.strip()


def strip_volatile(notebook: nbformat.NotebookNode) -> None:
    """Drop noise outputs and per-cell execution timestamps in place."""
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        cell.metadata.pop("execution", None)
        cell.outputs = [output for output in cell.outputs if not is_noise(output)]


def execute(path: Path) -> float:
    """Run ``path`` in full mode and write it back with its outputs; return the seconds it took."""
    notebook = nbformat.read(path, as_version=4)
    env = {key: value for key, value in os.environ.items() if key not in ("NOTEBOOK_FAST", "RUN_DIR")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    env["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=f"notebook-{path.stem}-") as workdir:
        saved_environ = dict(os.environ)
        os.environ.clear()
        os.environ.update(env)  # the kernel inherits this process's environment
        try:
            client = NotebookClient(
                notebook, timeout=CELL_TIMEOUT_S, kernel_name="python3", resources={"metadata": {"path": workdir}}
            )
            client.execute()
        finally:
            os.environ.clear()
            os.environ.update(saved_environ)
    strip_volatile(notebook)
    nbformat.validate(notebook)
    nbformat.write(notebook, path)
    return time.perf_counter() - started


def main(names: list[str]) -> int:
    paths = [NOTEBOOKS_DIR / f"{name}.ipynb" for name in names] or sorted(NOTEBOOKS_DIR.glob("*.ipynb"))
    for path in paths:
        if not path.is_file():
            print(f"no notebook {path}", file=sys.stderr)
            return 2
        seconds = execute(path)
        print(f"{path.name}: executed in {seconds:.0f} s, {path.stat().st_size / 1024:.0f} KiB")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
