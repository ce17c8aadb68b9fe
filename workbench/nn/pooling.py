"""Pooling over (N, C, H, W) images: max and average over k x k windows, and global average.

With window k, stride s and no padding, output pixel (a, b) pools the window
x[s a : s a + k, s b : s b + k] of each channel; the output has
floor((H - k) / s) + 1 rows (PyTorch's `ceil_mode=False`).

- Max (Ranzato et al. 2007; Zhou & Chellappa 1988): y = max over the window;
  dL/dx is g at the window's argmax and 0 elsewhere. Ties go to one element
  only, the first in row-major window order, as PyTorch's `max_pool2d` does.
- Average: y = mean over the window; dL/dx gets g / k^2 at every pixel of the
  window, overlapping windows accumulating.
- Global average (Lin et al. 2014, "Network in network"): y[n, c] = mean over
  H, W of x[n, c]; dL/dx = g[n, c] / (H W) everywhere.

Windows are strided views; the passes loop over the k*k window offsets, each
touching one strided slice of every window at once (no loop over pixels), and
keep the memory order of their input (channels-last stays channels-last).
"""

from __future__ import annotations

import numpy as np

from workbench.constraints import Interval
from workbench.nn.build import shape_text
from workbench.nn.keys import Key
from workbench.nn.layer import Layer


def same_layout(array: np.ndarray, like: np.ndarray) -> np.ndarray:
    """`array`, copied into the memory order of `like` if its own differs (mixed orders make element-wise
    passes several times slower)."""
    order = lambda a: tuple(np.argsort(a.strides, kind="stable"))
    if order(array) == order(like):
        return array
    copy = np.empty_like(like, shape=array.shape, dtype=array.dtype)
    copy[...] = array
    return copy


def needs_images(input_shape, ctx, what: str) -> None:
    if len(input_shape) != 3:
        raise ctx.fail(f"{what} needs images (channels x height x width) but gets {shape_text(input_shape)}",
                       "put it after a conv2d layer, on image data (digits or mnist as 1x8x8 / 1x28x28 images, "
                       "or an NPZ whose X has shape (N, C, H, W))")


