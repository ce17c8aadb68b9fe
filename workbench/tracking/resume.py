"""Fetching what `workbench run --resume RUN_ID` needs: the run's spec and its last checkpoint.

    spec, directory = fetch_resume(run_id, tracking_uri, into=tmp)   # UserError when it cannot resume
"""

from __future__ import annotations

from pathlib import Path

from workbench.errors import UserError
from workbench.tracking.artifacts import CHECKPOINT_DIR, SPEC_FILE
from workbench.tracking.experiments import open_client
from workbench.tracking.offline import offline_root
from workbench.tracking.uri import resolve_tracking_uri, sqlite_path


def fetch_resume(run_id: str, tracking_uri: str | None, into: str | Path):
    """Download run `run_id`'s spec.toml and checkpoint/ into `into`; returns (spec, checkpoint folder)."""
    from mlflow.exceptions import MlflowException

    from workbench.checkpoint import has_checkpoint
    from workbench.spec import load_spec

    uri = resolve_tracking_uri(tracking_uri)
    spool = offline_root() / run_id
    if spool.is_dir():  # its last writes (the status among them) never reached the store
        raise UserError(f"run '{run_id}' has writes kept offline in {spool} from an MLflow outage: upload them "
                        f"with `workbench sync {run_id}`, then resume")
    database = sqlite_path(uri)
    if database is not None and not database.is_file():  # opening it would create an empty store
        raise UserError(f"no MLflow store at {database}: give the --tracking-uri the run was logged to")
    client = open_client(uri)
    try:
        run = client.get_run(run_id)
    except MlflowException as exc:
        raise UserError(f"no MLflow run '{run_id}' in {client.tracking_uri}: check the run id and --tracking-uri") from exc
    status = run.info.status
    if status == "FINISHED":
        raise UserError(f"run '{run_id}' already finished: there is nothing to resume (start a new run with `workbench run SPEC`)")
    if status in ("RUNNING", "SCHEDULED"):
        raise UserError(f"run '{run_id}' is still {status}: resume a run once it has stopped (KILLED or FAILED)")
    into = Path(into)
    try:
        spec_path = Path(client.download_artifacts(run_id, SPEC_FILE, str(into)))
    except (MlflowException, OSError) as exc:
        raise UserError(f"run '{run_id}' has no {SPEC_FILE} artifact: it was not logged by `workbench run` "
                        "and cannot be resumed") from exc
    try:
        directory = Path(client.download_artifacts(run_id, CHECKPOINT_DIR, str(into)))
    except (MlflowException, OSError):
        directory = into / CHECKPOINT_DIR
    if not has_checkpoint(directory):
        raise UserError(f"run '{run_id}' has no checkpoint/ artifact to resume from (it stopped before its first "
                        "epoch ended, or was logged without checkpoints): start it again with `workbench run SPEC`")
    return load_spec(spec_path), directory
