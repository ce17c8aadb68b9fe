"""Runs that read well in the MLflow UI: names, descriptions, dataset inputs and experiment descriptions,
for a single `workbench run` and for a study's parent and child runs, on SQLite and on a real mlflow server.

A single run goes through the tracking agent (`workbench run`, a second process); a study's trials are
tracked in their worker. Optuna's side: the study's objective carries its metric name.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
from mlflow import MlflowClient
from support import SHARED_SERVER, sqlite_store

from workbench.cli import main
from workbench.studies import Categorical, Float, Study
from workbench.tracking.describe import short_number, single_run_name, trial_run_name

REPO = Path(__file__).resolve().parents[1]
SPEC = REPO / "experiments" / "digits_mlp.toml"
SMALL = ["model.hidden=[16]", "training.epochs=2", "early_stopping.enabled=false", "monitor.every=5"]
NOTE = "mlflow.note.content"

TINY_STUDY = Study(
    name="tiny-study",
    description="two inits, a learning rate",
    base={"data": {"source": "digits"}, "model": {"hidden": [16]}, "training": {"epochs": 2},
          "early_stopping": {"enabled": False}, "monitor": {"every": 5, "log_every": 5}},
    space={"model.init": Categorical(["he_normal", "xavier_normal"]), "optimizer.lr": Float(1e-3, 1e-2, log=True)},
    metric="val/accuracy", direction="maximize", seeds=1, n_trials=2, pruner="none", sampler="random",
)


# -- what the names and notes say (pure) ---------------------------------------------------------------
def test_names_say_what_a_run_is():
    assert trial_run_name({"model.init": "he_normal", "optimizer.name": "adam", "optimizer.lr": 0.0016}) == \
        "he_normal adam lr=1.6e-3"
    assert trial_run_name({"optimizer.lr": 0.25, "model.batch_norm": True}, arm="xavier_normal+sgd") == \
        "xavier_normal sgd lr=0.25 True"
    assert single_run_name("digits-mlp", "3f9a2c11d0") == "digits-mlp 3f9a2c"
    assert [short_number(v) for v in (1e-4, 0.5, 64, 12345.0)] == ["1e-4", "0.5", "64", "1.2e4"]


# -- checks shared by the SQLite and server cases -------------------------------------------------------------
def single_run(uri: str, capsys, *extra: str) -> str:
    args = ["run", str(SPEC), "--tracking-uri", uri, "--json", "--quiet", *extra]
    assert main([*args, *[a for o in SMALL for a in ("--set", o)]]) == 0
    return json.loads(capsys.readouterr().out)["run_id"]


def check_single_run(client: MlflowClient, run_id: str) -> None:
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.info.run_name == f"digits-mlp {run_id[:6]}"
    note = run.data.tags[NOTE]
    assert note.startswith("**digits-mlp**") and "MLP 64-16-10" in note and "digits: 1797 samples" in note
    assert "**Verdict: " in note and "| test/accuracy |" in note and "status: FINISHED" in note
    (inputs,) = run.inputs.dataset_inputs
    assert inputs.dataset.name == "digits" and len(inputs.dataset.digest) == 8
    profile = json.loads(inputs.dataset.profile)
    assert profile["train_rows"] + profile["validation_rows"] + profile["test_rows"] == 1797
    assert profile["classes"] == 10 and profile["features_shape"] == [64]
    assert {t.key: t.value for t in inputs.tags}["mlflow.data.context"] == "training"
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.tags[NOTE].startswith("The default experiment: an MLP on scikit-learn's 8x8 digits")


def run_study(uri: str, tmp_path: Path, register: str | None = None):
    return TINY_STUDY.run(n_trials=2, workers=1, storage=str(tmp_path / "optuna.journal"), tracking_uri=uri,
                          quiet=True, register=register, plots=False)


def check_study(client: MlflowClient, result, journal: Path) -> None:
    import optuna
    from optuna.storages.journal import JournalFileBackend

    storage = optuna.storages.JournalStorage(JournalFileBackend(str(journal)))
    optuna_study = optuna.load_study(study_name=result.study_name, storage=storage)
    assert optuna_study.metric_names == ["val/accuracy"]  # optuna-dashboard: val/accuracy, not Objective 0
    parent = client.get_run(result.parent_run_id)
    experiment_id = parent.info.experiment_id
    experiment = client.get_experiment(experiment_id)
    assert experiment.tags[NOTE] == ast.get_docstring(ast.parse(Path(__file__).read_text()))  # the defining script's
    children = client.search_runs([experiment_id], f"tags.`mlflow.parentRunId` = '{result.parent_run_id}'")
    trials = {str(t.number): t for t in optuna_study.get_trials()}
    assert len(children) == 2
    for child in children:
        trial = trials[child.data.tags["workbench.trial_number"]]  # the trial number is kept as a tag
        assert child.info.run_name == trial_run_name(trial.params)
        assert child.info.run_name.split()[0] in ("he_normal", "xavier_normal") and " lr=" in child.info.run_name
        assert child.data.tags[NOTE].startswith("**tiny-study**") and "**Verdict: " in child.data.tags[NOTE]
        assert child.inputs.dataset_inputs[0].dataset.name == "digits"
    note = parent.data.tags[NOTE]
    best = optuna_study.best_trial
    link = f"#/experiments/{experiment_id}/runs/{best.user_attrs['mlflow_run_id']}"
    assert f"**Best trial:** [trial {best.number} ({trial_run_name(best.params)})]({link})" in note
    assert result.report.markdown.strip()[:200] in note  # the comparison table and its conclusion


# -- on SQLite --------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_single_run_on_sqlite(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    uri = sqlite_store(tmp_path)
    check_single_run(MlflowClient(uri), single_run(uri, capsys))
    assert not (tmp_path / ".workbench").exists()  # the agent's journal is gone once everything is in the store


@pytest.mark.slow
def test_study_parent_and_children_on_sqlite_and_the_best_trial_registered(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    uri = sqlite_store(tmp_path)
    client = MlflowClient(uri)
    result = run_study(uri, tmp_path, register="tiny-best")
    check_study(client, result, tmp_path / "optuna.journal")
    version = client.get_model_version("tiny-best", "1")
    best = result.report.best
    assert version.run_id == best.user_attrs["mlflow_run_id"]
    assert version.tags["workbench.trial_number"] == str(best.number) and version.tags["workbench.study"] == "tiny-study"
    assert version.tags["workbench.verdict"] and "test/accuracy" in version.tags


# -- on a real mlflow server --------------------------------------------------------------------------------------
@pytest.fixture
def server(mlflow_server):
    """The session's `mlflow server` (tests/conftest.py), shared with the tests of its xdist group."""
    return mlflow_server


