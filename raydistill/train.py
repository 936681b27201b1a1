"""The one training loop (the paper's Adam, lr 1e-3, batch 32, no decay; the dc protocol passes its
own SGD and step schedule) and batched prediction, with optional speed settings.

Data is a pair of tensors already on the device; a batch is a slice of a seeded permutation,
converted to float [0, 1] only when it is used (uint8 images stay uint8 in memory).
"""

from __future__ import annotations

import contextlib
import os
import sysconfig
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from raydistill.config import PRECISIONS, ConfigError

# a training run (teacher or sweep student) is checkpointed at least this often (seconds)
CHECKPOINT_SECONDS = float(os.environ.get("RAYDISTILL_CHECKPOINT_SECONDS", "600"))

# graphs of one compiled function kept per process: each model, batch shape and option set is one,
# and past torch's default of 8 the step would silently run eagerly
COMPILED_GRAPHS = 64

# images per forward pass when predicting: 256 ran 1.3-1.6x faster than 1024 on one CPU thread for
# the Baseline and ConvNet-3 (the activations of a larger batch fall out of the cache)
PREDICT_BATCH = 256


@dataclass(frozen=True)
class SpeedOptions:
    """How the steps run. The defaults are today's eager fp32 arithmetic, bit for bit.

    - compile: forward, loss and backward of the training step, and evaluation, through
      torch.compile (CUDA graphs, mode "reduce-overhead", on CUDA; inductor's C++ code on the CPU).
      Every distinct batch shape compiles once per process.
    - precision: "fp32" leaves torch's flags alone; "tf32" lets CUDA matmuls and cuDNN convolutions
      use TF32 during the call (a no-op on the CPU, which has no TF32); "bf16" runs forward and loss
      under bfloat16 autocast (CPU and CUDA); weights, gradients and optimizer state stay fp32.
    - channels_last: model and batches in channels-last memory format (NHWC convolutions).
    """

    compile: bool = False
    precision: str = "fp32"
    channels_last: bool = False

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ConfigError(f"unknown precision {self.precision!r}; allowed: {', '.join(PRECISIONS)}")

    def check(self, device: torch.device) -> None:
        """Raise ConfigError when these options cannot run on `device`, before any compute."""
        if self.precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise ConfigError(f"precision bf16: {torch.cuda.get_device_name(device)} has no bfloat16 support")
        if self.compile:
            problem = compile_problem(device)
            if problem:
                raise ConfigError(f"compile on {device.type}: {problem}")


@dataclass(frozen=True)
class EpochStats:
    """What one epoch of training saw, for progress reports (no extra forward pass)."""

    loss: float  # mean of the epoch's per-batch training losses
    accuracy: float  # fraction of the epoch's samples whose training-mode logits were right
    last_step_l1: float  # L1 norm of the weight gradient of the epoch's last step


EpochCallback = Callable[[int, nn.Module, EpochStats], None]


class Schedule(Protocol):
    """What fit steps once per epoch: a torch LR scheduler, or any schedule with a step()."""

    def step(self) -> None: ...


def compile_problem(device: torch.device) -> str | None:
    """Why torch.compile cannot run on `device` here, or None. Checked up front because inductor
    would otherwise fail at the first step (no C++ compiler, no Triton) after data loading."""
    if not torch._dynamo.is_dynamo_supported():
        return "torch.compile does not support this Python version"
    if device.type == "cuda":
        from torch.utils._triton import has_triton

        return None if has_triton() else "needs Triton (pip install triton), which inductor uses on CUDA"
    if device.type != "cpu":
        return "only cpu and cuda are supported"
    try:
        from torch._inductor.cpp_builder import get_cpp_compiler

        get_cpp_compiler()
    except Exception:
        return "inductor needs a C++ compiler (g++, or the one named by CXX) and none was found"
    if not os.path.isfile(os.path.join(sysconfig.get_paths()["include"], "Python.h")):
        return "inductor needs the Python development headers (Python.h), which are not installed"
    return None


