"""Every bad input fails before any compute, with a one-line message, exit code 2 and no traceback."""

from pathlib import Path

import pytest
from PIL import Image

from raydistill import protocols, teacher
from raydistill.cli import main

from conftest import make_folder_set


@pytest.fixture
def no_compute(monkeypatch):
    """Fail the test if training ever starts."""
    def boom(*args, **kwargs):
        raise AssertionError("training started despite bad input")

    monkeypatch.setattr(teacher, "fit", boom)  # every teacher and student trains through these two
    monkeypatch.setattr(protocols, "fit", boom)


def run_cli(args: list[str], capsys) -> str:
    code = main(["run", "--device", "cpu", "--teacher-epochs", "1", "--student-epochs", "1", *args])
    captured = capsys.readouterr()
    assert code == 2
    assert "Traceback" not in captured.err and captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("raydistill: error: ")
    return lines[0]


@pytest.mark.parametrize("args,expected", [
    (["--dataset", "imagenet"], "unknown dataset 'imagenet'; allowed: mnist, fashion-mnist, cifar10, cifar100, folder:PATH"),
    (["--model", "vgg"], "unknown model 'vgg'; allowed: baseline, lenet, resnet34, convnet3"),
    (["--modifier", "grad-l2"], "unknown modifier 'grad-l2'; allowed: grad-l1, grad-l1-last, input-grad, none"),
    (["--backend", "faiss"], "unknown backend 'faiss'; allowed: auto, sklearn, cuml"),
    (["--method", "magic"], "unknown method 'magic'"),
    (["--ipc", "0"], "ipc must be a positive integer, got 0"),
    (["--ipc", "-3"], "ipc must be a positive integer, got -3"),
    (["--teacher-epochs", "0"], "teacher-epochs must be a positive integer, got 0"),
    (["--student-epochs", "-1"], "student-epochs must be a positive integer, got -1"),
    (["--train-limit", "0"], "train-limit must be a positive integer"),
    (["--backend", "cuml"], "backend 'cuml' needs a CUDA GPU and cuML"),
    (["--dataset", "folder:"], "dataset 'folder:' needs a path"),
])
def test_static_bad_values(args, expected, capsys, no_compute, mnist_root):
    assert expected in run_cli(["--dataset", "mnist", "--data-root", str(mnist_root), *args], capsys)


def test_ipc_larger_than_the_smallest_class(capsys, no_compute, mnist_root):
    line = run_cli(["--dataset", "mnist", "--data-root", str(mnist_root), "--ipc", "13"], capsys)
    assert "ipc 13 is larger than the smallest class" in line and "allowed: 1..12" in line


def test_ipc_checked_after_train_limit(capsys, no_compute, mnist_root):
    line = run_cli(["--dataset", "mnist", "--data-root", str(mnist_root), "--ipc", "6", "--train-limit", "50"], capsys)
    assert "allowed: 1..5" in line


def test_data_root_without_files_names_them(capsys, no_compute, tmp_path):
    line = run_cli(["--dataset", "fashion-mnist", "--data-root", str(tmp_path)], capsys)
    assert "train-images-idx3-ubyte" in line and str(tmp_path / "FashionMNIST" / "raw") in line
    assert "--download" in line


def test_folder_set_with_one_class(capsys, no_compute, tmp_path):
    make_folder_set(tmp_path / "one", classes=("normal",))
    assert "at least 2 are needed" in run_cli(["--dataset", f"folder:{tmp_path / 'one'}"], capsys)


def test_folder_set_with_an_empty_class(capsys, no_compute, tmp_path):
    root = make_folder_set(tmp_path / "s")
    for f in (root / "train" / "normal").iterdir():
        f.unlink()
    assert f"class folder {root / 'train' / 'normal'} holds no images" in run_cli(["--dataset", f"folder:{root}"], capsys)


def test_folder_set_with_an_unreadable_image(capsys, no_compute, tmp_path):
    root = make_folder_set(tmp_path / "s")
    (root / "train" / "cancer" / "broken.png").write_bytes(b"not a png")
    assert f"cannot read image {root / 'train' / 'cancer' / 'broken.png'}" in run_cli(["--dataset", f"folder:{root}"], capsys)


def test_folder_set_without_test_split(capsys, no_compute, tmp_path):
    root = make_folder_set(tmp_path / "s")
    for f in (root / "test").rglob("*.png"):
        f.unlink()
    for d in sorted((root / "test").iterdir()):
        d.rmdir()
    (root / "test").rmdir()
    assert "needs test/<class>/<image> subfolders" in run_cli(["--dataset", f"folder:{root}"], capsys)


def test_unknown_positive_class(capsys, no_compute, tmp_path):
    root = make_folder_set(tmp_path / "s")
    line = run_cli(["--dataset", f"folder:{root}", "--ipc", "2", "--positive-class", "tumour"], capsys)
    assert "positive class 'tumour' is not a class of this dataset; allowed: cancer, normal" in line


def test_images_of_different_sizes_need_resize(capsys, no_compute, tmp_path):
    root = make_folder_set(tmp_path / "s")
    Image.new("RGB", (20, 20)).save(Path(root / "train" / "cancer" / "big.png"))
    assert "pass --resize N" in run_cli(["--dataset", f"folder:{root}"], capsys)
