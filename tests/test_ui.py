"""`workbench ui`: the MLflow UI over the runs' store, answering on 127.0.0.1 until stopped."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from support import DEADLINE_S, free_port, port_is_free, wait_until

from workbench.cli.ui import default_artifact_root, is_loopback, server_command
from workbench.execute import execute
from workbench.spec import load_spec

REPO = Path(__file__).resolve().parents[1]
SPEC = REPO / "experiments" / "digits_mlp.toml"


def workbench_ui(*args: str, cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.Popen([sys.executable, "-m", "workbench", "ui", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def post(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.load(response)


def get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=120) as response:
        return json.load(response)


@pytest.mark.server
@pytest.mark.slow
def test_ui_lists_the_runs_of_the_default_store(tmp_path, monkeypatch):
    # A run logged to the default store of tmp_path (./mlflow.db there)...
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    spec = load_spec(SPEC, ["model.hidden=[16]", "training.epochs=1", "monitor.log_every=5"])
    run_id = execute(spec, tracker_options={"plots": False}).run_id  # the figures are checked elsewhere
    assert (tmp_path / "mlflow.db").is_file() and (tmp_path / "mlruns").is_dir()
    # ... is what `workbench ui` started there shows.
    port = free_port()
    proc = workbench_ui("--port", str(port), cwd=tmp_path)
    try:
        url = proc.stdout.readline().strip()
        assert url == f"http://127.0.0.1:{port}", proc.stderr.read() if proc.poll() is not None else url
        found = post(f"{url}/api/2.0/mlflow/experiments/search", {"max_results": 10})
        experiment = next(e for e in found["experiments"] if e["name"] == "digits-mlp")
        runs = post(f"{url}/api/2.0/mlflow/runs/search", {"experiment_ids": [experiment["experiment_id"]]})["runs"]
        assert [r["info"]["run_id"] for r in runs] == [run_id] and runs[0]["info"]["status"] == "FINISHED"
        listed = get(f"{url}/ajax-api/2.0/mlflow/artifacts/list?run_id={run_id}")  # what the UI's browser asks
        assert {"spec.toml", "model", "stats"} <= {f["path"] for f in listed["files"]}
        artifact = f"{url}/get-artifact?path=spec.toml&run_uuid={run_id}"
        with urllib.request.urlopen(artifact, timeout=120) as response:
            assert b'name = "digits-mlp"' in response.read()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            _, err = proc.communicate(timeout=DEADLINE_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert proc.returncode == 130, err
    link = f"{url}/#/experiments/{experiment['experiment_id']}/runs?workflowType=machine_learning"
    assert f"workbench: the runs of 'digits-mlp': {link}" in err  # MLflow 3 opens on its GenAI view without it
    wait_until(lambda: port_is_free(port), "the port free again (the mlflow server ended with `workbench ui`)")


def test_ui_on_a_server_uri_just_prints_it(tmp_path):
    proc = workbench_ui("--tracking-uri", "http://127.0.0.1:5999", cwd=tmp_path)
    out, err = proc.communicate(timeout=DEADLINE_S)
    assert proc.returncode == 0 and out.strip() == "http://127.0.0.1:5999" and "server" in err


def test_ui_port_in_use_is_a_user_error(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = workbench_ui("--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}", "--port", str(port), cwd=tmp_path)
        out, err = proc.communicate(timeout=DEADLINE_S)
        assert proc.returncode == 2 and out == "" and f"127.0.0.1:{port}" in err and "--port" in err
        assert "warning" not in err
        proc = workbench_ui("--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}", "--port", str(port),
                            "--host", "0.0.0.0", cwd=tmp_path)
        out, err = proc.communicate(timeout=DEADLINE_S)
    assert proc.returncode == 2 and "warning: the MLflow UI has no login" in err


def test_server_command_serves_the_artifacts_runs_write(tmp_path):
    uri = f"sqlite:///{tmp_path / 'sub' / 'runs.db'}"
    command = server_command(uri, "127.0.0.1", 5000)
    assert command[command.index("--backend-store-uri") + 1] == uri
    assert command[command.index("--default-artifact-root") + 1] == (tmp_path / "sub" / "mlruns").as_uri()
    assert command[command.index("--host") + 1] == "127.0.0.1"
    assert default_artifact_root(f"file://{tmp_path}/store") == tmp_path / "store"


@pytest.mark.parametrize("host, loopback", [("127.0.0.1", True), ("localhost", True), ("::1", True),
                                            ("0.0.0.0", False), ("192.168.1.4", False), ("example.org", False)])
def test_loopback_hosts(host, loopback):
    assert is_loopback(host) is loopback
