"""The one training loop (the paper's Adam, lr 1e-3, batch 32, no decay; the dc protocol passes its
own SGD and step schedule) and batched prediction.

Data is a pair of tensors already on the device; a batch is a slice of a seeded permutation,
converted to float [0, 1] only when it is used (uint8 images stay uint8 in memory).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

EpochCallback = Callable[[int, nn.Module, float], None]


def as_unit(x: torch.Tensor) -> torch.Tensor:
    """uint8 pixels -> float in [0, 1]; float images (distilled sets) pass through."""
    return x.float().div_(255.0) if x.dtype == torch.uint8 else x


def batches(n: int, batch_size: int, generator: torch.Generator | None, device: torch.device) -> list[torch.Tensor]:
    """Index batches of a permutation (sequential when generator is None). A last batch of one
    sample is merged into the one before, since batch norm cannot train on a single image."""
    order = torch.randperm(n, generator=generator).to(device) if generator is not None else torch.arange(n, device=device)
    parts = list(order.split(batch_size))
    if len(parts) > 1 and len(parts[-1]) == 1:
        parts[-2:] = [torch.cat(parts[-2:])]
    return parts


def fit(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    epochs: int,
    *,
    lr: float = 1e-3,
    batch_size: int = 32,
    seed: int = 0,
    on_epoch: EpochCallback | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
) -> nn.Module:
    """Train with Adam at a constant lr unless another `optimizer` (built on the model's
    parameters; `lr` is then unused) and a per-epoch `scheduler` are given, as the dc protocol does.
    `on_epoch(epoch, model, last_step_grad_l1)` runs after every epoch, before the scheduler steps;
    the last argument is the L1 norm of the epoch's final step's weight gradient."""
    generator = torch.Generator().manual_seed(seed)
    if optimizer is None:
        optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for epoch in range(1, epochs + 1):
        parts = batches(len(y), batch_size, generator, x.device)
        for step, index in enumerate(parts):
            loss = F.cross_entropy(model(as_unit(x[index])), y[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if on_epoch is not None and step == len(parts) - 1:
                last_l1 = float(sum(p.grad.abs().sum() for p in model.parameters() if p.grad is not None))
            optimizer.step()
        if on_epoch is not None:
            on_epoch(epoch, model, last_l1)
            model.train()
        if scheduler is not None:
            scheduler.step()
    return model


@torch.no_grad()
def predict_proba(model: nn.Module, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """Softmax class probabilities in eval mode, on the CPU."""
    model.eval()
    out = [F.softmax(model(as_unit(x[i : i + batch_size])), dim=1).cpu() for i in range(0, len(x), batch_size)]
    return torch.cat(out)
