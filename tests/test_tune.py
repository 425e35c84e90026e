"""Hyperparameter search: search spaces, a Titanic study end to end, pruning, resume after a kill, shared studies."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

# optuna is in the dev extra: a missing install fails these tests rather than skipping them.
import optuna
import pytest

from lightning_app.cli import run_cli
from lightning_app.fit import parse_config
from lightning_app.registry import TASKS
from lightning_app.run_reader import read_scalars
from lightning_app.tune.cli import main as tune_main
from lightning_app.tune.params import Choice, FloatRange, IntRange, parse_param
from lightning_app.tune.report import HISTORY_PLOT, IMPORTANCE_PLOT
from lightning_app.tune.space import check_search_space, tunable_defaults
from lightning_app.tune.study import PRUNERS

STUDY = "titanic-default"


def study_dir(log_dir: Path) -> Path:
    return log_dir / "titanic" / f"tune-{STUDY}"


def load_trials(log_dir: Path) -> list:
    storage = f"sqlite:///{study_dir(log_dir) / 'study.db'}"
    return optuna.load_study(study_name=STUDY, storage=storage).get_trials(deepcopy=False)


def finished(trials: list) -> list:
    return [t for t in trials if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)]


def tune_args(log_dir: Path, trials: int = 3, max_epochs: int = 2, *extra: str) -> list[str]:
    return ["--task", "titanic", "--trials", str(trials), "--max-epochs", str(max_epochs), "--log-dir", str(log_dir),
            *extra]  # fmt: skip


def tune_process(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "lightning_app.tune", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


@pytest.mark.parametrize("task", sorted(TASKS))
def test_registry_search_spaces_name_real_arguments_and_hold_the_defaults(task):
    for model, variant in TASKS[task].variants.items():
        assert variant.search_space, f"{task} {model} declares no search space"
        check_search_space(TASKS[task], model, variant.search_space, f"{task} {model}")
        defaults = tunable_defaults(TASKS[task], model)
        for name, param in variant.search_space.items():
            assert param.contains(defaults[name]), f"{task} {model}: default {name}={defaults[name]} not in {param}"


def test_search_space_syntax():
    assert parse_param("1e-4:1e-2:log", 0.1) == FloatRange(1e-4, 1e-2, log=True)
    assert parse_param("0:0.5", 0.3) == FloatRange(0.0, 0.5)
    assert parse_param("16:256:16", 128) == IntRange(16, 256, step=16)
    assert parse_param("32,64,128", 64) == Choice((32, 64, 128))
    assert parse_param("adam,adamw", "adamw") == Choice(("adam", "adamw"))
    assert parse_param("true", False) == Choice((True,))
    assert str(IntRange(10, 30, step=5)) == "10:30:5" and str(FloatRange(1e-4, 1e-2, log=True)) == "0.0001:0.01:log"
    for spec, default, message in [
        ("0.1:0.01", 0.1, "empty range"),
        ("1:1", 1, "empty range"),
        ("0:1:log", 0.1, "log range needs low > 0"),
        ("a:b", 0.1, "expected numeric"),
        ("0.5:2", 1, "expected integer"),
        ("0:1:0.1", 0.5, "a step is for integer"),
        ("1:2", "words", "numeric parameter"),
        ("1,,2", 1, "empty value"),
    ]:
        with pytest.raises(ValueError, match=message):
            parse_param(spec, default)


def test_three_trial_titanic_study_end_to_end(tmp_path, capsys):
    assert tune_main([*tune_args(tmp_path), "--sampler-seed", "0"]) == 0
    out = capsys.readouterr().out
    folder = study_dir(tmp_path)
    trials = load_trials(tmp_path)
    assert len(finished(trials)) == 3 and "3 trials finished: 3 complete, 0 pruned; 0 failed" in out
    assert trials[0].user_attrs.get("registry_default"), "trial 0 runs the registry's settings"
    for number in range(3):
        trial_dir = folder / f"trial-{number}"
        assert (trial_dir / "config.yaml").is_file() and list(trial_dir.glob("checkpoints/best-*.ckpt"))
        tags = read_scalars(trial_dir)
        assert "val/loss_best" in tags and not any(tag.startswith("test/") for tag in tags), "trials never test"

    best = min(finished(trials), key=lambda t: t.value)
    assert f"best trial {best.number} on the test split" in out and "test/acc" in out
    config, _ = parse_config(["--config", str(folder / "best_config.yaml")])
    assert config.task == "titanic" and config.max_epochs == 2
    assert config.lr == best.params["lr"] and config.batch_size == best.params["batch_size"]
    for name in ("hidden", "dropout", "weight_decay"):
        assert config.module_kwargs[name] == best.params[f"module_kwargs.{name}"]
    assert (folder / HISTORY_PLOT).stat().st_size > 0 and (folder / IMPORTANCE_PLOT).stat().st_size > 0


class PruneAllButTheFirst(optuna.pruners.BasePruner):
    def prune(self, study, trial) -> bool:
        return trial.number > 0


def test_unpromising_trials_are_pruned_and_counted(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(PRUNERS, "median", lambda optuna, warmup: PruneAllButTheFirst())
    assert tune_main(tune_args(tmp_path, 3, 3)) == 0
    out = capsys.readouterr().out
    assert "3 trials finished: 1 complete, 2 pruned" in out
    assert "trial 1: pruned after epoch 0" in out
    pruned = [t for t in load_trials(tmp_path) if t.state == optuna.trial.TrialState.PRUNED]
    assert [t.number for t in pruned] == [1, 2] and all(t.last_step == 0 for t in pruned)
    assert read_scalars(study_dir(tmp_path) / "trial-1")["val/loss"], "a pruned trial's partial run stays"


def test_search_resumes_after_a_kill_with_no_trial_lost_or_run_twice(tmp_path, capsys, kill_when_written):
    args = tune_args(tmp_path, 4, 2)  # the kill comes as trial 1 starts, whatever the trials' length
    kill_when_written(tune_process(*args), study_dir(tmp_path) / "trial-1" / "config.yaml")

    assert run_cli(tune_main, args) == 2, "an existing study needs --resume"
    assert "pass --resume" in capsys.readouterr().err
    assert tune_main([*args, "--resume"]) == 0
    out = capsys.readouterr().out
    trials = load_trials(tmp_path)
    numbers = [t.number for t in finished(trials)]
    assert len(numbers) == 4 == len(set(numbers))
    if trials[1].state == optuna.trial.TrialState.FAIL:  # killed while running: failed, and not counted
        assert "trial 1: its process" in out and numbers == [0, 2, 3, 4]
    for number in numbers:
        assert (study_dir(tmp_path) / f"trial-{number}" / "config.yaml").is_file()


@pytest.mark.slow  # two interpreters, 11 s: the fast suite keeps the one-process studies
def test_two_processes_share_one_study(tmp_path):
    args = [*tune_args(tmp_path, 4, 3), "--resume"]  # --resume: create the study, or join it
    processes = [tune_process(*args) for _ in range(2)]
    outputs = [process.communicate(timeout=300) for process in processes]
    for process, (out, err) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, err
        assert "4 trials finished" in out
    trials = load_trials(tmp_path)
    done = finished(trials)
    assert len(done) == 4 and len({t.number for t in done}) == 4
    assert all(t.user_attrs.get("surplus") for t in trials if t not in done), "only surplus asks are not run"
    # Which process runs how many trials is up to the scheduler (a process may start after the other finished
    # them all): what the study guarantees is 4 trials in total, each run once, each by one of the two.
    pids = {str(process.pid) for process in processes}
    assert {t.user_attrs["worker"].rpartition(":")[2] for t in done} <= pids
    runs = sorted(int(folder.name.removeprefix("trial-")) for folder in study_dir(tmp_path).glob("trial-*"))
    assert runs == sorted(t.number for t in done), "a folder (one training run) per finished trial, none other"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--search-space", "module_kwargs.bogus=1,2"], "unknown parameter 'module_kwargs.bogus'"),
        (["--search-space", "lr=0.1:0.01"], "empty range"),
        (["--search-space", "lr"], "expected NAME=SPEC"),
        (["--search-space", "batch_size=0.5:2"], "expected integer"),
        (["--search-space", "module_kwargs.hidden=big,small"], "'hidden' must be int"),
        (["--lr", "0.01", "--search-space", "lr=1e-3:1e-2"], "--lr fixes 'lr'"),
        (["--trials", "0"], "--trials 0"),
        (["--storage", "not-a-url"], "--storage not-a-url: cannot open it"),
        (["--storage", "sqlite:////no/such/folder/study.db"], "cannot open it"),
        (["--storage", "postgresql://me:secret@127.0.0.1:1/db"], "--storage postgresql://me:***@127.0.0.1:1/db"),
        (["--model", "nope"], "no model 'nope'"),
        (["--study-name", "a/b"], "--study-name"),
    ],
)
def test_bad_input_stops_with_one_line(tmp_path, capsys, extra, message):
    assert run_cli(tune_main, [*tune_args(tmp_path), *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert not list(tmp_path.rglob("trial-*"))


def test_without_optuna_it_says_how_to_install_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna", None)
    assert run_cli(tune_main, tune_args(tmp_path)) == 2
    assert 'pip install -e ".[tune]"' in capsys.readouterr().err
