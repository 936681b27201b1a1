"""Forensics verdict: which reading of the paper's protocol, if any, reproduces its MNIST and Fashion-MNIST numbers.

    python analysis/verdict.py --experiment NAME --out DIR [--tracking-uri URI]

Every row but the honest protocol's is a hypothesis about how the paper may have been evaluated,
not a result. The rules below were fixed before any forensics run and are not tuned afterwards.

- Cells: FINISHED runs on ``mnist`` or ``fashion-mnist`` under protocol ``paper`` that belong to
  Tables 1-3: the paper's method (``kmeans`` + ``grad-l1``, ipc 10 or 50, any model) and
  full-data runs (``method = full``). A cell is (dataset, model, method, ipc, student epochs); its
  value is the mean test accuracy of its runs (seeds), in percent.
- MAE: the mean absolute difference, in percentage points, between a cell's value and the paper's
  printed value, over the cells the paper prints (Tables 1-3; Table 1's 200-epoch Baseline cell
  is Table 3's too and counts once), over both datasets and for each.
- (a) rising with epochs: every distilled series (model, ipc) with at least two epoch points
  never falls by more than 0.5 pp between consecutive points and ends above where it starts.
- (b) distilled close to full data: at every epoch count above 20 where both Table 3 cells
  (Baseline, distilled ipc 10 and full data) were measured, distilled >= full - 2 pp.
- (c) Table 3's low early values: at 10 and at 20 epochs, where both were measured, distilled
  is at least 15 pp below full data (the paper prints 53.70 vs 88.89 and 70.55 vs 87.57).
- Table 3's full-data side under a hypothesis that sets a knob a full-data student cannot take
  (``student_init``: it has no teacher to start from) is the same hypothesis without that knob:
  ``score_on=train+student_init=teacher`` pairs with ``score_on=train``'s full-data cells.
- Each shape is checked on every dataset's series and pairs: yes when it holds on all of them,
  no when it fails on one, n/a when no cell pair or series allows the check.
- A hypothesis reproduces the paper when its MAE is at most 2 pp and all three shapes are yes.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
from itertools import pairwise

import numpy as np
import pandas as pd

from analysis.paper import PaperNumbers, load_paper
from analysis.runs import HONEST, load_cells, select
from raydistill.config import TEACHER_ONLY_KNOBS

DATASETS = ("mnist", "fashion-mnist")  # the paper's datasets that can be measured here
RISE_TOL_PP = 0.5
CLOSE_PP = 2.0
LOW_PP = 15.0
EARLY_EPOCHS = (10, 20)
REPRODUCE_MAE_PP = 2.0
HONEST_LABEL = "honest protocol (not a hypothesis)"
TITLE = ("Forensics (hypotheses, not results): which reading of the protocol reproduces the paper's MNIST and "
         "Fashion-MNIST numbers")
SHAPES = {  # column title, short name for the paragraph
    "rising": (f"(a) rising with epochs (no drop > {RISE_TOL_PP:g} pp)", "rising"),
    "close": (f"(b) distilled >= full - {CLOSE_PP:g} pp (Table 3, > 20 epochs)", "close to full data"),
    "low": (f"(c) distilled >= {LOW_PP:g} pp below full at 10 and 20 epochs", "low at 10 and 20 epochs"),
}
NA = "n/a"


def load_verdict_runs(experiment: str, tracking_uri: str | None = None) -> pd.DataFrame:
    """Honest and forensics cell runs of ``experiment`` in one frame (``hypothesis`` tells them apart)."""
    return pd.concat(
        [load_cells(experiment, tracking_uri), load_cells(experiment, tracking_uri, forensics=True)], ignore_index=True
    )


def table_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs that measure an MNIST or Fashion-MNIST cell of Tables 1-3 (see the rules above)."""
    mine = select(runs, protocol="paper").dropna(subset=["accuracy", "student_epochs"])
    mine = mine[mine["dataset_label"].isin(DATASETS)]
    distilled = select(mine, method="kmeans", modifier="grad-l1")
    return pd.concat([distilled[distilled["ipc"].isin([10, 50])], select(mine, method="full")])


