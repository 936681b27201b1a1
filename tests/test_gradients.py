"""The gradient shift (Eq. 2) in its three readings, against a slow loop and hand-computed cases."""

import math

import pytest
import torch
from torch import nn

from raydistill import models
from raydistill.distill import modifiers


@pytest.mark.parametrize("name,shape", [("baseline", (1, 28, 28)), ("lenet", (1, 28, 28)),
                                        ("convnet3", (3, 32, 32)), ("resnet34", (3, 8, 8))])
def test_per_sample_grad_l1_matches_one_image_loop(name, shape):
    torch.manual_seed(0)
    model = models.build(name, shape, 10, [0.5] * shape[0], [0.25] * shape[0])
    if name == "resnet34":  # non-trivial running statistics, used in eval mode
        model.train()
        with torch.no_grad():
            model(torch.rand(16, *shape))
    x = (torch.rand(6, *shape) * 255).to(torch.uint8)
    y = torch.randint(0, 10, (6,))
    slow = modifiers.per_sample_grad_l1_loop(model, x, y)
    assert modifiers.factorisable(model) == (name in ("baseline", "lenet"))
    for fast in (modifiers.per_sample_grad_l1(model, x, y, chunk=4), modifiers.vmap_grad_l1(model, x, y, chunk=4)):
        assert fast.shape == (6,)
        torch.testing.assert_close(fast, slow, rtol=1e-4, atol=1e-5)
        assert len(set(fast.tolist())) == 6  # really per image, not one shared value


def test_factorised_norms_handle_stride_dilation_padding_and_no_bias():
    torch.manual_seed(1)
    model = nn.Sequential(
        nn.Conv2d(2, 4, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(4, 3, (3, 2), stride=(1, 2), dilation=2, bias=False), nn.Tanh(),
        nn.Flatten(), nn.LazyLinear(5, bias=False))
    x = torch.rand(5, 2, 13, 11)
    model(x)
    y = torch.randint(0, 5, (5,))
    assert modifiers.factorisable(model)
    torch.testing.assert_close(modifiers.factorised_grad_l1(model, x, y, chunk=3),
                               modifiers.per_sample_grad_l1_loop(model, x, y), rtol=1e-4, atol=1e-6)
    grouped = nn.Sequential(nn.Conv2d(2, 2, 3, groups=2), nn.Flatten())
    assert not modifiers.factorisable(grouped)


def tiny_linear() -> nn.Module:
    """Two pixels -> two logits; weights W = I, b = 0 for hand computation."""
    net = nn.Sequential(nn.Flatten(), nn.Linear(2, 2))
    with torch.no_grad():
        net[1].weight.copy_(torch.eye(2))
        net[1].bias.zero_()
    return net


def test_grad_l1_shift_by_hand():
    # x = (0.25, 0.5), y = 0. z = x, p = softmax(z), dL/dz = p - e0, dL/dW = (p - e0) x^T, dL/db = p - e0.
    # ||grad||_1 = sum|p - e0| * (|x1| + |x2| + 1) = 2 (1 - p0) * 1.75.
    x = torch.tensor([[[[0.25, 0.5]]]])
    y = torch.tensor([0])
    p0 = math.exp(0.25) / (math.exp(0.25) + math.exp(0.5))
    expected_norm = 2 * (1 - p0) * 1.75
    sig = modifiers.signal("grad-l1", tiny_linear(), x, y, last_step_l1=0.0)
    assert sig.shape == (1, 1, 1, 1)
    assert sig.item() == pytest.approx(expected_norm, rel=1e-6)
    shifted = modifiers.shift(x, sig, alpha=1e-3)
    torch.testing.assert_close(shifted, torch.tensor([[[[0.25, 0.5]]]]) - 1e-3 * expected_norm)


def test_input_grad_shift_by_hand():
    # dL/dx = W^T (p - e0) = (p0 - 1, p1) with W = I; |.| = (1 - p0, 1 - p0).
    x = torch.tensor([[[[0.25, 0.5]]]])
    y = torch.tensor([0])
    p0 = math.exp(0.25) / (math.exp(0.25) + math.exp(0.5))
    sig = modifiers.signal("input-grad", tiny_linear(), x, y, last_step_l1=0.0)
    torch.testing.assert_close(sig, torch.full((1, 1, 1, 2), 1 - p0))
    shifted = modifiers.shift(x, sig, alpha=0.5)
    torch.testing.assert_close(shifted, torch.tensor([[[[0.25 - 0.5 * (1 - p0), 0.5 - 0.5 * (1 - p0)]]]]))


def test_grad_l1_last_is_one_value_for_all_images_and_none_is_identity():
    x = torch.rand(5, 1, 2, 2)
    sig = modifiers.signal("grad-l1-last", tiny_linear(), x, torch.zeros(5, dtype=torch.long), last_step_l1=7.0)
    torch.testing.assert_close(modifiers.shift(x, modifiers.rows(sig, torch.tensor([1, 3])), 0.01), x - 0.07)
    assert modifiers.signal("none", tiny_linear(), x, torch.zeros(5, dtype=torch.long), last_step_l1=7.0) is None
    assert modifiers.shift(x, None, 0.01) is x


def test_last_step_l1_reported_by_training_is_the_final_gradient_norm():
    """With one batch per epoch, epoch 1's last step is taken at the initial weights, so its
    gradient is the full-batch mean-loss gradient there (order inside a batch does not matter)."""
    import torch.nn.functional as F

    from raydistill.train import fit

    torch.manual_seed(0)
    x = torch.rand(8, 1, 1, 2)
    y = torch.randint(0, 2, (8,))
    reference = tiny_linear()
    F.cross_entropy(reference(x), y).backward()
    expected = sum(p.grad.abs().sum() for p in reference.parameters()).item()
    seen = []
    fit(tiny_linear(), x, y, 2, batch_size=8, on_epoch=lambda epoch, model, stats: seen.append(stats.last_step_l1))
    assert seen[0] == pytest.approx(expected, rel=1e-5)
    assert seen[1] != pytest.approx(expected, rel=1e-3)  # weights moved after one Adam step
