"""Flatten: (C, H, W), or any per-sample shape, to flat features in C order.

y[n] = x[n].reshape(-1), the order PyTorch's `nn.Flatten` and Keras' `Flatten`
(channels first) give; backward reshapes the gradient back: dL/dx = g.reshape(x.shape).
A channels-last input (a convolution's output) is copied once into that order.
"""

from __future__ import annotations

import numpy as np

from workbench.nn.layer import Layer


class Flatten(Layer):
    type_name = "flatten"
    prefix = "flatten"

    @classmethod
    def from_config(cls, name, config, input_shape, ctx):
        layer = cls(name)
        layer.item = {}
        return layer, (int(np.prod(input_shape)),)

    def describe(self) -> str:
        return "flatten"

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        self._x_shape = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        return grad_out.reshape(self._x_shape)
