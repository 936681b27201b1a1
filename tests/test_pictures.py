"""Honest pictures: image grids show pixels outside [0, 1] truthfully, accuracy plots' axes fit the data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.figure import Figure
from PIL import Image

from analysis.paper import load_paper
from analysis.plots import MIN_SPAN_PP, accuracy_figures
from raydistill.artifacts import grid_figure, image_grid

DPI = 100


def _render(fig: Figure, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The PNG as floats in [0, 1] (H, W, 3) and the mosaic's pixel box (x0, y0, x1, y1), top-left origin."""
    fig.savefig(path, dpi=DPI)
    png = np.asarray(Image.open(path).convert("RGB"), dtype=float) / 255
    box = fig.axes[0].images[0].get_window_extent().get_points()
    (x0, y0), (x1, y1) = np.round(box).astype(int)
    return png, np.array([x0, png.shape[0] - y1, x1, png.shape[0] - y0])


def _tile_centres(fig: Figure, png: np.ndarray, count: int, size: int) -> np.ndarray:
    """Colours at the centres of the first ``count`` tiles of the first row (tiles are size x size)."""
    ax = fig.axes[0]
    centres = ax.transData.transform([(j * (size + 1) + size / 2 - 0.5, size / 2 - 0.5) for j in range(count)])
    return np.array([png[png.shape[0] - int(round(y)), int(round(x))] for x, y in centres])


def _constant_tiles(values: np.ndarray, channels: int = 1, size: int = 8) -> np.ndarray:
    return np.broadcast_to(values[:, None, None, None], (len(values), channels, size, size)).astype(np.float32)


