"""PNG figures: accuracy against epochs (ours beside the paper) and galleries of distilled images.

Figures are drawn with ``matplotlib.figure.Figure`` (Agg canvas), so no GUI backend is touched.
"""

from __future__ import annotations

import logging
import re
import tempfile
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from mlflow.exceptions import MlflowException

from analysis.paper import PaperNumbers
from analysis.runs import ordered, paper_method, select

log = logging.getLogger(__name__)


def _slug(text: object) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", str(text)).strip("-")


def accuracy_plots(cells: pd.DataFrame, paper: PaperNumbers, out: Path) -> list[Path]:
    """One figure per ipc, one subplot per dataset: paper (dashed) and ours (mean ± std) per model."""
    ours = paper_method(cells)
    ref = paper.rows(method="kmeans", metric="accuracy").dropna(subset=["ipc", "epochs"])
    ref = ref[ref["model"] != ""].drop_duplicates(["dataset", "model", "ipc", "epochs"])
    paths = []
    for ipc in ordered(sorted(ref["ipc"].unique()), ours["ipc"]):
        ref_i, ours_i = ref[ref["ipc"] == ipc], select(ours, ipc=ipc)
        datasets = ordered(list(ref_i["dataset"]), ours_i["dataset_label"])
        fig = Figure(figsize=(4.5 * len(datasets), 3.8), layout="constrained")
        for ax, dataset in zip(fig.subplots(1, len(datasets), squeeze=False)[0], datasets, strict=True):
            ref_d, ours_d = ref_i[ref_i["dataset"] == dataset], select(ours_i, dataset_label=dataset)
            for k, model in enumerate(ordered(list(ref_d["model"]), ours_d["model"])):
                p = ref_d[ref_d["model"] == model].sort_values("epochs")
                if not p.empty:
                    ax.plot(p["epochs"], p["value"], "--o", color=f"C{k}", ms=3, label=f"{model} (paper)")
                stats = 100 * select(ours_d, model=model).groupby("student_epochs")["accuracy"].agg(["mean", "std"])
                if not stats.empty:
                    ax.errorbar(
                        stats.index,
                        stats["mean"],
                        yerr=stats["std"].fillna(0),
                        fmt="-s",
                        color=f"C{k}",
                        ms=3,
                        capsize=2,
                        label=f"{model} (ours)",
                    )
            ax.set(title=dataset, xlabel="epochs", ylabel="test accuracy (%)")
            ax.legend(fontsize="x-small")
        fig.suptitle(f"{ipc} distilled images per class")
        path = out / f"accuracy_ipc{ipc}.png"
        fig.savefig(path, dpi=120)
        paths.append(path)
    return paths


def image_grid(
    images: np.ndarray, labels: np.ndarray, classes: list[str], title: str, max_per_class: int = 10
) -> Figure:
    """A mosaic with one row per class and up to ``max_per_class`` images of it (clipped to [0, 1])."""
    rows = sorted(set(labels.tolist()))
    _, c, h, w = images.shape
    pixels = np.clip(images, 0.0, 1.0).transpose(0, 2, 3, 1)
    pixels = pixels if c == 3 else np.repeat(pixels[..., :1], 3, axis=-1)
    cols = min(max_per_class, max(int((labels == r).sum()) for r in rows))
    mosaic = np.ones((len(rows) * (h + 1), cols * (w + 1), 3))
    for i, r in enumerate(rows):
        for j, k in enumerate(np.flatnonzero(labels == r)[:cols]):
            mosaic[i * (h + 1) : i * (h + 1) + h, j * (w + 1) : j * (w + 1) + w] = pixels[k]
    fig = Figure(figsize=(max(3.5, 1 + 0.5 * cols), 0.8 + 0.5 * len(rows)), layout="constrained")
    ax = fig.subplots()
    ax.imshow(mosaic, interpolation="nearest")
    ax.set_yticks(
        [i * (h + 1) + h / 2 for i in range(len(rows))],
        [classes[r] if r < len(classes) else str(r) for r in rows],
        fontsize="small",
    )
    ax.set_xticks([])
    ax.set_title(title, fontsize="small")
    return fig


def galleries(cells: pd.DataFrame, out: Path, tracking_uri: str | None = None) -> list[Path]:
    """For each (dataset, model) render ``distilled.pt`` of one run: lowest seed first, then the
    paper's method, smallest ipc and most epochs. Runs without the artifact are skipped."""
    runs = cells[cells["method"] != "full"].assign(other=lambda d: ~d.index.isin(paper_method(d).index))
    runs = runs.sort_values(["seed", "other", "ipc", "student_epochs"], ascending=[True, True, True, False])
    paths = []
    for _, run in runs.groupby(["dataset_label", "model"], sort=True).head(1).iterrows():
        with tempfile.TemporaryDirectory() as tmp:
            try:
                local = mlflow.artifacts.download_artifacts(
                    run_id=run["run_id"], artifact_path="distilled.pt", dst_path=tmp, tracking_uri=tracking_uri
                )
            except (MlflowException, OSError) as err:
                log.warning("no distilled.pt for run %s: %s", run["run_id"], err)
                continue
            data = torch.load(local, weights_only=True)
        title = (
            f"{run['dataset_label']} / {run['model']}: {run['method']}+{run['modifier']}\n"
            f"ipc {run['ipc']}, {run['student_epochs']} epochs, seed {run['seed']}"
        )
        fig = image_grid(data["images"].float().numpy(), data["labels"].numpy(), list(data["meta"]["classes"]), title)
        path = out / f"gallery_{_slug(run['dataset_label'])}_{_slug(run['model'])}.png"
        fig.savefig(path, dpi=150)
        paths.append(path)
    return paths
