"""Console reports of a finished run: the blocks ``fit``'s summary prints beside its metrics table.

The modules only compute and log numbers (``test/mae_<column>``, ``test/rollout_mae``, ...); this module turns the
logged metrics into text. :func:`summary_sections` is what ``lightning_app.training`` calls.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from lightning_app.models import Covid19Module, TaskModule
from lightning_app.models.covid import ROLLOUT_DAYS
from lightning_app.tables import format_table

#: Text blocks and the metric keys they show (left out of the summary's main table).
Sections = tuple[list[str], set[str]]

#: Per-series columns of the forecast table: ``(metric name, header)``; the keys are ``test/<name>_<column>``.
FORECAST_COLUMNS = (
    ("mae", "model MAE"),
    ("persistence_mae", "persistence MAE"),
    ("mase", "MASE"),
    ("trend_mae", "trend MAE"),
    ("trend_mase", "trend MASE"),
)


def forecast_sections(metrics: Mapping[str, float], series_names: Sequence[str], rollout_days: int) -> Sections:
    """A per-series table of the test period (model, persistence and damped log-trend MAE and MASE) and the line of
    the ``rollout_days``-day roll-out, from the keys :class:`~lightning_app.models.Covid19Module` logs."""
    rows, shown = [], set()
    for column in series_names:
        keys = [f"test/{name}_{column}" for name, _ in FORECAST_COLUMNS]
        if all(key in metrics for key in keys):
            rows.append([column, *(round(metrics[key], 4) for key in keys)])
            shown.update(keys)
    sections = []
    if rows:
        header = ["test series", *(title for _, title in FORECAST_COLUMNS)]
        sections.append(
            format_table(header, rows) + "\n(MASE = MAE / persistence MAE, below 1 beats tomorrow = today; "
            "trend = damped log-trend baseline)"
        )
    if "test/rollout_mae" in metrics and "test/persistence_rollout_mae" in metrics:
        shown.update({"test/rollout_mae", "test/persistence_rollout_mae"})
        sections.append(
            f"{rollout_days}-day roll-out from the start of the test period (forecasts fed back), MAE: "
            f"model {metrics['test/rollout_mae']:.4g}, "
            f"persistence held flat {metrics['test/persistence_rollout_mae']:.4g}"
        )
    return sections, shown


#: Pooled probabilistic figures of the forecast report: ``(metric name, header)``; keys ``test/<name>[_h<N>]``.
SCORE_COLUMNS = (
    ("wis", "WIS"),
    ("relative_wis", "relative WIS"),
    ("mae_median", "median MAE"),
    ("relative_mae", "relative MAE"),
    ("coverage_50", "50% cover"),
    ("coverage_80", "80% cover"),
    ("coverage_95", "95% cover"),
)
#: Per-series figures: ``(figure, header)``; keys ``test/series/<name>/<figure>``.
SERIES_COLUMNS = (
    ("relative_wis", "relative WIS"),
    ("relative_mae", "relative MAE"),
    ("coverage_80", "80% cover"),
    ("mase_h1", "one-day MASE"),
)


def probabilistic_sections(metrics: Mapping[str, float]) -> Sections:
    """Tables of the hub-style scores :class:`~lightning_app.models.Covid19Module` logs for the test period: pooled
    and per horizon (``test/<name>``, ``test/<name>_h<N>``), and per series (``test/series/<name>/<figure>``)."""
    sections, shown = [], set()
    horizons = sorted(
        {int(key.rpartition("_h")[2]) for key in metrics if key.startswith("test/wis_h")},
    )
    rows = []
    for label, suffix in [("all", ""), *((str(h), f"_h{h}") for h in horizons)]:
        keys = [f"test/{name}{suffix}" for name, _ in SCORE_COLUMNS]
        if all(key in metrics for key in keys):
            rows.append([label, *(round(metrics[key], 4) for key in keys)])
            shown.update(keys)
    if rows:
        sections.append(
            format_table(["horizon (days)", *(title for _, title in SCORE_COLUMNS)], rows)
            + "\n(relative = model / forecast hubs' baseline, geometric mean over series and columns; below 1 beats it)"
        )
    series = sorted({key.split("/")[2] for key in metrics if key.startswith("test/series/")})
    rows = []
    for name in series:
        keys = [f"test/series/{name}/{figure}" for figure, _ in SERIES_COLUMNS]
        if all(key in metrics for key in keys):
            rows.append([name, *(round(metrics[key], 4) for key in keys)])
            shown.update(keys)
    if rows:
        sections.append(format_table(["test series", *(title for _, title in SERIES_COLUMNS)], rows))
    return sections, shown


def covid_sections(model: Covid19Module, metrics: Mapping[str, float]) -> Sections:
    """:func:`probabilistic_sections` then :func:`forecast_sections`."""
    first, first_shown = probabilistic_sections(metrics)
    second, second_shown = forecast_sections(metrics, model.series_names, ROLLOUT_DAYS)
    return first + second, first_shown | second_shown


#: The extra report of each kind of module (the first entry the module is an instance of); other modules have none.
SECTION_REPORTS: list[tuple[type[TaskModule], Callable[[TaskModule, Mapping[str, float]], Sections]]] = [
    (Covid19Module, covid_sections),
]


def summary_sections(model: TaskModule, metrics: Mapping[str, float]) -> Sections:
    """Extra blocks of text for ``fit``'s summary of ``model``'s run and the metric keys they show."""
    for module_class, report in SECTION_REPORTS:
        if isinstance(model, module_class):
            return report(model, metrics)
    return [], set()
