"""Studies under load and under faults (issue 7): many workers on one journal and one SQLite MLflow
store, and whole invocations SIGKILLed mid-trial then relaunched with the same command.

Each study runs as a real script in a subprocess (the way users run it: `python study.py ...`),
so that stderr of the main process and of every spawned worker is captured and the kill is a
real SIGKILL of real processes.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import optuna
import pytest
from support import DEADLINE_S, STUDY_GATE, gate_env, open_gate, parked, sqlite_store, wait_until

# Lines on stderr that mean a storage race or a crash reached the user.
ALARMS = re.compile(r"database is locked|OperationalError|Traceback|could not annotate|were not logged|"
                    r"Failed to|Error:", re.IGNORECASE)

STRESS_SCRIPT = """
from workbench.studies import Float, Study

study = Study(
    name="stress", seeds=1, n_trials=100, pruner="none", sampler="random", trial_plots=False,
    base={"data": {"source": "moons", "n_samples": 200}, "model": {"hidden": [8]},
          "training": {"epochs": 2, "batch_size": 32}, "monitor": {"every": 1000}},
    space={"optimizer.lr": Float(1e-3, 1e-1, log=True)},
)
if __name__ == "__main__":
    study.main()
"""

# Trials wait at the gate (tests/support.py) at the end of their first epoch until the test has acted: the
# kill or interrupt lands mid-trial on any machine. The gate open, a trial takes a fraction of a second.
KILL_SCRIPT = STUDY_GATE + """
from workbench.studies import Categorical, Study

study = Study(
    name="relaunched", seeds=1, n_trials=3, pruner="none", trial_plots=False, trial_hooks=(Gate,),
    base={"data": {"source": "moons", "n_samples": 200}, "model": {"hidden": [16]}, "training": {"epochs": 3},
          "monitor": {"every": 1}},
    space={"model.init": Categorical(["he_normal", "xavier_normal"])},
)
if __name__ == "__main__":
    study.main()
"""


def load_trials(storage: str, name: str):
    journal = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(storage))
    return optuna.load_study(study_name=name, storage=journal).get_trials(deepcopy=False)


def study_runs(tracking_uri: str, name: str):
    """(client, parent runs, child runs) of a study's experiment."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name(name)
    runs = client.search_runs([experiment.experiment_id], max_results=5000)
    parents = [r for r in runs if r.data.tags.get("workbench.role") == "study"]
    children = [r for r in runs if r.data.tags.get("workbench.role") == "trial"]
    return client, parents, children


def alarms(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if ALARMS.search(line)]


def script_command(tmp_path, text: str, *args: str) -> tuple[list[str], str, str]:
    script = tmp_path / "study_script.py"
    script.write_text(textwrap.dedent(text))
    storage, tracking = str(tmp_path / "optuna.journal"), sqlite_store(tmp_path)
    return ([sys.executable, str(script), "--storage", storage, "--tracking-uri", tracking, "--no-plots", *args], storage,
            tracking)


def clean_env(gate: Path | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["MPLBACKEND"] = "Agg"
    return gate_env(gate, env) if gate is not None else env


# -- concurrency: 4 workers x 25 trials on one journal and one SQLite MLflow store ----------------------
@pytest.mark.slow
def test_four_workers_run_100_trials_with_100_complete_child_runs_and_no_lock_errors(tmp_path):
    command, storage, tracking = script_command(tmp_path, STRESS_SCRIPT, "--workers", "4", "--n-trials", "100")
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=DEADLINE_S, env=clean_env())
    assert done.returncode == 0, done.stderr[-5000:]
    assert alarms(done.stderr) == [], done.stderr[-5000:]

    trials = load_trials(storage, "stress")
    assert sorted(t.number for t in trials) == list(range(100))  # exactly the budget, no duplicate number
    assert Counter(t.state for t in trials) == {optuna.trial.TrialState.COMPLETE: 100}
    assert len({t.user_attrs["worker"] for t in trials}) == 4  # every worker ran trials
    trial_lines = [line for line in done.stderr.splitlines() if line.startswith("trial ")]
    assert len(trial_lines) == 100

    client, parents, children = study_runs(tracking, "stress")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    parent_id = parents[0].info.run_id
    report = {a.path for a in client.list_artifacts(parent_id, "report")}
    assert "report/summary.md" in report and not [p for p in report if p.endswith(".png")]  # --no-plots
    assert len(children) == 100
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent_id}
    by_number = Counter(int(c.data.tags["workbench.trial_number"]) for c in children)
    assert sorted(by_number) == list(range(100)) and set(by_number.values()) == {1}  # one run per trial
    assert {t.user_attrs["mlflow_run_id"] for t in trials} == {c.info.run_id for c in children}
    lr = {t.number: t.params["optimizer.lr"] for t in trials}
    for child in children:
        number = int(child.data.tags["workbench.trial_number"])
        assert child.info.status == "FINISHED", number
        assert child.data.tags["workbench.trial_state"] == "COMPLETE"
        assert child.data.params["trial.number"] == str(number)
        assert float(child.data.params["optimizer.lr"]) == pytest.approx(lr[number], rel=1e-12)
        assert child.data.params["model.hidden"] and child.data.params["training.epochs"] == "2"
        assert {"train/loss", "val/loss", "val/accuracy", "test/accuracy", "objective/mean"} <= set(child.data.metrics)
        for key in ("train/loss", "val/loss", "val/accuracy"):  # the whole curve, not only the last value
            assert len(client.get_metric_history(child.info.run_id, key)) == 2, (number, key)
        top = {a.path for a in client.list_artifacts(child.info.run_id)}
        assert {"spec.toml", "stats", "model"} <= top, (number, top)
        assert [a.path for a in client.list_artifacts(child.info.run_id, "stats")] == ["stats/record.npz"]
        assert "plots" not in top  # trial_plots=False


