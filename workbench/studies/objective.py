"""One trial: a configuration trained over S seeds, reported epoch by epoch for pruning.

A trial is one MLflow child run (N trials -> N child runs): the first seed is tracked in
full by the RunTracker (curves, statistics, model, plots) with the study's parent run id;
the other seeds run untracked and add their curves (`seed1/val/loss`, ...) and objective
values to that run. Per seed the objective is the metric of the model the run ends with
(the restored best epoch under early stopping with `restore_best_weights`, else the last
epoch; `test/*` at the end); the trial's value is the mean over seeds.

Intermediate values go to `trial.report(value, step)` with step = seed * epochs + epoch,
so trials compare like with like (seed k, epoch e) and a pruner can stop a weak
configuration during any seed. Outcomes:

- COMPLETE: every seed finished; child FINISHED.
- PRUNED: the pruner stopped it (child KILLED, reason tagged, user attr `prune_reason`).
- FAIL: a seed diverged (NaN guard, live diagnosis, non-finite metric) or raised; child
  FAILED, reason tagged and in user attr `failure_reason`. The study goes on.

Optuna user attributes of a trial: `worker` (host:pid), `seeds`, `mlflow_run_id` (set as soon
as the child run exists), `objective_values` (per seed), `objective_std`, `verdicts` (the
diagnosis verdict of each seed run), `epochs_run`,
`seconds`, `failure_reason` or `prune_reason`, `retry_of` (the lost trial a retry redoes).
The child run carries the tags `workbench.study`, `workbench.trial_number`, `workbench.seeds`,
`workbench.optuna_study`, `workbench.arm` (a comparison's arm),
`workbench.trial_state`, `workbench.status_reason`, the param `trial.number` and the metrics
`objective/seed<k>`, `objective/mean`, `objective/std`, `trial/epochs`, `seed<k>/<curve>`.
"""

from __future__ import annotations

import math
import sys
import time
import traceback
from dataclasses import dataclass, field

import numpy as np

from workbench.errors import UserError
from workbench.studies.space import suggest
from workbench.training import FAILED, FINISHED, KILLED, Hook
from workbench.training.hooks import hook_priority

COMPLETE, PRUNED, FAIL = "COMPLETE", "PRUNED", "FAIL"
CHILD_STATUS = {COMPLETE: FINISHED, PRUNED: KILLED, FAIL: FAILED}  # an interrupted trial's run stays KILLED
INTERRUPTED = "interrupted"
TAG_STUDY, TAG_ROLE, TAG_TRIAL = "workbench.study", "workbench.role", "workbench.trial_number"
TAG_SEEDS, TAG_TRIAL_STATE = "workbench.seeds", "workbench.trial_state"
TAG_ARM, TAG_OPTUNA_STUDY = "workbench.arm", "workbench.optuna_study"  # a comparison's arm; the trial's Optuna study


@dataclass
class TrialResult:
    state: str
    value: float | None = None
    reason: str | None = None
    values: list[float] = field(default_factory=list)
    epochs: int = 0
    run_id: str | None = None
    tracked_status: str | None = None  # the status the tracker gave the child run (the first seed's)
    seconds: float = 0.0
    verdicts: list[str | None] = field(default_factory=list)  # workbench.diagnose's verdict per seed run

    @property
    def std(self) -> float:
        """Sample standard deviation over the seeds (0 for one seed)."""
        return float(np.std(self.values, ddof=1)) if len(self.values) > 1 else 0.0


class TrialReporter(Hook):
    """Reports the objective metric each epoch; stops the run when the pruner says so or it diverged."""

    priority = hook_priority("study_objective")

    def __init__(self, trial, metric: str, step_offset: int, seed: int, set_run_id=None) -> None:
        self.trial, self.metric, self.step_offset, self.seed = trial, metric, step_offset, seed
        self.set_run_id = set_run_id
        self.pruned_reason: str | None = None

    def on_train_begin(self, trainer) -> None:
        if self.set_run_id is None:
            return
        from workbench.tracking import RunTracker

        tracker = next((h for h in trainer.hooks if isinstance(h, RunTracker) and h.run_id), None)
        if tracker is not None:
            self.set_run_id(tracker.run_id)

    def on_epoch_end(self, trainer, logs) -> None:
        epoch = int(trainer.epoch)
        loss = logs.get("train/loss")
        if loss is not None and not math.isfinite(loss):
            trainer.stop(f"diverged: train/loss is {loss} at epoch {epoch} (seed {self.seed})", FAILED)
            return
        value = logs.get(self.metric)
        if value is None:
            return
        if not math.isfinite(value):
            trainer.stop(f"diverged: {self.metric} is {value} at epoch {epoch} (seed {self.seed})", FAILED)
            return
        self.trial.report(float(value), self.step_offset + epoch)
        if not trainer.stop_requested and self.trial.should_prune():
            self.pruned_reason = (f"pruned at epoch {epoch} of seed {self.seed}: {self.metric} = {value:.4g} "
                                  f"is worse than the pruner's threshold at step {self.step_offset + epoch}")
            trainer.stop(self.pruned_reason, KILLED)


