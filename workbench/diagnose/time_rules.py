"""Gradients through time: vanishing and exploding along the sequence inside recurrent layers.

The time profile of a recurrent layer is the gradient reaching its hidden state at each step,
||dL/dh_t||, t = 1..T (`time_grad_norm` in the record); `time_grad_ratio` is
||dL/dh_first|| / ||dL/dh_T|| (first = 1, or the first step inside a truncated-BPTT window) and
`time_horizon` how many steps back the gradient keeps a tenth of its size. Through T steps the
gradient is multiplied by T - 1 Jacobians diag(phi') U^T (Pascanu, Mikolov & Bengio 2013, eq. 5):
a thousandth or less at the first step means the earliest inputs cannot shape learning (vanishing);
a gradient that grows as it goes back means the products explode. The largest singular value
of the recurrent matrix is the evidence: for an rnn, below 1/gamma vanishing is certain, above it
exploding becomes possible (their sec. 2.1; gamma bounds |phi'|: 1 for tanh and relu).

Gated cells learn to carry their gradient (an lstm's forget gates open, Hochreiter & Schmidhuber
1997; Gers et al. 2000), so vanishing through time is dropped at the end of a run that grew out
of it: the condition no longer holds over the last PERSISTENCE_WINDOW rows and the loss there is at
most RECOVERY_LOSS_FACTOR of what it was while the gradient vanished (`resolved`). A layer that
starts with a short horizon and learns a long one, and uses it, is healthy.
"""

from __future__ import annotations

import numpy as np

from workbench.diagnose.advice import clip_advice, fmt
from workbench.diagnose.engine import Evidence, Signals
from workbench.diagnose.findings import Finding
from workbench.diagnose.gradient_rules import clipping_threshold
from workbench.diagnose.rules import Rule, global_stat, layer_stat, median, nothing, quantile
from workbench.diagnose.thresholds import (
    EXPLODING_TIME_RATIO,
    GRADIENT_SPIKE_FACTOR,
    MIN_EXPLODING_EPISODES,
    MIN_PERSISTENT_ROWS,
    PASCANU_GAMMA,
    PERSISTENCE_FRACTION,
    PERSISTENCE_WINDOW,
    RECOVERY_LOSS_FACTOR,
    VANISHING_TIME_RATIO,
)

MIN_SPIKE_HISTORY = 10  # rows before a step can be called a spike: the median needs something to stand on

RECURRENT = ("rnn", "lstm", "gru")


def recurrent_layers(ctx) -> dict[str, dict]:
    """name -> {type, activation, units, return_sequences, bptt_steps} of the record's recurrent layers."""
    found = dict(ctx.meta.get("recurrent") or {})
    if not found:  # a record from before the meta entry: the column types tell
        found = {c["name"]: {"type": c["type"]} for c in ctx.columns if c.get("type") in RECURRENT}
    return found


def sv_threshold(info: dict) -> float:
    """1/gamma of Pascanu et al.'s condition for an rnn's activation (NaN for gated cells: no single matrix)."""
    if info.get("type") != "rnn":
        return float("nan")
    return 1.0 / PASCANU_GAMMA.get(info.get("activation") or "tanh", 1.0)


def item_of(ctx, name: str) -> str:
    """`model.layers[i]` for a top-level layer named like `lstm2` (its rank among items of its type), else the name."""
    items = ctx.get("model.layers")
    stem = name.rstrip("0123456789")
    if not isinstance(items, list) or "." in name or stem == name:
        return name
    rank = int(name[len(stem):])
    seen = 0
    for i, item in enumerate(items):
        if isinstance(item, dict) and item.get("type") in RECURRENT and item.get("type") == stem:
            seen += 1
            if seen == rank:
                return f"model.layers[{i}]"
    return name


def spike_factors(record, start: int, stop: int) -> np.ndarray:
    """Per row of [start, stop): the global gradient norm over the median of the PERSISTENCE_WINDOW rows
    before it (NaN with fewer than MIN_SPIKE_HISTORY rows before)."""
    norms = global_stat(record, "grad_norm_global", slice(max(0, start - PERSISTENCE_WINDOW), stop))
    out = np.full(stop - start, np.nan)
    if norms is None:
        return out
    offset = len(norms) - (stop - start)
    for k in range(stop - start):
        i = offset + k
        before = norms[max(0, i - PERSISTENCE_WINDOW) : i]
        before = before[np.isfinite(before)]
        if len(before) >= MIN_SPIKE_HISTORY:
            typical = float(np.median(before))
            if typical > 0:
                out[k] = norms[i] / typical
    return out


