"""Tracking over HTTP: a real `mlflow server` on 127.0.0.1 with a temporary SQLite backend."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient

import workbench
from workbench.execute import execute
from workbench.spec import load_spec
from workbench.tracking import load_run_record

pytestmark = [pytest.mark.server, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
SPEC = REPO / "experiments" / "digits_mlp.toml"
SMALL = ["model.hidden=[32]", "training.epochs=2", "monitor.log_every=5", "early_stopping.enabled=false"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_health(url: str, proc: subprocess.Popen, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"mlflow server exited with {proc.returncode}"
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"mlflow server did not answer on {url}")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`mlflow server` proxying artifacts into a temporary folder; stopped (whole group) at the end."""
    tmp = tmp_path_factory.mktemp("server")
    port = free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{tmp / 'server.db'}",
         "--artifacts-destination", str(tmp / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1"],
        cwd=tmp, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_health(url, proc)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


def test_run_logged_over_http(server, tmp_path):
    spec = load_spec(SPEC, SMALL)
    outcome = execute(spec, tracking_uri=server)
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
    outcome = execute(spec, tracking_uri=server)
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
    assert logger.close(timeout=120) and logger.dropped == 0
    history = {m.step: m.value for m in client.get_metric_history(run_id, "x")}
    assert history[0] == 1.0 and np.isnan(history[1]) and history[2] > 1e300 and history[3] < -1e300
