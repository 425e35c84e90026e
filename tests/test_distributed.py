"""Multi-process training on the CPU: two processes of one command, and two "nodes" started by hand."""

from __future__ import annotations

import contextlib
import io
import json
import os
import socket
from pathlib import Path

import pytest
import torch
from test_reliability import fit_process

from lightning_app import test as test_cli
from lightning_app.cli import run_cli
from lightning_app.tensorboard import read_scalars


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _trim_rows(path: Path, rows: int) -> None:
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[: rows + 1]))  # the header and the first ``rows`` rows


def _logged_test_metrics(run_dir: Path) -> dict[str, float]:
    return {tag: points[-1][1] for tag, points in read_scalars(run_dir).items() if tag.startswith("test/")}


def _one_process_test_metrics(checkpoint: Path, data_dir: Path) -> dict[str, float]:
    printed = io.StringIO()
    argv = ["--task", "titanic", "--ckpt", str(checkpoint), "--data-dir", str(data_dir), "--format", "json"]
    with contextlib.redirect_stdout(printed):
        assert run_cli(test_cli.main, [*argv, "--accelerator", "cpu", "--devices", "1"]) == 0
    return json.loads(printed.getvalue())


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

    port = str(_free_port())
    nodes = [
        fit_process(
            *common,
            "--devices",
            "1",
            "--num-nodes",
            "2",
            "--log-dir",
            str(tmp_path / f"node{rank}"),
            env={**environment, "NODE_RANK": str(rank), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port},
        )
        for rank in (0, 1)
    ]
    printed = [_finish(node) for node in nodes]
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

    # The hand-started nodes train the same model as the one command's two processes.
    node_best = next((node_run / "checkpoints").glob("best-*.ckpt"))
    assert node_best.name == best.name
    weights = [torch.load(path, weights_only=True)["state_dict"] for path in (best, node_best)]
    torch.testing.assert_close(weights[1], weights[0], rtol=1e-6, atol=1e-6)
    assert _logged_test_metrics(node_run) == pytest.approx(ddp_logged, rel=1e-6, abs=1e-6)
