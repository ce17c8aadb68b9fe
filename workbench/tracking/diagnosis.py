"""Diagnosis of tracked runs: find a run in any MLflow store, read its statistics, log the result.

The MLflow side of `workbench diagnose`: the diagnosis itself is pure (`workbench.diagnose`:
a record and a spec in, a diagnosis out); this module, like everything that talks to MLflow,
lives in `workbench.tracking`, so the dependency goes one way (tracking -> diagnose).

    diagnosis = diagnose_run("latest", tracking_uri="sqlite:///mlflow.db")   # logs and tags too
    diagnose_and_log(client, run_id, record, spec=params)                    # any client, any record
    diagnose_tracked(tracker, record)                                         # from RunTracker.finish

What a diagnosis leaves on its run: `diagnosis.json` (the `--json` object), the figure
`plots/diagnosis.png`, and the tag `workbench.verdict`. Every user mistake (no such store, run,
experiment or statistics artifact) is one `UserError` line naming it and the fix.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from workbench.diagnose.engine import diagnose_record
from workbench.diagnose.findings import Diagnosis
from workbench.errors import UserError

LATEST = "latest"
FIGURE_FILE = "diagnosis.png"


def open_store(tracking_uri: str | None = None):
    """An `MlflowClient` on an existing store (a missing SQLite file or folder is an error, not a new store)."""
    from mlflow import MlflowClient

    from workbench.tracking.uri import resolve_tracking_uri, sqlite_path

    uri = resolve_tracking_uri(tracking_uri)
    path = sqlite_path(uri)
    if path is None and uri.startswith("file:"):
        path = Path(unquote(urlparse(uri).path))
    elif path is None and "://" not in uri:
        path = Path(uri)  # a plain folder is a file store
    if path is not None and not path.exists():
        raise UserError(
            f"no MLflow store at {path}: pass the --tracking-uri your runs were logged to "
            f"(e.g. sqlite:///mlflow.db in the folder where you ran `workbench run`) or set MLFLOW_TRACKING_URI"
        )
    return MlflowClient(tracking_uri=uri)


def find_run(client, run_ref: str, experiment: str | None = None):
    """The MLflow run `run_ref` (an id, or "latest": the most recently started run, in `experiment` if given)."""
    from mlflow.exceptions import MlflowException

    uri = client.tracking_uri
    try:
        if run_ref != LATEST:
            try:
                run = client.get_run(run_ref)
            except MlflowException:
                raise UserError(f"no MLflow run '{run_ref}' in {uri}: check the run id (`workbench ui` lists runs), "
                                f"or use `latest`, and --tracking-uri") from None
            if experiment is not None:
                exp = client.get_experiment(run.info.experiment_id)
                if exp.name != experiment:
                    raise UserError(f"run '{run_ref}' belongs to experiment '{exp.name}', not '{experiment}': "
                                    f"drop --experiment or give a run of '{experiment}'")
            return run
        if experiment is not None:
            exp = client.get_experiment_by_name(experiment)
            if exp is None:
                names = ", ".join(e.name for e in client.search_experiments()) or "none"
                raise UserError(f"no MLflow experiment '{experiment}' in {uri}: experiments there: {names}")
            ids = [exp.experiment_id]
        else:
            ids = [e.experiment_id for e in client.search_experiments()]
        runs = client.search_runs(ids, order_by=["attributes.start_time DESC"], max_results=1) if ids else []
        if not runs:
            where = f" in experiment '{experiment}'" if experiment else ""
            raise UserError(f"no runs{where} in {uri}: train one with `workbench run experiments/digits_mlp.toml "
                            f"--tracking-uri {uri}`")
        return runs[0]
    except MlflowException as exc:
        raise UserError(f"cannot read MLflow store {uri}: {exc.message if hasattr(exc, 'message') else exc}") from None


def load_run_stats(client, run):
    """The statistics record a run logged as `stats/record.npz`."""
    from mlflow.exceptions import MlflowException

    from workbench.monitor import load_record
    from workbench.tracking.artifacts import STATS_DIR, STATS_FILE

    run_id, path = run.info.run_id, f"{STATS_DIR}/{STATS_FILE}"
    with tempfile.TemporaryDirectory(prefix="workbench-diagnose-") as tmp:
        try:
            local = client.download_artifacts(run_id, path, tmp)
        except (MlflowException, OSError):
            raise UserError(
                f"run '{run_id}' has no statistics artifact {path}: diagnose a run logged by `workbench run` "
                f"(it saves {path} when the run ends; a run still going or a study's parent run has none)"
            ) from None
        return load_record(local)


def diagnose_and_log(client, run_id: str, record, *, spec: Any = None, log: bool = True) -> Diagnosis:
    """Diagnose `record` and leave `diagnosis.json`, `plots/diagnosis.png` and the verdict tag on run `run_id`."""
    diagnosis = diagnose_record(record, spec=spec, run_id=run_id)
    if log:
        from workbench.tracking.artifacts import DIAGNOSIS_FILE
        from workbench.tracking.tracker import TAG_VERDICT  # late: the tracker imports this module

        client.log_dict(run_id, diagnosis.to_json(), DIAGNOSIS_FILE)
        log_figure(client, run_id, record, diagnosis)
        client.set_tag(run_id, TAG_VERDICT, diagnosis.verdict)
    return diagnosis


def log_figure(client, run_id: str, record, diagnosis: Diagnosis) -> None:
    from workbench.diagnose.figure import save_diagnosis_figure
    from workbench.tracking.artifacts import PLOTS_DIR

    with tempfile.TemporaryDirectory(prefix="workbench-diagnosis-") as tmp:
        path = Path(tmp) / FIGURE_FILE
        save_diagnosis_figure(path, record, diagnosis)
        client.log_artifact(run_id, str(path), PLOTS_DIR)


def diagnose_run(run_ref: str = LATEST, *, tracking_uri: str | None = None, experiment: str | None = None,
                 log: bool = True) -> Diagnosis:
    """Diagnose a tracked run by id or "latest"; its params make the advice concrete."""
    client = open_store(tracking_uri)
    run = find_run(client, run_ref, experiment)
    record = load_run_stats(client, run)
    return diagnose_and_log(client, run.info.run_id, record, spec=dict(run.data.params) or None, log=log)


def diagnose_tracked(tracker, record, *, figure: bool | None = None) -> Diagnosis:
    """For `RunTracker.finish`: diagnose the run's record, log the figure (unless the tracker draws
    no plots, or `figure=False`), and set the verdict through `tracker.set_verdict` (the tag and
    diagnosis.json), so that `finish` returns it."""
    diagnosis = diagnose_record(record, spec=tracker.spec, run_id=tracker.run_id)
    figure = getattr(tracker, "plots", True) if figure is None else figure
    if tracker.run_id is not None and figure:
        log_figure(tracker.client, tracker.run_id, record, diagnosis)
    tracker.set_verdict(diagnosis.verdict, diagnosis.to_json())
    return diagnosis