def live_diagnosis_hooks(spec, stop_on: tuple[str, ...]) -> tuple[Hook, ...]:
    """workbench.diagnose's LiveDiagnosis, stopping the run (FAILED) on the verdicts in `stop_on`."""
    if not stop_on:
        return ()
    try:
        from workbench.diagnose import LiveDiagnosis
    except ImportError:  # without it the NaN guard and TrialReporter's finite checks still stop divergence
        return ()
    return (LiveDiagnosis(stop_on=stop_on, spec=spec),)


def seed_value(outcome, metric: str) -> float | None:
    """The objective of one finished seed: the metric of the model the run ended with."""
    run = outcome.run
    history = run.trainer.history if run is not None else {}
    if metric.startswith("test/") or metric not in history:
        value = outcome.metrics.get(metric)
        return None if value is None else float(value)
    from workbench.monitor import EarlyStopping

    series = history[metric]
    stopper = next((h for h in run.hooks if isinstance(h, EarlyStopping) and h.restore_best_weights), None)
    if stopper is not None and 0 <= stopper.best_epoch < len(series):
        return float(series[stopper.best_epoch])
    return float(series[-1])


def run_verdict(outcome, spec) -> str | None:
    """The run's diagnosis verdict: the tracker's (a tracked run), else diagnosed here from its record."""
    if outcome.verdict is not None or outcome.run is None or outcome.run.record is None:
        return outcome.verdict
    try:
        from workbench.diagnose import diagnose_record
    except ImportError:
        return None
    try:
        return diagnose_record(outcome.run.record, spec=spec).verdict
    except Exception:  # noqa: BLE001 - a verdict is evidence for the report, never a reason to fail the trial
        return None


def run_trial(trial, study, settings, parent_run_id: str | None, storage=None) -> TrialResult:
    """Train the trial's configuration over the seeds; never raises except KeyboardInterrupt."""
    from workbench.tracking.describe import trial_run_name

    start = time.perf_counter()
    base = settings.base
    params = suggest(study.space, trial)
    seeds = [base.seed + k for k in range(settings.seeds)]
    set_user_attrs(trial, {"seeds": seeds})
    retried = storage.get_trial(trial._trial_id).system_attrs.get("failed_trial") if storage is not None else None
    if retried is not None:  # a retry starts with the lost trial's user attributes: clear that attempt's outcome
        set_user_attrs(trial, {"retry_of": retried, "mlflow_run_id": None, "failure_reason": None,
                               "prune_reason": None, "objective_values": None, "objective_std": None,
                               "verdicts": None, "epochs_run": None, "seconds": None})
    result = TrialResult(FAIL)
    try:
        spec = base.with_overrides(params)
    except UserError as exc:
        result.reason = f"invalid configuration: {exc}"
        return _finish(trial, result, settings, start)
    tags = {TAG_STUDY: settings.study_name, TAG_ROLE: "trial", TAG_TRIAL: str(trial.number),
            TAG_SEEDS: ",".join(map(str, seeds)), TAG_OPTUNA_STUDY: trial.study.study_name}
    arm = getattr(settings, "arm", "")
    if arm:
        tags[TAG_ARM] = arm
    tracker_options = dict(experiment_name=settings.study_name, parent_run_id=parent_run_id,
                           run_name=trial_run_name(params, arm), tags=tags,  # the trial number is a tag
                           plots=study.trial_plots,
                           checkpoint=False)  # a lost trial is retried by Optuna, never resumed

    def set_run_id(run_id: str) -> None:
        result.run_id = run_id
        set_user_attrs(trial, {"mlflow_run_id": run_id})

    curves: dict[str, list[float]] = {}
    try:
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # divergence is reported as the reason
            result.state = _run_seeds(trial, study, settings, spec, seeds, tracker_options, set_run_id, result, curves)
    except KeyboardInterrupt:
        result.state, result.reason = FAIL, INTERRUPTED
        _finish(trial, result, settings, start, curves)
        raise
    except Exception as exc:  # a bug or a numeric error in one configuration must not end the study
        result.state, result.reason = FAIL, f"{type(exc).__name__}: {exc}"
        if not isinstance(exc, UserError):
            traceback.print_exc(file=sys.stderr)
    if result.state == COMPLETE:
        result.value = float(np.mean(result.values))
    return _finish(trial, result, settings, start, curves)