@pytest.mark.server
@pytest.mark.slow
@pytest.mark.xdist_group(SHARED_SERVER)
def test_single_run_on_a_server(server, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    check_single_run(MlflowClient(server), single_run(server, capsys, "--no-plots"))  # figures: on SQLite above


@pytest.mark.server
@pytest.mark.slow
@pytest.mark.xdist_group(SHARED_SERVER)
def test_study_parent_and_children_on_a_server(server, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    check_study(MlflowClient(server), run_study(server, tmp_path), tmp_path / "optuna.journal")


# -- one dataset, many runs at once ------------------------------------------------------------------------
def test_runs_logging_one_dataset_at_the_same_moment_all_get_it(tmp_path):
    """A study's workers start their trials together: each inserts the same dataset row, and the
    store's unique key refuses all but one. Every run must still get its input, with one row stored."""
    import sqlite3
    import threading

    from workbench.data import load_dataset
    from workbench.tracking.datasets import dataset_facts, log_datasets

    uri = sqlite_store(tmp_path)
    client = MlflowClient(uri)
    experiment = client.create_experiment("race")
    facts = dataset_facts(load_dataset("iris"), source="iris")
    errors: list[BaseException] = []
    for round_ in range(3):  # a fresh dataset each round: the race is only on the first insert
        facts = {**facts, "digest": f"{round_:08d}"}
        runs = [client.create_run(experiment).info.run_id for _ in range(6)]
        barrier = threading.Barrier(len(runs))

        def log(run_id: str) -> None:
            barrier.wait()
            try:
                log_datasets(MlflowClient(uri), run_id, [facts])
            except BaseException as exc:  # noqa: BLE001 - collected, asserted below
                errors.append(exc)

        threads = [threading.Thread(target=log, args=(run_id,)) for run_id in runs]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert all(client.get_run(r).inputs.dataset_inputs[0].dataset.digest == facts["digest"] for r in runs)
    with sqlite3.connect(tmp_path / "mlflow.db") as db:
        assert db.execute("select count(*) from datasets").fetchone()[0] == 3
