"""Metrics against hand-computed confusion matrices and scikit-learn."""

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score, roc_auc_score

from raydistill.metrics import classification_metrics


def proba_for(y_pred: np.ndarray, num_classes: int, rng: np.random.Generator) -> np.ndarray:
    """Probabilities whose argmax is y_pred, with varied confidences (for AUC)."""
    p = rng.random((len(y_pred), num_classes)) * 0.5
    p[np.arange(len(y_pred)), y_pred] = 1.0 + rng.random(len(y_pred))
    return p / p.sum(1, keepdims=True)


def test_binary_metrics_from_a_known_confusion_matrix():
    # Positive class 1: TP = 30, FN = 10, TN = 45, FP = 15.
    y_true = np.array([1] * 40 + [0] * 60)
    y_pred = np.array([1] * 30 + [0] * 10 + [0] * 45 + [1] * 15)
    proba = proba_for(y_pred, 2, np.random.default_rng(0))
    m = classification_metrics(y_true, proba, positive=1)
    assert m["confusion"] == [[45, 15], [10, 30]]
    assert m["accuracy"] == pytest.approx(75 / 100)
    assert m["sensitivity"] == pytest.approx(30 / 40)
    assert m["specificity"] == pytest.approx(45 / 60)
    assert m["auc"] == pytest.approx(roc_auc_score(y_true, proba[:, 1]))
    flipped = classification_metrics(y_true, proba, positive=0)
    assert flipped["sensitivity"] == pytest.approx(45 / 60) and flipped["specificity"] == pytest.approx(30 / 40)


def test_ten_class_macro_metrics_match_the_confusion_matrix_and_sklearn():
    rng = np.random.default_rng(1)
    y_true = rng.integers(0, 10, 500)
    y_pred = np.where(rng.random(500) < 0.7, y_true, rng.integers(0, 10, 500))
    proba = proba_for(y_pred, 10, rng)
    m = classification_metrics(y_true, proba)
    cm = np.array(m["confusion"])
    tp = np.diag(cm)
    fn = cm.sum(1) - tp
    fp = cm.sum(0) - tp
    tn = cm.sum() - tp - fn - fp
    assert m["accuracy"] == pytest.approx(tp.sum() / cm.sum())
    assert m["sensitivity"] == pytest.approx(np.mean(tp / (tp + fn)))
    assert m["sensitivity"] == pytest.approx(balanced_accuracy_score(y_true, y_pred))
    assert m["specificity"] == pytest.approx(np.mean(tn / (tn + fp)))
    assert m["per_class_specificity"] == pytest.approx(list(tn / (tn + fp)))
    assert m["auc"] == pytest.approx(roc_auc_score(y_true, proba, multi_class="ovr", average="macro"))


def test_auc_is_nan_when_a_class_is_missing_from_the_test_labels():
    y_true = np.array([0, 0, 1, 1])
    proba = proba_for(np.array([0, 1, 1, 2]), 3, np.random.default_rng(2))
    assert np.isnan(classification_metrics(y_true, proba)["auc"])
