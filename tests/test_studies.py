"""Studies on real storages (journal file, SQLite MLflow store): budget, resume, workers, failures, report.

Tiny specs (moons, hidden [16], 3 epochs) so that a trial takes well under a second of training.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import optuna
import pytest

from support import DEADLINE_S, STUDY_GATE, gate_env, open_gate, parked, sqlite_store, wait_until

from workbench.errors import UserError
from workbench.studies import Categorical, Float, Quick, Study
from workbench.studies.report import compare, configuration_rows

TINY = {"data": {"source": "moons", "n_samples": 200}, "model": {"hidden": [16]},
        "training": {"epochs": 3, "batch_size": 32}, "monitor": {"every": 5}}
SPACE = {"model.init": Categorical(["he_normal", "xavier_normal"]), "optimizer.lr": Float(1e-3, 1e-1, log=True)}


def tiny_study(name: str = "tiny", **kwargs) -> Study:
    settings = dict(name=name, base=TINY, space=SPACE, metric="val/accuracy", direction="maximize", seeds=2, n_trials=4)
    settings.update(kwargs)
    return Study(**settings)


@pytest.fixture
def stores(tmp_path, monkeypatch):
    """A journal file and an MLflow SQLite store in a fresh folder (also the working directory); the reports
    without their figures (only test_report_is_logged_on_the_parent_run asks for them)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return {"storage": str(tmp_path / "optuna.journal"), "tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
            "quiet": True, "plots": False}


@pytest.fixture
def ready_stores(stores, tmp_path):
    """`stores` with the MLflow store's tables already made (copied: seconds less per test)."""
    assert sqlite_store(tmp_path) == stores["tracking_uri"]
    return stores


def load_trials(storage: str, name: str):
    journal = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(storage))
    return optuna.load_study(study_name=name, storage=journal).get_trials(deepcopy=False)


