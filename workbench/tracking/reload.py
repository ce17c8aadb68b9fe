"""Reading a tracked run back: its model and its statistics record, from any tracking URI.

    model = workbench.load_model(run_id)            # predicts exactly as the trained model did
    record = load_run_record(run_id, "http://127.0.0.1:5000")
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from workbench.errors import UserError
from workbench.tracking.artifacts import MODEL_DIR, STATS_DIR, STATS_FILE, WEIGHTS_FILE
from workbench.tracking.experiments import open_client
from workbench.tracking.uri import resolve_tracking_uri, sqlite_path

T = TypeVar("T")


def load_model(run_id: str, tracking_uri: str | None = None):
    """The `Sequential` saved in run `run_id`'s `model/` artifact."""
    from workbench.nn.model import Sequential

    return with_artifact(run_id, f"{MODEL_DIR}/{WEIGHTS_FILE}", Sequential.load, tracking_uri)


def load_run_record(run_id: str, tracking_uri: str | None = None):
    """The full-resolution `StatsRecord` saved in run `run_id`'s `stats/` artifact."""
    from workbench.monitor.record import load_record

    return with_artifact(run_id, f"{STATS_DIR}/{STATS_FILE}", load_record, tracking_uri)


def with_artifact(run_id: str, path: str, read: Callable[[Path], T], tracking_uri: str | None = None) -> T:
    """Download one artifact file of a run to a temporary folder and return `read(local_path)`."""
    from mlflow.exceptions import MlflowException

    uri = resolve_tracking_uri(tracking_uri)
    database = sqlite_path(uri)
    if database is not None and not database.is_file():  # opening it would create an empty store
        raise UserError(f"no MLflow store at {database}: give the --tracking-uri the run was logged to")
    client = open_client(uri)
    try:
        client.get_run(run_id)
    except MlflowException as exc:
        raise UserError(f"no MLflow run '{run_id}' in {client.tracking_uri}: check the run id and --tracking-uri") from exc
    with tempfile.TemporaryDirectory(prefix="workbench-artifact-") as tmp:
        try:
            local = client.download_artifacts(run_id, path, tmp)
        except (MlflowException, OSError) as exc:
            raise UserError(f"run '{run_id}' has no artifact {path}: was it logged by `workbench run`?") from exc
        return read(Path(local))
