"""Gradient clipping as a hook: edits the gradients in place before the update, so it composes
with every optimizer (like `optax.chain(clip_by_global_norm(1.0), adam(1e-3))`).

Modes (the registry `CLIPPING_MODES`):

    global_norm   g <- g * min(max_norm / (||g||_all + 1e-6), 1) over all parameters jointly
                  (PyTorch `clip_grad_norm_`); fires when the factor is below 1
    layer_norm    the same per layer: each layer's parameters jointly (a dense layer's W and b,
                  a batch norm's gamma and beta), each layer scaled on its own
    value         g <- clip(g, -max_value, max_value) element-wise; fires when any element is out

It runs at `on_after_backward` after the monitor has recorded the pre-clip norms
and reuses them (`GradientNorms`: one norm computation per step); it writes
the post-clip global norm and whether it fired back there for the record.
A non-finite gradient norm is left alone (scaling by NaN would spread it to
every parameter); the NaN guard stops such a run.
"""

from __future__ import annotations

import math

import numpy as np

from workbench.errors import UserError
from workbench.monitor.norms import GradientNorms, gradient_norms
from workbench.training.hooks import Hook, hook_priority

EPS = 1e-6  # added to the norm before dividing, as torch.nn.utils.clip_grad_norm_


def clip_by_global_norm(norms: GradientNorms, max_norm: float) -> tuple[float, bool]:
    """Scale all gradients by min(max_norm / (norm + eps), 1); returns (norm after, fired)."""
    total = norms.global_norm
    coef = max_norm / (total + EPS)
    if coef >= 1.0:
        return total, False
    for g in norms.arrays:
        g *= coef  # a python float: float32 stays float32
    return total * coef, True


def clip_by_layer_norm(norms: GradientNorms, max_norm: float, groups: list[list[int]]) -> tuple[float, bool]:
    """Scale each layer's gradients (its parameters jointly) by min(max_norm / (norm + eps), 1)."""
    sq, arrays = norms.sq, norms.arrays
    post_sq, fired = 0.0, False
    for group in groups:
        layer_sq = sum(sq[i] for i in group)
        coef = max_norm / (math.sqrt(layer_sq) + EPS)
        if coef < 1.0:
            for i in group:
                arrays[i] *= coef
            layer_sq *= coef * coef
            fired = True
        post_sq += layer_sq
    return math.sqrt(post_sq), fired


def clip_by_value(norms: GradientNorms, max_value: float) -> tuple[float, bool]:
    """Clip every gradient element into [-max_value, max_value] in place (only arrays that exceed it)."""
    post_sq, fired = 0.0, False
    for i, g in enumerate(norms.arrays):
        if g.size and (g.max() > max_value or g.min() < -max_value):
            np.clip(g, -max_value, max_value, out=g)
            v = norms.vectors[i]
            post_sq += float(np.dot(v, v))
            fired = True
        else:
            post_sq += norms.sq[i]
    return math.sqrt(post_sq), fired


CLIPPING_MODES = ("none", "global_norm", "layer_norm", "value")


class GradientClipping(Hook):
    """Clip gradients in place at `on_after_backward` (see the module docstring for the modes)."""

    priority = hook_priority("clipping")

    def __init__(self, mode: str = "global_norm", *, max_norm: float = 1.0, max_value: float = 1.0) -> None:
        if mode not in CLIPPING_MODES or mode == "none":
            allowed = ", ".join(m for m in CLIPPING_MODES if m != "none")
            raise UserError(f"unknown clipping mode {mode!r}; allowed: {allowed}")
        if not max_norm > 0.0:
            raise UserError(f"clipping max_norm must be positive, got {max_norm}")
        if not max_value > 0.0:
            raise UserError(f"clipping max_value must be positive, got {max_value}")
        self.mode, self.max_norm, self.max_value = mode, float(max_norm), float(max_value)
        self.steps = 0
        self.clipped_steps = 0

    @property
    def clip_fraction(self) -> float:
        """Fraction of all steps (not only recorded ones) where clipping fired."""
        return self.clipped_steps / self.steps if self.steps else math.nan

    def on_train_begin(self, trainer) -> None:
        self.norms = norms = gradient_norms(trainer)
        layers: dict[str, list[int]] = {}
        for i, name in enumerate(norms.names):
            layers.setdefault(name.rpartition(".")[0], []).append(i)
        self.groups = list(layers.values())

    def on_after_backward(self, trainer) -> None:
        norms = self.norms
        total = norms.compute(trainer)
        self.steps += 1
        if not math.isfinite(total):
            return
        if self.mode == "global_norm":
            post, fired = clip_by_global_norm(norms, self.max_norm)
        elif self.mode == "layer_norm":
            post, fired = clip_by_layer_norm(norms, self.max_norm, self.groups)
        else:
            post, fired = clip_by_value(norms, self.max_value)
        norms.set_clipped(post, fired)
        self.clipped_steps += fired
