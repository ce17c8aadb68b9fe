"""A comparison's two figures (matplotlib, Agg), drawn from its report.

- `confirmed_scores_figure`: each arm's confirmed score on the fresh seeds, mean with its 95%
  interval and the seeds as dots, best first; the best arm's interval shaded; tied arms in green,
  worse in grey, unstable in orange; arms that did not train (or are unfinished) named in words.
- `sensitivity_figure`: each arm's tuning score against its tuned learning rate (the first numeric
  tuned key), one panel per value of the last compared factor (the optimizer), one line per value
  of the others (the init). Pruned trials are hollow, failed ones are crosses at the bottom, the
  setting the arm was confirmed with is a star. A wide plateau is a forgiving arm; a narrow peak
  one that needs its learning rate found.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path

from workbench.studies.report import short_key
from workbench.studies.space import Categorical, label
from workbench.studies.statistics import mean_interval

COLORS = {"best": "#1b7837", "tied": "#5aae61", "worse": "#8c8c8c", "untested": "#4393c3", "unstable": "#e08214"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def confirmed_scores_figure(report, comparison, path: Path) -> bool:
    from matplotlib.lines import Line2D
    from matplotlib.transforms import blended_transform_factory

    from workbench.studies.comparison_report import score_cell

    rows = report.rows
    if not rows:
        return False
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 0.34 * len(rows) + 1.8))
    text_at = blended_transform_factory(ax.transAxes, ax.transData)
    best = report.best_row
    if best is not None and not math.isnan(best.tested.interval.low):
        ax.axvspan(best.tested.interval.low, best.tested.interval.high, color=COLORS["best"], alpha=0.08, lw=0)
    for i, r in enumerate(rows):
        y = len(rows) - 1 - i
        scores = r.scores
        if r.status not in ("confirmed", "unstable") or not scores:
            ax.text(0.01, y, score_cell(r), transform=text_at, va="center", fontsize=8,
                    color="#b2182b" if r.status == "did not train" else "#555555")
            continue
        kind = r.tested.verdict if r.tested is not None else "unstable"
        color = COLORS[kind]
        interval = mean_interval(scores)
        if math.isnan(interval.low):
            ax.plot([interval.mean], [y], "o", color=color)
        else:
            ax.errorbar([interval.mean], [y], xerr=[[interval.mean - interval.low], [interval.high - interval.mean]],
                        fmt="o", color=color, capsize=3, lw=1.5)
        ax.plot(scores, [y - 0.25] * len(scores), ".", color=color, alpha=0.7, ms=5)  # the seeds, under the bar
        if r.status == "unstable":
            ax.text(0.99, y, f"diverged on {len(r.failed_confirmations)} of {r.confirm_seeds} seeds",
                    transform=text_at, ha="right", va="center", fontsize=7, color=COLORS["unstable"])
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([r.arm.label for r in reversed(rows)], fontsize=8)
    ax.set_ylim(-0.7, len(rows) - 0.3)
    ax.set_xlabel(f"{report.score} on fresh seeds (mean and 95% t interval; dots: the seeds)")
    ax.grid(axis="x", alpha=0.3)
    handles = [Line2D([], [], color=COLORS[k], marker="o", lw=1.5, label=k)
               for k in ("best", "tied", "worse", "untested", "unstable")
               if any((r.tested.verdict if r.tested else "unstable" if r.status == "unstable" else None) == k
                      for r in rows)]
    if handles:
        ax.legend(handles=handles, loc="lower right", fontsize=8, title="vs best (Holm)", title_fontsize=8)
    ax.set_title(f"{report.score} of each arm's tuned setting, retrained on fresh seeds", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def sensitivity_figure(report, comparison, path: Path) -> bool:
    from matplotlib.lines import Line2D
    from matplotlib.transforms import blended_transform_factory

    x_key = next((k for k, d in comparison.space.items() if not isinstance(d, Categorical)), None)
    if x_key is None or not report.rows:
        return False
    keys = list(comparison.compare)
    panel_key = keys[-1] if len(keys) > 1 else None
    line_keys = keys[:-1] if len(keys) > 1 else keys
    panels = comparison.compare[panel_key].checked_values() if panel_key else [None]
    lines = list(itertools.product(*(comparison.compare[k].checked_values() for k in line_keys)))
    plt = _pyplot()
    cols = min(4, len(panels))
    grid_rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(grid_rows, cols, figsize=(3.6 * cols + 0.4, 3.2 * grid_rows + 0.9), sharey=True,
                             squeeze=False)
    flat = list(axes.flat)
    cmap = plt.get_cmap("tab10" if len(lines) <= 10 else "tab20")
    for r in report.rows:
        ax = flat[panels.index(r.arm.values[panel_key]) if panel_key else 0]
        color = cmap(lines.index(tuple(r.arm.values[k] for k in line_keys)) % cmap.N)
        done = sorted((t.params[x_key], t.value) for t in r.trials
                      if t.state.name == "COMPLETE" and x_key in t.params)
        if done:
            ax.plot([x for x, _ in done], [v for _, v in done], "-o", color=color, ms=4, lw=1.2, alpha=0.9)
        pruned = [(t.params[x_key], t.intermediate_values[max(t.intermediate_values)]) for t in r.trials
                  if t.state.name == "PRUNED" and x_key in t.params and t.intermediate_values]
        if pruned:
            ax.plot([x for x, _ in pruned], [v for _, v in pruned], "o", mfc="none", color=color, ms=5)
        failed = [t.params[x_key] for t in r.trials if t.state.name == "FAIL" and x_key in t.params]
        if failed:
            bottom = blended_transform_factory(ax.transData, ax.transAxes)
            ax.plot(failed, [0.03] * len(failed), "x", color=color, ms=6, mew=1.5, transform=bottom)
        if r.best is not None and x_key in r.best.params:
            ax.plot([r.best.params[x_key]], [r.best.value], "*", color=color, ms=12, mec="black", mew=0.6)
    log = getattr(comparison.space[x_key], "log", False)
    short = short_key(x_key, [*comparison.space, *keys])
    for i, ax in enumerate(flat):
        if i >= len(panels):
            ax.set_visible(False)
            continue
        if log:
            ax.set_xscale("log")
        if panel_key:
            ax.set_title(f"{short_key(panel_key, keys)} = {label(panels[i])}", fontsize=10)
        ax.set_xlabel(short)
        ax.grid(alpha=0.3)
    for row_axes in axes:
        row_axes[0].set_ylabel(f"tuning {report.metric}\n(mean over seeds)")
    handles = [Line2D([], [], color=cmap(i % cmap.N), marker="o", ms=4, label=", ".join(label(v) for v in values))
               for i, values in enumerate(lines)]
    handles += [Line2D([], [], color="black", marker="*", ls="none", ms=10, label="confirmed setting"),
                Line2D([], [], color="black", marker="o", mfc="none", ls="none", label="pruned (last value)"),
                Line2D([], [], color="black", marker="x", ls="none", label="failed / diverged")]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 5), fontsize=8,
               title=" x ".join(short_key(k, keys) for k in line_keys), title_fontsize=8, frameon=False)
    fig.suptitle(f"Sensitivity: each arm's tuning score against {short} (same budget per arm)", fontsize=11)
    legend_rows = math.ceil(len(handles) / min(len(handles), 5))
    fig.tight_layout(rect=(0, 0.06 + 0.035 * legend_rows, 1, 0.95))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
