"""Batch normalization over the batch axis (Ioffe & Szegedy 2015).

Training: xhat = (x - mu_B) / sqrt(var_B + eps), y = gamma xhat + beta, and the
running statistics move by `momentum` (PyTorch convention, unbiased running
variance). Evaluation uses the running statistics. Backward, with
g = dL/dy and N the batch size:
    dgamma = sum(g xhat), dbeta = sum(g),
    dx = gamma / (N sqrt(var_B + eps)) * (N g - sum(g) - xhat sum(g xhat)).

Images (N, C, H, W): spatial batch normalization (Ioffe & Szegedy 2015, sec. 3.2),
one mean, variance, gamma and beta per channel, the sums taken over (N, H, W):
the same formulas with every pixel a row, N above becoming N H W (as
`torch.nn.BatchNorm2d`; the running variance is unbiased over those N H W values).
The flat path is left exactly as it was (runs of MLPs stay bit-identical).

Backward after an evaluation-mode forward (attributions, a fixed trained network) is
that of the fixed affine map y = gamma (x - running_mean) / sqrt(running_var + eps) + beta
(as PyTorch's eval mode): dx = g gamma / sqrt(running_var + eps), dgamma = sum(g xhat), dbeta = sum(g).
"""

from __future__ import annotations

import numpy as np

from workbench.constraints import Interval
from workbench.nn.keys import Key
from workbench.nn.layer import Layer


class BatchNorm(Layer):
    kind = "batchnorm"
    type_name = "batch_norm"
    prefix = "bn"
    normalizes = True
    keys = (
        Key("momentum", float, 0.1, Interval(0, 1, "right"), "weight of the batch in the running statistics"),
        Key("eps", float, 1e-5, Interval(0, None, "neither"), "added to the variance"),
    )

    def __init__(self, name: str, size: int, dtype: np.dtype, momentum: float = 0.1, eps: float = 1e-5) -> None:
        super().__init__(name)
        self.params = {"gamma": np.ones(size, dtype), "beta": np.zeros(size, dtype)}
        self.grads = {"gamma": np.zeros(size, dtype), "beta": np.zeros(size, dtype)}
        self.running_mean = np.zeros(size, dtype)
        self.running_var = np.ones(size, dtype)
        self.momentum = float(momentum)
        self.eps = float(eps)
        self._evaluated: np.ndarray | None = None

    @classmethod
    def from_config(cls, name, config, input_shape, ctx):
        if len(input_shape) not in (1, 3):
            raise ctx.fail(f"batch_norm takes flat samples or (C, H, W) images, not {'x'.join(map(str, input_shape))}",
                           'add {type = "flatten"} before it')
        layer = cls(name, int(input_shape[0]), ctx.dtype, config["momentum"], config["eps"])
        ctx.reserve(2 * int(input_shape[0]))
        layer.item = {k: v for k, v in config.items() if k != "type"}
        return layer, tuple(input_shape)

    def describe(self) -> str:
        return "batchnorm"

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        self._evaluated = None if training else x  # backward after evaluation: the fixed affine map
        if x.ndim == 4:
            return self._forward_images(x, training)
        if training:
            n = x.shape[0]
            mean = x.mean(axis=0)
            var = x.var(axis=0)
            self._inv_std = 1.0 / np.sqrt(var + self.eps)
            self._xhat = (x - mean) * self._inv_std
            m = self.momentum
            self.running_mean *= 1.0 - m
            self.running_mean += m * mean
            self.running_var *= 1.0 - m
            self.running_var += (m * n / max(n - 1, 1)) * var
            xhat = self._xhat
        else:
            xhat = (x - self.running_mean) / np.sqrt(self.running_var + self.eps)
        return xhat * self.params["gamma"] + self.params["beta"]

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        if self._evaluated is not None:
            return self._backward_evaluation(grad_out)
        if grad_out.ndim == 4:
            return self._backward_images(grad_out)
        xhat, n = self._xhat, grad_out.shape[0]
        sum_g = grad_out.sum(axis=0)
        sum_gx = (grad_out * xhat).sum(axis=0)
        self.grads["gamma"][...] = sum_gx
        self.grads["beta"][...] = sum_g
        scale = self.params["gamma"] * self._inv_std * (1.0 / n)
        return scale * (n * grad_out - sum_g - xhat * sum_gx)

    # -- images: per-channel statistics over (N, H, W) -------------------------------------------
    # The formulas above with one row per pixel: (N, C, H, W) as (N H W, C), a free view of a channels-last
    # array (a convolution's output), whose memory order the result keeps. Sums over the rows are
    # matrix-vector products (ones^T X): many times faster than numpy's column reductions of a narrow matrix.
    def _forward_images(self, x: np.ndarray, training: bool) -> np.ndarray:
        n, c, height, width = x.shape
        rows = x.transpose(0, 2, 3, 1).reshape(-1, c)
        if training:
            count = rows.shape[0]
            ones = np.ones(count, x.dtype)
            mean = (ones @ rows) * (1.0 / count)
            centered = rows - mean
            var = (ones @ (centered * centered)) * (1.0 / count)
            self._inv_std = 1.0 / np.sqrt(var + self.eps)
            centered *= self._inv_std
            self._xhat = xhat = centered
            m = self.momentum
            self.running_mean *= 1.0 - m
            self.running_mean += m * mean
            self.running_var *= 1.0 - m
            self.running_var += (m * count / max(count - 1, 1)) * var
            out = xhat * self.params["gamma"]
        else:
            out = (rows - self.running_mean) * (self.params["gamma"] / np.sqrt(self.running_var + self.eps))
        out += self.params["beta"]
        return out.reshape(n, height, width, c).transpose(0, 3, 1, 2)

    def _backward_images(self, grad_out: np.ndarray) -> np.ndarray:
        n, c, height, width = grad_out.shape
        grad, xhat = grad_out.transpose(0, 2, 3, 1).reshape(-1, c), self._xhat
        count = grad.shape[0]
        ones = np.ones(count, grad.dtype)
        sum_g = ones @ grad
        sum_gx = ones @ (grad * xhat)
        self.grads["gamma"][...] = sum_gx
        self.grads["beta"][...] = sum_g
        scale = self.params["gamma"] * self._inv_std * (1.0 / count)
        out = xhat * (-scale * sum_gx)
        out += grad * (scale * count)
        out -= scale * sum_g
        return out.reshape(n, height, width, c).transpose(0, 3, 1, 2)

    def _backward_evaluation(self, grad_out: np.ndarray) -> np.ndarray:
        """The gradient of the fixed map of evaluation mode (running statistics are constants)."""
        x = self._evaluated
        shape = (1, -1, 1, 1) if x.ndim == 4 else (1, -1)
        axes = (0, 2, 3) if x.ndim == 4 else (0,)
        inv_std = (1.0 / np.sqrt(self.running_var + self.eps)).reshape(shape)
        xhat = (x - self.running_mean.reshape(shape)) * inv_std
        self.grads["gamma"][...] = (grad_out * xhat).sum(axis=axes)
        self.grads["beta"][...] = grad_out.sum(axis=axes)
        return grad_out * (self.params["gamma"].reshape(shape) * inv_std)

    def state(self) -> dict[str, np.ndarray]:
        return {"running_mean": self.running_mean, "running_var": self.running_var}
