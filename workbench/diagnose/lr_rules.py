"""The learning rate, read from the size of the updates and what the loss does meanwhile.

The update ratio ||W_{t+1} - W_t|| / ||W_t|| is the learning rate as the weights feel it,
whatever the optimizer: about 1e-3 trains well (CS231n). A ratio far above while the loss
stops falling says "too high"; far below while the loss stays where it started, "too low".
"""

from __future__ import annotations

import numpy as np

from workbench.diagnose.advice import MAX_RAISE, decade_factor, fmt, lr_advice, update_ratio_basis
from workbench.diagnose.engine import Evidence, Signals
from workbench.diagnose.findings import Finding
from workbench.diagnose.rules import (
    Rule,
    global_stat,
    layer_stat,
    loss_trend,
    median,
    nothing,
    per_layer,
    row_max,
    row_median,
)
from workbench.diagnose.thresholds import (
    INITIAL_LOSS_ROWS,
    LR_HIGH_MIN_IMPROVEMENT,
    LR_HIGH_UPDATE_RATIO,
    LR_LOW_MAX_IMPROVEMENT,
    LR_LOW_STILL_AT_START,
    LR_LOW_UPDATE_RATIO,
    LR_SCHEDULE_FLOOR,
    UPDATE_RATIO_TARGET,
)


def loss_evidence(record, rows: np.ndarray) -> dict:
    loss = global_stat(record, "loss")
    if loss is None:
        return {}
    first = loss[:INITIAL_LOSS_ROWS]
    return {"loss_at_start": median(first), "loss_while_flagged": median(loss[rows]),
            "loss_at_end": median(loss[-INITIAL_LOSS_ROWS:])}


class LearningRateTooHigh(Rule):
    """Median update ratio over layers > 1e-2 while the loss does not fall across the trailing window."""

    verdict = "lr_too_high"

    def evaluate(self, record, start, stop, ctx, state) -> Signals:
        ratios = layer_stat(record, "update_ratio", slice(start, stop))
        if ratios is None:
            return nothing(stop - start, len(ctx.layers))
        typical = row_median(ratios)
        improvement, _ = loss_trend(record, start, stop)
        with np.errstate(invalid="ignore"):
            hit = (typical > LR_HIGH_UPDATE_RATIO) & (improvement < LR_HIGH_MIN_IMPROVEMENT)
            layers = ratios > LR_HIGH_UPDATE_RATIO
        return Signals(hit, typical, layers & hit[:, None])

    def describe(self, ev: Evidence) -> Finding:
        ctx, rows = ev.ctx, ev.rows()
        ratio = median(ev.values())
        improvement, _ = loss_trend(ev.record, 0, len(ev.record))
        evidence = {
            "update_ratio_median": ratio, "threshold": LR_HIGH_UPDATE_RATIO, "target": UPDATE_RATIO_TARGET,
            "update_ratio": per_layer(ctx.layers, layer_stat(ev.record, "update_ratio", rows)),
            "loss_improvement_per_window": median(improvement[rows]), "lr": ctx.lr,
            **loss_evidence(ev.record, rows),
        }
        factor = decade_factor(ratio / UPDATE_RATIO_TARGET)
        advice = [lr_advice(ctx, factor, True, update_ratio_basis(ratio) + ", and the loss stopped falling"),
                  "or keep the rate and decay it: --set optimizer.schedule=warmup_cosine (a warmup avoids the "
                  "large first steps, the decay the late oscillation)"]
        summary = (f"the weights move {fmt(ratio)} of their norm per step ({fmt(ratio / UPDATE_RATIO_TARGET)}x the "
                   f"~{fmt(UPDATE_RATIO_TARGET)} target) while the loss does not fall, on {fmt(100 * ev.share)}% "
                   f"of the steps from step {ev.first_step}")
        return ev.finding(self.verdict, summary, ev.flagged_layers(), evidence, advice)


class LearningRateTooLow(Rule):
    """Largest update ratio over layers < 1e-5 while the loss is flat and still near its start."""

    verdict = "lr_too_low"

    def evaluate(self, record, start, stop, ctx, state) -> Signals:
        ratios = layer_stat(record, "update_ratio", slice(start, stop))
        loss = global_stat(record, "loss", slice(0, INITIAL_LOSS_ROWS))
        if ratios is None or loss is None:
            return nothing(stop - start, len(ctx.layers))
        if "initial_loss" not in state or state["initial_rows"] < INITIAL_LOSS_ROWS:
            state["initial_loss"], state["initial_rows"] = median(loss), len(loss)
        fastest = row_max(ratios)
        improvement, recent = loss_trend(record, start, stop)
        with np.errstate(invalid="ignore"):
            hit = (fastest < LR_LOW_UPDATE_RATIO) & (improvement < LR_LOW_MAX_IMPROVEMENT)
            hit &= recent >= LR_LOW_STILL_AT_START * state["initial_loss"]
        lr = global_stat(record, "lr", slice(start, stop))
        if lr is not None:  # not on a schedule's tail or a warmup's head: judged at >= half the peak rate
            if ctx.lr:
                peak = ctx.lr
            else:
                known = np.where(np.isfinite(lr), lr, -np.inf)
                peak = np.maximum.accumulate(np.concatenate([[state.get("peak_lr", -np.inf)], known]))[1:]
                state["peak_lr"] = float(peak[-1])
            with np.errstate(invalid="ignore"):
                hit &= ~(lr < LR_SCHEDULE_FLOOR * peak)
        return Signals(hit, fastest, (ratios < LR_LOW_UPDATE_RATIO) & hit[:, None])

    def describe(self, ev: Evidence) -> Finding:
        ctx, rows = ev.ctx, ev.rows()
        fastest = median(ev.values())
        improvement, _ = loss_trend(ev.record, 0, len(ev.record))
        evidence = {
            "update_ratio_max_layer": fastest, "threshold": LR_LOW_UPDATE_RATIO, "target": UPDATE_RATIO_TARGET,
            "update_ratio": per_layer(ctx.layers, layer_stat(ev.record, "update_ratio", rows)),
            "loss_improvement_per_window": median(improvement[rows]), "lr": ctx.lr,
            **loss_evidence(ev.record, rows),
        }
        factor = decade_factor(UPDATE_RATIO_TARGET / fastest, MAX_RAISE) if fastest > 0 else MAX_RAISE
        advice = [lr_advice(ctx, factor, False, update_ratio_basis(fastest) + " even in the fastest layer"),
                  "or an adaptive optimizer, whose step size does not shrink with the gradient: "
                  "--set optimizer.name=adam --set optimizer.lr=0.001"
                  if ctx.get("optimizer.name") in (None, "sgd", "momentum", "nesterov") else None]
        summary = (f"even the fastest layer moves only {fmt(fastest)} of its norm per step "
                   f"({fmt(UPDATE_RATIO_TARGET / fastest) if fastest > 0 else 'inf'}x under the "
                   f"~{fmt(UPDATE_RATIO_TARGET)} "
                   f"target) and the loss stays at its starting level, on {fmt(100 * ev.share)}% of the steps "
                   f"from step {ev.first_step}")
        return ev.finding(self.verdict, summary, ev.flagged_layers(), evidence, advice)
