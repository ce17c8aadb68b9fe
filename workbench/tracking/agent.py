"""The tracking agent: the MLflow side of `workbench run` in a second process, off the training path.

    agent = TrackingAgent.launch(tracking_uri)      # at launch: the agent imports MLflow meanwhile
    tracker = AgentTracker(spec, agent, ...)        # the hook: hands over, never waits on MLflow
    tracker.start(run); result = run.trainer.fit(); tracker.finish(run, result, result.status, result.reason)

The training process writes the run as a journal of operations (`workbench.tracking.replay`) into
`<offline dir>/pending-<id>/` (the offline spool's layout): one JSON line each, files beside it,
written with one `write` each, so a process killed at any point has handed over whatever it wrote.
The agent process follows the journal, applies each operation to the store (importing MLflow and
opening the store while the first process loads data and trains), draws the figures (the diagnosis
figure among them) in two forked children while it saves the MLflow Model and uploads, and records its
progress after each operation. The training process diagnoses (numpy only: it never imports
matplotlib) and then waits for the agent, so that every metric, artifact and the final status are in
the store when `workbench run` returns. `workbench run` leaves the agent a core (see
`workbench.machine.training_blas_threads`).

What can go wrong, and what is left:
- the training process is killed: the agent applies what was handed over and ends the run KILLED;
- the agent dies: the training process notices, finishes the journal and uploads it itself at the
  end (or, failing that, leaves it for `workbench sync`);
- the store stops answering: the agent retries (1, 2, 4 s), says so once, keeps following the
  journal, tries once more at the end, and leaves the journal (renamed to the run id) for
  `workbench sync`, which replays it from where the agent stopped;
- the store cannot be used at all (a wrong URI): the run is not created; the training process
  stops with that error (exit 2).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import multiprocessing
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

from workbench.errors import UserError
from workbench.signals import interrupts_deferred
from workbench.tracking.metric_feed import MetricFeed
from workbench.tracking.offline import (
    JOURNAL,
    LOCK,
    RETRY_DELAYS_S,
    Spool,
    bound_http_retries,
    first_line,
    is_transient,
    offline_root,
    read_meta,
    save_progress,
    write_meta,
)
from workbench.tracking.uri import resolve_tracking_uri
from workbench.training import FINISHED, KILLED, Hook
from workbench.training.hooks import hook_priority

PENDING = "pending-"
NO_PLOTS = "--no-plots"  # the agent's option for a run without figures
TIMINGS_ENV = "WORKBENCH_TIMINGS"  # a file: each tracked run appends where its tracking time went (benchmarks)
PULL_INTERVAL_S = 2.0  # within an epoch, hand new record rows over at most this often
IDLE_WAIT_S = 0.05  # the agent's poll of the journal when it has nothing to do
DRAW_SECONDS = ".seconds"  # how long the forked child drew (read back for the timings)
# The figures in two shares of about equal drawing time (benchmarks/figure_cost.py), one forked child each:
# a run's figures take half the wall time on two cores. Every figure is in exactly one share.
PLOT_SHARES = (("diagnosis.png", "gradient_flow.gif", "loss.png"),
               ("gradient_flow.png", "grad_norms.png", "update_ratios.png", "activation_std.png",
                "grad_histograms.png"))
PLOT_TIMEOUT_S = 120.0  # then the forked drawing is taken as hung and the agent draws itself
EXIT_UNUSABLE_STORE = 2
AGENT_EXIT_WAIT_S = 30.0  # for the agent to say why its journal is gone (it exits right after removing it)


# ==================================================================================================
# The training process's side
# ==================================================================================================
class TrackingAgent:
    """The training process's handle on the agent: the journal it writes and the agent process."""

    def __init__(self, tracking_uri: str, spool: Spool, process: subprocess.Popen | None) -> None:
        self.tracking_uri, self.spool, self.process = tracking_uri, spool, process
        self.result: dict | None = None  # the agent's last word (run id, outcome), once it has ended
        self.fatal: str | None = None  # the store cannot be used: the agent's message

    @classmethod
    def launch(cls, tracking_uri: str | None = None, *, plots: bool = True) -> "TrackingAgent":
        """Start the agent on a new journal (the run is created when `AgentTracker.start` hands it over);
        `plots=False` for a run without figures (`--no-plots`): the agent does not load matplotlib."""
        uri = resolve_tracking_uri(tracking_uri)
        spool = Spool(offline_root(), uri, None, folder=f"{PENDING}{uuid.uuid4().hex[:16]}", locking=False,
                      durable=False).open()
        package_root = str(Path(__file__).resolve().parents[2])
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
        # Its own session: the terminal's Ctrl-C is the training process's to handle; the agent ends the run
        # from the journal whatever happens to the training process.
        command = [sys.executable, "-m", "workbench.tracking.agent", str(spool.dir), *([] if plots else [NO_PLOTS])]
        process = subprocess.Popen(command, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                   start_new_session=True)
        return cls(uri, spool, process)

    @property
    def directory(self) -> Path:
        return self.spool.dir

    def write(self, op: dict, files: Path | None = None) -> None:
        if not self.directory.exists():
            self._journal_gone()
        try:
            self.spool.append(op, files)
        except FileNotFoundError:
            self._journal_gone()
            raise

    def _journal_gone(self) -> None:
        """The agent found the store unusable and removed the journal, here before or while this process wrote to
        it (a run that reached a hand-over first): raise the agent's one-line error, not a traceback."""
        if self.process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(AGENT_EXIT_WAIT_S)
        self.check()

    def run_id(self) -> str | None:
        if self.result and self.result.get("run_id"):
            return self.result["run_id"]
        with contextlib.suppress(OSError, ValueError, KeyError):
            return read_meta(self.directory).get("run_id")
        return None

    def check(self) -> None:
        """Raise the agent's error if it found the store unusable (cheap: one poll)."""
        if self.process is not None and self.process.poll() is not None and self.result is None:
            self._collect()
        if self.fatal:
            raise UserError(self.fatal)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def close(self, timeout: float | None = None) -> dict:
        """Tell the agent no more comes, wait for it (`timeout`: None waits), and return its result."""
        if self.process is not None:
            with contextlib.suppress(OSError):
                self.process.stdin.close()
            self.process.wait(timeout)
            self._collect()
        return self.result or {}

    def discard(self) -> None:
        """Nothing was handed over (the run never started): the agent exits and the journal goes."""
        if self.spool.operations == 0:
            if self.process is not None:  # it opens the store at the first operation: nothing to wait for
                self.process.kill()
            self.close()
            shutil.rmtree(self.directory, ignore_errors=True)
            remove_empty_parents(self.directory)
        else:
            self.close()

    def _collect(self) -> None:
        if self.result is not None:
            return
        out = b""
        with contextlib.suppress(OSError, ValueError):
            out = self.process.stdout.read() or b""
        lines = [line for line in out.decode(errors="replace").splitlines() if line.startswith("{")]
        with contextlib.suppress(ValueError):
            self.result = json.loads(lines[-1]) if lines else {"exit_code": self.process.returncode}
        self.result = self.result or {}
        self.result.setdefault("exit_code", self.process.returncode)
        if self.process.returncode == EXIT_UNUSABLE_STORE and self.result.get("error"):
            self.fatal = self.result["error"]


