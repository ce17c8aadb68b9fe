"""All of a run's plots as PNG files with stable names (the `plots/` artifact of an MLflow run)."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Collection, Mapping
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from workbench.plots.animation import gradient_flow_animation
from workbench.plots.distributions import activation_std_by_depth, gradient_histograms
from workbench.plots.gradient_flow import grad_norms_over_time, gradient_flow_heatmap, update_ratios
from workbench.plots.record_view import layer_stat
from workbench.plots.style import save_figure
from workbench.plots.training_curves import loss_curves

# File name -> (what the plot needs, how to draw it). Names are part of the artifact layout: keep them.
PLOT_FILES: dict[str, tuple[str, Callable[..., Figure]]] = {
    "loss.png": ("history", lambda record, history, gradients: loss_curves(history)),
    "gradient_flow.png": ("grad_norm", lambda record, history, gradients: gradient_flow_heatmap(record)),
    "grad_norms.png": ("grad_norm", lambda record, history, gradients: grad_norms_over_time(record)),
    "update_ratios.png": ("update_ratio", lambda record, history, gradients: update_ratios(record)),
    "activation_std.png": ("act_std", lambda record, history, gradients: activation_std_by_depth(record)),
    "grad_histograms.png": ("gradients", lambda record, history, gradients: gradient_histograms(gradients)),
    # a GIF (workbench.plots.animation): its savefig writes the animation, frame by frame over training
    "gradient_flow.gif": ("grad_norm", lambda record, history, gradients: gradient_flow_animation(record)),
}


def save_run_plots(out_dir: str | Path, *, record=None, history: Mapping | None = None, gradients=None,
                   names: Collection[str] | None = None) -> list[Path]:
    """Draw every plot the inputs allow (of `names`, default all of `PLOT_FILES`) and save it as
    `out_dir/<name>.png`; returns the paths written.

    `record`: the run's StatsRecord; `history`: the trainer's epoch history; `gradients`:
    a `GradientSnapshot` (or a layer name -> dL/dW mapping) for the histograms.
    A plot whose input is missing (no history, an empty record, no gradients) is skipped.
    A plot that fails to draw is skipped with a RuntimeWarning, so one bad plot never costs
    a diverged run the others.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, (needs, draw) in PLOT_FILES.items():
        if names is not None and name not in names:
            continue
        if not _available(needs, record, history, gradients):
            continue
        try:
            fig = draw(record, history, gradients)
            save_figure(fig, out_dir / name)
        except Exception as exc:  # noqa: BLE001 - report and keep the other plots
            warnings.warn(f"plot {name} not drawn: {type(exc).__name__}: {exc}", RuntimeWarning, stacklevel=2)
            continue
        written.append(out_dir / name)
    return written


def _available(needs: str, record, history, gradients) -> bool:
    if needs == "history":
        return bool(history) and any(len(v) for k, v in history.items() if k != "epoch")
    if needs == "gradients":
        return bool(getattr(gradients, "gradients", gradients))
    values = layer_stat(record, needs)
    return values is not None and bool(np.isfinite(values).any())
