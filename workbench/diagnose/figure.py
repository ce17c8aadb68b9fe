"""The diagnosis figure: where and when each finding holds.

    fig = diagnosis_figure(record, diagnosis); fig.savefig("diagnosis.png")

- top: gradient flow, layers (input at top) x steps, colour = log10 of the backpropagated
  gradient ||dL/ds_i|| relative to the output layer's (purple: vanishing, orange: exploding,
  white: the scale kept; NaN/Inf red), each finding's layers and steps outlined and labelled;
- bottom left: that depth profile at the first and the last recorded step, with the
  vanishing and exploding thresholds;
- bottom middle, chosen by the headline verdict: the update ratio per layer over steps (learning
  rate verdicts), the dead or saturated fraction per layer over steps (unit verdicts), or else
  the activation std per hidden layer at the first step relative to the first hidden layer,
  with the bad-initialization band;
- bottom right: the loss over steps, with the stretches where each finding holds shaded;
- for each recurrent layer, a row below: the gradient through time as a heat map, time step
  (1 at the top, T at the bottom) x training step, colour = log10 ||dL/dh_t|| / ||dL/dh_T||
  (the same colours: purple where the gradient has vanished on its way back from the last step,
  orange where it has grown), the horizon drawn over it, and the layer's through-time findings
  outlined.

Built on `matplotlib.figure.Figure` (no pyplot); saved with the Agg canvas.
"""

from __future__ import annotations

import matplotlib as mpl
import numpy as np
from matplotlib.colors import ListedColormap, TwoSlopeNorm
from matplotlib.figure import Figure
from matplotlib.patches import Patch, Rectangle
from matplotlib.ticker import MaxNLocator
from matplotlib.transforms import blended_transform_factory

from workbench.diagnose.findings import Diagnosis
from workbench.diagnose.thresholds import (
    BAD_INIT_STD_RATIO_HIGH,
    BAD_INIT_STD_RATIO_LOW,
    DEAD_FRACTION,
    EXPLODING_RATIO,
    LR_HIGH_UPDATE_RATIO,
    LR_LOW_UPDATE_RATIO,
    SATURATED_FRACTION,
    UPDATE_RATIO_TARGET,
    VANISHING_RATIO,
)
from workbench.plots.style import log_axis

DPI = 110
WIDTH = 13.0  # inches; the height grows with the recurrent layers' rows
MARGINS = (1.15, 0.35, 0.75, 1.05)  # left (layer names), right, top (the title), bottom (rotated layer names)
PNG_OPTIONS = {"compress_level": 1}  # fast zlib, as workbench.plots saves: a little larger, much cheaper
ROW_GAP = 1.35  # inches between rows: a row's rotated layer names and x label, the next row's title
MAX_LINE_POINTS = 2000  # per line; longer runs are drawn by block maxima
MAX_COLUMNS = 800  # heatmap columns; longer runs are reduced to blocks keeping each block's extreme
DECADES = 6  # colour range: 10^-6 .. 10^6 of the output's gradient
NONFINITE_COLOR = "#d62728"
VERDICT_COLORS = {
    "divergence": "#d62728", "exploding_gradients": "#ff7f0e", "bad_initialization": "#8c564b",
    "dead_units": "#1f1f1f", "lr_too_high": "#e377c2", "vanishing_gradients": "#6a3d9a",
    "saturated_units": "#17becf", "lr_too_low": "#7f7f7f", "vanishing_through_time": "#3f007d",
    "exploding_through_time": "#d94801",
}
TIME_SERIES = "time_grad_norm"


