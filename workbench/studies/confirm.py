"""One confirmation run: an arm's best tuned setting trained again on a fresh seed, scored on the test split.

The job is in the trial's user attributes (set when it was enqueued): `arm` (label), `values` (the
compared keys), `params` (the tuned keys of the arm's best trial), `best_trial`, `tuning_value`,
`seed` (never a tuning seed) and `seed_index`. The run is one MLflow child run of the comparison's
parent (tags workbench.role = confirmation, workbench.arm, workbench.best_trial), tracked in full.

The trial's value is the run's `score` (test/accuracy by default: the model the run ends with,
the restored best epoch under early stopping, on the test split). Its user attributes also keep
`tuning_metric_value` (the same run's validation metric), `gradient_ratio` (median over the
recorded steps of ||dL/dW|| of the first layer over the last one's: << 1 when gradients vanish on
their way back, >> 1 when they explode), `verdict` (workbench.diagnose), `epochs_run`, `seconds`,
`mlflow_run_id`, and `failure_reason` when the run diverged or failed (the trial is then FAIL: a
result of the arm, reported, not retried).
"""

from __future__ import annotations

import math
import sys
import time
import traceback

import numpy as np

from workbench.errors import UserError
from workbench.studies.objective import (
    COMPLETE,
    FAIL,
    INTERRUPTED,
    TAG_ARM,
    TAG_OPTUNA_STUDY,
    TAG_ROLE,
    TAG_SEEDS,
    TAG_STUDY,
    TAG_TRIAL,
    TAG_TRIAL_STATE,
    TrialReporter,
    TrialResult,
    live_diagnosis_hooks,
    run_verdict,
    seed_value,
    set_user_attrs,
)
from workbench.training import FAILED, FINISHED, KILLED

TAG_BEST_TRIAL = "workbench.best_trial"
OUTCOME_ATTRS = ("mlflow_run_id", "failure_reason", "score", "tuning_metric_value", "gradient_ratio", "verdict",
                 "epochs_run", "seconds")


