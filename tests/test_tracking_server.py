"""Tracking over HTTP: a real `mlflow server` on 127.0.0.1 with a temporary SQLite backend."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient
from support import DEADLINE_S, SHARED_SERVER, kill_group, start_mlflow_server

import workbench
from workbench.execute import execute
from workbench.spec import load_spec
from workbench.tracking import load_run_record

pytestmark = [pytest.mark.server, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
SPEC = REPO / "experiments" / "digits_mlp.toml"
SMALL = ["model.hidden=[32]", "training.epochs=2", "monitor.log_every=5", "early_stopping.enabled=false"]


@pytest.fixture
def server(mlflow_server):
    """The session's `mlflow server` (tests/conftest.py; this module is in its xdist group)."""
    return mlflow_server


def test_the_tests_sharing_a_server_run_in_one_xdist_worker(request):
    """Each xdist worker would start its own server (and build every shared module fixture) if `--dist loadgroup`
    stopped grouping: it silently did with pytest 9.2 (pytest-xdist#1386, hence pytest<9.2 in pyproject.toml)."""
    if os.environ.get("PYTEST_XDIST_WORKER") and getattr(request.config.option, "loadgroup", False):
        assert request.node.nodeid.endswith(f"@{SHARED_SERVER}"), request.node.nodeid


# An experiment of these tests' own on the shared server: the default one's note is whoever creates it first's.
OWN_EXPERIMENT = {"experiment_name": "over-http"}


def test_run_logged_over_http(server, tmp_path):
    spec = load_spec(SPEC, SMALL)
    outcome = execute(spec, tracking_uri=server, tracker_options=OWN_EXPERIMENT)
    client = MlflowClient(server)
    run = client.get_run(outcome.run_id)
    assert run.info.status == "FINISHED" and run.info.artifact_uri.startswith("mlflow-artifacts:")
    assert run.data.params["model.hidden"] == "[32]"
    assert {"train/loss", "val/accuracy", "test/accuracy", "grad_norm/dense1", "grad_norm/global",
            "clip/fraction", "dead_frac/dense1"} <= set(run.data.metrics)
    record = outcome.run.record
    steps = sorted(m.step for m in client.get_metric_history(outcome.run_id, "weight_norm/dense2"))
    assert steps == [int(s) for s in record.steps if s % 5 == 0]
    names = {f.path for f in client.list_artifacts(outcome.run_id)}
    assert {"spec.toml", "stats", "model", "plots"} <= names
    X = outcome.run.data.X_test
    assert np.array_equal(workbench.load_model(outcome.run_id, server).predict(X), outcome.run.model.predict(X))
    assert np.array_equal(load_run_record(outcome.run_id, server).steps, record.steps)


def test_divergent_run_over_http_is_failed(server):
    spec = load_spec(SPEC, [*SMALL, "optimizer.name=sgd", "optimizer.lr=10", "model.init=normal", "model.init_scale=5"])
    # no figures: a diverged run's are drawn and checked on SQLite (tests/test_tracking.py), 2 s of CPU each
    outcome = execute(spec, tracking_uri=server, tracker_options={**OWN_EXPERIMENT, "plots": False})
    client = MlflowClient(server)
    run = client.get_run(outcome.run_id)
    assert run.info.status == "FAILED" and "non-finite" in run.data.tags["workbench.status_reason"]
    assert "model" in {f.path for f in client.list_artifacts(outcome.run_id)}


def test_non_finite_values_over_http(server):
    from workbench.tracking import ensure_experiment
    from workbench.tracking.metric_logger import MetricBlock, MetricLogger

    client = MlflowClient(server)
    run_id = client.create_run(ensure_experiment(client, "non-finite")).info.run_id
    logger = MetricLogger(client, run_id)
    values = np.array([[1.0], [np.nan], [np.inf], [-np.inf]])
    logger.put(MetricBlock(("x",), values, np.arange(4), int(time.time() * 1000)))
    assert logger.close(timeout=DEADLINE_S) and logger.dropped == 0
    history = {m.step: m.value for m in client.get_metric_history(run_id, "x")}
    assert history[0] == 1.0 and np.isnan(history[1]) and history[2] > 1e300 and history[3] < -1e300


def test_server_killed_mid_run_training_goes_on_and_sync_uploads_everything(tmp_path, monkeypatch, capfd):
    """The server dies at the end of epoch 4 of 12: the run trains to the end, says so once, keeps what it
    could not send in the offline folder; with the server back, `workbench sync` completes the run."""
    from workbench.cli import main
    from workbench.training import Hook

    monkeypatch.setenv("WORKBENCH_OFFLINE_DIR", str(tmp_path / "offline"))
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    proc, url = start_mlflow_server(tmp_path)
    port = int(url.rpartition(":")[2])

    class KillServer(Hook):
        def on_epoch_end(self, trainer, logs):
            if trainer.epoch == 4:
                kill_group(proc)

    try:
        spec = load_spec(SPEC, ["model.hidden=[32]", "training.epochs=12", "monitor.log_every=5",
                                "early_stopping.enabled=false"])
        capfd.readouterr()
        outcome = execute(spec, tracking_uri=url, hooks=(KillServer(),))
        err = capfd.readouterr().err
        assert outcome.status == "FINISHED" and outcome.run.trainer.epoch == 12  # training went on to the end
        warnings = [line for line in err.splitlines() if line.startswith("workbench:")]
        assert len(warnings) == 1, err  # told once
        assert "stopped answering" in warnings[0] and "workbench sync" in warnings[0]
        spool = tmp_path / "offline" / outcome.run_id
        assert (spool / "journal.jsonl").is_file()

        proc, _ = start_mlflow_server(tmp_path, port=port)  # the same store, back on the same port
        assert main(["sync"]) == 0
        assert not spool.exists()
        client = MlflowClient(url)
        run = client.get_run(outcome.run_id)
        assert run.info.status == "FINISHED"
        assert run.data.tags["workbench.verdict"] == outcome.verdict
        losses = client.get_metric_history(outcome.run_id, "train/loss")
        assert [m.value for m in sorted(losses, key=lambda m: m.step)] == \
            pytest.approx(outcome.run.trainer.history["train/loss"], rel=1e-6)  # every epoch, once
        record = outcome.run.record
        steps = sorted(m.step for m in client.get_metric_history(outcome.run_id, "weight_norm/dense2"))
        assert steps == [int(s) for s in record.steps if s % 5 == 0]  # none lost, none twice
        assert {"spec.toml", "stats", "model", "plots", "checkpoint", "diagnosis.json"} <= \
            {f.path for f in client.list_artifacts(outcome.run_id)}
        X = outcome.run.data.X_test
        assert np.array_equal(workbench.load_model(outcome.run_id, url).predict(X), outcome.run.model.predict(X))
        assert np.array_equal(load_run_record(outcome.run_id, url).steps, record.steps)
    finally:
        kill_group(proc)
