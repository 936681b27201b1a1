"""Teacher training speed at batch 32: steps per second per model and speed option
(raydistill.train.SpeedOptions), measured side by side in one process, and the paper grid's teacher
cost (Tables 1-2, with teacher reuse) extrapolated from them.

Each variant first runs a short untimed fit (compilation, oneDNN or cuDNN choices; `warmup_s`), then
the variants are timed through `fit` in interleaved rounds and each keeps its best round (other work
shares the machine). Steps are timed on 1x28x28 images (MNIST, Fashion-MNIST); the eager step is
also timed on 3x32x32 (CIFAR-10), where the other variants are priced at their 1x28x28 ratio to
eager. On the CPU torch runs one thread, as a sweep trial does (one CPU each), so the grid's cost
comes out in core-hours; a single thread also keeps other processes on the cores from stalling
OpenMP barriers, which skews multi-threaded timings on a shared machine far more than their load.
tf32 is a no-op on the CPU and is timed on CUDA only; the CUDA part runs when a GPU is visible.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from benchmarks.timing import compare, emit, timed
from raydistill import models
from raydistill.data import Dataset
from raydistill.device import describe
from raydistill.train import SpeedOptions, fit
from raydistill.tune.grid import Grid, expand, teacher_jobs
from sweeps.paper_grid import TABLES_1_2

Shape = tuple[int, int, int]
BATCH = 32
MNIST, CIFAR = (1, 28, 28), (3, 32, 32)
PAPER_DATA: dict[str, tuple[Shape, int]] = {"mnist": (MNIST, 60_000), "fashion-mnist": (MNIST, 60_000),
                                            "cifar10": (CIFAR, 50_000)}  # image shape, training images
MODELS = ("baseline", "lenet", "convnet3", "resnet34")
# steps per timed fit (quick, full); many short rounds, since the best round is the one kept
CPU_STEPS = {"baseline": (10, 30), "lenet": (50, 150), "convnet3": (3, 10), "resnet34": (1, 2)}
CUDA_STEPS = (200, 1000)
ROUNDS = (3, 6)
VARIANTS = {
    "eager": SpeedOptions(),
    "compiled": SpeedOptions(compile=True),
    "bf16": SpeedOptions(precision="bf16"),
    "channels_last": SpeedOptions(channels_last=True),
    "bf16_channels_last": SpeedOptions(precision="bf16", channels_last=True),
    "compiled_bf16": SpeedOptions(compile=True, precision="bf16"),
    "compiled_bf16_channels_last": SpeedOptions(compile=True, precision="bf16", channels_last=True),
}
CUDA_VARIANTS = {"tf32": SpeedOptions(precision="tf32"), "compiled_tf32": SpeedOptions(compile=True, precision="tf32")}
QUICK = ("eager", "compiled", "bf16", "channels_last", "bf16_channels_last")


@dataclass(frozen=True)
class Teacher:
    model: str
    shape: Shape
    epochs: int
    steps_per_epoch: int


def paper_teachers() -> list[Teacher]:
    """The teachers Tables 1-2 train with reuse: one per dataset and model, to its largest milestone."""
    teachers = []
    for job in teacher_jobs(expand(Grid("tables_1_2", [TABLES_1_2]))).values():
        shape, images = PAPER_DATA[job.config.dataset]
        teachers.append(Teacher(job.config.model, shape, max(job.milestones), math.ceil(images / BATCH)))
    return teachers


def variants_for(name: str, device: torch.device, quick: bool) -> dict[str, SpeedOptions]:
    """All variants on CUDA. On the CPU ResNet-34 leaves out the compiled bf16 variants, and --quick
    its compiled ones too (compiling its forward and backward takes one to two minutes a variant
    there), and --quick times the QUICK variants only."""
    if device.type == "cuda":
        return VARIANTS | CUDA_VARIANTS
    chosen = {k: v for k, v in VARIANTS.items() if k in QUICK} if quick else dict(VARIANTS)
    if name == "resnet34":
        chosen = {k: v for k, v in chosen.items() if not v.compile or (v.precision == "fp32" and not quick)}
    return chosen


def steps_per_second(name: str, shape: Shape, device: torch.device, steps: int, variants: dict[str, SpeedOptions],
                     rounds: int) -> tuple[dict[str, float], dict[str, float]]:
    """(steps per second, warm-up seconds) of each variant on one model."""
    torch.manual_seed(0)
    model = models.build(name, shape, 10, [0.5] * shape[0], [0.25] * shape[0]).to(device)
    x = torch.randint(0, 256, (steps * BATCH, *shape), dtype=torch.uint8, device=device)
    y = torch.randint(0, 10, (steps * BATCH,), device=device)

    def run(speed: SpeedOptions, n: int) -> Callable[[], None]:
        def call() -> None:
            fit(model, x[:n], y[:n], 1, batch_size=BATCH, speed=speed)
            if device.type == "cuda":
                torch.cuda.synchronize(device)  # the steps' queued GPU work is part of their time
        return call

    warmup = {k: timed(run(v, 2 * BATCH))[0] for k, v in variants.items()}
    best = compare({k: run(v, len(y)) for k, v in variants.items()}, rounds)
    return {k: steps / seconds for k, (seconds, _) in best.items()}, warmup


def measure(device: torch.device, quick: bool) -> None:
    unit = "cpu_core_hours" if device.type == "cpu" else "gpu_hours"
    prefix = f"speed.{device.type}"
    emit(f"{prefix}.device", describe(device))
    emit(f"{prefix}.batch", BATCH)
    rounds = ROUNDS[not quick]
    rates: dict[tuple[str, Shape], dict[str, float]] = {}
    for name in MODELS:
        steps = CPU_STEPS[name][not quick] if device.type == "cpu" else CUDA_STEPS[not quick]
        chosen = variants_for(name, device, quick)
        rate, warmup = steps_per_second(name, MNIST, device, steps, chosen, rounds)
        emit(f"{prefix}.{name}.steps_timed", steps)
        for variant, value in rate.items():
            emit(f"{prefix}.{name}.{variant}.steps_per_s", value)
            emit(f"{prefix}.{name}.{variant}.warmup_s", warmup[variant])
        for variant, value in rate.items():
            if variant != "eager":
                emit(f"{prefix}.{name}.{variant}_vs_eager", value / rate["eager"])
        emit(f"{prefix}.{name}.fastest", max(rate, key=rate.get))
        rates[(name, MNIST)] = rate
    teachers = paper_teachers()
    for name in sorted({t.model for t in teachers if t.shape == CIFAR}):
        steps = CPU_STEPS[name][not quick] if device.type == "cpu" else CUDA_STEPS[not quick]
        eager = steps_per_second(name, CIFAR, device, steps, {"eager": VARIANTS["eager"]}, rounds)[0]["eager"]
        emit(f"{prefix}.{name}.3x32x32.eager.steps_per_s", eager)
        rates[(name, CIFAR)] = {k: v * eager / rates[(name, MNIST)]["eager"] for k, v in rates[(name, MNIST)].items()}
    extrapolate(prefix, unit, teachers, rates)


def extrapolate(prefix: str, unit: str, teachers: list[Teacher], rates: dict[tuple[str, Shape], dict[str, float]]) -> None:
    """Serial hours of the grid's teacher epochs per model and variant, in total for the variants
    every model was timed with, and with each model at its fastest."""
    label = f"{prefix}.paper.tables_1_2"
    emit(f"{label}.teacher_epochs", sum(t.epochs for t in teachers))
    hours: dict[str, dict[str, float]] = {}
    for t in teachers:
        for variant, rate in rates[(t.model, t.shape)].items():
            per_model = hours.setdefault(t.model, {})
            per_model[variant] = per_model.get(variant, 0.0) + t.epochs * t.steps_per_epoch / rate / 3600
    for model, per_variant in hours.items():
        emit(f"{label}.{model}.teacher_epochs", sum(t.epochs for t in teachers if t.model == model))
        for variant, value in per_variant.items():
            emit(f"{label}.{model}.{variant}.{unit}", value)
    every_model = [v for v in next(iter(hours.values())) if all(v in per_variant for per_variant in hours.values())]
    for variant in every_model:
        emit(f"{label}.{variant}.{unit}", sum(per_variant[variant] for per_variant in hours.values()))
    emit(f"{label}.fastest_per_model.{unit}", sum(min(v.values()) for v in hours.values()))


def run(quick: bool, data: Dataset | None) -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        measure(torch.device("cpu"), quick)
    finally:
        torch.set_num_threads(threads)
    if torch.cuda.is_available():
        measure(torch.device("cuda"), quick)
    else:
        emit("speed.cuda", "skipped: no GPU")
