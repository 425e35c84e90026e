"""Resuming from checkpoints: which ``last.ckpt`` is kept, which run ``--ckpt-path last`` continues, and that a
killed run resumed to the end matches an uninterrupted one."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from synthetic_data import make_tree, write_tiny_data
from test_reliability import fit_process

from lightning_app.training import FitConfig, fit


class ValLossPerEpoch(pl.Callback):
    """Records the validation loss of every training epoch (not the sanity check)."""

    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_validation_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self.losses.append(float(trainer.callback_metrics["val/loss"]))


def test_last_checkpoint_is_refreshed_on_an_epoch_where_validation_got_worse(tiny_fit):
    recorder = ValLossPerEpoch()
    # A high learning rate: validation improves, then gets worse at the last epoch (checked below, not assumed).
    result = tiny_fit("titanic", lr=0.05, max_epochs=6, callbacks=[recorder])
    losses = recorder.losses
    assert len(losses) == 6
    best_epoch = losses.index(min(losses))
    assert best_epoch < 5 and losses[5] > losses[best_epoch], f"precondition: the last epoch is worse: {losses}"

    last = torch.load(result.last_model_path, weights_only=True)
    best = torch.load(result.best_model_path, weights_only=True)
    assert Path(result.last_model_path).name == "last.ckpt"
    assert last["epoch"] == 5, "last.ckpt holds the final epoch although validation got worse there"
    assert best["epoch"] == best_epoch
    assert Path(result.best_model_path).name == f"best-epoch{best_epoch:03d}.ckpt"
    assert any(not torch.equal(last["state_dict"][key], best["state_dict"][key]) for key in best["state_dict"])
    assert not os.path.samefile(result.last_model_path, result.best_model_path)


def test_last_checkpoint_is_the_best_file_hard_linked_on_an_epoch_that_saved_it(tiny_fit):
    result = tiny_fit("titanic", max_epochs=1)
    assert Path(result.last_model_path).name == "last.ckpt"
    assert os.path.samefile(result.last_model_path, result.best_model_path)  # one write, one file on disk
    assert torch.load(result.last_model_path, weights_only=True)["epoch"] == 0


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``folder`` with its size and modification time (ns)."""
    return {
        str(path.relative_to(folder)): (path.stat().st_size, path.stat().st_mtime_ns)
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


# "Newest" is the last.ckpt written most recently (modification time), not the highest version number: a run
# resumed (and so written) after a later one had been started is the one to continue.
@pytest.mark.parametrize("newest", [1, 0])
def test_ckpt_path_last_continues_the_newest_run_and_leaves_the_other_untouched(tmp_path, newest):
    log_dir = tmp_path / "runs"
    for _ in range(2):
        fit(FitConfig(task="titanic", max_epochs=2, log_dir=str(log_dir), enable_progress_bar=False), test=False)
    runs = log_dir / "titanic"
    lasts = [runs / f"version_{i}" / "checkpoints" / "last.ckpt" for i in (0, 1)]
    older = 1 - newest
    stamp = lasts[older].stat().st_mtime_ns
    os.utime(lasts[newest], ns=(stamp + 10**9, stamp + 10**9))  # one second newer, whatever the clock resolution
    untouched = _snapshot(runs / f"version_{older}")

    result = fit(
        FitConfig(task="titanic", max_epochs=3, log_dir=str(log_dir), enable_progress_bar=False, ckpt_path="last")
    )

    assert sorted(path.name for path in runs.iterdir()) == ["version_0", "version_1"], "no new version folder"
    assert Path(result.log_dir) == runs / f"version_{newest}"
    assert Path(result.last_model_path) == lasts[newest]
    resumed = torch.load(lasts[newest], weights_only=True)
    steps_per_epoch = -(-605 // 128)
    assert resumed["epoch"] == 2, "the third epoch follows the two the run had"
    assert resumed["global_step"] == 3 * steps_per_epoch
    assert _snapshot(runs / f"version_{older}") == untouched
    assert torch.load(lasts[older], weights_only=True)["epoch"] == 1


def _titanic_args() -> tuple[list[str], dict]:
    return ["--task", "titanic", "--model", "tutorial", "--max-epochs", "12"], {
        "task": "titanic",
        "model": "tutorial",
        "max_epochs": 12,
    }


def _imdb_args(data: Path, cache: Path) -> tuple[list[str], dict]:
    args = ["--task", "imdb", "--data-dir", str(data), "--cache-dir", str(cache), "--batch-size", "8"]
    args += ["--max-epochs", "3"]
    return args, {"task": "imdb", "data_dir": str(data), "cache_dir": str(cache), "batch_size": 8, "max_epochs": 3}


def _cifar2_args(data: Path, cache: Path) -> tuple[list[str], dict]:
    """The default variant (crop+flip augmentation drawn from the global generator, OneCycle stepped every batch,
    batch norm) on a tiny two-class ImageFolder tree: 18 training images in batches of 4, 5 steps an epoch."""
    args = ["--task", "cifar2", "--data-dir", str(data), "--cache-dir", str(cache), "--batch-size", "4"]
    args += ["--max-epochs", "5"]
    return args, {"task": "cifar2", "data_dir": str(data), "cache_dir": str(cache), "batch_size": 4, "max_epochs": 5}


def _resume_and_run_whole(settings: dict, killed_dir: Path, whole_dir: Path) -> tuple:
    common = {"log_dir": str(killed_dir), "enable_progress_bar": False}
    resumed = fit(FitConfig(**settings, **common, ckpt_path="last"))
    whole = fit(FitConfig(**settings, **{**common, "log_dir": str(whole_dir)}))
    return resumed, whole


@pytest.mark.parametrize("task", ["titanic", "cifar2", pytest.param("imdb", marks=pytest.mark.slow)])  # imdb: ~12 s
def test_killed_run_resumed_to_the_end_matches_an_uninterrupted_run(tmp_path, kill_when_written, task):
    if task == "titanic":
        args, settings = _titanic_args()
    elif task == "cifar2":
        tree = make_tree(tmp_path / "data", ["cat", "dog"], train_per_class=10, test_per_class=4)
        args, settings = _cifar2_args(tree, tmp_path / "cache")
    else:
        args, settings = _imdb_args(write_tiny_data(tmp_path / "data"), tmp_path / "cache")
    killed_dir, whole_dir = tmp_path / "killed", tmp_path / "whole"
    last = killed_dir / task / "version_0" / "checkpoints" / "last.ckpt"
    kill_when_written(
        fit_process(*args, "--log-dir", str(killed_dir), env={**os.environ, "OMP_NUM_THREADS": "1"}), last
    )
    killed_at = torch.load(last, weights_only=True)["epoch"]
    assert killed_at < settings["max_epochs"] - 1, "killed before the last epoch"

    # The killed process ran on one thread: so do the runs here, or convolutions sum in another order (cifar2's
    # weights then differ by ~1e-2 after 25 steps, between two uninterrupted runs as much as here).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        resumed, whole = _resume_and_run_whole(settings, killed_dir, whole_dir)
    finally:
        torch.set_num_threads(threads)

    assert Path(resumed.last_model_path) == last
    resumed_last, whole_last = (torch.load(path, weights_only=True) for path in (last, whole.last_model_path))
    assert resumed_last["epoch"] == whole_last["epoch"] == settings["max_epochs"] - 1
    assert resumed_last["global_step"] == whole_last["global_step"]
    torch.testing.assert_close(resumed_last["state_dict"], whole_last["state_dict"], rtol=1e-6, atol=1e-6)
    assert Path(resumed.best_model_path).name == Path(whole.best_model_path).name
    assert resumed.metrics == pytest.approx(whole.metrics, rel=1e-6, abs=1e-6)
