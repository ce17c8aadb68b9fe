"""The statistics record's time axis and the monitor's statistics through time for recurrent layers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from workbench.monitor import LAYER_STATS, StatsRecord, load_record
from workbench.monitor.record import MAX_TIME_BINS, time_bins
from workbench.monitor.statistics import HORIZON_FRACTION, RECURRENT_STATS, SpectralNorm, horizon
from workbench.runner import build_run
from workbench.spec import spec_from_dict
from workbench.training import Hook

T = 12
NO_STOP = {"early_stopping": {"enabled": False}}


class KeepTimeNorms(Hook):
    """Keeps each recurrent layer's ||dL/dh_t|| of the last training step (evaluation forwards come after it)."""

    def __init__(self) -> None:
        self.norms: dict[str, np.ndarray] = {}

    def on_after_backward(self, trainer) -> None:
        for layer, _ in trainer.model.walk():
            if hasattr(layer, "time_grad_norms"):
                self.norms[layer.name] = layer.time_grad_norms().copy()


def adding_run(layers: list[dict], steps: int = T, **training):
    spec = spec_from_dict({"data": {"source": "adding", "sequence_length": steps, "n_samples": 200},
                           "model": {"layers": layers},
                           "training": {"loss": "mse", "epochs": 1, "batch_size": 32, **training}, **NO_STOP})
    keep = KeepTimeNorms()
    run = build_run(spec, hooks=(keep,))
    run.trainer.fit()
    assert all(layer.time_grad_norms() is None for layer in run.model.layers if hasattr(layer, "time_grad_norms"))
    run.norms = keep.norms
    return run


# -- the record ----------------------------------------------------------------------------------------------
def test_time_bins_cover_every_step_once():
    for steps in (1, 5, MAX_TIME_BINS, MAX_TIME_BINS + 1, 1000):
        edges = time_bins(steps)
        assert edges[0] == 0 and edges[-1] == steps and np.all(np.diff(edges) >= 1)
        assert len(edges) - 1 == min(steps, MAX_TIME_BINS)


def test_time_series_rows_bin_by_root_mean_square_and_survive_save_load_and_compaction(tmp_path):
    record = StatsRecord(["rnn1", "dense1"], max_records=8)
    record.add_time_series("time_grad_norm", "rnn1", 200)
    record.add_time_series("time_grad_norm", "dense1", 5)  # any layer may have one; short ones are not binned
    rng = np.random.default_rng(0)
    rows = {}
    for step in range(20):  # past max_records: the record compacts (every other row, cadence doubled)
        row = record.start_row(step, 0)
        if row < 0:
            continue
        values = rng.uniform(0.1, 2.0, 200)
        rows[step] = values
        record.set_time_row("time_grad_norm", "rnn1", row, values)
        record.set_time_row("time_grad_norm", "dense1", row, values[:5])
        record.log("loss", float(step))
    edges = record.time_edges("time_grad_norm", "rnn1")
    stored = record.time("time_grad_norm", "rnn1")
    assert stored.shape == (len(record), MAX_TIME_BINS)
    for i, step in enumerate(record.steps):
        expected = [math.sqrt(np.mean(rows[step][a:b] ** 2)) for a, b in zip(edges[:-1], edges[1:])]
        np.testing.assert_allclose(stored[i], expected, rtol=1e-6)
        np.testing.assert_allclose(record.time("time_grad_norm", "dense1")[i], rows[step][:5], rtol=1e-6)
    assert record.global_("loss").tolist() == record.steps.tolist()  # rows stay aligned through compaction
    record.save(tmp_path / "stats.npz")
    loaded = load_record(tmp_path / "stats.npz")
    assert loaded.time_series() == record.time_series()
    np.testing.assert_array_equal(loaded.time("time_grad_norm", "rnn1"), stored)
    np.testing.assert_array_equal(loaded.time_edges("time_grad_norm", "rnn1"), edges)
    row = loaded.start_row(100, 1)  # a loaded record keeps growing, time series included
    loaded.set_time_row("time_grad_norm", "dense1", row, np.ones(5))
    assert loaded.time("time_grad_norm", "dense1")[-1].tolist() == [1.0] * 5


def test_a_record_without_time_series_saves_and_loads_as_before(tmp_path):
    record = StatsRecord(["dense1"])
    record.start_row(0, 0)
    record.log("loss", 1.0)
    record.save(tmp_path / "stats.npz")
    with np.load(tmp_path / "stats.npz") as data:
        assert not [key for key in data.files if key.startswith("time")]
    assert load_record(tmp_path / "stats.npz").time_series() == []


# -- the statistics ----------------------------------------------------------------------------------------------
def test_horizon_counts_the_steps_back_that_keep_a_tenth():
    norms = np.array([1e-4, 0.05, 0.2, 0.5, 1.0])
    ratio, steps = horizon(norms, 0)
    assert ratio == pytest.approx(1e-4) and steps == 2  # t = T-1 and T-2 keep >= 0.1; T-3 does not
    assert horizon(np.array([3.0, 2.0, 1.0]), 0) == (3.0, 2.0)  # never below: the whole sequence
    assert horizon(np.array([1e-9, 0.5, 1.0]), 1) == (0.5, 1.0)  # a truncated window starts later
    assert all(math.isnan(v) for v in horizon(np.array([1.0, 0.0]), 0))
    assert HORIZON_FRACTION == 0.1


