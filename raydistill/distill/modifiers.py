"""The paper's gradient shift of the training images (Eq. 2), in its three readings.

The paper says: after training, take "the L1 norm of the gradient of the loss" and set
I'(u) = I(u) - alpha * ||grad L||_1 pixel-wise, alpha = the learning rate. Three readings:

- ``grad-l1``: for each image u, g_u = || d loss(u) / d weights ||_1 over all weights of the trained
  model (per-sample gradients, torch.func); every pixel of image u is lowered by alpha * g_u.
  Section 3.2 says the norm is "computed ... for each training image"; this is the default.
- ``grad-l1-last``: one value for all images, the L1 norm of the weight gradient of the last
  training step (the mini-batch gradient Eq. 1 applies at the end of training).
- ``input-grad``: the pixel-wise reading, x' = x - alpha * |d loss(u) / d x|.
- ``none``: no shift (K-means on the raw images).

Gradients are taken with the model in eval mode (batch norm uses its running statistics), so an
image's gradient depends on that image alone. Shifts live in the [0, 1] pixel scale.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

from raydistill.train import as_unit

Signal = torch.Tensor  # broadcastable against (N, C, H, W): (N,1,1,1), (1,1,1,1) or (N,C,H,W)
BYTES_PER_CHUNK = 1 << 30


def auto_chunk(model: nn.Module) -> int:
    """Per-sample gradients held at once: about 1 GiB of float32 gradients, 1 to 512 images."""
    params = sum(p.numel() for p in model.parameters())
    return max(1, min(512, BYTES_PER_CHUNK // (4 * params)))


def per_sample_grad_l1(model: nn.Module, x: torch.Tensor, y: torch.Tensor, chunk: int | None = None) -> torch.Tensor:
    """|| d loss(x_u, y_u) / d weights ||_1 for every u, with vmap over chunks of images."""
    model.eval()
    params = {k: v.detach() for k, v in model.named_parameters()}
    buffers = {k: v.detach() for k, v in model.named_buffers()}

    def loss_one(p: dict, xi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(functional_call(model, (p, buffers), (xi.unsqueeze(0),)), yi.unsqueeze(0))

    per_sample = vmap(grad(loss_one), in_dims=(None, 0, 0))
    chunk = chunk or auto_chunk(model)
    norms = []
    for start in range(0, len(y), chunk):
        grads = per_sample(params, as_unit(x[start : start + chunk]), y[start : start + chunk])
        norms.append(sum(g.abs().flatten(1).sum(1) for g in grads.values()))
    return torch.cat(norms)


def per_sample_grad_l1_loop(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The slow reference: one backward pass per image (tests and benchmarks compare against it)."""
    model.eval()
    norms = []
    for xi, yi in zip(x, y):
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(as_unit(xi.unsqueeze(0))), yi.unsqueeze(0)).backward()
        norms.append(sum(p.grad.abs().sum() for p in model.parameters() if p.grad is not None))
    model.zero_grad(set_to_none=True)
    return torch.stack(norms).detach()


def input_grad_abs(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """|d loss(x_u, y_u) / d x_u| pixel-wise. In eval mode an image's loss depends on that image
    alone, so the gradient of the summed loss of a batch is exactly the per-image gradient."""
    model.eval()
    out = []
    for start in range(0, len(y), batch_size):
        xb = as_unit(x[start : start + batch_size]).clone().requires_grad_(True)
        loss = F.cross_entropy(model(xb), y[start : start + batch_size], reduction="sum")
        (g,) = torch.autograd.grad(loss, xb)
        out.append(g.abs())
    return torch.cat(out)


def signal(
    modifier: str,
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    last_step_l1: float,
    grad_l1: torch.Tensor | None = None,
    chunk: int | None = None,
) -> Signal | None:
    """The quantity Eq. 2 subtracts (times alpha), shaped to broadcast over the images.
    `grad_l1` passes per-image norms computed earlier (a cached teacher) instead of recomputing."""
    if modifier == "none":
        return None
    if modifier == "grad-l1-last":
        return torch.full((1, 1, 1, 1), last_step_l1, device=x.device)
    if modifier == "grad-l1":
        norms = grad_l1 if grad_l1 is not None else per_sample_grad_l1(model, x, y, chunk)
        return norms.to(x.device).view(-1, 1, 1, 1)
    if modifier == "input-grad":
        return input_grad_abs(model, x, y)
    raise ValueError(f"unknown modifier {modifier!r}")


def shift(images: torch.Tensor, signal_rows: Signal | None, alpha: float) -> torch.Tensor:
    """Eq. 2: I'(u) = I(u) - alpha * signal(u), on [0, 1] images."""
    return images if signal_rows is None else images - alpha * signal_rows


def rows(sig: Signal | None, index: torch.Tensor) -> Signal | None:
    """The signal for a subset of images (a single shared value stays as it is)."""
    return sig if sig is None or sig.shape[0] == 1 else sig[index]

