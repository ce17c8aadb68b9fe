"""Where the gradient went: per-layer weight-gradient norms and update ratios over steps.

- `gradient_flow_heatmap`: layers x steps, colour = log10 ||dL/dW||_2. Vanishing
  gradients read as a dark band at the input end, explosions as a bright one,
  divergence as red cells.
- `grad_norms_over_time`: the same norms as lines on a log axis, one per layer.
- `update_ratios`: ||W_{t+1} - W_t|| / ||W_t|| per layer against the CS231n
  rule of thumb (about 1e-3: much lower learns slowly, much higher is unstable).
"""

from __future__ import annotations

import matplotlib as mpl
import numpy as np
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.collections import LineCollection
from matplotlib.colors import Normalize, to_rgba
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from workbench.plots.record_view import global_stat, layer_stat, run_label
from workbench.plots.style import (
    MAX_HEATMAP_COLUMNS,
    MAX_LEGEND_LAYERS,
    MAX_LINE_POINTS,
    NONFINITE_COLOR,
    ZERO_COLOR,
    add_epoch_axis,
    depth_colorbar,
    depth_colors,
    downsample_envelope,
    layer_ticks,
    legend_outside,
    log_axis,
    log_safe,
    mark_nonfinite,
    new_figure,
    step_edges,
)

GRAD_NORM_LABEL = "‖∂L/∂W‖₂"
UPDATE_RATIO_RULE = 1e-3          # CS231n, "Neural Networks Part 3": updates/weights ~ 1e-3
UPDATE_RATIO_BAND = (1e-4, 1e-2)  # one decade either side of the rule
HEATMAP_CMAP = "viridis"


def gradient_flow_heatmap(record, *, max_columns: int = MAX_HEATMAP_COLUMNS) -> Figure:
    """Heatmap of log10 weight-gradient norm, layers (input at top) x steps; NaN/Inf red, exact zeros grey.

    Drawn as one image. Runs longer than `max_columns` steps are reduced to blocks of consecutive
    steps, each showing its block's maximum (a block with any NaN/Inf shows as NaN/Inf).
    """
    values = _require(record, "grad_norm")
    layers = list(record.layers)
    steps = np.asarray(record.steps, dtype=float)
    grid, edges, block = _block_max(values.T, steps, max_columns)
    with np.errstate(divide="ignore", invalid="ignore"):
        logs = np.log10(np.where(grid > 0, grid, np.nan))
    nonfinite, zero = ~np.isfinite(grid), np.isfinite(grid) & (grid <= 0)
    finite = logs[np.isfinite(logs)]
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if high <= low:
        low, high = low - 0.5, high + 0.5
    norm, cmap = Normalize(low, high), mpl.colormaps[HEATMAP_CMAP]
    rgba = cmap(norm(np.where(np.isfinite(logs), logs, low)), bytes=True)  # uint8: no conversion when drawn
    rgba[nonfinite] = np.round(np.array(to_rgba(NONFINITE_COLOR)) * 255).astype(np.uint8)
    rgba[zero] = np.round(np.array(to_rgba(ZERO_COLOR)) * 255).astype(np.uint8)

    right = 1.6 if len(layers) <= 40 else 0.9
    fig, (ax,) = new_figure(11, max(3.4, 0.2 * min(len(layers), 60) + 2.2), margins=(0.9, right, 0.75, 0.6))
    ax.imshow(rgba, aspect="auto", interpolation="nearest", origin="upper",
              extent=(edges[0], edges[-1], len(layers) - 0.5, -0.5))
    positions, labels = layer_ticks(layers)
    ax.set_yticks(positions, labels, fontsize=8 if len(layers) > 12 else 9)
    ax.set_ylabel("layer (input at top)")
    ax.set_xlabel("step")
    ax.set_title(f"Gradient flow: weight-gradient norm per layer and step{run_label(record)}", fontsize=10)

    if len(layers) <= 40:
        medians = [_finite_median(values[:, j]) for j in positions]
        side = ax.secondary_yaxis("right")
        side.set_yticks(positions, [f"median {m:.1e}" if np.isfinite(m) else "no finite value" for m in medians],
                        fontsize=7.5)
        side.tick_params(length=0)

    cadence = int(np.median(np.diff(steps))) if len(steps) > 1 else 1
    unit = "step" if cadence <= 1 else "recorded step"
    reduction = f"per {unit}" if block == 1 else f"max over blocks of {block} {unit}s"
    bar = fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=ax, pad=0.12 if len(layers) <= 40 else 0.01,
                       fraction=0.04)
    bar.set_label(rf"$\log_{{10}}$ {GRAD_NORM_LABEL} ({reduction})", fontsize=8)
    handles = []
    if nonfinite.any():
        handles.append(Patch(color=NONFINITE_COLOR, label=f"NaN/Inf ({int((~np.isfinite(values)).sum())} values)"))
    if zero.any():
        handles.append(Patch(color=ZERO_COLOR, label="exactly 0 (no gradient)"))
    if handles:
        fig.legend(handles=handles, loc="lower right", ncols=len(handles), fontsize=8, frameon=False)
    add_epoch_axis(ax, steps, np.asarray(record.epochs))
    return fig


