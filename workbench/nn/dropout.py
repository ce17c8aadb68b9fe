"""Inverted dropout (Srivastava et al. 2014).

Training: y = x * m / (1 - p), m ~ Bernoulli(1 - p) per element; backward
multiplies by the same scaled mask. Evaluation: identity, so nothing needs
rescaling at test time. `freeze_mask` reuses the last mask (gradient checks).
"""

from __future__ import annotations

import numpy as np

from workbench.nn.layer import Layer


class Dropout(Layer):
    kind = "dropout"

    def __init__(self, name: str, rate: float, rng: np.random.Generator) -> None:
        super().__init__(name)
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"dropout rate must be in [0, 1), got {rate}")
        self.rate = float(rate)
        self.rng = rng
        self.freeze_mask = False
        self._mask: np.ndarray | None = None

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        if not training or self.rate == 0.0:
            self._mask = None
            return x
        if not (self.freeze_mask and self._mask is not None and self._mask.shape == x.shape):
            keep = self.rng.random(x.shape, dtype=x.dtype) >= self.rate
            self._mask = keep * x.dtype.type(1.0 / (1.0 - self.rate))
        return x * self._mask

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        if self._mask is None:
            return grad_out
        return grad_out * self._mask