# -- dead invocations: SIGKILL mid-trial, then the same command again -----------------------------------
def parked_trials(storage: str, name: str, gate: Path, want: int):
    """The RUNNING trials of the processes waiting at the gate, once there are `want` of them: their
    MLflow runs exist and their first epoch is reported (None before)."""
    waiting = parked(gate)
    if len(waiting) < want or not os.path.exists(storage):
        return None
    try:
        trials = load_trials(storage, name)
    except KeyError:  # the study is not in the journal yet
        return None
    running = [t for t in trials if t.state == optuna.trial.TrialState.RUNNING and t.user_attrs.get("mlflow_run_id")
               and t.intermediate_values and int(t.user_attrs["worker"].rpartition(":")[2]) in waiting]
    return running if len(running) >= want else None


def start_study(command, tmp_path, gate: Path) -> subprocess.Popen:
    """The study in its own process group (a terminal's), stderr into a file (a full pipe would block it)."""
    with open(tmp_path / "first.err", "w") as err:
        return subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=err, text=True,
                                start_new_session=True, env=clean_env(gate))


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_relaunch_after_sigkill_reports_the_stale_trials_fails_them_and_completes_the_budget(tmp_path, workers):
    """The whole invocation (main process and its workers) is SIGKILLed while trials run; the same
    command again names each stale trial on stderr, fails it (retried), and ends the budget."""
    command, storage, tracking = script_command(tmp_path, KILL_SCRIPT, "--workers", str(workers))
    gate = tmp_path / "gate"
    first = start_study(command, tmp_path, gate)
    try:
        victims = wait_until(lambda: parked_trials(storage, "relaunched", gate, workers),
                             f"{workers} trial(s) RUNNING and waiting at the gate", process=first)
        os.killpg(first.pid, signal.SIGKILL)  # the main process and every worker: nobody is left to clean up
        first.wait()
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
            first.wait()
    assert first.returncode == -signal.SIGKILL
    open_gate(gate)  # the relaunch runs its trials through
    stale = {t.number: t for t in load_trials(storage, "relaunched") if t.state == optuna.trial.TrialState.RUNNING}
    assert set(stale) >= {t.number for t in victims}

    again = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=DEADLINE_S,
                           env=clean_env(gate))
    assert again.returncode == 0, again.stderr[-5000:]
    assert alarms(again.stderr) == [], again.stderr[-5000:]
    for number, trial in stale.items():  # the report names each stale trial, its worker and what happens to it
        assert (f"workbench: trial {number} lost: worker lost: its process is gone "
                f"(worker {trial.user_attrs['worker']}); retried as a new trial") in again.stderr
    assert trial.user_attrs["worker"].startswith(socket.gethostname() + ":")

    trials = load_trials(storage, "relaunched")
    numbers = [t.number for t in trials]
    assert numbers == list(range(len(trials)))  # no duplicate, no gap
    assert len(trials) == 3 + len(stale)  # the budget, plus one retry per lost trial
    assert all(t.state.is_finished() for t in trials)
    for number in stale:
        lost = trials[number]
        assert lost.state == optuna.trial.TrialState.FAIL
        assert lost.user_attrs["failure_reason"] == (f"worker lost: its process is gone "
                                                     f"(worker {stale[number].user_attrs['worker']})")
        retry = [t for t in trials if t.user_attrs.get("retry_of") == number]
        assert len(retry) == 1 and retry[0].state == optuna.trial.TrialState.COMPLETE
        assert retry[0].user_attrs["failure_reason"] is None  # not inherited from the lost trial
        assert retry[0].params == lost.params
    assert sum(t.state == optuna.trial.TrialState.COMPLETE for t in trials) == 3  # the budget, completed

    _, parents, children = study_runs(tracking, "relaunched")
    assert len(parents) == 1  # the relaunch resumed the parent run
    assert len(children) == len(trials)
    assert Counter(c.data.tags["workbench.trial_number"] for c in children) == Counter(map(str, numbers))
    for number in stale:
        dead = next(c for c in children if c.data.tags["workbench.trial_number"] == str(number))
        assert dead.info.status == "FAILED"
        assert "worker lost: its process is gone" in dead.data.tags["workbench.status_reason"]
    assert all(c.info.status == "FINISHED" for c in children if int(c.data.tags["workbench.trial_number"])
               not in stale)


