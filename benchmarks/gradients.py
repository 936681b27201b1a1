"""Per-image weight-gradient L1 norms: the library's paths against a one-image backward loop.

- `library`: `per_sample_grad_l1` as the pipeline calls it (factorised norms for models of Linear
  and Conv2d layers, vmap with device-sized chunks otherwise);
- `vmap`: torch.func vmap with the library's chunk size for this device;
- `vmap_1gib`: the same with 1 GiB of per-sample gradients per chunk (the library's first version,
  and its CUDA setting), to show what chunk size costs on a CPU;
- `loop`: `per_sample_grad_l1_loop`, the slow reference.
"""

from __future__ import annotations

import torch
from torch import nn

from benchmarks.timing import compare, emit
from raydistill import models
from raydistill.data import Dataset
from raydistill.distill.modifiers import per_sample_grad_l1, per_sample_grad_l1_loop, vmap_grad_l1

# model, input shape, images (quick, full)
CASES = [
    ("baseline", (1, 28, 28), (128, 512)),
    ("lenet", (1, 28, 28), (256, 1024)),
    ("convnet3", (1, 28, 28), (32, 128)),
    ("resnet34", (3, 32, 32), (4, 12)),
]


def vmap_1gib(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    params = sum(p.numel() for p in model.parameters())
    return vmap_grad_l1(model, x, y, chunk=max(1, min(512, (1 << 30) // (4 * params))))


def run(quick: bool, data: Dataset | None) -> None:
    rounds = 2 if quick else 3
    for name, shape, sizes in CASES:
        n = sizes[0] if quick else sizes[1]
        torch.manual_seed(0)
        model = models.build(name, shape, 10, [0.5] * shape[0], [0.25] * shape[0])
        x = torch.randint(0, 256, (n, *shape), dtype=torch.uint8)
        y = torch.randint(0, 10, (n,))
        variants = {"library": per_sample_grad_l1, "vmap": vmap_grad_l1, "vmap_1gib": vmap_1gib,
                    "loop": per_sample_grad_l1_loop}
        for fn in variants.values():  # warm-up
            fn(model, x[:2], y[:2])
        out = compare({k: lambda fn=fn: fn(model, x, y) for k, fn in variants.items()}, rounds)
        loop_s, loop = out["loop"]
        emit(f"grad_l1.{name}.images", n)
        for variant, (seconds, _) in out.items():
            emit(f"grad_l1.{name}.{variant}_images_per_s", n / seconds)
        for variant, (seconds, norms) in out.items():
            if variant != "loop":
                emit(f"grad_l1.{name}.{variant}_vs_loop", loop_s / seconds)
                emit(f"grad_l1.{name}.{variant}_max_abs_diff", float((norms - loop).abs().max()))
                emit(f"grad_l1.{name}.{variant}_max_rel_diff", float(((norms - loop).abs() / loop.abs()).max()))
