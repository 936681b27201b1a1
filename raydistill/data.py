"""Datasets as uint8 arrays loaded once: torchvision sets and any class-per-folder image set.

Images stay uint8 (N, C, H, W) in numpy so that Ray's object store shares them between trials
without copies; they are scaled to [0, 1] on the device, batch by batch.
"""

from __future__ import annotations

import errno
import logging
import struct
import tarfile
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from sklearn.model_selection import train_test_split

from raydistill.config import FOLDER_PREFIX, ConfigError, is_folder
from raydistill.registry import DATASETS

log = logging.getLogger(__name__)

IDX_SPLITS = {True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
              False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
IDX_FILES = IDX_SPLITS[True] + IDX_SPLITS[False]
IDX_TYPES = {0x08: "uint8", 0x09: "int8", 0x0B: "int16", 0x0C: "int32", 0x0D: "float32", 0x0E: "float64"}


@dataclass(frozen=True)
class TorchvisionSet:
    """A torchvision dataset read from its files under the data root (never downloaded unless asked)."""

    folder: str  # below the data root
    files: tuple[str, ...]  # all must be there
    loader: str  # the torchvision.datasets class


DATASETS.add("mnist", "MNIST digits, 60,000 + 10,000 28x28 grey images (torchvision files)",
             TorchvisionSet("MNIST/raw", IDX_FILES, "MNIST"))
DATASETS.add("fashion-mnist", "Fashion-MNIST clothing, 60,000 + 10,000 28x28 grey images (torchvision files)",
             TorchvisionSet("FashionMNIST/raw", IDX_FILES, "FashionMNIST"))
DATASETS.add("cifar10", "CIFAR-10, 50,000 + 10,000 32x32 colour images (torchvision files)",
             TorchvisionSet("cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",
                            "batches.meta"), "CIFAR10"))
DATASETS.add("cifar100", "CIFAR-100, 50,000 + 10,000 32x32 colour images, 100 classes (torchvision files)",
             TorchvisionSet("cifar-100-python", ("train", "test", "meta"), "CIFAR100"))
DATASETS.add(f"{FOLDER_PREFIX}PATH", "any class-per-folder image set: PATH/train/<class>/* and PATH/test/<class>/* "
             "(e.g. OCID; --resize N)", None)
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
ALPHA_MODES = {"RGBA", "RGBa", "LA", "La", "PA"}


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
    try:
        if is_folder(name):
            train, test, classes = _load_folder(_user_path(name[len(FOLDER_PREFIX):]), resize)
        else:
            train, test, classes = _load_torchvision(name, _user_path(str(root)), download, resize)
    except OSError as err:  # unreadable or over-long paths, anywhere below
        raise ConfigError(_os_error(err)) from None
    log.info("loaded %s: %d train, %d test, %d classes, shape %s", name, len(train), len(test), len(classes), train.images.shape[1:])
    return Dataset(name, dataset_label(name), classes, train, test, *channel_stats(train.images))


def _user_path(text: str) -> Path:
    try:
        return Path(text).expanduser()
    except RuntimeError:  # ~user of no known user
        raise ConfigError(f"cannot expand {text!r}: no such user's home directory") from None


def _os_error(err: OSError) -> str:
    """One line for a file-system error; a path too long to print is shortened."""
    if err.filename is None:
        return f"cannot read the data: {err}"
    path = str(err.filename)
    if err.errno == errno.ENAMETOOLONG:
        longest = max(len(part) for part in Path(path).parts)
        return (f"path too long for the file system ({len(path)} characters, longest name {longest}): "
                f"{_shorten(path)}; use a shorter data root or folder path")
    return f"cannot read {_shorten(path)}: {err.strerror or err}"


def _shorten(text: str, keep: int = 60) -> str:
    return text if len(text) <= 2 * keep else f"{text[:keep]}...{text[-keep:]}"


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

    spec: TorchvisionSet = DATASETS[name].obj
    files, place, cls = spec.files, root / spec.folder, getattr(datasets, spec.loader)
    missing = [f for f in files if not (place / f).is_file()]
    if missing and not download:
        raise ConfigError(
            f"{name}: missing {', '.join(missing)} in {place}; put the files there "
            "(the layout torchvision uses) or pass --download where the internet is reachable"
        )
    if missing:
        _download(cls, name, root, place, missing)
    is_idx = files == IDX_FILES
    if is_idx:
        for train in (True, False):
            _check_idx_pair(*(place / f for f in IDX_SPLITS[train]))
    splits = []
    for train in (True, False):
        try:
            ds = cls(str(root), train=train)
        except RuntimeError:  # CIFAR's md5 check failed (IDX files were checked above)
            raise ConfigError(_corrupt_cifar(name, cls, place)) from None
        labels = np.asarray(ds.targets, dtype=np.int64)
        if is_idx:
            _check_label_range(place / IDX_SPLITS[train][1], labels, len(ds.classes))
        images = torch.as_tensor(np.asarray(ds.data))
        images = images.unsqueeze(1) if images.ndim == 3 else images.permute(0, 3, 1, 2)
        if resize is not None:
            images = _resize(images, resize)
        splits.append(Split(images.contiguous().numpy(), labels))
    return splits[0], splits[1], list(ds.classes)