def grad_norms_over_time(record, *, max_points: int = MAX_LINE_POINTS) -> Figure:
    """Per-layer weight-gradient norms over steps on a log axis, coloured by depth; global norm dashed."""
    values = _require(record, "grad_norm")
    fig, ax = _line_figure(record)
    title = f"Weight-gradient norm per layer over training{run_label(record)}"
    _layer_lines(ax, record, values, max_points)
    total = global_stat(record, "grad_norm_global")
    if total is not None:
        x, y = downsample_envelope(record.steps, log_safe(total), max_points)
        ax.plot(x, y, color="black", linestyle="--", linewidth=1.0, alpha=0.7, label="global (all parameters)")
    clipped, after = global_stat(record, "clipped"), global_stat(record, "grad_norm_clipped")
    if clipped is not None and np.nansum(clipped) > 0:
        title += f"\nclipping fired on {np.nanmean(clipped > 0):.0%} of recorded steps"
        if after is not None:
            x, y = downsample_envelope(record.steps, log_safe(after), max_points)
            ax.plot(x, y, color="black", linestyle=":", linewidth=1.0, label="global after clipping")
    ax.set_title(title, fontsize=10)
    ax.set_ylabel(f"{GRAD_NORM_LABEL} (log scale)")
    _legend(fig, ax, record, 2)
    return fig


def update_ratios(record, *, max_points: int = MAX_LINE_POINTS) -> Figure:
    """Per-layer update ratio ||ΔW|| / ||W|| over steps on a log axis, with the ~1e-3 rule-of-thumb band."""
    values = _require(record, "update_ratio")
    fig, ax = _line_figure(record)
    low, high = UPDATE_RATIO_BAND
    ax.axhspan(low, high, color="tab:green", alpha=0.10, label=f"healthy band {_power(low)} to {_power(high)}")
    ax.axhline(UPDATE_RATIO_RULE, color="tab:green", linestyle="--", linewidth=1.2,
               label="CS231n rule of thumb ~1e-3")
    _layer_lines(ax, record, values, max_points)
    ax.set_title(f"Update ratio per layer: how far each step moves the weights{run_label(record)}", fontsize=10)
    ax.set_ylabel("‖W(t+1) − W(t)‖₂ / ‖W(t)‖₂ (log scale)")
    _legend(fig, ax, record, 3)
    return fig


def _line_figure(record) -> tuple[Figure, Axes]:
    """One axes with room on the right for a legend (few layers) or a depth colour bar (many)."""
    few = len(record.layers) <= MAX_LEGEND_LAYERS
    fig, (ax,) = new_figure(10, 5, margins=(0.85, 2.3 if few else 1.9, 0.75, 0.55))
    return fig, ax


