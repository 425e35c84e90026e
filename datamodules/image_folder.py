"""Reading an ImageFolder tree: one folder of images per class, decoded to ``uint8`` tensors.

The layout is torchvision's ImageFolder::

    <root>/<split>/<class_name>/*.jpg|png|...

:func:`list_class_folders` and :func:`list_image_files` find the classes and files,
:func:`source_fingerprint` records them for a cache key, :func:`read_image` decodes one file and
:func:`decode_files` a whole split (see :class:`datamodules.cifar2.Cifar2DataModule`).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from PIL import Image

from datamodules.errors import DataError

OnBadImage = Literal["error", "skip"]


def list_class_folders(split_dir: Path) -> list[str]:
    """Names of the class sub-folders of ``split_dir``, sorted; hidden folders are ignored."""
    if not split_dir.is_dir():
        raise DataError(split_dir, "folder not found (expected <data-dir>/train/<class>/ and <data-dir>/test/<class>/)")
    classes = sorted(entry.name for entry in split_dir.iterdir() if entry.is_dir() and not entry.name.startswith("."))
    if not classes:
        raise DataError(split_dir, "no class sub-folders (expected one folder of images per class)")
    return classes


def list_image_files(split_dir: Path, class_names: Sequence[str]) -> list[tuple[Path, int]]:
    """``(file, class index)`` for every non-hidden file of every class folder under ``split_dir``.

    Raises :class:`DataError` for a class folder that is missing or has no files,
    or a class folder not in ``class_names``.
    """
    present = list_class_folders(split_dir)
    unknown = sorted(set(present) - set(class_names))
    if unknown:
        raise DataError(split_dir, f"class folder(s) {unknown} are not among the training classes {list(class_names)}")
    files: list[tuple[Path, int]] = []
    for index, name in enumerate(class_names):
        class_dir = split_dir / name
        if not class_dir.is_dir():
            continue  # a test split may lack a class
        entries = sorted(p for p in class_dir.iterdir() if p.is_file() and not p.name.startswith("."))
        if not entries:
            raise DataError(class_dir, "class folder is empty (expected image files)")
        files.extend((path, index) for path in entries)
    return files


def source_fingerprint(files: Sequence[tuple[Path, int]], root: Path) -> list[list[Any]]:
    """What the cache key records of the source files: relative path, class, size and mtime (ns) of each.

    Adding, removing, renaming or moving a file, and rewriting it (which updates
    its mtime), are detected; an in-place edit that keeps both the size and the
    modification time is not.
    """
    rows = []
    for path, label in files:
        stat = path.stat()
        rows.append([path.relative_to(root).as_posix(), label, stat.st_size, stat.st_mtime_ns])
    return rows


def read_image(path: str | Path, image_size: int) -> torch.Tensor:
    """Decode one image file to ``uint8[3, image_size, image_size]`` RGB with Pillow.

    Any format Pillow reads works (JPEG, PNG, BMP, GIF, WebP, ...); grey-scale (also
    16-bit), palette and RGBA images are converted to RGB (alpha dropped). An image of
    another size is resized to ``image_size x image_size`` (bilinear with antialiasing,
    aspect ratio not kept). Raises :class:`DataError` naming the file if it cannot be
    read or decoded, and for a decompression bomb: an image of more than twice
    ``PIL.Image.MAX_IMAGE_PIXELS`` pixels (about 179 million by default) is refused from
    its header, before its pixels are decoded (Pillow warns between one and two times).
    """
    path = Path(path)
    try:
        with Image.open(path) as opened:
            rgb = opened.convert("RGB")
            pixels = bytearray(rgb.tobytes())
    except FileNotFoundError as err:
        raise DataError(path, "file not found") from err
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        # Pillow raises UnidentifiedImageError (an OSError) for non-images and OSError for truncated files
        raise DataError(path, f"not a readable image ({err})") from err
    image = torch.frombuffer(pixels, dtype=torch.uint8).view(rgb.height, rgb.width, 3).permute(2, 0, 1)
    if image.shape[-2:] != (image_size, image_size):
        image = resize_images(image.unsqueeze(0), image_size).squeeze(0)
    return image.contiguous()


def resize_images(images: torch.Tensor, image_size: int) -> torch.Tensor:
    """``uint8[N, 3, H, W] -> uint8[N, 3, image_size, image_size]`` (bilinear, antialiased)."""
    resized = F.interpolate(images.float(), size=(image_size, image_size), mode="bilinear", antialias=True)
    return resized.round_().clamp_(0, 255).to(torch.uint8)


def decode_files(
    files: Sequence[tuple[Path, int]], image_size: int, on_bad_image: OnBadImage = "error"
) -> dict[str, torch.Tensor]:
    """Decode ``files`` into ``{"images": uint8[N, 3, S, S], "labels": int64[N]}``.

    A file that is not a readable image raises :class:`DataError` naming it, or,
    with ``on_bad_image="skip"``, is left out with a warning naming it.
    """
    images = torch.empty((len(files), 3, image_size, image_size), dtype=torch.uint8)
    labels = torch.empty(len(files), dtype=torch.long)
    count = 0
    for path, label in files:
        try:
            images[count] = read_image(path, image_size)
        except DataError as err:
            if on_bad_image == "error":
                raise
            warnings.warn(f"skipping {err}", stacklevel=2)
            continue
        labels[count] = label
        count += 1
    return {"images": images[:count].clone(), "labels": labels[:count].clone()}