class AgentTracker(Hook):
    """Hands one training run over to a `TrackingAgent`; `start` before `fit`, `finish` after it (any outcome).

    What it logs is what `RunTracker` logs (same names, metrics, artifacts, description, status);
    training never waits on MLflow: each hand-over is one write to the journal.
    """

    priority = hook_priority("tracker")

    def __init__(self, spec, agent: TrackingAgent, *, spec_path: str | None = None,
                 experiment_name: str | None = None, parent_run_id: str | None = None, run_name: str | None = None,
                 tags: dict | None = None, plots: bool = True, checkpoint: bool = True,
                 register: str | None = None) -> None:
        self.spec, self.agent = spec, agent
        self.spec_path, self.experiment_name, self.run_name = spec_path, experiment_name or spec.name, run_name
        self.parent_run_id, self.extra_tags = parent_run_id, dict(tags or {})
        self.tracking_uri = agent.tracking_uri
        self.plots, self.checkpoint, self.register = bool(plots), bool(checkpoint), register
        self.checkpoint_dir: Path | None = None
        self.verdict: str | None = None
        self.diagnosis = None
        self.registered: dict | None = None
        self.feed = MetricFeed(int(spec.monitor.log_every))
        self._run = None
        self._handles: list = []
        self._gradients = None
        self._next_pull = 0.0
        self._started = self._finished = False
        self.timings: dict[str, float] = {}  # this process's side of the end of the run

    @property
    def run_id(self) -> str | None:
        return self.agent.run_id()

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self, run) -> None:
        from workbench.tracking.tracker import (
            _attempt,
            _gradient_snapshot,
            example_rows,
            planned_steps,
            start_operation,
            start_tags,
        )

        tags = start_tags(run, spec_path=self.spec_path, run_name=self.run_name, parent_run_id=self.parent_run_id,
                          extra=self.extra_tags)
        self.agent.write(start_operation(self.spec, run, experiment_name=self.experiment_name, run_name=self.run_name,
                                         tags=tags, spec_path=self.spec_path,
                                         describe_experiment=self.parent_run_id is None))
        self._started = True
        with tempfile.TemporaryDirectory(prefix="workbench-handover-") as tmp:
            _attempt("the model's MLflow files", self._hand_over_model, run, Path(tmp) / "model", example_rows(run),
                     "prepare_model")
        self.feed = MetricFeed(int(self.spec.monitor.log_every), planned_steps(run))
        self._run = run
        self._handles.append(run.trainer.register(self))
        self._gradients = _gradient_snapshot() if self.plots else None
        if self._gradients is not None:
            self._handles.append(run.trainer.register(self._gradients))

    def finish(self, run, result, status: str, reason: str | None = None) -> str | None:
        """Hand over the end of the run (metrics, record, model, figures, diagnosis, description, status) and
        wait for the agent to have it all in the store; returns the verdict. Never raises an exception of
        its own; a second interrupt stops the waiting (the agent, in its own session, completes the run)."""
        from workbench.tracking.tracker import _interrupts_deferred, _warn

        if not self._started or self._finished:
            return self.verdict
        self._finished = True
        try:
            with _interrupts_deferred():
                start = time.perf_counter()
                self._hand_over_end(run if run is not None else self._run, result, status, reason)
                handed = time.perf_counter()
                outcome = self.agent.close()
                self.timings["hand-over (record, diagnosis, figures' inputs, model)"] = handed - start
                self.timings["waiting for the agent"] = time.perf_counter() - handed
        except KeyboardInterrupt:
            _warn(f"interrupted again: the tracking agent completes run {self.run_id} in the background")
            raise
        self._report(outcome)
        self._save_timings(outcome)
        if self.agent.fatal:
            raise UserError(self.agent.fatal)
        return self.verdict

    def _save_timings(self, outcome: dict) -> None:
        path = os.environ.get(TIMINGS_ENV)
        if path:
            with contextlib.suppress(OSError), open(path, "a", encoding="utf-8") as f:
                f.write(json.dumps({"main": {k: round(v, 3) for k, v in self.timings.items()},
                                    "agent": outcome.get("timings") or {}}) + "\n")

    def _hand_over_end(self, run, result, status: str, reason: str | None) -> None:
        from workbench.tracking.describe import TAG_NOTE
        from workbench.tracking.tracker import (
            TAG_STATUS_REASON,
            TAG_VERDICT,
            _attempt,
            _short,
            example_rows,
            final_note,
        )

        for handle in self._handles:
            handle.remove()
        write = self.agent.write
        if reason:
            _attempt("the status reason", write, {"op": "set_tag", "key": TAG_STATUS_REASON, "value": _short(reason)})
        record = run.record if run is not None else None
        _attempt("the last statistics", self._pull, record, True)
        metrics = dict(result.metrics) if result is not None else {}
        test = {k: v for k, v in metrics.items() if k.startswith("test/")}
        if test and run is not None:
            _attempt("the test metrics", self._write_metrics, test, run.trainer.step)
        with tempfile.TemporaryDirectory(prefix="workbench-handover-") as tmp:
            tmp = Path(tmp)
            record_op = None
            if record is not None:
                (tmp / "stats").mkdir()
                record.save(tmp / "stats" / "record.npz")
                record_op = self._files_op({"op": "log_artifacts", "artifact_path": "stats"}, tmp / "stats")
            diagnosis = None
            if record is not None and len(record) and self.verdict is None:
                diagnosis = self._diagnose(record, tmp / "diagnosis")
            if run is not None and self.plots:  # the diagnosis figure with them: the agent draws every figure
                _attempt("the plots", self._hand_over_plots, run, tmp / "plots", record_op, diagnosis)
            if run is not None:
                _attempt("the model", self._hand_over_model, run, tmp / "model", example_rows(run))
            if self.checkpoint and self.checkpoint_dir is not None:
                _attempt("the checkpoint", self._hand_over_checkpoint)
        if diagnosis is not None:
            self.verdict, self.diagnosis = diagnosis.verdict, diagnosis.to_json()
        elif self.diagnosis is not None:  # set by `set_verdict` before the end: its diagnosis.json
            _attempt("the diagnosis", self._hand_over_json, self.diagnosis, "diagnosis.json")
        if self.verdict:
            _attempt("the verdict", write, {"op": "set_tag", "key": TAG_VERDICT, "value": self.verdict})
        note = final_note(self.spec, run, status, reason, self.diagnosis, metrics)
        _attempt("the description", write, {"op": "set_tag", "key": TAG_NOTE, "value": note})
        if self.register and run is not None:
            if status == FINISHED:
                from workbench.tracking.registry import registry_tags

                _attempt(f"the model version of '{self.register}'", write, {
                    "op": "register_model", "name": self.register, "description": note,
                    "tags": registry_tags(self.verdict, metrics, status)})
            else:
                from workbench.tracking.tracker import _warn

                _warn(f"the model was not registered as '{self.register}': the run ended {status}")
        _attempt(f"the status {status}", write, {"op": "set_terminated", "status": status,
                                                 "end_time": int(time.time() * 1000)})

    def _hand_over_json(self, data: dict, name: str) -> None:
        with tempfile.TemporaryDirectory(prefix="workbench-handover-") as tmp:
            (Path(tmp) / name).write_text(json.dumps(data, indent=2), encoding="utf-8")
            self.agent.write({"op": "log_artifacts", "artifact_path": None}, Path(tmp))

    def _files_op(self, op: dict, folder: Path) -> str:
        """Append `op` with the files of `folder`; returns the journal folder that holds them."""
        number = self.agent.spool.operations
        self.agent.write(op, folder)
        return f"files/{number}"

    def _hand_over_plots(self, run, folder: Path, record_op: str | None, diagnosis=None) -> None:
        folder.mkdir()
        history = {k: [float(v) for v in values] for k, values in run.trainer.history.items()}
        (folder / "history.json").write_text(json.dumps(history), encoding="utf-8")
        if diagnosis is not None:
            (folder / "diagnosis.json").write_text(json.dumps(diagnosis.to_json()), encoding="utf-8")
        gradients = getattr(self._gradients, "gradients", None) or {}
        if gradients:
            np.savez(folder / "gradients.npz", **gradients)
        self.agent.write({"op": "log_plots", "record_op": record_op or "files/none"}, folder)

    def _hand_over_model(self, run, folder: Path, example, op: str = "log_model") -> None:
        """The model's files as operation `op`: `log_model` at the end, `prepare_model` (the untrained model,
        for the agent to write its MLflow files while the training runs) at the start."""
        from workbench.tracking.pyfunc import SPEC_FILE, WEIGHTS_FILE

        folder.mkdir()
        run.model.save(folder / WEIGHTS_FILE)
        (folder / SPEC_FILE).write_text(self.spec.to_toml(), encoding="utf-8")
        if example is not None:
            np.save(folder / "example.npy", example, allow_pickle=False)
        self.agent.write({"op": op}, folder)

    def _hand_over_checkpoint(self) -> None:
        from workbench.checkpoint import has_checkpoint

        directory, self.checkpoint_dir = self.checkpoint_dir, None
        try:
            if has_checkpoint(directory):
                with tempfile.TemporaryDirectory(prefix="workbench-checkpoint-") as tmp:
                    for path in Path(directory).iterdir():
                        if path.is_file() and not path.name.startswith("."):
                            shutil.copy2(path, Path(tmp) / path.name)
                    self.agent.write({"op": "log_artifacts", "artifact_path": "checkpoint"}, Path(tmp))
        finally:
            shutil.rmtree(directory, ignore_errors=True)

    def _diagnose(self, record, folder: Path):
        """The diagnosis (pure numpy: its figure is drawn by the agent with the others)."""
        from workbench.tracking.tracker import _warn

        try:
            from workbench.diagnose.engine import diagnose_record
        except ImportError:
            return None
        try:
            start = time.perf_counter()
            diagnosis = diagnose_record(record, spec=self.spec, run_id=self.run_id)
            self.timings["diagnosis"] = time.perf_counter() - start
        except Exception as exc:  # noqa: BLE001 - the run is logged without a verdict
            _warn(f"could not diagnose the run: {type(exc).__name__}: {exc}")
            return None
        folder.mkdir()
        (folder / "diagnosis.json").write_text(json.dumps(diagnosis.to_json(), indent=2), encoding="utf-8")
        self.agent.write({"op": "log_artifacts", "artifact_path": None}, folder)
        return diagnosis

    def set_verdict(self, verdict: str, diagnosis: dict | None = None) -> None:
        self.verdict = verdict
        if diagnosis is not None:
            self.diagnosis = diagnosis

    def _report(self, outcome: dict) -> None:
        from workbench.tracking.tracker import _warn

        if outcome.get("registered"):
            self.registered = outcome["registered"]
        if outcome.get("state") == "uploaded":
            return
        if self.agent.fatal:
            shutil.rmtree(self.agent.directory, ignore_errors=True)
            return
        if outcome.get("state") == "offline":
            return  # the agent said where the run is kept and how to upload it
        # The agent died: upload the journal here, or leave it for `workbench sync`.
        _warn(f"the tracking agent stopped (exit code {outcome.get('exit_code')}); uploading run "
              f"{self.run_id or ''} from here")
        try:
            from workbench.tracking.offline import upload

            report = upload(self.agent.directory)
            self.agent.result = {**(self.agent.result or {}), "run_id": report.run_id, "state": "uploaded"}
            remove_empty_parents(self.agent.directory)
        except Exception as exc:  # noqa: BLE001 - the journal stays for `workbench sync`
            where = keep_for_sync(self.agent.directory)
            _warn(f"could not upload the run ({first_line(exc)}): it is kept in {where}; "
                  "upload it with `workbench sync` once the store answers")

    # -- hook points -----------------------------------------------------------------------------
    def on_after_update(self, trainer) -> None:
        if time.monotonic() >= self._next_pull:
            self._pull(self._run.record, False)

    def on_epoch_end(self, trainer, logs: dict[str, float]) -> None:
        self.agent.check()
        self._write_metrics(logs, trainer.step)
        self._pull(self._run.record, True)

    def on_train_end(self, trainer) -> None:
        self._pull(self._run.record, True)

    def _write_metrics(self, metrics: dict, step: int) -> None:
        keys = list(metrics)
        if keys:
            self.agent.write({"op": "metric_block", "keys": keys, "steps": [int(step)],
                              "values": [[float(metrics[k]) for k in keys]], "timestamp": int(time.time() * 1000)})

    def _pull(self, record, complete: bool) -> None:
        self._next_pull = time.monotonic() + PULL_INTERVAL_S
        with interrupts_deferred():  # the feed's cursor moves past the rows only with their line written
            block = self.feed.pull(record, complete)
            if block is not None:
                self.agent.write({"op": "metric_block", "keys": list(block.keys), "steps": block.steps.tolist(),
                                  "values": block.values.tolist(), "timestamp": block.timestamp_ms})