def one_trial_study(name: str, tmp_path, monkeypatch):
    """An in-process study of 2 tiny trials, 1 of them run: (study, journal path, MLflow URI)."""
    from workbench.studies import Float, Study

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    storage, tracking = str(tmp_path / "optuna.journal"), sqlite_store(tmp_path)
    study = Study(name=name, seeds=1, n_trials=2, pruner="none", sampler="random",
                  base={"data": {"source": "moons", "n_samples": 200}, "model": {"hidden": [8]},
                        "training": {"epochs": 2}, "monitor": {"every": 1000}},
                  space={"optimizer.lr": Float(1e-3, 1e-1, log=True)})
    study.run(n_trials=1, storage=storage, tracking_uri=tracking, quiet=True, plots=False)
    return study, storage, tracking


@pytest.mark.slow
def test_a_trial_asked_for_but_never_claimed_by_a_dead_worker_is_failed_at_the_next_launch(tmp_path, monkeypatch,
                                                                                             capsys):
    """The narrowest kill: after `ask` but before the worker wrote its `worker` attribute. The launch
    reaps it under the budget lock (no live worker can be in that gap then)."""
    study, storage, tracking = one_trial_study("unclaimed", tmp_path, monkeypatch)
    journal = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(storage))
    orphan = optuna.load_study(study_name="unclaimed", storage=journal).ask()  # RUNNING, no `worker`
    capsys.readouterr()

    result = study.run(n_trials=2, storage=storage, tracking_uri=tracking, quiet=True, plots=False)
    err = capsys.readouterr().err
    assert (f"workbench: trial {orphan.number} lost: worker lost: its process is gone (worker unknown worker); "
            "retried as a new trial") in err
    trials = load_trials(storage, "unclaimed")
    assert [t.number for t in trials] == [0, 1, 2]
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL,
                                         optuna.trial.TrialState.COMPLETE]
    assert trials[2].user_attrs["retry_of"] == orphan.number
    assert result.report.counts["RUNNING"] == 0


@pytest.mark.slow
def test_an_interrupted_trial_whose_retry_was_never_queued_is_retried_at_the_next_launch(tmp_path, monkeypatch,
                                                                                           capsys):
    """A worker killed between failing its trial as interrupted and queueing the retry (a second signal
    on a loaded machine): the next launch queues the retry, so the budget stays exact."""
    study, storage, tracking = one_trial_study("unqueued", tmp_path, monkeypatch)
    journal = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(storage))
    loaded = optuna.load_study(study_name="unqueued", storage=journal)
    lost = loaded.ask()
    lost.suggest_float("optimizer.lr", 1e-3, 1e-1, log=True)
    lost.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
    lost.set_user_attr("worker_started", -1)  # not this process's start: a pid reused after the worker died
    lost.set_user_attr("failure_reason", "interrupted")
    loaded.tell(lost, state=optuna.trial.TrialState.FAIL)  # ... and no retry queued
    capsys.readouterr()

    result = study.run(n_trials=2, storage=storage, tracking_uri=tracking, quiet=True, plots=False)
    trials = load_trials(storage, "unqueued")
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL,
                                         optuna.trial.TrialState.COMPLETE]
    assert trials[2].user_attrs["retry_of"] == lost.number and trials[2].params == trials[1].params
    assert result.report.counts["COMPLETE"] == 2
    assert study.run(n_trials=2, storage=storage, tracking_uri=tracking, quiet=True, plots=False).report.counts["COMPLETE"] == 2
    assert len(load_trials(storage, "unqueued")) == 3  # queued once: a later launch adds nothing


