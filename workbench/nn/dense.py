"""Fully connected layer: y = x W + b.

Backward (chain rule): dL/dW = x^T g, dL/db = sum_rows(g), dL/dx = g W^T,
where g = dL/dy. The first layer of a model skips dL/dx (nobody consumes it),
which saves one GEMM per step, as PyTorch does for inputs without grad.

Sequences: with `per_step = true` the same W and b apply at every step of a (T, F)
sample (Keras' TimeDistributed(Dense)): the rows of all steps of all samples make one
matrix, so the equations above hold with the sum over samples and steps. The output
layer of a model gets it when the data has a target at every step (copy); anywhere else
a dense layer after a recurrent layer with return_sequences = true is a mistake the
builder names.
"""

from __future__ import annotations

import numpy as np

from workbench.constraints import Interval
from workbench.nn.keys import Key, init_keys
from workbench.nn.layer import Layer


class Dense(Layer):
    """y = x W + b on flat samples, or at every step of a sequence with per_step (an image needs a flatten layer before it)."""

    kind = "dense"
    type_name = "dense"
    prefix = "dense"
    keys = (Key("units", int, constraint=Interval(1, 100_000), doc="output width", example=64), *init_keys(),
            Key("per_step", bool, False, doc="apply to every step of a sequence (steps x features)"))
    weights = ("W",)
    input_ndim = 1

    def __init__(self, name: str, weight: np.ndarray, bias: np.ndarray, input_grad: bool = True,
                 per_step: bool = False) -> None:
        super().__init__(name)
        self.params = {"W": weight, "b": bias}
        self.grads = {"W": np.zeros_like(weight), "b": np.zeros_like(bias)}
        self.input_grad = input_grad
        self.per_step = bool(per_step)
        self.time_axis = 1 if self.per_step else None
        self.unit_axis = -1 if self.per_step else 1
        self._x: np.ndarray | None = None

    @classmethod
    def from_config(cls, name, config, input_shape, ctx):
        per_step = bool(config.get("per_step", False))
        shape = "x".join(map(str, input_shape))
        if len(input_shape) == 2 and not per_step:
            raise ctx.fail(f"a dense layer gets a sequence ({input_shape[0]} steps x {input_shape[1]} features)",
                           "set return_sequences = false on the recurrent layer before it "
                           "(or per_step = true to apply it at every step)")
        if per_step and len(input_shape) != 2:
            raise ctx.fail(f"a dense layer with per_step = true needs a sequence (steps x features) but gets {shape}",
                           "set return_sequences = true on the recurrent layer before it (or per_step = false)")
        if len(input_shape) not in (1, 2):
            raise ctx.fail(f"a dense layer needs flat samples but gets {shape}",
                           'add {type = "flatten"} before it (or global_avg_pool2d for images)')
        units = config["units"]
        layer = cls(name, ctx.weight(config, (input_shape[-1], units)), ctx.zeros(units), per_step=per_step)
        layer.item = {k: v for k, v in config.items() if k != "type" and not (k == "per_step" and not v)}
        return layer, ((input_shape[0], units) if per_step else (units,))

    def describe(self) -> str:
        return f"dense {self.fan_out}"

    @property
    def fan_in(self) -> int:
        return self.params["W"].shape[0]

    @property
    def fan_out(self) -> int:
        return self.params["W"].shape[1]

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        if x.ndim == 3:  # per step: (N, T, F) as the rows of one (N*T, F) matrix
            rows = x.reshape(-1, x.shape[2])
            self._x = rows
            out = rows @ self.params["W"]
            out += self.params["b"]
            return out.reshape(x.shape[0], x.shape[1], -1)
        self._x = x
        out = x @ self.params["W"]
        out += self.params["b"]
        return out

    def backward(self, grad_out: np.ndarray) -> np.ndarray | None:
        shape = grad_out.shape
        if grad_out.ndim == 3:
            grad_out = grad_out.reshape(-1, shape[2])
        np.matmul(self._x.T, grad_out, out=self.grads["W"])
        np.sum(grad_out, axis=0, out=self.grads["b"])
        if not self.input_grad:
            return None
        grad_in = grad_out @ self.params["W"].T
        return grad_in.reshape(shape[0], shape[1], -1) if len(shape) == 3 else grad_in
