"""Opening a tracking store and finding (or creating) an experiment by name, race-safe."""

from __future__ import annotations

import re

from workbench.errors import UserError
from workbench.tracking.uri import artifact_root, resolve_tracking_uri

NOTE_TAG = "mlflow.note.content"  # an experiment's (or a run's) description in the MLflow UI
# MLflow's experiment kind: model training (the runs table), not GenAI (traces). UIs up to MLflow 3.x open an
# experiment on the view its kind names; 3.17's starts on its own GenAI / Model training switch instead.
KIND_TAG, KIND = "mlflow.experimentKind", "custom_model_development"


def open_client(tracking_uri: str | None = None):
    """An `MlflowClient` on the resolved URI (no fluent, process-global state is touched)."""
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=resolve_tracking_uri(tracking_uri))


def experiment_folder(name: str) -> str:
    """A folder name for an experiment's artifacts: its name with path-unsafe characters replaced."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "experiment"


def ensure_experiment(client, name: str, description: str | None = None) -> str:
    """The id of experiment `name`, created when missing; safe when processes race to create it.

    On a local SQLite store a new experiment keeps its artifacts in `<db folder>/mlruns/<name>`
    (see `workbench.tracking.uri`); elsewhere the store's or server's default applies.
    `description` becomes the experiment's note (its page's description) unless it has one already;
    the experiment is marked as model training (`KIND_TAG`).
    """
    from mlflow.exceptions import MlflowException

    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        root = artifact_root(client.tracking_uri)
        location = (root / experiment_folder(name)).as_uri() if root is not None else None
        tags = {KIND_TAG: KIND, **({NOTE_TAG: description} if description else {})}
        try:
            return client.create_experiment(name, artifact_location=location, tags=tags)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            experiment = client.get_experiment_by_name(name)  # another process created it first
            if experiment is None:
                raise
    if experiment.lifecycle_stage == "deleted":
        raise UserError(
            f"MLflow experiment '{name}' was deleted in {client.tracking_uri}: restore it "
            f"(mlflow experiments restore --experiment-id {experiment.experiment_id}) or set another name"
        )
    tags = experiment.tags or {}
    if description and not tags.get(NOTE_TAG):
        client.set_experiment_tag(experiment.experiment_id, NOTE_TAG, description)
    if not tags.get(KIND_TAG):
        client.set_experiment_tag(experiment.experiment_id, KIND_TAG, KIND)
    return experiment.experiment_id
