"""Global feature importance: mean absolute attribution, beside scikit-learn's permutation importance.

Permutation importance (Breiman 2001; `sklearn.inspection.permutation_importance`) shuffles one
feature column of the test split at a time and measures how much the model's loss rises; it
needs no gradient and so checks the attributions from outside.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PERMUTATION_REPEATS = 5
MAX_PERMUTED_FEATURES = 200  # beyond (images, long sequences) the shuffles cost too much: skipped


@dataclass
class PermutationImportance:
    mean: np.ndarray  # (features,) rise of the loss when the feature is shuffled
    std: np.ndarray
    baseline_loss: float
    repeats: int


def mean_absolute_attribution(values: np.ndarray) -> np.ndarray:
    """(features,): the mean over samples of |attribution| per (flattened) input feature."""
    return np.abs(values.reshape(len(values), -1)).mean(axis=0)


class _Predictor:
    """The model as scikit-learn's permutation_importance sees it (already fitted)."""

    def __init__(self, model) -> None:
        self.model = model

    def fit(self, X, y):  # pragma: no cover - never called: the model is trained
        return self

    def predict(self, X):
        return self.model.predict(np.asarray(X, dtype=self.model.dtype))


def permutation_importance(model, loss, X: np.ndarray, y: np.ndarray, *, repeats: int = PERMUTATION_REPEATS,
                           seed: int = 0) -> PermutationImportance:
    """The rise of `loss` on (X, y) when each feature column is shuffled (`repeats` shuffles each)."""
    from sklearn.inspection import permutation_importance as sklearn_permutation_importance

    flat = np.asarray(X).reshape(len(X), -1)
    predictor = _Predictor(model)

    def negative_loss(estimator, X_, y_) -> float:
        return -float(loss(estimator.predict(X_), y_)[0])

    result = sklearn_permutation_importance(predictor, flat, y, scoring=negative_loss, n_repeats=repeats,
                                            random_state=seed)
    return PermutationImportance(np.asarray(result.importances_mean), np.asarray(result.importances_std),
                                 -negative_loss(predictor, flat, y), repeats)


def rank_agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation of two importance vectors (1: the same order)."""
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    if np.std(ra) == 0 or np.std(rb) == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])