def table_cells(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per hypothesis and cell: mean accuracy in percent (``value``) and number of ``runs``."""
    kept = table_runs(runs).assign(pct=lambda f: 100 * f["accuracy"])
    keys = ["hypothesis", "dataset_label", "model", "method", "ipc", "student_epochs"]
    cells = kept.groupby(keys, dropna=False).agg(value=("pct", "mean"), runs=("pct", "size")).reset_index()
    return cells.rename(columns={"student_epochs": "epochs", "dataset_label": "dataset"})


def rising(cells: pd.DataFrame) -> bool | None:
    """Shape (a) on one hypothesis's cells; ``None`` when no series has two epoch points."""
    verdicts = [
        all(b >= a - RISE_TOL_PP for a, b in pairwise(values)) and values[-1] > values[0]
        for _, series in cells[cells["method"] == "kmeans"].assign(dataset=_datasets(cells))
        .groupby(["dataset", "model", "ipc"])
        if len(values := list(series.sort_values("epochs")["value"])) >= 2
    ]
    return all(verdicts) if verdicts else None


def table3_pairs(cells: pd.DataFrame) -> pd.DataFrame:
    """Baseline distilled (ipc 10) beside full data at the same epochs: columns epochs, distilled, full."""
    cells = cells.assign(dataset=_datasets(cells))
    baseline = cells[cells["model"] == "baseline"]
    distilled = baseline[(baseline["method"] == "kmeans") & (baseline["ipc"] == 10)]
    full = baseline[baseline["method"] == "full"]
    columns = ["dataset", "epochs", "value"]
    return distilled[columns].merge(full[columns], on=["dataset", "epochs"], suffixes=("_distilled", "_full"))


def _datasets(cells: pd.DataFrame) -> pd.Series:
    """The cells' dataset (hand-made cells without one are one dataset)."""
    return cells["dataset"] if "dataset" in cells else pd.Series("", index=cells.index)


def close_to_full(cells: pd.DataFrame) -> bool | None:
    """Shape (b); ``None`` without a Table 3 pair above 20 epochs."""
    pairs = table3_pairs(cells)
    pairs = pairs[pairs["epochs"] > max(EARLY_EPOCHS)]
    return None if pairs.empty else bool((pairs["value_distilled"] >= pairs["value_full"] - CLOSE_PP).all())


def low_early(cells: pd.DataFrame) -> bool | None:
    """Shape (c); ``None`` without a Table 3 pair at 10 or 20 epochs."""
    pairs = table3_pairs(cells)
    pairs = pairs[pairs["epochs"].isin(EARLY_EPOCHS)]
    return None if pairs.empty else bool((pairs["value_full"] - pairs["value_distilled"] >= LOW_PP).all())


def full_data_hypothesis(hypothesis: str) -> str:
    """The hypothesis whose full-data cells stand beside ``hypothesis``'s distilled ones in Table 3."""
    knobs = [knob for knob in hypothesis.split("+") if knob.split("=")[0] not in TEACHER_ONLY_KNOBS]
    return "+".join(knobs) or HONEST


def verdict_table(runs: pd.DataFrame, paper: PaperNumbers | None = None) -> pd.DataFrame:
    """One row per hypothesis (the honest protocol first): counts, MAE, the three shapes, reproduces."""
    paper = load_paper() if paper is None else paper
    kept, cells = table_runs(runs), table_cells(runs)
    cells["paper"] = [paper.table_accuracy(r.dataset, r.model, r.method, r.ipc, int(r.epochs))
                      for r in cells.itertuples()]
    measured = [d for d in DATASETS if (cells["dataset"] == d).any()]
    rows = []
    for hypothesis in [HONEST, *sorted(set(cells["hypothesis"]) - {HONEST})]:
        mine = cells[cells["hypothesis"] == hypothesis]
        printed = mine.dropna(subset=["paper"])
        mae = _mae(printed)
        full = cells[(cells["hypothesis"] == full_data_hypothesis(hypothesis)) & (cells["method"] == "full")]
        table3 = pd.concat([mine[mine["method"] != "full"], full])
        shapes = {"rising": rising(mine), "close": close_to_full(table3), "low": low_early(table3)}
        by_dataset = {f"MAE {d} (pp)": _mae(printed[printed["dataset"] == d]) for d in measured}
        rows.append(
            {
                "hypothesis": HONEST_LABEL if hypothesis == HONEST else hypothesis,
                "runs": int(mine["runs"].sum()),
                "seeds": int(kept.loc[kept["hypothesis"] == hypothesis, "seed"].nunique()),
                "cells": len(mine),
                "cells with a paper value": len(printed),
                "MAE vs paper (pp)": mae,
                **(by_dataset if len(measured) > 1 else {}),
                **{SHAPES[k][0]: v for k, v in shapes.items()},
                "reproduces": mae is not None and mae <= REPRODUCE_MAE_PP and all(v is True for v in shapes.values()),
            }
        )
    return pd.DataFrame(rows)


def _mae(cells: pd.DataFrame) -> float | None:
    return float((cells["value"] - cells["paper"]).abs().mean()) if len(cells) else None


def _text(value: object) -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return NA
    if isinstance(value, bool | np.bool_):  # a frame's cell is numpy's bool
        return "yes" if value else "no"
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def plain_words(table: pd.DataFrame, runs: pd.DataFrame, paper: PaperNumbers | None = None) -> str:
    """The paragraph under the table, generated from its numbers and the runs' budget."""
    paper = load_paper() if paper is None else paper
    covered = set(table_runs(runs)["dataset_label"]) or set(DATASETS)
    printed = paper.frame[paper.frame["dataset"].isin(covered) & paper.frame["table"].isin([1, 2, 3])]
    n_paper = len(printed.drop_duplicates(["dataset", "model", "method", "ipc", "epochs"]))
    names = " and ".join(d for d in DATASETS if d in covered)
    mae = "MAE vs paper (pp)"
    honest = table[table["hypothesis"] == HONEST_LABEL].iloc[0]
    hypotheses = table[(table["hypothesis"] != HONEST_LABEL) & table[mae].notna()].sort_values(mae)
    words = []
    if hypotheses.empty:
        words.append("No forensics run has a cell that the paper prints, so no hypothesis can be compared with it yet.")
    else:
        best = hypotheses.iloc[0]
        shapes = ", ".join(f"{short} {_text(best[title])}" for title, short in SHAPES.values())
        words.append(
            f"Closest to the paper's printed values: `{best['hypothesis']}`, {best[mae]:.2f} pp mean absolute "
            f"difference over {best['cells with a paper value']} of the paper's {n_paper} {names} cells "
            f"({best['runs']} runs, {best['seeds']} seed(s)); shapes: {shapes}."
        )
        reproducing = hypotheses[hypotheses["reproduces"]]
        words.append(
            "By the rule fixed above (MAE <= "
            f"{REPRODUCE_MAE_PP:g} pp and all three shapes), "
            + (
                "these hypotheses reproduce the paper: " + ", ".join(f"`{h}`" for h in reproducing["hypothesis"]) + "."
                if len(reproducing)
                else "no hypothesis reproduces the paper."
            )
        )
    if honest["cells with a paper value"]:
        words.append(
            f"The honest protocol differs from the paper by {honest[mae]:.2f} pp on average over "
            f"{honest['cells with a paper value']} cells ({honest['runs']} runs, {honest['seeds']} seed(s))."
        )
    kept = table_runs(runs)
    if len(kept):
        limits = sorted({"full training split" if pd.isna(v) else f"{v} training images" for v in kept["train_limit"]})
        epochs = kept["student_epochs"].dropna().astype(int)
        words.append(
            f"Budget: {', '.join(limits)}; student epochs {epochs.min()}-{epochs.max()}; "
            f"seeds {', '.join(str(s) for s in sorted(kept['seed'].dropna().astype(int).unique()))}. "
            "A hypothesis measured on fewer cells, seeds or epochs than the paper's is weaker evidence."
        )
    return " ".join(words)


def verdict_markdown(table: pd.DataFrame, runs: pd.DataFrame) -> str:
    shown = table.map(_text)
    header = "| " + " | ".join(shown.columns) + " |"
    body = ["| " + " | ".join(row) + " |" for row in shown.itertuples(index=False)]
    rules = __doc__.split("\n\n", 2)[2].strip()
    return "\n".join(
        [f"# {TITLE}", "", header, "|" + "---|" * shown.shape[1], *body, "", plain_words(table, runs), "", "Rules:", "",
         rules, ""]
    )


def write_verdict(cells: pd.DataFrame, out: Path) -> list[Path]:
    """Write ``forensics_verdict.md`` and ``.csv`` into ``out`` from honest + forensics cell runs."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file, not a directory")
    out.mkdir(parents=True, exist_ok=True)
    table = verdict_table(cells)
    md, csv = out / "forensics_verdict.md", out / "forensics_verdict.csv"
    md.write_text(verdict_markdown(table, cells), encoding="utf-8")
    table.map(_text).to_csv(csv, index=False)
    return [md, csv]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", required=True, help="MLflow experiment holding the forensics sweep")
    parser.add_argument("--out", required=True, type=Path, help="output directory")
    parser.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: MLflow's own)")
    args = parser.parse_args(argv)
    try:
        paths = write_verdict(load_verdict_runs(args.experiment, args.tracking_uri), args.out)
    except (ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print("\n".join(str(path) for path in paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
