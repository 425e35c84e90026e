"""Matplotlib figures for TensorBoard.

Built as bare :class:`~matplotlib.figure.Figure` objects, without pyplot, so no
GUI backend is touched and nothing stays open; ``SummaryWriter.add_figure``
renders them with Agg.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence

import torch
from matplotlib.figure import Figure


def image_review_figure(
    images: torch.Tensor, predicted: Sequence[int], target: Sequence[int], class_names: Sequence[str]
) -> Figure:
    """A grid of ``float32[N, 3, H, W]`` images (0-1) titled "predicted / true"; wrong ones in red."""
    count = images.shape[0]
    columns = min(8, max(1, count))
    rows = max(1, -(-count // columns))
    figure = Figure(figsize=(1.6 * columns, 2.1 * rows))
    axes = figure.subplots(rows, columns, squeeze=False)
    for index, axis in enumerate(axes.flat):
        axis.axis("off")
        if index >= count:
            continue
        axis.imshow(images[index].permute(1, 2, 0).numpy(), interpolation="nearest")
        correct = predicted[index] == target[index]
        axis.set_title(
            f"{class_names[predicted[index]]}\n({class_names[target[index]]})",
            fontsize=7,
            color="green" if correct else "red",
        )
    figure.suptitle("validation: predicted (true)", fontsize=9)
    figure.tight_layout()
    return figure


def confusion_matrix_figure(confusion: torch.Tensor, class_names: Sequence[str]) -> Figure:
    """A ``[C, C]`` count matrix (rows: true class, columns: predicted class) as an annotated heat map."""
    counts = confusion.long().numpy()
    size = max(3.0, 0.6 * len(class_names) + 2.0)
    figure = Figure(figsize=(size, size))
    axis = figure.subplots()
    axis.imshow(counts, cmap="Blues")
    axis.set_xticks(range(len(class_names)), labels=list(class_names), rotation=45, ha="right", fontsize=8)
    axis.set_yticks(range(len(class_names)), labels=list(class_names), fontsize=8)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    threshold = counts.max() / 2 if counts.size else 0
    for row in range(counts.shape[0]):
        for column in range(counts.shape[1]):
            value = counts[row, column]
            color = "white" if value > threshold else "black"
            axis.text(column, row, str(value), ha="center", va="center", color=color)
    axis.set_title("validation confusion matrix", fontsize=9)
    figure.tight_layout()
    return figure


def forecast_figure(
    history_dates: Sequence[str],
    history: torch.Tensor,
    forecast_dates: Sequence[str],
    forecast: torch.Tensor,
    columns: Sequence[str],
    intervals: Mapping[float, tuple[torch.Tensor, torch.Tensor]] | None = None,
) -> Figure:
    """One panel per series: observed daily values ``float[T, C]``, the dashed ``float[D, C]`` forecast and, per
    central interval in ``intervals`` (``{width in %: (lower float[D, C], upper float[D, C])}``), a shaded band
    (wider bands lighter)."""
    figure = Figure(figsize=(9, 2.6 * len(columns)))
    axes = figure.subplots(len(columns), 1, sharex=True, squeeze=False)[:, 0]
    dates = [dt.date.fromisoformat(d) for d in history_dates]
    future = [dt.date.fromisoformat(d) for d in forecast_dates]
    bands = sorted((intervals or {}).items())
    for i, (axis, name) in enumerate(zip(axes, columns, strict=True)):
        axis.plot(dates, history[:, i].tolist(), label="observed", color="tab:blue")
        bridge = [float(history[-1, i]), *forecast[:, i].tolist()]
        axis.plot([dates[-1], *future], bridge, "--", label="forecast (median)", color="tab:orange")
        for rank, (width, (lower, upper)) in enumerate(bands):
            axis.fill_between(
                future,
                lower[:, i].tolist(),
                upper[:, i].tolist(),
                color="tab:orange",
                alpha=0.35 - 0.1 * rank,
                linewidth=0,
                label=f"{width:g}% interval",
            )
        axis.set_ylabel(f"{name}\nper day")
        axis.grid(alpha=0.3)
    axes[0].legend(loc="upper right")
    axes[0].set_title("daily values: history and forecast")
    figure.autofmt_xdate()
    figure.tight_layout()
    return figure
