"""What the tests share: waiting for a state, free ports, real servers, fresh MLflow stores, study gates.

No test waits for a while and hopes. A test that needs a process to reach a point (a trial that
the storage reports RUNNING, a run that MLflow reports RUNNING with a metric, a server that answers,
a port that is free again) polls for that state with `wait_until`, whose deadline is generous: it
only runs out when the state never comes, so a faster or a slower machine changes how long a test
takes, never whether it passes. A process that must not move on before the test has acted is held
at a gate (`STUDY_GATE`) instead of being raced.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Callable, TypeVar

T = TypeVar("T")

DEADLINE_S = 600.0  # for a state to come (or a process to end): minutes, where seconds do on a loaded machine


def wait_until(predicate: Callable[[], T], what: str, timeout: float = DEADLINE_S,
               process: subprocess.Popen | None = None, interval: float = 0.05) -> T:
    """Poll `predicate` until it returns something truthy (returned); fail if `process` ends first or
    the deadline passes (the state never came)."""
    deadline = time.monotonic() + timeout
    while True:
        found = predicate()
        if found:
            return found
        if process is not None and process.poll() is not None:
            raise AssertionError(f"the process ended (exit code {process.returncode}) before {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def free_port() -> int:
    """A port nothing listens on now (a server started on it retries another if it is taken meanwhile)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def stop_group(proc: subprocess.Popen, grace: float = 30.0) -> None:
    """SIGTERM to the process group, SIGKILL if it is still there after `grace` seconds; reaped."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, None)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue
    proc.wait()


def kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


# -- MLflow stores ----------------------------------------------------------------------------------------
_TEMPLATE: list[Path] = []


def _template_store() -> Path:
    """An empty SQLite MLflow store with every table made, once per test process (creating the tables
    takes seconds; copying the file takes milliseconds)."""
    if not _TEMPLATE:
        from mlflow import MlflowClient

        folder = Path(tempfile.mkdtemp(prefix="workbench-store-template-"))
        atexit.register(shutil.rmtree, folder, True)
        MlflowClient(f"sqlite:///{folder / 'mlflow.db'}").search_experiments()
        _TEMPLATE.append(folder / "mlflow.db")
    return _TEMPLATE[0]


def sqlite_store(folder: Path, name: str = "mlflow.db") -> str:
    """A fresh, empty SQLite MLflow store `folder/name` (tables made) and its URI. Its Default experiment
    keeps its artifacts in `folder/mlruns/0`, as a store created in `folder` would."""
    folder.mkdir(parents=True, exist_ok=True)
    db = folder / name
    shutil.copyfile(_template_store(), db)
    with sqlite3.connect(db) as connection:
        connection.execute("UPDATE experiments SET artifact_location = ? WHERE experiment_id = 0",
                           (str(folder.resolve() / "mlruns" / "0"),))
    return f"sqlite:///{db}"


# -- mlflow server ------------------------------------------------------------------------------------------
# The tests that need a healthy `mlflow server` and nothing else of it share one (conftest's `mlflow_server`),
# in this xdist group, so that one worker runs them all: each server is two interpreters importing MLflow
# (8-10 s of CPU). They find their runs by id; a test that stops or breaks a server starts its own.
SHARED_SERVER = "tracking_server"  # tests/test_tracking_server.py's group (conftest.SHARED_FIXTURES)


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=5) as response:
            return response.status == 200
    except OSError:
        return False


def start_mlflow_server(folder: Path, backend_uri: str | None = None, port: int | None = None,
                        workers: int = 1) -> tuple[subprocess.Popen, str]:
    """`mlflow server` on 127.0.0.1 (its own process group, log in folder/server.log) once it answers:
    (process, url). Without `port`, a free one; if the server cannot have it (another test took it in
    between), another."""
    folder.mkdir(parents=True, exist_ok=True)
    if backend_uri is None:
        db = folder / "server.db"
        backend_uri = f"sqlite:///{db}" if db.exists() else sqlite_store(folder, "server.db")
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    env.pop("MLFLOW_TRACKING_URI", None)
    for attempt in range(5):
        chosen = port or free_port()
        log = open(folder / "server.log", "a")
        proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend_uri,
             "--artifacts-destination", str(folder / "artifacts"), "--host", "127.0.0.1", "--port", str(chosen),
             "--workers", str(workers)],
            cwd=folder, env=env, stdout=subprocess.DEVNULL, stderr=log, start_new_session=True)
        log.close()
        url = f"http://127.0.0.1:{chosen}"
        try:
            wait_until(lambda: answers(url), f"mlflow server answering on {url}", process=proc, interval=0.2)
            return proc, url
        except AssertionError:
            kill_group(proc)
            if port is not None or attempt == 4:
                raise AssertionError(f"mlflow server did not start on {url}: "
                                     f"{(folder / 'server.log').read_text()[-3000:]}") from None
    raise AssertionError("unreachable")


# -- study gate -----------------------------------------------------------------------------------------------
# Source of a Hook to paste into a study script: `Study(..., trial_hooks=(Gate,))`. At the end of the first
# epoch of a trial (reported to Optuna and logged to MLflow by then) a process writes a file named by its pid
# into $WORKBENCH_TEST_GATE and waits there until the test opens the gate (a file `open`): the test finds
# the process mid-trial however fast or slow the machine is, acts (kill, interrupt), then opens the gate
# for the rest of the study and for the relaunch. Without the variable the hook does nothing.
STUDY_GATE = '''
import os as _os
import time as _time
from pathlib import Path as _Path

from workbench.training import Hook as _Hook


class Gate(_Hook):
    priority = 100  # after the trial's reporter (40) and the tracker (50)

    def on_epoch_end(self, trainer, logs):
        folder = _os.environ.get("WORKBENCH_TEST_GATE")
        if not folder or trainer.epoch != 0 or (_Path(folder) / "open").exists():
            return
        (_Path(folder) / str(_os.getpid())).write_text("waiting at the end of epoch 0\\n")
        while not (_Path(folder) / "open").exists():
            _time.sleep(0.05)
'''


def gate_env(folder: Path, env: dict | None = None) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    return {**(os.environ if env is None else env), "WORKBENCH_TEST_GATE": str(folder)}


def parked(folder: Path) -> set[int]:
    """Pids of the processes waiting at the gate (or that did, if they were killed there)."""
    return {int(p.name) for p in folder.iterdir() if p.name.isdigit()} if folder.exists() else set()


def open_gate(folder: Path) -> None:
    (folder / "open").write_text("")


def assert_statistics_handed_over(logged: list[int], record_steps, log_every: int) -> None:
    """A run's logged steps of one statistic against its record: the first MAX_POINTS points on the cadence
    exactly, then any logged step a record step on the cadence, sorted, once (past them the series is bounded
    by a longer cadence, which a run interrupted late, as on a loaded machine, reaches)."""
    from workbench.tracking.metric_feed import MAX_POINTS

    on_cadence = [int(s) for s in record_steps if s % log_every == 0]
    early = MAX_POINTS * log_every
    assert [s for s in logged if s < early] == [s for s in on_cadence if s < early]
    assert logged == sorted(set(logged)) and set(logged) <= set(on_cadence)
