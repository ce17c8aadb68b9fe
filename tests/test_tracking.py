"""MLflow tracking against a real SQLite store in a temporary folder: params, metrics, artifacts, status, reload."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient
from support import DEADLINE_S, assert_statistics_handed_over, sqlite_store, wait_until

import workbench
from workbench.execute import execute
from workbench.spec import load_spec
from workbench.tracking import RunTracker, ensure_experiment, load_run_record, resolve_tracking_uri, spec_params
from workbench.tracking.metric_logger import MetricBlock, MetricLogger
from workbench.tracking.tracker import CLIP_FRACTION, HIDDEN_ONLY, LAYER_METRICS
from workbench.training import Hook

REPO = Path(__file__).resolve().parents[1]
SPEC = REPO / "experiments" / "digits_mlp.toml"
SMALL = ["model.hidden=[32]", "training.epochs=3", "monitor.log_every=5", "early_stopping.enabled=false"]
DIVERGE = ["optimizer.name=sgd", "optimizer.lr=10", "model.init=normal", "model.init_scale=5"]
LAYERS = ["dense1", "dense2"]  # hidden [32]: one hidden layer and the output layer


def small_spec(*overrides: str):
    return load_spec(SPEC, [*SMALL, *overrides])


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    """One SQLite store for the module (creating its tables takes seconds)."""
    return sqlite_store(tmp_path_factory.mktemp("store"))


@pytest.fixture(scope="module")
def client(store) -> MlflowClient:
    return MlflowClient(store)


@pytest.fixture(scope="module")
def finished(store):
    return execute(small_spec(), tracking_uri=store, spec_path=str(SPEC))


def metric_steps(client, run_id: str, key: str) -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, key))


def expected_keys(layers=LAYERS) -> set[str]:
    per_layer = {f"{stat}/{layer}" for stat in LAYER_METRICS for layer in layers
                 if not (stat in HIDDEN_ONLY and layer == layers[-1])}
    epoch = {"epoch", "train/loss", "val/loss", "val/accuracy", "test/loss", "test/accuracy"}
    return per_layer | epoch | {"grad_norm/global", CLIP_FRACTION}


def artifact_paths(client, run_id: str, path: str | None = None) -> set[str]:
    out = set()
    for info in client.list_artifacts(run_id, path):
        out |= artifact_paths(client, run_id, info.path) if info.is_dir else {info.path}
    return out


# -- a finished run -------------------------------------------------------------------------------
@pytest.mark.slow
def test_finished_run_status_params_and_tags(finished, client):
    run = client.get_run(finished.run_id)
    assert finished.status == "FINISHED" and finished.exit_code == 0
    assert run.info.status == "FINISHED" and run.info.end_time
    assert client.get_experiment(run.info.experiment_id).name == "digits-mlp"
    params = run.data.params
    assert params == spec_params(finished.run.spec)
    assert params["model.hidden"] == "[32]" and params["optimizer.lr"] == "0.001"
    assert params["data.standardize"] == "true" and params["monitor.log_every"] == "5"
    assert "data.path" not in params  # None values are skipped
    tags = run.data.tags
    assert tags["workbench.version"] == workbench.__version__
    assert tags["workbench.dataset"].startswith("digits: 1797 samples")
    assert tags["workbench.model"].startswith("MLP 64-32-10")
    assert tags["mlflow.runName"] and tags["workbench.spec_path"] == str(SPEC)
    assert "workbench.status_reason" not in tags and "mlflow.parentRunId" not in tags


@pytest.mark.slow
def test_every_metric_key_is_logged(finished, client):
    assert set(client.get_run(finished.run_id).data.metrics) == expected_keys()


@pytest.mark.slow
def test_epoch_metrics_at_the_global_step(finished, client):
    steps_per_epoch = finished.run.trainer.steps_per_epoch
    expected = [steps_per_epoch * (e + 1) for e in range(3)]
    for key in ("epoch", "train/loss", "val/loss", "val/accuracy"):
        assert metric_steps(client, finished.run_id, key) == expected
    history = client.get_metric_history(finished.run_id, "val/loss")
    assert [m.value for m in sorted(history, key=lambda m: m.step)] == pytest.approx(finished.run.trainer.history["val/loss"])
    assert metric_steps(client, finished.run_id, "test/accuracy") == [expected[-1]]
    assert client.get_run(finished.run_id).data.metrics["test/accuracy"] == pytest.approx(finished.metrics["test/accuracy"])


@pytest.mark.slow
def test_per_step_metrics_follow_the_record_at_log_every(finished, client):
    record = finished.run.record
    steps = [int(s) for s in record.steps if s % 5 == 0]
    assert len(steps) > 10
    for key in ("grad_norm/dense1", "update_ratio/dense2", "grad_norm/global", CLIP_FRACTION):
        assert metric_steps(client, finished.run_id, key) == steps
    logged = {m.step: m.value for m in client.get_metric_history(finished.run_id, "grad_norm/dense1")}
    row = int(np.searchsorted(record.steps, steps[3]))
    assert logged[steps[3]] == pytest.approx(float(record.series("grad_norm", "dense1")[row]), rel=1e-6)
    assert {m.value for m in client.get_metric_history(finished.run_id, CLIP_FRACTION)} == {0.0}


@pytest.mark.slow
def test_artifacts(finished, client):
    paths = artifact_paths(client, finished.run_id)
    assert {"spec.toml", "stats/record.npz", "model/weights.npz", "model/spec.toml"} <= paths
    assert any(p.startswith("plots/") and p.endswith(".png") for p in paths)
    # the artifacts live beside the store, inside the temporary folder
    root = Path(client.tracking_uri[len("sqlite:///"):]).parent / "mlruns"
    assert client.get_run(finished.run_id).info.artifact_uri.startswith(root.as_uri())


@pytest.mark.slow
def test_spec_artifact_reproduces_the_spec(finished, client, tmp_path):
    local = client.download_artifacts(finished.run_id, "spec.toml", str(tmp_path))
    assert load_spec(local) == finished.run.spec


@pytest.mark.slow
def test_stats_artifact_is_the_full_record(finished, store):
    record = load_run_record(finished.run_id, store)
    live = finished.run.record
    assert np.array_equal(record.steps, live.steps) and record.layers == live.layers
    np.testing.assert_array_equal(record.layer("grad_norm"), live.layer("grad_norm"))


@pytest.mark.slow
def test_reloaded_model_predicts_identically(finished, store):
    X = finished.run.data.X_test
    model = workbench.load_model(finished.run_id, tracking_uri=store)
    assert np.array_equal(model.predict(X), finished.run.model.predict(X))


@pytest.mark.slow
def test_load_model_reads_the_environment_uri(finished, store, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    X = finished.run.data.X_val
    assert np.array_equal(workbench.load_model(finished.run_id).predict(X), finished.run.model.predict(X))


def test_load_model_of_unknown_run_is_a_user_error(store):
    from workbench.errors import UserError

    with pytest.raises(UserError, match="no MLflow run"):
        workbench.load_model("0" * 32, store)


def test_load_model_from_a_missing_store_is_a_user_error(tmp_path):
    from workbench.errors import UserError

    db = tmp_path / "absent.db"
    with pytest.raises(UserError, match="no MLflow store"):
        workbench.load_model("0" * 32, f"sqlite:///{db}")
    assert not db.exists()  # reading never creates a store


@pytest.mark.slow
def test_finished_run_is_diagnosed(finished, client):
    run = client.get_run(finished.run_id)
    assert finished.verdict and run.data.tags["workbench.verdict"] == finished.verdict
    assert {"diagnosis.json", "plots/diagnosis.png"} <= artifact_paths(client, finished.run_id)


@pytest.mark.slow
def test_a_verdict_set_before_finish_is_kept_and_plots_can_be_skipped(store, client):
    from workbench.runner import build_run

    spec = small_spec("training.epochs=1")
    run = build_run(spec)
    tracker = RunTracker(spec, tracking_uri=store, plots=False)
    tracker.start(run)
    result = run.trainer.fit()
    tracker.set_verdict("custom", {"verdict": "custom", "findings": []})
    assert tracker.finish(run, result, result.status, result.reason) == "custom"
    assert client.get_run(tracker.run_id).data.tags["workbench.verdict"] == "custom"
    paths = artifact_paths(client, tracker.run_id)
    assert "diagnosis.json" in paths and not any(p.startswith("plots/") for p in paths)
    assert {"stats/record.npz", "model/weights.npz"} <= paths


# -- failed runs ----------------------------------------------------------------------------------
@pytest.mark.slow
def test_divergence_is_failed_with_reason_and_everything_logged(store, client):
    outcome = execute(small_spec(*DIVERGE), tracking_uri=store)
    assert outcome.status == "FAILED" and outcome.exit_code == 1
    run = client.get_run(outcome.run_id)
    assert run.info.status == "FAILED"
    assert "non-finite" in run.data.tags["workbench.status_reason"]
    record = outcome.run.record
    assert metric_steps(client, outcome.run_id, "grad_norm/dense1") == [int(s) for s in record.steps if s % 5 == 0]
    paths = artifact_paths(client, outcome.run_id)
    assert {"stats/record.npz", "model/weights.npz", "spec.toml", "plots/loss.png", "plots/diagnosis.png"} <= paths


# For the tests that assert nothing of the figures: drawing them costs each run 2 s of CPU (the figures of
# finished and diverged runs are checked above, their drawing in tests/test_plots.py).
NO_PLOTS = {"plots": False}


class Boom(Hook):
    def on_after_update(self, trainer):
        if trainer.step == 50:
            raise RuntimeError("boom at step 50")


@pytest.mark.slow
def test_exception_is_failed_with_reason_and_reraised(store, client):
    spec = small_spec()
    with pytest.raises(RuntimeError, match="boom"):
        execute(spec, tracking_uri=store, hooks=(Boom(),), tracker_options={"run_name": "boom", **NO_PLOTS})
    run = client.search_runs([ensure_experiment(client, spec.name)], "tags.mlflow.runName = 'boom'")[0]
    assert run.info.status == "FAILED"
    assert run.data.tags["workbench.status_reason"] == "RuntimeError: boom at step 50"
    assert metric_steps(client, run.info.run_id, "grad_norm/dense1") == list(range(0, 50, 5))  # steps 0..49 ran
    assert metric_steps(client, run.info.run_id, "epoch") == [36]  # the first epoch completed
    assert "stats/record.npz" in artifact_paths(client, run.info.run_id)


@pytest.mark.slow
def test_finish_warns_instead_of_hiding_the_error(store, client, capsys):
    """A store that fails while saving must not replace the training error with its own."""
    from workbench.runner import build_run

    spec = small_spec()
    run = build_run(spec, hooks=(Boom(),))
    tracker = RunTracker(spec, tracking_uri=store, **NO_PLOTS)
    tracker.start(run)
    with pytest.raises(RuntimeError, match="boom"):
        run.trainer.fit()

    def disk_full(*args, **kwargs):
        raise OSError("disk full")

    tracker.client.log_artifacts = disk_full  # the artifact store fails while the run is saved
    tracker.finish(run, None, "FAILED", "RuntimeError: boom at step 50")  # must not raise
    assert "could not log the model to MLflow: OSError: disk full" in capsys.readouterr().err
    finished = client.get_run(tracker.run_id)
    assert finished.info.status == "FAILED" and len(client.get_metric_history(tracker.run_id, "epoch")) == 1


# -- an interrupted run (a real `workbench run` process) ------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupted_run_is_killed_and_flushed(tmp_path, sig):
    """The run is signalled once MLflow shows it RUNNING with two epochs logged; it would train for hours
    (a million epochs), so the signal lands mid-run on any machine."""
    uri = sqlite_store(tmp_path)  # the store's tables exist before the run: made here, not concurrently
    env = {**os.environ, "PYTHONPATH": str(REPO), "MLFLOW_TRACKING_URI": uri}
    env.pop("WORKBENCH_PROGRESS", None)
    args = [sys.executable, "-m", "workbench", "run", str(SPEC), "--json", "--quiet", "--no-plots"]
    for override in [*SMALL, f"training.epochs={EPOCHS_FOREVER}"]:
        args += ["--set", override]
    client = MlflowClient(uri)
    with open(tmp_path / "run.out", "w") as out, open(tmp_path / "run.err", "w") as err:
        proc = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=out, stderr=err, text=True)
    try:
        run_id, seen = wait_until(lambda: live_epochs(client, epochs=2), "a RUNNING run with 2 epochs logged",
                                  process=proc, interval=0.2)
        proc.send_signal(sig)
        proc.wait(DEADLINE_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    out, err = (tmp_path / "run.out").read_text(), (tmp_path / "run.err").read_text()
    assert proc.returncode == 130, err
    assert out == "" and "interrupted" in err
    run = client.get_run(run_id)
    assert run.info.status == "KILLED"
    epochs = metric_steps(client, run_id, "epoch")
    assert len(epochs) >= seen and len(epochs) < EPOCHS_FOREVER
    record = load_run_record(run_id, uri)
    assert record.last_step >= epochs[-1] - 1
    # every statistic handed over is in the store (bounded series: see the helper)
    assert_statistics_handed_over(metric_steps(client, run_id, "grad_norm/dense1"), record.steps, 5)
    paths = artifact_paths(client, run_id)
    assert {"model/weights.npz", "spec.toml", "diagnosis.json"} <= paths
    assert not any(p.startswith("plots/") for p in paths)  # --no-plots
    assert (tmp_path / "mlruns").is_dir()


EPOCHS_FOREVER = 1_000_000


def live_epochs(client, epochs: int) -> tuple[str, int] | None:
    """(run id, epochs logged) once the store's run is RUNNING with `epochs` epoch metrics, else None."""
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    if not runs or runs[0].info.status != "RUNNING":
        return None
    seen = len(client.get_metric_history(runs[0].info.run_id, "epoch"))
    return (runs[0].info.run_id, seen) if seen >= epochs else None


