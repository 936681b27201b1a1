"""Selection methods: how one class's (modified) images become its ipc distilled images.

Each method is registered once in raydistill.registry.METHODS with a function
(images (n, C, H, W) float, k, *, seed, backend, **options) -> (k, C, H, W) and the facts the
pipeline and the grid need: whether it clusters (it then gets a K-means backend), and its extra
options read from the trial config. `full` distils nothing: the student trains on every image.
Adding a method is one function and one `METHODS.add` line here (or in a module imported here).
"""

from __future__ import annotations

import torch

from raydistill.distill import selection
from raydistill.distill.cluster import kmeans as cluster_kmeans
from raydistill.distill.dm import dm
from raydistill.registry import METHODS


def kmeans(images: torch.Tensor, k: int, *, seed: int, backend: str) -> torch.Tensor:
    """The paper's step 3: K-means on the class's images; the centroids are the distilled images."""
    centres, _ = cluster_kmeans(images.flatten(1), k, seed=seed, backend=backend)
    return centres.view(k, *images.shape[1:])


METHODS.add("kmeans", "the paper: K-means centroids (means of real images)", kmeans, distills=True, uses_kmeans=True)
METHODS.add("kmeans-nearest", "for each centroid the nearest real image, no image twice (DC-BENCH's K-means "
            "selection)", selection.kmeans_nearest, distills=True, uses_kmeans=True)
METHODS.add("random", "k real images drawn without replacement, seeded", selection.random, distills=True,
            uses_kmeans=False)
METHODS.add("herding", "greedy herding (Welling 2009): each pick brings the mean of the picks closest to the class "
            "mean", selection.herding, distills=True, uses_kmeans=False)
METHODS.add("kcenter", "greedy k-center (max-min distance) from the image nearest the class mean",
            selection.kcenter, distills=True, uses_kmeans=False)
METHODS.add("dm", "Distribution Matching (Zhao & Bilen 2023), --dm-iterations SGD steps per class", dm,
            distills=True, uses_kmeans=False, options=lambda cfg: {"iterations": cfg.dm_iterations})
METHODS.add("full", "no distillation: the student trains on the whole training set", None, distills=False,
            uses_kmeans=False)
