"""The paper's claims, cell by cell, beside our honest runs: mean ± std, n, a 95 % interval and a
verdict (the printed value inside or outside the interval), or why the cell was not measured.

- Claims: every printed accuracy of Tables 1-3, the paper's own method ("Ours") in Table 4 and
  every printed rate of Table 5 (``paper_numbers.csv``), and the abstract's four headline numbers
  (``paper_text.csv``, which names the cells they stand for).
- Ours: FINISHED honest runs of the paper protocol with the same dataset, model, method, ipc and
  student epochs (Table 4 names no model: the model with the highest mean).
- 95 % interval: where one run like the paper's printed one would fall. When n >= 2, the
  prediction interval over seeds (Student's t: mean ± t(0.975, n-1) s sqrt(1 + 1/n)); with n = 1
  the binomial (Wilson) interval of one accuracy on the test set's N images, which holds the
  test-set sampling error only, not the seed's: its verdict is marked as such.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd
from scipy import stats

from analysis.audit import load_test_sets
from analysis.paper import PaperNumbers
from analysis.runs import one_setting, select

CONFIDENCE = 0.95
NOT_HERE = {  # why a dataset or model was not measured on the machines these runs had (CPU only, offline)
    "cifar10": "not measured: no byte-exact copy of CIFAR-10 could be obtained offline",
    "ocid": "not measured: the OCID images were not available",
    "resnet34": "not measured: ResNet-34 is GPU-sized and no GPU was lent to these runs",
}
TABLES = {1: "kmeans", 2: "kmeans", 3: None, 4: "kmeans", 5: None}  # the methods of the paper that are claims


@dataclass(frozen=True)
class Interval:
    """Our value for a claim, in percent: mean, sample std (n >= 2), n and the 95 % interval."""

    mean: float
    std: float | None
    n: int
    low: float
    high: float
    kind: str  # "prediction, t over seeds" or "binomial, n = 1"

    def text(self) -> str:
        return f"{self.mean:.2f}" if self.std is None else f"{self.mean:.2f} ± {self.std:.2f}"


def interval(fractions: pd.Series, test_images: int) -> Interval | None:
    """The 95 % interval of some runs' accuracies (fractions) as the module docstring says."""
    values = 100 * fractions.dropna().astype(float)
    if values.empty:
        return None
    n, mean = len(values), float(values.mean())
    if n >= 2:
        std = float(values.std(ddof=1))
        half = float(stats.t.ppf(0.5 + CONFIDENCE / 2, n - 1)) * std * math.sqrt(1 + 1 / n)
        return Interval(mean, std, n, mean - half, mean + half, "prediction, t over seeds")
    right = round(mean / 100 * test_images)
    ci = stats.binomtest(right, test_images).proportion_ci(CONFIDENCE, method="wilson")
    return Interval(mean, None, 1, 100 * ci.low, 100 * ci.high, "binomial, n = 1")


def ours_for(cells: pd.DataFrame, claim: pd.Series) -> tuple[pd.DataFrame, str]:
    """Our runs for one printed cell, and the model they are of."""
    if cells.empty:
        return cells, claim["model"]
    method = "kmeans" if claim["method"] == "kmeans" else "full"
    runs = select(cells, dataset_label=claim["dataset"], method=method, protocol="paper")
    if method == "kmeans":
        runs = select(runs, modifier="grad-l1", ipc=int(claim["ipc"]))
    runs = select(runs, student_epochs=int(claim["epochs"])) if not pd.isna(claim["epochs"]) else runs.iloc[0:0]
    if claim["model"]:
        return one_setting(select(runs, model=claim["model"])), claim["model"]
    means = runs.groupby("model")["accuracy"].mean()
    return (runs.iloc[0:0], "") if means.empty else (one_setting(select(runs, model=means.idxmax())),
                                                     str(means.idxmax()))


def reason(claim: pd.Series) -> str:
    """Why a printed cell has no run of ours."""
    for key in (claim["dataset"], claim["model"]):
        if key in NOT_HERE:
            return NOT_HERE[key]
    if claim["table"] == 4:
        return f"not measured: {int(claim['epochs'])} epochs were not run on the CPU (the grid stops at 600)"
    return "not measured yet: its cell has not finished (the sweep continues it)"


def verdict(paper: float, ours: Interval | None, why: str) -> str:
    if ours is None:
        return why
    caveat = "; n = 1: test-set sampling only" if ours.n == 1 else ""
    if ours.low <= paper <= ours.high:
        return f"inside{f' ({caveat[2:]})' if caveat else ''}"
    return f"outside ({'ours lower' if ours.mean < paper else 'ours higher'} by {abs(ours.mean - paper):.2f} pp{caveat})"


