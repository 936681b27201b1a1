"""Baselines that keep real images: each picks k distinct rows of one class's (shifted) images.

They measure what the paper's centroids add over real images chosen by a rule: the field's coreset
baselines (random, herding and k-center from the DC paper's tables) and DC-BENCH's K-means selection
(the real image nearest each centroid). Distances are exact Euclidean norms on the flattened images,
computed with torch on the device of `images`; only kmeans-nearest uses `backend`.
"""

from __future__ import annotations

import torch

from raydistill.distill.cluster import kmeans as cluster_kmeans


def random(images: torch.Tensor, k: int, *, seed: int, backend: str | None = None) -> torch.Tensor:
    """k images drawn without replacement; the permutation comes from a CPU generator seeded with
    `seed`, so the choice is the same on every device."""
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))
    return images[order[:k].to(images.device)]


def kmeans_nearest(images: torch.Tensor, k: int, *, seed: int, backend: str) -> torch.Tensor:
    """DC-BENCH's K-means selection: cluster as the paper does, then keep for each centroid the
    real image nearest to it (row j belongs to centroid j)."""
    flat = images.flatten(1)
    centres, _ = cluster_kmeans(flat, k, seed=seed, backend=backend)
    return images[nearest_distinct(centres, flat)]


def nearest_distinct(centres: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """For each centre the index of its nearest point, no point used twice. Pairs are fixed
    closest-first, so when the nearest points are distinct anyway (the usual case) this is the
    plain argmin; a point nearest to two centres goes to the closer one, the other takes its next."""
    dist = torch.cdist(centres, points, compute_mode="donot_use_mm_for_euclid_dist")
    chosen = torch.empty(len(centres), dtype=torch.long, device=points.device)
    for _ in range(len(centres)):
        c, p = torch.unravel_index(dist.argmin(), dist.shape)
        chosen[c] = p
        dist[c] = torch.inf
        dist[:, p] = torch.inf
    return chosen


def herding(images: torch.Tensor, k: int, *, seed: int = 0, backend: str | None = None) -> torch.Tensor:
    """Greedy herding (Welling 2009; the DC paper's coreset baseline): pick j is the image that
    brings the mean of the first j picks closest to the class mean. Deterministic (seed unused);
    the first pick is the image nearest the class mean."""
    flat = images.flatten(1)
    mean = flat.mean(0)
    total = torch.zeros_like(mean)
    taken = torch.zeros(len(flat), dtype=torch.bool, device=flat.device)
    chosen = []
    for j in range(1, k + 1):
        # || (total + x) / j - mean || up to the factor 1/j, for every candidate x at once
        gap = torch.linalg.vector_norm(flat + (total - j * mean), dim=1).masked_fill(taken, torch.inf)
        i = gap.argmin()
        chosen.append(i)
        taken[i] = True
        total += flat[i]
    return images[torch.stack(chosen)]


def kcenter(images: torch.Tensor, k: int, *, seed: int = 0, backend: str | None = None) -> torch.Tensor:
    """Greedy k-center (Gonzalez 1985; Sener & Savarese 2018): each pick is the image farthest from
    its nearest earlier pick. The start is the image nearest the class mean: deterministic (seed
    unused), and a typical image rather than the outlier a farthest-point start would take."""
    flat = images.flatten(1)
    first = torch.linalg.vector_norm(flat - flat.mean(0), dim=1).argmin()
    nearest = torch.linalg.vector_norm(flat - flat[first], dim=1)  # distance to the closest pick
    taken = torch.zeros(len(flat), dtype=torch.bool, device=flat.device)
    taken[first] = True
    chosen = [first]
    for _ in range(k - 1):
        i = nearest.masked_fill(taken, -torch.inf).argmax()
        chosen.append(i)
        taken[i] = True
        nearest = torch.minimum(nearest, torch.linalg.vector_norm(flat - flat[i], dim=1))
    return images[torch.stack(chosen)]