def diagnosis_figure(record, diagnosis: Diagnosis, title: str | None = None) -> Figure:
    recurrent = [layer for stat, layer in _time_series(record) if stat == TIME_SERIES]
    rows = [["flow", "flow", "flow"], ["profile", "init", "loss"]] + [[f"time:{name}"] * 3 for name in recurrent]
    height = 8.5 + 3.2 * len(recurrent)
    # fixed margins (inches), not a layout solver: constrained layout laid every text out twice and took
    # about as long as drawing the figure itself
    left, right, top, bottom = MARGINS
    fig = Figure(figsize=(WIDTH, height), dpi=DPI)
    axes = fig.subplot_mosaic(rows, height_ratios=[1.25, 1] + [0.9] * len(recurrent), gridspec_kw=dict(
        left=left / WIDTH, right=1 - right / WIDTH, top=1 - top / height, bottom=bottom / height,
        hspace=ROW_GAP / ((height - top - bottom) / len(rows)), wspace=0.28))
    run = f" - run {diagnosis.run_id}" if diagnosis.run_id else ""
    verdicts = ", ".join(diagnosis.verdicts) or "no finding"
    fig.suptitle(title or f"diagnosis: {diagnosis.verdict}{run}   ({verdicts})", fontsize=12)
    steps = np.asarray(record.steps, dtype=float)
    layers = list(record.layers)
    ratio = _depth_ratio(record)
    _flow(axes["flow"], steps, layers, ratio, diagnosis, record)
    _profile(axes["profile"], steps, layers, ratio, diagnosis)
    middle = {"lr_too_high": _updates, "lr_too_low": _updates, "dead_units": _units, "saturated_units": _units}
    middle.get(diagnosis.verdict, _init)(axes["init"], record, diagnosis)
    _loss(axes["loss"], record, steps, diagnosis)
    for name in recurrent:
        time_heat_map(axes[f"time:{name}"], record, name, diagnosis)
    return fig


def _time_series(record) -> list[tuple[str, str]]:
    return record.time_series() if hasattr(record, "time_series") else []


