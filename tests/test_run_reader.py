"""The readers of ``lightning_app.run_reader`` over event files written here by the real writers."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import pytest
import torch
from pytorch_lightning.loggers import TensorBoardLogger
from torch.utils.tensorboard import SummaryWriter

from lightning_app.run_reader import (
    event_files,
    last_values,
    plot_curves,
    read_hparams,
    read_images,
    read_scalars,
    read_texts,
    select_tags,
)

matplotlib.use("Agg")


def write_events(run_dir: Path, write) -> None:
    """One writer, hence one event file, per call (as Lightning opens one per fit, test or resume)."""
    with SummaryWriter(str(run_dir)) as writer:
        write(writer)


def test_read_scalars_merges_event_files_and_the_later_file_wins(tmp_path):
    def first(writer):
        for step in (0, 1, 2):
            writer.add_scalar("train/loss", 1.0 - step / 10, step)
        writer.add_scalar("val/loss", 0.9, 2)

    def resumed(writer):  # a resumed run re-logs step 2, then goes on
        writer.add_scalar("train/loss", 0.5, 2)
        writer.add_scalar("train/loss", 0.4, 3)
        writer.add_scalar("test/acc", 0.75, 3)

    write_events(tmp_path, first)
    write_events(tmp_path, resumed)
    assert len(event_files(tmp_path)) == 2

    scalars = read_scalars(tmp_path)
    assert sorted(scalars) == ["test/acc", "train/loss", "val/loss"]
    assert [step for step, _ in scalars["train/loss"]] == [0, 1, 2, 3]
    assert [value for _, value in scalars["train/loss"]] == pytest.approx([1.0, 0.9, 0.5, 0.4])
    assert scalars["val/loss"] == [(2, pytest.approx(0.9))]
    assert last_values(scalars, "t") == {"test/acc": pytest.approx(0.75), "train/loss": pytest.approx(0.4)}


def test_missing_or_empty_run_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such run folder"):
        read_scalars(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="no TensorBoard event files"):
        read_scalars(tmp_path)


def test_read_hparams_as_lightning_logs_them(tmp_path):
    logger = TensorBoardLogger(str(tmp_path), name="", version="", default_hp_metric=False)
    logger.log_hyperparams({"model/lr": 0.01, "model/net": "mlp", "deterministic": True}, metrics={"hp/acc": 0.5})
    logger.finalize("success")
    hparams = read_hparams(logger.log_dir)
    assert hparams["model/lr"] == pytest.approx(0.01)
    assert hparams["model/net"] == "mlp"
    assert hparams["deterministic"] in (True, 1.0)  # torch's writer stores booleans as numbers
    assert read_scalars(logger.log_dir)["hp/acc"] == [(0, pytest.approx(0.5))]


def test_a_run_without_hparams_images_or_text_reads_as_empty(tmp_path):
    write_events(tmp_path, lambda writer: writer.add_scalar("train/loss", 1.0, 0))
    assert read_hparams(tmp_path) == {}
    assert read_images(tmp_path) == {}
    assert read_texts(tmp_path) == {}


def test_read_images_and_texts(tmp_path):
    def write(writer):
        writer.add_image("val/samples", torch.zeros(3, 4, 5), 1)
        writer.add_image("val/samples", torch.ones(3, 4, 5), 0)
        writer.add_text("val/reviews", "a *great* film", 1)

    write_events(tmp_path, write)
    images = read_images(tmp_path)
    assert list(images) == ["val/samples"]
    assert [image.step for image in images["val/samples"]] == [0, 1]
    first = images["val/samples"][0]
    assert (first.width, first.height) == (5, 4)
    assert first.png.startswith(b"\x89PNG")
    # torch's writer files text under "<tag>/text_summary"; the reader keeps tags as TensorBoard shows them
    assert read_texts(tmp_path) == {"val/reviews/text_summary": [(1, "a *great* film")]}


def test_select_tags_expands_prefixes_and_rejects_typos():
    scalars = {"train/loss": [(0, 1.0)], "val/loss": [(0, 1.0)], "val/acc": [(0, 0.5)], "validation": [(0, 0.0)]}
    assert select_tags(scalars, ["train/loss", "val/"]) == ["train/loss", "val/loss", "val/acc"]
    assert select_tags(scalars, ["val/loss", "val/"]) == ["val/loss", "val/acc"]
    with pytest.raises(KeyError, match="train/acc"):
        select_tags(scalars, ["train/acc", "val/"])
    with pytest.raises(KeyError, match="test/"):
        select_tags(scalars, ["test/"])


def test_plot_curves_draws_one_line_per_tag_on_the_given_axes():
    import matplotlib.pyplot as plt

    scalars = {"train/loss": [(4, 0.7), (9, 0.5)], "val/loss": [(4, 0.6), (9, 0.55)], "val/acc": [(4, 0.7)]}
    figure, ax = plt.subplots()
    returned = plot_curves(scalars, ["train/loss", "val/loss"], ax=ax, title="loss")
    assert returned is ax
    assert [line.get_label() for line in ax.get_lines()] == ["train/loss", "val/loss"]
    assert list(ax.get_lines()[0].get_xdata()) == [4, 9]
    assert list(ax.get_lines()[1].get_ydata()) == pytest.approx([0.6, 0.55])
    assert ax.get_title() == "loss"
    plt.close(figure)
