"""`RunTracker`: one MLflow run per training run, as a hook plus `start` / `finish`.

    tracker = RunTracker(spec, tracking_uri=None, experiment_name=None, parent_run_id=None)
    tracker.start(run)                    # create the run, log params, tags, spec.toml; hook in
    result = run.trainer.fit()
    tracker.finish(run, result, result.status, result.reason)   # flush, artifacts, true status
    tracker.resume(run, run_id)           # instead of start: continue an existing run (`execute(resume_run_id=)`)

Only `MlflowClient` is used (no fluent active run), so several trackers can live in
one process (a study's trials). Metrics leave the training thread as blocks of
numbers, sent by a `MetricLogger` thread with `log_batch`:

- per epoch, at step = global step: `epoch`, `train/loss`, `val/loss`, `val/accuracy` or `val/r2`;
- at the end: `test/*`;
- from the statistics record, rows on the cadence of `monitor.log_every` (doubled for long
  runs so that a series holds at most about 1,000 points: `workbench.tracking.metric_feed`):
  `<stat>/<layer>` for the `LAYER_METRICS`, `grad_norm/global` and `clip/fraction`
  (the running fraction of recorded steps where clipping fired).
  Non-finite values are logged as they are (MLflow stores NaN; it clamps +-inf to
  +-1.8e308). The full-resolution record is the `stats/` artifact.

What the MLflow UI shows of the run: its name (the spec's name and a short id, or `run_name`),
its description (`mlflow.note.content`: model, data, verdict and why, final metrics), the data
set as a dataset input, the experiment's description (the spec file's leading comment).

`finish` (any outcome: FINISHED, FAILED, KILLED) drains the metrics, uploads
`stats/`, `model/` (an MLflow Model: `workbench.tracking.pyfunc`; registered as a new version of
`register` when the run finished), `plots/` (skipped with `plots=False`) and `checkpoint/` (the last
epoch end's `workbench.checkpoint`, skipped with `checkpoint=False`), runs
`workbench.tracking.diagnosis.diagnose_tracked` unless a verdict was set already (tag
`workbench.verdict`, diagnosis.json; `finish` returns the verdict), tags
`workbench.status_reason` and sets the status last. It never raises over the
error that ended training: every step is attempted, a failing one prints a
warning on stderr, and a first Ctrl-C or SIGTERM while saving is held back.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from workbench.errors import UserError
from workbench.signals import interrupts_deferred
from workbench.spec.toml_writer import format_value
from workbench.tracking import artifacts
from workbench.tracking.describe import (
    TAG_NOTE,
    experiment_description,
    run_description,
)
from workbench.tracking.experiments import open_client
from workbench.tracking.metric_feed import (
    CLIP_FRACTION,
    GLOBAL_METRICS,
    HIDDEN_ONLY,
    LAYER_METRICS,
    MetricFeed,
)
from workbench.tracking.metric_logger import MetricLogger
from workbench.tracking.offline import ResilientClient, bound_http_retries
from workbench.tracking.uri import resolve_tracking_uri
from workbench.training import FAILED, FINISHED, KILLED, Hook
from workbench.training.hooks import hook_priority

__all__ = ["CLIP_FRACTION", "GLOBAL_METRICS", "HIDDEN_ONLY", "LAYER_METRICS", "RunTracker", "spec_params"]
PULL_INTERVAL_S = 2.0  # within an epoch, hand new record rows to the sender at most this often
MAX_PARAM_CHARS = 6000  # MLflow's limit on a param value

TAG_VERSION, TAG_DATASET, TAG_MODEL = "workbench.version", "workbench.dataset", "workbench.model"
TAG_VERDICT, TAG_STATUS_REASON, TAG_SPEC_PATH = "workbench.verdict", "workbench.status_reason", "workbench.spec_path"
TAG_RUN_NAME, TAG_PARENT = "mlflow.runName", "mlflow.parentRunId"
TAG_BLAS_THREADS = "workbench.blas_threads"  # the last bits of large products depend on it (README: Reliability)
MAX_TAG_CHARS = 5000  # MLflow accepts 8000; keep long exception messages readable


def param_value(value: Any) -> str:
    """A spec value as an MLflow param, written as a TOML value (`--set key=value` accepts it back)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        if any(isinstance(v, dict) for v in value):  # a layer list: TOML inline tables (spec.toml has it whole)
            text = format_value(value)
            return text if len(text) <= MAX_PARAM_CHARS else text[: MAX_PARAM_CHARS - 3] + "..."
        return "[" + ", ".join(param_value(v) for v in value) + "]"
    return str(value)