def mlflow_runs(tracking_uri: str, name: str):
    """(parent runs, child runs) of a study's experiment."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name(name)
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("workbench.role") == "study"]
    children = [r for r in runs if r.data.tags.get("workbench.role") == "trial"]
    return parents, children


# -- user errors, before anything is created -------------------------------------------------------
def test_space_key_that_is_not_a_spec_key_is_one_line_with_a_close_match(stores, tmp_path):
    study = tiny_study(space={"optimizer.learning_rate": Float(1e-3, 1e-1, log=True)})
    with pytest.raises(UserError, match=r"search space key 'optimizer.learning_rate' is not a spec key: "
                                        r"did you mean 'optimizer.lr'\?") as caught:
        study.run(**stores)
    assert "\n" not in str(caught.value)
    assert list(tmp_path.iterdir()) == []  # no journal, no mlflow.db


def test_space_value_the_spec_refuses_names_the_key(stores):
    study = tiny_study(space={"model.init": Categorical(["he_normal", "kaiming"])})
    with pytest.raises(UserError, match=r"search space model.init: .*kaiming"):
        study.run(**stores)


def test_metric_typo_and_wrong_direction_are_user_errors(stores):
    with pytest.raises(UserError, match="did you mean 'val/accuracy'"):
        tiny_study(metric="val/acuracy").run(**stores)
    with pytest.raises(UserError, match="a loss is to minimize"):
        tiny_study(metric="val/loss", direction="maximize").run(**stores)


def test_metric_must_match_the_task_of_the_base_spec(stores):
    with pytest.raises(UserError, match=r"metric val/r2 needs a regression run.*use val/accuracy or val/loss"):
        tiny_study(metric="val/r2").run(**stores)


def test_quick_is_a_separate_study_with_its_own_budget_seeds_and_overrides(stores, tmp_path):
    study = tiny_study(quick=Quick(n_trials=2, seeds=1, overrides={"training.epochs": 1}))
    settings = study.settings(quick=True, storage=stores["storage"], tracking_uri=stores["tracking_uri"])
    assert (settings.study_name, settings.n_trials, settings.seeds) == ("tiny-quick", 2, 1)
    assert settings.base.training.epochs == 1 and settings.base.name == "tiny-quick"
    full = study.settings(n_trials=9, seeds=3, tracking_uri=stores["tracking_uri"])
    assert (full.study_name, full.n_trials, full.seeds, full.base.training.epochs) == ("tiny", 9, 3, 3)
    assert full.storage.url == str(tmp_path / "optuna.journal")  # beside mlflow.db
    with pytest.raises(UserError, match="no quick version"):
        tiny_study().settings(quick=True)


def test_sqlite_storage_is_refused_for_parallel_workers(stores, tmp_path):
    stores["storage"] = f"sqlite:///{tmp_path / 'optuna.db'}"
    with pytest.raises(UserError, match="SQLite is not safe for 2 parallel workers"):
        tiny_study().run(workers=2, **stores)


def test_study_script_typo_exits_2_with_one_line(tmp_path):
    script = tmp_path / "typo_study.py"
    script.write_text(textwrap.dedent("""
        from workbench.studies import Float, Study
        study = Study(name="typo", base={}, space={"optimiser.lr": Float(1e-3, 1e-1, log=True)})
        if __name__ == "__main__":
            study.main()
    """))
    done = subprocess.run([sys.executable, str(script), "--n-trials", "1"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=DEADLINE_S)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "typo_study.py: error: search space key 'optimiser.lr' is not a spec key: did you mean 'optimizer.lr'? "
        "(see workbench/spec/schema.py)"]
    assert not (tmp_path / "optuna.journal").exists() and not (tmp_path / "mlflow.db").exists()


@pytest.mark.slow
def test_study_with_an_unreachable_tracking_server_exits_2_with_one_line_in_seconds(tmp_path):
    import socket
    import time

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    script = tmp_path / "dead_server_study.py"
    script.write_text(textwrap.dedent("""
        from workbench.studies import Float, Study
        study = Study(name="dead-server", base={"data": {"source": "moons", "n_samples": 200}},
                      space={"optimizer.lr": Float(1e-3, 1e-1, log=True)})
        if __name__ == "__main__":
            study.main()
    """))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    start = time.monotonic()
    done = subprocess.run([sys.executable, str(script), "--n-trials", "1", "--tracking-uri", dead], cwd=tmp_path,
                          capture_output=True, text=True, timeout=DEADLINE_S, env=env)
    assert done.returncode == 2, done.stderr[-3000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"dead_server_study.py: error: cannot log the study to MLflow at {dead}")
    assert "check --tracking-uri" in lines[0]
    # MLflow's own retries would sleep about 4 minutes (backoff, which no machine shortens); the bound leaves
    # a loaded machine room to start Python and import MLflow
    assert time.monotonic() - start < 150


# -- workers, budget, resume ---------------------------------------------------------------------------
@pytest.mark.slow
def test_two_workers_on_a_journal_run_exactly_the_budget_with_one_child_run_each(ready_stores):
    result = tiny_study(name="two-workers").run(n_trials=6, workers=2, **ready_stores)

    trials = load_trials(ready_stores["storage"], "two-workers")
    assert sorted(t.number for t in trials) == list(range(6))
    assert all(t.state.is_finished() for t in trials)
    parents, children = mlflow_runs(ready_stores["tracking_uri"], "two-workers")
    assert [p.info.run_id for p in parents] == [result.parent_run_id]
    assert parents[0].info.status == "FINISHED"
    assert len(children) == 6
    assert all(c.data.tags["mlflow.parentRunId"] == result.parent_run_id for c in children)
    from mlflow import MlflowClient

    files = {f.path for f in MlflowClient(ready_stores["tracking_uri"]).list_artifacts(result.parent_run_id, "report")}
    assert result.report.plots == [] and "report/summary.md" in files  # plots=False: the tables, no figure
    assert not [f for f in files if f.endswith(".png")]
    by_number = {int(c.data.tags["workbench.trial_number"]): c for c in children}
    assert sorted(by_number) == list(range(6))  # no duplicates, none missing
    workers = set()
    for t in trials:
        child = by_number[t.number]
        assert t.user_attrs["mlflow_run_id"] == child.info.run_id
        assert child.data.params["trial.number"] == str(t.number)
        assert child.data.params["model.init"] == t.params["model.init"]
        workers.add(t.user_attrs["worker"])
        if t.state == optuna.trial.TrialState.COMPLETE:
            assert child.info.status == "FINISHED"
            assert {"objective/seed0", "objective/seed1", "objective/mean", "objective/std"} <= set(child.data.metrics)
            assert t.value == pytest.approx(sum(t.user_attrs["objective_values"]) / 2)
            assert child.data.metrics["objective/mean"] == pytest.approx(t.value)
        else:
            assert child.info.status == "KILLED" and t.user_attrs["prune_reason"]
    assert len(workers) == 2  # both processes ran trials
    assert result.report.counts["COMPLETE"] + result.report.counts["PRUNED"] == 6


@pytest.mark.slow
def test_resumed_study_continues_numbering_and_runs_only_the_remaining_budget(ready_stores):
    study = tiny_study(name="resume", seeds=1)
    first = study.run(n_trials=2, **ready_stores)
    second = study.run(n_trials=4, **ready_stores)
    third = study.run(n_trials=3, **ready_stores)  # budget already spent: nothing runs, the report is rebuilt

    trials = load_trials(ready_stores["storage"], "resume")
    assert [t.number for t in trials] == [0, 1, 2, 3]
    assert first.parent_run_id == second.parent_run_id == third.parent_run_id
    parents, children = mlflow_runs(ready_stores["tracking_uri"], "resume")
    assert len(parents) == 1 and len(children) == 4
    with pytest.raises(UserError, match="was created with --seeds 1"):
        study.run(n_trials=5, seeds=3, **ready_stores)


# -- failures and pruning ----------------------------------------------------------------------------------
@pytest.mark.slow
def test_divergent_configuration_fails_with_its_reason_and_the_study_completes(ready_stores):
    grid = optuna.samplers.GridSampler({"model.init_scale": [1.0, 100.0]}, seed=0)
    base = {**TINY, "model": {"hidden": [16, 16, 16]}, "optimizer": {"name": "sgd", "lr": 0.1}}
    study = tiny_study(name="diverge", base=base, space={"model.init_scale": Categorical([1.0, 100.0])},
                       sampler=grid, pruner="none")
    result = study.run(n_trials=2, **ready_stores)

    trials = {t.params["model.init_scale"]: t for t in load_trials(ready_stores["storage"], "diverge")}
    assert trials[1.0].state == optuna.trial.TrialState.COMPLETE
    failed = trials[100.0]
    assert failed.state == optuna.trial.TrialState.FAIL
    assert "non-finite" in failed.user_attrs["failure_reason"]
    _, children = mlflow_runs(ready_stores["tracking_uri"], "diverge")
    child = next(c for c in children if c.info.run_id == failed.user_attrs["mlflow_run_id"])
    assert child.info.status == "FAILED"
    assert "non-finite" in child.data.tags["workbench.status_reason"]
    assert result.report.counts == {"COMPLETE": 1, "PRUNED": 0, "FAIL": 1, "RUNNING": 0}
    assert result.exit_code == 0


@pytest.mark.slow
def test_pruned_trials_are_killed_child_runs_with_the_reason(ready_stores):
    study = tiny_study(name="pruned", pruner=optuna.pruners.ThresholdPruner(lower=0.999), seeds=1)
    result = study.run(n_trials=2, **ready_stores)

    trials = load_trials(ready_stores["storage"], "pruned")
    assert [t.state for t in trials] == [optuna.trial.TrialState.PRUNED] * 2
    assert all("pruned at epoch 0 of seed 0" in t.user_attrs["prune_reason"] for t in trials)
    assert all(t.user_attrs["epochs_run"] == 1 for t in trials)
    _, children = mlflow_runs(ready_stores["tracking_uri"], "pruned")
    assert {c.info.status for c in children} == {"KILLED"}
    assert all("pruned" in c.data.tags["workbench.status_reason"] for c in children)
    assert result.exit_code == 1  # no trial completed


# -- the report ----------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_report_is_logged_on_the_parent_run(ready_stores):
    from mlflow import MlflowClient

    result = tiny_study(name="report", pruner="none").run(n_trials=4, **{**ready_stores, "plots": True})
    client = MlflowClient(ready_stores["tracking_uri"])
    files = {f.path for f in client.list_artifacts(result.parent_run_id, "report")}
    assert {"report/summary.md", "report/configurations.csv", "report/trials.csv", "report/summary.json",
            "report/optimization_history.png", "report/intermediate_values.png"} <= files
    parent = client.get_run(result.parent_run_id)
    assert parent.data.metrics["best_value"] == pytest.approx(result.report.best.value)
    assert parent.data.tags["workbench.best_run_id"] == result.report.best.user_attrs["mlflow_run_id"]
    assert "| model.init |" in result.report.markdown
    assert "seed-to-seed noise" in result.report.comparison


def _trial(number: int, init: str, values: list[float]):
    import statistics

    return optuna.trial.create_trial(
        state=optuna.trial.TrialState.COMPLETE, value=sum(values) / len(values), params={"model.init": init},
        distributions={"model.init": optuna.distributions.CategoricalDistribution(["a", "b", "c"])},
        user_attrs={"objective_values": values, "objective_std": statistics.stdev(values)},
    ), number


@pytest.mark.parametrize("b_values, verdict", [([0.50, 0.52, 0.51], "exceeds"), ([0.91, 0.88, 0.90], "is within")])
def test_comparison_weighs_the_best_two_configurations_against_seed_noise(b_values, verdict):
    trials = []
    for number, (init, values) in enumerate([("a", [0.90, 0.92, 0.91]), ("b", b_values), ("c", [0.2, 0.21, 0.19])]):
        trial, _ = _trial(number, init, values)
        trial.number = number
        trials.append(trial)
    rows = configuration_rows(trials, ["model.init"], maximize=True)
    assert [r.config["model.init"] for r in rows] == ["a", "b", "c"]
    text = compare(rows, "val/accuracy")
    assert f"{verdict} the seed-to-seed noise" in text and "Welch" in text


# -- a worker killed mid-trial ----------------------------------------------------------------------------
# Trials wait at the gate (tests/support.py) at the end of their first epoch: the test kills a worker that
# is mid-trial on any machine, then opens the gate for the rest of the study.
KILL_SCRIPT = STUDY_GATE + """
from workbench.studies import Categorical, Study

