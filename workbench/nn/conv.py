"""2-d convolution (cross-correlation, as every framework computes it) by im2col and one GEMM.

    y[n, f, a, b] = b_f + sum_{c, i, j} W[f, c, i, j] xp[n, c, s a + i, s b + j]

with xp the zero-padded input and s the stride (LeCun et al. 1989/1998; the
im2col + GEMM formulation of Chellapilla et al. 2006, "High performance
convolutional neural networks for document processing"). Write X for the matrix
of all k x k x C patches (one row per output pixel, im2col) and Wk for the kernel
as a (k k C, F) matrix: Y = X Wk + b. Backward, with G = dL/dY as (pixels, F):

    dL/dWk = X^T G,   dL/db = sum_rows(G),   dL/dX = G Wk^T,

and dL/dx is dL/dX folded back onto the image (col2im): each patch row adds its
k x k x C gradient onto the pixels it was copied from, overlapping patches
accumulating. With stride 1 that fold equals a convolution of G, zero-padded
by k - 1 - pad, with the kernel flipped and its F and C axes swapped
(Dumoulin & Visin 2016, "A guide to convolution arithmetic", sec. 4.1):

    dx[n, c, y, x] = sum_{f, i, j} W[f, c, k-1-i, k-1-j] Gq[n, f, y + i, x + j],

computed like the forward pass, im2col and one GEMM, which is faster in numpy
than the fold (k*k strided additions of short runs). Other strides fold, one
kernel offset at a time, each adding a strided slice of every patch at once.
The bias rides in the GEMMs: X carries a column of ones and Wk the row b, so
X^T G also gives dL/db. No loop runs over samples, pixels or channels.

Layout: arrays are (N, C, H, W) as far as anyone else can tell, but the output
is a transposed view of an (N, H, W, F) buffer (channels last in memory), which is
what the GEMM gives without a copy; element-wise layers keep that memory order
and the next convolution reads it back as (N, H, W, C) for free. Patches are
stored pixel-major (pixels, k k C), copied from one strided window view, when C
is large, and offset-major (k k C, pixels) when it is small (the first layer of
a gray image), where each of the k*k offsets copies whole image planes. The
patches, padded image and padded gradient are scratch buffers reused across
training steps; outputs and input gradients are fresh arrays. Evaluation
convolves large batches in chunks, so its patches stay under 64 MiB.

Padding: `"valid"` is none; an integer p pads p zeros on every side; `"same"` is
TensorFlow's rule (`tf.nn.conv2d`, padding="SAME"): the output has ceil(H / s)
rows, the total padding max((ceil(H/s) - 1) s + k - H, 0) splits with the extra
pixel at the bottom / right. With stride 1 this is PyTorch's `padding="same"`
(total k - 1, left (k-1)//2), so an odd kernel keeps H and W with (k-1)//2 on
each side, and an even one pads one more at the end.
"""

from __future__ import annotations

import json

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from workbench.constraints import Interval
from workbench.nn.build import shape_text
from workbench.nn.keys import Key, init_keys
from workbench.nn.layer import Layer

OFFSET_MAJOR_BELOW = 8  # channels: fewer than this and patches are stored offset-major (see module docstring)
EVAL_PATCH_BYTES = 64 * 2**20  # evaluation convolves batches in chunks whose patches fit in this


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow's SAME padding (before, after) for one axis: ceil(size/stride) outputs."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def padding_of(padding: int | str, size: int, kernel: int, stride: int) -> tuple[int, int]:
    if padding == "valid":
        return 0, 0
    if padding == "same":
        return same_padding(size, kernel, stride)
    return int(padding), int(padding)


def check_padding(padding: object, ctx) -> None:
    if isinstance(padding, str) and padding not in ("same", "valid"):
        raise ctx.fail(f'padding = "{padding}" is not a padding',
                       'use "same" (keep the size at stride 1), "valid" (no padding) or a number of pixels >= 0')
    if isinstance(padding, int) and padding < 0:
        raise ctx.fail(f"padding = {padding} is negative",
                       'use "same", "valid" or a number of pixels >= 0 added on every side')