# -- pieces ---------------------------------------------------------------------------------------
def test_metric_logger_sends_chunks_and_non_finite_values(store, client):
    run_id = client.create_run(ensure_experiment(client, "logger")).info.run_id
    logger = MetricLogger(client, run_id)
    values = np.arange(2500, dtype=np.float64).reshape(1250, 2)
    values[7, 0], values[8, 0] = np.nan, np.inf
    logger.put(MetricBlock(("a", "b"), values, np.arange(1250), int(time.time() * 1000)))
    logger.log({"c": 1.5}, step=3)
    assert logger.close(timeout=DEADLINE_S)
    assert logger.sent == 2501 and logger.dropped == 0
    history = {m.step: m.value for m in client.get_metric_history(run_id, "a")}
    assert len(history) == 1250 and np.isnan(history[7]) and history[8] > 1e300 and history[9] == 18.0
    assert len(client.get_metric_history(run_id, "b")) == 1250


@pytest.mark.slow
def test_tracker_options_parent_name_tags_experiment(store, client):
    parent = client.create_run(ensure_experiment(client, "study")).info.run_id
    outcome = execute(small_spec("training.epochs=1"), tracking_uri=store, tracker_options={
        "experiment_name": "study", "parent_run_id": parent, "run_name": "trial-0", "tags": {"trial": 0}, **NO_PLOTS})
    run = client.get_run(outcome.run_id)
    assert client.get_experiment(run.info.experiment_id).name == "study"
    assert run.data.tags["mlflow.parentRunId"] == parent
    assert run.data.tags["mlflow.runName"] == "trial-0" and run.info.run_name == "trial-0"
    assert run.data.tags["trial"] == "0"


