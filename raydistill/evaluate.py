"""Train a fresh classifier on a (distilled) training set and measure it on the official test split.

Protocol 'paper' (the default): the trial's model, Adam lr 1e-3, batch 32, E epochs, one seeded
initialisation. Protocol 'dc' (the field's tables) lives in raydistill.protocols.
"""

from __future__ import annotations

import numpy as np
import torch

from raydistill import models
from raydistill.config import TrialConfig
from raydistill.data import Dataset, DeviceData
from raydistill.metrics import classification_metrics
from raydistill.train import fit, predict_proba

STUDENT_SEED_OFFSET = 1_000_003  # the student's init and batch order differ from the teacher's


def train_student(cfg: TrialConfig, data: Dataset, x: torch.Tensor, y: torch.Tensor) -> torch.nn.Module:
    """A fresh model of the trial's architecture trained on (x, y) with the paper's optimiser."""
    seed = cfg.seed + STUDENT_SEED_OFFSET
    torch.manual_seed(seed)
    model = models.build(cfg.model, data.shape, data.num_classes, data.mean, data.std).to(x.device)
    return fit(model, x, y, cfg.student_epochs, lr=cfg.lr, batch_size=cfg.batch_size, seed=seed)


def score_on_test(model: torch.nn.Module, tensors: DeviceData, positive: int) -> tuple[dict, np.ndarray]:
    """Metrics on the test split and the class probabilities they came from."""
    proba = predict_proba(model, tensors.x_test).numpy()
    return classification_metrics(tensors.y_test.cpu().numpy(), proba, positive), proba
