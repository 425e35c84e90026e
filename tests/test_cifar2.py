"""CIFAR-2 / ImageFolder task: DataModule, cache, bad input, nets, module, CLI."""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from synthetic_data import COLOURS, make_tree, write_image

from datamodules.cache import load_arrays
from datamodules.cifar2 import Cifar2DataModule, channel_stats, random_crop_flip
from datamodules.errors import DataError
from lightning_app import test as evaluate_cli
from lightning_app.cli import run_cli
from lightning_app.export import export
from lightning_app.models import Cifar2Module
from lightning_app.nets import ConvPoolNet, SmallResNet, TutorialCifarNet
from lightning_app.predict import main as predict_main
from lightning_app.registry import get_task


def ready(root: Path, cache_dir: Path, **kwargs) -> Cifar2DataModule:
    datamodule = Cifar2DataModule(data_dir=root, cache_dir=cache_dir, batch_size=8, **kwargs)
    datamodule.prepare_data()
    datamodule.setup("fit")
    return datamodule


@pytest.fixture(scope="module")
def bundled_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache folder for the tests on the bundled data, so its 12,000 JPEGs are decoded once per run."""
    return tmp_path_factory.mktemp("bundled-cache")


def dominant_channel(images: torch.Tensor) -> torch.Tensor:
    return images.float().mean(dim=(2, 3)).argmax(dim=1)


# -- DataModule ------------------------------------------------------------------
def test_datamodule_shapes_dtypes_and_label_mapping(tmp_path: Path) -> None:
    classes = ["dog", "bird", "cat"]  # folder creation order must not matter: labels follow sorted names
    dm = ready(make_tree(tmp_path / "data", classes), tmp_path / "cache", val_fraction=0.25)
    assert dm.class_names == ["bird", "cat", "dog"]
    assert dm.model_kwargs() == {"num_classes": 3}
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (27, 9, 12)

    images, labels = next(iter(dm.train_dataloader()))
    assert images.dtype == torch.uint8 and images.shape == (8, 3, 32, 32)
    assert labels.dtype == torch.int64 and labels.shape == (8,)
    for split in (dm.train_set, dm.val_set, dm.test_set):
        # bird is red (channel 0), cat green (1), dog blue (2): the label must say which folder it came from
        assert torch.equal(dominant_channel(split.images), split.labels)
    assert sorted(dm.test_set.labels.tolist()) == [0] * 4 + [1] * 4 + [2] * 4


def test_split_is_deterministic_and_seeded(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "data", ["bird", "cat"], train_per_class=20)
    first = ready(root, tmp_path / "cache", seed=7)
    again = ready(root, tmp_path / "cache", seed=7)
    other = ready(root, tmp_path / "cache", seed=8)
    assert torch.equal(first.val_set.images, again.val_set.images)
    assert torch.equal(first.train_set.labels, again.train_set.labels)
    assert not torch.equal(first.val_set.images, other.val_set.images)
    train_and_val = torch.cat([first.train_set.images, first.val_set.images]).flatten(1)
    assert torch.unique(train_and_val, dim=0).shape[0] == 40  # a partition: nothing shared, nothing lost


def test_normalisation_fitted_on_train_split_only(tmp_path: Path) -> None:
    dm = ready(make_tree(tmp_path / "data", ["bird", "cat", "dog"]), tmp_path / "cache")
    mean, std = channel_stats(dm.train_set.images)
    assert dm.preprocessing_state() == {
        "class_names": ["bird", "cat", "dog"],
        "mean": mean,
        "std": std,
        "image_size": 32,
    }
    expected = dm.train_set.images.double().div(255).mean(dim=(0, 2, 3))
    assert torch.allclose(torch.tensor(mean, dtype=torch.float64), expected, atol=1e-9)
    everything = torch.cat([dm.train_set.images, dm.val_set.images, dm.test_set.images])
    assert channel_stats(everything)[0] != mean

    dm.trainer = SimpleNamespace(training=False)
    batch = (dm.train_set.images[:5], dm.train_set.labels[:5])
    images, labels = dm.on_after_batch_transfer(batch, 0)
    assert images.dtype == torch.float32 and torch.equal(labels, batch[1])
    manual = (batch[0].float() / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    assert torch.allclose(images, manual, atol=1e-5)


def test_augmentation_only_while_training(tmp_path: Path) -> None:
    dm = ready(make_tree(tmp_path / "data", ["bird", "cat"]), tmp_path / "cache")
    batch = (dm.train_set.images, dm.train_set.labels)
    dm.trainer = SimpleNamespace(training=False)
    plain_a, _ = dm.on_after_batch_transfer(batch, 0)
    plain_b, _ = dm.on_after_batch_transfer(batch, 0)
    assert torch.equal(plain_a, plain_b)
    dm.trainer = SimpleNamespace(training=True)
    torch.manual_seed(0)
    augmented, _ = dm.on_after_batch_transfer(batch, 0)
    assert augmented.shape == plain_a.shape and not torch.equal(augmented, plain_a)

    off = ready(tmp_path / "data", tmp_path / "cache", augment=False)
    off.trainer = SimpleNamespace(training=True)
    assert torch.equal(off.on_after_batch_transfer(batch, 0)[0], plain_a)


def test_random_crop_flip_crops_and_flips_each_image() -> None:
    images = torch.arange(2 * 3 * 6 * 6, dtype=torch.float32).view(2, 3, 6, 6)
    generator = torch.Generator().manual_seed(0)
    out = random_crop_flip(images, padding=0, generator=generator)
    for original, result in zip(images, out, strict=True):  # no padding: the image itself or its mirror
        assert torch.equal(result, original) or torch.equal(result, original.flip(-1))
    padded = torch.nn.functional.pad(images, (2, 2, 2, 2))
    seen_shift = False
    for _ in range(10):
        out = random_crop_flip(images, padding=2, generator=generator)
        for index in range(2):
            windows = [
                padded[index, :, top : top + 6, left : left + 6] for top in range(5) for left in range(5)
            ]  # fmt: skip
            candidates = windows + [window.flip(-1) for window in windows]
            assert any(torch.equal(out[index], candidate) for candidate in candidates)
            seen_shift |= not (
                torch.equal(out[index], images[index]) or torch.equal(out[index], images[index].flip(-1))
            )
    assert seen_shift


def test_images_of_another_size_are_resized(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "data", ["bird", "cat"])
    write_image(root / "train" / "bird" / "large.png", COLOURS["bird"], size=(50, 40))
    dm = ready(root, tmp_path / "cache")
    assert dm.train_set.images.shape[1:] == (3, 32, 32)
    assert len(dm.train_set) + len(dm.val_set) == 25


# -- cache ---------------------------------------------------------------------------
def test_cache_reused_then_rebuilt_when_the_source_changes(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "data", ["bird", "cat"])
    cache = tmp_path / "cache"
    first = ready(root, cache)
    assert first.cache_reused is False and first.cache_path is not None and first.cache_path.parent == cache
    assert [path for path in cache.iterdir() if path.is_dir()] == [first.cache_path]
    assert (first.cache_path / "test_images.bin").is_file()  # raw arrays, memory-mapped when loaded

    first.setup("fit")  # safe to call twice
    second = ready(root, cache)
    assert second.cache_reused is True
    assert torch.equal(second.train_set.images, first.train_set.images)

    write_image(root / "train" / "cat" / "new.png", COLOURS["cat"], seed=99)
    third = ready(root, cache)
    assert third.cache_reused is False
    assert len(third.train_set) + len(third.val_set) == 25

    rewritten = root / "test" / "bird" / "0.png"
    write_image(rewritten, COLOURS["cat"], seed=5)  # same size, new content and mtime
    stat = rewritten.stat()
    os.utime(rewritten, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    fourth = ready(root, cache)
    assert fourth.cache_reused is False
    assert not torch.equal(fourth.test_set.images, third.test_set.images)
    assert load_arrays(fourth.cache_path, key={"stale": True}) is None  # keyed: another key is a miss


def test_bundled_data_is_extracted_once_and_decoded(bundled_cache: Path) -> None:
    dm = Cifar2DataModule(cache_dir=bundled_cache, batch_size=50)
    dm.prepare_data()
    dm.setup("fit")
    assert dm.class_names == ["airplane", "automobile"]
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (9000, 1000, 2000)
    assert dm.test_set.images.dtype == torch.uint8 and dm.test_set.images.shape == (2000, 3, 32, 32)
    assert torch.bincount(dm.test_set.labels).tolist() == [1000, 1000]
    assert len(dm.train_dataloader()) == 180
    # the archive extracted once, and the decoded images' cache entry
    folders = sorted(p.name.rsplit("-", 1)[0] for p in bundled_cache.iterdir() if p.is_dir())
    assert folders == ["cifar2-images", "imagefolder-cifar2"]
    again = Cifar2DataModule(cache_dir=bundled_cache)
    again.setup("fit")
    assert again.cache_reused is True


# -- bad input -------------------------------------------------------------------------
def test_corrupt_file_fails_naming_it(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "data", ["bird", "cat"])
    bad = root / "train" / "cat" / "notes.txt"
    bad.write_text("not an image")
    with pytest.raises(DataError, match=r"notes\.txt: not a readable image"):
        ready(root, tmp_path / "cache")
    truncated = root / "test" / "bird" / "broken.jpg"
    truncated.write_bytes((root / "test" / "bird" / "1.jpg").read_bytes()[:40])
    bad.unlink()
    with pytest.raises(DataError, match=r"broken\.jpg"):
        ready(root, tmp_path / "cache")


def test_corrupt_file_skipped_with_warning_when_asked(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "data", ["bird", "cat"])
    (root / "train" / "cat" / "empty.jpg").write_bytes(b"")
    with pytest.warns(UserWarning, match=r"empty\.jpg"):
        dm = ready(root, tmp_path / "cache", on_bad_image="skip")
    assert len(dm.train_set) + len(dm.val_set) == 24


def test_empty_class_folder_and_missing_train_are_clear_errors(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "data", ["bird", "cat"])
    (root / "train" / "dog").mkdir()
    with pytest.raises(DataError, match=r"train/dog: class folder is empty"):
        ready(root, tmp_path / "cache")

    (root / "train" / "dog").rmdir()
    (root / "test" / "fish").mkdir()
    write_image(root / "test" / "fish" / "0.png", COLOURS["dog"])
    with pytest.raises(DataError, match=r"\['fish'\] are not among the training classes"):
        ready(root, tmp_path / "cache")

    missing = tmp_path / "no_train"
    (missing / "test" / "bird").mkdir(parents=True)
    with pytest.raises(DataError, match=r"no_train/train: folder not found"):
        Cifar2DataModule(data_dir=missing, cache_dir=tmp_path / "cache").prepare_data()


# -- nets and module ----------------------------------------------------------------------
def test_tutorial_net_is_the_tutorials_layers() -> None:
    net = TutorialCifarNet()
    names = [name for name, _ in net.named_children()]
    assert names == [
        "conv1", "pool1", "conv2", "pool2", "dropout", "adaptive_pool", "flatten", "linear1", "relu", "linear2",
    ]  # fmt: skip
    assert (net.conv1.in_channels, net.conv1.out_channels, net.conv1.kernel_size) == (3, 32, (3, 3))
    assert (net.conv2.out_channels, net.conv2.kernel_size) == (64, (5, 5))
    assert sum(p.numel() for p in net.parameters()) == 54_273  # the tutorial's parameter count (its summary())
    assert net(torch.randn(4, 3, 32, 32)).shape == (4,)
    assert TutorialCifarNet(5)(torch.randn(4, 3, 32, 32)).shape == (4, 5)


@pytest.mark.parametrize("net_class", [ConvPoolNet, SmallResNet])
def test_default_nets_output_one_logit_for_two_classes(net_class: type[torch.nn.Module]) -> None:
    assert net_class(1)(torch.randn(2, 3, 32, 32)).shape == (2,)
    assert net_class(3, width=8)(torch.randn(2, 3, 32, 32)).shape == (2, 3)
    assert net_class(1, width=8)(torch.randn(2, 3, 48, 40)).shape == (2,)  # global pooling: any image size


def test_convpool_net_halves_the_resolution_per_stage() -> None:
    net = ConvPoolNet(1, width=16)
    features = net.stem(torch.randn(2, 3, 32, 32))
    assert features.shape == (2, 12, 32, 32)  # full resolution, 3/4 of the width
    shapes = []
    for stage in net.stages:
        features = stage(features)
        shapes.append(tuple(features.shape[1:]))
    assert shapes == [(16, 16, 16), (32, 8, 8), (64, 4, 4)]


@pytest.mark.parametrize(
    ("variant", "net_class"), [("default", ConvPoolNet), ("resnet", SmallResNet), ("tutorial", TutorialCifarNet)]
)
def test_each_variant_builds_its_network(variant: str, net_class: type[torch.nn.Module]) -> None:
    module = Cifar2Module(**get_task("cifar2").module_settings(variant))
    assert type(module.net) is net_class


def test_binary_module_loss_predictions_and_metrics() -> None:
    module = Cifar2Module(num_classes=2, net="tutorial", label_smoothing=0.0, preprocessing={"class_names": ["a", "b"]})
    images, target = torch.randn(6, 3, 32, 32), torch.tensor([0, 1, 1, 0, 1, 0])
    module.eval()  # no dropout: forward is deterministic
    logits = module(images)
    out = module.shared_step((images, target))
    assert out["preds"].shape == (6,) and ((out["preds"] >= 0) & (out["preds"] <= 1)).all()
    assert torch.allclose(out["loss"], torch.nn.functional.binary_cross_entropy(out["preds"], target.float()))
    assert logits.shape == (6,)
    assert set(module.val_metrics.keys()) == {"val/acc", "val/auroc", "val/f1"}


# -- end to end -------------------------------------------------------------------------------
def test_cli_end_to_end_on_a_slice_of_cifar2(
    tmp_path: Path, bundled_cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from lightning_app.fit import main

    argv = [
        "--task", "cifar2", "--max-epochs", "2", "--cache-dir", str(bundled_cache),
        "--limit-train-batches", "2", "--limit-val-batches", "1",
        "--batch-size", "64", "--log-dir", str(tmp_path / "runs"), "--no-progress-bar",
    ]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "cifar2 (default) finished" in printed and "test/auroc" in printed and "val/loss_best" in printed
    log_dir = tmp_path / "runs" / "cifar2" / "version_0"
    events = EventAccumulator(str(log_dir), size_guidance={"images": 0}).Reload()
    images = events.Tags()["images"]
    assert {"val/predictions", "val/confusion_matrix"} <= set(images)
    assert len(events.Images("val/confusion_matrix")) == 2  # one per validation epoch, none for the sanity check
    assert {"train/acc", "val/acc", "val/auroc", "test/acc", "test/auroc"} <= set(events.Tags()["scalars"])

    checkpoint = next((log_dir / "checkpoints").glob("best-*.ckpt"))
    payload = torch.load(checkpoint, weights_only=True)  # plain types only
    assert payload["preprocessing"]["class_names"] == ["airplane", "automobile"]
    assert payload["hyper_parameters"]["net"] == "convpool"

    argv[argv.index("--batch-size") + 1] = "50"
    assert main([*argv, "--model", "tutorial"]) == 0
    assert "cifar2 (tutorial) finished" in capsys.readouterr().out


def test_three_class_tree_trains_and_predicts_class_names(three_class_run) -> None:
    root, result = three_class_run
    assert {"test/acc", "test/auroc", "test/f1", "test/acc_bird", "test/acc_cat", "test/acc_dog"} <= set(result.metrics)
    assert "test/acc_per_class" not in result.metrics

    model = Cifar2Module.load_from_checkpoint(result.best_model_path)
    assert model.class_names == ["bird", "cat", "dog"]
    files = sorted((root / "test").glob("*/*"))
    predictions = model.predict_raw(files)
    assert len(predictions) == len(files)
    for prediction in predictions:
        assert prediction["label"] in {"bird", "cat", "dog"}
        assert 0.0 <= prediction["probability"] <= 1.0
        assert prediction["probability"] == max(prediction["probabilities"].values())
        assert sum(prediction["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    as_tensor = model.predict_raw(torch.stack([torch.full((3, 40, 40), 200, dtype=torch.uint8)] * 2))
    assert len(as_tensor) == 2 and as_tensor[0] == as_tensor[1]
    with pytest.raises(DataError, match=r"missing\.png"):
        model.predict_raw([root / "missing.png"])


# -- using the trained model: predict, test and export ----------------------------------------------


def test_raw_test_images_score_as_the_encoded_test_batches(scored_fresh, rows_match) -> None:
    """The ImageFolder test files scored by ``predict_raw`` from the checkpoint reloaded in a fresh process give, row
    for row, the probabilities of the DataModule's decoded, normalised test batches."""
    scored = scored_fresh["cifar2"]
    assert len(scored["raw"]) == 9
    rows_match(scored["encoded"], scored["raw"])
    rows_match(scored["encoded_outputs"], scored["raw_outputs"])