study = Study(
    name="killed", seeds=1, n_trials=4, pruner="none", trial_hooks=(Gate,),
    base={"data": {"source": "moons", "n_samples": 200}, "model": {"hidden": [16]}, "training": {"epochs": 3},
          "monitor": {"every": 1}},
    space={"model.init": Categorical(["he_normal", "xavier_normal"])},
)
if __name__ == "__main__":
    study.main()
"""


@pytest.mark.slow
def test_a_worker_killed_mid_trial_has_its_trial_failed_retried_and_its_run_marked(tmp_path):
    import signal

    script = tmp_path / "killed_study.py"
    script.write_text(KILL_SCRIPT)
    storage, tracking, gate = str(tmp_path / "optuna.journal"), sqlite_store(tmp_path), tmp_path / "gate"
    with open(tmp_path / "study.err", "w") as stderr:
        main = subprocess.Popen([sys.executable, str(script), "--workers", "2", "--storage", storage,
                                 "--tracking-uri", tracking, "--no-plots"], cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=stderr,
                                text=True, env=gate_env(gate))
    try:
        def parked_trial():
            """A trial that the storage reports RUNNING, whose worker waits at the gate after its first epoch."""
            waiting = parked(gate)
            if not waiting or not os.path.exists(storage):
                return None
            try:
                trials = load_trials(storage, "killed")
            except KeyError:  # the study is not in the journal yet
                return None
            return next((t for t in trials if t.state == optuna.trial.TrialState.RUNNING
                         and t.user_attrs.get("mlflow_run_id") and t.intermediate_values
                         and int(t.user_attrs["worker"].rpartition(":")[2]) in waiting), None)

        victim = wait_until(parked_trial, "a trial RUNNING and waiting at the gate", process=main)
        os.kill(int(victim.user_attrs["worker"].rpartition(":")[2]), signal.SIGKILL)
        open_gate(gate)
        main.wait(DEADLINE_S)
    finally:
        if main.poll() is None:
            main.kill()
            main.wait()
    err = (tmp_path / "study.err").read_text()
    assert main.returncode == 0, err
    trials = load_trials(storage, "killed")
    assert len(trials) == 5, err  # the budget of 4, plus the retry of the lost trial
    lost = next(t for t in trials if t.number == victim.number)
    assert lost.state == optuna.trial.TrialState.FAIL
    retry = next(t for t in trials if t.user_attrs.get("retry_of") == victim.number)
    assert retry.state == optuna.trial.TrialState.COMPLETE and retry.params == lost.params
    assert all(t.state.is_finished() for t in trials)
    _, children = mlflow_runs(tracking, "killed")
    assert len(children) == 5
    dead = next(c for c in children if c.info.run_id == victim.user_attrs["mlflow_run_id"])
    assert dead.info.status == "FAILED"
    assert "worker process died (exit code -9)" in dead.data.tags["workbench.status_reason"]
    assert f"trial {victim.number} lost" in err
