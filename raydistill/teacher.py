"""The teacher: a model trained on the whole training set, kept at one or more epoch milestones.

One run to the largest milestone serves every smaller one (constant lr, no decay: the state at
epoch 200 of a 600-epoch run is exactly that of a 200-epoch run with the same seed).
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
from raydistill.train import EpochStats, fit, predict_proba


@dataclass
class TeacherSnapshot:
    epoch: int
    state_dict: dict[str, torch.Tensor]  # on the CPU
    last_step_l1: float  # L1 norm of the weight gradient of the epoch's last step
    test_accuracy: float  # reported beside results (never used to select anything)
    train_seconds: float  # training time from epoch 0 to this milestone
    grad_l1: torch.Tensor | None = None  # per-image weight-gradient L1 norms, when asked for
    grad_seconds: float = 0.0

    def model(self, data: Dataset, name: str, device: torch.device) -> nn.Module:
        model = models.build(name, data.shape, data.num_classes, data.mean, data.std).to(device)
        model.load_state_dict(self.state_dict)
        return model.eval()


def train_teacher(
    name: str,
    data: Dataset,
    tensors: DeviceData,
    milestones: Sequence[int],
    *,
    seed: int,
    lr: float,
    batch_size: int,
    with_grad_l1: bool = False,
    on_snapshot: Callable[[TeacherSnapshot], None] | None = None,
) -> list[TeacherSnapshot]:
    """Train to max(milestones), snapshotting at each milestone (and computing the per-image
    gradient norms there when `with_grad_l1`). `on_snapshot` sees each one as soon as it exists."""
    wanted = set(milestones)
    snapshots: list[TeacherSnapshot] = []
    device = tensors.x_train.device
    torch.manual_seed(seed)
    model = models.build(name, data.shape, data.num_classes, data.mean, data.std).to(device)
    clock = {"train": 0.0, "start": time.perf_counter()}

    def snapshot(epoch: int, net: nn.Module, stats: EpochStats) -> None:
        if epoch not in wanted:
            return
        clock["train"] += time.perf_counter() - clock["start"]
        proba = predict_proba(net, tensors.x_test)
        accuracy = float((proba.argmax(1) == tensors.y_test.cpu()).float().mean())
        snap = TeacherSnapshot(epoch, {k: v.detach().cpu().clone() for k, v in net.state_dict().items()},
                               stats.last_step_l1, accuracy, clock["train"])
        if with_grad_l1:
            start = time.perf_counter()
            snap.grad_l1 = per_sample_grad_l1(net, tensors.x_train, tensors.y_train).cpu()
            snap.grad_seconds = time.perf_counter() - start
        snapshots.append(snap)
        if on_snapshot is not None:
            on_snapshot(snap)
        clock["start"] = time.perf_counter()

    fit(model, tensors.x_train, tensors.y_train, max(wanted), lr=lr, batch_size=batch_size, seed=seed, on_epoch=snapshot)
    return snapshots
