"""Teacher reuse: the paper grid's teacher epochs counted with and without it (sweeps/paper_grid.py),
and a reduced grid timed both ways on real Fashion-MNIST, without Ray.

"With reuse" trains one teacher to the largest epoch milestone, keeping a snapshot and its
per-image gradient norms at every milestone, and hands each cell its snapshot; "without" lets
every cell train its own teacher, as a sweep without the cache would. Both give the same results
(max_accuracy_diff: against the first run).
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import torch

from benchmarks.timing import emit
from raydistill.data import Dataset
from raydistill.pipeline import TrialResult, run_trial
from raydistill.teacher import train_teacher
from raydistill.tune.grid import Cell, Grid, expand, teacher_epochs
from sweeps.paper_grid import TABLE_3, TABLES_1_2, table_5

PAPER = {
    "tables_1_2": [TABLES_1_2],
    "tables_1_to_3": [TABLES_1_2, *TABLE_3],
    "tables_1_to_3_and_5": [TABLES_1_2, *TABLE_3, *table_5("OCID")],
}
# (train images, test images) of the reduced grid; its axes are fixed below
SIZES = {True: (600, 200), False: (2000, 1000)}
# the paper grid's axes (Tables 1-2) with its 200..600 epochs divided by 100
REDUCED = {"dataset": ["fashion-mnist"], "model": ["baseline"], "epochs": [2, 3, 4, 5, 6], "ipc": [10, 50]}


def count_paper() -> None:
    for name, parts in PAPER.items():
        cells = expand(Grid(name, parts))
        reuse, without = teacher_epochs(cells)
        emit(f"grid.paper.{name}.cells", len(cells))
        emit(f"grid.paper.{name}.teacher_epochs_with_reuse", reuse)
        emit(f"grid.paper.{name}.teacher_epochs_without_reuse", without)
        emit(f"grid.paper.{name}.teacher_epochs_saved_ratio", without / reuse)


def reduced_cells(train_limit: int) -> list[Cell]:
    return expand(Grid("reduced", [REDUCED], fixed={"train_limit": train_limit, "device": "cpu", "backend": "sklearn"}))


def with_reuse(cells: list[Cell], data: Dataset) -> tuple[list[TrialResult], dict]:
    cfg = cells[0].config  # every cell shares the teacher: same data, model, seed, optimiser
    train = data.limit_train(cfg.train_limit, cfg.seed)  # the subset each cell draws
    tensors = train.to(torch.device("cpu"))
    snaps = train_teacher(cfg.model, train, tensors, sorted({c.config.teacher_epochs for c in cells}), seed=cfg.seed,
                          lr=cfg.lr, batch_size=cfg.batch_size, with_grad_l1=True)
    by_epoch = {s.epoch: s for s in snaps}
    results = [run_trial(c.config, data, teacher=lambda d, t, e=c.config.teacher_epochs: by_epoch[e]) for c in cells]
    return results, {"teacher_training": snaps[-1].train_seconds, "gradients": sum(s.grad_seconds for s in snaps)}


def without_reuse(cells: list[Cell], data: Dataset) -> tuple[list[TrialResult], dict]:
    """The library's own path: run_trial trains each cell's teacher and takes the norms."""
    results = [run_trial(c.config, data) for c in cells]
    return results, {"teacher_training": sum(r.teacher["train_seconds"] for r in results),
                     "gradients": sum(r.timings["gradients"] for r in results)}


def measure_reduced(quick: bool, data: Dataset) -> None:
    train_limit, test_limit = SIZES[quick]
    data = dataclasses.replace(data, test=data.test.subset(np.arange(test_limit)))
    cells = reduced_cells(train_limit)
    emit("grid.reduced.cells", f"{len(cells)} (fashion-mnist, baseline, epochs 2 3 4 5 6, ipc 10 50)")
    emit("grid.reduced.train_images", train_limit)
    emit("grid.reduced.test_images", test_limit)
    reuse, without = teacher_epochs(cells)
    emit("grid.reduced.teacher_epochs", f"{reuse} with reuse, {without} without")
    walls, parts, diff, accuracy = {}, {}, 0.0, None
    for _ in range(1 if quick else 2):  # modes interleaved, each keeps its fastest round
        for mode, runner in (("without_reuse", without_reuse), ("with_reuse", with_reuse)):
            start = time.perf_counter()
            results, phases = runner(cells, data)
            wall = time.perf_counter() - start
            if wall < walls.get(mode, float("inf")):
                walls[mode], parts[mode] = wall, phases
            scores = np.array([r.metrics["accuracy"] for r in results])
            accuracy = scores if accuracy is None else accuracy
            diff = max(diff, float(np.abs(scores - accuracy).max()))
    emit("grid.reduced.max_accuracy_diff", diff)
    report("grid.reduced", walls, parts)


def report(name: str, walls: dict[str, float], parts: dict[str, dict[str, float]]) -> None:
    for mode, wall in walls.items():
        emit(f"{name}.{mode}_s", wall)
        for phase, seconds in parts[mode].items():
            emit(f"{name}.{mode}.{phase}_s", seconds)
    emit(f"{name}.wall_ratio", walls["without_reuse"] / walls["with_reuse"])
    for phase in ("teacher_training", "gradients"):
        emit(f"{name}.{phase}_ratio", parts["without_reuse"][phase] / parts["with_reuse"][phase])


def run(quick: bool, data: Dataset | None) -> None:
    count_paper()
    if data is None:
        emit("grid.reduced", "skipped: Fashion-MNIST not found under --data-root")
        return
    measure_reduced(quick, data)
