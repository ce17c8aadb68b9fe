"""Many machines: workers share a PostgreSQL study and an `mlflow server`; a killed worker's trial is retried.

A real PostgreSQL server (Debian's `postgresql` package) is started on 127.0.0.1 with a throwaway
data directory (as the `postgres` user when the tests run as root), and a real `mlflow server`
whose backend store is a database on it. Two study processes, as on two machines, share the study;
one is SIGKILLed mid-trial (its trial held at a gate until then, tests/support.py), and the other fails
that trial once its heartbeat is stale and retries it.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from support import (DEADLINE_S, STUDY_GATE, free_port, gate_env, open_gate, parked, start_mlflow_server, stop_group,
                     wait_until)

pytestmark = [pytest.mark.server, pytest.mark.slow]

PG_BIN = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
STUDY = STUDY_GATE + """
from workbench.studies import Categorical, Study

study = Study(
    name="shared", seeds=1, n_trials=6, pruner="none", trial_hooks=(Gate,),
    base={"data": {"source": "moons", "n_samples": 200}, "model": {"hidden": [16]}, "training": {"epochs": 3},
          "monitor": {"every": 1}},
    space={"model.init": Categorical(["he_normal", "xavier_normal", "orthogonal"])},
)
if __name__ == "__main__":
    study.main()
"""


def as_postgres_user(command: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: run its tools as the `postgres` user then."""
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


@pytest.fixture(scope="module")
def postgres():
    """A throwaway PostgreSQL server on 127.0.0.1; yields a URL maker: url("dbname")."""
    if not PG_BIN:
        pytest.skip("PostgreSQL binaries not found in /usr/lib/postgresql/*/bin (apt-get install -y postgresql)")
    pytest.importorskip("psycopg", reason="psycopg is not installed (pip install 'psycopg[binary]')")
    bin_dir = Path(PG_BIN[-1]).parent
    data = Path(tempfile.mkdtemp(prefix="workbench-pg-"))
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        os.chown(data, user.pw_uid, user.pw_gid)
    subprocess.run(as_postgres_user([str(bin_dir / "initdb"), "-D", str(data / "db"), "-U", "workbench",
                                     "--auth=trust", "--no-sync"]), check=True, capture_output=True)
    for _ in range(5):  # a free port, unless a test running beside this one takes it first
        port = free_port()
        options = f"-p {port} -c listen_addresses=127.0.0.1 -k {data} -c fsync=off -c max_connections=200"
        started = subprocess.run(as_postgres_user([str(bin_dir / "pg_ctl"), "-D", str(data / "db"), "-o", options,
                                                   "-l", str(data / "log"), "-w", "-t", str(int(DEADLINE_S)),
                                                   "start"]), capture_output=True, text=True)
        if started.returncode == 0:
            break
    else:
        log = (data / "log").read_text()[-3000:] if (data / "log").exists() else ""
        raise AssertionError(f"PostgreSQL did not start: {started.stderr}{log}")
    try:
        for name in ("studies", "mlflow"):
            subprocess.run([str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "workbench", name],
                           check=True, capture_output=True)
        yield lambda name: f"postgresql://workbench@127.0.0.1:{port}/{name}"
    finally:
        subprocess.run(as_postgres_user([str(bin_dir / "pg_ctl"), "-D", str(data / "db"), "-m", "immediate", "stop"]),
                       capture_output=True)
        shutil.rmtree(data, ignore_errors=True)


@pytest.fixture(scope="module")
def mlflow_server(postgres, tmp_path_factory):
    """`mlflow server` on 127.0.0.1 with its backend store in PostgreSQL; stopped (whole group) at the end. One
    uvicorn worker: it serves the two machines' requests concurrently all the same (a thread pool), without two
    more interpreters importing MLflow (10 s of CPU)."""
    proc, url = start_mlflow_server(tmp_path_factory.mktemp("mlflow-server"), postgres("mlflow"))
    try:
        yield url
    finally:
        stop_group(proc)


