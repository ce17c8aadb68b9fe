"""Units that stopped passing signal: dead ReLUs, saturated tanh/sigmoid units, and an
initialization that shrinks or grows the activations with depth from the first step."""

from __future__ import annotations

import numpy as np

from workbench.diagnose.advice import (
    batch_norm_advice,
    decade_factor,
    fmt,
    init_advice,
    leaky_advice,
    lr_advice,
    relu_advice,
    update_ratio_basis,
)
from workbench.diagnose.engine import Evidence, Signals
from workbench.diagnose.findings import Finding
from workbench.diagnose.rules import Rule, layer_stat, median, nothing, per_layer, row_median
from workbench.diagnose.thresholds import (
    BAD_INIT_LAYER_FACTOR,
    BAD_INIT_STD_RATIO_HIGH,
    BAD_INIT_STD_RATIO_LOW,
    DEAD_FRACTION,
    LR_HIGH_UPDATE_RATIO,
    PERSISTENCE_WINDOW,
    SATURATED_FRACTION,
    UPDATE_RATIO_TARGET,
)


class BadInitialization(Rule):
    """At the first recorded step, a hidden layer's activation std is off the first's by a decade or more."""

    verdict = "bad_initialization"
    persistent = False  # a property of step 0

    def evaluate(self, record, start, stop, ctx, state) -> Signals:
        signals = nothing(stop - start, len(ctx.layers))
        std = layer_stat(record, "act_std", slice(0, 1))
        if start != 0 or std is None or len(ctx.hidden) < 2:
            return signals
        std = std[0, :-1]
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = std / std[0]
            depth = np.maximum(np.arange(len(std)), 1)
            systematic = np.abs(np.log(ratio) / depth) > np.log(BAD_INIT_LAYER_FACTOR)
            off = (ratio < BAD_INIT_STD_RATIO_LOW) | (ratio > BAD_INIT_STD_RATIO_HIGH)
        extreme = int(np.nanargmax(np.abs(np.log(np.where(ratio > 0, ratio, np.nan))))) if (ratio > 0).any() else 0
        constant = std == 0
        hit = bool(constant.any() or (off[extreme] and systematic[extreme]))
        if hit:
            signals.layers[0, :-1] = (constant | off) & np.isfinite(std)
        signals.hit[0] = hit
        signals.value[0] = ratio[-1]
        return signals

    def describe(self, ev: Evidence) -> Finding:
        ctx, record = ev.ctx, ev.record
        std = layer_stat(record, "act_std", slice(0, 1))[0, :-1]
        hidden = ctx.hidden
        ratio = float(ev.track.value[ev.first])
        per_layer_factor = ratio ** (1 / (len(hidden) - 1)) if ratio > 0 and np.isfinite(ratio) else float("nan")
        evidence = {
            "step": ev.first_step, "act_std": per_layer(hidden, std), "ratio_last_to_first": ratio,
            "per_layer_factor": per_layer_factor, "thresholds": [BAD_INIT_STD_RATIO_LOW, BAD_INIT_STD_RATIO_HIGH],
            "activation": ctx.activation, "init": ctx.get("model.init"), "init_scale": ctx.get("model.init_scale"),
        }
        init = ctx.get("model.init")
        if (std == 0).any():
            why = ("a layer's activations are constant (std 0): every unit computes the same thing, "
                   "so no gradient can tell them apart")
            constant = [h for h, s in zip(hidden, std, strict=True) if s == 0]
            summary = f"at step {ev.first_step} {ctx.span(constant)} output a constant (std 0)"
        else:
            direction = "shrinks" if ratio < 1 else "grows"
            why = f"the activation std {direction} {fmt(per_layer_factor)}x per layer"
            if ctx.relu_like and init in ("xavier_normal", "xavier_uniform", "standard", "lecun_normal"):
                why += f" ({init} gives ReLU layers half the variance they need: ReLU zeroes half the inputs)"
            summary = (f"at step {ev.first_step} the activation std {direction} from {fmt(std[0])} in {hidden[0]} to "
                       f"{fmt(std[-1])} in {hidden[-1]} ({fmt(ratio)}x over {len(hidden) - 1} layers, "
                       f"{fmt(per_layer_factor)}x per layer)")
        advice = [init_advice(ctx, why), batch_norm_advice(ctx)]
        return ev.finding(self.verdict, summary, ev.flagged_layers(0.0), evidence, advice)


