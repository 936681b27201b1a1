"""Selection methods: how one class's (modified) images become its k distilled images.

Each method is a function (images (n, C, H, W) float, k, *, seed, backend) -> (k, C, H, W),
registered by name in METHODS (the names config.METHODS allows). kmeans and dm build new images;
the others keep real ones (raydistill.distill.selection). 'full' (no distillation) is handled by the
pipeline; dm also takes `iterations`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from raydistill.distill import selection
from raydistill.distill.cluster import kmeans as cluster_kmeans
from raydistill.distill.dm import dm

Method = Callable[..., torch.Tensor]


def kmeans(images: torch.Tensor, k: int, *, seed: int, backend: str) -> torch.Tensor:
    """The paper's step 3: K-means on the class's images; the centroids are the distilled images."""
    centres, _ = cluster_kmeans(images.flatten(1), k, seed=seed, backend=backend)
    return centres.view(k, *images.shape[1:])


METHODS: dict[str, Method] = {
    "kmeans": kmeans,
    "kmeans-nearest": selection.kmeans_nearest,
    "random": selection.random,
    "herding": selection.herding,
    "kcenter": selection.kcenter,
    "dm": dm,
}