def unclipped(record, start: int, stop: int) -> np.ndarray:
    clipped = global_stat(record, "clipped", slice(start, stop))
    return np.ones(stop - start, bool) if clipped is None else clipped != 1.0


def episodes(record) -> list[dict]:
    """The exploding episodes of the whole record: step, factor over the trailing median, and the loss
    over the 5 rows after it relative to the 5 rows before."""
    n = len(record)
    factor = spike_factors(record, 0, n)
    with np.errstate(invalid="ignore"):
        rows = np.flatnonzero((factor > GRADIENT_SPIKE_FACTOR) & unclipped(record, 0, n))
    loss = global_stat(record, "loss")
    found = []
    for i in rows:
        jump = float("nan")
        if loss is not None and i >= 1:
            jump = median(loss[i + 1 : i + 6]) / median(loss[max(0, i - 5) : i])
        found.append({"step": int(record.steps[i]), "factor": float(factor[i]), "loss_after_over_before": jump})
    return found


HEAT_LEVELS = " .:-=+*#%@"  # log10 ||dL/dh_t|| / ||dL/dh_T|| from -6 (blank) to 0 (@); growth above 1 is "!"
HEAT_ROWS, HEAT_COLUMNS = 8, 50


def text_heat_map(record, layer: str) -> list[str]:
    """The gradient through time of `layer` in characters: a row per sampled training step, t = 1 on the left."""
    if ("time_grad_norm", layer) not in record.time_series() or not len(record):
        return []
    norms = np.asarray(record.time("time_grad_norm", layer), dtype=float)
    rows = np.unique(np.linspace(0, len(norms) - 1, min(HEAT_ROWS, len(norms))).round().astype(int))
    bins = norms.shape[1]
    columns = np.unique(np.linspace(0, bins - 1, min(HEAT_COLUMNS, bins)).round().astype(int))
    edges = record.time_edges("time_grad_norm", layer)
    width = len(str(int(record.steps[-1])))
    lines = [f"{'step':>{width + 5}} t={int(edges[columns[0]]) + 1}" + " " * max(1, len(columns) - 8)
             + f"t={int(edges[-1])}"]
    for i in rows:
        with np.errstate(divide="ignore", invalid="ignore"):
            logs = np.log10(norms[i, columns] / norms[i, -1])
        chars = []
        for v in logs:
            if not np.isfinite(v):
                chars.append(" " if v == -np.inf else "?")
            elif v > 1:
                chars.append("!")
            else:
                level = int(np.clip(np.floor((v + 6) / 6 * (len(HEAT_LEVELS) - 1) + 0.5), 0, len(HEAT_LEVELS) - 1))
                chars.append(HEAT_LEVELS[level])
        lines.append(f"{int(record.steps[i]):>{width + 5}} |{''.join(chars)}|")
    return lines


