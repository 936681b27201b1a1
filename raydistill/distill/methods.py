"""Selection methods: how one class's (modified) images become its k distilled images.

Each method is a function (images (n, C, H, W) float, k, *, seed, backend) -> (k, C, H, W),
registered by name in METHODS. 'full' (no distillation) is handled by the pipeline.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from raydistill.distill.cluster import kmeans as cluster_kmeans

Method = Callable[..., torch.Tensor]


def kmeans(images: torch.Tensor, k: int, *, seed: int, backend: str) -> torch.Tensor:
    """The paper's step 3: K-means on the class's images; the centroids are the distilled images."""
    centres, _ = cluster_kmeans(images.flatten(1), k, seed=seed, backend=backend)
    return centres.view(k, *images.shape[1:])


METHODS: dict[str, Method] = {"kmeans": kmeans}