def keep_for_sync(directory: Path) -> Path:
    """A journal left for `workbench sync`: named by its run id when it has one (what `sync RUN_ID` and
    `run --resume` look for)."""
    directory = Path(directory)
    with contextlib.suppress(OSError, ValueError, KeyError):
        run_id = read_meta(directory).get("run_id")
        if run_id and directory.name.startswith(PENDING) and not (directory.parent / run_id).exists():
            target = directory.parent / run_id
            directory.rename(target)
            return target
    return directory


def remove_empty_parents(directory: Path) -> None:
    """The offline folder, and the `.workbench` above the default one, when nothing is left in them (never a
    folder of the user's: with WORKBENCH_OFFLINE_DIR=/data/offline, /data stays even when it is empty)."""
    offline = Path(directory).parent
    for parent in [offline, *([offline.parent] if offline.parent.name == ".workbench" else [])]:
        try:
            parent.rmdir()
        except OSError:
            return


# ==================================================================================================
# The agent process
# ==================================================================================================
class Agent:
    """Follows one journal and applies it to the store; see the module doc."""

    def __init__(self, directory: Path, draws_plots: bool = True) -> None:
        self.directory = Path(directory)
        self.draws_plots = draws_plots  # False: the run has no figures, matplotlib is not warmed up
        meta = read_meta(self.directory)
        self.tracking_uri = meta["tracking_uri"]
        self.client = None
        self.replayer = None
        self.ops: list[dict] = []
        self.done: list[bool] = []
        self.progress = 0
        self.offline_since: float | None = None
        self.error: BaseException | None = None
        self.terminated = False
        self.plots: dict[int, tuple] = {}  # op index -> ([(child process, its figure names)], folder, op)
        self._offset = 0
        self._partial = b""
        self._warm = False
        self._announced = False
        self.timings: dict[str, float] = {}  # seconds spent, by what (the agent's result carries them)

    # -- reading the journal ---------------------------------------------------------------------
    def read(self) -> int:
        """Append the journal's new complete lines to `ops`; returns how many."""
        path = self.directory / JOURNAL
        try:
            with open(path, "rb") as f:
                f.seek(self._offset)
                data = f.read()
        except FileNotFoundError:
            return 0
        self._offset += len(data)
        data = self._partial + data
        lines = data.split(b"\n")
        self._partial = lines.pop()  # an incomplete last line waits for the rest
        for line in lines:
            if line.strip():
                self.ops.append(json.loads(line))
                self.done.append(False)
        return len(lines)

    # -- applying --------------------------------------------------------------------------------
    def open_store(self) -> None:
        from mlflow import MlflowClient

        from workbench.tracking.replay import Replayer

        bound_http_retries(self.tracking_uri)
        try:
            self.client = MlflowClient(self.tracking_uri)
        except Exception as exc:  # noqa: BLE001 - an unknown scheme, a malformed URI
            raise Unusable(f"cannot log to MLflow at {self.tracking_uri}: {first_line(exc)} "
                           "(check --tracking-uri or MLFLOW_TRACKING_URI, or use --no-track)") from exc
        self.replayer = Replayer(self.client, read_meta(self.directory).get("run_id"), self.directory)

    def step(self) -> bool:
        """Apply the operations read and not done (in order); True when something was done."""
        progressed = False
        for index in range(self.progress, len(self.ops)):
            if self.done[index] or index in self.plots:
                continue
            if self.offline_since is not None:
                break
            op = self.ops[index]
            if op["op"] == "set_terminated":
                self.finish_plots()
            if op["op"] == "log_plots" and self.start_plots(index, op):
                progressed = True
                continue
            if op["op"] == "metric_block":
                op, merged = self.merge_metrics(index)
                if not self.apply(index, op):
                    break
                for other in merged:
                    self.done[other] = True
                progressed = True
                continue
            if not self.apply(index, op):
                break
            progressed = True
        self.advance()
        return progressed

    def merge_metrics(self, index: int) -> tuple[dict, list[int]]:
        """The metric blocks from `index` on that are not done yet, as one operation (fewer, larger
        log_batch calls: a transaction each), and the indices merged into it besides `index`."""
        from workbench.tracking.replay import merged_metric_blocks, metric_block_group

        following = (None if self.done[other] else self.ops[other] for other in range(index + 1, len(self.ops)))
        group = metric_block_group(self.ops[index], following)
        if len(group) == 1:
            return group[0], []
        return merged_metric_blocks(group), list(range(index + 1, index + len(group)))

    def apply(self, index: int, op: dict) -> bool:
        """Apply one operation with retries; False when the store stopped answering (offline now)."""
        what = "store: create run" if op["op"] == "create_run" else TIMING_NAMES.get(op["op"], "store: other")
        with self.timed(what):
            return self._apply(index, op)

    def timed(self, what: str):
        return _Timed(self.timings, what)

    def _apply(self, index: int, op: dict) -> bool:
        if op["op"] == "create_run":
            return self.create_run(index, op)
        for delay in (*RETRY_DELAYS_S, None):
            try:
                self.replayer.apply(op)
                break
            except Exception as exc:  # noqa: BLE001 - classified below
                self.error = exc
                if not is_transient(exc):
                    warn(f"could not log {describe(op)} to MLflow: {first_line(exc)}")
                    break
                if delay is None:
                    self.go_offline()
                    return False
                time.sleep(delay)
        self.done[index] = True
        if op["op"] == "set_terminated":
            self.terminated = True
        return True

    def create_run(self, index: int, op: dict) -> bool:
        from workbench.tracking.replay import create_run

        try:
            run_id, _ = create_run(self.client, op)
        except UserError as exc:
            raise Unusable(str(exc)) from exc
        except Exception as exc:  # noqa: BLE001 - MLflow, SQLAlchemy and HTTP errors alike
            raise Unusable(f"cannot log to MLflow at {self.tracking_uri}: {first_line(exc)} "
                           "(check --tracking-uri or MLFLOW_TRACKING_URI, or use --no-track)") from exc
        self.replayer.run_id = run_id
        write_meta(self.directory, {**read_meta(self.directory), "run_id": run_id})
        self.done[index] = True
        return True

    def advance(self) -> None:
        start = self.progress
        while self.progress < len(self.done) and self.done[self.progress]:
            self.progress += 1
        if self.progress != start:
            save_progress(self.directory, self.progress)

    def go_offline(self) -> None:
        if self.offline_since is None:
            self.offline_since = time.time()
            if self._announced:
                return
            self._announced = True
            attempts = len(RETRY_DELAYS_S) + 1
            warn(f"MLflow at {self.tracking_uri} stopped answering ({first_line(self.error)}; {attempts} attempts "
                 f"over {sum(RETRY_DELAYS_S):.0f} s): training goes on, and run {self.replayer.run_id}'s metrics, "
                 f"tags, artifacts and status are kept in {self.directory}; they are uploaded when the run ends "
                 "if the store answers again, else upload them with `workbench sync`")

    # -- figures, drawn beside the rest -------------------------------------------------------------
    def start_plots(self, index: int, op: dict) -> bool:
        """Draw the figures of a `log_plots` operation in forked children, one for each share of
        `PLOT_SHARES` (two cores draw at once); False: draw them in order instead."""
        if sys.platform != "linux":
            return False
        self.warm_up()  # imported once here, not once in each child
        folder = Path(tempfile.mkdtemp(prefix="workbench-plots-"))
        children = []
        try:
            for k, names in enumerate(PLOT_SHARES):
                process = multiprocessing.get_context("fork").Process(
                    target=_draw_plots, args=(folder, self.directory / op["files"], self.directory / op["record_op"],
                                              names, k), name=f"workbench-plots-{k}", daemon=True)
                process.start()
                children.append((process, names))
        except Exception:  # noqa: BLE001 - no fork: drawn when the operation comes up
            for process, _ in children:
                process.kill()
                process.join()
            shutil.rmtree(folder, ignore_errors=True)
            return False
        self.plots[index] = (children, folder, op)
        return True

    def finish_plots(self) -> None:
        """Wait for the drawing children and upload their figures (drawing here what a child did not)."""
        with self.timed("figures: waiting for the drawing children, uploading"):
            self._finish_plots()

    def _finish_plots(self) -> None:
        from workbench.tracking.replay import draw_plots

        for index, (children, folder, op) in sorted(self.plots.items()):
            try:
                for k, (process, names) in enumerate(children):
                    process.join(PLOT_TIMEOUT_S)
                    if process.is_alive():
                        process.kill()
                        process.join()
                    if process.exitcode != 0:
                        draw_plots(folder, self.directory / op["files"], self.directory / op["record_op"], names)
                    with contextlib.suppress(OSError, ValueError):
                        seconds = float((folder / f"{DRAW_SECONDS}-{k}").read_text())
                        self.timings[f"figures: drawn in forked child {k + 1} of {len(children)}"] = seconds
                        (folder / f"{DRAW_SECONDS}-{k}").unlink()
                if any(folder.glob("*.png")) and self.offline_since is None:
                    for delay in (*RETRY_DELAYS_S, None):
                        try:
                            self.client.log_artifacts(self.replayer.run_id, str(folder), "plots")
                            break
                        except Exception as exc:  # noqa: BLE001
                            self.error = exc
                            if not is_transient(exc):
                                warn(f"could not log the plots to MLflow: {first_line(exc)}")
                                break
                            if delay is None:
                                self.go_offline()
                                return
                            time.sleep(delay)
            except Exception as exc:  # noqa: BLE001 - the run keeps everything else
                warn(f"could not draw the plots: {type(exc).__name__}: {exc}")
            finally:
                shutil.rmtree(folder, ignore_errors=True)
            self.done[index] = True
            del self.plots[index]

    def warm_up(self) -> None:
        """Import what the end of the run needs (figures, the MLflow Model), once, so that the forked children
        and the last operations start warm (a run's metrics come in all along: waiting for a pause to do it
        left it to the end)."""
        if self._warm:
            return
        self._warm = True
        with contextlib.suppress(Exception), self.timed("warm-up: importing matplotlib, mlflow.pyfunc"):
            import mlflow.pyfunc  # noqa: F401

            from workbench.tracking.pyfunc import warm_up_requirement_check

            warm_up_requirement_check()
            if self.draws_plots:
                import workbench.plots  # noqa: F401
                from workbench.plots.style import warm_up as warm_plots

                warm_plots()

    # -- the end ---------------------------------------------------------------------------------
    def close(self, main_gone: bool) -> dict:
        """Everything read is applied (or kept): remove the journal, or leave it for `workbench sync`."""
        if main_gone and not self.terminated and self.replayer is not None and self.replayer.run_id:
            # the training process ended without closing its run: it was killed
            self.ops.append({"op": "set_tag", "key": "workbench.status_reason",
                             "value": "the training process ended without closing the run (killed)"})
            self.ops.append({"op": "set_terminated", "status": KILLED, "end_time": int(time.time() * 1000)})
            self.done += [False, False]
            self.append_to_journal(self.ops[-2:])
        if self.offline_since is not None:  # one more try: the store may be back
            self.offline_since = None
            with contextlib.suppress(Exception):
                self.step()
        else:
            self.step()
        self.finish_plots()
        self.advance()
        run_id = self.replayer.run_id if self.replayer is not None else None
        if self.progress >= len(self.ops) and not self.plots:
            shutil.rmtree(self.directory, ignore_errors=True)
            remove_empty_parents(self.directory)
            registered = getattr(self.replayer, "registered", None)
            return {"state": "uploaded", "run_id": run_id,
                    "registered": {"name": registered.name, "version": str(registered.version)} if registered else None}
        where = keep_for_sync(self.directory)
        warn(f"MLflow at {self.tracking_uri} did not take all of run {run_id}: the rest is kept in {where}; "
             "upload it with `workbench sync` once the store answers")
        return {"state": "offline", "run_id": run_id, "kept": str(where)}

    def append_to_journal(self, ops: list[dict]) -> None:
        with open(self.directory / JOURNAL, "a", encoding="utf-8") as f:
            for op in ops:
                f.write(json.dumps(op) + "\n")