def _legend(fig: Figure, ax: Axes, record, extra: int) -> None:
    """The layers in the legend, or, for deep models, a depth colour bar and a legend of the other lines."""
    if len(record.layers) <= MAX_LEGEND_LAYERS:
        legend_outside(ax, len(record.layers) + extra)
        return
    depth_colorbar(fig, ax, list(record.layers))
    handles, labels = ax.get_legend_handles_labels()
    ax.legend(handles, labels, loc="upper right", fontsize=7.5, framealpha=0.85)


def _require(record, stat: str) -> np.ndarray:
    values = layer_stat(record, stat)
    if values is None:
        raise ValueError(f"the record has no '{stat}' rows to plot")
    return values


def _layer_lines(ax: Axes, record, values: np.ndarray, max_points: int) -> None:
    """One log-scale line per layer (depth colours), NaN/Inf marked, epochs on top. Deep models draw
    their layers as one collection (unlabelled: `_legend` gives them a colour bar)."""
    steps = np.asarray(record.steps, dtype=float)
    colors = depth_colors(len(record.layers))
    reduced = [downsample_envelope(steps, log_safe(values[:, j]), max_points) for j in range(len(record.layers))]
    if len(record.layers) <= MAX_LEGEND_LAYERS:
        for name, color, (x, y) in zip(record.layers, colors, reduced):
            ax.plot(x, y, color=color, linewidth=1.3, label=name)
    else:
        segments = [np.column_stack([x, y]) for x, y in reduced]
        ax.add_collection(LineCollection(segments, colors=colors, linewidths=1.0))
        xs = np.concatenate([x for x, _ in reduced])
        ys = np.concatenate([y for _, y in reduced])
        ok = np.isfinite(xs) & np.isfinite(ys)
        if ok.any():  # a collection does not widen the view by itself
            ax.update_datalim(np.column_stack([xs[ok], ys[ok]]))
            ax.autoscale_view()
    log_axis(ax)
    if not np.isfinite(log_safe(values)).any():
        ax.set_ylim(1e-8, 1.0)
        ax.text(0.5, 0.5, "no finite positive value to show", ha="center", va="center",
                transform=ax.transAxes, color=NONFINITE_COLOR)
    applicable = np.isfinite(values).any(axis=0)  # an all-NaN column is a statistic that does not apply
    mark_nonfinite(ax, steps, ~np.isfinite(values[:, applicable]).all(axis=1))
    ax.set_xlabel("step")
    ax.grid(True, which="major", alpha=0.3)
    add_epoch_axis(ax, steps, np.asarray(record.epochs))


def _block_max(grid: np.ndarray, steps: np.ndarray, max_columns: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Columns reduced to at most `max_columns` blocks by their maximum; a block with a NaN/Inf becomes NaN."""
    n_layers, n = grid.shape
    edges = step_edges(steps)
    if n <= max_columns:
        return grid, edges, 1
    size = -(-n // max_columns)
    blocks = -(-n // size)
    pad = blocks * size - n
    padded = np.concatenate([grid, np.zeros((n_layers, pad))], axis=1).reshape(n_layers, blocks, size)
    valid = np.concatenate([np.ones((n_layers, n), bool), np.zeros((n_layers, pad), bool)], axis=1)
    bad = (valid.reshape(n_layers, blocks, size) & ~np.isfinite(padded)).any(axis=2)
    best = np.where(np.isfinite(padded), padded, -np.inf).max(axis=2)
    return np.where(bad, np.nan, best), edges[np.r_[0:n:size, n]], size


def _finite_median(column: np.ndarray) -> float:
    finite = column[np.isfinite(column)]
    return float(np.median(finite)) if finite.size else float("nan")


def _power(value: float) -> str:
    """1e-4 rather than 1e-04."""
    mantissa, exponent = f"{value:.0e}".split("e")
    return f"{mantissa}e{int(exponent)}"
