"""The tracking agent (the MLflow side of `workbench run` in a second process): nothing handed over is lost.

- the training process killed outright mid-run: the agent logs what it was handed and ends the run KILLED;
- the agent killed mid-run: the training process goes on and uploads the journal itself at the end;
- a store that cannot be used: one line, exit 2, no journal left behind;
- metric series stay bounded however long the run is planned.

Real `workbench run` processes on SQLite stores in temporary folders; every wait is for a state.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient
from support import DEADLINE_S, assert_statistics_handed_over, free_port, sqlite_store, wait_until

from workbench.plots import PLOT_FILES
from workbench.tracking import load_run_record
from workbench.tracking.agent import PLOT_SHARES
from workbench.tracking.diagnosis import FIGURE_FILE as DIAGNOSIS_FIGURE
from workbench.tracking.metric_feed import MAX_POINTS, MetricFeed

REPO = Path(__file__).resolve().parents[1]
SPEC = REPO / "experiments" / "digits_mlp.toml"
SMALL = ["model.hidden=[32]", "monitor.log_every=5", "early_stopping.enabled=false"]
FOREVER = "training.epochs=1000000"


def launch(tmp_path: Path, uri: str, *overrides: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "MLFLOW_TRACKING_URI": uri, "WORKBENCH_OFFLINE_DIR":
           str(tmp_path / "offline")}
    args = [sys.executable, "-m", "workbench", "run", str(SPEC), "--json", "--quiet"]
    for override in (*SMALL, *overrides):
        args += ["--set", override]
    with open(tmp_path / "run.out", "w") as out, open(tmp_path / "run.err", "w") as err:
        return subprocess.Popen(args, cwd=tmp_path, env=env, stdout=out, stderr=err, text=True)


def agent_of(proc: subprocess.Popen) -> int | None:
    """The pid of the tracking agent the `workbench run` process started."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        if parent == proc.pid and b"workbench.tracking.agent" in cmdline:
            return int(entry.name)
    return None


def epochs_logged(client: MlflowClient, at_least: int):
    """(run id, epochs logged) once the store's run is RUNNING with `at_least` epoch metrics, else None."""
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    if not runs or runs[0].info.status != "RUNNING":
        return None
    seen = len(client.get_metric_history(runs[0].info.run_id, "epoch"))
    return (runs[0].info.run_id, seen) if seen >= at_least else None


def steps(client, run_id: str, key: str) -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, key))