def spec_params(spec) -> dict[str, str]:
    """The flattened spec as params; None (absent optional keys) is skipped."""
    return {key: param_value(value) for key, value in spec.flatten().items() if value is not None}


def workbench_version() -> str:
    try:
        from workbench import __version__

        return __version__
    except ImportError:
        return "unknown"


class RunTracker(Hook):
    """Logs one training run to MLflow; `start` before `fit`, `finish` after it (any outcome)."""

    priority = hook_priority("tracker")

    def __init__(
        self,
        spec,
        *,
        tracking_uri: str | None = None,
        spec_path: str | None = None,
        experiment_name: str | None = None,
        parent_run_id: str | None = None,
        run_name: str | None = None,
        tags: dict[str, Any] | None = None,
        plots: bool = True,
        checkpoint: bool = True,
        register: str | None = None,
    ) -> None:
        self.spec = spec
        self.tracking_uri = tracking_uri
        self.spec_path = spec_path
        self.experiment_name = experiment_name or spec.name
        self.parent_run_id = parent_run_id
        self.run_name = run_name
        self.extra_tags = dict(tags or {})
        self.plots = bool(plots)  # drawing a run's PNGs takes about a second: studies may skip it
        self.checkpoint = bool(checkpoint)  # upload the runner's checkpoint folder as `checkpoint/` at finish
        self.checkpoint_dir: Path | None = None  # set by the runner that registered the Checkpoint hook
        self.register = register  # registered model name: a new version of it from `model/` when the run finishes
        self.registered = None  # the ModelVersion registered by `finish`
        self.diagnosis: dict | None = None  # diagnosis.json, for the run's description
        self.log_every = int(spec.monitor.log_every)
        self.client = None
        self.experiment_id: str | None = None
        self.run_id: str | None = None
        self.verdict: str | None = None
        self.metrics: MetricLogger | None = None
        self._run = None
        self._handles: list = []
        self._gradients = None  # a workbench.monitor.GradientSnapshot, for the gradient histograms
        self.feed = MetricFeed(self.log_every)  # its cadence is bounded by the run's length in `_hook_in`
        self._next_pull = 0.0
        self._epochs_logged_until = -1  # resumed runs: the last step whose epoch metrics MLflow has
        self._finished = False

    # -- lifecycle -------------------------------------------------------------------
    def start(self, run) -> str:
        """Create the MLflow run (name, params, tags, spec.toml, dataset, description), start the sender and hook in."""
        from workbench.tracking.replay import create_run

        uri = resolve_tracking_uri(self.tracking_uri)
        bound_http_retries(uri)
        operation = start_operation(self.spec, run, experiment_name=self.experiment_name, run_name=self.run_name,
                                    tags=self._start_tags(run), spec_path=self.spec_path,
                                    describe_experiment=self.parent_run_id is None)
        try:  # connecting: any failure here is a store the user named that does not work
            client = open_client(uri)
            self.run_id, self.experiment_id = create_run(client, operation)
        except UserError:
            raise
        except Exception as exc:  # noqa: BLE001 - MLflow, SQLAlchemy and HTTP errors alike
            message = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise UserError(f"cannot log to MLflow at {uri}: {message} "
                            "(check --tracking-uri or MLFLOW_TRACKING_URI, or use --no-track)") from exc
        self.tracking_uri = uri
        self.client = ResilientClient(client, self.run_id)  # an outage from here on: retries, then a local spool
        with self._closed_if_setup_fails():
            self._hook_in(run)
        return self.run_id

    def resume(self, run, run_id: str) -> str:
        """Re-open the existing MLflow run `run_id` (status RUNNING) for `run`, restored from its checkpoint.

        Params, tags and spec.toml stay as the first attempt logged them; the statistics already in the
        restored record are not sent again.
        """
        uri = resolve_tracking_uri(self.tracking_uri)
        bound_http_retries(uri)
        try:
            client = open_client(uri)
            info = client.get_run(run_id).info
            client.update_run(run_id, status="RUNNING")
            self.client = ResilientClient(client, run_id)
        except Exception as exc:  # noqa: BLE001 - MLflow, SQLAlchemy and HTTP errors alike
            message = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise UserError(f"cannot resume MLflow run '{run_id}' at {uri}: {message}") from exc
        self.tracking_uri, self.run_id, self.experiment_id = uri, run_id, info.experiment_id
        with self._closed_if_setup_fails():
            with contextlib.suppress(Exception):  # the reason of the attempt that stopped no longer holds
                self.client.delete_tag(run_id, TAG_STATUS_REASON)
            with contextlib.suppress(Exception):
                self.client.delete_tag(run_id, TAG_VERDICT)
            self._hook_in(run)
            self.feed.skip_to(run.record)
            # The first attempt may have logged past its last checkpoint; the resumed run recomputes
            # those steps bit for bit, so what is logged already is not sent twice.
            self._epochs_logged_until = _last_step(client, run_id, "epoch")
            self.feed.logged_until = _last_step(client, run_id, "grad_norm/global")
        return run_id

    @contextlib.contextmanager
    def _closed_if_setup_fails(self):
        """A run whose setup fails (or is interrupted) after it exists ends FAILED (KILLED) with the reason."""
        try:
            yield
        except BaseException as exc:
            status = KILLED if isinstance(exc, KeyboardInterrupt) else FAILED
            _attempt("the status reason", self.client.set_tag, self.run_id, TAG_STATUS_REASON,
                     _short(f"tracking setup: {type(exc).__name__}: {exc}"))
            _attempt(f"the status {status}", self.client.set_terminated, self.run_id, status)
            raise

    def _hook_in(self, run) -> None:
        """Start the sender and register this hook and the gradient snapshot (checkpoints are the runner's:
        `workbench.execute` registers them and hands the folder over as `checkpoint_dir`)."""
        self.metrics = MetricLogger(self.client, self.run_id)
        self.feed = MetricFeed(self.log_every, planned_steps(run))
        self._run = run
        self._handles.append(run.trainer.register(self))
        self._gradients = _gradient_snapshot() if self.plots else None
        if self._gradients is not None:
            self._handles.append(run.trainer.register(self._gradients))

    def finish(self, run, result, status: str, reason: str | None = None) -> str | None:
        """Tag the reason, flush metrics, upload record, model and plots, diagnose, set the status; returns the verdict.

        Never raises an exception of its own (failures become warnings on stderr); a second
        interrupt while saving abandons the saving and marks the run KILLED.
        """
        if self.run_id is None or self._finished:
            return self.verdict
        self._finished = True
        try:
            with _interrupts_deferred():
                self._finish(run, result, status, reason)
        except KeyboardInterrupt:
            _warn("interrupted again: run saved only in part")
            with contextlib.suppress(Exception):
                self.client.set_terminated(self.run_id, KILLED)
            raise
        return self.verdict

    def _finish(self, run, result, status: str, reason: str | None) -> None:
        run = run if run is not None else self._run
        for handle in self._handles:
            handle.remove()
        if reason:
            _attempt("the status reason", self.client.set_tag, self.run_id, TAG_STATUS_REASON, _short(reason))
        record = run.record if run is not None else None
        _attempt("the last statistics", self._pull, record, True)
        if result is not None and self.metrics is not None:
            test = {k: v for k, v in result.metrics.items() if k.startswith("test/")}
            _attempt("the test metrics", self.metrics.log, test, run.trainer.step)
        if self.metrics is not None:
            _attempt("the queued metrics", self.metrics.close)
            if self.metrics.dropped:
                _warn(f"{self.metrics.dropped} metric values were not logged: {self.metrics.error!r}")
        jobs: list = []
        if run is not None and self.plots:  # drawn in a child process meanwhile
            _attempt("the plots", lambda: jobs.append(artifacts.PlotJob(
                record=record, history=run.trainer.history, gradients=self._gradients)))
        try:
            if run is not None:
                if record is not None:
                    _attempt("the statistics record", artifacts.log_record, self.client, self.run_id, record)
                _attempt("the model", artifacts.log_model, self.client, self.run_id, run.model, self.spec,
                         example_rows(run))
            if record is not None and self.verdict is None:
                _attempt("the diagnosis", self._diagnose, record)
            if self.checkpoint and self.checkpoint_dir is not None:
                _attempt("the checkpoint", self._log_checkpoint)
            for job in jobs:
                _attempt("the plots", job.finish, self.client, self.run_id)
        finally:  # saving abandoned (a second interrupt): no child left drawing, no folder left behind
            for job in jobs:
                job.close()
        metrics = dict(result.metrics) if result is not None else {}
        note = final_note(self.spec, run, status, reason, self.diagnosis, metrics)
        _attempt("the description", self.client.set_tag, self.run_id, TAG_NOTE, note)
        if self.register and run is not None:
            _attempt(f"the model version of '{self.register}'", self._register, status, metrics, note)
        _attempt(f"the status {status}", self.client.set_terminated, self.run_id, status)
        if self.client.offline:  # the store may be back by now: then nothing is left for `workbench sync`
            _attempt("what was kept offline (run `workbench sync`)", self._upload_offline)

    def _register(self, status: str, metrics: dict, note: str) -> None:
        from workbench.tracking.registry import register_model, registry_tags

        if status != FINISHED:
            _warn(f"the model was not registered as '{self.register}': the run ended {status}")
            return
        self.registered = register_model(self.client, self.run_id, self.register,
                                         registry_tags(self.verdict, metrics, status), note)

    def _upload_offline(self) -> None:
        uploaded = self.client.try_upload()
        if uploaded is not None:
            print(f"workbench: MLflow at {self.tracking_uri} answers again: uploaded what was kept offline "
                  f"for run {self.run_id} ({uploaded.metric_values} metric values, "
                  f"{uploaded.operations} operations)", file=sys.stderr, flush=True)

    def _log_checkpoint(self) -> None:
        """Upload the last epoch's checkpoint as `checkpoint/` (what `workbench run --resume` reads)."""
        from workbench.checkpoint import has_checkpoint

        directory, self.checkpoint_dir = self.checkpoint_dir, None
        try:
            if has_checkpoint(directory):
                artifacts.log_checkpoint(self.client, self.run_id, directory)
        finally:
            shutil.rmtree(directory, ignore_errors=True)

    def _diagnose(self, record) -> None:
        """`workbench.diagnose` on the record: the verdict tag, diagnosis.json and its figure."""
        try:
            from workbench.tracking.diagnosis import diagnose_tracked
        except ImportError:
            return
        diagnose_tracked(self, record)

    def set_verdict(self, verdict: str, diagnosis: dict | None = None) -> None:
        """Tag the run's `workbench.verdict` (and log `diagnosis.json`); `finish` returns the verdict."""
        self.verdict = verdict
        if diagnosis is not None:
            self.diagnosis = diagnosis
        if self.run_id is not None:
            self.client.set_tag(self.run_id, TAG_VERDICT, verdict)
            if diagnosis is not None:
                artifacts.log_diagnosis(self.client, self.run_id, diagnosis)

    def _start_tags(self, run) -> dict[str, str]:
        return start_tags(run, spec_path=self.spec_path, run_name=self.run_name, parent_run_id=self.parent_run_id,
                          extra=self.extra_tags)

    # -- hook points -------------------------------------------------------------------
    def on_after_update(self, trainer) -> None:
        if trainer.step % self.log_every == 0 and time.monotonic() >= self._next_pull:
            self._pull(self._run.record, False)

    def on_epoch_end(self, trainer, logs: dict[str, float]) -> None:
        if trainer.step > self._epochs_logged_until:
            self.metrics.log(logs, trainer.step)
        self._pull(self._run.record, True)

    def on_train_end(self, trainer) -> None:
        self._pull(self._run.record, True)

    # -- statistics record -> metrics -------------------------------------------------------
    def _pull(self, record, complete: bool) -> None:
        """Hand the record's new rows on the log cadence to the sender (`MetricFeed.pull`)."""
        self._next_pull = time.monotonic() + PULL_INTERVAL_S
        if self.metrics is None:
            return
        with interrupts_deferred():  # the feed's cursor moves past the rows only with them handed over
            block = self.feed.pull(record, complete)
            if block is not None:
                self.metrics.put(block)


