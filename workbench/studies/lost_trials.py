"""Trials lost with their worker: failed with the reason, retried, their MLflow run marked FAILED.

Two ways a worker is found lost:
- on a shared RDB, its heartbeat stops for `grace_period` seconds: Optuna's `fail_stale_trials`
  (run by every worker before it asks for a trial) fails the trial and calls `StaleTrialHandler`;
- on this machine, its process is gone: the main process sees a worker exit abnormally, or a
  journal study is resumed with trials still RUNNING from a process that no longer exists
  (`reap_lost_trials`, using the `worker` = host:pid and `worker_started` user attributes of each
  trial: a zombie or a new process that reuses the pid does not count as the worker).

The retry is Optuna's `RetryHeartbeatStaleTrialCallback`: a WAITING copy of the trial (same
params, `system_attrs["failed_trial"]`), run by the next worker that asks, at most `max_retry` times.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import warnings
from pathlib import Path

from workbench.machine import proc_stat_fields
from workbench.studies.objective import FAIL, TAG_OPTUNA_STUDY, TAG_STUDY, TAG_TRIAL, TAG_TRIAL_STATE


class StaleTrialHandler:
    """Called for a trial whose worker is gone: tag its MLflow run FAILED and queue a retry."""

    def __init__(self, settings, reason: str) -> None:
        self.settings, self.reason = settings, reason

    def __call__(self, study, trial) -> None:
        max_retry = self.settings.storage.max_retry
        queue_retry(study, trial, max_retry)
        retried = len(trial.system_attrs.get("retry_history", ())) < max_retry
        worker = trial.user_attrs.get("worker", "unknown worker")
        reason = f"{self.reason} (worker {worker}); " + ("retried as a new trial" if retried else
                                                          f"not retried: lost {max_retry + 1} times")
        print(f"workbench: trial {trial.number} lost: {reason}", file=sys.stderr, flush=True)
        with contextlib.suppress(Exception):
            mark_child_failed(self.settings, trial, reason, study.study_name)


def queue_retry(study, trial, max_retry: int) -> None:
    """A WAITING copy of the failed `trial` (a FrozenTrial; same params), run first by the next worker
    that asks; the failed one then no longer counts against the budget. Also used for interrupted trials."""
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the callback is marked experimental
        RetryHeartbeatStaleTrialCallback(max_retry=max_retry)(study, trial)


def mark_child_failed(settings, trial, reason: str, optuna_study_name: str | None = None) -> None:
    """The MLflow child run of a lost trial: FAILED with the reason (found by id or by tags; in a
    comparison, trial numbers repeat across the arms' studies: the run's `workbench.optuna_study` tells)."""
    from workbench.tracking import open_client
    from workbench.tracking.tracker import TAG_STATUS_REASON

    client = open_client(settings.tracking_uri)
    run_id = trial.user_attrs.get("mlflow_run_id")
    if not run_id:
        experiment = client.get_experiment_by_name(settings.study_name)
        if experiment is None:
            return
        runs = client.search_runs([experiment.experiment_id], max_results=5, filter_string=(
            f"tags.`{TAG_STUDY}` = '{settings.study_name}' and tags.`{TAG_TRIAL}` = '{trial.number}' "
            "and attributes.status = 'RUNNING'"))
        if optuna_study_name is not None:  # runs from before the tag existed have none: they match
            runs = [r for r in runs if r.data.tags.get(TAG_OPTUNA_STUDY, optuna_study_name) == optuna_study_name]
        if not runs:
            return
        run_id = runs[0].info.run_id
    client.set_tag(run_id, TAG_STATUS_REASON, reason)
    client.set_tag(run_id, TAG_TRIAL_STATE, FAIL)
    client.set_terminated(run_id, "FAILED")


def reap_lost_trials(optuna_study, settings, dead_pids: set[int] | None, reason: str, *,
                     unclaimed: bool = False) -> int:
    """Fail (and retry) RUNNING trials of this machine whose worker process is gone.

    `dead_pids` None: every RUNNING trial whose recorded worker pid on this host is not alive
    (a previous invocation that crashed or was killed). `unclaimed`: also a RUNNING trial with no
    `worker` at all (its process died between asking for it and claiming it); only under the
    budget lock, where no live worker can be in that gap.
    """
    import optuna

    host = socket.gethostname()
    handler = StaleTrialHandler(settings, reason)
    storage = optuna_study._storage
    lost = 0
    for trial in optuna_study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        pid = local_worker_pid(trial, host)
        if "worker" not in trial.user_attrs:
            if not unclaimed:
                continue
        elif pid is None:
            continue
        elif (pid not in dead_pids) if dead_pids is not None else _alive(pid, trial.user_attrs.get("worker_started")):
            continue
        try:  # the reason on the Optuna trial too (trials.csv), while it can still be written
            worker = trial.user_attrs.get("worker", "unknown worker")
            storage.set_trial_user_attr(trial._trial_id, "failure_reason", f"{reason} (worker {worker})")
            if not storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL):
                continue
        except optuna.exceptions.UpdateFinishedTrialError:
            continue
        handler(optuna_study, storage.get_trial(trial._trial_id))
        lost += 1
    return lost


def requeue_interrupted(optuna_study, max_retry: int) -> int:
    """Queue the retry of an interrupted trial that has none (its worker was killed between failing
    it and queueing the retry); only trials of this machine whose worker is gone. Returns how many."""
    import optuna

    from workbench.studies.objective import INTERRUPTED

    host = socket.gethostname()
    trials = optuna_study.get_trials(deepcopy=False)
    retried = {n for t in trials for n in t.system_attrs.get("retry_history", ())}
    queued = 0
    for trial in trials:
        if trial.state != optuna.trial.TrialState.FAIL or trial.number in retried or \
                trial.user_attrs.get("failure_reason") != INTERRUPTED:
            continue
        pid = local_worker_pid(trial, host)
        if pid is None or _alive(pid, trial.user_attrs.get("worker_started")):
            continue
        queue_retry(optuna_study, trial, max_retry)
        queued += 1
    return queued


def local_worker_pid(trial, host: str) -> int | None:
    """The pid of the worker that claimed `trial` (user attr `worker` = host:pid) when it ran on `host`."""
    worker_host, _, pid_text = str(trial.user_attrs.get("worker", "")).rpartition(":")
    return int(pid_text) if worker_host == host and pid_text.isdigit() else None


def process_start_ticks(pid: int) -> int | None:
    """When process `pid` started (clock ticks since boot, /proc/PID/stat field 22); None where unknown."""
    stat = proc_stat_fields(pid)
    return int(stat[19]) if stat is not None else None


def _alive(pid: int, started: int | None = None) -> bool:
    """Whether the worker `pid` still runs: not gone, not a zombie (an orphan whose parent, PID 1 in
    a container, never reaps it), and not a new process that reuses the pid (its start time differs)."""
    if Path("/proc/self/stat").exists():
        stat = proc_stat_fields(pid)
        if stat is None or stat[0] in ("Z", "X"):
            return False
        return started is None or int(stat[19]) == int(started)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