def reap(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait()


@pytest.mark.slow
def test_the_training_process_killed_outright_loses_nothing_it_handed_over(tmp_path):
    uri = sqlite_store(tmp_path)
    client = MlflowClient(uri)
    proc = launch(tmp_path, uri, FOREVER)
    try:
        run_id, seen = wait_until(lambda: epochs_logged(client, 2), "a RUNNING run with 2 epochs logged",
                                  process=proc, interval=0.2)
        agent = agent_of(proc)
        assert agent is not None
        proc.send_signal(signal.SIGKILL)  # no handler runs: only what was written to the journal survives
        proc.wait()
        run = wait_until(lambda: (r := client.get_run(run_id)).info.status != "RUNNING" and r, "the run closed",
                         interval=0.2)
    finally:
        reap(proc)
    assert run.info.status == "KILLED"
    assert "ended without closing the run" in run.data.tags["workbench.status_reason"]
    assert len(steps(client, run_id, "epoch")) >= seen
    logged = steps(client, run_id, "grad_norm/dense1")
    assert logged and logged == sorted(set(logged)) and all(s % 5 == 0 for s in logged)
    wait_until(lambda: not (tmp_path / "offline").exists(), "the agent's journal removed")


@pytest.mark.slow
def test_the_agent_killed_mid_run_the_training_process_uploads_the_rest(tmp_path):
    uri = sqlite_store(tmp_path)
    client = MlflowClient(uri)
    proc = launch(tmp_path, uri, FOREVER)
    try:
        run_id, _ = wait_until(lambda: epochs_logged(client, 2), "a RUNNING run with 2 epochs logged",
                               process=proc, interval=0.2)
        os.kill(agent_of(proc), signal.SIGKILL)
        # the training goes on; then it is interrupted, and closes the run itself
        journal = wait_until(lambda: next((tmp_path / "offline").glob("*/journal.jsonl"), None), "the journal")
        size = journal.stat().st_size
        wait_until(lambda: journal.stat().st_size > size + 10_000, "training going on past the agent's death",
                   process=proc)
        proc.send_signal(signal.SIGINT)
        proc.wait(DEADLINE_S)
    finally:
        reap(proc)
    assert proc.returncode == 130, (tmp_path / "run.err").read_text()
    assert "the tracking agent stopped" in (tmp_path / "run.err").read_text()
    run = client.get_run(run_id)
    assert run.info.status == "KILLED", (tmp_path / "run.err").read_text()
    record = load_run_record(run_id, uri)
    assert_statistics_handed_over(steps(client, run_id, "grad_norm/dense1"), record.steps, 5)
    artifacts = {a.path for a in client.list_artifacts(run_id)}
    assert {"model", "stats", "plots", "diagnosis.json", "spec.toml"} <= artifacts
    assert not (tmp_path / "offline").exists()


@pytest.mark.slow
@pytest.mark.parametrize("store", ["dead server", "a file for a folder"])
def test_a_store_that_cannot_be_used_is_one_line_and_exit_2(tmp_path, store, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    (tmp_path / "file").write_text("")
    uri = f"http://127.0.0.1:{free_port()}" if store == "dead server" else f"sqlite:///{tmp_path / 'file' / 'x.db'}"
    proc = launch(tmp_path, uri, "training.epochs=3")
    proc.wait(DEADLINE_S)
    err = (tmp_path / "run.err").read_text()
    assert proc.returncode == 2, err
    lines = [line for line in err.splitlines() if line.startswith("workbench:")]
    assert lines and lines[-1].startswith(f"workbench: error: cannot log to MLflow at {uri}"), err
    assert (tmp_path / "run.out").read_text() == ""
    assert not (tmp_path / "offline").exists() or not any((tmp_path / "offline").iterdir())


@pytest.mark.slow
def test_a_write_after_the_agent_removed_the_journal_of_an_unusable_store_is_the_agents_one_line_error(
        tmp_path, monkeypatch):
    """A run that reaches a hand-over after the agent found the store unusable (it removes the journal and
    exits 2) gets the agent's error, not a traceback: seen once on CI, a 3-epoch run to a dead server wrote its
    diagnosis into the removed journal and ended with FileNotFoundError (exit 1)."""
    from workbench.errors import UserError
    from workbench.runner import build_run
    from workbench.spec import load_spec
    from workbench.tracking.agent import AgentTracker, TrackingAgent

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("WORKBENCH_OFFLINE_DIR", str(tmp_path / "offline"))
    uri = f"http://127.0.0.1:{free_port()}"
    spec = load_spec(SPEC, list(SMALL))
    agent = TrackingAgent.launch(uri)
    AgentTracker(spec, agent).start(build_run(spec))  # the run's first operations: the agent opens the store
    agent.process.wait(DEADLINE_S)  # it found the store unusable, removed the journal and exited
    assert not agent.directory.exists()
    assert tmp_path.is_dir()  # above the offline folder: the user's, kept (it was removed when it was empty)
    (tmp_path / "diagnosis").mkdir()
    (tmp_path / "diagnosis" / "diagnosis.json").write_text("{}")
    with pytest.raises(UserError, match=f"cannot log to MLflow at {uri}"):
        agent.write({"op": "log_artifacts", "artifact_path": None}, tmp_path / "diagnosis")


@pytest.mark.parametrize("planned", [1_270, 127_000, 36_000_000])
def test_metric_series_are_bounded_whatever_the_planned_length(planned):
    feed = MetricFeed(log_every=10, planned_steps=planned)
    all_steps = np.arange(min(planned, 5_000_000))
    kept = all_steps[(all_steps % feed.cadence == 0) & ((all_steps < feed.switch_step) |
                                                        (all_steps % feed.late_cadence == 0))]
    assert len(kept) <= 2 * MAX_POINTS + 1
    assert np.array_equal(kept[kept < 10_000], np.arange(0, min(planned, 10_000), 10))  # the first 1,000 in full
    if planned <= 10 * MAX_POINTS:
        assert len(kept) == -(-planned // 10)  # a short run: every log_every step


@pytest.mark.slow
def test_the_run_json_names_the_run(tmp_path, capsys, monkeypatch):
    """`workbench run --json` (through the agent) reports the id of the run the store holds."""
    from workbench.cli import main

    monkeypatch.chdir(tmp_path)
    uri = sqlite_store(tmp_path)
    assert main(["run", str(SPEC), "--tracking-uri", uri, "--json", "--quiet", "--set", "training.epochs=1",
                 "--blas-threads", "1", *[a for o in SMALL for a in ("--set", o)]]) == 0
    outcome = json.loads(capsys.readouterr().out)
    client = MlflowClient(uri)
    run = client.get_run(outcome["run_id"])
    assert run.info.status == "FINISHED" and run.data.tags["workbench.verdict"] == outcome["verdict"]
    assert run.data.tags["workbench.blas_threads"] == "1"  # what it trained with (README: Reliability)
    # every figure, the diagnosis figure included, drawn by the agent's children and uploaded before the return
    figures = {a.path.rsplit("/", 1)[-1] for a in client.list_artifacts(outcome["run_id"], "plots")}
    assert figures == {name for share in PLOT_SHARES for name in share}


def test_the_drawing_children_share_every_figure_once():
    names = [name for share in PLOT_SHARES for name in share]
    assert sorted(names) == sorted({*PLOT_FILES, DIAGNOSIS_FIGURE}) and len(PLOT_SHARES) == 2


@pytest.mark.slow
def test_an_agent_dead_before_the_run_exists_leaves_a_journal_that_creates_it(tmp_path, monkeypatch, capfd):
    """The journal alone describes the run: uploaded by the training process (or `workbench sync`) after
    the agent died, it creates the run first."""
    from workbench.execute import execute
    from workbench.spec import load_spec
    from workbench.tracking.agent import TrackingAgent

    monkeypatch.setenv("WORKBENCH_OFFLINE_DIR", str(tmp_path / "offline"))
    uri = sqlite_store(tmp_path)
    agent = TrackingAgent.launch(uri)
    agent.process.kill()  # before it has read anything
    agent.process.wait()
    spec = load_spec(SPEC, [*SMALL, "training.epochs=2"])
    outcome = execute(spec, tracking_uri=uri, tracker_options={"agent": agent})
    assert "the tracking agent stopped" in capfd.readouterr().err
    run = MlflowClient(uri).get_run(outcome.run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == f"digits-mlp {outcome.run_id[:6]}"
    assert steps(MlflowClient(uri), outcome.run_id, "epoch") == [36, 72]
    assert not (tmp_path / "offline").exists()


def test_the_agent_of_a_run_without_figures_does_not_load_matplotlib(tmp_path):
    """`workbench run --no-plots` launches its agent with --no-plots: the agent's warm-up (while the run trains,
    on a core the training may want) leaves matplotlib out; an agent that will draw warms it up."""
    script = """
import json, sys
from pathlib import Path
from workbench.tracking.agent import Agent
for k, draws in enumerate((False, True)):
    folder = Path(sys.argv[1]) / str(k)
    folder.mkdir()
    (folder / "run.json").write_text(json.dumps({"tracking_uri": "sqlite:///unused.db"}))
    Agent(folder, draws_plots=draws).warm_up()
    print("matplotlib" in sys.modules)
"""
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True,
                          timeout=DEADLINE_S, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.stdout.split() == ["False", "True"], done.stderr[-3000:]
