"""Figures of a run, drawn from its statistics record, epoch history and last weight gradients.

    snapshot = GradientSnapshot()               # a hook: keeps the last dL/dW per layer
    run.trainer.register(snapshot)
    result = run.trainer.fit()
    paths = save_run_plots("plots/", record=run.record, history=result.history, gradients=snapshot)

    figs = loss_curves(history), gradient_flow_heatmap(record), grad_norms_over_time(record),
           update_ratios(record), activation_std_by_depth(record), gradient_histograms(snapshot)

Every function returns a `matplotlib.figure.Figure` built without pyplot (no global
state; saving uses Agg). Long runs are reduced for drawing (lines: block min/max,
heatmap: block max), NaN/Inf are marked in red, never dropped silently.
"""

from workbench.plots.distributions import activation_std_by_depth, gradient_histograms
from workbench.plots.gradient_flow import grad_norms_over_time, gradient_flow_heatmap, update_ratios
from workbench.monitor.gradient_snapshot import GradientSnapshot
from workbench.plots.run_plots import PLOT_FILES, save_run_plots
from workbench.plots.training_curves import loss_curves

__all__ = [
    "GradientSnapshot",
    "PLOT_FILES",
    "activation_std_by_depth",
    "grad_norms_over_time",
    "gradient_flow_heatmap",
    "gradient_histograms",
    "loss_curves",
    "save_run_plots",
    "update_ratios",
]
