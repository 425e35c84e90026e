"""``python -m lightning_app.tune --task NAME --trials N``: hyperparameter search with Optuna over ``fit`` runs.

Each trial is an ordinary :func:`lightning_app.training.fit` run with values sampled from the task's search
space (declared in the registry next to its defaults; ``--search-space NAME=SPEC`` changes it), logged to
``<log_dir>/<task>/tune-<study>/trial-<k>`` and scored on the task's validation metric (its best value over the
epochs), never on test. A pruner stops unpromising trials from their per-epoch validation metric. The study lives
in a database (by default ``study.db`` in the study folder), so a killed search continues with ``--resume``, and
several processes given the same ``--storage`` and ``--study-name`` share it. At the end the best trial's
checkpoint is tested once, its settings written as ``best_config.yaml`` for ``python -m lightning_app.fit
--config``, and the optimisation history and parameter importances drawn next to the study.

The modules, each importing only those before it:

- :mod:`~lightning_app.tune.params`: the search-space kinds (``FloatRange``, ``IntRange``, ``Choice``) and the
  ``--search-space`` syntax (the registry imports it, so it imports nothing of the project's but its errors);
- :mod:`~lightning_app.tune.space`: a task's space, built from the registry and ``--search-space`` and checked
  against what ``fit`` takes;
- :mod:`~lightning_app.tune.study`: :class:`~lightning_app.tune.study.Search`, the pruners, the storage and the
  lock around creating the study, creating or resuming it;
- :mod:`~lightning_app.tune.trials`: one trial as a ``fit`` run, pruning, dead processes' trials, the trial loop;
- :mod:`~lightning_app.tune.report`: the best-trials table, the best trial's test, ``best_config.yaml``, plots;
- :mod:`~lightning_app.tune.cli`: the flags and :func:`~lightning_app.tune.cli.main`.

Optuna is an optional dependency (``pip install -e ".[tune]"``), imported only when a search runs; importing this
package imports nothing (the registry imports :mod:`~lightning_app.tune.params` while it is being built).
"""
