"""Teacher training steps per second: batches sliced from tensors already on the device
(raydistill.train.fit) against a torch DataLoader over the same uint8 data, same model and steps.

Timings alternate between the variants and keep each one's best (other work may share the CPU).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from benchmarks.timing import compare, emit
from raydistill import models
from raydistill.data import Dataset
from raydistill.train import as_unit, batches, fit

BATCH = 32
ROUNDS = 3
SHAPE = (1, 28, 28)  # Fashion-MNIST


def loader_epoch(model: nn.Module, x: torch.Tensor, y: torch.Tensor, workers: int) -> None:
    """One epoch the usual way: shuffled DataLoader, uint8 -> float [0, 1] per batch, Adam 1e-3."""
    loader = DataLoader(TensorDataset(x, y), batch_size=BATCH, shuffle=True, num_workers=workers,
                        generator=torch.Generator().manual_seed(0))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    for xb, yb in loader:
        loss = F.cross_entropy(model(xb.float().div_(255.0)), yb)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


def loader_batches(x: torch.Tensor, y: torch.Tensor, workers: int) -> None:
    loader = DataLoader(TensorDataset(x, y), batch_size=BATCH, shuffle=True, num_workers=workers,
                        generator=torch.Generator().manual_seed(0))
    for xb, _ in loader:
        xb.float().div_(255.0)


def tensor_batches(x: torch.Tensor, y: torch.Tensor) -> None:
    for index in batches(len(y), BATCH, torch.Generator().manual_seed(0), x.device):
        as_unit(x[index]), y[index]


def run(quick: bool, data: Dataset | None) -> None:
    steps = 50 if quick else 200
    x = torch.randint(0, 256, (steps * BATCH, *SHAPE), dtype=torch.uint8)
    y = torch.randint(0, 10, (steps * BATCH,))
    emit("train.steps", steps)
    for name in ("baseline", "lenet"):
        torch.manual_seed(0)
        init = models.build(name, SHAPE, 10, [0.5], [0.25]).state_dict()

        def fresh() -> nn.Module:
            model = models.build(name, SHAPE, 10, [0.5], [0.25])
            model.load_state_dict(init)
            return model

        variants = {"tensors": lambda model: fit(model, x, y, 1, lr=1e-3, batch_size=BATCH, seed=0)}
        variants |= {f"dataloader{w}": lambda model, w=w: loader_epoch(model, x, y, w) for w in (0, 2)}
        seconds = {k: v[0] for k, v in compare(variants, ROUNDS, setup=fresh).items()}
        for variant, s in seconds.items():
            emit(f"train.{name}.{variant}_steps_per_s", steps / s)
        for w in (0, 2):
            emit(f"train.{name}.tensors_vs_dataloader{w}", seconds[f"dataloader{w}"] / seconds["tensors"])
    pipeline = {"tensors": lambda: tensor_batches(x, y)} | {
        f"dataloader{w}": lambda w=w: loader_batches(x, y, w) for w in (0, 2)}
    seconds = {k: v[0] for k, v in compare(pipeline, ROUNDS).items()}
    for w in (0, 2):
        emit(f"train.batches_only.tensors_vs_dataloader{w}", seconds[f"dataloader{w}"] / seconds["tensors"])