def claim_rows(cells: pd.DataFrame, paper: PaperNumbers) -> pd.DataFrame:
    """One row per printed claim of Tables 1-5 with ours, the interval and the verdict."""
    rows = []
    test_images = load_test_sets().groupby("dataset")["images"].sum().to_dict()
    printed = paper.frame[paper.frame["table"].isin(TABLES)]
    printed = printed[[TABLES[t] in (None, m) for t, m in zip(printed["table"], printed["method"], strict=True)]]
    for _, claim in printed.iterrows():
        runs, model = ours_for(cells, claim)
        metric = claim["metric"]
        ours = interval(runs[metric], test_images[claim["dataset"]]) if len(runs) else None
        images = sorted({"all" if pd.isna(v) else f"{int(v):,}" for v in runs["train_limit"]}) if len(runs) else []
        rows.append({
            "table": int(claim["table"]), "dataset": claim["dataset"], "model": claim["model"] or model or "–",
            "set": "full training set" if claim["method"] == "full" else f"distilled, ipc {int(claim['ipc'])}",
            "epochs": "NA" if pd.isna(claim["epochs"]) else int(claim["epochs"]), "metric": metric,
            "paper (%)": f"{claim['value']:.{int(claim['decimals'])}f}", "ours (%)": "–" if ours is None else ours.text(),
            "n": 0 if ours is None else ours.n, "training images (ours)": ", ".join(images) or "–",
            "95 % interval": "–" if ours is None else f"{ours.low:.2f} – {ours.high:.2f} ({ours.kind})",
            "verdict": verdict(float(claim["value"]), ours, reason(claim)), "source": claim["source"],
            "_mean": None if ours is None else ours.mean, "_std": None if ours is None else ours.std,
        })
    return pd.DataFrame(rows)


def headline_rows(claims: pd.DataFrame, text: pd.DataFrame) -> pd.DataFrame:
    """The abstract's headline accuracies: each with the Table 4 / Table 5 claim it stands for,
    and our nearest measured cell (same dataset and ipc, the most epochs we ran)."""
    rows = []
    for row in text[text["where"] == "Abstract"].itertuples(index=False):
        selector = dict(word.split("=", 1) for word in row.cells.split())
        dataset = selector.get("dataset", "ocid")
        same = claims[(claims["dataset"] == dataset) & (claims["metric"] == "accuracy")]
        ipc = selector.get("ipc")
        nearest = same[same["_mean"].notna() & (same["set"] == f"distilled, ipc {ipc}")] if ipc else same.iloc[0:0]
        nearest = nearest[nearest["table"] != 4]
        best = nearest.sort_values(["epochs", "_mean"]).iloc[-1] if len(nearest) else None
        rows.append({
            "claim": f"{row.value}% on {dataset}", "stands for": f"Table {selector['table']}" + (
                f", ipc {ipc}, 1000 epochs" if ipc else ", the highest distilled accuracy"),
            "verdict": (NOT_HERE[dataset] if dataset in NOT_HERE else
                        "not measured at its settings: 1000 epochs were not run on the CPU"),
            "nearest measured (ours)": "–" if best is None else
            f"{best['ours (%)']} (n={best['n']}, {best['model']}, {best['epochs']} epochs; paper there: "
            f"{best['paper (%)']}, {best['verdict']})",
        })
    return pd.DataFrame(rows)


def tally(claims: pd.DataFrame) -> pd.DataFrame:
    """Per table: claims, measured, inside, outside, not measured."""
    rows = []
    for table, group in claims.groupby("table"):
        measured = group[group["_mean"].notna()]
        inside = int(measured["verdict"].str.startswith("inside").sum())
        rows.append({"table": f"Table {table}", "printed claims": len(group), "measured": len(measured),
                     "paper inside our 95 % interval": inside, "outside": len(measured) - inside,
                     "not measured": len(group) - len(measured)})
    return pd.DataFrame(rows)


def _span(values: pd.Series, fmt: str = "{:.2f}") -> str:
    low, high = values.min(), values.max()
    return fmt.format(low) if low == high else f"{fmt.format(low)} to {fmt.format(high)}"


def by_row(claims: pd.DataFrame) -> pd.DataFrame:
    """The measured accuracy claims, one line per row of the paper's tables (table, dataset, model,
    set) over the epochs measured: the printed values, ours (each cell's mean), n, the largest
    spread over seeds (sample std; '–' when every cell has one run), the gaps and how many of the
    printed values lie inside our 95 % interval."""
    measured = claims[claims["_mean"].notna() & (claims["metric"] == "accuracy")]
    rows = []
    for (table, dataset, model, kind), group in measured.groupby(["table", "dataset", "model", "set"], sort=True):
        paper = pd.to_numeric(group["paper (%)"])
        spreads = group["_std"].dropna()
        rows.append({
            "table": table, "dataset": dataset, "model": model, "set": kind,
            "epochs": ", ".join(str(e) for e in sorted(group["epochs"])), "paper (%)": _span(paper),
            "ours (%)": _span(group["_mean"]), "n": _span(group["n"], "{:d}"),
            "spread over seeds (pp)": f"{spreads.max():.2f}" if len(spreads) else "–",
            "ours − paper (pp)": _span(group["_mean"] - paper, "{:+.2f}"),
            "paper inside our 95 % interval": f"{int(group['verdict'].str.startswith('inside').sum())} of {len(group)}",
        })
    return pd.DataFrame(rows)
