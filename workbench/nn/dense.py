"""Fully connected layer: y = x W + b.

Backward (chain rule): dL/dW = x^T g, dL/db = sum_rows(g), dL/dx = g W^T,
where g = dL/dy. The first layer of a model skips dL/dx (nobody consumes it),
which saves one GEMM per step, as PyTorch does for inputs without grad.
"""

from __future__ import annotations

import numpy as np

from workbench.nn.layer import Layer


class Dense(Layer):
    kind = "dense"

    def __init__(self, name: str, weight: np.ndarray, bias: np.ndarray, input_grad: bool = True) -> None:
        super().__init__(name)
        self.params = {"W": weight, "b": bias}
        self.grads = {"W": np.zeros_like(weight), "b": np.zeros_like(bias)}
        self.input_grad = input_grad
        self._x: np.ndarray | None = None

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
