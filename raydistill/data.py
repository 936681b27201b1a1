"""Datasets as uint8 arrays loaded once: torchvision sets and any class-per-folder image set.

Images stay uint8 (N, C, H, W) in numpy so that Ray's object store shares them between trials
without copies; they are scaled to [0, 1] on the device, batch by batch.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from sklearn.model_selection import train_test_split

from raydistill.config import FOLDER_PREFIX, ConfigError, is_folder

log = logging.getLogger(__name__)

IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
EXPECTED_FILES = {
    "mnist": ("MNIST/raw", IDX_FILES),
    "fashion-mnist": ("FashionMNIST/raw", IDX_FILES),
    "cifar10": ("cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch", "batches.meta")),
    "cifar100": ("cifar-100-python", ("train", "test", "meta")),
}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


@dataclass(frozen=True)
class Split:
    images: np.ndarray  # uint8 (N, C, H, W)
    labels: np.ndarray  # int64 (N,)

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: np.ndarray) -> "Split":
        return Split(self.images[index], self.labels[index])

    def class_counts(self, num_classes: int) -> list[int]:
        return np.bincount(self.labels, minlength=num_classes).tolist()


@dataclass(frozen=True)
class Dataset:
    name: str
    label: str
    classes: list[str]
    train: Split
    test: Split
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.train.images.shape[1:])  # type: ignore[return-value]

    def limit_train(self, limit: int | None, seed: int) -> "Dataset":
        """A stratified, seeded subset of the training split; the test split stays whole."""
        if limit is None or limit >= len(self.train):
            return self
        if limit < self.num_classes:
            raise ConfigError(f"train-limit {limit} is smaller than the number of classes ({self.num_classes})")
        index, _ = train_test_split(
            np.arange(len(self.train)), train_size=limit, stratify=self.train.labels, random_state=seed
        )
        train = self.train.subset(np.sort(index))
        return Dataset(self.name, self.label, self.classes, train, self.test, *channel_stats(train.images))

    def meta(self) -> dict:
        return {"dataset": self.name, "classes": list(self.classes), "mean": list(self.mean), "std": list(self.std)}

    def to(self, device: torch.device) -> "DeviceData":
        """Both splits as tensors on the device, images still uint8. On the CPU the tensors share
        the arrays' memory (read-only in Ray's object store; nothing here writes to them)."""
        def t(a: np.ndarray) -> torch.Tensor:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
                return torch.from_numpy(a).to(device)

        return DeviceData(t(self.train.images), t(self.train.labels), t(self.test.images), t(self.test.labels))


@dataclass(frozen=True)
class DeviceData:
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


def dataset_label(name: str) -> str:
    """Short display name: the dataset name, or a folder set's base name in lower case."""
    return Path(name[len(FOLDER_PREFIX):]).name.lower() if is_folder(name) else name


def load(name: str, root: str | Path, *, download: bool = False, resize: int | None = None) -> Dataset:
    """Load both splits of a dataset into uint8 arrays; raises ConfigError on missing or bad files."""
    if is_folder(name):
        train, test, classes = _load_folder(Path(name[len(FOLDER_PREFIX):]).expanduser(), resize)
    else:
        train, test, classes = _load_torchvision(name, Path(root).expanduser(), download, resize)
    log.info("loaded %s: %d train, %d test, %d classes, shape %s", name, len(train), len(test), len(classes), train.images.shape[1:])
    return Dataset(name, dataset_label(name), classes, train, test, *channel_stats(train.images))


def channel_stats(images: np.ndarray, chunk: int = 4096) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images in [0, 1] units, accumulated in float64 chunks."""
    total = np.zeros(images.shape[1])
    total_sq = np.zeros(images.shape[1])
    for start in range(0, len(images), chunk):
        block = images[start : start + chunk].astype(np.float64) / 255.0
        total += block.sum(axis=(0, 2, 3))
        total_sq += (block**2).sum(axis=(0, 2, 3))
    count = len(images) * images.shape[2] * images.shape[3]
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean**2, 1e-12))
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)


def _load_torchvision(name: str, root: Path, download: bool, resize: int | None) -> tuple[Split, Split, list[str]]:
    from torchvision import datasets

    folder, files = EXPECTED_FILES[name]
    missing = [f for f in files if not (root / folder / f).is_file()]
    if missing and not download:
        raise ConfigError(
            f"{name}: missing {', '.join(missing)} in {root / folder}; put the files there "
            "(the layout torchvision uses) or pass --download where the internet is reachable"
        )
    cls = {"mnist": datasets.MNIST, "fashion-mnist": datasets.FashionMNIST,
           "cifar10": datasets.CIFAR10, "cifar100": datasets.CIFAR100}[name]
    splits = []
    for train in (True, False):
        ds = cls(str(root), train=train, download=download)
        images = torch.as_tensor(np.asarray(ds.data))
        images = images.unsqueeze(1) if images.ndim == 3 else images.permute(0, 3, 1, 2)
        if resize is not None:
            images = _resize(images, resize)
        splits.append(Split(images.contiguous().numpy(), np.asarray(ds.targets, dtype=np.int64)))
    return splits[0], splits[1], list(ds.classes)


def _resize(images: torch.Tensor, size: int) -> torch.Tensor:
    from torchvision.transforms.v2.functional import resize as tv_resize

    return tv_resize(images, [size, size], antialias=True)


def _load_folder(root: Path, resize: int | None) -> tuple[Split, Split, list[str]]:
    """A class-per-folder set with root/train/<class>/* and root/test/<class>/* (e.g. OCID)."""
    if not root.is_dir():
        raise ConfigError(f"folder dataset {root} does not exist")
    for split in ("train", "test"):
        if not (root / split).is_dir():
            raise ConfigError(f"folder dataset {root} needs {split}/<class>/<image> subfolders; {root / split} is missing")
    classes = sorted(p.name for p in (root / "train").iterdir() if p.is_dir())
    if len(classes) < 2:
        raise ConfigError(f"folder dataset {root / 'train'} has {len(classes)} class folder(s); at least 2 are needed")
    test_classes = sorted(p.name for p in (root / "test").iterdir() if p.is_dir())
    if test_classes != classes:
        raise ConfigError(f"folder dataset: test classes {test_classes} differ from train classes {classes}")
    splits = [_read_images(root / split, classes, resize) for split in ("train", "test")]
    if splits[0].images.shape[1:] != splits[1].images.shape[1:]:
        raise ConfigError(f"folder dataset {root}: train and test images differ in size; pass --resize N")
    return splits[0], splits[1], classes


def _read_images(split_dir: Path, classes: list[str], resize: int | None) -> Split:
    images: list[np.ndarray] = []
    labels: list[int] = []
    for index, name in enumerate(classes):
        files = sorted(p for p in (split_dir / name).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise ConfigError(f"class folder {split_dir / name} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        for path in files:
            try:
                with Image.open(path) as im:
                    im = im.convert("RGB")
                    if resize is not None:
                        im = im.resize((resize, resize), Image.Resampling.BILINEAR)
                    images.append(np.asarray(im, dtype=np.uint8).transpose(2, 0, 1))
            except (UnidentifiedImageError, OSError) as err:
                raise ConfigError(f"cannot read image {path}: {err}") from None
            labels.append(index)
    shapes = {im.shape for im in images}
    if len(shapes) > 1:
        raise ConfigError(f"images in {split_dir} have different sizes {sorted(shapes)[:3]}...; pass --resize N")
    return Split(np.stack(images), np.asarray(labels, dtype=np.int64))
