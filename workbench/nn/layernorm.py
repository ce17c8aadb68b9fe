"""Layer normalization (Ba, Kiros & Hinton 2016, "Layer normalization", eq. 4).

Each sample is normalized over all its features, independently of the batch
(so training and evaluation compute the same thing and nothing is kept running):

    mu = mean(x), var = mean((x - mu)^2)   over the sample's features (F, or C, H, W)
    xhat = (x - mu) / sqrt(var + eps),     y = gamma xhat + beta.

gamma and beta: one per feature for flat samples (F,), as `torch.nn.LayerNorm(F)`;
one per channel for images (C,), shared over H and W so the layer does not tie
itself to an image size (this is `torch.nn.GroupNorm(1, C)`, layer norm with a
per-channel affine, as Wu & He 2018 note). Backward, with g = dL/dy, D the number
of features per sample, and gx = gamma g (broadcast):

    dgamma = sum(g xhat), dbeta = sum(g)   (over the batch, and H, W for images),
    dx = (gx - mean(gx) - xhat mean(gx xhat)) / sqrt(var + eps)   (means over the sample's features).
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
        if len(input_shape) not in (1, 3):
            raise ctx.fail(f"layer_norm takes flat samples or (C, H, W) images, not {shape_text(input_shape)}",
                           'add {type = "flatten"} before it')
        size = int(input_shape[0])
        ctx.reserve(2 * size)
        layer = cls(name, size, ctx.dtype, len(input_shape) == 3, config["eps"])
        layer.item = {key: value for key, value in config.items() if key != "type"}
        return layer, tuple(input_shape)

    def describe(self) -> str:
        return "layernorm"

    def _affine(self, key: str) -> np.ndarray:
        value = self.params[key]
        return value[:, None, None] if self.images else value

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        axes = tuple(range(1, x.ndim))
        mean = x.mean(axis=axes, keepdims=True)
        centered = x - mean
        var = np.mean(centered * centered, axis=axes, keepdims=True)
        self._inv_std = 1.0 / np.sqrt(var + self.eps)
        self._xhat = centered * self._inv_std
        return self._xhat * self._affine("gamma") + self._affine("beta")

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        xhat = self._xhat
        axes = tuple(range(1, xhat.ndim))
        batch_axes = (0, 2, 3) if self.images else (0,)
        np.sum(grad_out * xhat, axis=batch_axes, out=self.grads["gamma"])
        np.sum(grad_out, axis=batch_axes, out=self.grads["beta"])
        gx = grad_out * self._affine("gamma")
        return (gx - gx.mean(axis=axes, keepdims=True) - xhat * np.mean(gx * xhat, axis=axes, keepdims=True)) \
            * self._inv_std
