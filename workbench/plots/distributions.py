"""Distributions across depth: activation spread by layer, and each layer's final weight gradients.

- `activation_std_by_depth`: activation std (y) against layer (x) at a few moments of
  training. Healthy: roughly flat. Shrinking with depth: signal vanishing in the forward
  pass; growing: exploding. The output layer's value is the std of the logits. A second
  panel shows the dead (relu) or saturated (tanh, sigmoid) fraction when the record has it.
- `gradient_histograms`: one small histogram per layer of dL/dW at the end of
  training (the last batch), log counts, NaN/Inf counted in the panel title; beyond
  `MAX_HISTOGRAMS` layers, one image with a row per layer.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from workbench.plots.record_view import layer_stat, run_label
from workbench.plots.style import NONFINITE_COLOR, depth_colors, layer_ticks, log_axis, new_figure, time_colors

# The monitor counts dead units for relu and saturated ones for tanh and sigmoid (0 for the others).
DEAD_ACTIVATIONS = ("relu",)
SATURATING_ACTIVATIONS = ("tanh", "sigmoid")
LOG_STD_RANGE = 30.0  # a log y axis once the std spans more than this factor across depth
MAX_HISTOGRAMS = 8  # panels of `gradient_histograms`; deeper models: one image (no grid that grows with depth)


def activation_std_by_depth(record, *, moments: int = 5) -> Figure:
    """Activation std per hidden layer (x: depth) at the first step, a few epoch ends and the last step.

    The output layer's std (of the logits, a different quantity) goes into the legend, not the axis.
    """
    std = layer_stat(record, "act_std")
    if std is None:
        raise ValueError("the record has no 'act_std' rows to plot")
    layers = list(record.layers)
    hidden = slice(0, len(layers) - 1) if len(layers) > 1 else slice(0, len(layers))
    shown = layers[hidden]
    steps, epochs = np.asarray(record.steps), np.asarray(record.epochs)
    rows, labels = _moments(steps, epochs, moments)
    finite_rows = np.flatnonzero(np.isfinite(std[:, np.isfinite(std).any(axis=0)]).all(axis=1))
    if finite_rows.size and finite_rows[-1] not in rows:  # a diverged end: show the last sane moment too
        rows.insert(-1, int(finite_rows[-1]))
        labels.insert(-1, f"last finite (step {steps[finite_rows[-1]]}, epoch {epochs[finite_rows[-1]]})")
    if len(layers) > 1:
        labels = [f"{label}; logits std {_number(std[row, -1])}" for row, label in zip(rows, labels)]
    unit_stat, unit_label = _unit_stat(record)
    fig, axes = new_figure(12.5 if unit_stat is not None else 8, 5.2, ncols=2 if unit_stat is not None else 1,
                           margins=(0.75, 0.25, 0.7, 1.05), wspace=0.2)
    fig.suptitle(f"Activations by depth at {len(rows)} moments of training{run_label(record)}", fontweight="bold")

    ax = axes[0]
    depth = np.arange(len(shown))
    values = std[:, hidden]
    applicable = np.isfinite(values).any(axis=0)  # all NaN: the statistic does not apply to that layer
    for i, row in enumerate(rows):
        bad = [shown[j] for j in np.flatnonzero(applicable & ~np.isfinite(values[row]))]
        if bad:
            labels[i] += f"; NaN/Inf in {', '.join(bad[:3])}{' ...' if len(bad) > 3 else ''}"
    for row, label, color in zip(rows, labels, time_colors(len(rows))):
        ax.plot(depth, values[row], marker="o", markersize=4, color=color, label=label)
    finite = values[rows][np.isfinite(values[rows])]
    if finite.size and finite.min() > 0 and finite.max() / finite.min() > LOG_STD_RANGE:
        log_axis(ax)
        ax.set_ylabel("activation std (log scale)")
    else:
        ax.set_ylabel("activation std")
        ax.set_ylim(bottom=0, top=max(1.0, 1.1 * float(finite.max())) if finite.size else 1.0)
    ax.set_title("std of each hidden block's activation output" if len(layers) > 1 else "std of the outputs",
                 fontsize=10)
    _depth_axis(ax, shown)
    ax.legend(fontsize=7.5)

    if unit_stat is not None:
        ax = axes[1]
        for row, label, color in zip(rows, labels, time_colors(len(rows))):
            ax.plot(depth, unit_stat[row, hidden], marker="o", markersize=4, color=color)
        ax.set_ylim(-0.03, 1.03)
        ax.set_ylabel(f"{unit_label} (fraction of units)")
        ax.set_title(f"{unit_label} per hidden layer" if len(layers) > 1 else unit_label, fontsize=10)
        _depth_axis(ax, shown)
    return fig


def gradient_histograms(gradients, *, bins: int = 61, max_panels: int = MAX_HISTOGRAMS) -> Figure:
    """Each layer's dL/dW values: small multiples of histograms (log counts) for up to `max_panels` layers,
    else one image, layers (input at top) x value (each row scaled to its own largest |dL/dW|), colour =
    log count: one axes whatever the depth.

    An odd number of bins centres one on zero. `gradients` maps layer name (or "dense1.W"-style parameter
    name) to its gradient array, or is a `GradientSnapshot` (whose step goes into the title). Not
    `model.gradients()` after training: the optimizer step overwrites those buffers with the step taken.
    """
    step = getattr(gradients, "step", None)
    grads = _weight_gradients(getattr(gradients, "gradients", gradients))
    if not grads:
        raise ValueError("no weight gradients to plot")
    if len(grads) > max_panels:
        return _gradient_image(grads, step, bins)
    names = list(grads)
    shown = grads
    n = len(shown)
    ncols = min(4, n)
    nrows = -(-n // ncols)
    fig, axes = new_figure(max(7.0, 3.3 * ncols), 2.6 * nrows + 0.7, nrows=nrows, ncols=ncols,
                           margins=(0.65, 0.2, 0.7, 0.5), wspace=0.35, hspace=0.55)
    when = f"step {step}, the last backward pass" if step is not None else "the last backward pass"
    fig.suptitle(f"Final weight gradients dL/dW per layer ({when})", fontweight="bold")
    colors = depth_colors(len(grads))
    for ax, name in zip(axes, shown):
        color = colors[names.index(name)]
        g = np.asarray(shown[name], dtype=float).ravel()
        finite = g[np.isfinite(g)]
        n_bad = g.size - finite.size
        if finite.size:
            span = float(np.abs(finite).max()) or 1.0  # all zeros: a bar at 0 on a unit range
            counts, edges = np.histogram(finite, bins=bins, range=(-span, span))
            ax.stairs(counts, edges, color=color, fill=True)
            log_axis(ax)
            ax.set_ylim(0.8, max(10.0, counts.max() * 1.5))
            ax.set_xlim(-span, span)
            stats = f"||g||={np.linalg.norm(finite):.1e}, std={finite.std():.1e}"
            if not finite.any():
                ax.text(0.5, 0.9, "all values exactly 0", ha="center", va="center", transform=ax.transAxes,
                        color="grey", fontsize=9)
        else:
            log_axis(ax)
            ax.text(0.5, 0.5, "all NaN/Inf", ha="center", va="center", transform=ax.transAxes, color=NONFINITE_COLOR)
            stats = "no finite value"
        ax.set_title(f"{name}  {stats}", fontsize=8.5)
        if n_bad:
            ax.text(0.98, 0.95, f"{n_bad} NaN/Inf", ha="right", va="top", transform=ax.transAxes,
                    color=NONFINITE_COLOR, fontsize=8)
        ax.set_xlabel("∂L/∂W value", fontsize=8.5)
        ax.set_ylabel("count (log scale)", fontsize=8.5)
        ax.tick_params(which="both", labelsize=7.5)
        ax.ticklabel_format(axis="x", style="sci", scilimits=(-2, 3))
        ax.xaxis.get_offset_text().set_fontsize(7.5)
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig


def _gradient_image(grads: dict[str, np.ndarray], step, bins: int) -> Figure:
    """Histograms of every layer as rows of one image (each row over its own [-max|g|, max|g|])."""
    import matplotlib as mpl
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    names = list(grads)
    counts = np.zeros((len(names), bins))
    spans, bad = [], []
    for i, name in enumerate(names):
        g = np.asarray(grads[name], dtype=float).ravel()
        finite = g[np.isfinite(g)]
        bad.append(g.size - finite.size)
        span = float(np.abs(finite).max()) if finite.size else 0.0
        spans.append(span)
        if finite.size:
            counts[i], _ = np.histogram(finite / (span or 1.0), bins=bins, range=(-1.0, 1.0))
    logs = np.log10(counts + 1.0)
    cmap, norm = mpl.colormaps["magma"], Normalize(0.0, max(float(logs.max()), 1.0))
    rgba = cmap(norm(logs), bytes=True)
    for i in np.flatnonzero(np.array(bad) > 0):
        rgba[i, :2] = np.round(np.array(mpl.colors.to_rgba(NONFINITE_COLOR)) * 255).astype(np.uint8)
    fig, (ax,) = new_figure(10, max(3.4, 0.16 * min(len(names), 80) + 2.0), margins=(0.9, 1.9, 0.7, 0.6))
    ax.imshow(rgba, aspect="auto", interpolation="nearest", extent=(-1.0, 1.0, len(names) - 0.5, -0.5))
    positions, labels = layer_ticks(names)
    ax.set_yticks(positions, labels, fontsize=8)
    side = ax.secondary_yaxis("right")
    side.set_yticks(positions, [f"±{spans[i]:.1e}" + (f", {bad[i]} NaN/Inf" if bad[i] else "") for i in positions],
                    fontsize=7.5)
    side.tick_params(length=0)
    ax.set_xlabel("dL/dW value / the layer's largest |dL/dW|  (right: that largest value)")
    ax.set_ylabel("layer (input at top)")
    when = f"step {step}, the last backward pass" if step is not None else "the last backward pass"
    ax.set_title(f"Final weight gradients dL/dW of {len(names)} layers ({when})", fontsize=10)
    bar = fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=ax, pad=0.12, fraction=0.04)
    bar.set_label("log10 (count + 1)", fontsize=8)
    return fig


def _moments(steps: np.ndarray, epochs: np.ndarray, count: int) -> tuple[list[int], list[str]]:
    """Rows to draw: the first, the ends of evenly spaced epochs, the last; with their labels."""
    last = len(steps) - 1
    ends = [int(np.flatnonzero(epochs == e)[-1]) for e in np.unique(epochs)]
    candidates = sorted({0, *ends, last})
    if len(candidates) > count:
        picks = np.unique(np.round(np.linspace(0, len(candidates) - 1, count)).astype(int))
        candidates = [candidates[i] for i in picks]
    labels = []
    for row in candidates:
        where = f"step {steps[row]}"
        if row == 0:
            labels.append(f"first recorded ({where})")
        elif row == last:
            labels.append(f"last ({where}, epoch {epochs[row]})")
        else:
            labels.append(f"end of epoch {epochs[row]} ({where})")
    return candidates, labels


def _number(value: float) -> str:
    return f"{value:.3g}" if np.isfinite(value) else "NaN/Inf"


def _unit_stat(record) -> tuple[np.ndarray | None, str]:
    """Saturated fraction for tanh-like activations, dead fraction for the ReLU family (unknown: the non-zero one)."""
    activation = str(getattr(record, "activation", "") or "").lower()
    if activation in SATURATING_ACTIVATIONS:
        choices = [("sat_frac", "saturated units")]
    elif activation in DEAD_ACTIVATIONS:
        choices = [("dead_frac", "dead units")]
    elif activation:
        return None, ""  # identity and the like: neither applies
    else:
        choices = [("dead_frac", "dead units"), ("sat_frac", "saturated units")]
    for stat, label in choices:
        values = layer_stat(record, stat)
        if values is not None and (activation or np.any(np.nan_to_num(values) > 0)):
            return values, label
    return None, ""


def _depth_axis(ax: Axes, layers: list[str]) -> None:
    positions, labels = layer_ticks(layers)
    ax.set_xticks(positions, labels, rotation=45 if len(layers) > 8 else 0,
                  ha="right" if len(layers) > 8 else "center", fontsize=8)
    ax.set_xlabel("layer (input → output)")
    ax.grid(True, alpha=0.3)


def _weight_gradients(gradients: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Layer name -> weight gradient; of "layer.param" keys only the ".W" ones."""
    if any("." in key for key in gradients):
        return {key.removesuffix(".W"): value for key, value in gradients.items() if key.endswith(".W")}
    return dict(gradients)
