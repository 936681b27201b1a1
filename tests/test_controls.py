"""The positive controls' arithmetic (analysis/controls.py) on hand-made runs."""

import math

import numpy as np
import pandas as pd
import pytest

from analysis import controls


def runs_of(*cells: dict) -> pd.DataFrame:
    """Cell runs as analysis.runs.load_cells returns them (fractions), with the reference's settings."""
    base = {"protocol": "dc", "train_limit": pd.NA, "eval_sets": 1, "eval_runs": 1, "accuracy_std": 0.0,
            "time_total_s": 1800.0}
    frame = pd.DataFrame([{**base, **c} for c in cells])
    for column in ("ipc", "student_epochs", "train_limit", "eval_sets", "eval_runs"):
        frame[column] = frame[column].astype("Int64")
    return frame


def one_run(models: list[float], **cell) -> dict:
    """A run whose models scored `models` (fractions): it logs their mean, sample std and count."""
    return {**cell, "accuracy": float(np.mean(models)), "accuracy_std": float(np.std(models, ddof=1)),
            "eval_sets": len(models), "eval_runs": 1}


def test_pooling_runs_gives_the_mean_and_sample_std_of_all_their_models():
    a, b = [0.90, 0.80, 0.85], [0.70, 0.60, 0.65]
    cell = {"dataset": "mnist", "ipc": 10, "method": "random", "modifier": "none", "student_epochs": 1000}
    pooled = controls.pooled(runs_of(one_run(a, **cell), one_run(b, **cell)))
    every = 100 * np.array(a + b)
    assert pooled.n == 6
    assert pooled.mean == pytest.approx(every.mean()) and pooled.std == pytest.approx(every.std(ddof=1))


def test_the_improvement_over_random_is_the_difference_with_its_standard_error_and_spread():
    ior, error, spread = controls.improvement(controls.Pooled(80.0, 3.0, 10), controls.Pooled(75.5, 4.0, 10))
    assert ior == pytest.approx(4.5) and spread == pytest.approx(5.0)
    assert error == pytest.approx(math.sqrt(9 / 10 + 16 / 10))


@pytest.mark.parametrize("diff,ours,published,expected", [
    (1.5, 0.1, 0.1, True),    # inside the 1.5 pp band
    (1.51, 0.1, 0.2, False),  # outside both: 2 x 0.2 = 0.4 < 1.51
    (3.0, 0.2, 1.5, True),    # within 2 x the larger std (published)
    (-3.0, 1.5, 0.2, True),   # ... (ours); the sign does not matter
    (-3.01, 1.5, 0.2, False),
])
def test_reproduced_is_within_two_larger_stds_or_one_and_a_half_points(diff, ours, published, expected):
    assert controls.reproduced(diff, ours, published) is expected


def test_the_comparison_counts_only_runs_under_the_reference_protocol():
    published = pd.DataFrame([
        {"dataset": "mnist", "ipc": 10, "method": "random", "modifier": "none", "mean": 95.1, "std": 0.9,
         "compared": "yes", "source": "s", "checked": "c"},
        {"dataset": "fashion-mnist", "ipc": 10, "method": "random", "modifier": "none", "mean": 73.8, "std": 0.7,
         "compared": "yes", "source": "s", "checked": "c"},
        {"dataset": "mnist", "ipc": 50, "method": "random", "modifier": "none", "mean": 97.9, "std": 0.2,
         "compared": "yes", "source": "s", "checked": "c"},
        {"dataset": "mnist", "ipc": 10, "method": "dc", "modifier": "", "mean": 97.4, "std": 0.2,
         "compared": "no", "source": "s", "checked": "c"},
    ])
    random = {"method": "random", "modifier": "none"}
    cells = runs_of(
        one_run([0.950, 0.946], dataset="mnist", ipc=10, student_epochs=1000, **random),  # 94.80: 0.3 pp off
        one_run([0.700, 0.690], dataset="fashion-mnist", ipc=10, student_epochs=300, **random),  # 69.50: 4.3 pp off
        one_run([0.979, 0.979], dataset="mnist", ipc=50, student_epochs=300, **random),  # not the reference's epochs
        {"dataset": "mnist", "ipc": 50, "student_epochs": 1000, "train_limit": 2000, "accuracy": 0.979, **random},
    )
    frame, line = controls.comparison(cells, published)
    assert list(frame["verdict"]) == ["reproduced", "missed", "not run"]
    assert list(frame["diff (pp)"]) == ["-0.30", "-4.30", "–"] and list(frame["wall (h)"]) == ["0.50", "0.50", "–"]
    assert frame["ours"].iloc[0] == f"94.80 ± {100 * np.std([0.950, 0.946], ddof=1):.2f}" and frame["n"].iloc[0] == 2
    assert line == "the tool reproduces the field's baselines: 1 of 2 measured cells within band (1 not run yet)"


def test_the_improvement_table_sets_each_selection_against_random_real_images():
    cells = runs_of(
        one_run([0.60, 0.64], dataset="mnist", ipc=1, student_epochs=1000, method="random", modifier="none"),
        one_run([0.70, 0.72], dataset="mnist", ipc=1, student_epochs=1000, method="kmeans", modifier="none"),
        one_run([0.50, 0.56], dataset="mnist", ipc=1, student_epochs=1000, method="kmeans", modifier="grad-l1"),
    )
    row = controls.improvements(cells).iloc[0]
    s1, s2 = 100 * np.std([0.70, 0.72], ddof=1), 100 * np.std([0.60, 0.64], ddof=1)
    error, spread = math.sqrt(s1**2 / 2 + s2**2 / 2), math.hypot(s1, s2)
    assert row["plain K-means: IOR (pp)"] == f"+9.00 ± {error:.2f} (spread {spread:.2f})"
    assert row["the paper's shifted K-means: IOR (pp)"].startswith("-9.00 ± ")
    assert row["random real: accuracy"].endswith("(n=2)")


def test_runs_pooled_as_seeds_share_every_other_setting():
    cell = {"dataset": "mnist", "ipc": 10, "method": "random", "modifier": "none", "student_epochs": 1000}
    other = {**one_run([0.10, 0.12], **cell), "eval_sets": 1, "eval_runs": 2}  # another setting: not a seed of it
    frame = runs_of(one_run([0.90, 0.92], **cell), one_run([0.94, 0.96], **cell), other)
    assert controls.pooled(controls._runs(controls.reference_runs(frame), "mnist", 10, "random", "none")).n == 4
