"""The claims beside ours (analysis/claims.py): intervals, verdicts, reasons, on hand-made runs."""

import math

import pandas as pd
import pytest
from scipy import stats

from analysis import claims
from analysis.paper import load_paper


def test_several_seeds_give_the_t_interval_over_seeds():
    ours = claims.interval(pd.Series([0.70, 0.72, 0.74]), 10_000)
    half = 4.302652729911275 * 2.0 * math.sqrt(1 + 1 / 3)  # one run: t(0.975, 2) x s x sqrt(1 + 1/n), s = 2 pp
    assert (ours.mean, ours.std, ours.n, ours.kind) == (pytest.approx(72.0), pytest.approx(2.0), 3,
                                                        "prediction, t over seeds")
    assert (ours.low, ours.high) == (pytest.approx(72.0 - half), pytest.approx(72.0 + half))


def test_one_run_gives_the_wilson_interval_of_its_test_accuracy():
    ours = claims.interval(pd.Series([0.5]), 10_000)
    z = stats.norm.ppf(0.975)  # Wilson: centre (p + z^2/2N) / (1 + z^2/N), half z sqrt(p(1-p)/N + z^2/4N^2) / (...)
    n, p = 10_000, 0.5
    centre, half = (p + z**2 / (2 * n)) / (1 + z**2 / n), z * math.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / (1 + z**2 / n)
    assert ours.std is None and ours.kind == "binomial, n = 1"
    assert (ours.low, ours.high) == (pytest.approx(100 * (centre - half)), pytest.approx(100 * (centre + half)))
    assert claims.interval(pd.Series([float("nan")]), 10_000) is None


def test_the_verdict_says_inside_outside_or_why_not_measured():
    ours = claims.Interval(72.0, 2.0, 3, 67.0, 77.0, "t over seeds")
    assert claims.verdict(77.0, ours, "") == "inside" and claims.verdict(67.0, ours, "") == "inside"
    assert claims.verdict(96.5, ours, "") == "outside (ours lower by 24.50 pp)"
    assert claims.verdict(60.0, ours, "") == "outside (ours higher by 12.00 pp)"
    assert claims.verdict(96.5, None, "not measured: why") == "not measured: why"
    one = claims.Interval(72.0, None, 1, 71.1, 72.9, "binomial, n = 1")
    assert claims.verdict(72.5, one, "") == "inside (n = 1: test-set sampling only)"
    assert claims.verdict(75.0, one, "") == "outside (ours lower by 3.00 pp; n = 1: test-set sampling only)"


def runs(*rows: dict) -> pd.DataFrame:
    base = {"dataset_label": "mnist", "protocol": "paper", "method": "kmeans", "modifier": "grad-l1", "ipc": 10,
            "train_limit": pd.NA}
    frame = pd.DataFrame([{**base, **row} for row in rows])
    for column in ("ipc", "student_epochs", "train_limit"):
        frame[column] = frame[column].astype("Int64")
    return frame


def test_claim_rows_match_dataset_model_ipc_epochs_and_skip_what_cannot_run_here():
    paper = load_paper()
    cells = runs({"model": "lenet", "student_epochs": 200, "accuracy": 0.80},
                 {"model": "lenet", "student_epochs": 200, "accuracy": 0.82},
                 {"model": "lenet", "student_epochs": 200, "accuracy": 0.84},
                 {"model": "lenet", "student_epochs": 200, "accuracy": 0.82, "modifier": "none"},  # not the method
                 {"model": "baseline", "student_epochs": 200, "accuracy": 0.975, "train_limit": 10_000})
    rows = claims.claim_rows(cells, paper).set_index(["table", "dataset", "model", "set", "epochs", "metric"])
    lenet = rows.loc[(1, "mnist", "lenet", "distilled, ipc 10", 200, "accuracy")]  # printed 99.36
    assert (lenet["ours (%)"], lenet["n"], lenet["paper (%)"]) == ("82.00 ± 2.00", 3, "99.36")
    assert lenet["verdict"] == "outside (ours lower by 17.36 pp)" and lenet["training images (ours)"] == "all"
    baseline = rows.loc[(1, "mnist", "baseline", "distilled, ipc 10", 200, "accuracy")]  # printed 97.51, n = 1
    assert baseline["verdict"].startswith("inside") and baseline["95 % interval"].endswith("(binomial, n = 1)")
    assert baseline["training images (ours)"] == "10,000"
    assert rows.loc[(1, "mnist", "resnet34", "distilled, ipc 10", 200, "accuracy"), "verdict"] == claims.NOT_HERE["resnet34"]
    assert rows.loc[(1, "cifar10", "lenet", "distilled, ipc 10", 200, "accuracy"), "verdict"] == claims.NOT_HERE["cifar10"]
    assert rows.loc[(4, "mnist", "–", "distilled, ipc 10", 1000, "accuracy"), "verdict"].startswith(
        "not measured: 1000 epochs")
    assert rows.loc[(1, "mnist", "lenet", "distilled, ipc 10", 300, "accuracy"), "verdict"].startswith(
        "not measured yet")
    assert {"kip-scatternet", "rtp"}.isdisjoint(set(rows["source"].str.extract(r"column (\S+)/")[0].str.lower()))
    tally = claims.tally(claims.claim_rows(cells, paper)).set_index("table")
    assert tally.loc["Table 1", "measured"] == 2 and tally.loc["Table 1", "paper inside our 95 % interval"] == 1
    two = claims.claim_rows(cells.iloc[[0, 2]], paper).set_index(["table", "dataset", "model", "epochs"])
    assert two.loc[(1, "mnist", "lenet", 200), "verdict"] == "inside"  # 2 seeds: t(0.975, 1) = 12.7, wide


