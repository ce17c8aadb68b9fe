"""MLflow tracking: one run per training run, metrics in batches, artifacts, truthful status.

    from workbench.tracking import RunTracker, load_model
    tracker = RunTracker(spec, tracking_uri="sqlite:///mlflow.db", experiment_name="digits-mlp")
    tracker.start(run); result = run.trainer.fit(); tracker.finish(run, result, result.status, result.reason)
    model = load_model(tracker.run_id)

- uri.py: where runs go (argument, $MLFLOW_TRACKING_URI, ./mlflow.db) and where a local store keeps artifacts.
- experiments.py: `open_client`, `ensure_experiment` (race-safe create-or-get by name).
- metric_logger.py: `MetricLogger`, the background sender (log_batch, <= 1000 values a call).
- tracker.py: `RunTracker`, the hook and the run lifecycle (params, tags, metrics, status).
- artifacts.py: spec.toml, stats/, plots/, model/, diagnosis.json.
- offline.py: a store that stops answering: retries with backoff, then a local spool (`workbench sync`).
- reload.py: `load_model`, `load_run_record` from any tracking URI.

Importing this package does not import mlflow; the functions that need it do.
"""

from workbench.tracking.experiments import ensure_experiment, open_client
from workbench.tracking.reload import load_model, load_run_record
from workbench.tracking.tracker import RunTracker, spec_params
from workbench.tracking.uri import artifact_root, resolve_tracking_uri

__all__ = [
    "RunTracker",
    "artifact_root",
    "ensure_experiment",
    "load_model",
    "load_run_record",
    "open_client",
    "resolve_tracking_uri",
    "spec_params",
]
