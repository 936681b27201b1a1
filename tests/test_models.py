"""Architectures match their specifications for any channel count, image size and class count."""

import pytest
import torch
from torch import nn

from raydistill import models
from raydistill.models import parameter_count
from raydistill.registry import MODELS


@pytest.mark.parametrize("name", MODELS.names())
@pytest.mark.parametrize("shape,classes", [((1, 28, 28), 10), ((3, 32, 32), 10), ((3, 64, 64), 2), ((3, 224, 224), 2)])
def test_output_shape(name, shape, classes):
    if shape[1] == 224 and name in ("baseline", "convnet3"):
        pytest.skip("large dense layer; shape logic covered by 64 px")
    model = models.build(name, shape, classes, [0.5] * shape[0], [0.5] * shape[0]).eval()
    with torch.no_grad():
        assert model(torch.rand(2, *shape)).shape == (2, classes)


def test_lenet5_is_the_classic_60k_network():
    net = models.lenet((1, 28, 28), 10)
    assert parameter_count(net) == 61706  # 156 + 2416 + 48120 + 10164 + 850
    assert sum(isinstance(m, nn.Tanh) for m in net.modules()) == 4
    assert sum(isinstance(m, nn.AvgPool2d) for m in net.modules()) == 2


def test_baseline_is_two_convs_maxpool_dense128():
    net = models.baseline((1, 28, 28), 10)
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
    assert [c.out_channels for c in convs] == [32, 64]
    assert [(l.in_features, l.out_features) for l in linears] == [(64 * 12 * 12, 128), (128, 10)]


def test_resnet34_small_input_stem_and_size():
    net = models.resnet34((3, 32, 32), 10)
    assert net.conv1.kernel_size == (3, 3) and net.conv1.stride == (1, 1) and isinstance(net.maxpool, nn.Identity)
    assert 21.0e6 < parameter_count(net) < 21.5e6
    big = models.resnet34((3, 224, 224), 2)
    assert big.conv1.stride == (2, 2) and isinstance(big.maxpool, nn.MaxPool2d)


def test_convnet3_matches_the_field_definition():
    net = models.convnet3((1, 28, 28), 10)
    assert net[0].padding == (3, 3)
    assert sum(isinstance(m, nn.GroupNorm) and m.num_groups == m.num_channels == 128 for m in net.modules()) == 3
    assert net[-1].in_features == 128 * 4 * 4
    # conv 3x3 (c->128, 128->128 x2) + 3 norms + linear
    expected = (1 * 9 * 128 + 128) + 2 * (128 * 9 * 128 + 128) + 3 * 256 + 2048 * 10 + 10
    assert parameter_count(net) == expected


def test_normalize_is_the_first_layer():
    model = models.build("lenet", (1, 28, 28), 10, [0.25], [0.5])
    x = torch.full((1, 1, 28, 28), 0.75)
    torch.testing.assert_close(model[0](x), torch.ones_like(x))
