"""The figures of an explanation: heat maps over images, feature importance bars, unit importance.

Built on `matplotlib.figure.Figure` without pyplot (as `workbench.plots`), saved as PNG.
"""

from __future__ import annotations

import numpy as np
from matplotlib.colors import TwoSlopeNorm
from matplotlib.figure import Figure

DPI = 110
MAX_BARS = 30  # features shown in the importance chart (the largest)
TOP_UNITS = 20


def _label(classes, k) -> str:
    return str(classes[k]) if classes is not None and 0 <= k < len(classes) else str(k)


def heatmap_grid(images: np.ndarray, predicted_maps: np.ndarray, true_maps: np.ndarray | None, *,
                 labels: np.ndarray, predicted: np.ndarray, indices=None, classes=None, method: str = "",
                 per_row: int = 4) -> Figure:
    """Per sample: the image, and over it the attribution for the predicted class and for the true class
    (a grid, in the order given: misclassified samples first, their titles in red). Maps are summed over
    channels; red adds to the class's output, blue takes from it; each map's colour scale is symmetric
    around 0; the image's outline is drawn over each map."""
    n = len(images)
    panels = 3 if true_maps is not None else 2
    cols = min(per_row, n) * panels
    rows = -(-n // per_row)
    fig = Figure(figsize=(1.45 * cols, 1.7 * rows + 0.7), dpi=DPI, layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.ravel():
        ax.set_axis_off()
    for i in range(n):
        r, c = divmod(i, per_row)
        base = c * panels
        image = images[i].mean(axis=0) if images[i].ndim == 3 else images[i]
        wrong = labels[i] != predicted[i]
        number = int(indices[i]) if indices is not None else i
        ax = axes[r, base]
        ax.imshow(image, cmap="gray_r", interpolation="nearest")
        ax.set_title(f"#{number}: {_label(classes, labels[i])}", fontsize=8, color="#d62728" if wrong else "black")
        maps = [(predicted_maps[i], f"pred {_label(classes, predicted[i])}")]
        if true_maps is not None:
            maps.append((true_maps[i], f"true {_label(classes, labels[i])}"))
        low, high = float(np.min(image)), float(np.max(image))
        for k, (m, title) in enumerate(maps, start=1):
            m = m.sum(axis=0) if m.ndim == 3 else m
            limit = float(np.abs(m).max()) or 1.0
            ax = axes[r, base + k]
            ax.imshow(m, cmap="RdBu_r", norm=TwoSlopeNorm(0.0, -limit, limit), interpolation="nearest")
            if high > low:
                ax.contour(image, levels=[low + 0.5 * (high - low)], colors="0.25", linewidths=0.6)
            ax.set_title(title, fontsize=8, color="#d62728" if wrong and k == 1 else "black")
    wrong = int(np.sum(labels != predicted))
    fig.suptitle(f"{method.replace('_', ' ')}: each image, then its attribution for the predicted class"
                 + (" and for the true class" if true_maps is not None else "")
                 + f" (outline: the image). {wrong} of {n} misclassified, first, in red. "
                 "Red adds to the class's output, blue takes from it.", fontsize=9)
    return fig


def feature_importance_bars(names: list[str], attribution: np.ndarray, permutation=None, *, method: str = "",
                            max_bars: int = MAX_BARS) -> Figure:
    """Mean |attribution| per feature beside permutation importance (each scaled to its maximum), largest first."""
    order = np.argsort(-attribution)[:max_bars]
    k = len(order)
    fig = Figure(figsize=(9, 0.28 * k + 1.6), dpi=DPI, layout="constrained")
    ax = fig.subplots()
    y = np.arange(k)
    height = 0.4 if permutation is not None else 0.7
    scale = float(attribution[order].max()) or 1.0
    ax.barh(y - (height / 2 if permutation is not None else 0), attribution[order] / scale, height,
            color="tab:blue", label=f"mean |{method.replace('_', ' ')}| (max {scale:.3g})")
    if permutation is not None:
        mean, std = permutation.mean[order], permutation.std[order]
        pscale = float(np.abs(permutation.mean).max()) or 1.0
        ax.barh(y + height / 2, mean / pscale, height, xerr=std / pscale, color="tab:orange", ecolor="0.4",
                label=f"permutation importance: loss rise (max {pscale:.3g}, +-1 std over {permutation.repeats} "
                      "shuffles)")
    ax.set_yticks(y, [names[j] for j in order], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("importance, scaled to the largest of each method")
    ax.axvline(0, color="0.3", linewidth=0.8)
    ax.legend(loc="lower right", fontsize=8)
    shown = f"the {k} largest of {len(attribution)} features" if len(attribution) > k else f"all {k} features"
    ax.set_title(f"Global feature importance on the test split ({shown})", fontsize=10)
    return fig


def unit_importance_figure(importance, top: int = TOP_UNITS) -> Figure:
    """Left: per layer, the summed unit scores and the weight scores; right: the top units."""
    from matplotlib.ticker import NullFormatter

    layers = importance.layers
    rows = importance.top(top)
    height = max(3.2, 0.28 * max(len(layers), len(rows)) + 2.2)
    fig = Figure(figsize=(11, height), dpi=DPI, layout="constrained")
    left, right = fig.subplots(1, 2, width_ratios=[1, 1.2])
    names = [lu.layer for lu in layers]
    y = np.arange(len(layers))
    units_total = np.array([lu.total for lu in layers])
    weights_total = np.array([lu.weight_score for lu in layers])
    left.barh(y - 0.2, units_total, 0.4, color="tab:purple", label="units: sum of unit scores")
    left.barh(y + 0.2, weights_total, 0.4, color="tab:gray", label=r"weights: $\sum |W \cdot \partial L/\partial W|$")
    both = np.concatenate([units_total, weights_total])
    positive = both[both > 0]
    if positive.size and positive.max() / positive.min() > 30:  # decades apart: a log axis
        left.set_xscale("log")
        left.set_xlim(positive.min() / 3, positive.max() * 3)
        left.xaxis.set_minor_formatter(NullFormatter())
        left.set_xlabel("first-order loss change (log scale)")
    else:
        left.set_xlabel("first-order loss change")
    left.set_yticks(y, names, fontsize=8)
    left.set_ylim(len(layers) - 0.5, -0.5)
    left.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.12 if height < 5 else -0.06), ncols=1)
    left.set_title("Per layer (input at top)", fontsize=10)
    yy = np.arange(len(rows))
    right.barh(yy, [r[2] for r in rows], color="tab:purple", label=r"$\sum_n |a \cdot \partial L/\partial a|$ (the ranking)")
    right.scatter([abs(r[3]) for r in rows], yy, marker="|", s=90, color="black", zorder=3,
                  label=r"$|\Delta L|$ if removed for the whole batch (signed estimate)")
    right.set_yticks(yy, [f"{r[0]} unit {r[1]}" for r in rows], fontsize=8)
    right.set_ylim(len(rows) - 0.5, -0.5)
    right.set_xlabel("estimated loss change")
    right.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.12 if height < 5 else -0.06), ncols=1)
    right.set_title(f"Top {len(rows)} units (Molchanov et al. 2017)", fontsize=10)
    fig.suptitle(f"Which units drive the error: first-order estimate of the loss change if removed "
                 f"(loss {importance.loss:.4g})", fontsize=10)
    return fig
