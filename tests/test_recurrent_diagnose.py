"""Diagnosis through time: healthy recurrent runs are healthy, and small versions of the classic
experiments (experiments/README.md, "Recurrent networks") go the papers' way with the verdicts the
arms deserve. The sick single runs (vanishing_through_time, exploding_through_time) are in
tests/test_diagnose.py's SICK table with every other verdict."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from support import sqlite_store

from workbench.diagnose import HEALTHY, diagnose_record
from workbench.diagnose.figure import diagnosis_figure
from workbench.runner import build_run
from workbench.spec import load_spec, spec_from_dict

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
NO_STOP = {"early_stopping": {"enabled": False}}


def train(spec):
    run = build_run(spec)
    result = run.trainer.fit()
    return run, result, diagnose_record(run.record, spec=spec)


def experiment(name: str, *overrides: str):
    return train(load_spec(EXPERIMENTS / f"{name}.toml", list(overrides)))


HEALTHY_RECURRENT = {
    "lstm_adding": {"data": {"source": "adding", "sequence_length": 10, "n_samples": 1000},
                    "model": {"layers": [{"type": "lstm", "units": 16}]}, "optimizer": {"lr": 0.01},
                    "training": {"loss": "mse", "epochs": 10}, **NO_STOP},
    "gru_temporal_order": {"data": {"source": "temporal_order", "sequence_length": 10, "n_samples": 1000},
                           "model": {"layers": [{"type": "gru", "units": 16}]}, "optimizer": {"lr": 0.01},
                           "training": {"epochs": 10}, **NO_STOP},
}


@pytest.mark.parametrize("name", HEALTHY_RECURRENT)
def test_a_recurrent_run_that_learns_is_healthy(name):
    run, result, diagnosis = train(spec_from_dict(HEALTHY_RECURRENT[name]))
    assert diagnosis.verdict == HEALTHY, diagnosis.report()
    assert result.metrics.get("test/loss") < 0.1


def test_the_figure_draws_the_gradient_through_time_of_each_recurrent_layer():
    spec = spec_from_dict({"data": {"source": "adding", "sequence_length": 20, "n_samples": 200},
                           "model": {"layers": [{"type": "rnn", "units": 8, "return_sequences": True},
                                                {"type": "gru", "units": 4}]},
                           "training": {"loss": "mse", "epochs": 1}, **NO_STOP})
    run, _, diagnosis = train(spec)
    fig = diagnosis_figure(run.record, diagnosis)
    titles = [ax.get_title() for ax in fig.axes]
    for layer in ("rnn1", "gru1"):
        assert any(t.startswith(f"{layer}: gradient through time") for t in titles), titles


def test_the_report_names_layer_horizon_and_singular_value_against_the_threshold():
    spec = spec_from_dict({"data": {"source": "adding", "sequence_length": 60, "n_samples": 400},
                           "model": {"layers": [{"type": "rnn", "units": 16}]},
                           "training": {"loss": "mse", "epochs": 2}, **NO_STOP})
    _, _, diagnosis = train(spec)
    finding = diagnosis.finding("vanishing_through_time")
    assert finding is not None and finding.layers == ["rnn1"]
    assert "horizon" in finding.summary and "of 60 steps" in finding.summary and "1/gamma = 1" in finding.summary
    layer = finding.evidence["layers"]["rnn1"]
    assert layer["item"] == "model.layers[0]" and layer["singular_value_threshold"] == 1.0
    assert 0 <= layer["horizon_steps"] < 59
    assert any('type = "lstm"' in advice for advice in finding.advice)


# -- small versions of the classic experiments ----------------------------------------------------------------
@pytest.mark.slow
def test_pascanu_clipping_removes_the_exploding_episodes():
    """Temporal order, T = 50, tanh rnn, SGD 0.01, batches of 20: without clipping, gradient spikes throw the
    loss up and the diagnosis says exploding through time; clipped at 1 it learns further and is not."""
    _, plain, plain_diagnosis = experiment("pascanu_temporal_order", "training.epochs=12")
    _, clipped, clipped_diagnosis = experiment("pascanu_temporal_order_clipped", "training.epochs=12")
    assert "exploding_through_time" in plain_diagnosis.verdicts, plain_diagnosis.report()
    assert "exploding_through_time" not in clipped_diagnosis.verdicts, clipped_diagnosis.report()
    assert clipped.metrics["test/accuracy"] > plain.metrics["test/accuracy"]


@pytest.mark.slow
def test_hochreiter_lstm_solves_the_adding_problem_where_the_rnn_stays_at_the_baseline():
    small = ["data.sequence_length=40", "data.n_samples=2000", "training.epochs=15", "training.batch_size=50"]
    _, lstm, lstm_diagnosis = experiment("hochreiter_adding_lstm", *small, 'model.layers=[{type="lstm", units=16}]')
    rnn_run, rnn, rnn_diagnosis = experiment("hochreiter_adding_rnn", *small, 'model.layers=[{type="rnn", units=16}]')
    assert lstm.metrics["test/loss"] < 0.02 < 0.12 < rnn.metrics["test/loss"]  # baseline 0.167
    assert lstm_diagnosis.verdict == HEALTHY, lstm_diagnosis.report()
    assert rnn_diagnosis.verdict == "vanishing_through_time", rnn_diagnosis.report()
    assert np.nanmedian(rnn_run.record.series("time_grad_ratio", "rnn1")) < 1e-3


@pytest.mark.slow
def test_le_irnn_learns_the_adding_problem_where_the_tanh_rnn_does_not():
    small = ["data.sequence_length=30", "data.n_samples=2000", "training.epochs=15"]
    irnn_run, irnn, irnn_diagnosis = experiment("le_adding_irnn", *small)
    tanh_run, tanh, _ = experiment("le_adding_tanh", *small)
    assert irnn.metrics["test/loss"] < 0.05 and irnn.metrics["test/loss"] < tanh.metrics["test/loss"] / 3
    assert irnn_diagnosis.verdict == HEALTHY, irnn_diagnosis.report()
    # the identity carries the gradient over the whole sequence through training; the tanh rnn's fades sooner
    irnn_horizon = irnn_run.record.series("time_horizon", "rnn1")
    assert irnn_horizon[0] == 29 and np.mean(irnn_horizon == 29) > 0.9
    assert np.median(tanh_run.record.series("time_horizon", "rnn1")) < np.median(irnn_horizon)


@pytest.mark.slow
def test_a_tracked_recurrent_run_logs_draws_and_diagnoses(tmp_path, monkeypatch, capsys):
    from workbench.cli import main

    monkeypatch.chdir(tmp_path)
    uri = sqlite_store(tmp_path)  # tables copied from a made template: the agent does not make them (2.5 s)
    code = main(["run", str(EXPERIMENTS / "hochreiter_adding_lstm.toml"), "--set", "training.epochs=1",
                 "--set", "data.n_samples=200", "--set", "data.sequence_length=20", "--tracking-uri", uri,
                 "--json", "--quiet"])
    assert code == 0
    assert main(["diagnose", "latest", "--tracking-uri", uri, "--json"]) == 0
    plots = list(tmp_path.rglob("plots/diagnosis.png"))
    assert plots and plots[0].stat().st_size > 0
    assert '"verdict"' in capsys.readouterr().out
