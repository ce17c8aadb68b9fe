"""The trained model as an MLflow Model: mlflow.pyfunc loads it and predicts what workbench.load_model does,
for a classifier and a regressor; `workbench run --register` makes a registered version with the run's tags.

Real MLflow on SQLite stores in temporary folders. Serving (`mlflow models serve`) calls the same pyfunc.
"""

from __future__ import annotations

import json
from pathlib import Path

import mlflow.pyfunc
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from support import sqlite_store

import workbench
from workbench.cli import main
from workbench.execute import execute
from workbench.nn.losses import CrossEntropy
from workbench.spec import load_spec

REPO = Path(__file__).resolve().parents[1]
SPEC = REPO / "experiments" / "digits_mlp.toml"
SMALL = ["model.hidden=[16]", "training.epochs=2", "early_stopping.enabled=false", "monitor.every=5"]
REGRESSION = ["data.source=\"diabetes\"", "training.loss=\"mse\"", "model.dropout=0.0"]


NO_FIGURES = {"plots": False}  # the models are what these runs are for (the figures: 2 s of CPU a run)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    return sqlite_store(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def classifier(store):
    return execute(load_spec(SPEC, SMALL), tracking_uri=store, tracker_options=NO_FIGURES)


@pytest.fixture(scope="module")
def regressor(store):
    return execute(load_spec(SPEC, [*SMALL, *REGRESSION]), tracking_uri=store, tracker_options=NO_FIGURES)


def pyfunc(run_id: str, store: str, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)  # what runs:/ URIs resolve against
    return mlflow.pyfunc.load_model(f"runs:/{run_id}/model")


@pytest.mark.slow
def test_classifier_pyfunc_predicts_what_workbench_load_model_does(classifier, store, monkeypatch):
    X = classifier.run.data.X_test
    model = pyfunc(classifier.run_id, store, monkeypatch)
    reference = workbench.load_model(classifier.run_id, store).predict(X)
    np.testing.assert_array_equal(model.predict(X), reference)  # the raw outputs, the default
    np.testing.assert_array_equal(model.predict(pd.DataFrame(X)), reference)  # a DataFrame of features too
    labels = model.predict(X, params={"output": "label"})
    np.testing.assert_array_equal(labels, reference.argmax(axis=1))
    probabilities = model.predict(X, params={"output": "probability"})
    np.testing.assert_allclose(probabilities, CrossEntropy.probabilities(reference), rtol=1e-6)
    assert np.mean(labels == classifier.run.data.y_test) > 0.15  # class indices, as y holds them (chance: 0.1)


@pytest.mark.slow
def test_regressor_pyfunc_predicts_what_workbench_load_model_does(regressor, store, monkeypatch):
    X = regressor.run.data.X_test
    model = pyfunc(regressor.run_id, store, monkeypatch)
    np.testing.assert_array_equal(model.predict(X), workbench.load_model(regressor.run_id, store).predict(X))
    with pytest.raises(Exception, match="needs a classifier"):
        model.predict(X, params={"output": "label"})


@pytest.mark.slow
def test_the_model_folder_is_an_mlflow_model_without_pickles(classifier, store, tmp_path):
    client = MlflowClient(store)
    local = Path(client.download_artifacts(classifier.run_id, "model", str(tmp_path)))
    files = {p.name for p in local.iterdir()}
    assert {"MLmodel", "weights.npz", "spec.toml", "input_example.json", "requirements.txt"} <= files
    assert not [name for name in files if name.endswith((".pkl", ".pickle"))]
    mlmodel = (local / "MLmodel").read_text()
    assert "loader_module: workbench.tracking.pyfunc" in mlmodel and "python_function" in mlmodel
    info = mlflow.models.get_model_info(str(local))
    assert list(info.signature.inputs.to_dict()[0]["tensor-spec"]["shape"]) == [-1, 64]
    assert [p.name for p in info.signature.params] == ["output"]
    assert info.metadata["task"] == "classification" and info.metadata["classes"][:3] == ["0", "1", "2"]
    with np.load(local / "weights.npz", allow_pickle=False) as weights:  # plain arrays and a JSON string
        assert "__layers__" in weights.files


@pytest.mark.slow
def test_a_serving_request_goes_through_the_pyfunc(classifier, store, tmp_path):
    """What `mlflow models serve` does with POST /invocations (its own handler, without the HTTP server)."""
    from mlflow.pyfunc.scoring_server import invocations

    client = MlflowClient(store)
    local = Path(client.download_artifacts(classifier.run_id, "model", str(tmp_path)))
    model = mlflow.pyfunc.load_model(str(local))
    request = json.loads((local / "serving_input_example.json").read_text())  # the model's own example
    request["params"] = {"output": "label"}
    answer = invocations(json.dumps(request), "application/json", model, model.metadata.get_input_schema())
    assert answer.status == 200, answer.response
    reference = workbench.load_model(classifier.run_id, store).predict(classifier.run.data.X_test[:5])
    assert json.loads(answer.response)["predictions"] == reference.argmax(axis=1).tolist()


@pytest.mark.slow
def test_register_creates_a_tagged_model_version(tmp_path, monkeypatch, capsys):
    uri = sqlite_store(tmp_path)
    monkeypatch.chdir(tmp_path)
    args = ["run", str(SPEC), "--tracking-uri", uri, "--json", "--quiet", "--register", "digits-classifier",
            "--no-plots"]  # the figures are not what is registered (2 s of CPU a run)
    assert main([*args, *[a for o in SMALL for a in ("--set", o)]]) == 0
    outcome = json.loads(capsys.readouterr().out)
    client = MlflowClient(uri)
    version = client.get_model_version("digits-classifier", "1")
    assert version.run_id == outcome["run_id"]
    assert version.tags["workbench.verdict"] == outcome["verdict"]
    assert float(version.tags["test/accuracy"]) == pytest.approx(outcome["metrics"]["test/accuracy"], rel=1e-5)
    assert "Verdict" in version.description
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    model = mlflow.pyfunc.load_model("models:/digits-classifier/1")
    X = np.random.default_rng(0).standard_normal((4, 64)).astype(np.float32)
    np.testing.assert_array_equal(model.predict(X), workbench.load_model(outcome["run_id"], uri).predict(X))
    assert main([*args, *[a for o in SMALL for a in ("--set", o)]]) == 0  # a second run: version 2
    assert client.get_model_version("digits-classifier", "2").run_id != outcome["run_id"]


def test_register_needs_a_tracked_run_and_a_usable_name(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["run", str(SPEC), "--no-track", "--register", "m"]) == 2
    assert "--no-track" in capsys.readouterr().err
    assert main(["run", str(SPEC), "--no-track", "--no-plots"]) == 2
    assert "--no-plots" in capsys.readouterr().err
    assert main(["run", str(SPEC), "--register", "bad/name"]) == 2
    assert "--register 'bad/name'" in capsys.readouterr().err
    assert not (tmp_path / "mlflow.db").exists()