def test_ensure_experiment_is_race_safe(store):
    ids, errors = [], []

    def create():
        try:
            ids.append(ensure_experiment(MlflowClient(store), "raced"))
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=create) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(set(ids)) == 1 and len(ids) == 4


def test_deleted_experiment_is_a_user_error(store, client):
    from workbench.errors import UserError

    client.delete_experiment(ensure_experiment(client, "gone"))
    with pytest.raises(UserError, match="was deleted"):
        ensure_experiment(client, "gone")


def test_resolve_tracking_uri(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    assert resolve_tracking_uri() == f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert resolve_tracking_uri("sqlite:///x.db") == f"sqlite:///{tmp_path / 'x.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert resolve_tracking_uri() == "http://127.0.0.1:5000"
    assert resolve_tracking_uri("sqlite:////abs/m.db") == "sqlite:////abs/m.db"


PLOT_NAMES = ("loss.png", "gradient_flow.png", "grad_norms.png", "update_ratios.png", "activation_std.png",
              "grad_histograms.png", "gradient_flow.gif")


@pytest.mark.slow
@pytest.mark.parametrize("child", ["draws", "crashes", "no-fork"])
def test_plot_job_uploads_every_plot_whether_the_child_draws_them_or_not(tmp_path, monkeypatch, child):
    """The plots are drawn in a forked child while the rest uploads; a child that dies, or no fork at all,
    leaves the drawing to the parent: the same files either way, and no temporary folder left behind."""
    import os as _os

    from mlflow import MlflowClient

    from workbench.monitor.gradient_snapshot import GradientSnapshot
    from workbench.runner import build_run
    from workbench.tracking import artifacts

    run = build_run(load_spec(SPEC, SMALL))
    snapshot = GradientSnapshot()
    run.trainer.register(snapshot)
    run.trainer.fit()
    if child == "crashes":
        monkeypatch.setattr(artifacts, "_draw_in_child", lambda folder, inputs, names: _os._exit(3))
    elif child == "no-fork":
        monkeypatch.setattr(artifacts.multiprocessing, "get_context", lambda method: (_ for _ in ()).throw(
            ValueError(f"cannot find context for {method!r}")))
    client = MlflowClient(sqlite_store(tmp_path))
    run_id = client.create_run(client.create_experiment("plots", (tmp_path / "art").as_uri())).info.run_id
    job = artifacts.PlotJob(record=run.record, history=run.trainer.history, gradients=snapshot)
    processes = [process for process, _ in job.processes]
    assert len(processes) == 2 and all((p is not None) == (child != "no-fork") for p in processes)
    assert sorted(name for _, names in job.processes for name in names) == sorted(PLOT_NAMES)
    assert job.finish(client, run_id) == 6
    assert all(p is None or p.exitcode == (3 if child == "crashes" else 0) for p in processes)
    assert {a.path for a in client.list_artifacts(run_id, "plots")} == {f"plots/{name}" for name in PLOT_NAMES}
    assert not job.folder.exists()
