"""The teacher: a model trained on the whole training set, kept at one or more epoch milestones.

One run to the largest milestone serves every smaller one (constant lr, no decay: the state at
epoch 200 of a 600-epoch run is exactly that of a 200-epoch run with the same seed). Training can
stop and continue from a checkpoint (weights, Adam's state and the epoch; the batch order is
replayed from the seed) with the same result as an uninterrupted run.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from raydistill import models
from raydistill.data import Dataset, DeviceData
from raydistill.distill.modifiers import per_sample_grad_l1
from raydistill.train import CHECKPOINT_SECONDS, EpochStats, SpeedOptions, fit, predict_proba, to_cpu


@dataclass
class TeacherSnapshot:
    epoch: int
    state_dict: dict[str, torch.Tensor]  # on the CPU
    last_step_l1: float  # L1 norm of the weight gradient of the epoch's last step
    test_accuracy: float  # reported beside results (never used to select anything)
    train_seconds: float  # training time from epoch 0 to this milestone
    grad_l1: torch.Tensor | None = None  # per-image weight-gradient L1 norms, when asked for
    grad_seconds: float = 0.0

    def model(self, data: Dataset, name: str, device: torch.device, normalize: bool = True) -> nn.Module:
        model = models.build(name, data.shape, data.num_classes, data.mean, data.std, normalize=normalize).to(device)
        model.load_state_dict(self.state_dict)
        return model.eval()


@dataclass
class TeacherCheckpoint:
    """Everything needed to continue training exactly where it stopped."""

    epoch: int
    model_state: dict[str, torch.Tensor]
    optimizer_state: dict
    train_seconds: float


def train_teacher(
    name: str,
    data: Dataset,
    tensors: DeviceData,
    milestones: Sequence[int],
    *,
    seed: int,
    lr: float,
    batch_size: int,
    normalize: bool = True,
    with_grad_l1: bool = False,
    on_snapshot: Callable[[TeacherSnapshot], None] | None = None,
    resume: TeacherCheckpoint | None = None,
    on_checkpoint: Callable[[TeacherCheckpoint], None] | None = None,
    on_epoch: Callable[[int, EpochStats], None] | None = None,
    speed: SpeedOptions | None = None,
) -> list[TeacherSnapshot]:
    """Train to max(milestones) (from `resume` when given), snapshotting at each milestone past the
    resumed epoch (with the per-image gradient norms when `with_grad_l1`). `on_snapshot` sees each
    snapshot as soon as it exists; `on_checkpoint` gets a checkpoint at every milestone and at
    least every CHECKPOINT_SECONDS; `on_epoch(epoch, stats)` sees every epoch."""
    wanted = set(milestones)
    snapshots: list[TeacherSnapshot] = []
    device = tensors.x_train.device
    torch.manual_seed(seed)
    model = models.build(name, data.shape, data.num_classes, data.mean, data.std, normalize=normalize).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    start = 0
    clock = {"train": 0.0, "start": time.perf_counter(), "saved": time.perf_counter()}
    if resume is not None:
        model.load_state_dict(resume.model_state)
        optimizer.load_state_dict(resume.optimizer_state)
        start, clock["train"] = resume.epoch, resume.train_seconds

    def checkpoint(epoch: int, net: nn.Module) -> None:
        if on_checkpoint is not None:
            on_checkpoint(TeacherCheckpoint(epoch, to_cpu(net.state_dict()), to_cpu(optimizer.state_dict()),
                                            clock["train"]))
        clock["saved"] = time.perf_counter()

    def after_epoch(epoch: int, net: nn.Module, stats: EpochStats) -> None:
        now = time.perf_counter()
        clock["train"] += now - clock["start"]
        if on_epoch is not None:
            on_epoch(epoch, stats)
        if epoch in wanted:
            proba = predict_proba(net, tensors.x_test, speed=speed)
            accuracy = float((proba.argmax(1) == tensors.y_test.cpu()).float().mean())
            snap = TeacherSnapshot(epoch, to_cpu(net.state_dict()), stats.last_step_l1, accuracy, clock["train"])
            if with_grad_l1:
                grad_start = time.perf_counter()
                snap.grad_l1 = per_sample_grad_l1(net, tensors.x_train, tensors.y_train).cpu()
                snap.grad_seconds = time.perf_counter() - grad_start
            snapshots.append(snap)
            if on_snapshot is not None:
                on_snapshot(snap)
            checkpoint(epoch, net)
        elif now - clock["saved"] > CHECKPOINT_SECONDS:
            checkpoint(epoch, net)
        clock["start"] = time.perf_counter()

    fit(model, tensors.x_train, tensors.y_train, max(wanted), batch_size=batch_size, seed=seed, optimizer=optimizer,
        start_epoch=start, on_epoch=after_epoch, speed=speed)
    return snapshots