def test_predict_cli_classifies_files_and_folders_and_names_bad_files(three_class_run, tmp_path, capsys) -> None:
    root, result = three_class_run
    argv = ["--task", "cifar2", "--ckpt", result.best_model_path]
    folder = root / "test" / "cat"
    single = root / "test" / "dog" / "0.png"
    assert run_cli(predict_main, [*argv, str(folder), str(single), "--format", "json"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert [Path(r["path"]) for r in records] == [*sorted(folder.iterdir()), single]
    expected = Cifar2Module.load_from_checkpoint(result.best_model_path).predict_raw([Path(r["path"]) for r in records])
    assert [r["label"] for r in records] == [e["label"] for e in expected]
    assert [r["probability"] for r in records] == pytest.approx([e["probability"] for e in expected])

    not_an_image = tmp_path / "notes.png"
    not_an_image.write_text("not an image")
    assert run_cli(predict_main, [*argv, str(not_an_image)]) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "notes.png" in err[0]
    assert run_cli(predict_main, [*argv, str(tmp_path / "absent.jpg")]) == 2
    assert "absent.jpg: no such file or folder" in capsys.readouterr().err


def test_test_cli_on_a_custom_folder_reproduces_fit(three_class_run, capsys) -> None:
    root, result = three_class_run
    argv = ["--task", "cifar2", "--ckpt", result.best_model_path, "--data-dir", str(root), "--format", "json"]
    assert run_cli(evaluate_cli.main, argv) == 0
    metrics = json.loads(capsys.readouterr().out)
    test_keys = {key for key in result.metrics if key.startswith("test/")}
    assert {"test/loss", "test/acc", "test/auroc", "test/acc_dog"} <= test_keys and set(metrics) == test_keys
    for key, value in metrics.items():
        assert value == pytest.approx(result.metrics[key], abs=1e-5), key


@pytest.mark.filterwarnings("ignore:`torch.jit.\\w+` is deprecated:FutureWarning")
@pytest.mark.parametrize("output_format", ["torchscript", "onnx"])
def test_export_matches_the_module(three_class_run, tmp_path, output_format, run_exported) -> None:
    _, result = three_class_run
    target = export(result.best_model_path, output_format, tmp_path / "exported")
    module = Cifar2Module.load_from_checkpoint(result.best_model_path, map_location="cpu").eval()
    images = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        expected = module.predict_step((images,), 0)
    assert torch.allclose(run_exported(target, output_format, images), expected, atol=1e-5)
    assert json.loads((target / "preprocessing.json").read_text())["preprocessing"]["class_names"] == [
        "bird",
        "cat",
        "dog",
    ]
