"""Bad data files: each becomes one ConfigError line naming the file and what is allowed, raised by
`data.load` before any training, never a traceback and never silently wrong images or labels."""

import gzip
import logging
import struct
import urllib.error
import urllib.request
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from raydistill import data as data_lib
from raydistill.registry import DATASETS
from raydistill.config import ConfigError

from conftest import make_folder_set, make_mnist_like, write_idx


def load_error(name: str, root: Path | str = "unused", **kwargs) -> str:
    """The ConfigError `data.load` raises, checked to be one line."""
    with pytest.raises(ConfigError) as err:
        data_lib.load(name, root, **kwargs)
    message = str(err.value)
    assert "\n" not in message
    return message


def raw(root: Path, name: str) -> Path:
    return root / "MNIST" / "raw" / name


def write_png(path: Path, width: int, height: int, rows: int) -> None:
    """A 1-bit grayscale PNG whose header says width x height; `rows` all-zero rows are compressed
    into its data (a decompression bomb when the header is huge: zeros compress ~1000:1)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    packer = zlib.compressobj(9)
    row = bytes(1 + (width + 7) // 8)  # filter byte + packed bits
    body = b"".join(packer.compress(row) for _ in range(rows)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b""))


# --- folder sets: pixel modes ---------------------------------------------------------------------

def test_16_bit_png_is_scaled_to_8_bit_not_white(tmp_path):
    root = make_folder_set(tmp_path / "s", train=2, test=1, size=4)
    values = np.array([[0, 257, 32896, 65535]] * 4, dtype=np.uint16)
    for path in (root / "train" / "cancer").glob("*.png"):
        Image.fromarray(values).save(path)  # mode I;16: a 16-bit grayscale PNG
    assert Image.open(path).mode == "I;16"
    ds = data_lib.load(f"folder:{root}", "unused")
    image = ds.train.images[ds.train.labels == 0][0]
    assert image.shape == (3, 4, 4)
    assert image[:, 0].tolist() == [[0, 1, 128, 255]] * 3


def test_every_pixel_mode_decodes_to_8_bit_rgb(tmp_path):
    """16/32-bit integers from 0..65535, floats from [0, 1], alpha over black, palettes expanded."""
    root = make_folder_set(tmp_path / "s", train=6, test=1, size=2)
    folder = root / "train" / "cancer"
    for path in folder.iterdir():
        path.unlink()
    Image.fromarray(np.array([[0, 65535], [32896, 0]], dtype=np.int32)).save(folder / "i32.tif")  # mode I
    Image.fromarray(np.array([[0, 1], [0.5, 0]], dtype=np.float32)).save(folder / "f32.tif")  # mode F
    Image.fromarray(np.array([[0, 200], [100, 0]], dtype=np.uint8)).save(folder / "l.png")  # mode L
    rgba = np.zeros((2, 2, 4), dtype=np.uint8)
    rgba[..., :3], rgba[..., 3] = 200, [[255, 0], [128, 255]]
    Image.fromarray(rgba).save(folder / "rgba.png")
    Image.fromarray(rgba[..., [0, 3]]).save(folder / "la.png")  # mode LA
    palette = Image.fromarray(np.array([[0, 1], [1, 0]], dtype=np.uint8), "P")
    palette.putpalette([0, 0, 0, 10, 20, 30])
    palette.save(folder / "p.png")
    ds = data_lib.load(f"folder:{root}", "unused")
    got = {name: ds.train.images[i] for i, name in enumerate(("f32", "i32", "l", "la", "p", "rgba"))}
    assert all(image.shape == (3, 2, 2) for image in got.values())
    assert got["i32"][:, 0, 1].tolist() == [255] * 3 and got["i32"][:, 1, 0].tolist() == [128] * 3
    assert got["f32"][:, 0, 1].tolist() == [255] * 3 and got["f32"][:, 1, 0].tolist() == [128] * 3
    assert got["l"][:, 0, 1].tolist() == [200] * 3
    for name in ("rgba", "la"):
        assert got[name][:, 0, 0].tolist() == [200] * 3 and got[name][:, 0, 1].tolist() == [0] * 3
        assert got[name][:, 1, 0].tolist() == [100] * 3
    assert got["p"][:, 0, 1].tolist() == [10, 20, 30]


def test_float_image_outside_0_1_is_rejected(tmp_path):
    root = make_folder_set(tmp_path / "s", size=2)
    path = root / "train" / "cancer" / "hot.tif"
    Image.fromarray(np.full((2, 2), 300.0, dtype=np.float32)).save(path)
    message = load_error(f"folder:{root}")
    assert str(path) in message and "[0, 1]" in message


# --- folder sets: hidden entries, bombs, long paths ----------------------------------------------

def test_hidden_folders_and_files_are_skipped_with_a_warning(tmp_path, caplog):
    root = make_folder_set(tmp_path / "s")
    for split in ("train", "test"):
        hidden = root / split / ".ipynb_checkpoints"
        hidden.mkdir()
        Image.new("RGB", (16, 16)).save(hidden / "0-checkpoint.png")
    (root / "train" / "cancer" / "._0.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    with caplog.at_level(logging.WARNING, logger="raydistill.data"):
        ds = data_lib.load(f"folder:{root}", "unused")
    assert ds.classes == ["cancer", "normal"] and ds.train.class_counts(2) == [8, 8]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert ".ipynb_checkpoints" in warnings[0] and "._0.png" in warnings[0] and "hidden" in warnings[0]


@pytest.mark.parametrize("size,limit", [
    (20_000, None),  # 400M pixels: over twice PIL's default limit, PIL raises DecompressionBombError
    (40, 1_000),     # over the limit but under twice it: PIL only warns (limit lowered to keep the test small)
])
def test_decompression_bomb_png(tmp_path, monkeypatch, size, limit):
    if limit is not None:
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)
    root = make_folder_set(tmp_path / "s")
    bomb = root / "train" / "normal" / "bomb.png"
    write_png(bomb, size, size, rows=size)
    message = load_error(f"folder:{root}")
    assert str(bomb) in message and "decompression" in message


@pytest.mark.parametrize("dataset", ["folder", "mnist"])
def test_over_long_path(tmp_path, dataset):
    long = tmp_path / ("x" * 300) / "data"
    message = load_error(f"folder:{long}") if dataset == "folder" else load_error("mnist", long)
    assert "too long" in message and len(message) < 300  # the path is shortened, not printed whole


@pytest.mark.parametrize("dataset", ["folder", "mnist"])
def test_home_of_an_unknown_user(dataset):
    path = "~no_such_user_raydistill/data"
    message = load_error(f"folder:{path}") if dataset == "folder" else load_error("mnist", path)
    assert path in message and "no such user" in message


# --- IDX files -----------------------------------------------------------------------------------

def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _trailing(path: Path) -> None:
    path.write_bytes(path.read_bytes() + b"\0\0\0")


def _gzip(path: Path) -> None:
    path.write_bytes(gzip.compress(path.read_bytes()))


def _float(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[2] = 0x0D
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("file,damage,expected", [
    ("train-images-idx3-ubyte", lambda p: p.write_bytes(b""), "empty"),
    ("t10k-labels-idx1-ubyte", lambda p: p.write_bytes(b"\0\0\x08"), "truncated"),
    ("train-images-idx3-ubyte", _truncate, "truncated"),
    ("train-labels-idx1-ubyte", _trailing, "3 bytes more"),
    ("train-images-idx3-ubyte", _gzip, "gzip"),
    ("t10k-images-idx3-ubyte", lambda p: p.write_bytes(b"<html>not found</html>"), "magic"),
    ("train-images-idx3-ubyte", _float, "uint8"),
    ("train-images-idx3-ubyte", lambda p: write_idx(p, np.zeros((120, 784))), "3 dimensions"),
    ("train-labels-idx1-ubyte", lambda p: write_idx(p, np.zeros((120, 28, 28))), "1 dimension"),
])
def test_bad_idx_file_is_named(tmp_path, file, damage, expected):
    root = make_mnist_like(tmp_path)
    damage(raw(root, file))
    message = load_error("mnist", root)
    assert str(raw(root, file)) in message and expected in message


def test_idx_files_without_images(tmp_path):
    root = make_mnist_like(tmp_path)
    write_idx(raw(root, "t10k-images-idx3-ubyte"), np.zeros((0, 28, 28)))
    write_idx(raw(root, "t10k-labels-idx1-ubyte"), np.zeros(0))
    message = load_error("mnist", root)
    assert str(raw(root, "t10k-images-idx3-ubyte")) in message and "0 x 28 x 28" in message


@pytest.mark.parametrize("change", [-3, 5])
def test_labels_file_with_a_different_count(tmp_path, change):
    root = make_mnist_like(tmp_path)
    labels = np.resize(np.arange(10), 120 + change)
    write_idx(raw(root, "train-labels-idx1-ubyte"), labels)
    message = load_error("mnist", root)
    assert str(raw(root, "train-labels-idx1-ubyte")) in message
    assert f"{120 + change} labels" in message and "120 images" in message


def test_label_out_of_range(tmp_path):
    root = make_mnist_like(tmp_path)
    labels = np.repeat(np.arange(10), 12)
    labels[7] = 10
    write_idx(raw(root, "train-labels-idx1-ubyte"), labels)
    message = load_error("mnist", root)
    assert str(raw(root, "train-labels-idx1-ubyte")) in message and "label 10" in message and "0..9" in message


# --- CIFAR and downloads -------------------------------------------------------------------------

def test_corrupt_cifar_file_is_named(tmp_path):
    spec = DATASETS["cifar10"].obj
    folder, files = spec.folder, spec.files
    for name in files:
        (tmp_path / folder).mkdir(exist_ok=True)
        (tmp_path / folder / name).write_bytes(b"\x80\x04 not the original pickle")
    message = load_error("cifar10", tmp_path)
    assert str(tmp_path / folder / "data_batch_1") in message and "corrupt" in message


@pytest.mark.parametrize("dataset,folder", [("mnist", "MNIST/raw"), ("cifar10", "cifar-10-batches-py")])
def test_download_when_offline(tmp_path, monkeypatch, dataset, folder):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    message = load_error(dataset, tmp_path, download=True)
    assert "download failed" in message and "name resolution" in message and str(tmp_path / folder) in message
