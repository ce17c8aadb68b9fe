"""The Model Registry: a run's `model/` as a new version of a registered model, tagged with what the run found.

    version = register_model(client, run_id, "digits-classifier", registry_tags(verdict, metrics))
    mlflow.pyfunc.load_model("models:/digits-classifier/1")     # or: mlflow models serve -m models:/...

`workbench run --register NAME` and a study's `--register NAME` (its best trial: `register_study_best`)
call it.
"""

from __future__ import annotations

import math
import re

from workbench.errors import UserError

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._ -]{0,254}$")
TAG_VERDICT, TAG_RUN, TAG_STATUS = "workbench.verdict", "workbench.run_id", "workbench.status"


def check_model_name(name: str) -> str:
    """A registered model name MLflow and shells both take (checked before any training)."""
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise UserError(f"--register {name!r}: a model name is letters, digits, '.', '_', '-' and spaces, "
                        "starting with a letter or digit (e.g. --register digits-classifier)")
    return name


def registry_tags(verdict: str | None, metrics: dict | None, status: str | None = None) -> dict[str, str]:
    """The version's tags: the run's verdict, status and final test metrics."""
    tags = {}
    if verdict:
        tags[TAG_VERDICT] = str(verdict)
    if status:
        tags[TAG_STATUS] = str(status)
    for key, value in (metrics or {}).items():
        if key.startswith("test/") and isinstance(value, (int, float)) and math.isfinite(value):
            tags[key] = f"{float(value):.6g}"
    return tags


def register_model(client, run_id: str, name: str, tags: dict | None = None, description: str | None = None):
    """Create `name` if needed and a version from `runs:/RUN_ID/model`; returns the ModelVersion."""
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(name)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    tags = {**(tags or {}), TAG_RUN: run_id}
    return client.create_model_version(name, source=f"runs:/{run_id}/model", run_id=run_id,
                                       tags={k: str(v) for k, v in tags.items()}, description=description)


def study_best_trial(report):
    """The study's best trial (a comparison: the best arm's best tuning trial), or None."""
    best = getattr(report, "best", None)
    row = getattr(report, "best_row", None)
    if best is None and row is not None:
        best = getattr(row, "best", None)
    return best


def register_study_best(tracking_uri: str, report, name: str):
    """Register the model of the study's best trial; returns the ModelVersion (a UserError when no trial completed)."""
    import sys

    from workbench.tracking.describe import TAG_NOTE
    from workbench.tracking.experiments import open_client

    best = study_best_trial(report)
    run_id = (best.user_attrs or {}).get("mlflow_run_id") if best is not None else None
    if not run_id:
        raise UserError(f"--register {name}: the study has no completed trial with a tracked run to register")
    client = open_client(tracking_uri)
    run = client.get_run(run_id)
    tags = registry_tags(run.data.tags.get(TAG_VERDICT), run.data.metrics, run.info.status)
    tags.update({"workbench.study": run.data.tags.get("workbench.study", ""),
                 "workbench.trial_number": str(best.number), "workbench.trial_value": f"{best.value:.6g}"})
    version = register_model(client, run_id, name, tags, run.data.tags.get(TAG_NOTE))
    print(f"registered the best trial's model (trial {best.number}, run {run_id}) as {name} version "
          f"{version.version}: mlflow models serve -m models:/{name}/{version.version} --env-manager local",
          file=sys.stderr, flush=True)
    return version
