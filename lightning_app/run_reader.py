"""Reading a finished run back from its TensorBoard event files, for notebooks and research code.

A Lightning run folder (``runs/<task>/version_<n>``) can hold several event
files: one per writer the logger opened (training, the final test, a resumed
run). The readers here merge them, so a run reads as one:

* :func:`read_scalars` -> ``{tag: [(step, value), ...]}``, plotted by :func:`plot_curves`;
* :func:`read_hparams` -> the hyperparameters shown in TensorBoard's HPARAMS tab;
* :func:`read_images` and :func:`read_texts` -> whatever images and text the run logged.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tensorboard.backend.event_processing import event_accumulator
from tensorboard.plugins.hparams import plugin_data_pb2
from tensorboard.util import tensor_util

if TYPE_CHECKING:
    from matplotlib.axes import Axes

Scalars = dict[str, list[tuple[int, float]]]

#: Events kept per tag when reading (0 keeps all). Scalars are small; images are sampled.
SIZE_GUIDANCE = {
    event_accumulator.SCALARS: 0,
    event_accumulator.IMAGES: 8,
    event_accumulator.TENSORS: 32,
    event_accumulator.HISTOGRAMS: 1,
    event_accumulator.COMPRESSED_HISTOGRAMS: 1,
    event_accumulator.AUDIO: 1,
}
_HPARAMS_START_TAG = "_hparams_/session_start_info"


@dataclass(frozen=True)
class LoggedImage:
    """One image event: ``png`` holds the encoded bytes as logged (PNG for Lightning and torch writers)."""

    step: int
    png: bytes
    width: int
    height: int


def event_files(run_dir: str | Path) -> list[Path]:
    """The run's event files in the order they were written (their names start with a timestamp)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir}: no such run folder")
    files = sorted(run_dir.glob("events.out.tfevents.*"))
    if not files:
        raise FileNotFoundError(f"{run_dir}: no TensorBoard event files (events.out.tfevents.*) in this folder")
    return files


def _accumulators(run_dir: str | Path) -> list[event_accumulator.EventAccumulator]:
    accumulators = []
    for path in event_files(run_dir):
        # Each file is read on its own, so no purging across files: merging below decides which value wins.
        accumulator = event_accumulator.EventAccumulator(
            str(path), size_guidance=SIZE_GUIDANCE, purge_orphaned_data=False
        )
        accumulator.Reload()
        accumulators.append(accumulator)
    return accumulators


def _plugin_tags(accumulator: event_accumulator.EventAccumulator, plugin: str) -> dict[str, bytes]:
    """``{tag: plugin content}`` of one plugin; the accumulator raises KeyError for a plugin a file never used."""
    try:
        return accumulator.PluginTagToContent(plugin)
    except KeyError:
        return {}


def read_scalars(run_dir: str | Path) -> Scalars:
    """Every scalar tag of the run as ``{tag: [(step, value), ...]}``, sorted by step.

    When several event files hold the same tag at the same step (a run resumed
    after a crash re-logs the steps since its last checkpoint), the value written
    last wins, as in TensorBoard.
    """
    by_tag: dict[str, dict[int, float]] = {}
    for accumulator in _accumulators(run_dir):
        for tag in accumulator.Tags()[event_accumulator.SCALARS]:
            points = by_tag.setdefault(tag, {})
            for event in accumulator.Scalars(tag):
                points[event.step] = event.value
    return {tag: sorted(points.items()) for tag, points in sorted(by_tag.items())}


def last_values(scalars: Scalars, prefix: str = "") -> dict[str, float]:
    """The latest value of each tag starting with ``prefix`` (e.g. ``"test/"`` or ``"hp/"``)."""
    return {tag: points[-1][1] for tag, points in scalars.items() if tag.startswith(prefix) and points}


def read_hparams(run_dir: str | Path) -> dict[str, float | str | bool]:
    """The hyperparameters the run logged for TensorBoard's HPARAMS tab (empty if it logged none)."""
    hparams: dict[str, float | str | bool] = {}
    for accumulator in _accumulators(run_dir):
        content = _plugin_tags(accumulator, "hparams").get(_HPARAMS_START_TAG)
        if content is None:
            continue
        session = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info
        for name, value in session.hparams.items():
            kind = value.WhichOneof("kind")
            if kind in ("number_value", "string_value", "bool_value"):
                hparams[name] = getattr(value, kind)
    return dict(sorted(hparams.items()))


def read_images(run_dir: str | Path) -> dict[str, list[LoggedImage]]:
    """Logged images per tag, sorted by step (at most ``SIZE_GUIDANCE[IMAGES]`` per tag and file, sampled)."""
    images: dict[str, list[LoggedImage]] = {}
    for accumulator in _accumulators(run_dir):
        for tag in accumulator.Tags()[event_accumulator.IMAGES]:
            images.setdefault(tag, []).extend(
                LoggedImage(event.step, event.encoded_image_string, event.width, event.height)
                for event in accumulator.Images(tag)
            )
    return {tag: sorted(events, key=lambda image: image.step) for tag, events in sorted(images.items())}


def read_texts(run_dir: str | Path) -> dict[str, list[tuple[int, str]]]:
    """Logged text per tag as ``[(step, text), ...]``; a logged list or table is joined line by line."""
    texts: dict[str, list[tuple[int, str]]] = {}
    for accumulator in _accumulators(run_dir):
        for tag in _plugin_tags(accumulator, "text"):
            for event in accumulator.Tensors(tag):
                array = tensor_util.make_ndarray(event.tensor_proto)
                lines = [item.decode("utf-8") if isinstance(item, bytes) else str(item) for item in array.reshape(-1)]
                texts.setdefault(tag, []).append((event.step, "\n".join(lines)))
    return {tag: sorted(events, key=lambda item: item[0]) for tag, events in sorted(texts.items())}


def select_tags(scalars: Scalars, tags_or_prefixes: list[str]) -> list[str]:
    """Expand ``tags_or_prefixes``: an entry ending in ``/`` (``"val/"``) selects every tag under it.

    Raises ``KeyError`` naming the entries that match nothing, so a typo is not a silently empty plot.
    """
    selected: list[str] = []
    unmatched = []
    for entry in tags_or_prefixes:
        matches = [tag for tag in scalars if tag.startswith(entry)] if entry.endswith("/") else [entry]
        matches = [tag for tag in matches if tag in scalars]
        if not matches:
            unmatched.append(entry)
        selected += [tag for tag in matches if tag not in selected]
    if unmatched:
        raise KeyError(f"no scalar tag matches {unmatched}; the run has {sorted(scalars)}")
    return selected


def plot_curves(
    scalars: Scalars, tags_or_prefixes: list[str], ax: Axes | None = None, title: str | None = None
) -> Axes:
    """Plot the selected scalar tags against the global step on one axes (new figure if ``ax`` is None).

    ``tags_or_prefixes`` as in :func:`select_tags`, e.g. ``["train/loss", "val/loss"]`` or ``["val/"]``.
    """
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.5))
    for tag in select_tags(scalars, tags_or_prefixes):
        steps, values = zip(*scalars[tag], strict=True)
        ax.plot(steps, values, marker="o", markersize=3, label=tag)
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
    ax.legend()
    if title:
        ax.set_title(title)
    return ax