def test_spectral_norm_is_exact_first_and_tracks_a_drifting_matrix():
    rng = np.random.default_rng(0)
    M = rng.standard_normal((40, 40)) / np.sqrt(40)
    estimate = SpectralNorm()
    assert estimate(M) == pytest.approx(np.linalg.norm(M, 2), rel=1e-12)
    for _ in range(30):  # small updates, as training makes
        M += 0.01 * rng.standard_normal(M.shape) / np.sqrt(40)
        exact = np.linalg.norm(M, 2)
        value = estimate(M)
        assert value <= exact * (1 + 1e-9) and value == pytest.approx(exact, rel=0.02)


def test_monitor_records_the_gradient_through_time_of_each_recurrent_layer():
    run = adding_run([{"type": "lstm", "units": 6, "return_sequences": True}, {"type": "rnn", "units": 5}])
    record = run.record
    assert record.layers == ["lstm1", "rnn1", "dense1"]
    assert set(RECURRENT_STATS) <= set(record.layer_stats())
    assert record.time_series() == [("time_grad_norm", "lstm1"), ("time_grad_norm", "rnn1")]
    for j, name in enumerate(["lstm1", "rnn1"]):
        norms = run.norms[name]  # the last training step's, which is the last row
        np.testing.assert_allclose(record.time("time_grad_norm", name)[-1], norms, rtol=1e-6)
        ratio, steps = horizon(norms, 0)
        assert record.series("time_grad_ratio", name)[-1] == pytest.approx(ratio, rel=1e-6)
        assert record.series("time_horizon", name)[-1] == steps
        assert np.isfinite(record.series("recurrent_grad_norm", name)).all()
    for stat in RECURRENT_STATS:  # the dense layer has none of them
        assert np.isnan(record.series(stat, "dense1")).all()
    lstm_gates = record.series("gate_sat_frac", "lstm1")
    assert np.isfinite(lstm_gates).all() and ((lstm_gates >= 0) & (lstm_gates <= 1)).all()
    assert np.isnan(record.series("gate_sat_frac", "rnn1")).all()  # no gates
    assert np.isfinite(record.series("sat_frac", "rnn1")).all()  # an rnn's output is its tanh
    assert record.meta["recurrent"]["rnn1"] == {"type": "rnn", "activation": "tanh", "units": 5,
                                                "return_sequences": False, "bptt_steps": 0}


def test_first_singular_value_is_exact_for_each_cell():
    for item, block in [({"type": "rnn", "units": 5, "recurrent_init": "spectral", "spectral_radius": 0.9}, slice(None)),
                        ({"type": "lstm", "units": 5, "recurrent_init": "normal"}, slice(10, 15)),
                        ({"type": "gru", "units": 5, "recurrent_init": "identity", "recurrent_scale": 0.7},
                         slice(10, 15))]:
        spec = spec_from_dict({"data": {"source": "adding", "sequence_length": 6, "n_samples": 100},
                               "model": {"layers": [item]}, "optimizer": {"lr": 1e-12},
                               "training": {"loss": "mse", "epochs": 1}, **NO_STOP})
        run = build_run(spec)
        U = run.model.layers[0].params["U"].copy()
        run.trainer.fit()
        expected = np.linalg.norm(U[:, block].astype(np.float64), 2)
        assert run.record.series("recurrent_sv", run.record.layers[0])[0] == pytest.approx(expected, rel=1e-5)


def test_truncated_bptt_ratio_reads_the_window():
    run = adding_run([{"type": "rnn", "units": 5}], bptt_steps=4)
    norms = run.norms["rnn1"]
    assert norms[: T - 4].max() == 0.0 and norms[T - 4] > 0
    assert run.record.series("time_grad_ratio", "rnn1")[-1] == pytest.approx(norms[T - 4] / norms[-1], rel=1e-6)
    assert run.record.series("time_horizon", "rnn1")[-1] <= 3


def test_an_mlp_record_has_no_recurrent_columns():
    spec = spec_from_dict({"data": {"source": "iris"}, "model": {"hidden": [4]}, "training": {"epochs": 1}})
    run = build_run(spec)
    run.trainer.fit()
    assert run.record.layer_stats() == list(LAYER_STATS)
    assert run.record.time_series() == [] and "recurrent" not in run.record.meta


def test_dense_and_dropout_around_recurrent_layers_in_a_run():
    """dense at every step -> lstm (every step) -> dropout -> gru -> dense -> relu -> output, trained end to end."""
    layers = [{"type": "dense", "units": 6, "per_step": True}, {"type": "tanh"},
              {"type": "lstm", "units": 5, "return_sequences": True}, {"type": "dropout", "rate": 0.2},
              {"type": "gru", "units": 4}, {"type": "dense", "units": 4}, {"type": "relu"}]
    run = adding_run(layers)
    assert run.data.X_train.shape[1:] == (T, 2)
    assert run.record.layers == ["dense1", "lstm1", "gru1", "dense2", "dense3"]
    assert [name for _, name in run.record.time_series()] == ["lstm1", "gru1"]
    assert np.isfinite(run.record.global_("loss")).all()
