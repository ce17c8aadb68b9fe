"""Divergence, exploding and vanishing gradients: how the gradient fares on its way back.

The depth profile is the backpropagated gradient ||dL/ds_i|| of each layer i with weights
relative to the output layer's ||dL/ds_L|| (Glorot & Bengio 2010): 1 everywhere when the
gradient keeps its scale, a thousandth at the input when it vanishes, hundreds when it explodes.

Residual networks: the verdict reads the main path (the columns at depth 0 of the record's
structure). A layer inside a residual body whose own gradient is small does not starve the
layers before it: the skip path carries the gradient around the body (He et al. 2016; Veit et
al. 2016), so a vanishing body behind a healthy skip path is named in the evidence
(`residual_bodies`), not called vanishing gradients of the network.
"""

from __future__ import annotations

import numpy as np

from workbench.diagnose.advice import (
    batch_norm_advice,
    clip_advice,
    decade_factor,
    fmt,
    init_advice,
    lr_advice,
    relu_advice,
    update_ratio_basis,
)
from workbench.diagnose.engine import Evidence, Signals
from workbench.diagnose.findings import Finding
from workbench.diagnose.rules import Rule, global_stat, layer_stat, median, nothing, per_layer, quantile, row_median
from workbench.diagnose.thresholds import (
    BAD_INIT_STD_RATIO_HIGH,
    CLIP_QUANTILE,
    CLIP_QUANTILE_HIGH,
    EXPLODING_RATIO,
    LR_DIVERGENCE_FACTOR,
    LR_HIGH_UPDATE_RATIO,
    UPDATE_RATIO_TARGET,
    VANISHING_RATIO,
)

MIN_HEALTHY_ROWS = 10  # fewer healthy rows than this: no clipping threshold is derived from them


def depth_profile(record, rows) -> np.ndarray | None:
    """rows x layers: ||dL/ds_i|| / ||dL/ds_output||."""
    backprop = layer_stat(record, "backprop_norm", rows)
    if backprop is None or backprop.shape[1] < 2:
        return None
    with np.errstate(divide="ignore", invalid="ignore"):
        return backprop / backprop[:, -1:]


def weight_gradient_ratio(record, rows) -> float:
    """Median ||dL/dW_first|| / ||dL/dW_last|| (AUTOTRAINER's own measure), for the evidence."""
    grads = layer_stat(record, "grad_norm", rows)
    if grads is None or grads.shape[1] < 2:
        return float("nan")
    with np.errstate(divide="ignore", invalid="ignore"):
        return median(grads[:, 0] / grads[:, -1])


def clipping_threshold(record, rows: np.ndarray) -> tuple[float, float]:
    """(median, 90th percentile) of the global gradient norm over `rows`; NaN when too few."""
    norms = global_stat(record, "grad_norm_global")
    if norms is None:
        return float("nan"), float("nan")
    norms = norms[rows]
    norms = norms[np.isfinite(norms)]
    if len(norms) < MIN_HEALTHY_ROWS:
        return float("nan"), float("nan")
    return quantile(norms, CLIP_QUANTILE), quantile(norms, CLIP_QUANTILE_HIGH)


