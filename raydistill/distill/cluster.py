"""K-means behind one function: RAPIDS cuML on the GPU, scikit-learn on the CPU.

Both use k-means++-style seeding, max_iter 300, tol 1e-4 and the trial's seed (cuML's own CPU
mapping of its defaults). The returned centroids are recomputed as the exact mean of each
cluster's members under the final assignment, i.e. c_i = (1/|S_i|) sum x in S_i (the paper's Eq. 3).
"""

from __future__ import annotations

import torch

from raydistill.config import ConfigError
from raydistill.device import cuml_available

MAX_ITER = 300
TOL = 1e-4


def resolve_backend(backend: str, device: torch.device) -> str:
    """'auto' -> 'cuml' when the data is on a GPU and cuML is usable, else 'sklearn'."""
    if backend == "auto":
        return "cuml" if device.type == "cuda" and cuml_available() else "sklearn"
    if backend == "cuml" and not (device.type == "cuda" and cuml_available()):
        raise ConfigError("backend 'cuml' needs a CUDA device and cuML; use --backend auto or sklearn")
    return backend


def kmeans(points: torch.Tensor, k: int, *, seed: int, backend: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Cluster the rows of `points` (n, d) into k groups: (centroids (k, d), labels (n,)),
    both on the device of `points`. `backend` is 'sklearn' or 'cuml' (see resolve_backend)."""
    fitted, labels = (_cuml if backend == "cuml" else _sklearn)(points, k, seed)
    return member_means(points, labels, fitted), labels


def member_means(points: torch.Tensor, labels: torch.Tensor, fallback: torch.Tensor) -> torch.Tensor:
    """Mean of each cluster's members; a cluster left empty keeps its fitted centre."""
    k = fallback.shape[0]
    sums = torch.zeros_like(fallback).index_add_(0, labels, points)
    counts = torch.bincount(labels, minlength=k).unsqueeze(1)
    return torch.where(counts > 0, sums / counts.clamp(min=1), fallback)


def _sklearn(points: torch.Tensor, k: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.cluster import KMeans

    data = points.detach().cpu().float().numpy()
    km = KMeans(n_clusters=k, init="k-means++", n_init="auto", max_iter=MAX_ITER, tol=TOL, random_state=seed).fit(data)
    centres = torch.as_tensor(km.cluster_centers_, dtype=points.dtype, device=points.device)
    return centres, torch.as_tensor(km.labels_, dtype=torch.long, device=points.device)


def _cuml(points: torch.Tensor, k: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """cuML reads the CUDA tensor in place (DLPack, no host copy) and returns CuPy arrays."""
    import cupy
    from cuml.cluster import KMeans

    data = cupy.from_dlpack(points.detach().float().contiguous())
    km = KMeans(n_clusters=k, init="scalable-k-means++", n_init=1, max_iter=MAX_ITER, tol=TOL,
                random_state=seed, output_type="cupy").fit(data)
    centres = torch.from_dlpack(cupy.ascontiguousarray(km.cluster_centers_, dtype=cupy.float32))
    labels = torch.from_dlpack(cupy.ascontiguousarray(km.labels_)).long()
    return centres.to(points.device, points.dtype), labels.to(points.device)
