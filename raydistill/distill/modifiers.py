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

from raydistill.registry import MODIFIERS
from raydistill.train import as_unit

Signal = torch.Tensor  # broadcastable against (N, C, H, W): (N,1,1,1), (1,1,1,1) or (N,C,H,W)
VMAP_CHUNK_BYTES = {"cpu": 16 << 20, "cuda": 1 << 30}  # small CPU blocks are reused, not mapped afresh
FACTORISED_CHUNK = 64


def per_sample_grad_l1(model: nn.Module, x: torch.Tensor, y: torch.Tensor, chunk: int | None = None) -> torch.Tensor:
    """|| d loss(x_u, y_u) / d weights ||_1 for every image u (model in eval mode). Models whose
    parameters all sit in Linear and plain Conv2d layers (baseline, LeNet) take the factorised
    path; the others (batch or group norm) per-sample gradients with torch.func's vmap."""
    if factorisable(model):
        return factorised_grad_l1(model, x, y, chunk or FACTORISED_CHUNK)
    return vmap_grad_l1(model, x, y, chunk)


def vmap_grad_l1(model: nn.Module, x: torch.Tensor, y: torch.Tensor, chunk: int | None = None) -> torch.Tensor:
    """Per-sample gradients with vmap(grad(loss)) over chunks of images, then their L1 norms."""
    model.eval()
    params = {k: v.detach() for k, v in model.named_parameters()}
    buffers = {k: v.detach() for k, v in model.named_buffers()}

    def loss_one(p: dict, xi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(functional_call(model, (p, buffers), (xi.unsqueeze(0),)), yi.unsqueeze(0))

    per_sample = vmap(grad(loss_one), in_dims=(None, 0, 0))
    if chunk is None:
        budget = VMAP_CHUNK_BYTES.get(x.device.type, VMAP_CHUNK_BYTES["cuda"])
        chunk = max(1, min(512, budget // (4 * sum(p.numel() for p in params.values()))))
    norms = []
    for start in range(0, len(y), chunk):
        grads = per_sample(params, as_unit(x[start : start + chunk]), y[start : start + chunk])
        norms.append(sum(g.abs().flatten(1).sum(1) for g in grads.values()))
    return torch.cat(norms)


def factorisable(model: nn.Module) -> bool:
    """True when every parameter sits in a Linear or a plain (ungrouped, zero-padded) Conv2d."""
    layers = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    covered = sum(p.numel() for m in layers for p in m.parameters(recurse=False))
    plain = all(m.groups == 1 and m.padding_mode == "zeros" and not isinstance(m.padding, str)
                for m in layers if isinstance(m, nn.Conv2d))
    return plain and covered == sum(p.numel() for p in model.parameters())


def factorised_grad_l1(model: nn.Module, x: torch.Tensor, y: torch.Tensor, chunk: int = FACTORISED_CHUNK) -> torch.Tensor:
    """Exact per-image norms from one batched forward and backward per chunk. In eval mode the
    summed loss's gradient w.r.t. a layer's output z is, row by row, each image's own dL/dz.
    A Linear layer's per-image weight gradient is the outer product dL/dz a^T, whose L1 norm is
    ||dL/dz||_1 * ||a||_1 (never materialised); a convolution's per-image weight gradients are small
    and come from one grouped convolution of its input with dL/dz."""
    layers = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    model.eval()
    seen: dict[nn.Module, tuple[torch.Tensor, torch.Tensor]] = {}
    hooks = [m.register_forward_hook(lambda m, args, out: seen.__setitem__(m, (args[0].detach(), out))) for m in layers]
    norms = []
    try:
        for start in range(0, len(y), chunk):
            logits = model(as_unit(x[start : start + chunk]))
            loss = F.cross_entropy(logits, y[start : start + chunk], reduction="sum")
            grads = torch.autograd.grad(loss, [seen[m][1] for m in layers])
            total = logits.new_zeros(len(logits))
            for m, g in zip(layers, grads, strict=True):
                a = seen[m][0]
                if isinstance(m, nn.Linear):
                    if a.dim() != 2:
                        raise ValueError("the factorised norms need Linear layers on (N, features) inputs")
                    total += g.abs().sum(1) * a.abs().sum(1)
                else:
                    total += conv_weight_grads(m, a, g).abs().sum((1, 2, 3, 4))
                    g = g.sum((2, 3))
                if m.bias is not None:
                    total += g.abs().sum(1)
            norms.append(total)
    finally:
        for hook in hooks:
            hook.remove()
    return torch.cat(norms).detach()


def conv_weight_grads(conv: nn.Conv2d, a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Per-image weight gradients (N, Cout, Cin, kh, kw) of a convolution from its input `a` and
    output gradient `g`: a grouped convolution with the images as groups and `g` as the kernels
    (stride and dilation swap roles in this transposed view)."""
    n, out = g.shape[:2]
    kh, kw = conv.kernel_size
    grads = F.conv2d(a.transpose(0, 1), g.flatten(0, 1).unsqueeze(1), padding=conv.padding, stride=conv.dilation,
                     dilation=conv.stride, groups=n)[..., :kh, :kw]
    return grads.reshape(a.shape[1], n, out, kh, kw).transpose(0, 1).transpose(1, 2)


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


def _grad_l1(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, last_step_l1: float,
             grad_l1: torch.Tensor | None, chunk: int | None) -> Signal:
    norms = grad_l1 if grad_l1 is not None else per_sample_grad_l1(model, x, y, chunk)
    return norms.to(x.device).view(-1, 1, 1, 1)


def _grad_l1_last(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, last_step_l1: float, **_) -> Signal:
    return torch.full((1, 1, 1, 1), last_step_l1, device=x.device)


def _input_grad(model: nn.Module, x: torch.Tensor, y: torch.Tensor, **_) -> Signal:
    return input_grad_abs(model, x, y)


MODIFIERS.add("grad-l1", "per image: the L1 norm of its loss gradient w.r.t. all weights of the trained model "
              "(the paper's Eq. 2, default)", _grad_l1, needs_teacher=True, per_image_norms=True)
MODIFIERS.add("grad-l1-last", "one value for all images: the L1 norm of the weight gradient of the last training "
              "step", _grad_l1_last, needs_teacher=True, per_image_norms=False)
MODIFIERS.add("input-grad", "pixel-wise: |dL(u)/dx| of image u", _input_grad, needs_teacher=True,
              per_image_norms=False)
MODIFIERS.add("none", "no shift (K-means on the raw images; no teacher is trained)", None, needs_teacher=False,
              per_image_norms=False)


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
    compute = MODIFIERS[modifier].obj
    if compute is None:
        return None
    return compute(model, x, y, last_step_l1=last_step_l1, grad_l1=grad_l1, chunk=chunk)


def shift(images: torch.Tensor, signal_rows: Signal | None, alpha: float) -> torch.Tensor:
    """Eq. 2: I'(u) = I(u) - alpha * signal(u), on [0, 1] images."""
    return images if signal_rows is None else images - alpha * signal_rows


def rows(sig: Signal | None, index: torch.Tensor) -> Signal | None:
    """The signal for a subset of images (a single shared value stays as it is)."""
    return sig if sig is None or sig.shape[0] == 1 else sig[index]

