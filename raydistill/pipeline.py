"""One trial, end to end: config -> data -> teacher -> gradient shift -> per-class selection ->
distilled set -> student -> test metrics (protocol 'paper', or the field's 'dc' in
raydistill.protocols). No Ray or MLflow here; the tune layer wraps this."""

from __future__ import annotations

import math
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np
import torch

from raydistill import data as data_lib
from raydistill import device as device_lib
from raydistill.config import TrialConfig
from raydistill.data import Dataset, DeviceData
from raydistill.distill import modifiers
from raydistill.distill.cluster import resolve_backend
from raydistill.distill.methods import METHODS
from raydistill.evaluate import score_on_test, train_student
from raydistill.protocols import evaluate_dc
from raydistill.teacher import TeacherSnapshot, train_teacher
from raydistill.train import as_unit

PHASES = ("load", "teacher", "gradients", "modification", "selection", "student", "evaluation")


@dataclass
class TrialResult:
    config: dict
    metrics: dict
    timings: dict[str, float]
    device: str
    kmeans_backend: str | None
    classes: list[str]
    n_train: int
    images: torch.Tensor  # distilled images, float32 (n, C, H, W) in [0, 1] units, on the CPU
    labels: torch.Tensor  # int64 (n,)
    meta: dict
    proba: np.ndarray  # test-set class probabilities (for ROC plots)
    y_test: np.ndarray
    teacher: dict = field(default_factory=dict)

    def summary(self) -> dict:
        """Everything JSON-serialisable about the trial (NaN becomes null)."""
        out = {
            "config": self.config, "metrics": self.metrics, "timings": self.timings, "device": self.device,
            "kmeans_backend": self.kmeans_backend, "classes": self.classes, "n_train": self.n_train,
            "n_distilled": len(self.labels), "teacher": self.teacher,
        }
        return _jsonable(out)


def _jsonable(value):
    """Plain JSON types; NaN becomes None (JSON has no NaN)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


class Timer:
    def __init__(self) -> None:
        self.seconds = {phase: 0.0 for phase in PHASES}

    @contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] += time.perf_counter() - start


def prepare_data(cfg: TrialConfig, data: Dataset | None = None) -> Dataset:
    """Load (unless given) and limit the training split, then run the data-dependent checks."""
    if data is None:
        data = data_lib.load(cfg.dataset, cfg.data_root, download=cfg.download, resize=cfg.resize)
    data = data.limit_train(cfg.train_limit, cfg.seed)
    cfg.check_data(data.classes, data.train.class_counts(data.num_classes))
    return data


def positive_index(cfg: TrialConfig, classes: list[str]) -> int:
    """The binary positive class: the named one, else the second class (index 1)."""
    return classes.index(cfg.positive_class) if cfg.positive_class is not None else 1


TeacherProvider = Callable[[Dataset, DeviceData], TeacherSnapshot]


def run_trial(cfg: TrialConfig, data: Dataset | None = None, teacher: TeacherProvider | None = None) -> TrialResult:
    """Run one trial. `data` skips loading (already loaded, e.g. shared by Ray); `teacher` replaces
    teacher training (e.g. a cached snapshot at cfg.teacher_epochs from the same data and seed)."""
    cfg.validate()
    timer = Timer()
    wall = time.perf_counter()
    with timer("load"):
        data = prepare_data(cfg, data)
        device = device_lib.resolve(cfg.device)
        tensors = data.to(device)
    backend = resolve_backend(cfg.backend, device) if cfg.method in ("kmeans", "kmeans-nearest") else None
    teacher_info: dict = {}
    signal = None
    if cfg.needs_teacher:
        with timer("teacher"):
            snap = (teacher or train_once(cfg))(data, tensors)
        teacher_info = {"epochs": snap.epoch, "test_accuracy": snap.test_accuracy,
                        "last_step_l1": snap.last_step_l1, "train_seconds": snap.train_seconds}
        with timer("gradients"):
            net = snap.model(data, cfg.model, device)
            signal = modifiers.signal(cfg.modifier, net, tensors.x_train, tensors.y_train,
                                      last_step_l1=snap.last_step_l1, grad_l1=snap.grad_l1)
            del net

    if cfg.method == "full":
        images, labels = tensors.x_train, tensors.y_train
    else:
        images, labels = distill(cfg, tensors.x_train, tensors.y_train, data.num_classes, signal, backend, timer)

    positive = positive_index(cfg, data.classes)
    if cfg.protocol == "dc":
        with timer("student"):  # the runs' test predictions are included: training dominates
            metrics, proba = evaluate_dc(cfg, data, images, labels, tensors, positive)
    else:
        with timer("student"):
            student = train_student(cfg, data, images, labels)
        with timer("evaluation"):
            metrics, proba = score_on_test(student, tensors, positive)
    timings = {k: round(v, 4) for k, v in timer.seconds.items()}
    timings["total"] = round(time.perf_counter() - wall, 4)
    metrics["teacher_accuracy"] = teacher_info.get("test_accuracy", math.nan)
    export = as_unit(images).cpu() if cfg.method != "full" else torch.empty(0)
    return TrialResult(
        config=cfg.to_dict(), metrics=metrics, timings=timings, device=device_lib.describe(device),
        kmeans_backend=backend, classes=list(data.classes), n_train=len(data.train),
        images=export, labels=labels.cpu() if cfg.method != "full" else torch.empty(0, dtype=torch.long),
        meta={**data.meta(), "config": cfg.to_dict()}, proba=proba, y_test=tensors.y_test.cpu().numpy(),
        teacher=teacher_info,
    )


def train_once(cfg: TrialConfig) -> TeacherProvider:
    """The default teacher: trained here, to cfg.teacher_epochs."""
    def provide(data: Dataset, tensors: DeviceData) -> TeacherSnapshot:
        (snap,) = train_teacher(cfg.model, data, tensors, [cfg.teacher_epochs], seed=cfg.seed, lr=cfg.lr,
                                batch_size=cfg.batch_size)
        return snap

    return provide


def distill(
    cfg: TrialConfig,
    x: torch.Tensor,
    y: torch.Tensor,
    num_classes: int,
    signal: modifiers.Signal | None,
    backend: str | None,
    timer: Timer,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per class: shift the images (Eq. 2), then pick or build cfg.ipc images with cfg.method."""
    select = METHODS[cfg.method]
    options = {"iterations": cfg.dm_iterations} if cfg.method == "dm" else {}
    out_images, out_labels = [], []
    for c in range(num_classes):
        index = (y == c).nonzero().squeeze(1)
        with timer("modification"):
            shifted = modifiers.shift(as_unit(x[index]), modifiers.rows(signal, index), cfg.step_size)
        with timer("selection"):
            out_images.append(select(shifted, cfg.ipc, seed=cfg.seed, backend=backend, **options))
        out_labels.append(torch.full((cfg.ipc,), c, dtype=torch.long, device=x.device))
    return torch.cat(out_images), torch.cat(out_labels)
