"""The speed options (raydistill.train.SpeedOptions) keep training's numbers: compiled, channels-last
and bf16 runs follow the eager fp32 loss trajectory within the tolerances below, the defaults are bit
for bit the plain loop, and the per-epoch statistics are what a slow loop counts.

A trajectory is the loss of each of STEPS steps (one batch per epoch, so each epoch's mean loss is
one step's loss). ResNet-34 is checked eager only (channels-last, bf16) and for one step: compiling its
forward and backward takes minutes on two CPU cores, and after an Adam step its 21M weights move
enough that bf16 runs drift apart by about 5 % (the first step compares the arithmetic alone).
"""

from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F

from raydistill import models
from raydistill.config import ConfigError
from raydistill.distill.modifiers import per_sample_grad_l1
from raydistill.train import EpochStats, SpeedOptions, as_unit, batches, fit, numerics, predict_proba

STEPS = 4
BATCH = 32
SHAPES = {"baseline": (1, 28, 28), "lenet": (1, 28, 28), "convnet3": (1, 28, 28), "resnet34": (3, 8, 8)}
# (relative tolerance on each step's loss, on the trained model's per-image gradient norms);
# measured worst cases: compiled 1.4e-6 and 7.6e-4 (ConvNet-3) on an AVX-512 CPU, 9.4e-5 and 6.0e-3 on
# an AVX2 one (inductor's kernels sum in another order, and instance norm on one batch of noise
# amplifies it ~100x a step); channels-last 8e-5 and 6.1e-3 (ConvNet-3). One step changes the loss by
# 1.3 % (LeNet-5) to 25 % (ConvNet-3) and the norms by 14-18 % (median), so a skipped step still fails.
COMPILED = (1e-3, 2e-2)
CHANNELS_LAST = (1e-3, 3e-2)
BF16_LOSS = 2e-2  # measured worst: 2.9e-3 (ConvNet-3); the norms move by a few percent, not compared
PROBA_ATOL = 1e-4  # compiled evaluation against eager, same weights; measured 2.3e-5


def tiny(name: str, n: int = BATCH) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 256, (n, *SHAPES[name]), dtype=torch.uint8, generator=g)
    return x, torch.randint(0, 10, (n,), generator=g)


