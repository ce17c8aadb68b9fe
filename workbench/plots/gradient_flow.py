"""Where the gradient went: per-layer weight-gradient norms and update ratios over steps.

- `gradient_flow_heatmap`: layers x steps, colour = log10 ||dL/dW||_2. Vanishing
  gradients read as a dark band at the input end, explosions as a bright one,
  divergence as red cells.
- `grad_norms_over_time`: the same norms as lines on a log axis, one per layer.
- `update_ratios`: ||W_{t+1} - W_t|| / ||W_t|| per layer against the CS231n
  rule of thumb (about 1e-3: much lower learns slowly, much higher is unstable).
"""

from __future__ import annotations

import numpy as np
from matplotlib.axes import Axes
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from workbench.plots.record_view import global_stat, layer_stat, run_label
from workbench.plots.style import (
    MAX_HEATMAP_COLUMNS,
    MAX_LINE_POINTS,
    NONFINITE_COLOR,
    ZERO_COLOR,
    add_epoch_axis,
    depth_colors,
    downsample_envelope,
    legend_outside,
    log_safe,
    mark_nonfinite,
    new_figure,
    step_edges,
)

GRAD_NORM_LABEL = r"$\|\partial L/\partial W\|_2$"
UPDATE_RATIO_RULE = 1e-3          # CS231n, "Neural Networks Part 3": updates/weights ~ 1e-3
UPDATE_RATIO_BAND = (1e-4, 1e-2)  # one decade either side of the rule


def gradient_flow_heatmap(record, *, max_columns: int = MAX_HEATMAP_COLUMNS) -> Figure:
    """Heatmap of log10 weight-gradient norm, layers (input at top) x steps; NaN/Inf red, exact zeros grey.

    Runs longer than `max_columns` steps are reduced to blocks of consecutive steps,
    each showing its block's maximum (a block with any NaN/Inf shows as NaN/Inf).
    """
    values = _require(record, "grad_norm")
    layers = list(record.layers)
    steps = np.asarray(record.steps, dtype=float)
    grid, edges, block = _block_max(values.T, steps, max_columns)
    with np.errstate(divide="ignore", invalid="ignore"):
        logs = np.ma.masked_invalid(np.log10(np.where(grid > 0, grid, np.nan)))
    nonfinite, zero = ~np.isfinite(grid), np.isfinite(grid) & (grid <= 0)

    fig, (ax,) = new_figure(11, max(3.2, 0.32 * len(layers) + 2.2))
    y_edges = np.arange(len(layers) + 1) - 0.5
    mesh = ax.pcolormesh(edges, y_edges, logs, cmap="viridis", shading="flat", rasterized=True)
    categories = np.ma.masked_equal(np.where(nonfinite, 1, np.where(zero, 2, 0)), 0)
    if categories.count():
        ax.pcolormesh(edges, y_edges, categories, cmap=ListedColormap([NONFINITE_COLOR, ZERO_COLOR]),
                      vmin=0.5, vmax=2.5, shading="flat", rasterized=True)
    ax.set_ylim(len(layers) - 0.5, -0.5)
    ax.set_yticks(range(len(layers)), layers, fontsize=8 if len(layers) > 12 else 9)
    ax.set_ylabel("layer (input at top)")
    ax.set_xlabel("step")
    ax.set_title(f"Gradient flow: weight-gradient norm per layer and step{run_label(record)}")

    medians = [_finite_median(values[:, j]) for j in range(len(layers))]
    right = ax.secondary_yaxis("right")
    right.set_yticks(range(len(layers)), [f"median {m:.1e}" if np.isfinite(m) else "no finite value" for m in medians],
                     fontsize=8)
    right.tick_params(length=0)

    cadence = int(np.median(np.diff(steps))) if len(steps) > 1 else 1
    unit = "step" if cadence <= 1 else "recorded step"
    reduction = f"per {unit}" if block == 1 else f"max over blocks of {block} {unit}s"
    bar = fig.colorbar(mesh, ax=ax, pad=0.01, fraction=0.04)
    bar.set_label(rf"$\log_{{10}}$ {GRAD_NORM_LABEL} ({reduction})")
    handles = []
    if nonfinite.any():
        handles.append(Patch(color=NONFINITE_COLOR, label=f"NaN/Inf ({int((~np.isfinite(values)).sum())} values)"))
    if zero.any():
        handles.append(Patch(color=ZERO_COLOR, label="exactly 0 (no gradient)"))
    if handles:
        fig.legend(handles=handles, loc="outside lower right", ncols=len(handles), fontsize=8)
    add_epoch_axis(ax, steps, np.asarray(record.epochs))
    return fig


def grad_norms_over_time(record, *, max_points: int = MAX_LINE_POINTS) -> Figure:
    """Per-layer weight-gradient norms over steps on a log axis, coloured by depth; global norm dashed."""
    values = _require(record, "grad_norm")
    fig, (ax,) = new_figure(10, 5)
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
    ax.set_title(title)
    ax.set_ylabel(f"{GRAD_NORM_LABEL} (log scale)")
    legend_outside(ax, len(record.layers) + 2)
    return fig


def update_ratios(record, *, max_points: int = MAX_LINE_POINTS) -> Figure:
    """Per-layer update ratio ||ΔW|| / ||W|| over steps on a log axis, with the ~1e-3 rule-of-thumb band."""
    values = _require(record, "update_ratio")
    fig, (ax,) = new_figure(10, 5)
    low, high = UPDATE_RATIO_BAND
    ax.axhspan(low, high, color="tab:green", alpha=0.10, label=f"healthy band {_power(low)} to {_power(high)}")
    ax.axhline(UPDATE_RATIO_RULE, color="tab:green", linestyle="--", linewidth=1.2,
               label="CS231n rule of thumb ~1e-3")
    _layer_lines(ax, record, values, max_points)
    ax.set_title(f"Update ratio per layer: how far each step moves the weights{run_label(record)}")
    ax.set_ylabel(r"$\|W_{t+1} - W_t\|_2 \,/\, \|W_t\|_2$ (log scale)")
    legend_outside(ax, len(record.layers) + 3)
    return fig


def _require(record, stat: str) -> np.ndarray:
    values = layer_stat(record, stat)
    if values is None:
        raise ValueError(f"the record has no '{stat}' rows to plot")
    return values


def _layer_lines(ax: Axes, record, values: np.ndarray, max_points: int) -> None:
    """One log-scale line per layer (depth colours), NaN/Inf marked, epochs on top."""
    steps = np.asarray(record.steps, dtype=float)
    for j, (name, color) in enumerate(zip(record.layers, depth_colors(len(record.layers)))):
        x, y = downsample_envelope(steps, log_safe(values[:, j]), max_points)
        ax.plot(x, y, color=color, linewidth=1.3, label=name)
    ax.set_yscale("log")
    if not np.isfinite(log_safe(values)).any():
        ax.set_ylim(1e-8, 1.0)
        ax.text(0.5, 0.5, "no finite positive value to show", ha="center", va="center",
                transform=ax.transAxes, color=NONFINITE_COLOR)
    applicable = np.isfinite(values).any(axis=0)  # an all-NaN column is a statistic that does not apply
    mark_nonfinite(ax, steps, ~np.isfinite(values[:, applicable]).all(axis=1))
    ax.set_xlabel("step")
    ax.grid(True, which="major", alpha=0.3)
    ax.grid(True, which="minor", alpha=0.08)
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
