"""One gradient-norm computation per step, shared by the monitor, the clipper and the NaN guard.

`gradient_norms(trainer)` returns the trainer's `GradientNorms` (one per
trainer, created on first use). In `on_after_backward` whichever hook comes
first calls `compute(trainer)`: one `np.dot(v, v)` per gradient array on a
raveled view (no temporaries) gives the squared norms; the others get the
cached values for the same step. The clipper then writes the post-clip global
norm and whether it fired (`set_clipped`), which the monitor records.

A norm is finite iff every element is, so NaN and Inf are found without an
`np.isfinite` scan on healthy steps; only a non-finite norm triggers the scan
that counts them. A float32 dot overflowing on large but finite values is
recomputed with scaling, so `sq` is finite exactly when the gradient is.
"""

from __future__ import annotations

import math
import weakref

import numpy as np


def squared_norm(v: np.ndarray) -> tuple[float, int]:
    """(||v||^2, number of NaN/Inf elements) of a 1D array; one dot on the healthy path."""
    sq = float(np.dot(v, v))
    if math.isfinite(sq):
        return sq, 0
    bad = int(v.size - np.count_nonzero(np.isfinite(v)))
    if bad:
        return sq, bad
    scale = float(np.abs(v).max())  # finite elements whose squares overflow float32
    scaled = v / np.float32(scale) if v.dtype == np.float32 else v / scale
    return scale * scale * float(np.dot(scaled, scaled)), 0


class GradientNorms:
    """Per-parameter squared gradient norms of the current step, in `model.gradients()` order.

    After `compute`: `sq[i]` and `nonfinite[i]` per gradient array `names[i]`,
    `global_norm` (all parameters, before clipping), `clipped_norm` (after
    clipping; equals `global_norm` until a clipper says otherwise) and `clipped`.
    """

    def __init__(self, model) -> None:
        grads = model.gradients()
        self.model = model
        self.names = list(grads)
        self.arrays = list(grads.values())
        self.vectors = [g.reshape(-1) for g in self.arrays]  # views: the layers fill grads in place
        self.index = {name: i for i, name in enumerate(self.names)}
        self.sq = [0.0] * len(self.names)
        self._no_nonfinite = [0] * len(self.names)
        self.nonfinite = self._no_nonfinite
        self.global_norm = self.clipped_norm = math.nan
        self.clipped = False
        self._token: object = None

    def compute(self, trainer) -> float:
        """Squared norms of this step's gradients (cached per forward pass); returns the global norm."""
        token = trainer.output
        if token is not None and token is self._token:
            return self.global_norm
        dot = np.dot
        sq = [float(dot(v, v)) for v in self.vectors]
        total = sum(sq)
        if math.isfinite(total):
            self.nonfinite = self._no_nonfinite
        else:  # count the culprits; recompute norms that overflowed on finite values
            pairs = [squared_norm(v) for v in self.vectors]
            sq = [s for s, _ in pairs]
            self.nonfinite = [bad for _, bad in pairs]
            total = sum(sq)
        self.sq = sq
        self.global_norm = self.clipped_norm = math.sqrt(total)
        self.clipped = False
        self._token = token
        return self.global_norm

    def set_clipped(self, clipped_norm: float, clipped: bool) -> None:
        self.clipped_norm, self.clipped = float(clipped_norm), bool(clipped)


_SHARED: "weakref.WeakKeyDictionary[object, GradientNorms]" = weakref.WeakKeyDictionary()


def gradient_norms(trainer) -> GradientNorms:
    """The `GradientNorms` shared by all hooks of `trainer` (rebuilt if the model changed)."""
    norms = _SHARED.get(trainer)
    if norms is None or norms.model is not trainer.model:
        norms = _SHARED[trainer] = GradientNorms(trainer.model)
    return norms


CHUNK = 1 << 16  # elements per block (256 KiB of float32): a block stays in L2 cache between two passes


def copy_squared_norm(destination: np.ndarray, source: np.ndarray) -> float:
    """Copy 1D `source` into `destination` and return ||source||^2, block by block so the
    dot reads each block from cache right after the copy (one trip through memory, not two)."""
    if source.size <= CHUNK:
        np.copyto(destination, source)
        return float(np.dot(destination, destination))
    total, dot, copyto = 0.0, np.dot, np.copyto
    for start in range(0, source.size, CHUNK):
        block = destination[start : start + CHUNK]
        copyto(block, source[start : start + CHUNK])
        total += float(dot(block, block))
    return total


def squared_distance(a: np.ndarray, b: np.ndarray, scratch: np.ndarray) -> float:
    """||a - b||^2 of 1D arrays through a cache-sized `scratch` (at least min(a.size, CHUNK) long)."""
    if a.size <= CHUNK:
        d = scratch[: a.size]
        np.subtract(a, b, out=d)
        return float(np.dot(d, d))
    total, dot, subtract = 0.0, np.dot, np.subtract
    for start in range(0, a.size, CHUNK):
        stop = min(start + CHUNK, a.size)
        d = scratch[: stop - start]
        subtract(a[start:stop], b[start:stop], out=d)
        total += float(dot(d, d))
    return total