def _run_seeds(trial, study, settings, spec, seeds, tracker_options, set_run_id, result, curves) -> str:
    """Train seed after seed (the first one tracked); stop at the first pruned or failed seed."""
    from workbench.execute import execute

    for k, seed in enumerate(seeds):
        reporter = TrialReporter(trial, study.metric, k * spec.training.epochs, seed, set_run_id if k == 0 else None)
        outcome = execute(spec.with_overrides({"seed": seed}), track=k == 0, tracking_uri=settings.tracking_uri,
                          hooks=(reporter, *live_diagnosis_hooks(spec, study.stop_on),
                                 *(make_hook() for make_hook in study.trial_hooks)),
                          tracker_options=tracker_options if k == 0 else None)
        if k == 0 and outcome.run_id:
            set_run_id(outcome.run_id)
            result.tracked_status = outcome.status
        history = outcome.run.trainer.history if outcome.run is not None else {}
        result.epochs += len(history.get("train/loss", ()))
        result.verdicts.append(run_verdict(outcome, spec))
        if k > 0:
            curves.update({f"seed{k}/{key}": series for key, series in history.items() if key != "epoch"})
        if outcome.status == KILLED and reporter.pruned_reason:
            result.reason = reporter.pruned_reason
            return PRUNED
        if outcome.status != FINISHED:
            result.reason = f"seed {seed}: {outcome.reason or outcome.status.lower()}"
            return FAIL
        value = seed_value(outcome, study.metric)
        if value is None or not math.isfinite(value):
            result.reason = f"seed {seed}: {study.metric} is {value} at the end"
            return FAIL
        result.values.append(value)
    return COMPLETE


def _finish(trial, result: TrialResult, settings, start: float, curves=None) -> TrialResult:
    """User attributes on the Optuna trial and the trial's summary on its MLflow child run."""
    result.seconds = time.perf_counter() - start
    attrs = {"epochs_run": result.epochs, "seconds": round(result.seconds, 2)}
    if result.values:
        attrs.update(objective_values=result.values, objective_std=result.std)
    if result.verdicts:
        attrs["verdicts"] = result.verdicts
    if result.reason:
        attrs["failure_reason" if result.state == FAIL else "prune_reason"] = result.reason
    set_user_attrs(trial, attrs)
    if result.run_id:
        try:
            annotate_child(settings.tracking_uri, result, trial.number, curves or {})
        except Exception as exc:  # noqa: BLE001 - the trial's outcome is in Optuna; MLflow is best effort here
            print(f"workbench: warning: could not annotate MLflow run {result.run_id}: {exc}", file=sys.stderr)
    return result


def set_user_attrs(trial, attrs: dict) -> None:
    """Set user attributes; a no-op once another worker has failed the trial (a missed heartbeat)."""
    from optuna.exceptions import UpdateFinishedTrialError

    try:
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
    except UpdateFinishedTrialError:
        pass


def annotate_child(tracking_uri: str, result: TrialResult, number: int, curves: dict) -> None:
    """Per-seed objectives, spread, curves of the untracked seeds, and the true status of the trial."""
    from mlflow.entities import Metric, Param, RunTag

    from workbench.tracking import open_client
    from workbench.tracking.tracker import MAX_TAG_CHARS, TAG_STATUS_REASON

    client = open_client(tracking_uri)
    now = int(time.time() * 1000)
    metrics = [Metric(f"objective/seed{k}", v, now, 0) for k, v in enumerate(result.values)]
    if result.values:
        metrics += [Metric("objective/mean", float(np.mean(result.values)), now, 0),
                    Metric("objective/std", result.std, now, 0)]
    metrics.append(Metric("trial/epochs", float(result.epochs), now, 0))
    for key, series in curves.items():
        metrics += [Metric(key, float(v), now, step) for step, v in enumerate(series)]
    tags = [RunTag(TAG_TRIAL_STATE, result.state)]
    if result.reason:
        tags.append(RunTag(TAG_STATUS_REASON, result.reason[:MAX_TAG_CHARS]))
    for i in range(0, len(metrics), 1000):
        extra = ([Param("trial.number", str(number))], tags) if i == 0 else ([], [])
        client.log_batch(result.run_id, metrics=metrics[i : i + 1000], params=extra[0], tags=extra[1],
                         synchronous=True)
    status = KILLED if result.reason == INTERRUPTED else CHILD_STATUS[result.state]
    if status != result.tracked_status:  # pruned or failed in a later seed, or interrupted
        client.set_terminated(result.run_id, status)
