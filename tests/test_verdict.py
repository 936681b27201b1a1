"""analysis/verdict.py and the honest/forensics split of analysis/runs.py on a small MLflow store."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from analysis import verdict
from analysis.runs import HONEST, load_cells
from analysis.verdict import HONEST_LABEL, SHAPES, load_verdict_runs, verdict_table, write_verdict

EXPERIMENT = "forensics-test"
FIT = "score_on=fit"
BASE = {"dataset": "fashion-mnist", "dataset_label": "fashion-mnist", "model": "baseline", "protocol": "paper",
        "method": "kmeans", "modifier": "grad-l1", "ipc": "10", "seed": "0", "train_limit": "2000"}
FULL = {"method": "full", "modifier": "none", "ipc": "None"}


def _run(client: MlflowClient, eid: str, accuracy: float, epochs: int, *, tags: dict | None = None,
         status: str = "FINISHED", **params: str) -> None:
    run = client.create_run(eid, tags={"raydistill.role": "cell", **(tags or {})})
    for key, value in {**BASE, "student_epochs": str(epochs), **params}.items():
        client.log_param(run.info.run_id, key, value)
    client.log_metric(run.info.run_id, "accuracy", accuracy)
    client.set_terminated(run.info.run_id, status)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    tmp = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{tmp}/mlflow.db"
    client = MlflowClient(tracking_uri=uri)
    eid = client.create_experiment(EXPERIMENT, artifact_location=(tmp / "artifacts").as_uri())
    # honest: distilled 76 (mean of 75, 77) at 200 and 74 at 300; full 90 at 200
    _run(client, eid, 0.75, 200)
    _run(client, eid, 0.77, 200, seed="1")
    _run(client, eid, 0.74, 300, score_on="test", leak_test="False")  # defaults logged explicitly: still honest
    _run(client, eid, 0.90, 200, **FULL)
    # score_on=fit: the paper's Table 3 shape and values close to the paper's
    fit = {"tags": {"raydistill.forensics": "true", "raydistill.hypothesis": FIT}, "score_on": "fit"}
    for acc, epochs in ((0.50, 10), (0.70, 20), (0.97, 200), (0.98, 300)):
        _run(client, eid, acc, epochs, **fit)
    for acc, epochs in ((0.89, 10), (0.88, 20), (0.985, 200)):
        _run(client, eid, acc, epochs, **fit, **FULL)
    _run(client, eid, 0.10, 200, status="FAILED", **fit)  # not counted
    # a knob without the forensics tag is still forensics; its label comes from the knob
    _run(client, eid, 0.10, 400, model="lenet", ipc="50", pixel_scale="byte")
    _run(client, eid, 0.99, 200, leak_test="True", dataset="mnist", dataset_label="mnist")  # MNIST, Table 1
    _run(client, eid, 0.99, 200, leak_test="True", dataset="cifar10", dataset_label="cifar10")  # not measured here
    return uri


def test_honest_tables_never_see_forensics_runs(store: str) -> None:
    honest = load_cells(EXPERIMENT, store)
    assert len(honest) == 4 and set(honest["hypothesis"]) == {HONEST} and not honest["forensics"].any()
    assert sorted(honest["accuracy"]) == [0.74, 0.75, 0.77, 0.90]
    assert set(honest["score_on"]) == {"test"} and set(honest["student_init"]) == {"fresh"}
    assert set(honest["pixel_scale"]) == {"unit"} and set(honest["epoch_pick"]) == {"last"}
    assert honest["leak_test"].dtype == bool and not honest["leak_test"].any()
    forensics = load_cells(EXPERIMENT, store, forensics=True)
    assert len(forensics) == 10 and forensics["forensics"].all()
    assert forensics["hypothesis"].value_counts().to_dict() == {FIT: 7, "pixel_scale=byte": 1, "leak_test=true": 2}
    assert set(forensics["run_id"]).isdisjoint(honest["run_id"])
    assert set(forensics.loc[forensics["hypothesis"] == "leak_test=true", "leak_test"]) == {True}


def test_verdict_counts_mae_and_shapes(store: str) -> None:
    runs = load_verdict_runs(EXPERIMENT, store)
    assert len(runs) == 14
    table = verdict_table(runs).set_index("hypothesis")
    assert list(table.index) == [HONEST_LABEL, "leak_test=true", "pixel_scale=byte", FIT]  # honest first; no cifar10
    rising, close, low = (title for title, _ in SHAPES.values())

    honest = table.loc[HONEST_LABEL]
    assert (honest["runs"], honest["seeds"], honest["cells"], honest["cells with a paper value"]) == (4, 2, 3, 3)
    # |76 - 96.80| + |74 - 97.58| + |90 - 98.49| over 3 cells
    assert honest["MAE vs paper (pp)"] == pytest.approx((20.80 + 23.58 + 8.49) / 3)
    assert (honest[rising], honest[close], honest[low], honest["reproduces"]) == (False, False, None, False)

    fit = table.loc[FIT]
    assert (fit["runs"], fit["seeds"], fit["cells"], fit["cells with a paper value"]) == (7, 1, 7, 7)
    # distilled 50/70/97/98 vs 53.70/70.55/96.80/97.58; full 89/88/98.5 vs 88.89/87.57/98.49
    assert fit["MAE vs paper (pp)"] == pytest.approx((3.70 + 0.55 + 0.20 + 0.42 + 0.11 + 0.43 + 0.01) / 7)
    assert (fit[rising], fit[close], fit[low], fit["reproduces"]) == (True, True, True, True)

    leak = table.loc["leak_test=true"]  # one MNIST cell: Table 1, 10/MNIST/Baseline, 200 epochs = 97.51
    assert leak["cells"] == 1 and leak["MAE vs paper (pp)"] == pytest.approx(99.0 - 97.51)
    assert leak["MAE mnist (pp)"] == pytest.approx(99.0 - 97.51) and pd.isna(leak["MAE fashion-mnist (pp)"])
    assert pd.isna(fit["MAE mnist (pp)"]) and fit["MAE fashion-mnist (pp)"] == pytest.approx(fit["MAE vs paper (pp)"])

    byte = table.loc["pixel_scale=byte"]
    assert byte["MAE vs paper (pp)"] == pytest.approx(98.79 - 10.0)  # Table 2, FASHION/LeNet, 400
    assert (byte[rising], byte[close], byte[low], byte["reproduces"]) == (None, None, None, False)


def test_a_teacher_start_hypothesis_meets_full_data_scored_the_same_way(store: str) -> None:
    """A full-data student has no teacher to start from, so Table 3's full-data side of
    score_on=train+student_init=teacher is score_on=train's full-data cells."""
    runs = load_verdict_runs(EXPERIMENT, store)
    both, train = "score_on=train+student_init=teacher", "score_on=train"
    distilled = runs[(runs["hypothesis"] == FIT) & (runs["method"] == "kmeans")].iloc[0]
    full = runs[(runs["hypothesis"] == FIT) & (runs["method"] == "full")].iloc[0]
    added = [distilled.copy().to_dict() | {"hypothesis": both, "student_init": "teacher", "score_on": "train",
                                             "student_epochs": epochs, "accuracy": accuracy}
             for epochs, accuracy in ((10, 0.88), (20, 0.89))]
    added += [full.copy().to_dict() | {"hypothesis": train, "score_on": "train", "student_epochs": epochs,
                                        "accuracy": accuracy} for epochs, accuracy in ((10, 0.93), (20, 0.94))]
    table = verdict_table(pd.concat([runs, pd.DataFrame(added)], ignore_index=True)).set_index("hypothesis")
    _, close, low = (title for title, _ in SHAPES.values())
    assert table.loc[both, "cells"] == 2  # its own cells only: the full-data ones count for score_on=train
    assert (table.loc[both, low], table.loc[both, close]) == (False, None)  # 5 pp below full, not 15
    assert table.loc[train, low] is None  # score_on=train has no distilled cell here
    assert verdict.full_data_hypothesis(FIT) == FIT and verdict.full_data_hypothesis("student_init=teacher") == HONEST
    assert verdict.full_data_hypothesis(HONEST) == HONEST


