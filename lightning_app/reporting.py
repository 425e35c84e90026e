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


#: The extra report of each kind of module (the first entry the module is an instance of); other modules have none.
SECTION_REPORTS: list[tuple[type[TaskModule], Callable[[TaskModule, Mapping[str, float]], Sections]]] = [
    (Covid19Module, lambda model, metrics: forecast_sections(metrics, model.series_names, ROLLOUT_DAYS)),
]


def summary_sections(model: TaskModule, metrics: Mapping[str, float]) -> Sections:
    """Extra blocks of text for ``fit``'s summary of ``model``'s run and the metric keys they show."""
    for module_class, report in SECTION_REPORTS:
        if isinstance(model, module_class):
            return report(model, metrics)
    return [], set()