class Pool2D(Layer):
    """Shared by max and average pooling: keys, shapes, window offsets."""

    prefix = "pool"
    keys = (
        Key("size", int, constraint=Interval(1, 1_000), doc="side of the square window", example=2),
        Key("stride", int, None, Interval(1, 1_000), "step between windows (default: size)", example=2),
    )
    input_ndim = 3

    def __init__(self, name: str, size: int, stride: int | None = None) -> None:
        super().__init__(name)
        self.size = int(size)
        self.stride = int(stride) if stride is not None else self.size

    @classmethod
    def from_config(cls, name, config, input_shape, ctx):
        needs_images(input_shape, ctx, f"a {cls.type_name} layer")
        layer = cls(name, config["size"], config["stride"])
        channels, height, width = (int(s) for s in input_shape)
        k, s = layer.size, layer.stride
        if k > height or k > width:
            raise ctx.fail(f"a {k}x{k} pooling window is larger than the {height}x{width} image",
                           "use a smaller size, or fewer pooling or strided layers before it")
        layer.item = {key: value for key, value in config.items() if key != "type"}
        return layer, (channels, (height - k) // s + 1, (width - k) // s + 1)

    def describe(self) -> str:
        kind = "max" if self.type_name == "max_pool2d" else "avg"
        return f"{kind}pool {self.size}" + (f" /{self.stride}" if self.stride != self.size else "")

    def _windows(self, x_shape):
        """(window offsets (i, j), output height, output width, slicer of offset (i, j) on a (N, C, H, W) array)."""
        k, s = self.size, self.stride
        oh, ow = (x_shape[2] - k) // s + 1, (x_shape[3] - k) // s + 1
        rows, cols = s * (oh - 1) + 1, s * (ow - 1) + 1
        offsets = [(i, j) for i in range(k) for j in range(k)]
        return offsets, oh, ow, lambda a, i, j: a[:, :, i : i + rows : s, j : j + cols : s]

    def _grad_buffer(self, x: np.ndarray) -> tuple[np.ndarray, bool]:
        """dL/dx in the memory order of x, zero where no window reaches; and whether windows overlap."""
        k, s = self.size, self.stride
        if s != k:
            return np.zeros_like(x), s < k
        grad = np.empty_like(x)  # windows tile the image: only the rows and columns past the last window need zeros
        _, oh, ow, _ = self._windows(x.shape)
        grad[:, :, oh * k :] = 0.0
        grad[:, :, :, ow * k :] = 0.0
        return grad, False


class MaxPool2D(Pool2D):
    """y = max over each k x k window (stride s); gradient to the first argmax of each window."""

    type_name = "max_pool2d"

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        offsets, _, _, window = self._windows(x.shape)
        out = window(x, 0, 0).copy(order="K")
        index_type = np.uint8 if len(offsets) <= 256 else np.int32
        argmax = np.zeros_like(out, dtype=index_type) if training else None  # the winning offset of each window
        better = np.empty_like(out, dtype=bool) if training else None
        winner = np.empty_like(out, dtype=index_type) if training else None
        for index, (i, j) in enumerate(offsets[1:], start=1):
            candidate = window(x, i, j)
            if training:  # argmax = index where candidate > out (strictly: a tie keeps the earlier offset);
                np.greater(candidate, out, out=better)  # index exceeds every earlier winner, so a maximum
                np.multiply(better, index_type(index), out=winner)  # does it without a branchy masked copy
                np.maximum(argmax, winner, out=argmax)
            np.maximum(out, candidate, out=out)  # NaN propagates, as in PyTorch
        if training:
            self._x, self._argmax = x, argmax
        return out

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        offsets, _, _, window = self._windows(self._x.shape)
        grad_out = same_layout(grad_out, self._argmax)
        grad, overlapping = self._grad_buffer(self._x)
        hit = np.empty_like(self._argmax, dtype=bool)
        for index, (i, j) in enumerate(offsets):
            np.equal(self._argmax, index, out=hit)
            if overlapping:
                window(grad, i, j)[...] += grad_out * hit
            else:  # each pixel in one window at most: write, do not add
                np.multiply(grad_out, hit, out=window(grad, i, j))
        return grad


class AvgPool2D(Pool2D):
    """y = mean over each k x k window (stride s); dL/dx = g / k^2 over every window."""

    type_name = "avg_pool2d"

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        offsets, _, _, window = self._windows(x.shape)
        out = window(x, 0, 0).copy(order="K")
        for i, j in offsets[1:]:
            out += window(x, i, j)
        out *= 1.0 / self.size**2
        self._x = x
        return out

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        offsets, _, _, window = self._windows(self._x.shape)
        grad, overlapping = self._grad_buffer(self._x)
        share = same_layout(grad_out, self._x) * (1.0 / self.size**2)
        for i, j in offsets:
            if overlapping:
                window(grad, i, j)[...] += share
            else:
                window(grad, i, j)[...] = share
        return grad


class GlobalAvgPool2D(Layer):
    """y[n, c] = mean_{h, w} x[n, c, h, w]: (C, H, W) -> (C,); dL/dx = g / (H W) at every pixel."""

    type_name = "global_avg_pool2d"
    prefix = "gap"
    input_ndim = 3

    @classmethod
    def from_config(cls, name, config, input_shape, ctx):
        needs_images(input_shape, ctx, "a global_avg_pool2d layer")
        layer = cls(name)
        layer.item = {}
        return layer, (int(input_shape[0]),)

    def describe(self) -> str:
        return "global avgpool"

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        self._x_shape = x.shape
        return x.mean(axis=(2, 3))

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        height, width = self._x_shape[2:]
        grad = np.empty(self._x_shape, grad_out.dtype)
        grad[...] = (grad_out * (1.0 / (height * width)))[:, :, None, None]
        return grad
