"""Concrete things to try, phrased as spec overrides (`--set key=value`) where one applies."""

from __future__ import annotations

import math
import re

from workbench.diagnose.context import RunContext
from workbench.diagnose.thresholds import UPDATE_RATIO_TARGET


def fmt(x: float) -> str:
    """A short number for messages: 3 significant digits, scientific when small or large."""
    if x is None or not math.isfinite(x):
        return "nan"
    if x == 0:
        return "0"
    return f"{x:.3g}" if 1e-3 <= abs(x) < 1e5 else f"{x:.2e}"


MAX_LOWER, MAX_RAISE = 100.0, 1e4
# Suggested learning-rate factors stop at two decades down (a rate far too high also inflates the
# update ratio through the instability it causes: the weights blow up, so the ratio overstates it)
# and four decades up (a rate far too low scales the updates exactly).


def decade_factor(ratio: float, cap: float = MAX_LOWER) -> float:
    """A power of ten (10 up to `cap`) that brings an update ratio `ratio` times off target back near it."""
    if not math.isfinite(ratio) or ratio <= 0:
        return 10.0
    return float(min(cap, 10 ** max(1, round(math.log10(ratio)))))


def layer_span(layers: list[str]) -> str:
    """Layer names with runs of consecutive numbers folded: `dense1-dense7, dense9`."""
    parts: list[str] = []
    run: list[tuple[str, int, str]] = []

    def flush() -> None:
        if run:
            parts.append(run[0][2] if len(run) == 1 else f"{run[0][2]}, {run[1][2]}" if len(run) == 2
                         else f"{run[0][2]}-{run[-1][2]}")
            run.clear()

    for name in layers:
        match = re.fullmatch(r"(.*?)(\d+)", name)
        if match is None:
            flush()
            parts.append(name)
            continue
        stem, number = match.group(1), int(match.group(2))
        if run and (stem != run[-1][0] or number != run[-1][1] + 1):
            flush()
        run.append((stem, number, name))
    flush()
    return ", ".join(parts) if parts else "-"


RECOMMENDED_INIT = {"relu": ("he_normal", "he_uniform"), "squashing": ("xavier_normal", "xavier_uniform"),
                    "linear": ("lecun_normal", "xavier_normal", "xavier_uniform")}


def init_advice(ctx: RunContext, why: str = "") -> str | None:
    """The variance-preserving initializer for the run's activation; None when the run already uses it."""
    current = ctx.get("model.init")
    scale = ctx.get("model.init_scale")
    family = "relu" if ctx.relu_like or not ctx.activation else "squashing" if ctx.squashing else "linear"
    why = f": {why}" if why else ""
    if current in RECOMMENDED_INIT[family]:
        if scale not in (None, 1, 1.0):
            return f"--set model.init_scale=1 (now {fmt(scale)}): {current} is variance-preserving only at gain 1{why}"
        return None
    now = ""
    if current:
        shown = f", init_scale {fmt(scale)}" if current in ("normal", "uniform") and scale else ""
        now = f' (now "{current}"{shown})'
    if family == "relu":
        return (f"--set model.init=he_normal{now}: He initialization, std sqrt(2/fan_in), keeps the activation "
                f"variance constant through {ctx.activation or 'relu'} layers (He et al. 2015){why}")
    if family == "squashing":
        return (f"--set model.init=xavier_normal{now}: normalized (Xavier) initialization, "
                f"var 2/(fan_in+fan_out), keeps {ctx.activation} activations and gradients at one scale "
                f"through depth (Glorot & Bengio 2010){why}")
    return f"--set model.init=lecun_normal{now}: std sqrt(1/fan_in) keeps a linear stack's variance constant{why}"


def batch_norm_advice(ctx: RunContext) -> str | None:
    if ctx.batch_norm:
        return None
    if ctx.layer_list:
        return ('add {type = "batch_norm"} after each dense or conv2d item of model.layers (or layer_norm): '
                "normalization re-centres and re-scales every hidden layer's input, so the scale no longer "
                "compounds with depth (Ioffe & Szegedy 2015; Ba et al. 2016)")
    return ("--set model.batch_norm=true: batch normalization re-centres and re-scales every hidden layer's "
            "input, so the scale no longer compounds with depth (Ioffe & Szegedy 2015)")


def relu_advice(ctx: RunContext) -> str | None:
    if not ctx.squashing:
        return None
    how = ('make the activation items of model.layers {type = "relu"} and --set model.init=he_normal'
           if ctx.layer_list else "--set model.activation=relu --set model.init=he_normal")
    return (f"{how}: ReLU's slope is 1 wherever it is active, "
            f"so the gradient does not shrink by {ctx.activation}'s slope (at most "
            f"{'0.25' if ctx.activation == 'sigmoid' else '1'}, far less when saturated) at every layer")


def leaky_advice(ctx: RunContext) -> str | None:
    if ctx.activation != "relu":
        return None
    how = 'make the relu items of model.layers {type = "leaky_relu"}' if ctx.layer_list else \
        "--set model.activation=leaky_relu"
    return (f"{how} (or elu): a small slope for negative inputs keeps a gradient "
            "flowing into units that a large update pushed below zero, so they can recover")


def clip_advice(ctx: RunContext, max_norm: float, basis: str) -> str:
    mode = ctx.get("clipping.mode")
    now = ""
    if mode:
        now = f' (now "{mode}"' + (f", max_norm {fmt(ctx.get('clipping.max_norm'))})" if mode != "none" else ")")
    return (f"--set clipping.mode=global_norm --set clipping.max_norm={fmt(max_norm)}{now}: {basis} "
            f"(threshold from the average norm, Pascanu et al. 2013)")


def lr_advice(ctx: RunContext, factor: float, lower: bool, basis: str) -> str:
    """Scale the learning rate by `factor` (down when `lower`), naming the new value when the spec is known."""
    lr = ctx.lr
    verb = "lower" if lower else "raise"
    new = fmt(lr / factor if lower else lr * factor) if lr else ""
    target = f" to optimizer.lr={new} (--set optimizer.lr={new})" if lr else ""
    return f"{verb} the learning rate {fmt(factor)}x{target}: {basis}"


def update_ratio_basis(ratio: float) -> str:
    off = (f"{fmt(ratio / UPDATE_RATIO_TARGET)}x" if ratio >= UPDATE_RATIO_TARGET
           else f"1/{fmt(UPDATE_RATIO_TARGET / ratio)} of")
    return (f"the updates are {fmt(ratio)} of the weights per step, {off} the ~{fmt(UPDATE_RATIO_TARGET)} "
            f"that trains well (CS231n)")
