"""Every tool works on convolutional and residual layer lists: tracking, statistics, diagnosis,
plots, load_model and --resume, through the same code paths as the MLP."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from support import sqlite_store

import workbench
from workbench.execute import execute
from workbench.spec import load_spec
from test_resume import InterruptAt  # noqa: E402  (tests/ is on sys.path under pytest)

REPO = Path(__file__).resolve().parents[1]
SMALL = ["data.limit=300", "training.epochs=3", "monitor.log_every=2", "early_stopping.enabled=false"]
SPECS = {
    "cnn": (REPO / "experiments" / "digits_cnn.toml", ["conv1", "conv2", "dense1"]),
    "resnet": (REPO / "experiments" / "digits_resnet.toml",
               ["dense1", "res1.dense1", "res1.dense2", "res2.dense1", "res2.dense2", "res3.dense1", "res3.dense2",
                "res4.dense1", "res4.dense2", "dense2"]),
}


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    return sqlite_store(tmp_path_factory.mktemp("arch"))  # tables copied from a made template (seconds saved)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SPECS))
def test_tracked_run_has_per_layer_metrics_diagnosis_plots_and_a_loadable_model(store, name):
    from mlflow import MlflowClient

    path, layers = SPECS[name]
    spec = load_spec(path, SMALL)
    outcome = execute(spec, tracking_uri=store)
    assert outcome.status == "FINISHED"
    record = outcome.run.record
    assert record.layers == layers
    columns = record.meta["columns"]
    assert [c["name"] for c in columns] == layers and columns[-1]["output"] is True
    client = MlflowClient(store)
    run = client.get_run(outcome.run_id)
    for layer in layers:
        assert f"grad_norm/{layer}" in run.data.metrics and f"backprop_norm/{layer}" in run.data.metrics
    assert run.data.tags["workbench.verdict"] == outcome.verdict
    artifacts = {f.path for f in client.list_artifacts(outcome.run_id)}
    assert {"diagnosis.json", "plots", "model", "stats"} <= artifacts
    plots = {Path(f.path).name for f in client.list_artifacts(outcome.run_id, "plots")}
    assert "diagnosis.png" in plots and len(plots) >= 3
    X = outcome.run.data.X_test
    loaded = workbench.load_model(outcome.run_id, store)
    np.testing.assert_array_equal(loaded.predict(X), outcome.run.model.predict(X))  # same machine, same threads
    flat = X.reshape(len(X), -1)
    np.testing.assert_array_equal(loaded.predict(flat), outcome.run.model.predict(X))  # flat rows are reshaped
    from workbench.diagnose import diagnose_record

    assert diagnose_record(record, spec=spec).verdict == outcome.verdict


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SPECS))
def test_interrupted_run_resumes_to_the_uninterrupted_result(store, name):
    from mlflow import MlflowClient

    path, _ = SPECS[name]
    spec = load_spec(path, [*SMALL, f"name=resume-{name}"])
    with pytest.raises(KeyboardInterrupt):
        execute(spec, tracking_uri=store, hooks=(InterruptAt(1),), tracker_options={"plots": False})
    client = MlflowClient(store)
    (killed,) = client.search_runs([client.get_experiment_by_name(spec.name).experiment_id])
    resumed = execute(resume_run_id=killed.info.run_id, tracking_uri=store, tracker_options={"plots": False})
    expected = execute(spec, track=False)
    assert resumed.status == "FINISHED" and resumed.run_id == killed.info.run_id
    assert resumed.metrics == expected.metrics  # same machine and threads: bit for bit
