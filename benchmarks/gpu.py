"""On a CUDA GPU only: a teacher epoch per model at batch 32, the per-image gradient norms, and the
paper grid's GPU-hours extrapolated from them, with and without teacher reuse.

The extrapolation counts training steps (teacher epochs, student epochs on ipc x classes images or on
the full set) and gradient-norm passes over the training set (one per teacher milestone with reuse,
one per cell without); test evaluation and K-means are left out (small beside them). Trials that
share a GPU (a quarter each for the small models) may finish sooner than these serial hours.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import torch

from benchmarks.timing import emit, timed
from raydistill import models
from raydistill.data import Dataset
from raydistill.distill.modifiers import per_sample_grad_l1
from raydistill.train import fit
from raydistill.tune.grid import Cell, Grid, expand, teacher_key
from sweeps.paper_grid import TABLE_3, TABLES_1_2

T = TypeVar("T")
BATCH = 32
Shape = tuple[int, int, int]
PAPER_DATA: dict[str, tuple[Shape, int, int]] = {  # image shape, training images, classes
    "mnist": ((1, 28, 28), 60_000, 10),
    "fashion-mnist": ((1, 28, 28), 60_000, 10),
    "cifar10": ((3, 32, 32), 50_000, 10),
}
MEASURED = [("baseline", (1, 28, 28)), ("lenet", (1, 28, 28)), ("convnet3", (1, 28, 28)), ("resnet34", (1, 28, 28)),
            ("baseline", (3, 32, 32)), ("lenet", (3, 32, 32)), ("resnet34", (3, 32, 32))]


@dataclass(frozen=True)
class Cost:
    step_s: float  # one training step at batch 32
    grad_image_s: float  # one image's weight-gradient L1 norm


def synchronised(fn: Callable[[], T], device: torch.device) -> Callable[[], T]:
    """fn, then wait for the GPU's queued work, so that its wall time is the work's."""
    def call() -> T:
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return out
    return call


def measure(name: str, shape: Shape, device: torch.device, steps: int, grad_images: int) -> Cost:
    torch.manual_seed(0)
    model = models.build(name, shape, 10, [0.5] * shape[0], [0.25] * shape[0]).to(device)
    x = torch.randint(0, 256, (steps * BATCH, *shape), dtype=torch.uint8, device=device)
    y = torch.randint(0, 10, (steps * BATCH,), device=device)
    fit(model, x[: 5 * BATCH], y[: 5 * BATCH], 1)  # warm-up: cuDNN choices, allocator
    train_s, _ = timed(synchronised(lambda: fit(model, x, y, 1), device))
    per_sample_grad_l1(model, x[:2], y[:2])
    grad_s, _ = timed(synchronised(lambda: per_sample_grad_l1(model, x[:grad_images], y[:grad_images]), device))
    return Cost(train_s / steps, grad_s / grad_images)


def grid_seconds(cells: list[Cell], costs: dict[tuple[str, Shape], Cost]) -> tuple[float, float]:
    """(with reuse, without reuse) serial GPU seconds of the cells."""
    with_reuse = without = 0.0
    teachers: dict[str, dict] = {}
    for cell in cells:
        cfg = cell.config
        shape, n, classes = PAPER_DATA[cfg.dataset]
        cost = costs[(cfg.model, shape)]
        epoch_steps = math.ceil(n / BATCH)
        student_steps = epoch_steps if cfg.method == "full" else math.ceil(cfg.ipc * classes / BATCH)
        student = cfg.student_epochs * student_steps * cost.step_s
        with_reuse += student
        without += student
        if not cfg.needs_teacher:
            continue
        grads = n * cost.grad_image_s if cfg.modifier == "grad-l1" else 0.0
        epoch_s = epoch_steps * cost.step_s
        teacher = teachers.setdefault(teacher_key(cfg), {"epochs": 0, "grads": {}, "epoch_s": epoch_s})
        without += cfg.teacher_epochs * epoch_s + grads
        teacher["epochs"] = max(teacher["epochs"], cfg.teacher_epochs)
        teacher["grads"][cfg.teacher_epochs] = max(teacher["grads"].get(cfg.teacher_epochs, 0.0), grads)
    with_reuse += sum(t["epochs"] * t["epoch_s"] + sum(t["grads"].values()) for t in teachers.values())
    return with_reuse, without


def run(quick: bool, data: Dataset | None) -> None:
    if not torch.cuda.is_available():
        emit("gpu", "skipped: no GPU")
        return
    device = torch.device("cuda")
    emit("gpu.device", torch.cuda.get_device_name(device))
    costs = {}
    for name, shape in MEASURED:
        n = 60_000 if shape == (1, 28, 28) else 50_000
        steps = 200 if quick else math.ceil(n / BATCH)
        costs[(name, shape)] = cost = measure(name, shape, device, steps, 64 if name == "resnet34" else 1024)
        label = f"gpu.{name}.{'x'.join(map(str, shape))}"
        emit(f"{label}.epoch_s", cost.step_s * math.ceil(n / BATCH))
        emit(f"{label}.steps_per_s", 1 / cost.step_s)
        emit(f"{label}.grad_l1_images_per_s", 1 / cost.grad_image_s)
    for name, parts in {"tables_1_2": [TABLES_1_2], "tables_1_to_3": [TABLES_1_2, *TABLE_3]}.items():
        with_reuse, without = grid_seconds(expand(Grid(name, parts)), costs)
        emit(f"gpu.paper.{name}.gpu_hours_with_reuse", with_reuse / 3600)
        emit(f"gpu.paper.{name}.gpu_hours_without_reuse", without / 3600)
        emit(f"gpu.paper.{name}.reuse_ratio", without / with_reuse)