TIMING_NAMES = {"metric_block": "store: metrics", "log_batch": "store: metrics", "log_model": "model: MLflow Model + upload",
                "prepare_model": "model: MLflow files ahead (during the training)",
                "log_artifacts": "store: artifacts", "log_plots": "figures: drawn here", "set_tag": "store: tags",
                "set_terminated": "store: status", "register_model": "store: registry"}


class _Timed:
    def __init__(self, timings: dict, what: str) -> None:
        self.timings, self.what = timings, what

    def __enter__(self):
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.timings[self.what] = self.timings.get(self.what, 0.0) + time.perf_counter() - self.start


class Unusable(Exception):
    """The store cannot be used at all: the run cannot be created."""


def _draw_plots(folder: Path, inputs: Path, record_folder: Path, names: tuple[str, ...], k: int) -> None:
    from workbench.tracking.replay import draw_plots

    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    start = time.perf_counter()
    draw_plots(folder, inputs, record_folder, names)
    (folder / f"{DRAW_SECONDS}-{k}").write_text(f"{time.perf_counter() - start:.4f}")


def describe(op: dict) -> str:
    kind = op["op"]
    if kind in ("log_artifacts", "log_plots", "log_model"):
        return f"{kind.removeprefix('log_')} ({op.get('artifact_path') or 'artifacts'})"
    if kind == "set_tag":
        return f"the tag {op.get('key')}"
    if kind == "set_terminated":
        return f"the status {op.get('status')}"
    return kind.replace("_", " ")