def test_negative_set_is_not_mostly_black(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    images = rng.uniform(-1.0, 0.5, size=(40, 1, 12, 12)).astype(np.float32)
    labels = np.repeat(np.arange(4), 10)
    fig = grid_figure(images, labels, ["a", "b", "c", "d"], "shifted")
    png, (x0, y0, x1, y1) = _render(fig, tmp_path / "grid.png")
    area = png[y0 + 2 : y1 - 2, x0 + 2 : x1 - 2]
    grey = area[np.ptp(area, axis=-1) < 0.02, 0]  # drop the light-blue gaps between tiles
    assert grey.size > 0.7 * area[..., 0].size
    assert np.mean(grey < 0.05) < 0.1  # clipping to [0, 1] would make two thirds of them black
    assert np.mean(np.clip(images, 0, 1) < 0.05) > 0.6
    title = fig.texts[0].get_text()
    assert f"{images.min():.2f}..{images.max():.2f}" in title and "not clipped" in title and "shifted" in title


@pytest.mark.parametrize(
    ("values", "lo", "hi"),
    [
        (np.linspace(-1.2, 0.9, 8), -1.2, 1.0),
        (np.linspace(0.1, 0.9, 8), 0.0, 1.0),
        (np.linspace(-0.5, 3.0, 8), -0.5, 3.0),
    ],
    ids=["negative", "within-0-1", "above-1"],
)
def test_grey_levels_are_linear_in_the_values(tmp_path: Path, values: np.ndarray, lo: float, hi: float) -> None:
    """Distinct values get distinct grey levels on one linear scale: the set's range joined with [0, 1]
    (a set inside [0, 1] is not stretched)."""
    fig = grid_figure(_constant_tiles(values), np.zeros(8, dtype=int), ["only"], "")
    png, _ = _render(fig, tmp_path / "grid.png")
    colours = _tile_centres(fig, png, 8, 8)
    assert np.ptp(colours, axis=1).max() < 0.01  # grey
    assert np.all(np.diff(colours[:, 0]) > 4 / 255)
    np.testing.assert_allclose(colours[:, 0], (values - lo) / (hi - lo), atol=0.02)
    title = fig.texts[0].get_text()
    assert f"{values.min():.2f}..{values.max():.2f}" in title and f"black {lo:.2f}, white {hi:.2f}" in title
    ticks = fig.axes[1].get_yticks()
    assert all(np.isclose(ticks, tick, atol=1e-6).any() for tick in (lo, 0.0, hi))  # the bar marks 0 and both ends


def test_rgb_channels_share_one_scale(tmp_path: Path) -> None:
    values = np.linspace(-0.5, 1.5, 6)
    images = _constant_tiles(values, channels=3)
    images[:, 1] = images[:, 0] / 2  # green: half of red, on the same scale
    fig = grid_figure(images, np.zeros(6, dtype=int), ["only"], "rgb")
    png, _ = _render(fig, tmp_path / "grid.png")
    colours = _tile_centres(fig, png, 6, 8)
    np.testing.assert_allclose(colours[:, 0], (values + 0.5) / 2.0, atol=0.02)
    np.testing.assert_allclose(colours[:, 1], (values / 2 + 0.5) / 2.0, atol=0.02)
    assert "pixel values -0.50..1.50" in fig.texts[0].get_text()
    assert len(fig.axes) == 1  # no grey colour bar for colour images


def test_trial_image_grid_writes_png(tmp_path: Path) -> None:
    images = torch.rand(6, 1, 10, 10) - 0.8
    path = image_grid(images, torch.tensor([0, 0, 0, 1, 1, 1]), ["x", "y"], tmp_path / "distilled.png")
    with Image.open(path) as png:
        assert png.size[0] > 100 and png.size[1] > 100


def _cells(*rows: tuple) -> pd.DataFrame:
    """Finished paper-method runs (dataset, model, ipc, epochs, accuracy, protocol) as analysis.runs gives them."""
    frame = pd.DataFrame(rows, columns=["dataset_label", "model", "ipc", "student_epochs", "accuracy", "protocol"])
    frame = frame.assign(method="kmeans", modifier="grad-l1")
    return frame.astype({"ipc": "Int64", "student_epochs": "Int64"})


def _axes_fraction(ax, xs: list[float]) -> np.ndarray:
    return (ax.transData + ax.transAxes.inverted()).transform([(x, ax.get_ylim()[0]) for x in xs])[:, 0]


SMOKE = _cells(
    ("fashion-mnist", "baseline", 1, 1, 0.1000, "paper"),
    ("fashion-mnist", "baseline", 1, 3, 0.1008, "paper"),
    ("fashion-mnist", "baseline", 10, 1, 0.1000, "paper"),
    ("fashion-mnist", "baseline", 10, 3, 0.3255, "paper"),
    ("fashion-mnist", "baseline", 50, 3, 0.4000, "dc"),  # not the paper's method: no ipc-50 figure
)


def test_plots_only_where_we_have_runs() -> None:
    figures = accuracy_figures(SMOKE, load_paper())
    assert sorted(figures) == [1, 10]
    for fig in figures.values():
        assert [ax.get_title() for ax in fig.axes] == ["fashion-mnist"]  # no mnist or cifar10 panel


def test_epoch_axis_fits_our_epochs_beside_the_papers() -> None:
    ax = accuracy_figures(SMOKE, load_paper())[10].axes[0]
    assert ax.get_xscale() == "log"
    ours = _axes_fraction(ax, [1, 3])
    paper = _axes_fraction(ax, [200, 600])
    assert 0 < ours[0] and ours[1] - ours[0] > 0.1 and paper[1] < 1  # not squeezed at x = 0 of 0-600
    (claimed,) = [line for line in ax.get_lines() if line.get_label() == "baseline, paper (claimed)"]
    (ours_line,) = [c.lines[0] for c in ax.containers if c.get_label() == "baseline, ours (mean ± std)"]
    assert claimed.get_linestyle() == "--" and claimed.get_markerfacecolor() == "none"
    assert ours_line.get_linestyle() == "-" and ours_line.get_markerfacecolor() != "none"
    assert ax.get_ylim()[0] < 10 and ax.get_ylim()[1] > 99.7  # ours and the paper's claims both in view


def test_accuracy_axis_has_a_minimum_span() -> None:
    ax = accuracy_figures(SMOKE, load_paper())[1].axes[0]
    low, high = ax.get_ylim()
    assert high - low >= MIN_SPAN_PP and low < 10.0 and high > 10.08
    assert ax.get_xscale() == "linear" and ax.get_xlim()[0] < 1 and ax.get_xlim()[1] > 3
    assert any("no value" in text.get_text() for text in ax.texts)  # the paper has no ipc-1 numbers


def test_close_epochs_stay_linear() -> None:
    cells = _cells(("mnist", "lenet", 10, 200, 0.97, "paper"), ("mnist", "lenet", 10, 400, 0.98, "paper"))
    ax = accuracy_figures(cells, load_paper())[10].axes[0]
    assert ax.get_xscale() == "linear" and ax.get_xlim()[0] < 200 and ax.get_xlim()[1] > 600
    assert ax.get_ylim()[1] <= 101 and ax.get_ylim()[1] - ax.get_ylim()[0] >= MIN_SPAN_PP