def test_two_machines_share_a_study_and_a_killed_workers_trial_is_retried(postgres, mlflow_server, tmp_path):
    import optuna
    from mlflow import MlflowClient

    script = tmp_path / "shared_study.py"
    script.write_text(STUDY)
    storage = postgres("studies")
    command = [sys.executable, str(script), "--storage", storage, "--tracking-uri", mlflow_server,
               "--heartbeat-interval", "1", "--grace-period", "15", "--no-plots"]
    gate = tmp_path / "gate"
    logs = [open(tmp_path / f"machine{k}.err", "w") for k in range(2)]
    machines = [subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=log, text=True,
                                 start_new_session=True, env=gate_env(gate)) for log in logs]
    for log in logs:
        log.close()
    victim_proc, survivor = machines
    try:
        def victims_parked_trial():
            """The first machine's trial: RUNNING in the storage, its process waiting at the gate."""
            if victim_proc.pid not in parked(gate):
                return None
            try:
                study = optuna.load_study(study_name="shared", storage=storage)
            except KeyError:
                return None
            return next((t for t in study.get_trials(states=(optuna.trial.TrialState.RUNNING,))
                         if t.user_attrs.get("worker", "").endswith(f":{victim_proc.pid}")
                         and t.user_attrs.get("mlflow_run_id") and t.intermediate_values), None)

        victim = wait_until(victims_parked_trial, "a trial of the first machine RUNNING at the gate",
                            process=victim_proc)
        os.killpg(victim_proc.pid, signal.SIGKILL)
        open_gate(gate)
        survivor.wait(DEADLINE_S)
    finally:
        for proc in machines:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    err = (tmp_path / "machine1.err").read_text()
    assert survivor.returncode == 0, err

    trials = optuna.load_study(study_name="shared", storage=storage).get_trials()
    assert len(trials) == 7, err  # the budget of 6 plus the retry of the lost trial
    assert all(t.state.is_finished() for t in trials)
    lost = next(t for t in trials if t.number == victim.number)
    assert lost.state == optuna.trial.TrialState.FAIL
    retry = next(t for t in trials if t.user_attrs.get("retry_of") == victim.number)
    assert retry.state == optuna.trial.TrialState.COMPLETE and retry.params == lost.params
    assert {t.user_attrs["worker"].rpartition(":")[2] for t in trials} >= {str(victim_proc.pid), str(survivor.pid)}
    assert f"trial {victim.number} lost: no heartbeat for 15 s" in err

    client = MlflowClient(mlflow_server)
    experiment = client.get_experiment_by_name("shared")
    runs = client.search_runs([experiment.experiment_id], max_results=100)
    parents = [r for r in runs if r.data.tags.get("workbench.role") == "study"]
    children = [r for r in runs if r.data.tags.get("workbench.role") == "trial"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(children) == 7
    assert all(c.data.tags["mlflow.parentRunId"] == parents[0].info.run_id for c in children)
    assert sorted(int(c.data.tags["workbench.trial_number"]) for c in children) == list(range(7))
    dead = next(c for c in children if c.info.run_id == victim.user_attrs["mlflow_run_id"])
    assert dead.info.status == "FAILED"
    assert "no heartbeat" in dead.data.tags["workbench.status_reason"]
    for t in trials:
        if t.number != victim.number:
            assert t.user_attrs.get("mlflow_run_id"), (t.state, t.user_attrs, err)
            run = client.get_run(t.user_attrs["mlflow_run_id"])
            assert run.info.status == "FINISHED" and run.data.tags["workbench.trial_number"] == str(t.number)


def test_a_unique_key_race_on_postgresql_is_recognised_in_the_servers_words(postgres):
    """Two workers logging one dataset at once: the store refuses the second insert. Over HTTP the client
    sees only the server's message (PostgreSQL's words, not SQLite's `IntegrityError`); the loser must still
    know it lost a race and try again (a trial failed for it in CI, its run left without its id)."""
    import sqlalchemy
    from mlflow.exceptions import MlflowException, RestException
    from mlflow.protos.databricks_pb2 import INTERNAL_ERROR

    from workbench.tracking.datasets import is_insert_race

    engine = sqlalchemy.create_engine(postgres("studies"))
    with engine.connect() as conn:
        conn.execute(sqlalchemy.text("CREATE TEMP TABLE race (k int PRIMARY KEY)"))
        conn.execute(sqlalchemy.text("INSERT INTO race VALUES (1)"))
        with pytest.raises(sqlalchemy.exc.IntegrityError) as refused:
            conn.execute(sqlalchemy.text("INSERT INTO race VALUES (1)"))
    engine.dispose()
    on_the_server = MlflowException(refused.value, INTERNAL_ERROR)  # what the store raises, the cause chained
    over_http = RestException({"error_code": "INTERNAL_ERROR", "message": on_the_server.message})
    assert is_insert_race(on_the_server) and is_insert_race(over_http)
    assert not is_insert_race(RestException({"error_code": "INTERNAL_ERROR", "message": "connection reset by peer"}))
