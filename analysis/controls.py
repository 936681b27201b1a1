"""Positive controls: our runs under the field's protocol (`dc`) beside the field's published
numbers (``published.csv``), and the paper's sets against random real images on that protocol
(DD-Ranking's improvement over random, IOR = acc(set) - acc(random)).

A published cell is *reproduced* when |ours - published| <= 2 x the larger of the two standard
deviations, or <= 1.5 percentage points (the rule fixed in the issue before any run). Only runs
under the reference protocol count: the full training split and the reference's epochs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from analysis.runs import one_setting, select
from raydistill.dc import reference_epochs

PUBLISHED_CSV = Path(__file__).with_name("published.csv")
BAND_PP = 1.5
STD_FACTOR = 2.0
SELECTIONS = (("random", "none", "random real"), ("kmeans", "none", "plain K-means"),
              ("kmeans", "grad-l1", "the paper's shifted K-means"))
DASH = "–"


def load_published(path: Path = PUBLISHED_CSV) -> pd.DataFrame:
    frame = pd.read_csv(path, dtype={"modifier": "str"}, keep_default_na=False)
    frame["ipc"] = frame["ipc"].astype(int)
    return frame


@dataclass(frozen=True)
class Pooled:
    """Accuracy over every evaluation model of some runs, in percent: mean, sample std, count."""

    mean: float
    std: float
    n: int

    def text(self) -> str:
        return f"{self.mean:.2f} ± {self.std:.2f}" if self.n > 1 else f"{self.mean:.2f}"


def pooled(runs: pd.DataFrame) -> Pooled | None:
    """Pool runs that each logged their models' mean accuracy, sample std and count (eval_sets x
    eval_runs): the exact mean and sample std (ddof 1) over all their models."""
    if runs.empty:
        return None
    n = (runs["eval_sets"].fillna(1) * runs["eval_runs"].fillna(1)).astype(float)
    means, stds = 100 * runs["accuracy"].astype(float), 100 * runs["accuracy_std"].fillna(0.0).astype(float)
    total = float(n.sum())
    mean = float((n * means).sum() / total)
    squares = float(((n - 1) * stds**2 + n * (means - mean) ** 2).sum())
    return Pooled(mean, math.sqrt(squares / (total - 1)) if total > 1 else 0.0, int(total))


def reproduced(diff: float, ours_std: float, published_std: float) -> bool:
    return abs(diff) <= STD_FACTOR * max(ours_std, published_std) or abs(diff) <= BAND_PP


def improvement(selected: Pooled, random: Pooled) -> tuple[float, float, float]:
    """IOR, its standard error and the spread of single-model differences: the difference of the
    means, sqrt(s1^2/n1 + s2^2/n2), and the two stds added in quadrature (the two sets' models are
    trained independently; models of one set share it, so the standard error is a lower bound)."""
    return (selected.mean - random.mean, math.sqrt(selected.std**2 / selected.n + random.std**2 / random.n),
            math.hypot(selected.std, random.std))


def reference_runs(cells: pd.DataFrame) -> pd.DataFrame:
    """dc-protocol runs on the full training split at the reference's epochs for their dataset."""
    runs = select(cells, protocol="dc")
    runs = runs[runs["train_limit"].isna()]
    return runs[[int(e) == reference_epochs(d) for d, e in zip(runs["dataset"], runs["student_epochs"], strict=True)]]


def _runs(runs: pd.DataFrame, dataset: str, ipc: int, method: str, modifier: str) -> pd.DataFrame:
    return one_setting(select(runs, dataset=dataset, ipc=ipc, method=method, modifier=modifier))


def comparison(cells: pd.DataFrame, published: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """One row per published cell we compare: ours, published, diff and the verdict; with the
    one-line summary "k of n cells within band"."""
    runs = reference_runs(cells)
    rows = []
    for cell in published[published["compared"] == "yes"].itertuples(index=False):
        mine = _runs(runs, cell.dataset, cell.ipc, cell.method, cell.modifier)
        ours = pooled(mine)
        diff = None if ours is None else ours.mean - cell.mean
        verdict = ("not run" if ours is None else
                   "reproduced" if reproduced(diff, ours.std, cell.std) else "missed")
        rows.append({"dataset": cell.dataset, "ipc": cell.ipc, "method": cell.method,
                     "ours": DASH if ours is None else ours.text(), "n": 0 if ours is None else ours.n,
                     "published": f"{cell.mean:.1f} ± {cell.std:.1f}", "diff (pp)": DASH if diff is None else f"{diff:+.2f}",
                     "verdict": verdict, "wall (h)": DASH if ours is None else f"{mine['time_total_s'].sum() / 3600:.2f}",
                     "source": cell.source, "checked": cell.checked})
    frame = pd.DataFrame(rows)
    measured = frame[frame["verdict"] != "not run"] if rows else frame
    within = int((measured["verdict"] == "reproduced").sum()) if rows else 0
    line = (f"the tool reproduces the field's baselines: {within} of {len(measured)} measured cells within band"
            + (f" ({len(frame) - len(measured)} not run yet)" if len(measured) < len(frame) else ""))
    return frame, line


def improvements(cells: pd.DataFrame) -> pd.DataFrame:
    """Per dataset and ipc: each selection's accuracy on the dc protocol and its IOR against
    random real images."""
    runs = reference_runs(cells)
    rows = []
    for (dataset, ipc), _ in runs.groupby(["dataset", "ipc"], sort=True):
        random = pooled(_runs(runs, dataset, int(ipc), "random", "none"))
        row = {"dataset": dataset, "ipc": int(ipc)}
        for method, modifier, label in SELECTIONS:
            mine = pooled(_runs(runs, dataset, int(ipc), method, modifier))
            row[f"{label}: accuracy"] = DASH if mine is None else f"{mine.text()} (n={mine.n})"
            if method != "random":
                ior = None if mine is None or random is None else improvement(mine, random)
                row[f"{label}: IOR (pp)"] = DASH if ior is None else f"{ior[0]:+.2f} ± {ior[1]:.2f} (spread {ior[2]:.2f})"
        rows.append(row)
    return pd.DataFrame(rows)
