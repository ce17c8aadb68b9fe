"""MLflow tracking: one run per training run, metrics in batches, artifacts, truthful status.

    from workbench.tracking import RunTracker, load_model
    tracker = RunTracker(spec, tracking_uri="sqlite:///mlflow.db", experiment_name="digits-mlp")
    tracker.start(run); result = run.trainer.fit(); tracker.finish(run, result, result.status, result.reason)
    model = load_model(tracker.run_id)

- uri.py: where runs go (argument, $MLFLOW_TRACKING_URI, ./mlflow.db) and where a local store keeps artifacts.
- experiments.py: `open_client`, `ensure_experiment` (race-safe create-or-get by name).
- metric_logger.py: `MetricLogger`, the background sender (log_batch, <= 1000 values a call).
- metric_feed.py: `MetricFeed`, record rows -> metric blocks on a cadence bounded to ~1,000 points a series.
- tracker.py: `RunTracker`, the hook and the run lifecycle (params, tags, metrics, status), in this process.
- agent.py: `TrackingAgent` + `AgentTracker`: the same, with MLflow in a second process (`workbench run`).
- replay.py: the operations of a run's journal, applied to a store (agent, `workbench sync`).
- artifacts.py: spec.toml, stats/, plots/, model/, diagnosis.json.
- pyfunc.py: the model as an MLflow Model (python_function flavor); registry.py: the Model Registry.
- describe.py: run names and descriptions; datasets.py: the data set as an MLflow dataset input.
- offline.py: a store that stops answering: retries with backoff, then a local spool (`workbench sync`).
- reload.py: `load_model`, `load_run_record` from any tracking URI.

Importing this package does not import mlflow; the functions that need it do.
"""

from workbench.tracking.describe import trial_run_name
from workbench.tracking.experiments import ensure_experiment, open_client
from workbench.tracking.reload import load_model, load_run_record
from workbench.tracking.tracker import RunTracker, spec_params
from workbench.tracking.uri import artifact_root, resolve_tracking_uri


def make_tracker(spec, *, tracking_uri=None, spec_path=None, agent=None, resume: bool = False, **options):
    """The tracking hook of a run: an `AgentTracker` when a `TrackingAgent` was launched for it (a new run),
    else a `RunTracker` in this process (a resumed run, a study's trial, the Python API)."""
    if agent is not None and not resume:
        from workbench.tracking.agent import AgentTracker

        return AgentTracker(spec, agent, spec_path=spec_path, **options)
    if agent is not None:
        agent.discard()
    return RunTracker(spec, tracking_uri=tracking_uri, spec_path=spec_path, **options)


__all__ = [
    "RunTracker",
    "make_tracker",
    "trial_run_name",
    "artifact_root",
    "ensure_experiment",
    "load_model",
    "load_run_record",
    "open_client",
    "resolve_tracking_uri",
    "spec_params",
]
