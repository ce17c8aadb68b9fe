"""Fully connected layer: y = x W + b.

Backward (chain rule): dL/dW = x^T g, dL/db = sum_rows(g), dL/dx = g W^T,
where g = dL/dy. The first layer of a model skips dL/dx (nobody consumes it),
which saves one GEMM per step, as PyTorch does for inputs without grad.
"""

from __future__ import annotations

import numpy as np

from workbench.constraints import Interval
from workbench.nn.keys import Key, init_keys
from workbench.nn.layer import Layer


class Dense(Layer):
    """y = x W + b on flat samples (an image needs a flatten layer before it)."""

    kind = "dense"
    type_name = "dense"
    prefix = "dense"
    keys = (Key("units", int, constraint=Interval(1, 100_000), doc="output width", example=64), *init_keys())
    weights = ("W",)
    input_ndim = 1

    def __init__(self, name: str, weight: np.ndarray, bias: np.ndarray, input_grad: bool = True) -> None:
        super().__init__(name)
        self.params = {"W": weight, "b": bias}
        self.grads = {"W": np.zeros_like(weight), "b": np.zeros_like(bias)}
        self.input_grad = input_grad
        self._x: np.ndarray | None = None

    @classmethod
    def from_config(cls, name, config, input_shape, ctx):
        if len(input_shape) != 1:
            raise ctx.fail(f"a dense layer needs flat samples but gets {'x'.join(map(str, input_shape))}",
                           'add {type = "flatten"} before it (or global_avg_pool2d for images)')
        units = config["units"]
        layer = cls(name, ctx.weight(config, (input_shape[0], units)), ctx.zeros(units))
        layer.item = {k: v for k, v in config.items() if k != "type"}
        return layer, (units,)

    def describe(self) -> str:
        return f"dense {self.fan_out}"

    @property
    def fan_in(self) -> int:
        return self.params["W"].shape[0]

    @property
    def fan_out(self) -> int:
        return self.params["W"].shape[1]

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        self._x = x
        out = x @ self.params["W"]
        out += self.params["b"]
        return out

    def backward(self, grad_out: np.ndarray) -> np.ndarray | None:
        np.matmul(self._x.T, grad_out, out=self.grads["W"])
        np.sum(grad_out, axis=0, out=self.grads["b"])
        if not self.input_grad:
            return None
        return grad_out @ self.params["W"].T