def gradient_ratio(record) -> float:
    """Median over recorded steps of grad_norm(first layer) / grad_norm(last layer); NaN without them."""
    if record is None or len(record) == 0 or len(record.layers) < 2 or "grad_norm" not in record.layer_stats():
        return math.nan
    grads = np.asarray(record.layer("grad_norm"), dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = grads[:, 0] / grads[:, -1]
    ratio = ratio[np.isfinite(ratio)]
    return float(np.median(ratio)) if ratio.size else math.nan


def run_confirmation(trial, comparison, settings, parent_run_id: str | None, storage=None) -> TrialResult:
    """Train the job's setting on its fresh seed; never raises except KeyboardInterrupt."""
    from workbench.execute import execute
    from workbench.studies.comparison import ROLE_CONFIRMATION

    start = time.perf_counter()
    job = trial.user_attrs
    arm, seed = job["arm"], int(job["seed"])
    if storage is not None and storage.get_trial(trial._trial_id).system_attrs.get("failed_trial") is not None:
        set_user_attrs(trial, {key: None for key in OUTCOME_ATTRS})  # a retry: not the lost attempt's outcome
    result = TrialResult(FAIL)
    attrs: dict = {}
    try:
        spec = settings.base.with_overrides({**job["values"], **job["params"], "seed": seed})
    except UserError as exc:
        result.reason = f"invalid configuration: {exc}"
        return _finish(trial, result, attrs, settings, start)
    tags = {TAG_STUDY: settings.study_name, TAG_ROLE: ROLE_CONFIRMATION, TAG_ARM: arm, TAG_TRIAL: str(trial.number),
            TAG_OPTUNA_STUDY: trial.study.study_name, TAG_SEEDS: str(seed), TAG_BEST_TRIAL: str(job["best_trial"])}
    tracker_options = dict(experiment_name=settings.study_name, parent_run_id=parent_run_id,
                           run_name=f"{arm} confirmation seed {seed}", tags=tags, plots=comparison.trial_plots,
                           checkpoint=False)

    def set_run_id(run_id: str) -> None:
        result.run_id = run_id
        set_user_attrs(trial, {"mlflow_run_id": run_id})

    reporter = TrialReporter(trial, comparison.metric, 0, seed, set_run_id)  # curves in Optuna; stops on NaN loss
    hooks = (reporter, *live_diagnosis_hooks(spec, comparison.stop_on),
             *(make_hook() for make_hook in getattr(comparison, "trial_hooks", ())))
    try:
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            outcome = execute(spec, track=True, tracking_uri=settings.tracking_uri, hooks=hooks,
                              tracker_options=tracker_options)
    except KeyboardInterrupt:
        result.reason = INTERRUPTED
        _finish(trial, result, attrs, settings, start)
        raise
    except Exception as exc:  # a bug or a numeric error in one run must not end the comparison
        result.reason = f"{type(exc).__name__}: {exc}"
        if not isinstance(exc, UserError):
            traceback.print_exc(file=sys.stderr)
        return _finish(trial, result, attrs, settings, start)
    result.run_id = outcome.run_id or result.run_id
    result.tracked_status = outcome.status
    verdict = run_verdict(outcome, spec)
    result.verdicts = [verdict]
    history = outcome.run.trainer.history if outcome.run is not None else {}
    result.epochs = len(history.get("train/loss", ()))
    attrs.update(verdict=verdict, gradient_ratio=gradient_ratio(outcome.run.record if outcome.run else None))
    validation = seed_value(outcome, comparison.metric) if outcome.status == FINISHED else None
    if validation is not None and math.isfinite(validation):
        attrs["tuning_metric_value"] = validation
    score = outcome.metrics.get(comparison.score)
    if outcome.status != FINISHED:
        result.reason = f"seed {seed}: {outcome.reason or outcome.status.lower()}"
    elif score is None or not math.isfinite(score):
        result.reason = f"seed {seed}: {comparison.score} is {score} at the end"
    else:
        result.state, result.value, result.values = COMPLETE, float(score), [float(score)]
        attrs["score"] = float(score)
    return _finish(trial, result, attrs, settings, start)


def _finish(trial, result: TrialResult, attrs: dict, settings, start: float) -> TrialResult:
    result.seconds = time.perf_counter() - start
    attrs.update(epochs_run=result.epochs, seconds=round(result.seconds, 2))
    if result.reason:
        attrs["failure_reason"] = result.reason
    if isinstance(attrs.get("gradient_ratio"), float) and not math.isfinite(attrs["gradient_ratio"]):
        attrs["gradient_ratio"] = None  # JSON has no NaN
    set_user_attrs(trial, attrs)
    if result.run_id:
        try:
            _annotate(settings.tracking_uri, result, attrs)
        except Exception as exc:  # noqa: BLE001 - the outcome is in Optuna; MLflow is best effort here
            print(f"workbench: warning: could not annotate MLflow run {result.run_id}: {exc}", file=sys.stderr)
    return result


def _annotate(tracking_uri: str, result: TrialResult, attrs: dict) -> None:
    """The confirmation's summary on its child run, and its true status (a non-finite score fails it)."""
    from mlflow.entities import Metric, RunTag

    from workbench.tracking import open_client
    from workbench.tracking.tracker import MAX_TAG_CHARS, TAG_STATUS_REASON

    client = open_client(tracking_uri)
    now = int(time.time() * 1000)
    metrics = [Metric("confirmation/score", result.value, now, 0)] if result.value is not None else []
    if attrs.get("gradient_ratio") is not None:
        metrics.append(Metric("confirmation/gradient_ratio", float(attrs["gradient_ratio"]), now, 0))
    tags = [RunTag(TAG_TRIAL_STATE, result.state)]
    if result.reason:
        tags.append(RunTag(TAG_STATUS_REASON, result.reason[:MAX_TAG_CHARS]))
    client.log_batch(result.run_id, metrics=metrics, tags=tags, synchronous=True)
    status = KILLED if result.reason == INTERRUPTED else FINISHED if result.state == COMPLETE else FAILED
    if status != result.tracked_status:
        client.set_terminated(result.run_id, status)


def confirmation_line(trial, result: TrialResult, comparison) -> str:
    job = trial.user_attrs
    params = "  ".join(f"{key.rpartition('.')[2]}={value:.3g}" if isinstance(value, float) else
                       f"{key.rpartition('.')[2]}={value}" for key, value in job["params"].items())
    if result.state == COMPLETE:
        outcome = f"{comparison.score} {result.value:.4g}"
    else:
        outcome = f"failed: {result.reason}"
    verdict = result.verdicts[0] if result.verdicts else None
    extra = f", {verdict}" if verdict else ""
    return (f"{job['arm']}  confirmation seed {job['seed']}  {params}  -> {outcome}{extra}  "
            f"({result.seconds:.1f} s)")