def to_cpu(value):
    """A copy of a tensor, or of the tensors in a (nested) dict or list, on the CPU: a state dict
    or an optimizer state as it goes into a checkpoint."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().clone()
    if isinstance(value, dict):
        return {k: to_cpu(v) for k, v in value.items()}
    if isinstance(value, list):
        return [to_cpu(v) for v in value]
    return value


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


def forward_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, bf16: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The step's forward: mean cross-entropy and the number of right predictions."""
    with torch.autocast(x.device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext():
        logits = model(x)
    return F.cross_entropy(logits.float(), y), (logits.argmax(1) == y).sum()


def forward_proba(model: nn.Module, x: torch.Tensor, bf16: bool) -> torch.Tensor:
    with torch.autocast(x.device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext():
        logits = model(x)
    return F.softmax(logits.float(), dim=1)


def compiled(fn: Callable, speed: SpeedOptions, device: torch.device) -> Callable:
    """fn as it runs under `speed`: compiled with one graph per batch shape (dynamic=False), CUDA
    graphs on CUDA; each call then marks a new step so that graphs are replayed, not re-recorded."""
    if not speed.compile:
        return fn
    if device.type != "cuda":
        return torch.compile(fn, dynamic=False)
    graphed = torch.compile(fn, mode="reduce-overhead", dynamic=False)

    def step(*args):
        torch.compiler.cudagraph_mark_step_begin()
        return graphed(*args)

    return step


@contextlib.contextmanager
def numerics(speed: SpeedOptions, device: torch.device) -> Iterator[None]:
    """TF32 on CUDA, and room for COMPILED_GRAPHS graphs, while inside; the caller's settings
    come back on exit."""
    with contextlib.ExitStack() as stack:
        if speed.compile:
            stack.enter_context(torch._dynamo.config.patch(recompile_limit=COMPILED_GRAPHS))
        if speed.precision == "tf32" and device.type == "cuda":
            stack.enter_context(tf32())
        yield


@contextlib.contextmanager
def tf32() -> Iterator[None]:
    matmul, conv = torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32
    torch.set_float32_matmul_precision("high")
    torch.backends.cudnn.allow_tf32 = True
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(matmul)
        torch.backends.cudnn.allow_tf32 = conv


@contextlib.contextmanager
def layout(model: nn.Module, speed: SpeedOptions) -> Iterator[None]:
    """The model's 4-d weights in channels-last while inside, contiguous again on exit."""
    if not speed.channels_last:
        yield
        return
    model.to(memory_format=torch.channels_last)
    try:
        yield
    finally:
        model.to(memory_format=torch.contiguous_format)


def batch(x: torch.Tensor, speed: SpeedOptions) -> torch.Tensor:
    x = as_unit(x)
    return x.contiguous(memory_format=torch.channels_last) if speed.channels_last and x.dim() == 4 else x


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
    scheduler: Schedule | None = None,
    speed: SpeedOptions | None = None,
    start_epoch: int = 0,
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> nn.Module:
    """Train with Adam at a constant lr unless another `optimizer` (built on the model's
    parameters; `lr` is then unused) and a per-epoch `scheduler` are given, as the dc protocol does.
    `on_epoch(epoch, model, stats)` runs after every epoch, before the scheduler steps, under the
    caller's numerics but with the model in its training memory format. `start_epoch` continues a
    run that stopped after that epoch: the optimizer passed in holds its state, and the batch
    orders of the epochs done are replayed from the seed. `transform` (training augmentation)
    maps each float batch before the step. Loss and accuracy are summed on the device and read
    once per epoch, so a step never waits for the device."""
    speed = speed or SpeedOptions()
    speed.check(x.device)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(start_epoch):  # continue a run: replay the batch orders of the epochs done
        torch.randperm(len(y), generator=generator)
    if optimizer is None:
        optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    step = compiled(forward_loss, speed, x.device)
    bf16 = speed.precision == "bf16"
    model.train()
    with layout(model, speed):
        for epoch in range(start_epoch + 1, epochs + 1):
            parts = batches(len(y), batch_size, generator, x.device)
            loss_sum = torch.zeros((), device=x.device)
            right = torch.zeros((), dtype=torch.long, device=x.device)
            with numerics(speed, x.device):
                for index in parts:
                    xb = batch(x[index], speed)
                    loss, hits = step(model, xb if transform is None else transform(xb), y[index], bf16)
                    loss_sum += loss.detach()
                    right += hits
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    if on_epoch is not None and index is parts[-1]:
                        last_l1 = float(sum(p.grad.abs().sum() for p in model.parameters() if p.grad is not None))
                    optimizer.step()
            if on_epoch is not None:
                stats = EpochStats(float(loss_sum) / len(parts), int(right) / len(y), last_l1)
                on_epoch(epoch, model, stats)
                model.train()
            if scheduler is not None:
                scheduler.step()
    return model


@torch.no_grad()
def predict_proba(model: nn.Module, x: torch.Tensor, batch_size: int = PREDICT_BATCH,
                  speed: SpeedOptions | None = None) -> torch.Tensor:
    """Softmax class probabilities in eval mode, on the CPU."""
    speed = speed or SpeedOptions()
    speed.check(x.device)
    proba = compiled(forward_proba, speed, x.device)
    bf16 = speed.precision == "bf16"
    model.eval()
    with layout(model, speed), numerics(speed, x.device):
        out = [proba(model, batch(x[i : i + batch_size], speed), bf16).cpu() for i in range(0, len(x), batch_size)]
    return torch.cat(out)
