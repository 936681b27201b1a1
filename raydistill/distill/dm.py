"""Distribution Matching (Zhao & Bilen, WACV 2023) for one class: synthetic images whose mean
embedding under randomly initialised ConvNet-3s matches that of the class's real images.

Each iteration draws a fresh random ConvNet-3 embedder (the network without its linear classifier)
and a random batch of 256 real images, and takes one SGD step (lr 1.0, momentum 0.5, as in the
reference code) on ||mean emb(real) - mean emb(syn)||^2. The synthetic images start as k real
images (the `random` selection with the same seed).

The reference code matches all classes in one iteration with one shared net and sums the losses.
Each class's term depends only on its own synthetic images, so optimising class by class with a
fresh net per iteration gives every class the same distribution of updates, i.e. the same method in
expectation; only the correlation of the nets across classes differs.

Scale: the reference optimises normalised images, where lr 1.0 was tuned. Here the images are
normalised with the class's own per-channel mean and std, optimised in that space and mapped back
to [0, 1] units. Not implemented: the reference's DSA augmentation of both batches and its default
of 20,000 iterations (the iteration count is `--dm-iterations`).
"""

from __future__ import annotations

import torch
from torch import nn

from raydistill.distill.selection import random as random_selection
from raydistill.models import convnet3

BATCH_REAL = 256
LR_IMG = 1.0
MOMENTUM = 0.5


def embedder(shape: tuple[int, int, int]) -> nn.Module:
    """A randomly initialised ConvNet-3 without its final linear layer (the seed is torch's)."""
    return nn.Sequential(*list(convnet3(shape, num_classes=1))[:-1]).requires_grad_(False)


def matching_loss(net: nn.Module, real: torch.Tensor, syn: torch.Tensor) -> torch.Tensor:
    """||mean embedding of real - mean embedding of syn||^2 (no gradient through the real side)."""
    with torch.no_grad():
        target = net(real).mean(0)
    return (target - net(syn).mean(0)).pow(2).sum()


def dm(
    images: torch.Tensor,
    k: int,
    *,
    seed: int,
    backend: str | None = None,
    iterations: int = 1000,
    batch_real: int = BATCH_REAL,
) -> torch.Tensor:
    """k synthetic images of one class (float, [0, 1] units, on the device of `images`)."""
    mean = images.mean((0, 2, 3), keepdim=True)
    std = images.std((0, 2, 3), correction=0, keepdim=True).clamp(min=1e-6)
    real = (images - mean) / std
    syn = ((random_selection(images, k, seed=seed) - mean) / std).detach().requires_grad_(True)
    optimizer = torch.optim.SGD([syn], lr=LR_IMG, momentum=MOMENTUM)
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):  # nets are built on the CPU: same nets on every device
        torch.manual_seed(seed)
        for _ in range(iterations):
            net = embedder(images.shape[1:]).to(images.device)
            batch = torch.randperm(len(real), generator=generator)[:batch_real].to(images.device)
            loss = matching_loss(net, real[batch], syn)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return syn.detach() * std + mean