class _UnitFraction(Rule):
    """A per-hidden-layer fraction (dead, saturated) at or above a threshold."""

    stat = ""
    threshold = 1.0

    def evaluate(self, record, start, stop, ctx, state) -> Signals:
        fraction = layer_stat(record, self.stat, slice(start, stop))
        if fraction is None or fraction.shape[1] < 2:
            return nothing(stop - start, len(ctx.layers))
        layers = np.zeros(fraction.shape, bool)
        with np.errstate(invalid="ignore"):
            layers[:, :-1] = fraction[:, :-1] >= self.threshold
        return Signals(layers.any(axis=1), np.nan_to_num(fraction[:, :-1], nan=0.0).max(axis=1), layers)

    def onset(self, ev: Evidence, layers: list[str]) -> dict:
        """When the units went: at the first recorded step already, or during training (and how fast
        the weights were moving just before)."""
        record, ctx = ev.record, ev.ctx
        columns = [ctx.layers.index(name) for name in layers]
        first = layer_stat(record, self.stat, slice(0, 1))
        at_start = bool(first is not None and len(columns) and (first[0, columns] >= self.threshold).any())
        row = ev.rows(np.array([ev.first_step]))
        row = int(row[0]) if len(row) else 0
        ratios = layer_stat(record, "update_ratio", slice(max(0, row - PERSISTENCE_WINDOW), row + 1))
        before = median(row_median(ratios)) if ratios is not None and len(ratios) else float("nan")
        return {"at_first_step": at_start, "update_ratio_before": before}


class DeadUnits(_UnitFraction):
    verdict = "dead_units"
    stat = "dead_frac"
    threshold = DEAD_FRACTION

    def describe(self, ev: Evidence) -> Finding:
        ctx = ev.ctx
        layers = ev.flagged_layers()
        rows = ev.rows()
        dead = layer_stat(ev.record, self.stat, rows)
        fractions = {name: median(dead[:, ctx.layers.index(name)]) for name in layers}
        onset = self.onset(ev, layers)
        evidence = {"dead_fraction": fractions, "threshold": DEAD_FRACTION, **onset}
        before = onset["update_ratio_before"]
        advice = []
        if not onset["at_first_step"] and before > LR_HIGH_UPDATE_RATIO:
            advice.append(lr_advice(ctx, decade_factor(before / UPDATE_RATIO_TARGET), True,
                                    update_ratio_basis(before) + " when the units died: one large step pushes a "
                                    "unit's pre-activation below zero for every input, and it never comes back"))
        advice += [leaky_advice(ctx), init_advice(ctx) if onset["at_first_step"] else None,
                   batch_norm_advice(ctx) if onset["at_first_step"] else None]
        when = "from the first step" if onset["at_first_step"] else f"from step {ev.first_step}"
        worst = max(fractions.values()) if fractions else float("nan")
        summary = (f"{ctx.span(layers)}: up to {fmt(100 * worst)}% of the units output 0 for every example "
                   f"(threshold {fmt(100 * DEAD_FRACTION)}%) {when}, on {fmt(100 * ev.share)}% of the steps")
        return ev.finding(self.verdict, summary, layers, evidence, advice)


class SaturatedUnits(_UnitFraction):
    verdict = "saturated_units"
    stat = "sat_frac"
    threshold = SATURATED_FRACTION

    def describe(self, ev: Evidence) -> Finding:
        ctx = ev.ctx
        layers = ev.flagged_layers()
        rows = ev.rows()
        sat = layer_stat(ev.record, self.stat, rows)
        fractions = {name: median(sat[:, ctx.layers.index(name)]) for name in layers}
        onset = self.onset(ev, layers)
        evidence = {"saturated_fraction": fractions, "threshold": SATURATED_FRACTION, **onset,
                    "activation": ctx.activation, "init": ctx.get("model.init"),
                    "init_scale": ctx.get("model.init_scale")}
        before = onset["update_ratio_before"]
        advice = [init_advice(ctx, f"pre-activations this large put {ctx.activation or 'the units'} on "
                              f"its flat tails, where the slope is under 6% of its peak")
                  if onset["at_first_step"] else None, batch_norm_advice(ctx), relu_advice(ctx)]
        if not onset["at_first_step"] and before > LR_HIGH_UPDATE_RATIO:
            factor = decade_factor(before / UPDATE_RATIO_TARGET)
            advice.insert(0, lr_advice(ctx, factor, True, update_ratio_basis(before)))
        worst = max(fractions.values()) if fractions else float("nan")
        summary = (f"{ctx.span(layers)}: {fmt(100 * worst)}% of the {ctx.activation or 'unit'} outputs sit on the flat "
                   f"tails (threshold {fmt(100 * SATURATED_FRACTION)}%) from step {ev.first_step}, on "
                   f"{fmt(100 * ev.share)}% of the steps; their gradient is nearly 0")
        return ev.finding(self.verdict, summary, layers, evidence, advice)