def start_tags(run, *, spec_path=None, run_name=None, parent_run_id=None, extra=None) -> dict[str, str]:
    """The tags a run is created with: version, data and model summaries, spec path, name, parent, extras."""
    from workbench.machine import blas_threads_in_use

    tags = {TAG_VERSION: workbench_version(), TAG_BLAS_THREADS: str(blas_threads_in_use())}
    with contextlib.suppress(Exception):
        tags[TAG_DATASET] = _short(run.data.summary())
    with contextlib.suppress(Exception):
        tags[TAG_MODEL] = _short(run.model.summary())
    if spec_path:
        tags[TAG_SPEC_PATH] = str(spec_path)
    if run_name:
        tags[TAG_RUN_NAME] = run_name
    if parent_run_id:
        tags[TAG_PARENT] = parent_run_id
    tags.update({str(k): str(v) for k, v in (extra or {}).items()})
    return tags


def planned_steps(run) -> int | None:
    """The steps the run would take without stopping early (what bounds its metric cadence)."""
    trainer = getattr(run, "trainer", None)
    try:
        return int(trainer.epochs) * int(trainer.steps_per_epoch)
    except (AttributeError, TypeError, ValueError):
        return None


def example_rows(run, rows: int = 5):
    """A few test (else validation, else training) inputs as the model takes them: the MLflow Model's input example."""
    data = getattr(run, "data", None)
    for name in ("X_test", "X_val", "X_train"):
        X = getattr(data, name, None)
        if X is not None and len(X):
            return np.ascontiguousarray(X[:rows])
    return None