class Conv2D(Layer):
    """F filters of size k x k x C over (C, H, W) images, stride s, zero padding; see the module docstring."""

    type_name = "conv2d"
    prefix = "conv"
    keys = (
        Key("filters", int, constraint=Interval(1, 100_000), doc="output channels", example=16),
        Key("kernel", int, constraint=Interval(1, 1_000), doc="side of the square kernel", example=3),
        Key("stride", int, 1, Interval(1, 1_000), "step between kernel positions"),
        Key("padding", "int_or_str", "same", doc='"same" (TensorFlow rule), "valid" (none) or pixels per side'),
        Key("bias", bool, True, doc="add a learned bias per filter"),
        *init_keys(),
    )
    weights = ("W",)
    unit_axis = 1
    input_ndim = 3

    def __init__(self, name: str, weight: np.ndarray, bias: np.ndarray | None, stride: int = 1,
                 padding: int | str = "same", input_grad: bool = True) -> None:
        super().__init__(name)
        self.params = {"W": weight} if bias is None else {"W": weight, "b": bias}
        self.grads = {key: np.zeros_like(value) for key, value in self.params.items()}
        self.stride = int(stride)
        self.padding = padding
        self.input_grad = input_grad
        self._buffers: dict[str, np.ndarray] = {}  # scratch reused across steps (never handed out)

    @classmethod
    def from_config(cls, name, config, input_shape, ctx):
        if len(input_shape) != 3:
            raise ctx.fail(f"a conv2d layer needs images (channels x height x width) but gets {shape_text(input_shape)}",
                           "use image data: digits or mnist come as 1x8x8 / 1x28x28 images when the first layer is "
                           "a convolution, or an NPZ whose X has shape (N, C, H, W)")
        check_padding(config["padding"], ctx)
        channels, height, width = (int(s) for s in input_shape)
        k, s = config["kernel"], config["stride"]
        (top, bottom), (left, right) = (padding_of(config["padding"], n, k, s) for n in (height, width))
        if k > height + top + bottom or k > width + left + right:
            raise ctx.fail(f"a {k}x{k} kernel is larger than the {height + top + bottom}x{width + left + right} "
                           f"padded image ({shape_text(input_shape)} input, padding = {json.dumps(config['padding'])})",
                           'use a smaller kernel, padding = "same", or fewer pooling layers before it')
        weight = ctx.weight(config, (config["filters"], channels, k, k))
        bias = ctx.zeros(config["filters"]) if config["bias"] else None
        layer = cls(name, weight, bias, s, config["padding"])
        layer.item = {key: value for key, value in config.items() if key != "type"}
        out = (config["filters"], (height + top + bottom - k) // s + 1, (width + left + right - k) // s + 1)
        return layer, out

    def describe(self) -> str:
        f, _, k, _ = self.params["W"].shape
        return f"conv {f} {k}x{k}" + (f" /{self.stride}" if self.stride > 1 else "")

    # -- geometry and scratch ------------------------------------------------------------------
    def _geometry(self, height: int, width: int):
        k, s = self.params["W"].shape[2], self.stride
        (top, bottom), (left, right) = (padding_of(self.padding, n, k, s) for n in (height, width))
        out_h, out_w = (height + top + bottom - k) // s + 1, (width + left + right - k) // s + 1
        return k, s, top, left, height + top + bottom, width + left + right, out_h, out_w

    def _buffer(self, key: str, shape: tuple[int, ...], dtype, cache: bool, ones: tuple | None = None) -> np.ndarray:
        """Zeros (and ones at `ones`) when made; reused across training steps when `cache`, else fresh."""
        buffer = self._buffers.get(key) if cache else None
        if buffer is None or buffer.shape != shape or buffer.dtype != dtype:
            buffer = np.zeros(shape, dtype)
            if ones is not None:
                buffer[ones] = 1.0
            if cache:
                self._buffers[key] = buffer
        return buffer

    def _patches(self, x: np.ndarray, cache: bool) -> np.ndarray:
        """im2col of x (N, C, H, W), plus a column of ones when the layer has a bias (it meets b in the GEMM):
        (N ho wo, k k C [+1]) pixel-major, or its transpose (k k C [+1], N ho wo) offset-major."""
        n, c, height, width = x.shape
        k, s, top, left, hp, wp, oh, ow = self._geometry(height, width)
        image = x.transpose(0, 2, 3, 1)  # (N, H, W, C): a free view when x is channels-last in memory
        if hp != height or wp != width:
            padded = self._buffer("padded", (n, hp, wp, c), x.dtype, cache)  # its borders stay zero
            padded[:, top : top + height, left : left + width] = image
            image = padded
        size, extra = k * k * c, int("b" in self.params)
        if c < OFFSET_MAJOR_BELOW:  # each offset copies whole image planes
            patches = self._buffer("patches", (size + extra, n * oh * ow), x.dtype, cache, (slice(size, None),))
            planes = patches[:size].reshape(k, k, c, n, oh, ow)
            rows, cols = s * (oh - 1) + 1, s * (ow - 1) + 1
            for i in range(k):
                for j in range(k):
                    planes[i, j] = image[:, i : i + rows : s, j : j + cols : s].transpose(3, 0, 1, 2)
            return patches
        patches = self._buffer("patches", (n * oh * ow, size + extra), x.dtype, cache, (slice(None), slice(size, None)))
        windows = sliding_window_view(image, (k, k), axis=(1, 2))[:, ::s, ::s]  # (N, ho, wo, C, k, k)
        patches[:, :size].reshape(n, oh, ow, k, k, c)[...] = windows.transpose(0, 1, 2, 4, 5, 3)
        return patches

    def _kernel_matrix(self) -> np.ndarray:
        """W (F, C, k, k) as the (k k C, F) matrix Wk, with b as one more row when the layer has a bias."""
        weight = self.params["W"]
        kernel = weight.transpose(2, 3, 1, 0).reshape(-1, weight.shape[0])
        return np.concatenate([kernel, self.params["b"][None]]) if "b" in self.params else kernel

    # -- computation ---------------------------------------------------------------------------
    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        n, c, height, width = x.shape
        *_, oh, ow = self._geometry(height, width)
        kernel = self._kernel_matrix()
        filters = kernel.shape[1]
        out = np.empty((n * oh * ow, filters), x.dtype)
        chunk = n if training else max(1, EVAL_PATCH_BYTES // max(1, oh * ow * kernel.shape[0] * x.itemsize))
        for start in range(0, n, chunk):  # one pass in training; bounded memory in evaluation
            patches = self._patches(x[start : start + chunk], cache=training)
            rows = slice(start * oh * ow, min(n, start + chunk) * oh * ow)
            np.matmul(patches.T if c < OFFSET_MAJOR_BELOW else patches, kernel, out=out[rows])
        # backward needs this batch's patches (after an evaluation forward too: attributions, fixed networks);
        # an evaluation batch convolved in several chunks keeps its input and rebuilds them if asked
        self._x_shape, self._patch_matrix = x.shape, patches if chunk >= n else None
        self._input = None if chunk >= n else x
        return out.reshape(n, oh, ow, filters).transpose(0, 3, 1, 2)

    def backward(self, grad_out: np.ndarray) -> np.ndarray | None:
        n, c, height, width = self._x_shape
        k, s, top, left, _, _, oh, ow = self._geometry(height, width)
        filters = grad_out.shape[1]
        grad = grad_out.transpose(0, 2, 3, 1).reshape(n * oh * ow, filters)  # G: a view when channels-last
        patches, size = self._patch_matrix, k * k * c
        if patches is None:
            patches = self._patches(self._input, cache=False)
        # X^T G, (k k C [+1], F), a contraction over every output pixel. Its longer side goes first (the GEMM's
        # rows): OpenBLAS splits rows among threads and hands the columns' packed panels between them, a wait
        # per panel, which on a busy machine made the wide-columns order 5-10x slower at 2 threads.
        patches_t = patches if c < OFFSET_MAJOR_BELOW else patches.T  # X^T, (k k C [+1], pixels)
        grad_kernel = patches_t @ grad if patches_t.shape[0] >= filters else (grad.T @ patches_t.T).T
        self.grads["W"][...] = grad_kernel[:size].reshape(k, k, c, filters).transpose(3, 2, 0, 1)
        if "b" in self.params:
            self.grads["b"][...] = grad_kernel[size]  # the ones column of X: sum_rows(G)
        if not self.input_grad:
            return None
        if s == 1:
            grad_image = self._input_grad_by_correlation(grad.reshape(n, oh, ow, filters), height, width, top, left)
        else:
            grad_image = self._input_grad_by_folding(grad, n, c, height, width)
        return grad_image.transpose(0, 3, 1, 2)

    def _input_grad_by_correlation(self, grad, height, width, top, left) -> np.ndarray:
        """Stride 1: dL/dx is the correlation of G, zero-padded by k - 1 - pad, with the kernel flipped and
        transposed (F <-> C): dx[y] = sum_i G[y + top - i] W[i] = sum_i' Gq[y + i'] W[k - 1 - i']. One im2col
        and one GEMM, as the forward pass, instead of a fold of overlapping patches."""
        n, oh, ow, filters = grad.shape
        weight = self.params["W"]
        k = weight.shape[2]
        padded = self._buffer("grad_padded", (n, height + k - 1, width + k - 1, filters), grad.dtype, True)
        shift_h, shift_w = k - 1 - top, k - 1 - left  # Gq[r] = G[r - shift]
        rows = slice(max(0, -shift_h), min(oh, height + k - 1 - shift_h))
        cols = slice(max(0, -shift_w), min(ow, width + k - 1 - shift_w))
        padded[:, rows.start + shift_h : rows.stop + shift_h, cols.start + shift_w : cols.stop + shift_w] = \
            grad[:, rows, cols]
        patches = self._buffer("grad_patches", (n, height, width, k, k, filters), grad.dtype, True)
        patches[...] = sliding_window_view(padded, (k, k), axis=(1, 2)).transpose(0, 1, 2, 4, 5, 3)
        flipped = weight[:, :, ::-1, ::-1].transpose(2, 3, 0, 1).reshape(k * k * filters, -1)  # (k k F, C)
        return (patches.reshape(n * height * width, -1) @ flipped).reshape(n, height, width, -1)

    def _input_grad_by_folding(self, grad, n, c, height, width) -> np.ndarray:
        """Any stride: dL/dX = G Wk^T, folded (col2im) onto the padded image, overlapping patches accumulating."""
        k, s, top, left, hp, wp, oh, ow = self._geometry(height, width)
        weight = self.params["W"]
        folded = (grad @ weight.reshape(weight.shape[0], -1)).reshape(n, oh, ow, c, k, k)  # rows of (C, k, k)
        grad_image = np.zeros((n, hp, wp, c), grad.dtype)
        rows, cols = s * (oh - 1) + 1, s * (ow - 1) + 1
        for i in range(k):  # one strided slice of every patch per kernel offset
            for j in range(k):
                grad_image[:, i : i + rows : s, j : j + cols : s] += folded[..., i, j]
        return grad_image[:, top : top + height, left : left + width]
