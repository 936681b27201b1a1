"""Every finished cell run on its own line, beside the paper's printed value where the paper has one:
the list behind the averaged Tables 1-3, with each run's seed, training images and wall time."""

from __future__ import annotations

import pandas as pd

from analysis.paper import PaperNumbers

DASH = "–"
COLUMNS = ("dataset", "model", "training images", "set", "epochs", "seed", "accuracy (%)", "sensitivity (%)",
           "specificity (%)", "wall (s)", "paper (%)", "diff (pp)")
SORT = ["dataset_label", "model", "method", "modifier", "ipc", "student_epochs", "seed"]


def paper_accuracy(paper: PaperNumbers, run: pd.Series) -> float | None:
    """The paper's printed accuracy for the cell this run measures (Tables 1-3: the paper's method
    at ipc 10 or 50, or the full training set; paper protocol only), else ``None``."""
    if run["protocol"] != "paper" or pd.isna(run["student_epochs"]):
        return None
    if run["method"] == "full" or (run["method"] == "kmeans" and run["modifier"] == "grad-l1"
                                   and not pd.isna(run["ipc"])):
        return paper.table_accuracy(run["dataset_label"], run["model"], run["method"], run["ipc"],
                                    int(run["student_epochs"]))
    return None


def _pct(fraction: object) -> str:
    return DASH if pd.isna(fraction) else f"{100 * float(fraction):.2f}"


def _set(run: pd.Series) -> str:
    if run["method"] == "full":
        return "full training set"
    return f"{run['method']} + {run['modifier']}, ipc {int(run['ipc'])}" + (
        "" if run["protocol"] == "paper" else f" ({run['protocol']} protocol)")


def run_list(runs: pd.DataFrame, paper: PaperNumbers, hypotheses: bool = False, keys: bool = False) -> pd.DataFrame:
    """One row per run (a frame of strings). With ``hypotheses`` the first column names each run's
    hypothesis; the caller keeps honest and forensics runs in separate lists. With ``keys`` each
    row ends with the run's cell key and git commit (provenance)."""
    rows = []
    for _, run in runs.sort_values(["hypothesis", *SORT] if hypotheses else SORT, kind="stable").iterrows():
        value = paper_accuracy(paper, run)
        accuracy = None if pd.isna(run["accuracy"]) else 100 * float(run["accuracy"])
        row = [run["dataset_label"], run["model"],
               "all" if pd.isna(run["train_limit"]) else f"{int(run['train_limit']):,}", _set(run),
               str(int(run["student_epochs"])), str(int(run["seed"])) if not pd.isna(run["seed"]) else DASH,
               _pct(run["accuracy"]), _pct(run["sensitivity"]), _pct(run["specificity"]),
               DASH if pd.isna(run["time_total_s"]) else f"{float(run['time_total_s']):.0f}",
               DASH if value is None else f"{value:.2f}",
               DASH if value is None or accuracy is None else f"{accuracy - value:+.2f}"]
        provenance = [str(run["tags.raydistill.cell_key"]), str(run["tags.git_commit"])[:10]] if keys else []
        rows.append(([run["hypothesis"]] if hypotheses else []) + row + provenance)
    columns = (["hypothesis"] if hypotheses else []) + list(COLUMNS) + (["cell key", "commit"] if keys else [])
    return pd.DataFrame(rows, columns=columns, dtype=str)