def test_shape_rules_on_hand_made_cells() -> None:
    def cells(rows: list[tuple]) -> pd.DataFrame:
        return pd.DataFrame(rows, columns=["model", "method", "ipc", "epochs", "value"])

    flat_then_dip = cells([("lenet", "kmeans", 50, 200, 90.0), ("lenet", "kmeans", 50, 300, 89.6),
                           ("lenet", "kmeans", 50, 400, 90.5)])
    assert verdict.rising(flat_then_dip) is True  # a 0.4 pp dip is within the tolerance
    assert verdict.rising(flat_then_dip.assign(value=[90.0, 89.4, 90.5])) is False  # 0.6 pp is not
    assert verdict.rising(flat_then_dip.assign(value=[90.0, 90.0, 90.0])) is False  # flat is not rising
    pair = cells([("baseline", "kmeans", 10, 200, 96.0), ("baseline", "full", pd.NA, 200, 98.0)])
    assert verdict.close_to_full(pair) is True and verdict.low_early(pair) is None
    assert verdict.close_to_full(pair.assign(value=[95.9, 98.0])) is False
    early = cells([("baseline", "kmeans", 10, 10, 70.0), ("baseline", "full", pd.NA, 10, 85.0)])
    assert verdict.low_early(early) is True and verdict.close_to_full(early) is None
    assert verdict.low_early(early.assign(value=[70.1, 85.0])) is False


