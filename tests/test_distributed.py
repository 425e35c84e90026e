"""Multi-process training on the CPU: two processes of one command, and two "nodes" started by hand."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import socket
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from synthetic_data import make_tree, write_tiny_data
from test_reliability import fit_process

from datamodules.cache import MANIFEST_NAME
from lightning_app import test as test_cli
from lightning_app.checkpoints import load_checkpoint
from lightning_app.cli import run_cli
from lightning_app.run_reader import read_scalars


def _unused_port() -> int:
    """A port nothing listens on now; another process may take it before the run binds it (see the retry below)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


#: How torch's rendezvous store reports a MASTER_PORT that another process took first.
ADDRESS_IN_USE = ("EADDRINUSE", "address already in use")


def _run_hand_started_nodes(args: list[str], env: dict[str, str], log_dirs: list[Path], attempts: int = 3) -> list[str]:
    """Start rank 0 and rank 1 with a MASTER_PORT and wait for both; their stdouts.

    torch's TCPStore (rank 0) must bind MASTER_PORT itself, so the port is picked here and released first; if
    another process takes it in between, rank 0 fails with EADDRINUSE: then rank 1 is stopped, the log folders
    are emptied and both start again on another port (a bounded number of times)."""
    for _ in range(attempts):
        port = str(_unused_port())
        nodes = [
            fit_process(
                *args, "--log-dir", str(log_dirs[rank]),
                env={**env, "NODE_RANK": str(rank), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port},
            )
            for rank in (0, 1)
        ]  # fmt: skip
        out, err = nodes[0].communicate(timeout=300)
        if nodes[0].returncode != 0 and any(marker.lower() in err.lower() for marker in ADDRESS_IN_USE):
            nodes[1].kill()
            nodes[1].communicate(timeout=30)
            for folder in log_dirs:
                shutil.rmtree(folder, ignore_errors=True)
            continue
        assert nodes[0].returncode == 0, err
        return [out, _finish(nodes[1])]
    pytest.fail(f"MASTER_PORT was taken by another process {attempts} times in a row")


def _trim_rows(path: Path, rows: int) -> None:
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[: rows + 1]))  # the header and the first ``rows`` rows


def _logged_test_metrics(run_dir: Path) -> dict[str, float]:
    return {tag: points[-1][1] for tag, points in read_scalars(run_dir).items() if tag.startswith("test/")}


def _one_process_test_metrics(checkpoint: Path, data_dir: Path, task: str = "titanic", *more: str) -> dict[str, float]:
    """The test metrics of ``checkpoint`` computed by ``python -m lightning_app.test`` in one process."""
    printed = io.StringIO()
    argv = ["--task", task, "--ckpt", str(checkpoint), "--data-dir", str(data_dir), "--format", "json", *more]
    with contextlib.redirect_stdout(printed):
        assert run_cli(test_cli.main, [*argv, "--accelerator", "cpu", "--devices", "1"]) == 0
    return json.loads(printed.getvalue())


def _one_process_val_metrics(checkpoint: Path, task: str, **data: str) -> dict[str, float]:
    """The validation metrics of ``checkpoint`` over the whole validation split, in this process."""
    loaded = load_checkpoint(checkpoint, task)
    trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False)
    results = trainer.validate(loaded.module, datamodule=loaded.datamodule(**data), verbose=False)
    return {key: float(value) for key, value in results[0].items() if key.startswith("val/")}


def _logged_val_metrics_at(run_dir: Path, step: int) -> dict[str, float]:
    """The ``val/*`` scalars logged at global step ``step`` (the end of one epoch's validation)."""
    scalars = read_scalars(run_dir)
    return {
        tag: dict(points)[step] for tag, points in scalars.items() if tag.startswith("val/") and step in dict(points)
    }


def assert_best_epoch_val_metrics_are_the_whole_split(run: Path, best: Path, task: str, **data: str) -> None:
    val_split = _one_process_val_metrics(best, task, **data)
    # Lightning logs an epoch's validation at the index of its last training step: the checkpoint's step - 1.
    logged = _logged_val_metrics_at(run, torch.load(best, weights_only=True)["global_step"] - 1)
    shared = sorted(logged.keys() & val_split.keys())
    assert "val/loss" in shared, (sorted(logged), sorted(val_split))
    assert [logged[key] for key in shared] == pytest.approx([val_split[key] for key in shared], rel=1e-5, abs=1e-5)


def _finish(process) -> str:
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err
    return out


