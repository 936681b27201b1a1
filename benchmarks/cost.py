"""What the long grids cost on this machine, measured before they run: seconds per teacher epoch
(one torch thread and two), seconds per evaluation model of the dc protocol at ipc 10 (one
thread), and from those the expected CPU hours of the paper-settings and controls grids.

The estimate multiplies measured per-image step times by the images each teacher and student sees
(teachers once to their largest milestone, as the sweep trains them); it leaves out K-means, the
gradient norms and MLflow, which are minutes against hours.
"""

from __future__ import annotations

import time
from argparse import Namespace

import torch

from benchmarks.timing import emit
from raydistill import dc, models
from raydistill.data import Dataset
from raydistill.dc import reference_epochs
from raydistill.protocols import train_convnet
from raydistill.train import fit, predict_proba
from raydistill.tune.grid import Grid, expand, teacher_jobs

TEACHER_IMAGES = {"baseline": 10_000, "lenet": 60_000}  # the paper-settings preset's training splits


def seconds_per_image(model: str, data: Dataset, images: int, threads: int) -> float:
    """One Adam epoch (batch 32) of a fresh `model` over `images` training images, per image."""
    torch.set_num_threads(threads)
    x, y = torch.from_numpy(data.train.images[:images]), torch.from_numpy(data.train.labels[:images]).long()
    torch.manual_seed(0)
    net = models.build(model, data.shape, data.num_classes, data.mean, data.std)
    fit(net, x[:256], y[:256], 1)  # warm up
    start = time.perf_counter()
    fit(net, x, y, 1)
    return (time.perf_counter() - start) / images


def dc_model_seconds(data: Dataset, ipc: int, passes: int) -> tuple[float, float, float]:
    """(seconds per training pass over ipc x classes images, of the MNIST augmentation of those
    images, of the test pass) of one ConvNet-3 under the dc protocol, one thread."""
    torch.set_num_threads(1)
    n = ipc * data.num_classes
    x, y = torch.from_numpy(data.train.images[:n]).float() / 255, torch.from_numpy(data.train.labels[:n]).long()
    start = time.perf_counter()
    net = train_convnet(data, x, y, passes - 1, seed=0)
    per_pass = (time.perf_counter() - start) / passes
    augment = dc.augmentation("mnist", *dc.normalisation("mnist", (), ()), seed=0)
    start = time.perf_counter()
    for _ in range(passes):
        augment(x)
    augmenting = (time.perf_counter() - start) / passes
    start = time.perf_counter()
    predict_proba(net, torch.from_numpy(data.test.images))
    return per_pass, augmenting, time.perf_counter() - start


def grid_hours(grid: Grid, per_image: dict[str, float], dc_pass_image: dict[str, float], test_pass: float,
               train_images: int = 60_000) -> tuple[float, float]:
    """(teacher, student) CPU hours of a grid: every teacher once to its largest milestone, every
    student its epochs x images (paper protocol) or its models' passes and test passes (dc)."""
    cells = expand(grid, {"seed": 0})
    teachers = sum(max(job.milestones) * (job.config.train_limit or train_images) * per_image[job.config.model]
                   for job in teacher_jobs(cells).values())
    students, trained = 0.0, set()
    for cell in cells:
        cfg = cell.config
        if cfg.student_key() in trained:  # a twin only scores the student another cell trains
            continue
        trained.add(cfg.student_key())
        images = cfg.ipc * 10 if cfg.distills else (cfg.train_limit or train_images)
        if cfg.protocol == "dc":
            models_ = cfg.eval_sets * cfg.eval_runs
            students += models_ * ((cfg.student_epochs + 1) * images * dc_pass_image[cfg.dataset] + test_pass)
        else:
            students += cfg.student_epochs * images * per_image[cfg.model]
    return teachers / 3600, students / 3600


def run(quick: bool, data: Dataset | None) -> None:
    if data is None:
        return
    from sweeps import controls, forensics

    images = {model: 2_000 if quick else n for model, n in TEACHER_IMAGES.items()}
    per_image = {}
    for model, n in images.items():
        for threads in (1, 2):
            seconds = seconds_per_image(model, data, n, threads)
            emit(f"cost.teacher.{model}.threads{threads}.seconds_per_epoch_of_{TEACHER_IMAGES[model]}",
                 seconds * TEACHER_IMAGES[model])
            if threads == 1:
                per_image[model] = seconds
    passes = 3 if quick else 20
    per_pass, augmenting, test_pass = dc_model_seconds(data, 10, passes)
    pass_image = {"fashion-mnist": per_pass / 100, "mnist": (per_pass + augmenting) / 100}  # ipc 10: 100 images
    for dataset in ("fashion-mnist", "mnist"):
        epochs = reference_epochs(dataset)
        emit(f"cost.dc.{dataset}.ipc10.seconds_per_evaluation_model", (epochs + 1) * 100 * pass_image[dataset] + test_pass)
    emit("cost.dc.mnist_augmentation_share_of_a_pass", augmenting / (per_pass + augmenting))
    emit("cost.dc.test_pass_seconds", test_pass)
    for name, grid in (("paper-settings", forensics.grid(Namespace(smoke=False, cpu_hour=False, paper_settings=True,
                                                                   own_teachers=False))),
                       ("controls", controls.grid(Namespace(smoke=False, mnist_50=False))),
                       ("controls-mnist-50", controls.grid(Namespace(smoke=False, mnist_50=True)))):
        teachers, students = grid_hours(grid, per_image, pass_image, test_pass)
        emit(f"cost.{name}.teacher_cpu_hours", teachers)
        emit(f"cost.{name}.student_cpu_hours", students)
