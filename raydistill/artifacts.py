"""Files a trial leaves behind: the distilled set (.pt), result JSON, and PNG figures.

Figures are drawn on ``matplotlib.figure.Figure`` (Agg canvas): no pyplot state, no GUI backend.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib
import numpy as np
import torch
from matplotlib.figure import Figure
from sklearn.metrics import ConfusionMatrixDisplay, RocCurveDisplay

if TYPE_CHECKING:
    from raydistill.pipeline import TrialResult

GAP = (0.75, 0.85, 1.0)  # light blue between tiles: not a grey level, so never mistaken for a pixel value


def export_distilled(result: TrialResult, path: Path) -> Path:
    """{'images': float32 (n,C,H,W) in [0,1] units before normalisation, 'labels', 'meta'};
    loads with torch.load(path, weights_only=True)."""
    torch.save({"images": result.images.float().contiguous(), "labels": result.labels.long(), "meta": result.meta}, path)
    return path


def write_result(result: TrialResult, path: Path) -> Path:
    path.write_text(json.dumps(result.summary(), indent=2))
    return path


def display_range(images: np.ndarray) -> tuple[float, float, float, float]:
    """(min, max) of the set's finite values and the display scale (lo, hi) = that range joined with [0, 1].

    The gradient shift of Eq. 2 leaves most pixels negative; clipping to [0, 1] would draw them as
    solid black. Joining with [0, 1] keeps an ordinary image set looking as usual (no stretching).
    """
    finite = images[np.isfinite(images)]
    vmin, vmax = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    return vmin, vmax, min(vmin, 0.0), max(vmax, 1.0)


def grid_figure(
    images: np.ndarray, labels: np.ndarray, classes: Sequence[str], title: str = "", max_per_class: int = 10
) -> Figure:
    """A mosaic with one row per class and up to ``max_per_class`` of its images, nothing clipped.

    All images and channels share one linear scale from ``display_range``; grey sets get a colour
    bar with 0 marked, and the last title lines state the values and the scale. Laid out by hand
    in inches: matplotlib's layout engines misplace a fixed-aspect image beside a colour bar.
    """
    _, channels, h, w = images.shape
    vmin, vmax, lo, hi = display_range(images)
    rows = sorted(set(labels.tolist()))
    names = [classes[r] if r < len(classes) else str(r) for r in rows]
    cols = min(max_per_class, max(int((labels == r).sum()) for r in rows))
    mosaic = np.full((len(rows) * (h + 1) - 1, cols * (w + 1) - 1, channels), np.nan)
    for i, r in enumerate(rows):
        for j, k in enumerate(np.flatnonzero(labels == r)[:cols]):
            mosaic[i * (h + 1) : i * (h + 1) + h, j * (w + 1) : j * (w + 1) + w] = images[k].transpose(1, 2, 0)
    grey = channels == 1
    scale = (f"black {lo:.2f}, white {hi:.2f}, not clipped" if grey
             else f"channels scaled together {lo:.2f}..{hi:.2f} -> 0..1, not clipped")
    caption = f"pixel values {vmin:.2f}..{vmax:.2f}, mean {float(np.nanmean(images)):.2f}\n{scale}"
    text = f"{title}\n{caption}" if title else caption

    inch = min(1.5, max(0.45, h / 60)) / (h + 1)  # inches per mosaic pixel: tiles of 0.45-1.5 in
    width, height = mosaic.shape[1] * inch, mosaic.shape[0] * inch
    left, right = 0.25 + 0.065 * max(map(len, names)), 1.3 if grey else 0.2
    top, bottom = 0.2 + 0.17 * len(text.splitlines()), 0.15
    fig_w = max(left + width + right, 0.3 + 0.065 * max(map(len, text.splitlines())))
    fig_h = top + height + bottom
    x0 = (fig_w - (left + width + right)) / 2 + left
    fig = Figure(figsize=(fig_w, fig_h))
    ax = fig.add_axes((x0 / fig_w, bottom / fig_h, width / fig_w, height / fig_h))
    if grey:
        cmap = matplotlib.colormaps["gray"].with_extremes(bad=GAP)
        shown = ax.imshow(mosaic[..., 0], cmap=cmap, vmin=lo, vmax=hi, interpolation="nearest")
        bar = fig.colorbar(shown, cax=fig.add_axes(((x0 + width + 0.2) / fig_w, bottom / fig_h, 0.15 / fig_w,
                                                    height / fig_h)), ticks=sorted({lo, 0.0, 1.0, hi}), format="%.2f")
        bar.set_label("pixel value (0 in red)", fontsize="small")
        bar.ax.tick_params(labelsize="small")
        bar.ax.axhline(0.0, color="red", lw=1.5)
    else:
        rgb = np.clip((mosaic - lo) / (hi - lo), 0.0, 1.0)
        rgb[np.isnan(mosaic).any(axis=-1)] = GAP
        ax.imshow(rgb, interpolation="nearest")
    ax.set_yticks([i * (h + 1) + h / 2 for i in range(len(rows))], names, fontsize="small")
    ax.set_xticks([])
    fig.suptitle(text, fontsize="small", y=1 - 0.08 / fig_h, va="top")
    return fig


def image_grid(images: torch.Tensor, labels: torch.Tensor, classes: list[str], path: Path,
               title: str = "distilled images", max_per_class: int = 10) -> Path:
    """``grid_figure`` of a trial's distilled set, saved as PNG."""
    grid_figure(images.float().numpy(), labels.numpy(), classes, title, max_per_class).savefig(path, dpi=100)
    return path


def confusion_figure(result: TrialResult, path: Path) -> Path:
    fig = Figure(figsize=(6, 5), layout="tight")
    ConfusionMatrixDisplay(np.asarray(result.metrics["confusion"]), display_labels=result.classes).plot(
        ax=fig.subplots(), colorbar=False, xticks_rotation=45)
    fig.savefig(path, dpi=80)
    return path


def roc_figure(result: TrialResult, path: Path, positive: int) -> Path:
    """Binary: the positive class's ROC; more classes: one-vs-rest curve per class."""
    fig = Figure(figsize=(5, 5), layout="tight")
    ax = fig.subplots()
    targets = [positive] if len(result.classes) == 2 else range(len(result.classes))
    for c in targets:
        RocCurveDisplay.from_predictions(result.y_true == c, result.proba[:, c], name=result.classes[c], ax=ax,
                                         plot_chance_level=c == targets[0])
    fig.savefig(path, dpi=80)
    return path


def write_all(result: TrialResult, out: Path, positive: int) -> dict[str, Path]:
    """Every artifact of a trial into `out`; returns name -> path."""
    out.mkdir(parents=True, exist_ok=True)
    files = {"result.json": write_result(result, out / "result.json"),
             "confusion.png": confusion_figure(result, out / "confusion.png"),
             "roc.png": roc_figure(result, out / "roc.png", positive)}
    if len(result.labels):
        files["distilled.pt"] = export_distilled(result, out / "distilled.pt")
        files["distilled.png"] = image_grid(result.images, result.labels, result.classes, out / "distilled.png")
    return files
