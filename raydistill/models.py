"""The classifiers: the paper's three (baseline, LeNet-5, ResNet-34) and the field's ConvNet-3.

Every model takes images in [0, 1] and normalises them itself (`Normalize` is its first layer), so
input gradients and distilled images live in the dataset's [0, 1] pixel scale.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from raydistill.registry import MODELS

Shape = tuple[int, int, int]  # (channels, height, width)


class Normalize(nn.Module):
    """(x - mean) / std per channel, with the dataset's statistics as buffers."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


@MODELS.register("baseline", "the paper's Baseline CNN: Keras' mnist_cnn without dropout (Conv32, Conv64, "
                 "MaxPool, Dense128)", gpu_share=0.25, factorised_norms=True)
def baseline(shape: Shape, num_classes: int) -> nn.Module:
    """The paper's "Baseline CNN", pinned to Keras' classic mnist_cnn without dropout:
    Conv32(3x3)-ReLU, Conv64(3x3)-ReLU, MaxPool 2, Dense128-ReLU, Dense C (softmax in the loss)."""
    c, h, w = shape
    return nn.Sequential(
        nn.Conv2d(c, 32, 3), nn.ReLU(),
        nn.Conv2d(32, 64, 3), nn.ReLU(),
        nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(64 * ((h - 4) // 2) * ((w - 4) // 2), 128), nn.ReLU(),
        nn.Linear(128, num_classes),
    )


@MODELS.register("lenet", "LeNet-5: tanh, average pooling, 6-16-120-84-C (61,706 parameters on 1x28x28)",
                 gpu_share=0.25, factorised_norms=True)
def lenet(shape: Shape, num_classes: int) -> nn.Module:
    """Classic LeNet-5: tanh, average pooling, 6-16 convolutions, 120-84-C dense layers.
    The first convolution pads by 2, i.e. a 28x28 input is seen as the original 32x32."""
    c, h, w = shape
    flat = 16 * ((h // 2 - 4) // 2) * ((w // 2 - 4) // 2)
    return nn.Sequential(
        nn.Conv2d(c, 6, 5, padding=2), nn.Tanh(), nn.AvgPool2d(2),
        nn.Conv2d(6, 16, 5), nn.Tanh(), nn.AvgPool2d(2), nn.Flatten(),
        nn.Linear(flat, 120), nn.Tanh(),
        nn.Linear(120, 84), nn.Tanh(),
        nn.Linear(84, num_classes),
    )


@MODELS.register("resnet34", "torchvision ResNet-34, random init; 3x3 stride-1 stem below 64 pixels (21.3M)",
                 gpu_share=1.0, factorised_norms=False)
def resnet34(shape: Shape, num_classes: int) -> nn.Module:
    """torchvision's ResNet-34 (random init). Below 64 pixels the stem is a 3x3 stride-1 convolution
    with no max-pool (the usual CIFAR adaptation); larger images keep the ImageNet stem."""
    from torchvision.models import resnet34 as tv_resnet34

    c, h, w = shape
    net = tv_resnet34(weights=None, num_classes=num_classes)
    if min(h, w) < 64:
        net.conv1 = nn.Conv2d(c, 64, 3, stride=1, padding=1, bias=False)
        net.maxpool = nn.Identity()
    elif c != 3:
        net.conv1 = nn.Conv2d(c, 64, 7, stride=2, padding=3, bias=False)
    return net


@MODELS.register("convnet3", "the field's ConvNet-3 (DC/DSA/DM/MTT): 3 x [Conv128, instance norm, ReLU, "
                 "AvgPool]", gpu_share=0.25, factorised_norms=False)
def convnet3(shape: Shape, num_classes: int, width: int = 128) -> nn.Module:
    """The distillation field's ConvNet-3 (DC/DSA/DM/MTT): three blocks of Conv3x3(128), instance
    norm (GroupNorm with one group per channel), ReLU, AvgPool 2; linear classifier. A 28-pixel
    input gets padding 3 in the first convolution, i.e. it is treated as 32x32."""
    c, h, w = shape
    layers: list[nn.Module] = []
    pad = 3 if (h, w) == (28, 28) else 1
    size = h + 2 * pad - 2
    for depth in range(3):
        layers += [
            nn.Conv2d(c if depth == 0 else width, width, 3, padding=pad if depth == 0 else 1),
            nn.GroupNorm(width, width, affine=True), nn.ReLU(), nn.AvgPool2d(2),
        ]
        size //= 2
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(width * size * size, num_classes))


def build(name: str, shape: Shape, num_classes: int, mean: Sequence[float], std: Sequence[float],
          normalize: bool = True) -> nn.Module:
    """A fresh model that takes [0, 1] images and normalises them itself; seed torch before calling
    for a reproducible init. `normalize=False` feeds the pixels as they come (the `byte` forensics
    reading); the layer indices stay the same either way."""
    first = Normalize(mean, std) if normalize else nn.Identity()
    return nn.Sequential(first, MODELS[name].obj(shape, num_classes))


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