# Split sizes divisible by the world size (2), so DistributedSampler pads nothing: a copy of the Titanic data with
# 706 training rows (106 validation, 600 training) and 178 test rows. The metrics rank 0 logs are then those of
# the whole split, which one process computes from the same checkpoint.
@pytest.mark.slow
def test_two_processes_and_two_hand_started_nodes_log_the_metrics_of_the_whole_split(tmp_path, titanic_dir):
    _trim_rows(titanic_dir / "train.csv", 706)
    _trim_rows(titanic_dir / "test.csv", 178)
    common = ["--task", "titanic", "--max-epochs", "2", "--accelerator", "cpu", "--strategy", "ddp"]
    common += ["--data-dir", str(titanic_dir)]
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}

    one_command = fit_process(*common, "--devices", "2", "--log-dir", str(tmp_path / "ddp"), env=environment)
    assert _finish(one_command).count("best checkpoint:") == 1

    node_args = [*common, "--devices", "1", "--num-nodes", "2"]
    printed = _run_hand_started_nodes(node_args, environment, [tmp_path / f"node{rank}" for rank in (0, 1)])
    assert printed[0].count("best checkpoint:") == 1 and "best checkpoint:" not in printed[1]
    assert not list((tmp_path / "node1").rglob("*")), "only rank 0 writes logs, checkpoints and config.yaml"

    ddp_run, node_run = tmp_path / "ddp" / "titanic" / "version_0", tmp_path / "node0" / "titanic" / "version_0"
    for run in (ddp_run, node_run):
        assert (run / "config.yaml").is_file()
    best = next((ddp_run / "checkpoints").glob("best-*.ckpt"))
    whole_split = _one_process_test_metrics(best, titanic_dir)
    assert set(whole_split) >= {"test/acc", "test/loss", "test/auroc"}
    ddp_logged = _logged_test_metrics(ddp_run)
    assert ddp_logged.keys() == whole_split.keys()
    assert ddp_logged == pytest.approx(whole_split, rel=1e-5, abs=1e-5)
    assert_best_epoch_val_metrics_are_the_whole_split(ddp_run, best, "titanic", data_dir=str(titanic_dir))

    # The hand-started nodes train the same model as the one command's two processes.
    node_best = next((node_run / "checkpoints").glob("best-*.ckpt"))
    assert node_best.name == best.name
    weights = [torch.load(path, weights_only=True)["state_dict"] for path in (best, node_best)]
    torch.testing.assert_close(weights[1], weights[0], rtol=1e-6, atol=1e-6)
    assert _logged_test_metrics(node_run) == pytest.approx(ddp_logged, rel=1e-6, abs=1e-6)


def _split_data(task: str, tmp_path: Path, covid_dir: Path) -> tuple[Path, list[str]]:
    """Data for ``task`` whose validation and test splits hold an even number of examples, and its extra flags."""
    if task == "covid19":
        # 8 validation and 8 test days instead of the default 7 (one day is one example).
        config = tmp_path / "even_days.yaml"
        config.write_text("task: covid19\ndatamodule_kwargs: {val_days: 8, test_days: 8}\n")
        return covid_dir, ["--config", str(config), "--max-epochs", "2"]
    if task == "imdb":  # 200 training reviews (30 for validation), 80 test reviews
        return write_tiny_data(tmp_path / "data"), ["--batch-size", "8", "--max-epochs", "1"]
    # cifar2: 2 x 10 training images (2 for validation), 2 x 4 test images
    tree = make_tree(tmp_path / "data", ["cat", "dog"], train_per_class=10, test_per_class=4)
    return tree, ["--batch-size", "4", "--max-epochs", "1"]


# As above, every split holds an even number of examples, so DistributedSampler pads nothing and the metrics rank 0
# logs must be those of the whole split (synced by torchmetrics), not those of its own half.
@pytest.mark.slow
@pytest.mark.parametrize("task", ["covid19", "imdb", "cifar2"])
def test_two_processes_log_the_whole_split_build_one_cache_and_write_once(tmp_path, covid_dir, task):
    data, extra = _split_data(task, tmp_path, covid_dir)
    cache, log_dir = tmp_path / "cache", tmp_path / "runs"
    args = ["--task", task, "--data-dir", str(data), "--cache-dir", str(cache), "--log-dir", str(log_dir), *extra]
    args += ["--accelerator", "cpu", "--devices", "2", "--strategy", "ddp"]
    out = _finish(fit_process(*args, env={**os.environ, "OMP_NUM_THREADS": "1"}))
    assert out.count("best checkpoint:") == 1, "only rank 0 prints the summary"

    assert [path.name for path in (log_dir / task).iterdir()] == ["version_0"]
    run = log_dir / task / "version_0"
    assert [path.relative_to(run) for path in run.rglob("config.yaml")] == [Path("config.yaml")]
    if task != "covid19":  # the token ids / decoded images: built once, by one process, under the file lock
        built = list(cache.rglob(MANIFEST_NAME))  # one manifest per cache entry
        assert len(built) == 1, built
        assert not [path for path in cache.rglob(".*") if ".tmp-" in path.name], "no temporary build left behind"

    best = next((run / "checkpoints").glob("best-*.ckpt"))
    whole_split = _one_process_test_metrics(best, data, task, "--cache-dir", str(cache))
    logged = _logged_test_metrics(run)
    assert logged.keys() == whole_split.keys()
    assert logged == pytest.approx(whole_split, rel=1e-5, abs=1e-5)

    # The validation metrics logged at the best epoch are those of the whole validation split too.
    assert_best_epoch_val_metrics_are_the_whole_split(run, best, task, data_dir=str(data), cache_dir=str(cache))
