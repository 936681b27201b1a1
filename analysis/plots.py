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
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from mlflow.exceptions import MlflowException

from analysis.paper import PaperNumbers
from analysis.runs import ordered, paper_method, select
from raydistill.artifacts import grid_figure

log = logging.getLogger(__name__)


def _slug(text: object) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", str(text)).strip("-")


MIN_SPAN_PP = 5.0  # narrowest y-axis, percentage points: a 0.08-point spread must not fill the panel
LOG_RATIO = 20.0  # log-scaled epochs once the largest epoch count shown is this many times the smallest


def accuracy_figures(cells: pd.DataFrame, paper: PaperNumbers) -> dict[int, Figure]:
    """One figure per ipc with runs of ours, one panel per dataset with runs of ours, one colour per model.

    Ours: mean ± std over seeds, solid with filled squares; the paper's values for the same models:
    dashed with hollow circles, labelled "claimed". Axes fit what is drawn (see ``_fit_axes``).
    """
    ours = paper_method(cells).dropna(subset=["ipc", "student_epochs", "accuracy"])
    ref = paper.rows(method="kmeans", metric="accuracy").dropna(subset=["ipc", "epochs"])
    ref = ref[ref["model"] != ""].drop_duplicates(["dataset", "model", "ipc", "epochs"])
    colour = {model: f"C{k}" for k, model in enumerate(ordered(list(ref["model"]), ours["model"]))}
    figures = {}
    for ipc in sorted(int(i) for i in ours["ipc"].unique()):
        ours_i, ref_i = select(ours, ipc=ipc), ref[ref["ipc"] == ipc]
        datasets = ordered(list(ref_i["dataset"]), ours_i["dataset_label"])
        datasets = [d for d in datasets if not select(ours_i, dataset_label=d).empty]
        fig = Figure(figsize=(4.8 * len(datasets), 4.0), layout="constrained")
        for ax, dataset in zip(fig.subplots(1, len(datasets), squeeze=False)[0], datasets, strict=True):
            ours_d, ref_d = select(ours_i, dataset_label=dataset), ref_i[ref_i["dataset"] == dataset]
            claimed_any = False
            for model in ordered(list(ref_d["model"]), ours_d["model"]):
                stats = 100 * select(ours_d, model=model).groupby("student_epochs")["accuracy"].agg(["mean", "std"])
                if stats.empty:
                    continue
                ax.errorbar(stats.index.astype(float), stats["mean"], yerr=stats["std"].fillna(0), fmt="-s",
                            color=colour[model], ms=5, capsize=3, label=f"{model}, ours (mean ± std)")
                claimed = ref_d[ref_d["model"] == model].sort_values("epochs")
                if not claimed.empty:
                    claimed_any = True
                    ax.plot(claimed["epochs"].astype(float), claimed["value"], "--o", color=colour[model], ms=5,
                            mfc="none", label=f"{model}, paper (claimed)")
            if not claimed_any:
                ax.text(0.02, 0.02, "the paper reports no value for these runs", transform=ax.transAxes,
                        fontsize="x-small", color="dimgrey")
            _fit_axes(ax)
            ax.set(title=dataset, ylabel="test accuracy (%)")
            ax.legend(fontsize="x-small")
        fig.suptitle(f"ipc {ipc} (distilled images per class)\nkmeans + grad-l1, paper protocol", fontsize="medium")
        figures[ipc] = fig
    return figures


def _fit_axes(ax: Axes) -> None:
    """x: log-scaled when the epochs drawn are far apart, ticks at each of them; y: at least
    ``MIN_SPAN_PP`` wide, kept inside 0-100 % where the data allow."""
    xs = np.concatenate([line.get_xdata() for line in ax.get_lines()]).astype(float)
    ys = np.concatenate([line.get_ydata() for line in ax.get_lines()]).astype(float)
    epochs = sorted(set(xs.tolist()))
    if epochs[0] > 0 and epochs[-1] / epochs[0] >= LOG_RATIO:
        ax.set_xscale("log")
        ax.set_xlim(epochs[0] / 1.3, epochs[-1] * 1.3)
        ax.set_xlabel("student epochs (log scale)")
    else:
        pad = max(0.5, 0.06 * (epochs[-1] - epochs[0]))
        ax.set_xlim(epochs[0] - pad, epochs[-1] + pad)
        ax.set_xlabel("student epochs")
    ax.set_xticks(epochs, [f"{e:g}" for e in epochs], fontsize="small", rotation=90 if len(epochs) > 6 else 0)
    ax.minorticks_off()
    low, high = float(np.nanmin(ys)), float(np.nanmax(ys))
    span = max(high - low, MIN_SPAN_PP)
    margin = 0.08 * span
    top = min((low + high + span) / 2 + margin, max(100.0, high) + margin)
    bottom = max(top - span - 2 * margin, min(0.0, low) - margin)
    ax.set_ylim(bottom, bottom + span + 2 * margin)


def accuracy_plots(cells: pd.DataFrame, paper: PaperNumbers, out: Path) -> list[Path]:
    """``accuracy_figures`` saved as ``accuracy_ipcN.png``."""
    paths = []
    for ipc, fig in accuracy_figures(cells, paper).items():
        fig.savefig(out / f"accuracy_ipc{ipc}.png", dpi=120)
        paths.append(out / f"accuracy_ipc{ipc}.png")
    return paths


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
        fig = grid_figure(data["images"].float().numpy(), data["labels"].numpy(), list(data["meta"]["classes"]), title)
        path = out / f"gallery_{_slug(run['dataset_label'])}_{_slug(run['model'])}.png"
        fig.savefig(path, dpi=150)
        paths.append(path)
    return paths