class Divergence(Rule):
    """A NaN or Inf anywhere: in a layer's weights, gradients or activations, in the loss, in the gradient norm."""

    verdict = "divergence"
    persistent = False  # the first non-finite value is the verdict

    def evaluate(self, record, start, stop, ctx, state) -> Signals:
        n, rows = stop - start, slice(start, stop)
        nonfinite = layer_stat(record, "nonfinite", rows)
        layers = np.nan_to_num(nonfinite) > 0 if nonfinite is not None else np.zeros((n, len(ctx.layers)), bool)
        hit = layers.any(axis=1)
        loss = global_stat(record, "loss", rows)
        if loss is not None:
            hit |= ~np.isfinite(loss)
        norm = global_stat(record, "grad_norm_global", rows)
        if norm is not None:
            hit |= np.isinf(norm)
        value = np.nansum(nonfinite, axis=1) if nonfinite is not None else np.zeros(n)
        return Signals(hit, value, layers)

    def describe(self, ev: Evidence) -> Finding:
        record, ctx = ev.record, ev.ctx
        found = ev.rows(np.array([ev.first_step]))
        row = int(found[0]) if len(found) else len(record) - 1
        event = dict(record.meta.get("nan_event") or {})
        where = f" in the {event['pass']} pass at layer {event['layer']}" if event.get("layer") else ""
        # The healthy phase: the rows before the blow-up, less its run-up (the last quarter, at most 10 rows).
        healthy = np.arange(row - min(10, row // 4))
        clip_at, clip_high = clipping_threshold(record, healthy)
        loss = global_stat(record, "loss", slice(0, row))
        finite_loss = loss[np.isfinite(loss)] if loss is not None else np.zeros(0)
        norms = global_stat(record, "grad_norm_global", slice(0, row))
        finite_norms = norms[np.isfinite(norms)] if norms is not None else np.zeros(0)
        growth = finite_norms[-1] / clip_at if len(finite_norms) and clip_at > 0 else float("nan")
        ratios = layer_stat(record, "update_ratio", healthy) if len(healthy) >= MIN_HEALTHY_ROWS else None
        healthy_update = median(row_median(ratios)) if ratios is not None else float("nan")
        std = layer_stat(record, "act_std", slice(0, 1))
        grew_at_init = bool(std is not None and std.shape[1] > 2 and std[0, 0] > 0
                            and std[0, -2] / std[0, 0] > BAD_INIT_STD_RATIO_HIGH)
        evidence = {
            "step": ev.first_step, "epoch": ev.first_epoch, "origin": event or None,
            "nonfinite_values": float(ev.track.value[ev.first]),
            "last_finite_loss": float(finite_loss[-1]) if len(finite_loss) else None,
            "grad_norm_last_finite": float(finite_norms[-1]) if len(finite_norms) else None,
            "grad_norm_growth": growth, "update_ratio_healthy": healthy_update,
            "suggested_max_norm": clip_at, "grad_norm_p90_healthy": clip_high,
            "activations_grew_with_depth_at_init": grew_at_init,
        }
        advice = [init_advice(ctx, "the activations already grew with depth at the first step, "
                              "so the first updates were huge") if grew_at_init else None]
        if healthy_update > LR_HIGH_UPDATE_RATIO:
            advice.append(lr_advice(ctx, decade_factor(healthy_update / UPDATE_RATIO_TARGET), True,
                                    update_ratio_basis(healthy_update) + " before it diverged"))
        else:
            advice.append(lr_advice(ctx, LR_DIVERGENCE_FACTOR, True, "a step too large for the curvature "
                                    "throws the weights where the loss overflows"))
        if np.isfinite(clip_at):
            advice.append(clip_advice(ctx, clip_at, f"the median global gradient norm before the blow-up "
                                      f"(90th percentile {fmt(clip_high)})"))
        grown = (f"; the global gradient norm had grown {fmt(growth)}x over its healthy median"
                 if np.isfinite(growth) else "")
        summary = f"non-finite values at step {ev.first_step} (epoch {ev.first_epoch}){where}{grown}"
        layers = [event["layer"]] if event.get("layer") in ctx.layers else ev.flagged_layers()
        return ev.finding(self.verdict, summary, layers, evidence, advice)


class _GradientFlow(Rule):
    """Shared by exploding and vanishing: the depth profile against a threshold."""

    threshold = 1.0

    def beyond(self, ratio: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def evaluate(self, record, start, stop, ctx, state) -> Signals:
        profile = depth_profile(record, slice(start, stop))
        if profile is None:
            return nothing(stop - start, len(ctx.layers))
        with np.errstate(invalid="ignore"):
            layers = self.beyond(profile) & np.isfinite(profile)
        layers[:, -1] = False
        trunk = ctx.trunk
        off_trunk = np.ones(layers.shape[1], bool)
        off_trunk[trunk] = False
        layers[:, off_trunk] = False  # bodies behind a skip path: evidence, not the verdict
        first = trunk[0]
        return Signals(layers[:, first].copy(), profile[:, first], layers)

    def evidence(self, ev: Evidence) -> tuple[dict, np.ndarray, float]:
        record, rows = ev.record, ev.rows()
        profile = depth_profile(record, rows)
        ratio = median(ev.values())
        healthy = ev.rows(ev.track.steps[~ev.track.hit])
        clip_at, clip_high = clipping_threshold(record, healthy)
        evidence = {
            "ratio_first_to_output": ratio, "threshold": self.threshold,
            "profile": per_layer(ev.ctx.layers, profile) if profile is not None else {},
            "residual_bodies": self.bodies(ev.ctx, profile),
            "weight_gradient_ratio": weight_gradient_ratio(record, rows),
            "grad_norm_global_median": median(global_stat(record, "grad_norm_global", rows)),
            "suggested_max_norm": clip_at, "grad_norm_p90_healthy": clip_high,
        }
        ratios = layer_stat(record, "update_ratio", rows)
        if ratios is not None:
            evidence["update_ratio"] = {"first": median(ratios[:, 0]), "output": median(ratios[:, -1])}
        return evidence, rows, ratio


    def bodies(self, ctx, profile) -> dict:
        """Layers inside residual bodies beyond the threshold, with their median ratio (skip paths carry around them)."""
        if profile is None:
            return {}
        trunk = set(ctx.trunk)
        out = {}
        for j, name in enumerate(ctx.layers):
            if j in trunk:
                continue
            value = median(profile[:, j])
            if np.isfinite(value) and bool(self.beyond(np.array([value]))[0]):
                out[name] = value
        return out


class ExplodingGradients(_GradientFlow):
    verdict = "exploding_gradients"
    threshold = EXPLODING_RATIO

    def beyond(self, ratio):
        return ratio > EXPLODING_RATIO

    def describe(self, ev: Evidence) -> Finding:
        ctx = ev.ctx
        evidence, rows, ratio = self.evidence(ev)
        layers = ev.flagged_layers()
        clip_at = evidence["suggested_max_norm"]
        basis = (f"the median global gradient norm of the healthy steps "
                 f"(90th percentile {fmt(evidence['grad_norm_p90_healthy'])})")
        if not np.isfinite(clip_at):
            clip_at = evidence["grad_norm_global_median"] / ratio if ratio > 0 else float("nan")
            basis = "the median global gradient norm divided by the growth through depth (there is no healthy phase)"
        clipped = global_stat(ev.record, "clipped", rows)
        clip_note = None
        if ctx.get("clipping.mode") not in (None, "none") and clipped is not None:
            fired = float(np.nanmean(clipped)) if len(clipped) else float("nan")
            evidence["clip_fraction"] = fired
            clip_note = (f"clipping is on and fired on {fmt(100 * fired)}% of these steps: it caps the step size, "
                         f"not the growth through depth")
        update = evidence.get("update_ratio", {})
        typical = median(row_median(layer_stat(ev.record, "update_ratio", rows))) if update else float("nan")
        advice = [init_advice(ctx, f"here each layer multiplies the gradient by about "
                              f"{fmt(ratio ** (1 / max(1, len(ctx.layers) - 1)))}"), batch_norm_advice(ctx), clip_note,
                  clip_advice(ctx, clip_at, basis) if np.isfinite(clip_at) and not clip_note else None]
        if typical > LR_HIGH_UPDATE_RATIO:
            factor = decade_factor(typical / UPDATE_RATIO_TARGET)
            advice.insert(0, lr_advice(ctx, factor, True, update_ratio_basis(typical)))
        summary = (f"the gradient grows {fmt(ratio)}x from the output back to {ctx.layers[ctx.trunk[0]]} "
                   f"(threshold {fmt(EXPLODING_RATIO)}) on {fmt(100 * ev.share)}% of the steps "
                   f"from step {ev.first_step}")
        return ev.finding(self.verdict, summary, layers, evidence, advice)


class VanishingGradients(_GradientFlow):
    verdict = "vanishing_gradients"
    threshold = VANISHING_RATIO

    def beyond(self, ratio):
        return ratio < VANISHING_RATIO

    def describe(self, ev: Evidence) -> Finding:
        ctx = ev.ctx
        evidence, rows, ratio = self.evidence(ev)
        layers = ev.flagged_layers()
        dead = layer_stat(ev.record, "dead_frac", rows)
        note = None
        if dead is not None and ratio == 0:
            note = "the gradient is exactly 0: dead ReLU units pass none (see dead_units)"
        advice = [note, relu_advice(ctx), init_advice(ctx), batch_norm_advice(ctx),
                  f"or fewer layers: {len(ctx.layers) - 1} hidden layers multiply the gradient by "
                  f"{fmt(ratio)} in all" if len(ctx.layers) > 4 else None]
        summary = (f"the gradient reaching {ctx.layers[ctx.trunk[0]]} is {fmt(ratio)} of the output's "
                   f"(threshold {fmt(VANISHING_RATIO)}) on {fmt(100 * ev.share)}% of the steps "
                   f"from step {ev.first_step}; "
                   f"{ctx.span(layers)} barely learn")
        return ev.finding(self.verdict, summary, layers, evidence, advice)
