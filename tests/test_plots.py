"""Plots: each figure has its title, labels and scales; long and diverged runs draw; no pyplot state leaks."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.figure import Figure

from workbench.monitor.record import StatsRecord
from workbench.plots import (
    PLOT_FILES,
    GradientSnapshot,
    activation_std_by_depth,
    grad_norms_over_time,
    gradient_flow_heatmap,
    gradient_histograms,
    loss_curves,
    save_run_plots,
    update_ratios,
)
from workbench.plots.style import MAX_HEATMAP_COLUMNS, MAX_LINE_POINTS, downsample_envelope

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
LAYERS = ["dense1", "dense2", "dense3"]
HISTORY = {"epoch": [0.0, 1.0, 2.0], "train/loss": [1.2, 0.6, 0.4], "val/loss": [1.3, 0.7, 0.5],
           "val/accuracy": [0.6, 0.8, 0.9]}


def make_record(n_steps: int = 60, steps_per_epoch: int = 20, activation: str = "tanh",
                bad_from: int | None = None, layers: list[str] = LAYERS) -> StatsRecord:
    """A real StatsRecord with gradient norms shrinking toward the input; NaN/Inf from `bad_from` on."""
    rng = np.random.default_rng(0)
    record = StatsRecord(layers, activation=activation, max_records=10 * n_steps + 2)
    for step in range(n_steps):
        record.start_row(step, step // steps_per_epoch)
        for j, name in enumerate(layers):
            norm = 10.0 ** (j - len(layers)) * np.exp(rng.normal(0, 0.2))
            if bad_from is not None and step >= bad_from:
                norm = np.inf if step == bad_from else np.nan
            record.log_layer("grad_norm", name, norm)
            record.log_layer("update_ratio", name, norm * 1e-2)
            record.log_layer("act_std", name, 0.8 ** j)
            record.log_layer("sat_frac", name, 0.1 * j if j < len(layers) - 1 else np.nan)
        record.log("grad_norm_global", 1.0)
    return record


@pytest.fixture(autouse=True)
def no_pyplot_figures():
    """Library code never opens pyplot figures (they would leak in long-lived processes)."""
    plt.close("all")
    yield
    assert plt.get_fignums() == []


@pytest.fixture(scope="module")
def real_run():
    """A real 3-epoch digits run: (record, history, gradient snapshot, model)."""
    from workbench.runner import build_run
    from workbench.spec import spec_from_dict

    spec = spec_from_dict({
        "name": "plots-test", "seed": 0,
        "data": {"source": "digits", "limit": 400},
        "model": {"hidden": [32, 16], "activation": "relu", "init": "he_normal"},
        "optimizer": {"name": "adam", "lr": 1e-3},
        "training": {"epochs": 3, "batch_size": 32},
        "early_stopping": {"enabled": False},
    })
    run = build_run(spec)
    snapshot = GradientSnapshot()
    run.trainer.register(snapshot)
    result = run.trainer.fit()
    return run.record, result.history, snapshot, run.model


def titles(fig: Figure) -> list[str]:
    return [ax.get_title() for ax in fig.axes]


# -- each figure ------------------------------------------------------------------------
def test_loss_curves_has_a_loss_and_a_score_panel():
    fig = loss_curves(HISTORY)
    loss_ax, score_ax = fig.axes[:2]
    assert loss_ax.get_title() == "loss" and loss_ax.get_xlabel() == "epoch"
    assert "loss" in loss_ax.get_ylabel()
    assert {"train/loss", "val/loss"} <= set(loss_ax.get_legend_handles_labels()[1])
    assert score_ax.get_title().startswith("validation accuracy")
    assert "accuracy" in score_ax.get_ylabel()


def test_loss_curves_regression_shows_r2_and_log_scale_for_wide_losses():
    fig = loss_curves({"epoch": [0, 1, 2], "train/loss": [100.0, 1.0, 0.1], "val/loss": [90.0, 2.0, 0.5],
                       "val/r2": [-1.0, 0.5, 0.9]})
    assert fig.axes[0].get_yscale() == "log" and "log scale" in fig.axes[0].get_ylabel()
    assert "R²" in fig.axes[1].get_ylabel()


def test_gradient_flow_heatmap_labels_layers_steps_and_colourbar(real_run):
    record, *_ = real_run
    fig = gradient_flow_heatmap(record)
    ax = fig.axes[0]
    assert ax.get_title().startswith("Gradient flow")
    assert ax.get_xlabel() == "step" and "input at top" in ax.get_ylabel()
    assert [t.get_text() for t in ax.get_yticklabels()] == record.layers
    assert any("log_{10}" in a.get_ylabel() and "per step" in a.get_ylabel() for a in fig.axes)


def test_grad_norms_over_time_is_log_scale_with_one_line_per_layer(real_run):
    record, *_ = real_run
    fig = grad_norms_over_time(record)
    ax = fig.axes[0]
    assert ax.get_yscale() == "log" and "log scale" in ax.get_ylabel() and ax.get_xlabel() == "step"
    assert "gradient norm" in ax.get_title()
    labels = ax.get_legend_handles_labels()[1]
    assert labels[: len(record.layers)] == record.layers and "global (all parameters)" in labels


def test_update_ratios_shows_the_rule_of_thumb(real_run):
    record, *_ = real_run
    fig = update_ratios(record)
    ax = fig.axes[0]
    assert ax.get_yscale() == "log" and ax.get_xlabel() == "step"
    labels = ax.get_legend_handles_labels()[1]
    assert "CS231n rule of thumb ~1e-3" in labels and set(record.layers) <= set(labels)


def test_activation_std_by_depth_draws_a_few_moments(real_run):
    record, *_ = real_run
    fig = activation_std_by_depth(record)
    ax = fig.axes[0]
    assert "activation std" in ax.get_ylabel() and "layer" in ax.get_xlabel()
    assert [t.get_text() for t in ax.get_xticklabels()] == record.layers[:-1]  # hidden layers on the axis
    labels = ax.get_legend_handles_labels()[1]
    assert 2 <= len(labels) <= 5 and labels[0].startswith("first") and labels[-1].startswith("last")
    assert all("logits std" in label for label in labels)  # the output layer's std goes into the legend
    assert fig.axes[1].get_title() == "dead units per hidden layer"  # relu: the second panel counts dead units


def test_gradient_histograms_one_panel_per_dense_layer(real_run):
    _, _, snapshot, model = real_run
    fig = gradient_histograms(snapshot)
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title().split()[0] for ax in visible] == [layer.name for layer in model.dense_layers]
    assert all(ax.get_yscale() == "log" and "count" in ax.get_ylabel() for ax in visible)
    assert f"step {snapshot.step}" in fig.get_suptitle()


def test_gradient_snapshot_holds_the_last_gradients_not_the_optimizer_step(real_run):
    record, _, snapshot, model = real_run
    assert snapshot.step == record.steps[-1]
    norms = [np.linalg.norm(snapshot.gradients[name]) for name in record.layers]
    np.testing.assert_allclose(norms, record.layer("grad_norm")[-1], rtol=1e-4)
    # after the update the model's gradient buffers hold the step taken, which is why the snapshot exists
    assert not np.allclose(model.gradients()["dense1.W"], snapshot.gradients["dense1"])


# -- saving -----------------------------------------------------------------------------------
@pytest.mark.slow
def test_save_run_plots_writes_every_png_from_a_real_run(real_run, tmp_path):
    record, history, snapshot, _ = real_run
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a healthy run draws without a single warning
        paths = save_run_plots(tmp_path / "plots", record=record, history=history, gradients=snapshot)
    assert [p.name for p in paths] == list(PLOT_FILES)
    for path in paths:
        signature = b"GIF89a" if path.suffix == ".gif" else PNG_SIGNATURE  # gradient_flow.gif: the animation
        assert path.read_bytes()[: len(signature)] == signature and path.stat().st_size > 5_000


def test_save_run_plots_skips_what_it_cannot_draw(tmp_path):
    empty = StatsRecord(LAYERS)
    assert [p.name for p in save_run_plots(tmp_path, record=empty, history=HISTORY)] == ["loss.png"]
    assert save_run_plots(tmp_path / "none", record=None, history={}, gradients=GradientSnapshot()) == []


# -- diverged and long runs -----------------------------------------------------------------------
@pytest.mark.slow
def test_nan_and_inf_draw_and_are_marked(tmp_path):
    record = make_record(bad_from=40)
    history = {"epoch": [0, 1, 2], "train/loss": [1.0, 0.5, float("nan")], "val/loss": [1.1, float("inf"), float("nan")],
               "val/accuracy": [0.5, 0.6, float("nan")]}
    grads = {"dense1.W": np.array([[0.1, np.nan], [np.inf, -0.2]]), "dense2.W": np.full((2, 2), np.nan)}
    paths = save_run_plots(tmp_path, record=record, history=history, gradients=grads)
    assert len(paths) == len(PLOT_FILES)
    heatmap_legend = gradient_flow_heatmap(record).legends[0]
    assert "NaN/Inf" in heatmap_legend.get_texts()[0].get_text()
    assert any("NaN/Inf" in label for label in grad_norms_over_time(record).axes[0].get_legend_handles_labels()[1])
    assert any("NaN/Inf" in label for label in loss_curves(history).axes[0].get_legend_handles_labels()[1])


def test_all_nan_record_still_draws():
    record = make_record(n_steps=10, bad_from=0)
    assert isinstance(grad_norms_over_time(record), Figure)
    assert isinstance(gradient_flow_heatmap(record), Figure)


def test_long_runs_are_reduced_for_drawing():
    record = make_record(n_steps=30_000, steps_per_epoch=1_000)
    lines = grad_norms_over_time(record).axes[0].get_lines()
    assert max(len(line.get_xdata()) for line in lines) <= MAX_LINE_POINTS
    fig = gradient_flow_heatmap(record)
    assert fig.axes[0].images[0].get_array().shape[1] <= MAX_HEATMAP_COLUMNS  # the heat map is one image
    assert any("max over blocks of 30 steps" in a.get_ylabel() for a in fig.axes)


def test_downsample_envelope_keeps_spikes_and_gaps():
    y = np.ones(10_000)
    y[1234], y[5000:5100] = 1e6, np.nan
    x, z = downsample_envelope(np.arange(10_000), y, max_points=200)
    assert len(z) <= 200 and np.nanmax(z) == 1e6 and np.isnan(z).any() and np.all(np.diff(x[np.isfinite(x)]) >= 0)


def test_library_never_imports_pyplot():
    """Figures come from matplotlib.figure.Figure: pyplot's global state is for scripts, not libraries."""
    package = Path(__file__).resolve().parents[1] / "workbench" / "plots"
    importing = re.compile(r"^\s*(import matplotlib\.pyplot|from matplotlib(\.pyplot)? import .*pyplot|from matplotlib\.pyplot)", re.M)
    assert [f.name for f in package.glob("*.py") if importing.search(f.read_text())] == []
