"""K-means backends: centroids are member means, k per class, and the cuML glue keeps the invariants."""

import sys
import types

import numpy as np
import pytest
import torch
from sklearn.cluster import KMeans as SkKMeans

from raydistill.config import ConfigError
from raydistill.distill import cluster
from raydistill.registry import METHODS


def blobs(n_per=20, k=3, d=5, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(k, d, generator=g) * 10
    return torch.cat([c + torch.randn(n_per, d, generator=g) for c in centres])


def test_centroids_are_exact_means_of_their_members():
    points = blobs()
    centres, labels = cluster.kmeans(points, 4, seed=0, backend="sklearn")
    assert centres.shape == (4, 5) and labels.shape == (60,)
    assert set(labels.tolist()) <= set(range(4))
    for j in range(4):
        members = points[labels == j]
        torch.testing.assert_close(centres[j], members.mean(0))


def test_sklearn_backend_matches_sklearn_directly():
    points = blobs(seed=3)
    _, labels = cluster.kmeans(points, 3, seed=7, backend="sklearn")
    ref = SkKMeans(3, init="k-means++", n_init="auto", max_iter=300, tol=1e-4, random_state=7).fit(points.numpy())
    assert np.array_equal(labels.numpy(), ref.labels_)


def test_member_means_keeps_fitted_centre_of_an_empty_cluster():
    points = torch.tensor([[0.0], [2.0], [10.0]])
    labels = torch.tensor([0, 0, 1])
    fitted = torch.tensor([[1.0], [10.0], [99.0]])
    torch.testing.assert_close(cluster.member_means(points, labels, fitted), torch.tensor([[1.0], [10.0], [99.0]]))


def test_kmeans_method_gives_k_images_of_the_class_shape():
    images = torch.rand(30, 1, 4, 4)
    out = METHODS["kmeans"].obj(images, 5, seed=0, backend="sklearn")
    assert out.shape == (5, 1, 4, 4)


def test_auto_falls_back_to_sklearn_without_cuml(monkeypatch):
    assert cluster.resolve_backend("auto", torch.device("cpu")) == "sklearn"
    monkeypatch.setattr(cluster, "cuml_available", lambda: False)
    assert cluster.resolve_backend("auto", torch.device("cuda")) == "sklearn"
    monkeypatch.setattr(cluster, "cuml_available", lambda: True)
    assert cluster.resolve_backend("auto", torch.device("cuda")) == "cuml"
    assert cluster.resolve_backend("auto", torch.device("cpu")) == "sklearn"


def test_cuml_backend_refused_without_gpu():
    with pytest.raises(ConfigError, match="cuml"):
        cluster.resolve_backend("cuml", torch.device("cpu"))


CUML_KMEANS_PARAMS = {"n_clusters", "max_iter", "tol", "verbose", "random_state", "init", "n_init",
                      "oversampling_factor", "max_samples_per_batch", "device_buffer_samples", "init_size", "output_type"}


@pytest.fixture
def fake_cuml(monkeypatch):
    """cuML's KMeans signature (26.10) over scikit-learn, and NumPy standing in for CuPy (both speak
    DLPack), so the cuML glue's conversions and parameters run here without a GPU."""
    class KMeans:
        def __init__(self, **kwargs):
            unknown = set(kwargs) - CUML_KMEANS_PARAMS
            assert not unknown, f"not cuML KMeans parameters: {unknown}"
            assert kwargs["init"] in ("scalable-k-means++", "k-means||", "k-means++", "random")
            self.kw = kwargs

        def fit(self, x):
            assert isinstance(x, np.ndarray) and x.dtype == np.float32
            km = SkKMeans(self.kw["n_clusters"], init="k-means++", n_init=1, max_iter=self.kw["max_iter"],
                          tol=self.kw["tol"], random_state=self.kw["random_state"]).fit(x)
            self.cluster_centers_, self.labels_ = km.cluster_centers_, km.labels_.astype(np.int32)
            return self

    cuml = types.ModuleType("cuml")
    cuml.cluster = types.ModuleType("cuml.cluster")
    cuml.cluster.KMeans = KMeans
    cupy = types.ModuleType("cupy")
    cupy.from_dlpack, cupy.ascontiguousarray, cupy.float32 = np.from_dlpack, np.ascontiguousarray, np.float32
    for name, mod in (("cuml", cuml), ("cuml.cluster", cuml.cluster), ("cupy", cupy)):
        monkeypatch.setitem(sys.modules, name, mod)


def test_backends_agree_on_invariants(fake_cuml):
    points = blobs(n_per=15, k=4, d=6, seed=2)
    results = {b: cluster.kmeans(points, 4, seed=1, backend=b) for b in ("sklearn", "cuml")}
    for centres, labels in results.values():
        assert centres.shape == (4, 6) and centres.dtype == torch.float32
        assert labels.dtype == torch.long and labels.min() >= 0 and labels.max() < 4
        for j in range(4):
            torch.testing.assert_close(centres[j], points[labels == j].mean(0))
    inertia = {b: float(((points - c[l]) ** 2).sum()) for b, (c, l) in results.items()}
    assert inertia["cuml"] == pytest.approx(inertia["sklearn"], rel=0.05)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_real_cuml_on_gpu_matches_sklearn_invariants():
    pytest.importorskip("cuml")
    points = blobs(n_per=50, k=5, d=8, seed=4).cuda()
    c_gpu, l_gpu = cluster.kmeans(points, 5, seed=0, backend="cuml")
    c_cpu, l_cpu = cluster.kmeans(points.cpu(), 5, seed=0, backend="sklearn")
    assert c_gpu.is_cuda and l_gpu.is_cuda and c_gpu.shape == c_cpu.shape
    inertia_gpu = float(((points - c_gpu[l_gpu]) ** 2).sum())
    inertia_cpu = float(((points.cpu() - c_cpu[l_cpu]) ** 2).sum())
    assert inertia_gpu == pytest.approx(inertia_cpu, rel=0.05)
