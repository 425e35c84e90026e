"""Small synthetic data sets written by the tests and the shared fixtures: IMDB-style reviews and ImageFolder trees."""

from __future__ import annotations

import random
from pathlib import Path

import torch
from PIL import Image

POSITIVE = ["great", "wonderful", "excellent", "moving", "superb"]
NEGATIVE = ["awful", "boring", "terrible", "dull", "waste"]
FILLER = ["the", "movie", "film", "plot", "actor", "scene", "was", "and", "a", "story"]


def write_tsv(path: Path, rows: list[tuple[str, str]], header: str = "label\trating\tid\ttext") -> Path:
    columns = header.split("\t")
    lines = [header]
    for i, (label, text) in enumerate(rows):
        values = {"label": label, "rating": "5", "id": str(i), "text": text}
        lines.append("\t".join(values.get(column, "x") for column in columns))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def synthetic_reviews(n: int, seed: int, labels: tuple[str, ...] = ("0", "1")) -> list[tuple[str, str]]:
    """Separable reviews: label 0 uses negative words, label 1 positive ones, any third label both."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = labels[i % len(labels)]
        cue = {"0": NEGATIVE, "1": POSITIVE}.get(label, NEGATIVE + POSITIVE if label == "mixed" else FILLER)
        words = [rng.choice(FILLER) for _ in range(rng.randint(5, 30))] + [rng.choice(cue) for _ in range(3)]
        rng.shuffle(words)
        rows.append((label, " ".join(words).capitalize() + ". <br /><br />A unique word" + f" w{seed}x{i}!"))
    return rows


def write_tiny_data(data: Path) -> Path:
    data.mkdir()
    write_tsv(data / "train.tsv", synthetic_reviews(200, seed=1))
    write_tsv(data / "test.tsv", synthetic_reviews(80, seed=2))
    return data


#: A distinct colour per class, so a test can tell from the pixels which folder an image came from.
COLOURS = {"bird": (220, 40, 40), "cat": (40, 220, 40), "dog": (40, 40, 220)}


def write_image(path: Path, colour: tuple[int, int, int], size: tuple[int, int] = (32, 32), seed: int = 0) -> None:
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randint(-20, 21, (3, *size), generator=generator)
    image = (torch.tensor(colour).view(3, 1, 1) + noise).clamp(0, 255).to(torch.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image.permute(1, 2, 0).numpy()).save(path, quality=95)


def make_tree(root: Path, classes: list[str], train_per_class: int = 12, test_per_class: int = 4) -> Path:
    """An ImageFolder tree ``root/{train,test}/<class>/i.png`` of solid-colour noisy images."""
    for split, count in (("train", train_per_class), ("test", test_per_class)):
        for class_index, name in enumerate(classes):
            for i in range(count):
                suffix = ".jpg" if i % 2 else ".png"
                write_image(root / split / name / f"{i}{suffix}", COLOURS[name], seed=class_index * 1000 + i)
    return root
