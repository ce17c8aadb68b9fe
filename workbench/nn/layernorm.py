"""Layer normalization (Ba, Kiros & Hinton 2016, "Layer normalization", eq. 4).

Each sample is normalized over its features, independently of the batch (so
training and evaluation compute the same thing and nothing is kept running):

    mu = mean(x), var = mean((x - mu)^2)   over the normalized axes,
    xhat = (x - mu) / sqrt(var + eps),     y = gamma xhat + beta.

Normalized axes and affine parameters, by per-sample shape:
- flat (F,): all F features; gamma, beta of size F (`torch.nn.LayerNorm(F)`);
- sequences (T, F): the F features of each step; gamma, beta of size F
  (`torch.nn.LayerNorm(F)` on (N, T, F), as transformers use it);
- images (C, H, W): all of C, H, W; gamma, beta one per channel (C,), shared over
  H and W so the layer does not tie itself to an image size (this is
  `torch.nn.GroupNorm(1, C)`: layer norm with a per-channel affine, Wu & He 2018).

Backward, with g = dL/dy and gx = gamma g (broadcast):

    dgamma = sum(g xhat), dbeta = sum(g)   (over every axis but gamma's),
    dx = (gx - mean(gx) - xhat mean(gx xhat)) / sqrt(var + eps)   (means over the normalized axes).
"""

from __future__ import annotations

import numpy as np

from workbench.constraints import Interval
from workbench.nn.build import shape_text
from workbench.nn.keys import Key
from workbench.nn.layer import Layer


class LayerNorm(Layer):
    type_name = "layer_norm"
    prefix = "ln"
    normalizes = True
    keys = (Key("eps", float, 1e-5, Interval(0, None, "neither"), "added to the variance"),)

    def __init__(self, name: str, size: int, dtype, images: bool, eps: float = 1e-5) -> None:
        super().__init__(name)
        self.params = {"gamma": np.ones(size, dtype), "beta": np.zeros(size, dtype)}
        self.grads = {"gamma": np.zeros(size, dtype), "beta": np.zeros(size, dtype)}
        self.images = images
        self.eps = float(eps)

    @classmethod
    def from_config(cls, name, config, input_shape, ctx):
        if len(input_shape) not in (1, 2, 3):
            raise ctx.fail(f"layer_norm takes flat samples, (T, F) sequences or (C, H, W) images, not "
                           f"{shape_text(input_shape)}", 'add {type = "flatten"} before it')
        size = int(input_shape[0] if len(input_shape) == 3 else input_shape[-1])
        ctx.reserve(2 * size)
        layer = cls(name, size, ctx.dtype, len(input_shape) == 3, config["eps"])
        layer.item = {key: value for key, value in config.items() if key != "type"}
        return layer, tuple(input_shape)

    def describe(self) -> str:
        return "layernorm"

    def _affine(self, key: str) -> np.ndarray:
        value = self.params[key]
        return value[:, None, None] if self.images else value

    def _axes(self, ndim: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """(normalized axes, axes gamma is shared over) for a batch of rank `ndim`."""
        if self.images:
            return (1, 2, 3), (0, 2, 3)
        return (ndim - 1,), tuple(range(ndim - 1))

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        axes = self._axes(x.ndim)[0]
        mean = x.mean(axis=axes, keepdims=True)
        centered = x - mean
        var = np.mean(centered * centered, axis=axes, keepdims=True)
        self._inv_std = 1.0 / np.sqrt(var + self.eps)
        self._xhat = centered * self._inv_std
        return self._xhat * self._affine("gamma") + self._affine("beta")

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        xhat = self._xhat
        axes, batch_axes = self._axes(xhat.ndim)
        np.sum(grad_out * xhat, axis=batch_axes, out=self.grads["gamma"])
        np.sum(grad_out, axis=batch_axes, out=self.grads["beta"])
        gx = grad_out * self._affine("gamma")
        return (gx - gx.mean(axis=axes, keepdims=True) - xhat * np.mean(gx * xhat, axis=axes, keepdims=True)) \
            * self._inv_std
