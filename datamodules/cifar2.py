"""CIFAR-2 and any ImageFolder tree (images, binary or multi-class).

The layout is torchvision's ImageFolder, one folder per class::

    <root>/train/<class_name>/*.jpg|png|...
    <root>/test/<class_name>/*

The classes are the sub-folders of ``train/`` (sorted by name); ``test/`` may
hold a subset of them. The bundled data is CIFAR-10's airplane and automobile
classes (5000 + 5000 train, 1000 + 1000 test 32x32 JPEGs), shipped as
``data/cifar2.tar.gz``.

Every image is decoded once into a ``uint8[N, 3, S, S]`` tensor that is cached
on disk (see :func:`datamodules.image_folder.decode_files` and :class:`Cifar2DataModule`); the
batches are then sliced out of memory, and the uint8 -> float conversion, the
normalisation and the training augmentation (random crop with padding,
horizontal flip) run on whole batches after they have moved to the device.

Preprocessing is a set of pure functions, so a checkpoint can score new image
files with the same code (:func:`load_images`, :func:`normalize_images`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from filelock import FileLock

from datamodules.archives import safe_extract
from datamodules.base import PACKAGED_DATA_DIR, TaskDataModule, train_val_split
from datamodules.batches import BatchIndexedTensors
from datamodules.cache import cached_tensors, default_cache_dir, file_digest
from datamodules.errors import DataError
from datamodules.image_folder import (
    OnBadImage,
    decode_files,
    list_class_folders,
    list_image_files,
    read_image,
    resize_images,
    source_fingerprint,
)

PACKAGED_ARCHIVE = PACKAGED_DATA_DIR / "cifar2.tar.gz"
#: Folder inside the archive that holds ``train/`` and ``test/``.
ARCHIVE_ROOT = "cifar2"
#: Bumped when the decoded cache format changes, so old caches are rebuilt (2: memory-mapped array folder).
CACHE_FORMAT = 2
SPLIT_FOLDERS = ("train", "test")


# -- raw images for a trained model -----------------------------------------------
def load_images(images: Sequence[str | Path] | torch.Tensor, image_size: int) -> torch.Tensor:
    """Raw images -> ``uint8[N, 3, S, S]``: file paths are decoded, uint8 tensors resized if needed."""
    if isinstance(images, torch.Tensor):
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected uint8 images of shape [N, 3, H, W], got {images.dtype} {list(images.shape)}")
        return images if images.shape[-2:] == (image_size, image_size) else resize_images(images, image_size)
    if isinstance(images, (str, Path)):
        raise TypeError("pass a list of image paths, not a single path")
    decoded = [read_image(path, image_size) for path in images]
    return torch.stack(decoded) if decoded else torch.empty((0, 3, image_size, image_size), dtype=torch.uint8)


# -- batched preprocessing ------------------------------------------------------
def channel_stats(images: torch.Tensor, chunk: int = 4096) -> tuple[list[float], list[float]]:
    """Per-channel mean and standard deviation of ``uint8[N, 3, H, W]`` images, on the 0-1 scale."""
    total = torch.zeros(3, dtype=torch.float64)
    total_sq = torch.zeros(3, dtype=torch.float64)
    for start in range(0, images.shape[0], chunk):
        block = images[start : start + chunk].to(torch.float64).div_(255.0)
        total += block.sum(dim=(0, 2, 3))
        total_sq += block.square().sum(dim=(0, 2, 3))
    count = images.shape[0] * images.shape[2] * images.shape[3]
    mean = total / count
    std = (total_sq / count - mean.square()).clamp_min(1e-12).sqrt()
    return mean.tolist(), std.tolist()


def normalize_images(
    images: torch.Tensor, mean: Sequence[float] | torch.Tensor, std: Sequence[float] | torch.Tensor
) -> torch.Tensor:
    """``uint8[B, 3, H, W] -> float32[B, 3, H, W]``: scaled to 0-1, then standardised per channel.

    ``mean`` and ``std`` may be float32 tensors already on the images' device (no copy per call).
    """
    mean_t = torch.as_tensor(mean, dtype=torch.float32, device=images.device).view(1, -1, 1, 1)
    std_t = torch.as_tensor(std, dtype=torch.float32, device=images.device).view(1, -1, 1, 1)
    return (images.float().div_(255.0) - mean_t).div_(std_t)


def random_crop_flip(images: torch.Tensor, padding: int = 4, generator: torch.Generator | None = None) -> torch.Tensor:
    """Per image: a random ``H x W`` crop of the zero-padded image and a horizontal flip with probability 1/2.

    Works on a whole batch ``[B, C, H, W]`` of any dtype at once, on its device.
    """
    batch, channels, height, width = images.shape
    device = images.device
    padded = F.pad(images, (padding, padding, padding, padding))
    top = torch.randint(0, 2 * padding + 1, (batch, 1), device=device, generator=generator)
    left = torch.randint(0, 2 * padding + 1, (batch, 1), device=device, generator=generator)
    rows = top + torch.arange(height, device=device)  # [B, H]
    cols = left + torch.arange(width, device=device)  # [B, W]
    flip = torch.rand(batch, 1, device=device, generator=generator) < 0.5
    cols = torch.where(flip, cols.flip(1), cols)
    index_b = torch.arange(batch, device=device).view(batch, 1, 1, 1)
    index_c = torch.arange(channels, device=device).view(1, channels, 1, 1)
    return padded[index_b, index_c, rows.view(batch, 1, height, 1), cols.view(batch, 1, 1, width)]


class BatchedTensorDataset(BatchIndexedTensors):
    """``(images uint8[N, 3, S, S], labels int64[N])``, fetched a whole batch per indexing operation."""

    @property
    def images(self) -> torch.Tensor:
        return self.tensors[0]

    @property
    def labels(self) -> torch.Tensor:
        return self.tensors[1]


# -- the packaged archive --------------------------------------------------------
def extract_packaged_archive(cache_dir: Path, archive: Path = PACKAGED_ARCHIVE) -> Path:
    """Extract the bundled archive once into ``cache_dir`` and return the folder holding ``train/`` and ``test/``.

    The target folder is named after the archive's SHA-256, so a new archive is
    extracted afresh. Extraction is :func:`datamodules.archives.safe_extract`
    (members checked, staging folder renamed into place), under a file lock so
    concurrent processes extract once.
    """
    digest = file_digest(archive)
    target = cache_dir / f"cifar2-images-{digest[:16]}"
    cache_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if not (target / ARCHIVE_ROOT / "train").is_dir():
            safe_extract(archive, target)
    return target / ARCHIVE_ROOT


class Cifar2DataModule(TaskDataModule):
    """Images in an ImageFolder tree (default: the bundled CIFAR-2, airplane vs automobile).

    A batch as the DataLoader yields it is ``(images uint8[B, 3, S, S], labels int64[B])``;
    after the transfer to the device (:meth:`on_after_batch_transfer`) it is
    ``(images float32[B, 3, S, S] normalised per channel, labels int64[B])``, with
    random crop (zero padding ``crop_padding``) and horizontal flip applied while
    training when ``augment``. Labels index :attr:`class_names` (sorted folder names).

    Decoding happens once: the decoded tensors are cached in ``cache_dir``
    (default ``datamodules.cache.default_cache_dir()``) in a folder named after
    the source folder (raw arrays, memory-mapped when loaded; see :mod:`datamodules.cache`),
    keyed by every source file's path, class, size and modification time (see
    :func:`source_fingerprint`) and the image size, so the cache is rebuilt when
    files are added, removed, renamed or rewritten.
    The cache is written atomically and verified by SHA-256 when loaded. The test
    images stay memory-mapped; the train and validation parts are gathered from it.

    A file that is not a readable image fails ``setup`` with a :class:`DataError`
    naming it, or with ``on_bad_image="skip"`` is skipped with a warning naming
    it. A missing ``train/`` or ``test/`` folder, a class folder without files
    and a test class unknown to ``train/`` are :class:`DataError` s.

    Args:
        data_dir: folder holding ``train/<class>/`` and ``test/<class>/`` (default: bundled CIFAR-2).
        cache_dir: where the decoded tensors (and the extracted bundled archive) go.
        batch_size: images per batch.
        num_workers: DataLoader workers; the data are in memory, so 0 is fastest.
        seed: seed of the train/validation split.
        val_fraction: share of ``train/`` held out for validation.
        augment: random crop and horizontal flip on training batches.
        crop_padding: zero padding (pixels) of the random crop.
        image_size: side length every image is resized to if it differs (CIFAR: 32).
        on_bad_image: ``"error"`` (default) or ``"skip"`` for unreadable files.
    """

    packaged_subdir = ""

    def __init__(
        self,
        data_dir: str | Path | None = None,
        cache_dir: str | Path | None = None,
        batch_size: int = 256,
        num_workers: int = 0,
        seed: int = 42,
        val_fraction: float = 0.1,
        augment: bool = True,
        crop_padding: int = 4,
        image_size: int = 32,
        on_bad_image: OnBadImage = "error",
    ) -> None:
        super().__init__(data_dir)
        self.uses_packaged_data = data_dir is None
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"val_fraction must be between 0 and 1, got {val_fraction}")
        if on_bad_image not in ("error", "skip"):
            raise ValueError(f"on_bad_image must be 'error' or 'skip', got {on_bad_image!r}")
        if image_size < 1 or crop_padding < 0:
            raise ValueError("image_size must be positive and crop_padding non-negative")
        self.save_hyperparameters(ignore=["data_dir", "cache_dir"], logger=False)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.class_names: list[str] = []
        self.mean: list[float] = []
        self.std: list[float] = []
        self._stats_on_device: tuple[torch.Tensor, torch.Tensor] | None = None
        #: After ``setup``: the cache file, and whether it was reused rather than rebuilt.
        self.cache_path: Path | None = None
        self.cache_reused: bool | None = None

    # -- data preparation -------------------------------------------------------
    def image_root(self) -> Path:
        """The folder holding ``train/`` and ``test/`` (extracting the bundled archive if needed)."""
        if self.uses_packaged_data:
            return extract_packaged_archive(self.cache_dir)
        if not self.data_dir.is_dir():
            raise DataError(self.data_dir, "--data-dir folder not found")
        return self.data_dir

    def prepare_data(self) -> None:
        root = self.image_root()
        list_class_folders(root / "train")
        list_class_folders(root / "test")

    def _decoded(self, root: Path) -> tuple[dict[str, torch.Tensor], list[str]]:
        class_names = list_class_folders(root / "train")
        if len(class_names) < 2:
            raise DataError(root / "train", f"only one class folder {class_names}; a classifier needs two or more")
        files = {split: list_image_files(root / split, class_names) for split in SPLIT_FOLDERS}
        key = {
            "format": CACHE_FORMAT,
            "image_size": self.hparams.image_size,
            "on_bad_image": self.hparams.on_bad_image,
            "class_names": class_names,
            **{split: source_fingerprint(files[split], root) for split in SPLIT_FOLDERS},
        }
        root_id = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:16]
        self.cache_path = self.cache_dir / f"imagefolder-{root.resolve().name}-{root_id}"

        def build() -> dict[str, torch.Tensor]:
            tensors = {}
            for split in SPLIT_FOLDERS:
                decoded = decode_files(files[split], self.hparams.image_size, self.hparams.on_bad_image)
                if decoded["labels"].numel() == 0:
                    raise DataError(root / split, "no readable images")
                tensors[f"{split}_images"] = decoded["images"]
                tensors[f"{split}_labels"] = decoded["labels"]
            return tensors

        tensors, self.cache_reused = cached_tensors(self.cache_path, key, build)
        return tensors, class_names

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        root = self.image_root()
        tensors, class_names = self._decoded(root)
        images, labels = tensors["train_images"], tensors["train_labels"]
        # Kept in shuffled order: a slice of the validation set (limit_val_batches) then holds every class.
        train_index, val_index = train_val_split(
            images.shape[0], self.hparams.val_fraction, self.hparams.seed, root / "train", "image"
        )
        train_images = images[train_index]
        self.class_names = class_names
        self.mean, self.std = channel_stats(train_images)
        self.train_set = BatchedTensorDataset(train_images, labels[train_index])
        self.val_set = BatchedTensorDataset(images[val_index], labels[val_index])
        self.test_set = BatchedTensorDataset(tensors["test_images"], tensors["test_labels"])

    # -- loaders and device-side preprocessing -----------------------------------
    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        if isinstance(batch, torch.Tensor):
            return batch  # the model's example input (model summary), already in the network's format
        images, labels = batch
        trainer = self.trainer
        if self.hparams.augment and trainer is not None and trainer.training:
            images = random_crop_flip(images, self.hparams.crop_padding)
        return normalize_images(images, *self._channel_stats_on(images.device)), labels

    def _channel_stats_on(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        # Built once per device: a tensor made from a list every batch is a blocking host-to-GPU copy per step.
        if self._stats_on_device is None or self._stats_on_device[0].device != device:
            self._stats_on_device = (
                torch.tensor(self.mean, dtype=torch.float32, device=device),
                torch.tensor(self.std, dtype=torch.float32, device=device),
            )
        return self._stats_on_device

    # -- what the model needs ----------------------------------------------------
    def model_kwargs(self) -> dict[str, Any]:
        if not self.class_names:
            raise RuntimeError("call setup() before model_kwargs()")
        return {"num_classes": len(self.class_names)}

    def preprocessing_state(self) -> dict[str, Any]:
        if not self.class_names:
            raise RuntimeError("call setup() before preprocessing_state()")
        return {
            "class_names": list(self.class_names),
            "mean": list(self.mean),
            "std": list(self.std),
            "image_size": self.hparams.image_size,
        }
