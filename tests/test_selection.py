"""Selection baselines and DM: counts and shapes, real distinct rows, and each rule checked against a
slow reference or its defining property."""

import numpy as np
import pytest
import torch

from raydistill import pipeline
from raydistill.config import ConfigError, TrialConfig
from raydistill.distill import cluster, dm, selection
from raydistill.registry import METHODS, Entry

REAL = ("random", "kmeans-nearest", "herding", "kcenter")


def class_images(n=30, shape=(3, 8, 8), seed=0) -> torch.Tensor:
    return torch.rand(n, *shape, generator=torch.Generator().manual_seed(seed))


def row_indices(picked: torch.Tensor, images: torch.Tensor) -> list[int]:
    """The row of `images` each picked image is exactly equal to (fails if one is not a row)."""
    rows = []
    for image in picked:
        (match,) = [i for i, row in enumerate(images) if torch.equal(row, image)]
        rows.append(match)
    return rows


@pytest.mark.parametrize("name", [e.name for e in METHODS.entries() if e.distills])
def test_every_method_returns_k_images_of_the_input_shape(name):
    images = class_images()
    options = {"iterations": 2} if name == "dm" else {}
    out = METHODS[name].obj(images, 4, seed=0, backend="sklearn", **options)
    assert out.shape == (4, 3, 8, 8) and out.dtype == images.dtype and out.device == images.device


@pytest.mark.parametrize("name", REAL)
@pytest.mark.parametrize("k", [1, 5, 30])
def test_real_methods_return_distinct_training_images(name, k):
    images = class_images()
    rows = row_indices(METHODS[name].obj(images, k, seed=3, backend="sklearn"), images)
    assert len(rows) == k and len(set(rows)) == k


def test_random_is_seeded():
    images = class_images()
    same = [row_indices(selection.random(images, 5, seed=s), images) for s in (7, 7, 8)]
    assert same[0] == same[1] and same[0] != same[2]


def brute_force_kcenter(points: np.ndarray, k: int) -> list[int]:
    dist = lambda a, b: float(np.sqrt(((a - b) ** 2).sum()))  # noqa: E731
    mean = points.mean(0)
    chosen = [min(range(len(points)), key=lambda i: dist(points[i], mean))]
    while len(chosen) < k:
        rest = [i for i in range(len(points)) if i not in chosen]
        chosen.append(max(rest, key=lambda i: min(dist(points[i], points[j]) for j in chosen)))
    return chosen


def test_kcenter_is_greedy_max_min_from_the_image_nearest_the_mean():
    images = class_images(n=14, shape=(1, 2, 3), seed=1)
    points = images.flatten(1).double().numpy()
    rows = row_indices(selection.kcenter(images, 6, seed=0), images)
    assert rows == brute_force_kcenter(points, 6)
    d = np.linalg.norm(points[:, None] - points[None], axis=2)
    for j in range(1, 6):
        reach = d[:, rows[:j]].min(1)  # every candidate's distance to the picks so far
        assert reach[rows[j]] == max(reach[i] for i in range(14) if i not in rows[:j])


def slow_herding(points: np.ndarray, k: int) -> list[int]:
    mean = points.mean(0)
    chosen: list[int] = []
    for _ in range(k):
        gap = {i: np.linalg.norm(points[chosen + [i]].mean(0) - mean) for i in range(len(points)) if i not in chosen}
        chosen.append(min(gap, key=gap.get))
    return chosen


def test_herding_matches_the_slow_reference_and_beats_random_subsets():
    images = class_images(n=25, shape=(1, 3, 3), seed=2)
    points = images.flatten(1).double().numpy()
    mean = points.mean(0)
    rows = row_indices(selection.herding(images, 8, seed=0), images)
    assert rows == slow_herding(points, 8)
    assert rows[0] == int(np.linalg.norm(points - mean, axis=1).argmin())
    rng = np.random.default_rng(0)
    for j in range(1, 9):
        herded = np.linalg.norm(points[rows[:j]].mean(0) - mean)
        random_sets = [np.linalg.norm(points[rng.choice(25, j, replace=False)].mean(0) - mean) for _ in range(200)]
        assert herded < np.mean(random_sets)


