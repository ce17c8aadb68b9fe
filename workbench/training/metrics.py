"""Evaluation metrics: accuracy for classification, R^2 for regression."""

from __future__ import annotations

import numpy as np


def accuracy(predicted: np.ndarray, target: np.ndarray) -> float:
    return float(np.mean(predicted == target)) if len(target) else float("nan")


def r2_score(predicted: np.ndarray, target: np.ndarray) -> float:
    """Coefficient of determination averaged over targets, 1 - SS_res / SS_tot (as scikit-learn)."""
    if len(target) < 2:
        return float("nan")
    residual = ((target - predicted) ** 2).sum(axis=0, dtype=np.float64)
    total = ((target - target.mean(axis=0)) ** 2).sum(axis=0, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        scores = np.where(total > 0, 1.0 - residual / np.where(total > 0, total, 1.0), 0.0)
    return float(scores.mean())
