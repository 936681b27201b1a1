"""The field's evaluation of a distilled set as the DC reference code does it
(VICO-UoE/DatasetCondensation, utils.py `evaluate_synset`, `augment`, `get_daparam`, `get_dataset`):
a fresh ConvNet-3 trained on the set with SGD (lr 0.01, momentum 0.9, weight decay 5e-4, batch
256) for `Epoch + 1` passes (`range(Epoch+1)`), the lr multiplied by 0.1 after pass index
`Epoch//2 + 1` by re-creating the optimiser (its momentum starts again from zero), inputs
normalised with the reference's constants, and on MNIST the reference's `crop_scale_rotate`
augmentation (one of crop, scale, rotate per image and step); then one test pass.

Every constant below is the reference's; tests/test_protocols.py asserts them against values
copied from its code.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import nn

from raydistill import models

LR = 0.01
MOMENTUM = 0.9
WEIGHT_DECAY = 5e-4
BATCH_SIZE = 256
EPOCHS = {"mnist": 1000}  # epoch_eval_train: 1000 where the reference augments, else 300
DEFAULT_EPOCHS = 300
# get_dataset: the normalisation constants of the reference, by raydistill dataset name
NORMALISATION = {"mnist": ((0.1307,), (0.3081,)), "fashion-mnist": ((0.2861,), (0.3530,)),
                 "cifar10": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
                 "cifar100": ((0.5071, 0.4866, 0.4409), (0.2673, 0.2564, 0.2762))}
# get_daparam: crop 4 pixels, scale 0.2, rotate 45 degrees; the strategy is crop_scale_rotate on MNIST only
CROP, SCALE, ROTATE = 4, 0.2, 45
AUGMENTED = {"mnist": ("crop", "scale", "rotate")}


def reference_epochs(dataset: str) -> int:
    """The reference's epoch_eval_train for a dataset: 1000 with augmentation, else 300."""
    return EPOCHS.get(dataset, DEFAULT_EPOCHS)


def normalisation(dataset: str, mean: Sequence[float], std: Sequence[float]) -> tuple[Sequence[float], Sequence[float]]:
    """The reference's constants for the datasets it names; the dataset's own statistics otherwise."""
    return NORMALISATION.get(dataset, (mean, std))


class DropOnce:
    """The reference's schedule, stepped once per pass: after pass index `Epoch//2 + 1` the lr is
    multiplied by 0.1 and the optimiser starts afresh (SGD's momentum buffers are dropped, as a
    new torch.optim.SGD would have none)."""

    def __init__(self, optimizer: torch.optim.SGD, epochs: int):
        self.optimizer, self.drop_after, self.passes = optimizer, epochs // 2 + 1, 0

    def step(self) -> None:
        if self.passes == self.drop_after:
            for group in self.optimizer.param_groups:
                group["lr"] *= 0.1
            self.optimizer.state.clear()
        self.passes += 1

    def resume(self, passes: int) -> None:
        """Continue after `passes` passes from an optimiser state kept after the last of them,
        before the step that followed it: that step is taken now."""
        self.passes = passes - 1
        self.step()


def optimizer(model: nn.Module, epochs: int) -> tuple[torch.optim.SGD, DropOnce]:
    sgd = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
    return sgd, DropOnce(sgd, epochs)


class Augment:
    """The reference's `augment` for one dataset's strategy, on a batch in [0, 1] pixels: each image
    gets one of the strategy's transforms, drawn uniformly, with the reference's parameters. The
    reference works on normalised images (fills: the batch's channel means for crop and rotate,
    zero for scale); so does this, mapping back to pixels afterwards."""

    def __init__(self, strategy: Sequence[str], mean: Sequence[float], std: Sequence[float], seed: int):
        self.strategy = tuple(strategy)
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        self.rng = np.random.default_rng(seed)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        mean, std = self.mean.to(x.device), self.std.to(x.device)
        images = (x - mean) / std
        fill = images.mean(dim=(0, 2, 3))  # per channel, of the whole batch
        out = torch.stack([self._one(image, fill) for image in images])
        return out * std + mean

    def _one(self, image: torch.Tensor, fill: torch.Tensor) -> torch.Tensor:
        choice = self.strategy[self.rng.integers(len(self.strategy))]
        return {"crop": self.crop, "scale": self.scale, "rotate": self.rotate}[choice](image, fill)

    def crop(self, image: torch.Tensor, fill: torch.Tensor) -> torch.Tensor:
        c, h, w = image.shape
        padded = fill.view(c, 1, 1).expand(c, h + 2 * CROP, w + 2 * CROP).clone()
        padded[:, CROP:CROP + h, CROP:CROP + w] = image
        r, s = self.rng.integers(2 * CROP, size=2)
        return padded[:, r:r + h, s:s + w]

    def scale(self, image: torch.Tensor, fill: torch.Tensor) -> torch.Tensor:
        c, h, w = image.shape
        # the reference scales both sides from the height (its images are square)
        sh, sw = (int(self.rng.uniform(1 - SCALE, 1 + SCALE) * h) for _ in range(2))
        resized = F.interpolate(image[None], [sh, sw])[0]  # nearest, as the reference's default
        side = max(sh, sw, h, w)
        canvas = image.new_zeros(c, side, side)
        r, s = (side - sh) // 2, (side - sw) // 2
        canvas[:, r:r + sh, s:s + sw] = resized
        r, s = (side - h) // 2, (side - w) // 2
        return canvas[:, r:r + h, s:s + w]

    def rotate(self, image: torch.Tensor, fill: torch.Tensor) -> torch.Tensor:
        c, h, w = image.shape
        angle = int(self.rng.integers(-ROTATE, ROTATE))  # np.random.randint(-rotate, rotate)
        turned = ndimage.rotate(image.cpu().numpy(), angle=angle, axes=(-2, -1), cval=float(fill.mean()))
        r, s = (turned.shape[-2] - h) // 2, (turned.shape[-1] - w) // 2
        return torch.from_numpy(np.ascontiguousarray(turned[:, r:r + h, s:s + w])).to(image)


def augmentation(dataset: str, mean: Sequence[float], std: Sequence[float],
                 seed: int) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """The reference's training augmentation for the dataset (None where it uses none)."""
    strategy = AUGMENTED.get(dataset)
    return Augment(strategy, mean, std, seed) if strategy else None


def build(shape: tuple[int, int, int], num_classes: int, mean: Sequence[float], std: Sequence[float],
          seed: int, device: torch.device) -> nn.Module:
    """A fresh ConvNet-3 (its init from `seed`) that normalises its [0, 1] input with mean/std."""
    torch.manual_seed(seed)
    return models.build("convnet3", shape, num_classes, mean, std).to(device)
