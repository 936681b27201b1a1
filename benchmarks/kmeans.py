"""K-means seconds per class size (the paper clusters each class on its own): scikit-learn on the CPU,
and RAPIDS cuML beside it when a GPU with cuML is present."""

from __future__ import annotations

import torch

from benchmarks.timing import emit, timed
from raydistill.data import Dataset
from raydistill.device import cuml_available
from raydistill.distill.cluster import kmeans

SIZES = {True: (500, 2000), False: (500, 1000, 2000, 6000)}
KS = (10, 50)


def class_points(data: Dataset | None, n: int) -> torch.Tensor:
    """n images of one class as (n, 784) floats in [0, 1]: Fashion-MNIST's class 0 (6,000 training
    images) when it is loaded, else a seeded mixture of 10 blobs of the same shape."""
    if data is not None:
        images = data.train.images[data.train.labels == 0][:n]
        return torch.from_numpy(images).flatten(1).float().div_(255.0)
    generator = torch.Generator().manual_seed(0)
    centres = torch.rand(10, 784, generator=generator)
    picks = torch.randint(0, 10, (n,), generator=generator)
    return (centres[picks] + 0.1 * torch.randn(n, 784, generator=generator)).clamp_(0, 1)


def run(quick: bool, data: Dataset | None) -> None:
    emit("kmeans.data", "fashion-mnist class 0" if data is not None else "synthetic blobs")
    gpu = torch.cuda.is_available() and cuml_available()
    for n in SIZES[quick]:
        points = class_points(data, n)
        for k in KS:
            cpu_s, _ = timed(lambda: kmeans(points, k, seed=0, backend="sklearn"), repeat=3)
            emit(f"kmeans.sklearn.n{n}_k{k}_s", cpu_s)
            if gpu:
                on_gpu = points.cuda()
                gpu_s, _ = timed(lambda: (kmeans(on_gpu, k, seed=0, backend="cuml"), torch.cuda.synchronize()),
                                 repeat=3)
                emit(f"kmeans.cuml.n{n}_k{k}_s", gpu_s)
                emit(f"kmeans.cuml_vs_sklearn.n{n}_k{k}", cpu_s / gpu_s)
    if not gpu:
        emit("kmeans.cuml", "not available (no CUDA GPU with cuML here)")