# -- interruptions: Ctrl-C (SIGINT to the whole terminal group) or SIGTERM to the main process --------------
@pytest.mark.slow
@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_an_interrupted_study_marks_its_running_trials_and_the_same_command_completes_it(tmp_path, how):
    """The running trials end FAIL ("interrupted") in Optuna and KILLED in MLflow, each queued again; the
    same command again runs those first and completes the budget: no trial lost, none twice."""
    command, storage, tracking = script_command(tmp_path, KILL_SCRIPT, "--workers", "2")
    gate = tmp_path / "gate"
    first = start_study(command, tmp_path, gate)
    try:
        victims = wait_until(lambda: parked_trials(storage, "relaunched", gate, 2),
                             "2 trials RUNNING and waiting at the gate", process=first)
        if how == "ctrl-c":
            os.killpg(first.pid, signal.SIGINT)  # a terminal sends SIGINT to every process of the group
        else:
            os.kill(first.pid, signal.SIGTERM)  # `kill MAIN`: the main process forwards it to its workers
        first.wait(DEADLINE_S)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
            first.wait()
    err = (tmp_path / "first.err").read_text()
    open_gate(gate)
    assert first.returncode == 130, err[-5000:]
    assert alarms(err) == [], err[-5000:]
    trials = {t.number: t for t in load_trials(storage, "relaunched")}
    assert not [t for t in trials.values() if t.state == optuna.trial.TrialState.RUNNING]
    for victim in victims:
        lost = trials[victim.number]
        assert lost.state == optuna.trial.TrialState.FAIL and lost.user_attrs["failure_reason"] == "interrupted"
    waiting = [t for t in trials.values() if t.state == optuna.trial.TrialState.WAITING]
    assert sorted(t.system_attrs["failed_trial"] for t in waiting) == sorted(v.number for v in victims)
    client, parents, children = study_runs(tracking, "relaunched")
    assert len(parents) == 1 and parents[0].info.status == "KILLED"
    for victim in victims:
        run = client.get_run(victim.user_attrs["mlflow_run_id"])
        assert run.info.status == "KILLED" and run.data.tags["workbench.trial_state"] == "FAIL"

    again = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=DEADLINE_S,
                           env=clean_env(gate))
    assert again.returncode == 0, again.stderr[-5000:]
    assert alarms(again.stderr) == [], again.stderr[-5000:]
    trials = load_trials(storage, "relaunched")
    assert [t.number for t in trials] == list(range(len(trials)))  # no gap, no duplicate number
    assert all(t.state.is_finished() for t in trials)
    assert sum(t.state == optuna.trial.TrialState.COMPLETE for t in trials) == 3  # the budget, completed
    for victim in victims:  # each interrupted configuration ran again, once, to the end
        retries = [t for t in trials if t.user_attrs.get("retry_of") == victim.number]
        assert len(retries) == 1 and retries[0].state == optuna.trial.TrialState.COMPLETE
        assert retries[0].params == victim.params
    _, parents, children = study_runs(tracking, "relaunched")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert sorted(int(c.data.tags["workbench.trial_number"]) for c in children) == [t.number for t in trials]


@pytest.mark.slow
def test_ctrl_c_while_a_trials_run_is_saved_stops_the_worker_after_that_trial(tmp_path, monkeypatch, capsys):
    """The first Ctrl-C during a run's save is held back so the run saves whole; a study's worker then stops
    after that trial instead of going on with the budget (it used to: the press was dropped, and the main
    process waited 30 s before it terminated workers that kept training)."""
    from workbench.studies import Float, Study
    from workbench.tracking import artifacts

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    storage, tracking = str(tmp_path / "optuna.journal"), sqlite_store(tmp_path)
    log_record = artifacts.log_record

    def pressed_while_saving(*args, **kwargs):  # Ctrl-C lands while the first trial's record is saved
        if not pressed:
            pressed.append(True)
            os.kill(os.getpid(), signal.SIGINT)
        return log_record(*args, **kwargs)

    pressed: list[bool] = []
    monkeypatch.setattr(artifacts, "log_record", pressed_while_saving)
    study = Study(name="held", seeds=1, n_trials=3, pruner="none", sampler="random", trial_plots=False,
                  base={"data": {"source": "moons", "n_samples": 200}, "model": {"hidden": [8]},
                        "training": {"epochs": 2}, "monitor": {"every": 1000}},
                  space={"optimizer.lr": Float(1e-3, 1e-1, log=True)})
    result = study.run(storage=storage, tracking_uri=tracking, quiet=True, plots=False)
    assert "saving the run to MLflow; interrupt again to abandon saving" in capsys.readouterr().err
    assert result.interrupted
    trials = load_trials(storage, "held")
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE]  # saved whole, and no trial after it
    _, _, children = study_runs(tracking, "held")
    assert [c.info.status for c in children] == ["FINISHED"]