def warn(message: str) -> None:
    print(f"workbench: warning: {message}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    """`python -m workbench.tracking.agent JOURNAL_DIR [--no-plots]`: follow the journal until its run ends."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the training process decides; the journal says
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    args = argv or sys.argv[1:]
    directory = Path(args[0])
    lock = open(directory / LOCK, "a")
    fcntl.flock(lock, fcntl.LOCK_EX)  # the one uploader of this journal (`workbench sync` waits)
    agent = Agent(directory, draws_plots=NO_PLOTS not in args[1:])
    with agent.timed("import mlflow"):
        import mlflow  # noqa: F401  (while the training process loads its data)

    main_gone = False
    stdin = sys.stdin.buffer
    try:
        while not agent.terminated:
            agent.read()
            if agent.ops and agent.client is None:
                with agent.timed("store: open"):
                    agent.open_store()
            if agent.client is not None and agent.replayer.run_id is not None:
                agent.warm_up()  # once the run exists: the end needs it, the metrics can wait for it
            if agent.client is not None and agent.step():
                continue
            if main_gone:
                break
            ready, _, _ = select.select([stdin], [], [], IDLE_WAIT_S)
            if ready and not os.read(stdin.fileno(), 4096):
                main_gone = True  # end of input: the training process is done writing, or gone
        if agent.client is None:  # nothing was handed over: no run, no store touched
            shutil.rmtree(directory, ignore_errors=True)
            remove_empty_parents(directory)
            result = {"state": "uploaded", "run_id": None}
        else:
            result = agent.close(main_gone and not agent.terminated)
        result["timings"] = {k: round(v, 3) for k, v in agent.timings.items()}
    except Unusable as exc:
        shutil.rmtree(directory, ignore_errors=True)
        remove_empty_parents(directory)
        print(json.dumps({"state": "unusable", "error": str(exc)}), flush=True)
        return EXIT_UNUSABLE_STORE
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # Everything is in the store and the result is printed: skip the interpreter's teardown (MLflow,
    # SQLAlchemy, matplotlib: about 0.9 s on 2 cores), which the training process would wait for.
    os._exit(code)