def _download(cls: type, name: str, root: Path, place: Path, missing: list[str]) -> None:
    """torchvision's download, whose failures (URLError and socket errors, RuntimeError once every
    mirror failed or an md5 differs, a broken archive) come up from deep inside, as one line.
    Constructing the test split downloads every file of the set."""
    try:
        cls(str(root), train=False, download=True)
    except (OSError, RuntimeError, EOFError, tarfile.TarError, zlib.error) as err:
        reason = " ".join(str(err).split())
        raise ConfigError(
            f"{name}: download failed ({_shorten(reason, 100)}); put {', '.join(missing)} in {place} "
            "by hand (the layout torchvision uses) or retry where the internet is reachable"
        ) from None


def _check_idx_pair(images: Path, labels: Path) -> None:
    count = _idx_shape(images, "images", 3)[0]
    labelled = _idx_shape(labels, "labels", 1)[0]
    if labelled != count:
        raise ConfigError(f"{labels} holds {labelled} labels but {images} holds {count} images; each image needs one label")


def _idx_shape(path: Path, kind: str, ndim: int) -> tuple[int, ...]:
    """An IDX file's dims, its header and size checked so that torchvision's reader (bare asserts,
    shape errors) only sees well-formed uint8 files. Reads the header only: loading stays fast."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        header = f.read(4 + 4 * ndim)
    allowed = f"expected an IDX {kind} file: magic 00 00 08 0{ndim} (uint8, {ndim} dimension{'s' * (ndim > 1)})"
    if size == 0:
        raise ConfigError(f"{path} is empty (0 bytes); {allowed}")
    if header[:2] == b"\x1f\x8b":
        raise ConfigError(f"{path} is gzip-compressed; unpack it (gunzip) under this name; {allowed}")
    if len(header) < 4:
        raise ConfigError(f"{path} is truncated ({size} bytes, no complete magic); {allowed}")
    if header[:2] != b"\0\0" or header[2] not in IDX_TYPES:
        raise ConfigError(f"{path} is not an IDX file (magic {header[:4].hex(' ')}); {allowed}")
    if header[2] != 0x08:
        raise ConfigError(f"{path} holds {IDX_TYPES[header[2]]} values; {allowed}")
    if header[3] != ndim:
        raise ConfigError(f"{path} has {header[3]} dimension(s); {allowed}")
    if len(header) < 4 + 4 * ndim:
        raise ConfigError(f"{path} is truncated ({size} bytes, header incomplete); {allowed}")
    dims = struct.unpack(f">{ndim}I", header[4:])
    shape = " x ".join(map(str, dims))
    if 0 in dims:
        raise ConfigError(f"{path} holds no {kind} (header: {shape})")
    body, needed = size - len(header), int(np.prod(dims))
    if body < needed:
        raise ConfigError(f"{path} is truncated: {body:,} data bytes, its header ({shape}) needs {needed:,}")
    if body > needed:
        raise ConfigError(f"{path} has {body - needed:,} bytes more than its header ({shape}) says; is it the right file?")
    return dims


def _check_label_range(path: Path, labels: np.ndarray, num_classes: int) -> None:
    bad = np.flatnonzero(labels >= num_classes)
    if len(bad):
        raise ConfigError(
            f"{path}: label {labels[bad[0]]} (image {bad[0]}) is out of range; allowed: 0..{num_classes - 1} "
            f"({num_classes} classes; {len(bad)} label(s) out of range)"
        )


def _corrupt_cifar(name: str, cls: type, place: Path) -> str:
    from torchvision.datasets.utils import check_integrity

    expected = cls.train_list + cls.test_list + [(cls.meta["filename"], cls.meta["md5"])]
    bad = [f for f, md5 in expected if not check_integrity(str(place / f), md5)]
    more = f" (and {', '.join(bad[1:])})" if len(bad) > 1 else ""
    return (f"{name}: {place / bad[0]}{more} is corrupt or incomplete (its md5 differs from the original); "
            f"replace it with the original from {cls.url} or delete it and pass --download")


def _resize(images: torch.Tensor, size: int) -> torch.Tensor:
    from torchvision.transforms.v2.functional import resize as tv_resize

    return tv_resize(images, [size, size], antialias=True)


def _load_folder(root: Path, resize: int | None) -> tuple[Split, Split, list[str]]:
    """A class-per-folder set with root/train/<class>/* and root/test/<class>/* (e.g. OCID).
    Hidden entries (names starting with '.', e.g. .ipynb_checkpoints/, .DS_Store, macOS' ._*
    files) are tool leftovers, not classes or images: they are skipped with a warning."""
    if not root.is_dir():
        raise ConfigError(f"folder dataset {root} does not exist")
    for split in ("train", "test"):
        if not (root / split).is_dir():
            raise ConfigError(f"folder dataset {root} needs {split}/<class>/<image> subfolders; {root / split} is missing")
    hidden: list[str] = []
    classes = _class_folders(root, "train", hidden)
    if len(classes) < 2:
        raise ConfigError(f"folder dataset {root / 'train'} has {len(classes)} class folder(s); at least 2 are needed")
    test_classes = _class_folders(root, "test", hidden)
    if test_classes != classes:
        raise ConfigError(f"folder dataset: test classes {test_classes} differ from train classes {classes}")
    files = {split: _image_files(root, split, classes, hidden) for split in ("train", "test")}
    if hidden:
        shown = ", ".join(hidden[:5]) + (f" and {len(hidden) - 5} more" if len(hidden) > 5 else "")
        log.warning("folder dataset %s: skipped %d hidden entr%s (name starts with '.'): %s",
                    root, len(hidden), "y" if len(hidden) == 1 else "ies", shown)
    splits = [_read_images(root / split, files[split], resize) for split in ("train", "test")]
    if splits[0].images.shape[1:] != splits[1].images.shape[1:]:
        raise ConfigError(f"folder dataset {root}: train and test images differ in size; pass --resize N")
    return splits[0], splits[1], classes


def _visible(folder: Path, root: Path, hidden: list[str]) -> list[Path]:
    """The folder's entries in sorted order without hidden ones, which are added to `hidden`."""
    entries = sorted(folder.iterdir())
    hidden.extend(str(p.relative_to(root)) for p in entries if p.name.startswith("."))
    return [p for p in entries if not p.name.startswith(".")]


def _class_folders(root: Path, split: str, hidden: list[str]) -> list[str]:
    return [p.name for p in _visible(root / split, root, hidden) if p.is_dir()]


def _image_files(root: Path, split: str, classes: list[str], hidden: list[str]) -> list[list[Path]]:
    per_class = []
    for name in classes:
        folder = root / split / name
        files = [p for p in _visible(folder, root, hidden) if p.suffix.lower() in IMAGE_SUFFIXES]
        if not files:
            raise ConfigError(f"class folder {folder} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        per_class.append(files)
    return per_class


def _read_images(split_dir: Path, files: list[list[Path]], resize: int | None) -> Split:
    images: list[np.ndarray] = []
    labels: list[int] = []
    with warnings.catch_warnings():
        # PIL only warns between its pixel limit and twice it; such an image is refused all the same
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        for index, paths in enumerate(files):
            for path in paths:
                images.append(_read_image(path, resize))
                labels.append(index)
    first = images[0].shape
    for path, image in zip((p for paths in files for p in paths), images):
        if image.shape != first:
            raise ConfigError(
                f"images in {split_dir} differ in size: {files[0][0].relative_to(split_dir)} is {first[2]}x{first[1]}, "
                f"{path.relative_to(split_dir)} is {image.shape[2]}x{image.shape[1]}; pass --resize N"
            )
    return Split(np.stack(images), np.asarray(labels, dtype=np.int64))


def _read_image(path: Path, resize: int | None) -> np.ndarray:
    """One image file as uint8 (3, H, W)."""
    try:
        with Image.open(path) as im:
            rgb = _to_rgb(im, path)
    except ConfigError:  # a ValueError itself, already one line
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ConfigError(
            f"image {path} is refused as a possible decompression bomb ({str(err).rstrip('.')}); "
            f"allowed: at most {Image.MAX_IMAGE_PIXELS:,} pixels, shrink it first"
        ) from None
    except (UnidentifiedImageError, OSError, ValueError) as err:  # ValueError: a mode PIL cannot convert
        raise ConfigError(f"cannot read image {path}: {err}") from None
    if resize is not None:
        rgb = rgb.resize((resize, resize), Image.Resampling.BILINEAR)
    return np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1)


def _to_rgb(im: Image.Image, path: Path) -> Image.Image:
    """Any pixel mode as 8-bit RGB, so every image of a set has 3 channels (grayscale repeated).
    PIL's convert clips wider values at 255 (a 16-bit image turns white), so integer modes
    ('I', 'I;16', ...) are read as 0..65535 and float ('F') as 0..1, both scaled to 0..255; alpha is
    composited onto black (the colour under transparent pixels is arbitrary); every other mode
    (L, 1, P, RGB, CMYK, YCbCr) goes through PIL's convert."""
    if im.mode == "F" or im.mode.startswith("I"):
        values = np.asarray(im)
        top = 1.0 if im.mode == "F" else 65535.0
        low, high = values.min(), values.max()
        if not (low >= 0 and high <= top):  # NaN fails both
            raise ConfigError(
                f"image {path} ({im.mode}) has values {low:g}..{high:g}; allowed: integer images in "
                "0..65535 (16 bit), float images in [0, 1]"
            )
        gray = np.rint(values * (255.0 / top)).astype(np.uint8)
        return Image.fromarray(np.repeat(gray[:, :, None], 3, axis=2))
    if im.mode in ALPHA_MODES or (im.mode == "P" and "transparency" in im.info):
        rgba = np.asarray(im.convert("RGBA"), dtype=np.uint16)
        return Image.fromarray(((rgba[:, :, :3] * rgba[:, :, 3:] + 127) // 255).astype(np.uint8))
    return im.convert("RGB")
