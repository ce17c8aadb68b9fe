"""`workbench diagnose` end to end, against a real SQLite MLflow store in a temporary folder."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from support import DEADLINE_S, sqlite_store

from workbench.cli import main

SATURATED = {
    "name": "diagnose-cli", "data": {"source": "digits"}, "early_stopping": {"enabled": False},
    "model": {"hidden": [32, 32], "activation": "sigmoid", "init": "normal", "init_scale": 4.0},
    "optimizer": {"name": "sgd", "lr": 0.1}, "training": {"epochs": 2},
}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A store with one tracked run of a saturated sigmoid net: (uri, run id)."""
    from workbench.execute import execute
    from workbench.spec import spec_from_dict

    folder = tmp_path_factory.mktemp("mlflow")
    uri = sqlite_store(folder)
    # no figures of its own: plots/diagnosis.png on the run is then the one `workbench diagnose` logs
    outcome = execute(spec_from_dict(SATURATED), tracking_uri=uri, tracker_options={"plots": False})
    assert outcome.run_id
    return uri, outcome.run_id


def diagnose(capsys, *args):
    code = main(["diagnose", *args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.slow
def test_latest_json_is_one_object_and_logged_on_the_run(store, capsys, tmp_path):
    from mlflow import MlflowClient

    uri, run_id = store
    code, out, _ = diagnose(capsys, "latest", "--tracking-uri", uri, "--json")
    assert code == 0
    result = json.loads(out)  # exactly one JSON object: anything else on stdout fails here
    assert result["verdict"] == "saturated_units" and result["run_id"] == run_id
    finding = result["findings"][0]
    assert finding["layers"] and finding["advice"] and finding["evidence"]["saturated_fraction"]

    client = MlflowClient(uri)
    assert client.get_run(run_id).data.tags["workbench.verdict"] == "saturated_units"
    assert "diagnosis.png" in {a.path.rsplit("/", 1)[-1] for a in client.list_artifacts(run_id, "plots")}
    logged = json.loads(open(client.download_artifacts(run_id, "diagnosis.json", str(tmp_path))).read())
    assert logged == result


@pytest.mark.slow
def test_report_by_run_id_for_people(store, capsys):
    uri, run_id = store
    code, out, _ = diagnose(capsys, run_id, "--tracking-uri", uri, "--experiment", "diagnose-cli", "--no-log")
    lines = out.splitlines()
    assert code == 0 and lines[0] == f"verdict: saturated_units (run {run_id})"
    assert any(line.startswith("1. saturated_units [warning] at dense1, dense2") for line in lines)
    assert any("try: --set model.init=xavier_normal" in line for line in lines)


def test_a_saved_record_diagnoses_without_mlflow(tmp_path, capsys):
    from workbench.runner import build_run
    from workbench.spec import spec_from_dict

    run = build_run(spec_from_dict(SATURATED))
    run.trainer.fit()
    run.record.save(tmp_path / "record.npz")
    code, out, _ = diagnose(capsys, str(tmp_path / "record.npz"), "--json")
    assert code == 0 and json.loads(out)["verdict"] == "saturated_units"


@pytest.mark.parametrize("args, culprit", [
    (["0123456789abcdef"], "no MLflow run '0123456789abcdef'"),
    (["latest", "--experiment", "nope"], "no MLflow experiment 'nope'"),
])
@pytest.mark.slow
def test_unknown_run_or_experiment_exits_2(store, capsys, args, culprit):
    uri, _ = store
    code, out, err = diagnose(capsys, *args, "--tracking-uri", uri)
    assert code == 2 and out == ""
    assert culprit in err and len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_run_without_statistics_exits_2(store, capsys):
    from mlflow import MlflowClient

    uri, _ = store
    client = MlflowClient(uri)
    bare = client.create_run(client.get_experiment_by_name("diagnose-cli").experiment_id).info.run_id
    client.set_terminated(bare)
    code, _, err = diagnose(capsys, "latest", "--tracking-uri", uri)
    assert code == 2 and f"run '{bare}' has no statistics artifact stats/record.npz" in err
    client.delete_run(bare)


def test_empty_store_has_no_latest_run(tmp_path, capsys):
    uri = sqlite_store(tmp_path, "empty.db")
    code, _, err = diagnose(capsys, "latest", "--tracking-uri", uri)
    assert code == 2 and "no runs in" in err and "workbench run" in err


@pytest.mark.slow
def test_missing_store_exits_2_without_creating_it(tmp_path):
    db = tmp_path / "absent.db"
    proc = subprocess.run([sys.executable, "-m", "workbench", "diagnose", "latest", "--tracking-uri", f"sqlite:///{db}"],
                          capture_output=True, text=True, timeout=DEADLINE_S)
    assert proc.returncode == 2 and proc.stdout == ""
    assert f"no MLflow store at {db}" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not db.exists()


@pytest.mark.slow
def test_a_tracker_gets_the_verdict_from_diagnose_tracked(tmp_path):
    """The call RunTracker.finish makes: tag, diagnosis.json and figure on the run; finish returns the verdict."""
    from mlflow import MlflowClient

    from workbench.tracking.diagnosis import diagnose_tracked
    from workbench.runner import build_run
    from workbench.spec import spec_from_dict
    from workbench.tracking import RunTracker

    uri = sqlite_store(tmp_path)
    spec = spec_from_dict(SATURATED)
    run = build_run(spec)
    tracker = RunTracker(spec, tracking_uri=uri)
    tracker.start(run)
    result = run.trainer.fit()
    diagnosis = diagnose_tracked(tracker, run.record)
    assert tracker.finish(run, result, result.status, result.reason) == diagnosis.verdict == "saturated_units"
    client = MlflowClient(uri)
    assert client.get_run(tracker.run_id).data.tags["workbench.verdict"] == "saturated_units"
    names = {a.path for a in client.list_artifacts(tracker.run_id)} | {
        a.path for a in client.list_artifacts(tracker.run_id, "plots")}
    assert {"diagnosis.json", "plots/diagnosis.png"} <= names
