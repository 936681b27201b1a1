"""Tiny datasets written by the tests themselves (no network): IDX files read through torchvision's
real MNIST loader, and a class-per-folder PNG set."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SHARED_DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"


def write_idx(path: Path, array: np.ndarray) -> None:
    """IDX format: magic (0, 0, dtype 0x08 = ubyte, ndim), big-endian dims, raw bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(struct.pack(">BBBB", 0, 0, 0x08, array.ndim))
        f.write(struct.pack(f">{array.ndim}I", *array.shape))
        f.write(array.astype(np.uint8).tobytes())


def class_images(labels: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """Noisy images whose bright band depends on the class, so the classes are learnable."""
    images = rng.integers(0, 60, size=(len(labels), size, size))
    for i, c in enumerate(labels):
        row = int(c) * size // 10
        images[i, row : row + max(1, size // 10), :] = 230
    return images.astype(np.uint8)


def make_mnist_like(root: Path, folder: str = "MNIST", per_class_train: int = 12, per_class_test: int = 4,
                    num_classes: int = 10, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for prefix, per_class in (("train", per_class_train), ("t10k", per_class_test)):
        labels = np.repeat(np.arange(num_classes), per_class)
        rng.shuffle(labels)
        write_idx(root / folder / "raw" / f"{prefix}-images-idx3-ubyte", class_images(labels, 28, rng))
        write_idx(root / folder / "raw" / f"{prefix}-labels-idx1-ubyte", labels)
    return root


def make_folder_set(root: Path, classes=("cancer", "normal"), train: int = 8, test: int = 4, size: int = 16) -> Path:
    rng = np.random.default_rng(1)
    for split, n in (("train", train), ("test", test)):
        for c, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                img = rng.integers(0, 80, size=(size, size, 3)).astype(np.uint8)
                img[:, :, c % 3] = 200
                Image.fromarray(img).save(folder / f"{i}.png")
    return root


@pytest.fixture
def mnist_root(tmp_path: Path) -> Path:
    return make_mnist_like(tmp_path / "data")


@pytest.fixture
def folder_root(tmp_path: Path) -> Path:
    return make_folder_set(tmp_path / "ocid")


@pytest.fixture
def fashion_root() -> Path:
    if not (SHARED_DATASETS / "FashionMNIST" / "raw" / "train-images-idx3-ubyte").is_file():
        pytest.skip("real Fashion-MNIST files not present")
    return SHARED_DATASETS
