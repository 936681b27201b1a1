"""Read the finished grid-cell runs of one sweep experiment from MLflow into a typed frame."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import mlflow
import pandas as pd
from mlflow.tracking import MlflowClient

from raydistill.config import FORENSICS

log = logging.getLogger(__name__)

CELL_FILTER = "tags.`raydistill.role` = 'cell'"
TEXT_PARAMS = ("dataset", "dataset_label", "model", "method", "modifier", "protocol", "backend", "positive_class")
INT_PARAMS = ("ipc", "teacher_epochs", "student_epochs", "seed", "train_limit", "eval_sets", "eval_runs")
METRICS = ("accuracy", "sensitivity", "specificity", "auc", "teacher_accuracy", "accuracy_std", "time_total_s")
FORENSICS_TAG, HYPOTHESIS_TAG = "tags.raydistill.forensics", "tags.raydistill.hypothesis"
TAGS = ("tags.device", "tags.kmeans_backend", "tags.git_commit", "tags.raydistill.cell", "tags.raydistill.cell_key",
        FORENSICS_TAG, HYPOTHESIS_TAG)
KNOBS = {knob: values[0] for knob, values in FORENSICS.items()}  # the honest defaults
COMMANDS = {  # how the published experiments are (re)produced; running one again continues it
    "paper-settings": "python sweeps/forensics.py --paper-settings --data-root DIR --cpus 2",
    "controls": "python sweeps/controls.py --data-root DIR --cpus 2",
    "smoke": "python sweeps/paper_grid.py --smoke --data-root DIR",
}
HONEST = "honest"


@contextmanager
def _tracking(uri: str | None) -> Iterator[None]:
    """Temporarily point the fluent MLflow API at ``uri`` (no-op when ``None``)."""
    previous = mlflow.get_tracking_uri()
    if uri is not None:
        mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous)


def load_cells(experiment: str, tracking_uri: str | None = None, *, forensics: bool = False) -> pd.DataFrame:
    """FINISHED runs tagged ``raydistill.role = cell`` of ``experiment``: honest runs, or forensics runs only.

    A run is forensics when tagged ``raydistill.forensics = true`` or when any evaluation knob
    (``KNOBS``) is off its honest default, so an untagged run with a knob set still stays out of
    the honest tables; the two sets never mix in one call. Params and metrics get bare column names
    (``ipc``, ``accuracy``), tags keep MLflow's ``tags.`` prefix. Integer params become nullable
    ``Int64`` ("None" -> NA), ``ipc`` is NA for ``method == full``, metrics stay fractions, a missing
    ``dataset_label`` falls back to ``dataset``, knobs not logged take their defaults and
    ``hypothesis`` is the run's tag, else its non-default knobs (``HONEST`` for honest runs).
    Expected columns are always present, NA when no run logged them.
    """
    if MlflowClient(tracking_uri=tracking_uri).get_experiment_by_name(experiment) is None:
        raise ValueError(f"MLflow experiment {experiment!r} not found")
    with _tracking(tracking_uri):
        runs = mlflow.search_runs(experiment_names=[experiment], filter_string=CELL_FILTER)
    runs = runs[runs["status"] == "FINISHED"].reset_index(drop=True)
    runs = runs.rename(columns=lambda c: c.split(".", 1)[1] if c.startswith(("params.", "metrics.")) else c)
    for column in (*TEXT_PARAMS, *TAGS):
        if column not in runs:
            runs[column] = pd.Series(pd.NA, index=runs.index, dtype="str")
    for column in INT_PARAMS:
        values = runs[column] if column in runs else pd.Series(pd.NA, index=runs.index, dtype="str")
        runs[column] = pd.to_numeric(values, errors="coerce").astype("Int64")
    for column in METRICS:
        runs[column] = pd.to_numeric(runs[column], errors="coerce") if column in runs else float("nan")
    runs["dataset_label"] = runs["dataset_label"].fillna(runs["dataset"])
    runs.loc[runs["method"] == "full", "ipc"] = pd.NA
    runs = _with_knobs(runs)
    runs = runs[runs["forensics"] == forensics].reset_index(drop=True)
    log.info("%s: %d finished %s cell runs", experiment, len(runs), "forensics" if forensics else "honest")
    return runs


def _with_knobs(runs: pd.DataFrame) -> pd.DataFrame:
    """Knob columns with their defaults filled in, ``forensics`` (bool) and ``hypothesis`` (str)."""
    for knob, default in KNOBS.items():
        values = (runs[knob] if knob in runs else pd.Series(None, index=runs.index)).astype("object")
        if isinstance(default, bool):
            values = values.map(lambda v: str(v).strip().lower() in ("true", "1", "on"), na_action="ignore")
        runs[knob] = values.where(values.notna(), default).astype(type(default))

    def knobs_set(run: pd.Series) -> str:  # the same label as TrialConfig.hypothesis writes into the tag
        return "+".join(f"{k}={str(run[k]).lower() if isinstance(run[k], bool) else run[k]}"
                        for k, d in KNOBS.items() if run[k] != d)

    derived = runs.apply(knobs_set, axis=1).astype("str") if len(runs) else pd.Series("", index=runs.index, dtype="str")
    tag = runs[HYPOTHESIS_TAG].fillna("").astype("str")
    runs["forensics"] = runs[FORENSICS_TAG].fillna("").astype("str").str.lower().eq("true") | derived.ne("")
    runs["hypothesis"] = tag.where(tag.ne(""), derived).replace("", "forensics (no hypothesis tag)")
    runs.loc[~runs["forensics"], "hypothesis"] = HONEST
    return runs


def select(cells: pd.DataFrame, **equal: object) -> pd.DataFrame:
    """Rows of ``cells`` whose columns equal the given values (NA never matches)."""
    mask = pd.Series(True, index=cells.index)
    for column, value in equal.items():
        mask &= cells[column].eq(value).fillna(False).astype(bool)
    return cells[mask]


SETTING = ("train_limit", "teacher_epochs", "eval_sets", "eval_runs", "lr", "batch_size", "alpha", "backend")


def one_setting(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs that share the most common setting (``SETTING``) among ``runs``: what is pooled as
    seeds of one cell must differ in the seed only."""
    columns = [c for c in SETTING if c in runs]
    if runs.empty or not columns:
        return runs
    signature = runs[columns].astype("string").fillna("").agg("|".join, axis=1)
    return runs[signature == signature.value_counts().index[0]]


def paper_method(cells: pd.DataFrame) -> pd.DataFrame:
    """Runs of the paper's method: K-means on grad-L1-modified images under the paper protocol."""
    return select(cells, method="kmeans", modifier="grad-l1", protocol="paper")


def full_data(cells: pd.DataFrame) -> pd.DataFrame:
    """Runs trained on the whole training set under the paper protocol."""
    return select(cells, method="full", protocol="paper")


def ordered(first: Iterable, extra: Iterable) -> list:
    """Distinct items of ``first`` in their order, then the new non-NA items of ``extra``, sorted."""
    head = list(dict.fromkeys(first))
    tail = {x for x in extra if isinstance(x, tuple) or not pd.isna(x)} - set(head)
    return head + sorted(tail, key=str)
