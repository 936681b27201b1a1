"""Test-set metrics with scikit-learn: accuracy, sensitivity, specificity, ROC AUC, confusion.

Sensitivity of class c is its recall (TP / (TP + FN)); specificity is TN / (TN + FP) with c against
the rest. With two classes the headline values are those of the positive class (the second class
unless another is named), as in the paper's Table 5; with more classes they are macro averages.
"""

from __future__ import annotations

import math

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, multilabel_confusion_matrix, recall_score, roc_auc_score


def classification_metrics(y_true: np.ndarray, proba: np.ndarray, positive: int = 1) -> dict:
    """Metrics from true labels (n,) and class probabilities (n, C)."""
    num_classes = proba.shape[1]
    labels = list(range(num_classes))
    y_pred = proba.argmax(1)
    sensitivity = recall_score(y_true, y_pred, labels=labels, average=None, zero_division=0)
    mcm = multilabel_confusion_matrix(y_true, y_pred, labels=labels)
    tn, fp = mcm[:, 0, 0], mcm[:, 0, 1]
    specificity = np.divide(tn, tn + fp, out=np.zeros(num_classes), where=(tn + fp) > 0)
    binary = num_classes == 2
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "sensitivity": float(sensitivity[positive] if binary else sensitivity.mean()),
        "specificity": float(specificity[positive] if binary else specificity.mean()),
        "auc": roc_auc(y_true, proba, positive),
        "per_class_sensitivity": [float(v) for v in sensitivity],
        "per_class_specificity": [float(v) for v in specificity],
        "confusion": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
    }


def roc_auc(y_true: np.ndarray, proba: np.ndarray, positive: int = 1) -> float:
    """Binary AUC of the positive class; macro one-vs-rest otherwise; NaN when a class is absent."""
    try:
        if proba.shape[1] == 2:
            return float(roc_auc_score(y_true == positive, proba[:, positive]))
        return float(roc_auc_score(y_true, proba, multi_class="ovr", average="macro", labels=list(range(proba.shape[1]))))
    except ValueError:
        return math.nan
