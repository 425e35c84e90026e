"""TensorBoard as users open it: the real server, on loopback, over finished runs, queried through its HTTP API.

One server per task (``tensorboard --logdir runs/<task>``) reads a copy of the session's tiny trained run
of that task, plus a small run written here with an image and a text summary, so the image and text checks
fail if the server stops serving them, even before a task of this project logs any.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from lightning_app.run_reader import read_hparams, read_images, read_scalars, read_texts

STARTUP_TIMEOUT_S = 60
EXTRAS_RUN = "extras/version_0"


@dataclass
class Server:
    """A running TensorBoard's base URL, with JSON helpers for its data API."""

    url: str

    def get_bytes(self, path: str, **params: str) -> bytes:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(f"{self.url}{path}{query}", timeout=10) as response:
            return response.read()

    def get(self, path: str, **params: str) -> Any:
        return json.loads(self.get_bytes(path, **params))

    def post(self, path: str, payload: dict[str, Any]) -> Any:
        request = urllib.request.Request(
            f"{self.url}{path}", data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())


#: What TensorBoard prints once it listens: ``TensorBoard 2.x at http://127.0.0.1:PORT/ (Press CTRL+C to quit)``.
SERVING = re.compile(r"TensorBoard \S+ at (http://127\.0\.0\.1:\d+)/")


def served_url(process: subprocess.Popen, log: Path) -> str:
    """The URL of a TensorBoard started with ``--port 0``: the port it bound itself and printed (no port is picked
    here and released for it to take, which another process could take first)."""
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if found := SERVING.search(log.read_text()):
            return found.group(1)
        if process.poll() is not None:
            pytest.fail(f"TensorBoard exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        time.sleep(0.1)
    pytest.fail(f"TensorBoard printed no URL within {STARTUP_TIMEOUT_S} s; its log:\n{log.read_text()[-3000:]}")


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except (urllib.error.URLError, ConnectionError, json.JSONDecodeError):
            pass  # not listening or not loaded yet
        time.sleep(0.5)
    pytest.fail(f"TensorBoard: {what} within {timeout_s} s; its log:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module", params=["titanic", "covid19"])
def runs(request, trained, tmp_path_factory: pytest.TempPathFactory, write_image_and_text_run) -> dict[str, Path]:
    """``{TensorBoard run name: run folder}`` of one task's logdir: a copy of its trained run, and the extras run.

    One logdir per task, as ``tensorboard --logdir runs/<task>`` opens it: the HPARAMS tab takes its columns
    from the first run's experiment summary, so runs of different tasks do not share one table.
    """
    task = request.param
    logdir = tmp_path_factory.mktemp(f"tensorboard_logdir_{task}")
    source = Path(trained[task].log_dir)
    name = f"{task}/{source.name}"
    shutil.copytree(source, logdir / name, ignore=shutil.ignore_patterns("checkpoints"))
    write_image_and_text_run(logdir / EXTRAS_RUN)
    return {name: logdir / name, EXTRAS_RUN: logdir / EXTRAS_RUN}


@pytest.fixture(scope="module")
def server(runs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    logdir = runs[EXTRAS_RUN].parent.parent
    log = tmp_path_factory.mktemp("tensorboard_server") / "server.log"
    command = [sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--host", "127.0.0.1"]
    with log.open("w") as log_handle:
        process = subprocess.Popen([*command, "--port", "0"], stdout=log_handle, stderr=subprocess.STDOUT)
    try:
        server = Server(served_url(process, log))

        def all_runs_loaded() -> bool:
            if process.poll() is not None:
                pytest.fail(f"TensorBoard exited with {process.returncode}:\n{log.read_text()[-3000:]}")
            served = server.get("/data/plugin/scalars/tags")
            return all(set(read_scalars(run_dir)) <= set(served.get(name, {})) for name, run_dir in runs.items())

        wait_until(all_runs_loaded, STARTUP_TIMEOUT_S, "not every run's scalars were served", log)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


STATUSES = ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"]


def trained_run(runs: dict[str, Path]) -> str:
    return next(name for name in runs if name != EXTRAS_RUN)


def test_the_runs_are_listed(server, runs):
    assert set(server.get("/data/runs")) == set(runs)


def test_train_val_test_and_hparam_metric_scalars_are_served_with_their_values(server, runs):
    run = trained_run(runs)
    tags = server.get("/data/plugin/scalars/tags")[run]
    for stage in ("train", "val", "test"):
        assert f"{stage}/loss" in tags, f"{run} serves no {stage}/loss"
    assert any(tag.startswith("hp/test_") for tag in tags)

    on_disk = read_scalars(runs[run])
    for tag in ("train/loss", "val/loss", "test/loss"):
        served = server.get("/data/plugin/scalars/scalars", run=run, tag=tag)  # [[wall_time, step, value], ...]
        assert [(step, pytest.approx(value)) for _, step, value in served] == on_disk[tag]


def test_hparams_and_their_metrics_are_served(server, runs, trained):
    run = trained_run(runs)
    experiment = server.post("/data/plugin/hparams/experiment", {})
    assert set(read_hparams(runs[run])) <= {info["name"] for info in experiment["hparamInfos"]}
    expected = {f"hp/{key.replace('/', '_')}": value for key, value in trained[run.split("/")[0]].metrics.items()}
    assert {info["name"]["tag"] for info in experiment["metricInfos"]} == set(expected)

    groups = server.post(
        "/data/plugin/hparams/session_groups",
        {"startIndex": 0, "sliceSize": 100, "colParams": [], "allowedStatuses": STATUSES},
    )["sessionGroups"]
    group = next(group for group in groups if group["name"] == run)
    assert group["hparams"] == pytest.approx(read_hparams(runs[run]))
    assert group["hparams"]["task"] == run.split("/")[0]
    served_metrics = {metric["name"]["tag"]: metric["value"] for metric in group["metricValues"]}
    assert served_metrics == pytest.approx(expected)


def test_every_logged_image_is_served(server, runs):
    served_tags = server.get("/data/plugin/images/tags")
    assert read_images(runs[EXTRAS_RUN]), "the extras run logs an image, so this check cannot pass vacuously"
    for run, run_dir in runs.items():
        logged = read_images(run_dir)
        assert set(served_tags.get(run, {})) == set(logged), run
        for tag, images in logged.items():
            samples = server.get("/data/plugin/images/images", run=run, tag=tag, sample="0")
            query = urllib.parse.parse_qs(samples[-1]["query"])
            png = server.get_bytes("/data/plugin/images/individualImage", **{k: v[0] for k, v in query.items()})
            assert png == images[-1].png


def test_every_logged_text_is_served(server, runs):
    served_tags = server.get("/data/plugin/text/tags")
    assert read_texts(runs[EXTRAS_RUN]), "the extras run logs text, so this check cannot pass vacuously"
    for run, run_dir in runs.items():
        logged = read_texts(run_dir)
        assert set(served_tags.get(run, [])) == set(logged), run
        for tag, texts in logged.items():
            served = server.get("/data/plugin/text/text", run=run, tag=tag)
            assert texts[-1][1] in served[-1]["text"]  # served as HTML rendered from the markdown
