"""Loading: IDX files through torchvision's real loader, class-per-folder sets, the real Fashion-MNIST."""

import numpy as np
import pytest

from raydistill import data as data_lib
from raydistill.config import ConfigError

from conftest import make_mnist_like


def test_idx_files_load_through_torchvision(mnist_root):
    ds = data_lib.load("mnist", mnist_root)
    assert ds.train.images.shape == (120, 1, 28, 28) and ds.train.images.dtype == np.uint8
    assert ds.test.images.shape == (40, 1, 28, 28)
    assert ds.train.class_counts(10) == [12] * 10
    assert ds.classes[0].startswith("0") and ds.num_classes == 10
    flat = ds.train.images.astype(np.float64) / 255
    assert ds.mean[0] == pytest.approx(flat.mean()) and ds.std[0] == pytest.approx(flat.std())


def test_fashion_mnist_uses_its_own_folder(tmp_path):
    root = make_mnist_like(tmp_path, folder="FashionMNIST")
    ds = data_lib.load("fashion-mnist", root)
    assert ds.classes[0] == "T-shirt/top" and len(ds.train) == 120


def test_resize_on_load(mnist_root):
    assert data_lib.load("mnist", mnist_root, resize=16).train.images.shape[1:] == (1, 16, 16)


def test_folder_set_loads_with_sorted_classes(folder_root):
    ds = data_lib.load(f"folder:{folder_root}", "unused")
    assert ds.classes == ["cancer", "normal"] and ds.label == "ocid"
    assert ds.train.images.shape == (16, 3, 16, 16) and ds.test.images.shape == (8, 3, 16, 16)
    assert ds.train.class_counts(2) == [8, 8]
    assert data_lib.load(f"folder:{folder_root}", "unused", resize=8).train.images.shape[1:] == (3, 8, 8)


def test_train_limit_is_stratified_seeded_and_keeps_the_test_split(mnist_root):
    ds = data_lib.load("mnist", mnist_root)
    a, b = ds.limit_train(50, seed=3), ds.limit_train(50, seed=3)
    assert len(a.train) == 50 and np.array_equal(a.train.labels, b.train.labels)
    assert set(a.train.class_counts(10)) == {5}
    assert len(a.test) == len(ds.test)
    assert not np.array_equal(ds.limit_train(50, seed=4).train.images, a.train.images)
    assert ds.limit_train(10_000, seed=0) is ds


def test_dataset_arrays_become_device_tensors_without_copy_on_cpu(mnist_root):
    import torch

    ds = data_lib.load("mnist", mnist_root)
    t = ds.to(torch.device("cpu"))
    assert t.x_train.data_ptr() == ds.train.images.__array_interface__["data"][0]


def test_real_fashion_mnist(fashion_root):
    ds = data_lib.load("fashion-mnist", fashion_root)
    assert ds.train.images.shape == (60000, 1, 28, 28) and len(ds.test) == 10000
    assert ds.train.class_counts(10) == [6000] * 10
    assert ds.mean[0] == pytest.approx(0.2860, abs=1e-3) and ds.std[0] == pytest.approx(0.3530, abs=1e-3)


def test_missing_files_are_named_with_their_place(tmp_path):
    with pytest.raises(ConfigError) as err:
        data_lib.load("cifar10", tmp_path)
    assert "data_batch_1" in str(err.value) and str(tmp_path / "cifar-10-batches-py") in str(err.value)