def time_ratio_grid(record, layer: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(bin edges in time steps, rows x bins of log10 ||dL/dh_t|| / ||dL/dh_T||), or None without the series."""
    if (TIME_SERIES, layer) not in _time_series(record) or not len(record):
        return None
    norms = np.asarray(record.time(TIME_SERIES, layer), dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = norms / norms[:, -1:]
        logs = np.log10(np.where(ratio > 0, ratio, np.nan))
    logs = np.where(ratio == 0, -DECADES, logs)  # cut off (truncated BPTT, dead units): the bottom of the scale
    return record.time_edges(TIME_SERIES, layer), np.where(np.isfinite(ratio), np.clip(logs, -DECADES, DECADES), np.nan)


def time_heat_map(ax, record, layer: str, diagnosis: Diagnosis | None = None) -> None:
    """The gradient through time of one recurrent layer: time step (rows) x training step (columns)."""
    grid = time_ratio_grid(record, layer)
    ax.set_title(f"{layer}: gradient through time, log10 ||dL/dh_t|| / ||dL/dh_T|| (t = 1 at the top)", fontsize=10)
    if grid is None:
        ax.text(0.5, 0.5, f"no {TIME_SERIES} for {layer} in this record", ha="center", va="center",
                transform=ax.transAxes)
        return
    edges, logs = grid
    steps = np.asarray(record.steps, dtype=float)
    x_edges, values = _blocks(steps, logs.T)
    y_edges = np.asarray(edges, dtype=float) + 0.5  # bin k covers steps edges[k]+1 .. edges[k+1]
    mesh = ax.pcolormesh(x_edges, y_edges, np.ma.masked_invalid(values), cmap="PuOr_r",
                         norm=TwoSlopeNorm(0.0, -DECADES, DECADES), shading="flat", rasterized=True)
    colorbar = ax.figure.colorbar(mesh, ax=ax, pad=0.01, fraction=0.04)
    colorbar.set_label("log10 ratio to step T", fontsize=8)
    T = float(edges[-1])
    if "time_horizon" in record.layer_stats() and layer in record.layers:
        horizon = np.asarray(record.series("time_horizon", layer), dtype=float)
        ok = np.isfinite(horizon)
        if ok.any():
            ax.plot(steps[ok], T - horizon[ok], color="black", linewidth=0.8,
                    label="horizon (a tenth of ||dL/dh_T|| kept below the line)")
            ax.legend(fontsize=7, loc="lower right", framealpha=0.8)
    ax.set_ylim(T + 0.5, 0.5)
    ax.set_xlabel("training step")
    ax.set_ylabel("time step t")
    ax.xaxis.set_major_locator(MaxNLocator(nbins=8, integer=True))
    ax.yaxis.set_major_locator(MaxNLocator(nbins=8, integer=True))
    for finding in (diagnosis.findings if diagnosis is not None else []):
        if finding.verdict.endswith("_through_time") and layer in finding.layers:
            color = VERDICT_COLORS[finding.verdict]
            for a, b in finding.evidence.get("spans") or [[finding.first_step, finding.last_step]]:
                ax.add_patch(Rectangle((a - 0.5, 0.5), b - a + 1, T, fill=False, edgecolor=color, linewidth=1.8))
            ax.annotate(finding.verdict, xy=(0.01, 0.97), xycoords="axes fraction", fontsize=8, color=color,
                        va="top", fontweight="bold", bbox=dict(boxstyle="round,pad=0.15", fc="white", ec="none",
                                                               alpha=0.7))


def save_diagnosis_figure(path, record, diagnosis: Diagnosis) -> None:
    diagnosis_figure(record, diagnosis).savefig(path, pil_kwargs=PNG_OPTIONS)


def _depth_ratio(record) -> np.ndarray | None:
    if "backprop_norm" not in record.layer_stats() or not len(record):
        return None
    norm = np.asarray(record.layer("backprop_norm"), dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return norm / norm[:, -1:]


def _blocks(steps: np.ndarray, grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Columns reduced to at most MAX_COLUMNS blocks: each keeps its most extreme log value (NaN wins)."""
    n = len(steps)
    edges = _edges(steps)
    if n <= MAX_COLUMNS:
        return edges, grid
    size = -(-n // MAX_COLUMNS)
    starts = np.arange(0, n, size)
    out = np.empty((grid.shape[0], len(starts)))
    for k, a in enumerate(starts):
        block = grid[:, a : a + size]
        pick = np.argmax(np.abs(np.nan_to_num(block, nan=0.0)), axis=1)[:, None]
        extreme = np.take_along_axis(block, pick, 1)[:, 0]
        out[:, k] = np.where(np.isnan(block).any(axis=1), np.nan, extreme)
    return np.concatenate([edges[starts], edges[-1:]]), out


def _contiguous(rows: list[int]) -> list[list[int]]:
    groups: list[list[int]] = []
    for r in rows:
        if groups and r == groups[-1][-1] + 1:
            groups[-1].append(r)
        else:
            groups.append([r])
    return groups


def _edges(steps: np.ndarray) -> np.ndarray:
    if len(steps) == 1:
        return np.array([steps[0] - 0.5, steps[0] + 0.5])
    mid = (steps[:-1] + steps[1:]) / 2
    return np.concatenate([[steps[0] - (mid[0] - steps[0])], mid, [steps[-1] + (steps[-1] - mid[-1])]])


def _flow(ax, steps, layers, ratio, diagnosis: Diagnosis, record) -> None:
    ax.set_title("gradient flow: log10 ||dL/ds_layer|| / ||dL/ds_output||, findings outlined", fontsize=10)
    if ratio is None:
        ax.text(0.5, 0.5, "no backprop_norm in this record", ha="center", va="center", transform=ax.transAxes)
        return
    with np.errstate(divide="ignore", invalid="ignore"):
        logs = np.log10(np.where(ratio > 0, ratio, np.nan))
    logs = np.where(ratio == 0, -DECADES, logs)  # exactly no gradient: the bottom of the scale
    grid = np.where(np.isfinite(ratio), np.clip(logs, -DECADES, DECADES), np.nan).T
    x_edges, grid = _blocks(steps, grid)
    y_edges = np.arange(len(layers) + 1) - 0.5
    mesh = ax.pcolormesh(x_edges, y_edges, np.ma.masked_invalid(grid), cmap="PuOr_r",
                         norm=TwoSlopeNorm(0.0, -DECADES, DECADES), shading="flat", rasterized=True)
    bad = np.ma.masked_where(~np.isnan(grid), np.ones_like(grid))
    if bad.count():
        ax.pcolormesh(x_edges, y_edges, bad, cmap=ListedColormap([NONFINITE_COLOR]), shading="flat", rasterized=True)
    colorbar = ax.figure.colorbar(mesh, ax=ax, pad=0.01, fraction=0.04)
    colorbar.set_label("log10 ratio to output", fontsize=8)
    for value in (np.log10(VANISHING_RATIO), np.log10(EXPLODING_RATIO)):
        colorbar.ax.axhline(value, color="black", linewidth=0.8, linestyle="--")
    ax.set_yticks(range(len(layers)), layers, fontsize=7 if len(layers) > 16 else 8)
    ax.set_ylim(len(layers) - 0.5, -0.5)
    ax.set_xlabel("step")
    ax.xaxis.set_major_locator(MaxNLocator(nbins=8, integer=True))
    ax.set_ylabel("layer (input at top)")
    width = float(x_edges[-1] - x_edges[0]) or 1.0
    handles = []
    for finding in diagnosis.findings:
        color = VERDICT_COLORS.get(finding.verdict, "black")
        rows = [layers.index(name) for name in finding.layers if name in layers]
        if finding.verdict == "divergence":
            ax.axvline(finding.first_step, color=color, linewidth=2, linestyle=":")
        spans = finding.evidence.get("spans") or [[finding.first_step, finding.last_step]]
        inset = 0.003 * width
        for group in _contiguous(sorted(rows)):
            top, bottom = group[0] - 0.42, group[-1] + 0.42
            for a, b in spans:
                left = max(float(a) - 0.5, float(x_edges[0])) + inset
                right = min(max(float(b) + 0.5, left + 0.004 * width), float(x_edges[-1])) - inset
                ax.add_patch(Rectangle((left, top), max(right - left, inset), bottom - top, fill=False, edgecolor=color,
                                       linewidth=1.8, linestyle="--" if finding.severity == "warning" else "-"))
        if rows:
            ax.annotate(finding.verdict, xy=(max(float(spans[0][0]), float(x_edges[0])), min(rows) - 0.42),
                        xytext=(4, -3), textcoords="offset points", fontsize=8, color=color, va="top",
                        fontweight="bold", bbox=dict(boxstyle="round,pad=0.15", fc="white", ec="none", alpha=0.7))
        handles.append(Patch(fill=False, edgecolor=color, label=f"{finding.verdict} ({finding.severity})"))
    if handles:
        ax.legend(handles=handles, fontsize=8, loc="upper right", framealpha=0.85)


def _profile(ax, steps, layers, ratio, diagnosis: Diagnosis) -> None:
    ax.set_title("gradient by depth, relative to the output", fontsize=10)
    if ratio is None:
        return
    x = np.arange(len(layers))
    picks = [(0, f"step {steps[0]:g}", "#1f77b4")]
    if len(steps) > 1:
        last = len(steps) - 1
        finite = np.flatnonzero(np.isfinite(ratio).all(axis=1))
        if len(finite) and finite[-1] != last:
            picks.append((int(finite[-1]), f"step {steps[finite[-1]]:g} (last finite)", "#2ca02c"))
        else:
            picks.append((last, f"step {steps[last]:g} (end)", "#2ca02c"))
    bottom = blended_transform_factory(ax.transData, ax.transAxes)
    shown = [VANISHING_RATIO, EXPLODING_RATIO]
    for row, label, color in picks:
        values = np.where(np.isfinite(ratio[row]) & (ratio[row] > 0), ratio[row], np.nan)
        shown += [float(v) for v in values[np.isfinite(values)]]
        ax.plot(x, values, marker="o", markersize=3, color=color, label=label)
        zero = np.flatnonzero(ratio[row] == 0)
        if len(zero):  # no gradient at all: a log axis cannot show 0, so mark it on the floor
            ax.plot(zero, np.full(len(zero), 0.03), "v", color=color, markersize=7, transform=bottom,
                    label=f"{label}: exactly 0", clip_on=False)
    log_axis(ax)
    ax.set_ylim(min(shown) / 3, max(shown) * 3)  # both thresholds always in view (and never a zero-height axis)
    ax.axhline(VANISHING_RATIO, color="#6a3d9a", linestyle="--", linewidth=1, label=f"vanishing < {VANISHING_RATIO:g}")
    ax.axhline(EXPLODING_RATIO, color="#ff7f0e", linestyle="--", linewidth=1, label=f"exploding > {EXPLODING_RATIO:g}")
    for finding in diagnosis.findings:
        if finding.verdict in ("vanishing_gradients", "exploding_gradients"):
            for name in finding.layers:
                if name in layers:
                    j = layers.index(name)
                    ax.axvspan(j - 0.5, j + 0.5, color=VERDICT_COLORS[finding.verdict], alpha=0.12, linewidth=0)
    _layer_axis(ax, layers)
    ax.set_ylabel("||dL/ds|| / output's")
    ax.legend(fontsize=7, loc="best")


def _init(ax, record, diagnosis: Diagnosis) -> None:
    ax.set_title(f"activation std by depth at step {int(record.steps[0]) if len(record) else 0}", fontsize=10)
    if "act_std" not in record.layer_stats() or not len(record) or len(record.layers) < 2:
        return
    hidden = list(record.layers)[:-1]
    std = np.asarray(record.layer("act_std")[0, :-1], dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        relative = std / std[0]
    x = np.arange(len(hidden))
    ax.plot(x, np.where(relative > 0, relative, np.nan), marker="o", markersize=3, color="#8c564b",
            label=f"std / std({hidden[0]})")
    zero = np.flatnonzero(std == 0)
    if len(zero):
        ax.plot(zero, np.full(len(zero), BAD_INIT_STD_RATIO_LOW / 10), "x", color=NONFINITE_COLOR, label="std = 0")
    log_axis(ax)
    ax.axhspan(BAD_INIT_STD_RATIO_LOW, BAD_INIT_STD_RATIO_HIGH, color="#2ca02c", alpha=0.08, linewidth=0,
               label=f"healthy [{BAD_INIT_STD_RATIO_LOW:g}, {BAD_INIT_STD_RATIO_HIGH:g}]")
    finding = diagnosis.finding("bad_initialization")
    if finding is not None:
        for name in finding.layers:
            if name in hidden:
                j = hidden.index(name)
                ax.axvspan(j - 0.5, j + 0.5, color=VERDICT_COLORS["bad_initialization"], alpha=0.12, linewidth=0)
    _layer_axis(ax, hidden)
    ax.legend(fontsize=7, loc="best")


def _over_steps(ax, record, stat: str, names: list[str]) -> None:
    """One line per layer (dark: input, light: output), each block of a long run drawn by its maximum."""
    steps = np.asarray(record.steps, dtype=float)
    values = np.asarray(record.layer(stat), dtype=float)[:, : len(names)]
    size = max(1, -(-len(steps) // MAX_LINE_POINTS))
    if size > 1:
        cut = len(steps) // size * size
        steps = steps[:cut].reshape(-1, size)[:, 0]
        with np.errstate(invalid="ignore"):
            values = np.nanmax(values[:cut].reshape(-1, size, values.shape[1]), axis=1)
    colors = mpl.colormaps["viridis"](np.linspace(0.0, 0.88, max(2, len(names))))
    for j, name in enumerate(names):
        ax.plot(steps, values[:, j], color=colors[j], linewidth=0.8, label=name if len(names) <= 8 else None)
    ax.set_xlabel("step")
    ax.xaxis.set_major_locator(MaxNLocator(nbins=8, integer=True))


def _shade(ax, diagnosis: Diagnosis, verdict: str) -> None:
    finding = diagnosis.finding(verdict)
    if finding is not None:
        for a, b in finding.evidence.get("spans") or [[finding.first_step, finding.last_step]]:
            ax.axvspan(a - 0.5, b + 0.5, color=VERDICT_COLORS[verdict], alpha=0.12, linewidth=0)


def _updates(ax, record, diagnosis: Diagnosis) -> None:
    ax.set_title("update ratio ||W(t+1) - W(t)|| / ||W(t)|| per layer", fontsize=10)
    if "update_ratio" not in record.layer_stats() or not len(record):
        return
    _over_steps(ax, record, "update_ratio", list(record.layers))
    log_axis(ax)
    ax.axhline(UPDATE_RATIO_TARGET, color="#2ca02c", linewidth=1.2, label=f"target ~{UPDATE_RATIO_TARGET:g} (CS231n)")
    ax.axhline(LR_HIGH_UPDATE_RATIO, color=VERDICT_COLORS["lr_too_high"], linestyle="--", linewidth=1,
               label=f"too high > {LR_HIGH_UPDATE_RATIO:g}")
    ax.axhline(LR_LOW_UPDATE_RATIO, color=VERDICT_COLORS["lr_too_low"], linestyle="--", linewidth=1,
               label=f"too low < {LR_LOW_UPDATE_RATIO:g}")
    _shade(ax, diagnosis, diagnosis.verdict)
    ax.legend(fontsize=7, loc="best")


def _units(ax, record, diagnosis: Diagnosis) -> None:
    stat, threshold, what = (("dead_frac", DEAD_FRACTION, "dead") if diagnosis.verdict == "dead_units"
                             else ("sat_frac", SATURATED_FRACTION, "saturated"))
    ax.set_title(f"{what} fraction of each hidden layer's units", fontsize=10)
    if stat not in record.layer_stats() or not len(record):
        return
    _over_steps(ax, record, stat, list(record.layers)[:-1])
    ax.axhline(threshold, color=VERDICT_COLORS[diagnosis.verdict], linestyle="--", linewidth=1,
               label=f"threshold {threshold:g}")
    ax.set_ylim(-0.02, 1.02)
    _shade(ax, diagnosis, diagnosis.verdict)
    ax.legend(fontsize=7, loc="best")


def _loss(ax, record, steps, diagnosis: Diagnosis) -> None:
    ax.set_title("batch loss, and when each finding holds", fontsize=10)
    if "loss" in record.global_stats() and len(record):
        loss = np.asarray(record.global_("loss"), dtype=float)
        ok = np.isfinite(loss) & (loss > 0)
        ax.plot(steps[ok], loss[ok], color="#4d4d4d", linewidth=0.7)
        if ok.any() and loss[ok].max() > 10 * loss[ok].min():
            log_axis(ax)
    ax.set_xlabel("step")
    ax.xaxis.set_major_locator(MaxNLocator(nbins=8, integer=True))
    handles = []
    for finding in diagnosis.findings:
        color = VERDICT_COLORS.get(finding.verdict, "black")
        if finding.verdict == "divergence":
            ax.axvline(finding.first_step, color=color, linestyle=":", linewidth=2)
        else:
            for a, b in finding.evidence.get("spans") or [[finding.first_step, finding.last_step]]:
                ax.axvspan(a - 0.5, b + 0.5, color=color, alpha=0.15, linewidth=0)
        handles.append(Patch(color=color, alpha=0.4, label=finding.verdict))
    if handles:
        ax.legend(handles=handles, fontsize=7, loc="best")


def _layer_axis(ax, names: list[str]) -> None:
    step = max(1, len(names) // 12)
    ticks = list(range(0, len(names), step))
    ax.set_xticks(ticks, [names[i] for i in ticks], rotation=45, ha="right", fontsize=7)
    ax.set_xlim(-0.5, len(names) - 0.5)
    ax.set_xlabel("layer (input to output)")
