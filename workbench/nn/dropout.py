"""Inverted dropout (Srivastava et al. 2014).

Training: y = x * m / (1 - p), m ~ Bernoulli(1 - p) per element; backward
multiplies by the same scaled mask. Evaluation: identity, so nothing needs
rescaling at test time. `freeze_mask` reuses the last mask (gradient checks).
"""

from __future__ import annotations

import numpy as np

from workbench.constraints import Interval
from workbench.nn.keys import Key
from workbench.nn.layer import Layer


class Dropout(Layer):
    """Inverted dropout (Srivastava et al. 2014): y = x m / (1 - p) in training, the identity in evaluation."""

    kind = "dropout"
    type_name = "dropout"
    prefix = "drop"
    keys = (Key("rate", float, 0.5, Interval(0, 1, "left"), "fraction of units dropped in training"),)

    def __init__(self, name: str, rate: float, rng: np.random.Generator) -> None:
        super().__init__(name)
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"dropout rate must be in [0, 1), got {rate}")
        self.rate = float(rate)
        self.rng = rng
        self.freeze_mask = False
        self._mask: np.ndarray | None = None

    @classmethod
    def from_config(cls, name, config, input_shape, ctx):
        layer = cls(name, config["rate"], ctx.dropout_rng)
        layer.item = {"rate": config["rate"]}
        return layer, tuple(input_shape)

    def describe(self) -> str:
        return f"dropout {self.rate:g}"

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