def start_operation(spec, run, *, experiment_name: str | None, run_name: str | None, tags: dict,
                    spec_path: str | None, describe_experiment: bool = True) -> dict:
    """Everything that creates the run, as one plain `create_run` operation (see `workbench.tracking.replay`)."""
    import uuid

    from workbench.tracking.datasets import dataset_facts
    from workbench.tracking.replay import CREATION_TAG

    data = getattr(run, "data", None)
    model_summary, data_summary = tags.get(TAG_MODEL), tags.get(TAG_DATASET)
    tags = {**tags, CREATION_TAG: uuid.uuid4().hex}  # a replay of the operation finds the run it made
    operation = {
        "op": "create_run", "experiment": experiment_name or spec.name, "spec_name": spec.name,
        "run_name": run_name, "tags": {str(k): str(v) for k, v in tags.items() if k != TAG_RUN_NAME},
        "params": spec_params(spec), "spec_toml": spec.to_toml(),
        "note": run_description(spec_name=spec.name, model=model_summary, dataset=data_summary, status="RUNNING"),
    }
    if describe_experiment:
        fallback = f"workbench runs of {spec.name}" + (f": {model_summary}" if model_summary else "")
        operation["experiment_note"] = experiment_description(spec_path, fallback)
    if data is not None:
        with contextlib.suppress(Exception):  # a data object without splits (a test double) has no dataset input
            operation["datasets"] = [dataset_facts(data, source=spec.data.source, path=spec.data.path)]
    return operation


