"""The study's MLflow parent run: one per study, found again on resume by its tags.

Tags `workbench.study = NAME` and `workbench.role = study` identify it (the trials' child
runs carry `workbench.role = trial` and `mlflow.parentRunId`). Creating it is done under
the study's budget lock, so workers started together on several machines share one.
"""

from __future__ import annotations

import sys
import time

from workbench.studies.objective import TAG_ROLE, TAG_STUDY

ROLE_STUDY = "study"
NOTE_TAG = "mlflow.note.content"


def ensure_parent_run(settings, study) -> tuple[str, bool]:
    """(run id, created) of the study's parent run, set RUNNING; created with the study's params.

    A store that cannot be reached is a user error (one line, before any trial runs), found in
    seconds: MLflow's HTTP retries are bounded as for a run.
    """
    from workbench.errors import UserError
    from workbench.tracking.offline import bound_http_retries, first_line

    bound_http_retries(settings.tracking_uri)
    try:
        return _ensure_parent_run(settings, study)
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - MLflow, SQLAlchemy and HTTP errors alike
        raise UserError(f"cannot log the study to MLflow at {settings.tracking_uri}: {first_line(exc)} "
                        "(check --tracking-uri or MLFLOW_TRACKING_URI, and that the server runs)") from exc


def _ensure_parent_run(settings, study) -> tuple[str, bool]:
    from mlflow.entities import Param

    from workbench.tracking import ensure_experiment, open_client
    from workbench.tracking.describe import study_description
    from workbench.tracking.tracker import TAG_RUN_NAME

    client = open_client(settings.tracking_uri)
    note = study_description(getattr(study, "origin", None), study.description or f"Optuna study {study.name}")
    experiment_id = ensure_experiment(client, settings.study_name, description=note)
    found = find_parent_run(client, experiment_id, settings.study_name)
    if found is not None:
        if found.info.status != "RUNNING":
            client.update_run(found.info.run_id, status="RUNNING")
        set_running_tags(client, found.info.run_id, settings)
        return found.info.run_id, False
    tags = {TAG_STUDY: settings.study_name, TAG_ROLE: ROLE_STUDY, TAG_RUN_NAME: settings.study_name}
    run = client.create_run(experiment_id, tags=tags, run_name=settings.study_name)
    run_id = run.info.run_id
    params = study.run_params(settings)
    client.log_batch(run_id, params=[Param(k, v[:6000]) for k, v in params.items()], synchronous=True)
    client.log_text(run_id, settings.base.to_toml(), "base_spec.toml")
    set_running_tags(client, run_id, settings)
    return run_id, True


def find_parent_run(client, experiment_id: str, study_name: str):
    runs = client.search_runs(
        [experiment_id], max_results=1, order_by=["attributes.start_time ASC"],
        filter_string=f"tags.`{TAG_STUDY}` = '{study_name}' and tags.`{TAG_ROLE}` = '{ROLE_STUDY}'",
    )
    return runs[0] if runs else None


def set_running_tags(client, run_id: str, settings) -> None:
    client.set_tag(run_id, "workbench.n_trials", str(settings.n_trials))
    client.set_tag(run_id, "workbench.storage", settings.storage.shown())


def finish_parent_run(settings, run_id: str, report, status: str) -> None:
    """Metrics, tags and the report/ artifacts on the parent run; then its status. If the tracking
    server stops answering, they are kept offline for `workbench sync`, as a trial's are."""
    from mlflow.entities import Metric

    from workbench.tracking import open_client
    from workbench.tracking.offline import ResilientClient, bound_http_retries

    bound_http_retries(settings.tracking_uri)
    client = ResilientClient(open_client(settings.tracking_uri), run_id)
    try:
        _log_report(client, run_id, report, status, Metric)
    finally:
        if client.try_upload() is not None:  # the server came back while the report was being kept offline
            print(f"workbench: MLflow at {settings.tracking_uri} answers again: the study's report is uploaded",
                  file=sys.stderr, flush=True)


def _log_report(client, run_id: str, report, status: str, Metric) -> None:
    now = int(time.time() * 1000)
    counts = report.counts
    metrics = {f"trials/{state.lower()}": float(n) for state, n in counts.items()}
    metrics["trials/total"] = float(sum(counts.values()))
    metrics["epochs/total"] = float(report.epochs_total)
    if report.best is not None:
        metrics["best_value"] = report.best.value
        metrics[f"best/{report.metric}"] = report.best.value
    metrics.update(getattr(report, "extra_metrics", None) or {})  # a comparison's confirmed scores
    step = int(counts.get("COMPLETE", 0) + counts.get("PRUNED", 0) + counts.get("FAIL", 0))
    client.log_batch(run_id, metrics=[Metric(k, v, now, step) for k, v in metrics.items()], synchronous=True)
    tags = {"workbench.comparison": report.comparison[:5000]}
    if report.best is not None:
        tags["workbench.best_trial"] = str(report.best.number)
        tags["workbench.best_run_id"] = str(report.best.user_attrs.get("mlflow_run_id"))
    tags.update(getattr(report, "extra_tags", None) or {})
    tags[NOTE_TAG] = parent_note(client, run_id, report)  # the run page's description: the report's summary
    for key, value in tags.items():
        client.set_tag(run_id, key, value)
    client.log_artifacts(run_id, str(report.folder), "report")
    client.set_terminated(run_id, status)


def parent_note(client, run_id: str, report) -> str:
    """The parent run's description: the report's summary, the best trial linked (`workbench.tracking.describe`)."""
    from workbench.tracking.describe import study_parent_note

    experiment_id = None
    try:
        experiment_id = client.get_run(run_id).info.experiment_id
    except Exception:  # noqa: BLE001 - offline: the best trial is named without a link
        pass
    return study_parent_note(report, experiment_id)
