"""One trial, end to end: config -> data -> teacher -> gradient shift -> per-class selection ->
distilled set -> student -> metrics, under the registered protocol (raydistill.protocols).
No Ray or MLflow here; the tune layer wraps this."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch

from raydistill import data as data_lib
from raydistill import device as device_lib
from raydistill.config import TrialConfig
from raydistill.data import Dataset, DeviceData
from raydistill.distill import modifiers
from raydistill.distill.cluster import resolve_backend
from raydistill.protocols import Progress, StudentCheckpoint, StudentData, combine, fingerprint, speed_options
from raydistill.registry import METHODS, PROTOCOLS
from raydistill.teacher import TeacherSnapshot, train_teacher
from raydistill.train import as_unit

PHASES = ("load", "teacher", "gradients", "modification", "selection", "student")
SET_SEED_OFFSET = 2_000_003  # the seeds of a trial's second and later distilled sets (set_seeds)


@dataclass
class TrialResult:
    config: dict
    metrics: dict
    timings: dict[str, float]
    device: str
    kmeans_backend: str | None
    classes: list[str]
    n_train: int
    images: torch.Tensor  # distilled images, float32 (n, C, H, W) on the CPU, in the trial's pixel scale
    labels: torch.Tensor  # int64 (n,)
    meta: dict
    proba: np.ndarray  # class probabilities on the scored split (for ROC plots)
    y_true: np.ndarray  # labels of the scored split
    curves: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    teacher: dict = field(default_factory=dict)
    resumed_epoch: int = 0  # the student continued from an earlier attempt's checkpoint at this epoch

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


def device_tensors(cfg: TrialConfig, data: Dataset, device: torch.device) -> tuple[DeviceData, DeviceData]:
    """(the dataset's splits, the teacher's and the selection's pool) on the device. The pool is
    the training split, plus the test split under leak_test; under pixel_scale=byte the pixels
    are floats in 0..255 (never divided), else uint8 scaled to [0, 1] batch by batch."""
    tensors = data.to(device)
    if cfg.pixel_scale == "byte":
        tensors = DeviceData(tensors.x_train.float(), tensors.y_train, tensors.x_test.float(), tensors.y_test)
    if not cfg.leak_test:
        return tensors, tensors
    pool = DeviceData(torch.cat([tensors.x_train, tensors.x_test]), torch.cat([tensors.y_train, tensors.y_test]),
                      tensors.x_test, tensors.y_test)
    return tensors, pool


TeacherProvider = Callable[[Dataset, DeviceData], TeacherSnapshot]


def run_trial(cfg: TrialConfig, data: Dataset | None = None, teacher: TeacherProvider | None = None,
              progress: Progress | None = None, student_resume: StudentCheckpoint | None = None,
              on_student_checkpoint: Callable[[StudentCheckpoint], None] | None = None,
              keep_final_student: bool = False) -> TrialResult:
    """Run one trial. `data` skips loading (already loaded, e.g. shared by Ray); `teacher` replaces
    teacher training (e.g. a cached snapshot at cfg.teacher_epochs from the same data and seed);
    `progress(phase, epoch, epochs, values)` sees every training epoch. The student continues from
    `student_resume` (an earlier attempt's checkpoint) when it was taken on the same distilled set,
    and `on_student_checkpoint` keeps checkpoints (the paper protocol's, see raydistill.protocols),
    with `keep_final_student` one after the last epoch too (for cells that only score it another
    way); the student's time then includes the earlier attempts' time up to that checkpoint."""
    cfg.validate()
    timer = Timer()
    wall = time.perf_counter()
    with timer("load"):
        data = prepare_data(cfg, data)
        device = device_lib.resolve(cfg.device)
        tensors, pool = device_tensors(cfg, data, device)
    method = METHODS[cfg.method]
    backend = resolve_backend(cfg.backend, device) if method.uses_kmeans else None
    teacher_info: dict = {}
    signal, snap = None, None
    if cfg.needs_teacher:
        with timer("teacher"):
            snap = (teacher or train_here(cfg, progress))(data, pool)
        teacher_info = {"epochs": snap.epoch, "test_accuracy": snap.test_accuracy,
                        "last_step_l1": snap.last_step_l1, "train_seconds": snap.train_seconds}
        with timer("gradients"):
            net = snap.model(data, cfg.model, device, normalize=cfg.pixel_scale == "unit")
            signal = modifiers.signal(cfg.modifier, net, pool.x_train, pool.y_train,
                                      last_step_l1=snap.last_step_l1, grad_l1=snap.grad_l1)
            del net

    positive = positive_index(cfg, data.classes)
    by_model = PROTOCOLS[cfg.protocol].sets  # protocols that train models one by one continue model by model
    resume = ModelLog(student_resume, on_student_checkpoint) if by_model else None
    evaluations = []
    for i, set_seed in enumerate(set_seeds(cfg.seed, cfg.eval_sets)):
        set_cfg = cfg.replace(seed=set_seed)  # the set's own draw or K-means init, and its own evaluation inits
        if method.distills:
            set_images, set_labels = distill(set_cfg, pool.x_train, pool.y_train, data.num_classes, signal, backend, timer)
        else:
            set_images, set_labels = pool.x_train, pool.y_train
        if i == 0:
            images, labels = set_images, set_labels  # the set that is exported and shown
        student = StudentData(set_images, set_labels, tensors, positive, snap.state_dict if snap is not None else None)
        if resume is not None:
            resume.begin_set(i, cfg.eval_runs, student)
        else:
            student.resume, student.on_checkpoint, student.keep_final = (student_resume, on_student_checkpoint,
                                                                         keep_final_student)
        with timer("student"):  # training and scoring (the scored curves are part of it)
            evaluations.append(PROTOCOLS[cfg.protocol].obj(set_cfg, data, student, progress if i == 0 else None))
    evaluation = combine(evaluations)
    if resume is not None:
        evaluation.resumed_epoch, evaluation.earlier_seconds = resume.reused, resume.earlier
    timer.seconds["student"] += evaluation.earlier_seconds
    timings = {k: round(v, 4) for k, v in timer.seconds.items()}
    timings["total"] = round(time.perf_counter() - wall + evaluation.earlier_seconds, 4)
    metrics = {**evaluation.metrics, "teacher_accuracy": teacher_info.get("test_accuracy", math.nan)}
    export = as_unit(images).cpu() if method.distills else torch.empty(0)
    return TrialResult(
        config=cfg.to_dict(), metrics=metrics, timings=timings, device=device_lib.describe(device),
        kmeans_backend=backend, classes=list(data.classes), n_train=len(data.train),
        images=export, labels=labels.cpu() if method.distills else torch.empty(0, dtype=torch.long),
        meta={**data.meta(), "pixel_scale": cfg.pixel_scale, "config": cfg.to_dict()}, proba=evaluation.proba,
        y_true=evaluation.y_true, curves=evaluation.curves, teacher=teacher_info,
        resumed_epoch=evaluation.resumed_epoch,
    )


class ModelLog:
    """Model-by-model checkpoints for protocols that evaluate a set with several models (dc): a
    StudentCheckpoint whose `epoch` counts the finished models of the whole trial (every set, in
    order) and whose scorer state holds their records and, under "partial", the state of the next
    model in training (raydistill.protocols.PassCheckpointer) with the trial's seconds when the
    models before it were done ("done_seconds": a checkpoint that leaves that state behind counts
    only those); an earlier attempt's is continued when it was taken on the same first set (the
    sets are drawn from the trial's seeds, so the same first set means the same sets)."""

    def __init__(self, resume: StudentCheckpoint | None, keep: Callable[[StudentCheckpoint], None] | None):
        self.resume, self.keep = resume, keep
        self.records: list[dict] = []
        self.partial: dict | None = None
        self.reused, self.earlier, self.done_seconds, self.fingerprint = 0, 0.0, 0.0, ""
        self.start = time.perf_counter()

    def begin_set(self, index: int, runs: int, student: StudentData) -> None:
        if index == 0:
            self.fingerprint = fingerprint(student.images, student.labels)
            if self.resume is not None and self.resume.fingerprint == self.fingerprint:
                self.records = list(self.resume.scorer_state["models"])
                self.partial = self.resume.scorer_state.get("partial")
                self.reused, self.earlier = len(self.records), self.resume.seconds
                self.done_seconds = self.partial["done_seconds"] if self.partial else self.earlier
                self.save()  # kept again at once: the attempt it came from may be dropped
        student.models_done = self.records[index * runs:(index + 1) * runs]
        in_this_set = index * runs <= len(self.records) < (index + 1) * runs
        student.model_partial = self.partial if in_this_set else None
        student.on_model = self.add
        student.on_partial = self.hold if self.keep is not None else None

    def add(self, record: dict) -> None:
        self.records.append(record)
        self.partial = None
        self.done_seconds = self.seconds()
        self.save()

    def hold(self, state: dict) -> None:
        self.partial = state | {"done_seconds": self.done_seconds}
        self.save()

    def seconds(self) -> float:
        return self.earlier + time.perf_counter() - self.start

    def save(self) -> None:
        if self.keep is not None:
            seconds = self.seconds()
            held = {"models": list(self.records)} | ({"partial": self.partial} if self.partial else {})
            self.keep(StudentCheckpoint(len(self.records), {}, {}, held, seconds, self.fingerprint))


def set_seeds(seed: int, sets: int) -> list[int]:
    """The seed of each distilled set: the trial's own for the first (one set is the trial as
    always), distinct derived ones for the others (the reference's independent experiments)."""
    return [seed] + [int(np.random.SeedSequence([SET_SEED_OFFSET, seed, i]).generate_state(1)[0])
                     for i in range(1, sets)]


def train_here(cfg: TrialConfig, progress: Progress | None = None) -> TeacherProvider:
    """The default teacher: trained here, to cfg.teacher_epochs."""
    def provide(data: Dataset, pool: DeviceData) -> TeacherSnapshot:
        def on_epoch(epoch, stats):
            if progress is not None:
                progress("teacher", epoch, cfg.teacher_epochs, {"train_loss": stats.loss, "train_accuracy": stats.accuracy})

        (snap,) = train_teacher(cfg.model, data, pool, [cfg.teacher_epochs], seed=cfg.seed, lr=cfg.lr,
                                batch_size=cfg.batch_size, normalize=cfg.pixel_scale == "unit", on_epoch=on_epoch,
                                speed=speed_options(cfg))
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
    method = METHODS[cfg.method]
    options = method.meta.get("options", lambda _: {})(cfg)
    out_images, out_labels = [], []
    for c in range(num_classes):
        index = (y == c).nonzero().squeeze(1)
        with timer("modification"):
            shifted = modifiers.shift(as_unit(x[index]), modifiers.rows(signal, index), cfg.step_size)
        with timer("selection"):
            out_images.append(method.obj(shifted, cfg.ipc, seed=cfg.seed, backend=backend, **options))
        out_labels.append(torch.full((cfg.ipc,), c, dtype=torch.long, device=x.device))
    return torch.cat(out_images), torch.cat(out_labels)