def fresh(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    channels = SHAPES[name][0]
    return models.build(name, SHAPES[name], 10, [0.5] * channels, [0.25] * channels)


def trained(name: str, speed: SpeedOptions, steps: int = STEPS) -> tuple[torch.nn.Module, list[EpochStats]]:
    model, (x, y), seen = fresh(name), tiny(name), []
    fit(model, x, y, steps, batch_size=BATCH, speed=speed, on_epoch=lambda epoch, m, stats: seen.append(stats))
    return model, seen


@functools.cache
def eager(name: str, steps: int = STEPS) -> tuple[torch.nn.Module, list[EpochStats]]:
    return trained(name, SpeedOptions(), steps)


def losses(stats: list[EpochStats]) -> torch.Tensor:
    return torch.tensor([s.loss for s in stats])


def norms(model: torch.nn.Module, name: str) -> torch.Tensor:
    return per_sample_grad_l1(model, *tiny(name))


def assert_norms_close(model: torch.nn.Module, name: str, rtol: float) -> None:
    """The options leave nothing behind (the norms equal those of a plain copy of the weights), and
    the weights they reached give the eager weights' norms within rtol."""
    copy = fresh(name)
    copy.load_state_dict(model.state_dict())
    assert all(p.is_contiguous() for p in model.parameters())
    assert torch.equal(norms(model, name), norms(copy, name))
    torch.testing.assert_close(norms(model, name), norms(eager(name)[0], name), rtol=rtol, atol=0)


def reference(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int) -> list[EpochStats]:
    """The loop before the speed options, reading every step's loss and right predictions one by one."""
    generator = torch.Generator().manual_seed(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    out = []
    for _ in range(epochs):
        step_losses, right = [], 0
        for index in batches(len(y), BATCH, generator, x.device):
            logits = model(as_unit(x[index]))
            loss = F.cross_entropy(logits, y[index])
            step_losses.append(loss.item())
            right += sum(int(p) == int(t) for p, t in zip(logits.argmax(1), y[index]))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            last = sum(p.grad.abs().sum() for p in model.parameters()).item()
            optimizer.step()
        out.append(EpochStats(sum(step_losses) / len(step_losses), right / len(y), last))
    return out


def test_defaults_are_bit_for_bit_the_plain_loop_and_its_statistics():
    x, y = tiny("baseline", 100)  # batches of 32, 32, 32, 4
    expected_model = fresh("baseline")
    expected = reference(expected_model, x, y, 2)
    for _ in range(2):  # two runs: deterministic for a fixed seed
        model, seen = fresh("baseline"), []
        fit(model, x, y, 2, on_epoch=lambda epoch, m, stats: seen.append(stats))
        for k, v in expected_model.state_dict().items():
            assert torch.equal(model.state_dict()[k], v), k
        for got, want in zip(seen, expected, strict=True):
            assert got.loss == pytest.approx(want.loss, rel=1e-6, abs=0)
            assert got.accuracy == want.accuracy and got.last_step_l1 == want.last_step_l1
    assert 0 < seen[-1].accuracy < 1


@pytest.mark.parametrize("name", ["baseline", "lenet", "convnet3"])
def test_compiled_training_follows_eager(name):
    model, seen = trained(name, SpeedOptions(compile=True))
    torch.testing.assert_close(losses(seen), losses(eager(name)[1]), rtol=COMPILED[0], atol=0)
    assert_norms_close(model, name, COMPILED[1])


def test_compiled_evaluation_matches_eager():
    model, x = eager("baseline")[0], tiny("baseline")[0]
    torch.testing.assert_close(predict_proba(model, x, speed=SpeedOptions(compile=True)), predict_proba(model, x),
                               rtol=0, atol=PROBA_ATOL)


@pytest.mark.parametrize("name", ["baseline", "lenet", "convnet3", "resnet34"])
def test_channels_last_follows_eager_and_leaves_the_model_contiguous(name):
    steps = 1 if name == "resnet34" else STEPS
    model, seen = trained(name, SpeedOptions(channels_last=True), steps)
    torch.testing.assert_close(losses(seen), losses(eager(name, steps)[1]), rtol=CHANNELS_LAST[0], atol=0)
    if name != "resnet34":  # its per-image norms (vmap over 21M weights) would cost more than the test
        assert_norms_close(model, name, CHANNELS_LAST[1])


@pytest.mark.parametrize("name", ["baseline", "lenet", "convnet3", "resnet34"])
def test_bf16_follows_eager_within_a_looser_tolerance(name):
    steps = 1 if name == "resnet34" else STEPS
    model, seen = trained(name, SpeedOptions(precision="bf16"), steps)
    torch.testing.assert_close(losses(seen), losses(eager(name, steps)[1]), rtol=BF16_LOSS, atol=0)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert not torch.is_autocast_enabled("cpu")


def test_tf32_is_set_for_cuda_calls_only_and_restored():
    before = (torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32)
    with numerics(SpeedOptions(precision="tf32"), torch.device("cpu")):
        assert torch.get_float32_matmul_precision() == before[0]  # no TF32 on the CPU: nothing to set
    with numerics(SpeedOptions(precision="tf32"), torch.device("cuda")):  # flags only; no GPU needed
        assert torch.get_float32_matmul_precision() == "high" and torch.backends.cudnn.allow_tf32
    assert (torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32) == before


def test_options_that_cannot_run_fail_before_training(monkeypatch):
    with pytest.raises(ConfigError, match="precision"):
        SpeedOptions(precision="fp16")
    import torch._inductor.cpp_builder as cpp_builder

    def no_compiler() -> str:
        raise RuntimeError("no g++")

    monkeypatch.setattr(cpp_builder, "get_cpp_compiler", no_compiler)
    model = fresh("lenet")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ConfigError, match="C\\+\\+ compiler"):
        fit(model, *tiny("lenet"), 1, speed=SpeedOptions(compile=True))
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_the_benchmark_prices_the_paper_grids_teachers_per_model_and_dataset(capsys):
    from benchmarks.speed import CIFAR, MNIST, extrapolate, paper_teachers

    teachers = paper_teachers()
    assert sum(t.epochs for t in teachers) == 5400
    for model in ("baseline", "lenet", "resnet34"):  # MNIST and Fashion-MNIST, 60,000 images; CIFAR-10, 50,000
        mine = sorted((t.shape, t.epochs, t.steps_per_epoch) for t in teachers if t.model == model)
        assert mine == sorted([(MNIST, 600, 1875), (MNIST, 600, 1875), (CIFAR, 600, 1563)])
    extrapolate("x", "hours", teachers, {(t.model, t.shape): {"eager": 1.0, "bf16": 2.0} for t in teachers})
    lines = dict(line.split(": ") for line in capsys.readouterr().out.splitlines())
    per_model = (1200 * 1875 + 600 * 1563) / 3600  # hours at one step per second
    assert float(lines["x.paper.tables_1_2.lenet.eager.hours"]) == pytest.approx(per_model, rel=1e-3)
    assert float(lines["x.paper.tables_1_2.bf16.hours"]) == pytest.approx(1.5 * per_model, rel=1e-3)
