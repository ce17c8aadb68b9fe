"""Losses: each returns the mean loss over the batch and its gradient w.r.t. the model output.

The gradient already includes the 1/N of the mean, so a model's backward pass
starts from it directly. Softmax and cross-entropy are fused: the gradient of
mean(-log softmax(z)_y) is (softmax(z) - onehot(y)) / N, computed from shifted
logits so it never overflows.
"""

from __future__ import annotations

import numpy as np


class Loss:
    """Base: `__call__(output, target) -> (loss, grad)`; `task` says which data it fits."""

    name = "loss"
    task = "regression"

    def __call__(self, output: np.ndarray, target: np.ndarray) -> tuple[float, np.ndarray]:
        raise NotImplementedError

    def output_units(self, n_outputs: int) -> int:
        """Width of the model's last layer for a data set with `n_outputs` classes or targets."""
        return n_outputs

    def predict(self, output: np.ndarray) -> np.ndarray:
        """Turn raw model outputs into predictions (labels or values)."""
        return output


class CrossEntropy(Loss):
    """Softmax cross-entropy on integer labels: L = mean(logsumexp(z) - z_y).

    Per-step outputs (N, T, C) with labels (N, T) (a target at every step of a sequence)
    are N*T rows: the mean runs over samples and steps, as PyTorch's CrossEntropyLoss.
    """

    name = "cross_entropy"
    task = "classification"

    def __call__(self, output, target):
        if output.ndim == 3:
            shape = output.shape
            loss, grad = self(output.reshape(-1, shape[2]), target.reshape(-1))
            return loss, grad.reshape(shape)
        n = output.shape[0]
        shifted = output - output.max(axis=1, keepdims=True)
        exp = np.exp(shifted)
        sum_exp = exp.sum(axis=1, keepdims=True)
        rows = np.arange(n)
        loss = float(np.mean(np.log(sum_exp[:, 0]) - shifted[rows, target]))
        grad = exp
        grad /= sum_exp
        grad[rows, target] -= 1.0
        grad *= 1.0 / n
        return loss, grad

    def predict(self, output):
        return output.argmax(axis=-1)

    @staticmethod
    def probabilities(output: np.ndarray) -> np.ndarray:
        exp = np.exp(output - output.max(axis=-1, keepdims=True))
        return exp / exp.sum(axis=-1, keepdims=True)


class BinaryCrossEntropy(Loss):
    """Binary cross-entropy on one logit z per sample, labels y in {0, 1}.

    L = mean(max(z, 0) - z y + log(1 + e^-|z|)) (the stable form), dL/dz = (sigmoid(z) - y) / N.
    """

    name = "binary_cross_entropy"
    task = "classification"

    def __call__(self, output, target):
        z = output[:, 0]
        y = target.astype(output.dtype, copy=False)
        loss = float(np.mean(np.maximum(z, 0.0) - z * y + np.log1p(np.exp(-np.abs(z)))))
        grad = (0.5 * (1.0 + np.tanh(0.5 * z)) - y) * (1.0 / z.shape[0])
        return loss, grad[:, None]

    def output_units(self, n_outputs):
        return 1

    def predict(self, output):
        return (output[:, 0] > 0.0).astype(np.int64)

    @staticmethod
    def probabilities(output: np.ndarray) -> np.ndarray:
        p = 0.5 * (1.0 + np.tanh(0.5 * output[:, 0]))
        return np.stack([1.0 - p, p], axis=1)


class MeanSquaredError(Loss):
    """L = mean((p - y)^2) over all elements, dL/dp = 2 (p - y) / (N K)."""

    name = "mse"

    def __call__(self, output, target):
        diff = output - target
        loss = float(np.mean(diff * diff))
        return loss, diff * (2.0 / diff.size)


class MeanAbsoluteError(Loss):
    """L = mean(|p - y|), dL/dp = sign(p - y) / (N K) (subgradient 0 at 0)."""

    name = "mae"

    def __call__(self, output, target):
        diff = output - target
        return float(np.mean(np.abs(diff))), np.sign(diff) * (1.0 / diff.size)


class Huber(Loss):
    """Huber (1964): 0.5 d^2 if |d| <= delta else delta (|d| - delta/2); gradient clip(d, -delta, delta) / (N K)."""

    name = "huber"

    def __init__(self, delta: float = 1.0) -> None:
        self.delta = float(delta)

    def __call__(self, output, target):
        diff = output - target
        absd = np.abs(diff)
        quadratic = np.minimum(absd, self.delta)
        loss = float(np.mean(0.5 * quadratic * quadratic + self.delta * (absd - quadratic)))
        return loss, np.clip(diff, -self.delta, self.delta) * (1.0 / diff.size)


LOSSES: dict[str, type[Loss]] = {
    cls.name: cls for cls in (CrossEntropy, BinaryCrossEntropy, MeanSquaredError, MeanAbsoluteError, Huber)
}