def test_kmeans_nearest_keeps_the_training_image_nearest_each_centroid():
    g = torch.Generator().manual_seed(4)
    centres = torch.randn(3, 1, 2, 2, generator=g) * 10
    images = (centres.repeat_interleave(8, 0) + torch.randn(24, 1, 2, 2, generator=g))
    picked = selection.kmeans_nearest(images, 3, seed=5, backend="sklearn")
    fitted, _ = cluster.kmeans(images.flatten(1), 3, seed=5, backend="sklearn")
    nearest = torch.cdist(fitted, images.flatten(1)).argmin(1)
    assert row_indices(picked, images) == nearest.tolist()


def test_nearest_distinct_gives_a_shared_nearest_point_to_the_closer_centre():
    centres = torch.tensor([[0.0], [0.2]])
    points = torch.tensor([[0.05], [1.0], [-3.0]])  # point 0 is nearest to both centres
    assert selection.nearest_distinct(centres, points).tolist() == [0, 1]


def normalised(images: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    mean, std = like.mean((0, 2, 3), keepdim=True), like.std((0, 2, 3), correction=0, keepdim=True)
    return (images - mean) / std


def test_dm_lowers_its_matching_loss_under_fixed_random_nets():
    g = torch.Generator().manual_seed(0)
    base = torch.rand(3, 3, 16, 16, generator=g)
    images = (base.repeat(20, 1, 1, 1) + 0.3 * torch.rand(60, 3, 16, 16, generator=g)).clamp(0, 1)
    nets = []
    for s in range(5):
        torch.manual_seed(100 + s)
        nets.append(dm.embedder((3, 16, 16)))

    def loss(syn: torch.Tensor) -> float:
        real = normalised(images, images)
        return float(np.mean([dm.matching_loss(net, real, normalised(syn, images)).item() for net in nets]))

    before = selection.random(images, 2, seed=1)  # DM's initialisation
    after = dm.dm(images, 2, seed=1, iterations=20)
    assert loss(after) < 0.75 * loss(before)
    assert torch.equal(after, dm.dm(images, 2, seed=1, iterations=20))  # seeded nets and batches


def test_pipeline_passes_dm_iterations_to_dm_only(monkeypatch):
    calls = []

    def record(images, k, *, seed, backend, **options):
        calls.append(options)
        return images[:k]

    for name in ("dm", "random"):
        entry = METHODS[name]
        monkeypatch.setitem(METHODS._entries, name, Entry(name, entry.description, record, entry.meta))
    x, y = class_images(n=8), torch.tensor([0, 1] * 4)
    for method in ("dm", "random"):
        cfg = TrialConfig(method=method, ipc=2, dm_iterations=7, modifier="none")
        pipeline.distill(cfg, x, y, 2, None, None, pipeline.Timer())
    assert calls == [{"iterations": 7}] * 2 + [{}] * 2
    with pytest.raises(ConfigError, match="dm-iterations"):
        TrialConfig(dm_iterations=0).validate()


def test_each_class_gets_its_own_picks_through_the_pipeline():
    x = torch.cat([class_images(n=6, seed=s) for s in (0, 1)])
    y = torch.tensor([0] * 6 + [1] * 6)
    for method in REAL:
        cfg = TrialConfig(method=method, ipc=3, modifier="none", backend="sklearn")
        images, labels = pipeline.distill(cfg, x, y, 2, None, "sklearn", pipeline.Timer())
        for image, label in zip(images, labels):
            assert any(torch.equal(image, row) for row in x[y == label])
        assert len({tuple(r.flatten().tolist()) for r in images}) == 6
        assert labels.tolist() == [0, 0, 0, 1, 1, 1]


def test_cli_has_a_dm_iterations_option(capsys):
    from raydistill.cli import main

    with pytest.raises(SystemExit):
        main(["run", "--help"])
    assert "--dm-iterations" in capsys.readouterr().out