class _ThroughTime(Rule):
    """The time ratio of each recurrent layer against a threshold; the finding must still hold at the end."""

    holds_at_end = True

    def beyond(self, ratio: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def evaluate(self, record, start, stop, ctx, state) -> Signals:
        n = stop - start
        ratio = layer_stat(record, "time_grad_ratio", slice(start, stop))
        if ratio is None:
            return nothing(n, len(ctx.layers))
        with np.errstate(invalid="ignore"):
            layers = self.beyond(ratio) & np.isfinite(ratio)
        hit = layers.any(axis=1)
        with np.errstate(invalid="ignore"):
            value = np.where(layers, ratio, np.nan)
        picked = np.full(n, np.nan)
        rows = np.flatnonzero(hit)
        if len(rows):
            picked[rows] = self.extreme(value[rows])
        return Signals(hit, picked, layers)

    def extreme(self, values: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def evidence(self, ev: Evidence, layers: list[str]) -> dict:
        record, ctx, rows = ev.record, ev.ctx, ev.rows()
        recurrent = recurrent_layers(ctx)
        per = {}
        for name in layers:
            j = ctx.layers.index(name)
            info = recurrent.get(name, {})
            steps = None
            if ("time_grad_norm", name) in record.time_series():
                steps = int(record.time_edges("time_grad_norm", name)[-1])
            sv = layer_stat(record, "recurrent_sv", rows)
            horizon = layer_stat(record, "time_horizon", rows)
            ratio = layer_stat(record, "time_grad_ratio", rows)
            end = slice(max(0, len(record) - 40), len(record))
            per[name] = {
                "item": item_of(ctx, name), "type": info.get("type"), "activation": info.get("activation"),
                "steps": steps, "bptt_steps": info.get("bptt_steps"),
                "ratio_first_to_last": median(ratio[:, j]) if ratio is not None else float("nan"),
                "horizon_steps": median(horizon[:, j]) if horizon is not None else float("nan"),
                "horizon_steps_at_end": median(layer_stat(record, "time_horizon", end)[:, j])
                if horizon is not None else float("nan"),
                "singular_value": median(sv[:, j]) if sv is not None else float("nan"),
                "singular_value_threshold": sv_threshold(info),
                "heat_map": text_heat_map(record, name),
            }
        return per

    @staticmethod
    def describe_layer(name: str, e: dict) -> str:
        steps = f" of {e['steps']}" if e.get("steps") else ""
        text = (f"{name}: ||dL/dh_first|| / ||dL/dh_T|| = {fmt(e['ratio_first_to_last'])}, "
                f"horizon {fmt(e['horizon_steps'])}{steps} steps, largest singular value "
                f"{fmt(e['singular_value'])}")
        threshold = e.get("singular_value_threshold")
        if threshold is not None and np.isfinite(threshold):
            side = "below" if e["singular_value"] < threshold else "above"
            text += f" ({side} 1/gamma = {fmt(threshold)})"
        return text


class VanishingThroughTime(_ThroughTime):
    verdict = "vanishing_through_time"

    def resolved(self, track, record) -> bool:
        """No longer vanishing over the last window, and the loss there at most RECOVERY_LOSS_FACTOR of what it
        was while the gradient vanished: the layer learned to carry its gradient and used it."""
        if track.holds_at_end():
            return False
        loss = global_stat(record, "loss")
        if loss is None:
            return True
        sick = median(loss[np.isin(record.steps, track.steps[track.hit])])
        end = median(loss[max(0, len(loss) - PERSISTENCE_WINDOW) :])
        return bool(np.isfinite(sick) and np.isfinite(end) and end <= RECOVERY_LOSS_FACTOR * sick)

    def beyond(self, ratio):
        return ratio < VANISHING_TIME_RATIO

    def extreme(self, values):
        return np.nanmin(values, axis=1)

    def describe(self, ev: Evidence) -> Finding:
        ctx = ev.ctx
        layers = ev.flagged_layers()
        per = self.evidence(ev, layers)
        recurrent = recurrent_layers(ctx)
        evidence = {"threshold": VANISHING_TIME_RATIO, "ratio_first_to_last": median(ev.values()), "layers": per}
        advice: list[str | None] = []
        simple = [name for name in layers if recurrent.get(name, {}).get("type") == "rnn"]
        if simple:
            where = ", ".join(per[name]["item"] for name in simple)
            advice.append(f'set type = "lstm" (or "gru") on {where}: the cell state passes the gradient back '
                          "multiplied by the forget gate alone, not by U and the slope at every step "
                          "(Hochreiter & Schmidhuber 1997; Cho et al. 2014)")
        for name in layers:
            e, info = per[name], recurrent.get(name, {})
            init = self._item_value(ctx, e["item"], "recurrent_init", "orthogonal")
            if info.get("type") == "rnn" and info.get("activation") == "relu" and init != "identity":
                advice.append(f'set recurrent_init = "identity" on {e["item"]}: the IRNN copies the state forward '
                              f"unchanged, so the gradient neither fades nor grows where units are active "
                              f"(Le, Jaitly & Hinton 2015; now \"{init}\")")
            elif init not in ("orthogonal", "identity"):
                advice.append(f'set recurrent_init = "orthogonal" on {e["item"]}: every singular value of U is 1, '
                              f"so U^T neither shrinks nor grows the gradient (Saxe et al. 2014; now \"{init}\", "
                              f"largest singular value {fmt(e['singular_value'])})")
            elif info.get("type") == "lstm":
                bias = self._item_value(ctx, e["item"], "forget_bias", 1.0)
                advice.append(f"set forget_bias = {fmt(max(2.0, 2 * float(bias)))} on {e['item']} (now {fmt(bias)}): "
                              "forget gates nearer 1 keep the cell's gradient over more steps "
                              "(Gers et al. 2000; Jozefowicz et al. 2015)")
        advice.append('add {type = "layer_norm"} after the recurrent layer: normalized inputs keep the next layer\'s '
                      "units off their flat tails (Ba, Kiros & Hinton 2016)")
        described = "; ".join(self.describe_layer(name, per[name]) for name in layers)
        summary = (f"the gradient through time falls below {fmt(VANISHING_TIME_RATIO)} of its size at the last step "
                   f"by the first step on {fmt(100 * ev.share)}% of the steps from step {ev.first_step}: {described}; "
                   f"inputs further back than the horizon barely shape learning")
        return ev.finding(self.verdict, summary, layers, evidence, advice)

    @staticmethod
    def _item_value(ctx, item: str, key: str, default):
        items = ctx.get("model.layers")
        if isinstance(items, list) and item.startswith("model.layers["):
            index = int(item[len("model.layers[") : -1])
            if index < len(items) and isinstance(items[index], dict):
                return items[index].get(key, default)
        return default


class ExplodingThroughTime(_ThroughTime):
    """Two ways to explode through time: the gradient grows on its way back (time ratio above
    EXPLODING_TIME_RATIO, persistent over a window), or exploding episodes (Pascanu et al.'s
    sudden gradient spikes: the global norm above GRADIENT_SPIKE_FACTOR x its trailing median on an
    unclipped step), from the MIN_EXPLODING_EPISODES-th on. Episodes are events, not trends, so the
    rule keeps its own window for the ratio and the engine takes its first hit."""

    verdict = "exploding_through_time"
    persistent = False
    holds_at_end = False

    def beyond(self, ratio):
        return ratio > EXPLODING_TIME_RATIO

    def extreme(self, values):
        return np.nanmax(values, axis=1)

    def evaluate(self, record, start, stop, ctx, state) -> Signals:
        n = stop - start
        recurrent = recurrent_layers(ctx)
        columns = [j for j, name in enumerate(ctx.layers) if name in recurrent]
        if not columns:
            return nothing(n, len(ctx.layers))
        layers = np.zeros((n, len(ctx.layers)), bool)
        value = np.full(n, np.nan)
        ratio = layer_stat(record, "time_grad_ratio", slice(max(0, start - PERSISTENCE_WINDOW + 1), stop))
        if ratio is not None:  # the growth through time, persistent over the trailing window
            with np.errstate(invalid="ignore"):
                over = self.beyond(ratio) & np.isfinite(ratio)
            cum = np.concatenate([np.zeros((1, over.shape[1]), np.int64), np.cumsum(over, axis=0)])
            offset = len(ratio) - n
            end = np.arange(offset, offset + n) + 1
            seen = start + np.arange(n) + 1  # rows of the record up to this one
            window = np.minimum(seen, PERSISTENCE_WINDOW)
            need = np.maximum(np.ceil(PERSISTENCE_FRACTION * window), MIN_PERSISTENT_ROWS)
            counts = cum[end] - cum[np.maximum(end - window, 0)]
            layers = counts >= need[:, None]
            mask = np.zeros(len(ctx.layers), bool)
            mask[columns] = True
            layers &= mask
            hit_ratio = layers.any(axis=1)
            rows = np.flatnonzero(hit_ratio)
            if len(rows):
                value[rows] = np.nanmax(np.where(layers[rows], ratio[offset + rows], np.nan), axis=1)
        factor = spike_factors(record, start, stop)
        with np.errstate(invalid="ignore"):
            spike = (factor > GRADIENT_SPIKE_FACTOR) & unclipped(record, start, stop)
        counted = state.get("exploding_episodes", 0) + np.cumsum(spike)
        state["exploding_episodes"] = int(counted[-1]) if n else state.get("exploding_episodes", 0)
        episode = spike & (counted >= MIN_EXPLODING_EPISODES)
        for k in np.flatnonzero(episode):
            layers[k, columns] = True
            value[k] = factor[k] if not np.isfinite(value[k]) else value[k]
        return Signals(layers.any(axis=1), value, layers)

    def describe(self, ev: Evidence) -> Finding:
        ctx, record = ev.ctx, ev.record
        layers = ev.flagged_layers()
        per = self.evidence(ev, layers)
        found = episodes(record)
        grows = [name for name in layers if per[name]["ratio_first_to_last"] > EXPLODING_TIME_RATIO]
        healthy = ev.rows(ev.track.steps[~ev.track.hit])
        clip_at, clip_high = clipping_threshold(record, healthy)
        basis = f"the median global gradient norm of the steps without the condition (90th percentile {fmt(clip_high)})"
        if not np.isfinite(clip_at):
            norms = global_stat(record, "grad_norm_global")
            clip_at, clip_high = (quantile(norms, 0.5), quantile(norms, 0.9)) if norms is not None else (np.nan,) * 2
            basis = f"the median global gradient norm of the run (90th percentile {fmt(clip_high)})"
        evidence = {"threshold": EXPLODING_TIME_RATIO, "ratio_first_to_last": median([per[n]["ratio_first_to_last"]
                                                                                     for n in layers]),
                    "layers": per, "episodes": found[:20], "episode_count": len(found),
                    "spike_factor": GRADIENT_SPIKE_FACTOR, "suggested_max_norm": clip_at}
        mode = ctx.get("clipping.mode")
        clipped = global_stat(record, "clipped")
        advice: list[str | None] = []
        if mode in (None, "none"):
            advice.append(clip_advice(ctx, clip_at, basis))
        else:
            fired = float(np.nanmean(clipped)) if clipped is not None and len(clipped) else float("nan")
            evidence["clip_fraction"] = fired
            advice.append(f"clipping is on and fired on {fmt(100 * fired)}% of the recorded steps: it bounds each "
                          "update, not the growth through time" + ("" if mode == "global_norm" else
                                                                   "; clip the global norm (--set clipping.mode="
                                                                   "global_norm), which keeps the direction"))
        bptt = ctx.get("training.bptt_steps") or 0
        steps = [e["steps"] for e in per.values() if e.get("steps")]
        horizon = median([e["horizon_steps"] for e in per.values()])
        if steps:
            shorter = max(1, int(min(steps) // 2)) if not bptt else max(1, int(bptt) // 2)
            advice.append(f"--set training.bptt_steps={shorter} (now {bptt or 'the whole sequence'}): truncated BPTT "
                          "stops the products of Jacobians after that many steps (Williams & Peng 1990)"
                          + (f"; the gradient keeps growing over the horizon of {fmt(horizon)} steps"
                             if grows and np.isfinite(horizon) else ""))
        for name in layers:
            e = per[name]
            init = VanishingThroughTime._item_value(ctx, e["item"], "recurrent_init", "orthogonal")
            scale = VanishingThroughTime._item_value(ctx, e["item"], "recurrent_scale", 1.0)
            if init in ("orthogonal", "identity") and scale > 1.0:
                advice.append(f"set recurrent_scale = 1 on {e['item']} (now {fmt(scale)}): {init} U with gain 1 has "
                              f"every singular value 1, so U^T alone neither grows nor shrinks the gradient "
                              "(Saxe et al. 2014; Le et al. 2015)")
            elif init not in ("orthogonal", "identity") or (np.isfinite(e["singular_value_threshold"])
                                                           and e["singular_value"] > e["singular_value_threshold"]):
                advice.append(f'set recurrent_init = "orthogonal" on {e["item"]} (now "{init}"): singular values of 1, '
                              f"at the edge of Pascanu et al.'s condition instead of {fmt(e['singular_value'])} "
                              "(Saxe et al. 2014)")
        if any(recurrent_layers(ctx).get(name, {}).get("type") == "rnn" for name in layers):
            advice.append('or set type = "lstm" (or "gru"): gates bound what each step adds to the state')
        advice.append('add {type = "layer_norm"} after the recurrent layer (Ba, Kiros & Hinton 2016)')
        described = "; ".join(self.describe_layer(name, per[name]) for name in layers)
        parts = []
        if grows:
            parts.append(f"the gradient grows more than {fmt(EXPLODING_TIME_RATIO)}x on its way back through time")
        if found:
            jumps = [e["loss_after_over_before"] for e in found if np.isfinite(e["loss_after_over_before"])]
            jump = f", the loss {fmt(median(jumps))}x higher after them (median)" if jumps else ""
            parts.append(f"{len(found)} exploding episodes: unclipped steps whose gradient norm is over "
                         f"{fmt(GRADIENT_SPIKE_FACTOR)}x the median of the {PERSISTENCE_WINDOW} steps before "
                         f"(largest {fmt(max(e['factor'] for e in found))}x, at step "
                         f"{max(found, key=lambda e: e['factor'])['step']}){jump}")
        summary = f"{' and '.join(parts) or 'the gradient explodes through time'} from step {ev.first_step}: {described}"
        return ev.finding(self.verdict, summary, layers, evidence, advice)