def test_the_headline_claims_point_at_the_nearest_measured_cell():
    paper = load_paper()
    cells = runs({"model": "lenet", "student_epochs": 200, "accuracy": 0.80, "ipc": 50},
                 {"model": "lenet", "student_epochs": 600, "accuracy": 0.81, "ipc": 50},
                 {"model": "baseline", "student_epochs": 600, "accuracy": 0.83, "ipc": 50, "train_limit": 10_000})
    text = pd.DataFrame([{"where": "Abstract", "kind": "value", "cells": "table=4 dataset=mnist method=kmeans ipc=50",
                          "value": "99.93"}])
    row = claims.headline_rows(claims.claim_rows(cells, paper), text).iloc[0]
    assert row["claim"] == "99.93% on mnist" and row["verdict"].startswith("not measured at its settings")
    assert row["nearest measured (ours)"].startswith("83.00 (n=1, baseline, 600 epochs; paper there: 99.26")


def test_the_measured_claims_by_row_give_ranges_n_spread_and_how_many_are_inside():
    paper = load_paper()  # Table 1, MNIST, LeNet-5, ipc 10: 99.36 at 200 epochs, 99.51 at 300
    cells = runs({"model": "lenet", "student_epochs": 200, "accuracy": 0.80},
                 {"model": "lenet", "student_epochs": 200, "accuracy": 0.84},  # 82.00 ± 2.83 (n = 2)
                 {"model": "lenet", "student_epochs": 300, "accuracy": 0.85},  # 85.00 (n = 1)
                 {"model": "baseline", "student_epochs": 200, "accuracy": 0.975, "train_limit": 10_000})
    rows = claims.by_row(claims.claim_rows(cells, paper)).set_index(["table", "dataset", "model", "set"])
    lenet = rows.loc[(1, "mnist", "lenet", "distilled, ipc 10")]
    assert (lenet["epochs"], lenet["paper (%)"], lenet["ours (%)"], lenet["n"]) == ("200, 300", "99.36 to 99.51",
                                                                                   "82.00 to 85.00", "1 to 2")
    assert lenet["spread over seeds (pp)"] == "2.83"  # sqrt(((80 - 82)^2 + (84 - 82)^2) / 1)
    assert lenet["ours − paper (pp)"] == "-17.36 to -14.51"  # 82.00 - 99.36 and 85.00 - 99.51
    # 2 seeds: t(0.975, 1) = 12.7 x 2.83 x sqrt(1.5) = 44 pp wide, 99.36 inside; 85.00 alone: outside
    assert lenet["paper inside our 95 % interval"] == "1 of 2"
    baseline = rows.loc[(1, "mnist", "baseline", "distilled, ipc 10")]  # 97.50 vs 97.51: inside, one run
    assert (baseline["n"], baseline["spread over seeds (pp)"], baseline["paper inside our 95 % interval"]) == (
        "1", "–", "1 of 1")
    assert (3, "mnist", "baseline", "distilled, ipc 10") in rows.index  # Table 3 prints the same cell
    assert len(rows) == 3