def test_write_verdict_labels_hypotheses(store: str, tmp_path: Path) -> None:
    md, csv = write_verdict(load_verdict_runs(EXPERIMENT, store), tmp_path / "out")
    report = md.read_text(encoding="utf-8")
    assert report.startswith("# Forensics (hypotheses, not results)")
    assert f"Closest to the paper's printed values: `{FIT}`, 0.77 pp" in report
    assert f"these hypotheses reproduce the paper: `{FIT}`." in report
    assert "2000 training images" in report and "seeds 0, 1" in report
    table = pd.read_csv(csv, dtype=str, keep_default_na=False)
    assert table.loc[0, "hypothesis"] == HONEST_LABEL and table.loc[0, SHAPES["low"][0]] == "n/a"
    assert verdict.main(["--experiment", EXPERIMENT, "--out", str(md), "--tracking-uri", store]) == 2


def test_rules_in_the_docstring_match_the_constants() -> None:
    doc = " ".join(verdict.__doc__.split())
    assert f"more than {verdict.RISE_TOL_PP:g} pp" in doc and f"distilled >= full - {verdict.CLOSE_PP:g} pp" in doc
    assert f"at least {verdict.LOW_PP:g} pp below" in doc and f"at most {verdict.REPRODUCE_MAE_PP:g} pp" in doc


def test_empty_experiment(store: str, tmp_path: Path) -> None:
    MlflowClient(tracking_uri=store).create_experiment("empty", artifact_location=(tmp_path / "a").as_uri())
    runs = load_verdict_runs("empty", store)
    assert runs.empty and {"hypothesis", "forensics", "score_on", "leak_test"} <= set(runs.columns)
    table = verdict_table(runs)
    assert list(table["hypothesis"]) == [HONEST_LABEL] and table.loc[0, "cells"] == 0
    assert table.loc[0, "MAE vs paper (pp)"] is None and not table.loc[0, "reproduces"]
    md, _ = write_verdict(runs, tmp_path / "out")
    assert "No forensics run has a cell that the paper prints" in md.read_text(encoding="utf-8")


def test_shapes_read_yes_or_no_also_from_a_frame() -> None:
    """The words under the table take shapes from a frame's cells, which hold numpy booleans."""
    rows = pd.DataFrame({"hypothesis": ["a", "b"], "rising": [True, False]})
    assert [verdict._text(rows.iloc[i]["rising"]) for i in range(2)] == ["yes", "no"]


def test_run_lists_keep_honest_runs_and_hypotheses_apart_with_the_paper_value(store: str, tmp_path: Path) -> None:
    from analysis.tables import main as tables_main

    out = tmp_path / "tables"
    assert tables_main(["--experiment", EXPERIMENT, "--out", str(out), "--tracking-uri", store]) == 0
    honest = pd.read_csv(out / "runs.csv", dtype=str, keep_default_na=False)
    assert len(honest) == 4 and "hypothesis" not in honest
    by_set = honest.set_index(["set", "epochs", "seed"])
    seed1 = by_set.loc[("kmeans + grad-l1, ipc 10", "200", "1")]
    assert (seed1["accuracy (%)"], seed1["paper (%)"], seed1["diff (pp)"]) == ("77.00", "96.80", "-19.80")
    full = by_set.loc[("full training set", "200", "0")]  # Table 3: 98.49
    assert (full["training images"], full["paper (%)"], full["diff (pp)"]) == ("2,000", "98.49", "-8.49")
    assert by_set.loc[("kmeans + grad-l1, ipc 10", "300", "0"), "diff (pp)"] == "-23.58"  # Table 1: 97.58
    hypotheses = pd.read_csv(out / "forensics_runs.csv", dtype=str, keep_default_na=False)
    assert len(hypotheses) == 10 and hypotheses["hypothesis"].value_counts()[FIT] == 7
    mnist = hypotheses[hypotheses["dataset"] == "mnist"].iloc[0]  # MNIST, Table 1 baseline at 200: 97.51
    assert (mnist["hypothesis"], mnist["paper (%)"], mnist["diff (pp)"]) == ("leak_test=true", "97.51", "+1.49")
    title = (out / "forensics_runs.md").read_text(encoding="utf-8").splitlines()[0]
    assert title.startswith("## Forensics runs (hypotheses, not results)")
