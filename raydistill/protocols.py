"""The field's evaluation protocol ('dc'): how the DC/DSA/DM/MTT tables score a distilled set.

ConvNet-3 trained from scratch on the set with SGD (lr 0.01, momentum 0.9, weight decay 5e-4,
batch 256) for `cfg.student_epochs` epochs (the sweeps use 300), the lr multiplied by 0.1 once
after the DC code's epoch index `Epoch//2 + 1` (0-based); `cfg.eval_runs` seeded initialisations,
each measured once on the test split after its last epoch (no checkpoint is chosen on test data).

Differences from the reference code: no augmentation while training (DC augments MNIST with
crop/scale/rotate/noise; the 1000-epoch DSA-augmented variant of DSA/DM/MTT is not implemented);
the reference loop makes Epoch + 1 passes, here exactly `epochs`; the reference re-creates the
optimiser at the drop (zeroing momentum), here the momentum buffer carries over (torch keeps it in
gradient units, so the step still shrinks tenfold).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from raydistill import models
from raydistill.config import TrialConfig
from raydistill.data import Dataset, DeviceData
from raydistill.evaluate import STUDENT_SEED_OFFSET
from raydistill.metrics import classification_metrics
from raydistill.train import fit, predict_proba

LR = 0.01
MOMENTUM = 0.9
WEIGHT_DECAY = 5e-4
BATCH_SIZE = 256
AVERAGED = ("accuracy", "sensitivity", "specificity", "auc", "per_class_sensitivity", "per_class_specificity")


def dc_optimizer(model: nn.Module, epochs: int) -> tuple[torch.optim.SGD, torch.optim.lr_scheduler.MultiStepLR]:
    """SGD whose lr is 0.01 in epochs 0 .. epochs//2 + 1 (0-based) and 0.001 after: the DC code
    drops it at the end of epoch `Epoch//2 + 1`; the scheduler steps once per epoch."""
    optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
    return optimizer, torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[epochs // 2 + 2], gamma=0.1)


def run_seeds(seed: int, runs: int) -> list[int]:
    """One seed per evaluation run, distinct across trial seeds (unlike seed + run)."""
    return [int(np.random.SeedSequence([STUDENT_SEED_OFFSET, seed, run]).generate_state(1)[0]) for run in range(runs)]


def train_convnet(data: Dataset, x: torch.Tensor, y: torch.Tensor, epochs: int, seed: int) -> nn.Module:
    """A fresh ConvNet-3 (init and batch order from `seed`) trained on (x, y) with the DC schedule."""
    torch.manual_seed(seed)
    model = models.build("convnet3", data.shape, data.num_classes, data.mean, data.std).to(x.device)
    optimizer, scheduler = dc_optimizer(model, epochs)
    return fit(model, x, y, epochs, batch_size=BATCH_SIZE, seed=seed, optimizer=optimizer, scheduler=scheduler)


def evaluate_dc(
    cfg: TrialConfig,
    data: Dataset,
    images: torch.Tensor,
    labels: torch.Tensor,
    tensors: DeviceData,
    positive: int,
) -> tuple[dict, np.ndarray]:
    """Metrics over cfg.eval_runs ConvNet-3s trained on (images, labels), and the first run's test
    probabilities (for the ROC figure)."""
    y_test = tensors.y_test.cpu().numpy()
    runs, first = [], None
    for seed in run_seeds(cfg.seed, cfg.eval_runs):
        proba = predict_proba(train_convnet(data, images, labels, cfg.student_epochs, seed), tensors.x_test).numpy()
        runs.append(classification_metrics(y_test, proba, positive))
        first = proba if first is None else first
    return summarise(runs), first


def summarise(runs: list[dict]) -> dict:
    """Means over runs of the scalar and per-class metrics, the spread of the accuracy, and the
    first run's confusion matrix (it matches the probabilities returned for the figures)."""
    out = dict(runs[0])
    for key in AVERAGED:
        mean = np.mean([r[key] for r in runs], axis=0)
        out[key] = mean.tolist() if mean.ndim else float(mean)
    accuracies = [r["accuracy"] for r in runs]
    out["accuracy_std"] = float(np.std(accuracies, ddof=1)) if len(runs) > 1 else 0.0
    out["accuracy_runs"] = accuracies
    return out