def final_note(spec, run, status: str, reason: str | None, diagnosis: dict | None, metrics: dict) -> str:
    """The run's description once it has ended: model, data, status, verdict and why, final metrics."""
    model = data = None
    with contextlib.suppress(Exception):
        model = run.model.summary()
    with contextlib.suppress(Exception):
        data = run.data.summary()
    return run_description(spec_name=spec.name, model=model, dataset=data, status=status, reason=reason,
                           diagnosis=diagnosis, metrics=metrics)


def _last_step(client, run_id: str, key: str) -> int:
    """The last step at which `key` was logged to the run (-1: never)."""
    return max((int(m.step) for m in client.get_metric_history(run_id, key)), default=-1)


def _gradient_snapshot():
    """The hook that keeps the last dL/dW for the plots' gradient histograms (numpy only: the training
    process does not import matplotlib for it)."""
    from workbench.monitor.gradient_snapshot import GradientSnapshot

    return GradientSnapshot()


def _short(text: str) -> str:
    return text if len(text) <= MAX_TAG_CHARS else text[: MAX_TAG_CHARS - 3] + "..."


def _warn(message: str) -> None:
    print(f"workbench: warning: {message}", file=sys.stderr, flush=True)


def _attempt(what: str, fn, *args, **kwargs) -> None:
    """Call `fn`; an exception becomes a warning (finish must not hide the error that ended training)."""
    try:
        fn(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001
        _warn(f"could not log {what} to MLflow: {type(exc).__name__}: {exc}")


_HELD_BACK: list[int] = []  # an interrupt held back while a run was saved, not yet taken by a loop of runs


def take_held_back_interrupt() -> bool:
    """Whether a Ctrl-C or SIGTERM came while a run was being saved (and was held back so that the run
    saved whole); taken once. A loop of runs (a study's worker) stops after the run it was saving."""
    held = bool(_HELD_BACK)
    _HELD_BACK.clear()
    return held


@contextlib.contextmanager
def _interrupts_deferred():
    """While saving: the first Ctrl-C or SIGTERM prints a note and is held back (`take_held_back_interrupt`),
    the second interrupts."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _HELD_BACK.clear()  # only this save's
    presses = []

    def handler(signum, frame):
        presses.append(signum)
        if len(presses) == 1:
            _warn("saving the run to MLflow; interrupt again to abandon saving")
            _HELD_BACK.append(signum)
            return
        raise KeyboardInterrupt

    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for s in previous:
        signal.signal(s, handler)
    try:
        yield
    finally:
        for s, old in previous.items():
            signal.signal(s, old)
