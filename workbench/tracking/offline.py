"""When the tracking store stops answering: retries with backoff, then a local spool that `workbench sync` uploads.

A run's logging goes through `ResilientClient`, a thin layer over `MlflowClient` for the calls
that write to one run. A call that fails for a reason that may heal (connection refused, a
timeout, a 5xx, a locked database) is retried after `RETRY_DELAYS_S`, on top of MLflow's own
HTTP retries, bounded here (`bound_http_retries`) so that a dead server costs seconds, not
MLflow's default of minutes per call. When the retries run out, the client goes offline for the
rest of the run: the user is told once, on stderr, and every later write (metrics, tags,
artifacts, the final status) lands in order in a spool folder,

    <offline dir>/<run id>/run.json        tracking URI and run id
    <offline dir>/<run id>/journal.jsonl   one operation a line, in the order they were made
    <offline dir>/<run id>/files/<n>/      the artifacts of operation n
    <offline dir>/<run id>/uploaded        how many operations `upload` has replayed so far

with `<offline dir>` = $WORKBENCH_OFFLINE_DIR or ./.workbench/offline. Training never waits on
the store again. `upload` (the `workbench sync` command) replays a spool against the store,
remembering its progress, so an upload cut short goes on where it stopped; `RunTracker.finish`
tries it once itself in case the store is back by then. An error that will not heal (an invalid
value, an unknown run) is raised as before: it is a bug to see, not an outage to wait out.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from workbench.signals import interrupts_deferred
from workbench.tracking.uri import is_remote

OFFLINE_DIR_ENV = "WORKBENCH_OFFLINE_DIR"
DEFAULT_OFFLINE_DIR = Path(".workbench") / "offline"
RETRY_DELAYS_S = (1.0, 2.0, 4.0)  # between our attempts; each attempt includes MLflow's bounded HTTP retries
# MLflow's defaults (7 retries, backoff factor 2, 120 s timeout) spend minutes on one call to a dead
# server; these apply unless the user set the variables.
HTTP_RETRY_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                       "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}
# MLflow error codes that retrying cannot fix: raised, never spooled.
PERMANENT_ERRORS = frozenset({"INVALID_PARAMETER_VALUE", "RESOURCE_DOES_NOT_EXIST", "RESOURCE_ALREADY_EXISTS",
                              "INVALID_STATE", "BAD_REQUEST", "PERMISSION_DENIED", "UNAUTHENTICATED",
                              "FEATURE_DISABLED", "ENDPOINT_NOT_FOUND", "NOT_IMPLEMENTED"})
JOURNAL, META, PROGRESS, FILES, LOCK = "journal.jsonl", "run.json", "uploaded", "files", "lock"


class SpoolBusy(RuntimeError):
    """The spool is being written (its run is still going) or uploaded by another process."""


def offline_root(directory: str | os.PathLike | None = None) -> Path:
    """Where spools live: `directory`, else $WORKBENCH_OFFLINE_DIR, else ./.workbench/offline."""
    return Path(directory or os.environ.get(OFFLINE_DIR_ENV) or DEFAULT_OFFLINE_DIR).resolve()


def bound_http_retries(tracking_uri: str) -> None:
    """For an http(s) store: cap MLflow's per-call HTTP retries and timeout (our own backoff retries on
    top), unless the user set them. Other stores make no HTTP calls: nothing to do."""
    if not is_remote(tracking_uri):
        return
    for key, value in HTTP_RETRY_DEFAULTS.items():
        os.environ.setdefault(key, value)


def is_transient(exc: BaseException) -> bool:
    """Whether `exc` may heal by waiting: a refused or dropped connection, a timeout, a server error
    (MLflow's error for those, or one with a code that does not say the request itself is wrong),
    a locked or unreachable database. Anything else (a local file error, a bug) is not an outage."""
    from mlflow.exceptions import MlflowException

    if isinstance(exc, MlflowException):
        return exc.error_code not in PERMANENT_ERRORS
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    kinds = []
    with contextlib.suppress(ImportError):
        import requests

        kinds.append(requests.exceptions.RequestException)
    with contextlib.suppress(ImportError):
        import sqlalchemy.exc

        kinds.append(sqlalchemy.exc.OperationalError)
    return bool(kinds) and isinstance(exc, tuple(kinds))


def first_line(exc: BaseException) -> str:
    text = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {text[:300]}" if text else type(exc).__name__


class Spool:
    """One run's writes that the store did not take, in order, on local disk.

    The writing process holds an exclusive `flock` on `<spool>/lock` from its first write until
    `release()`, so `upload` never reads a journal that is still growing. A journal that a tracking
    agent follows (`workbench.tracking.agent`) is written with `locking=False` (the agent holds the
    lock: it is the one uploader) and `durable=False` (a write reaches the kernel, which keeps it
    when the process is killed; only a machine crash would need the fsync).
    """

    def __init__(self, root: Path, tracking_uri: str, run_id: str | None, *, folder: str | None = None,
                 locking: bool = True, durable: bool = True) -> None:
        self.dir = Path(root) / (folder or run_id)
        self.tracking_uri, self.run_id = tracking_uri, run_id
        self.locking, self.durable = locking, durable
        self.operations = 0
        self.metric_values = 0
        self._lock = threading.Lock()
        self._lock_file = None

    def append(self, op: dict, files: Path | None = None) -> None:
        """Add one operation; `files` (a file or a folder) is copied in as the operation's artifacts. A Ctrl-C
        meanwhile waits for the end: the journal line and the operation count go together."""
        with self._lock, interrupts_deferred():
            if self._lock_file is None:
                self._open()
            number = self.operations
            if files is not None:
                target = self.dir / FILES / str(number)
                if Path(files).is_dir():
                    shutil.copytree(files, target, dirs_exist_ok=True)
                else:
                    target.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(files, target / Path(files).name)
                op = {**op, "files": f"{FILES}/{number}"}
            with (self.dir / JOURNAL).open("a", encoding="utf-8") as f:
                f.write(json.dumps(op) + "\n")
                f.flush()
                if self.durable:
                    os.fsync(f.fileno())
            self.operations = number + 1
            self.metric_values += operation_values(op)

    def _open(self) -> None:
        """Lock the spool for this process and repair a journal whose last line a crash cut short."""
        self.dir.mkdir(parents=True, exist_ok=True)
        self._lock_file = open(self.dir / LOCK, "a")
        if self.locking:
            try:
                fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                self._lock_file.close()
                self._lock_file = None
                raise SpoolBusy(f"{self.dir} is in use by another process") from exc
        meta = self.dir / META
        if not meta.exists():
            write_meta(self.dir, {"tracking_uri": self.tracking_uri, "run_id": self.run_id})
        self.operations = _repair_journal(self.dir / JOURNAL)

    def open(self) -> "Spool":
        """Create the folder and its run.json now (before the first write)."""
        with self._lock:
            if self._lock_file is None:
                self._open()
        return self

    def release(self) -> None:
        """Let `upload` (another process, or this one) take the spool."""
        with self._lock:
            if self._lock_file is not None:
                self._lock_file.close()
                self._lock_file = None


def operation_values(op: dict) -> int:
    """How many metric values an operation carries."""
    if op.get("op") == "metric_block":
        return len(op.get("keys", ())) * len(op.get("steps", ()))
    return len(op.get("metrics", ()))


def read_meta(directory: Path) -> dict:
    return json.loads((Path(directory) / META).read_text())


def write_meta(directory: Path, meta: dict) -> None:
    """run.json, replaced atomically (a reader never sees half of it)."""
    tmp = Path(directory) / (META + ".tmp")
    tmp.write_text(json.dumps(meta) + "\n")
    tmp.replace(Path(directory) / META)


def _repair_journal(journal: Path) -> int:
    """Cut a last line without its newline (a crash while writing it); returns the number of whole lines."""
    if not journal.exists():
        return 0
    data = journal.read_bytes()
    whole = data[: data.rfind(b"\n") + 1]
    if len(whole) != len(data):
        with journal.open("r+b") as f:
            f.truncate(len(whole))
    return whole.count(b"\n")


class ResilientClient:
    """`MlflowClient` for writing one run: transient failures are retried, then spooled (see the module doc).

    Calls it does not wrap (reads such as `get_run`) go straight to the MlflowClient.
    """

    handles_outages = True  # MetricLogger: no retries of its own on top of these

    def __init__(self, client, run_id: str, *, root: str | os.PathLike | None = None,
                 delays: tuple[float, ...] = RETRY_DELAYS_S, announce: Callable[[str], None] | None = None) -> None:
        self.client, self.run_id, self.delays = client, run_id, tuple(delays)
        self.tracking_uri = client.tracking_uri
        self.spool = Spool(offline_root(root), self.tracking_uri, run_id)
        self.offline_since: float | None = None
        self.error: BaseException | None = None
        self._announce = announce or _announce
        self._lock = threading.Lock()

    def __getattr__(self, name: str):
        return getattr(self.client, name)

    @property
    def offline(self) -> bool:
        return self.offline_since is not None

    # -- the writes of a run -------------------------------------------------------------------
    def log_batch(self, run_id: str, metrics=(), params=(), tags=(), synchronous=None) -> None:
        op = {"op": "log_batch", "metrics": [[m.key, m.value, m.timestamp, m.step] for m in metrics],
              "params": [[p.key, p.value] for p in params], "tags": [[t.key, t.value] for t in tags]}
        self._write(op, lambda: self.client.log_batch(run_id, metrics=metrics, params=params, tags=tags,
                                                      synchronous=True))

    def set_tag(self, run_id: str, key: str, value: Any, synchronous=None) -> None:
        self._write({"op": "set_tag", "key": key, "value": str(value)},
                    lambda: self.client.set_tag(run_id, key, value))

    def delete_tag(self, run_id: str, key: str) -> None:
        self._write({"op": "delete_tag", "key": key}, lambda: self.client.delete_tag(run_id, key))

    def update_run(self, run_id: str, status: str | None = None, name: str | None = None) -> None:
        self._write({"op": "update_run", "status": status, "name": name},
                    lambda: self.client.update_run(run_id, status=status, name=name))

    def set_terminated(self, run_id: str, status: str | None = None, end_time: int | None = None) -> None:
        end_time = end_time if end_time is not None else int(time.time() * 1000)  # the real end, not the upload's
        self._write({"op": "set_terminated", "status": status, "end_time": end_time},
                    lambda: self.client.set_terminated(run_id, status=status, end_time=end_time))

    def log_inputs(self, run_id: str, datasets=None, models=None) -> None:
        facts = [{"name": d.dataset.name, "digest": d.dataset.digest, "source_type": d.dataset.source_type,
                  "source": d.dataset.source, "schema": d.dataset.schema, "profile": d.dataset.profile}
                 for d in datasets or ()]
        self._write({"op": "log_inputs", "datasets": facts},
                    lambda: self.client.log_inputs(run_id, datasets=datasets, models=models))

    def log_artifacts(self, run_id: str, local_dir: str, artifact_path: str | None = None) -> None:
        self._write({"op": "log_artifacts", "artifact_path": artifact_path},
                    lambda: self.client.log_artifacts(run_id, local_dir, artifact_path), files=Path(local_dir))

    def log_artifact(self, run_id: str, local_path: str, artifact_path: str | None = None) -> None:
        self._write({"op": "log_artifacts", "artifact_path": artifact_path},
                    lambda: self.client.log_artifact(run_id, local_path, artifact_path), files=Path(local_path))

    def log_text(self, run_id: str, text: str, artifact_file: str) -> None:
        self._write_file(run_id, artifact_file, lambda path: path.write_text(text, encoding="utf-8"),
                         lambda: self.client.log_text(run_id, text, artifact_file))

    def log_dict(self, run_id: str, dictionary: dict, artifact_file: str) -> None:
        self._write_file(run_id, artifact_file,
                         lambda path: path.write_text(json.dumps(dictionary, indent=2), encoding="utf-8"),
                         lambda: self.client.log_dict(run_id, dictionary, artifact_file))

    def _write_file(self, run_id: str, artifact_file: str, write: Callable[[Path], Any], send: Callable) -> None:
        import tempfile

        if self.offline:
            with tempfile.TemporaryDirectory(prefix="workbench-offline-") as tmp:
                path = Path(tmp) / Path(artifact_file).name
                write(path)
                parent = str(Path(artifact_file).parent)
                self.log_artifact(run_id, str(path), None if parent == "." else parent)
            return
        self._write(None, send, fallback=lambda: self._write_file(run_id, artifact_file, write, send))

    # -- retry, then spool ---------------------------------------------------------------------
    def _write(self, op: dict | None, send: Callable[[], Any], files: Path | None = None,
               fallback: Callable[[], None] | None = None) -> None:
        if not self.offline:
            for delay in (*self.delays, None):
                try:
                    send()
                    return
                except Exception as exc:  # noqa: BLE001 - classified: permanent ones are raised
                    if not is_transient(exc):
                        raise
                    self.error = exc
                    if delay is None or self.offline:  # another thread gave up meanwhile: no more waiting
                        break
                    time.sleep(delay)
            self._go_offline()
        if fallback is not None:
            fallback()
        else:
            self.spool.append(op, files)

    def _go_offline(self) -> None:
        with self._lock:
            if self.offline:
                return
            self.offline_since = time.time()
        attempts = len(self.delays) + 1
        self._announce(
            f"MLflow at {self.tracking_uri} stopped answering ({first_line(self.error)}; {attempts} attempts "
            f"over {sum(self.delays):.0f} s): training goes on, and run {self.run_id}'s metrics, tags, artifacts "
            f"and status are kept in {self.spool.dir}; upload them with `workbench sync` once the server is back")

    def try_upload(self) -> "UploadReport | None":
        """At the end of the run: release the spool, and replay it if the store answers again (None when
        it does not, or the upload failed part way: the rest stays for `workbench sync`)."""
        self.spool.release()
        if not self.offline or not self.spool.dir.exists():
            return None
        try:
            self.client.get_run(self.run_id)
            return upload(self.spool.dir, self.tracking_uri)
        except Exception as exc:  # noqa: BLE001 - still down, or down again: the spool stays
            self.error = exc
            return None


def _announce(message: str) -> None:
    print(f"workbench: warning: {message}", file=sys.stderr, flush=True)


# -- upload (workbench sync) --------------------------------------------------------------------------
@dataclass
class UploadReport:
    run_id: str | None
    tracking_uri: str
    operations: int  # replayed now
    metric_values: int
    status: str | None  # the final status set, if the spool had one


def spooled_runs(root: str | os.PathLike | None = None) -> list[Path]:
    """The spool folders under `root` (oldest first)."""
    base = offline_root(root)
    if not base.is_dir():
        return []
    found = [d for d in base.iterdir() if (d / META).is_file() and (d / JOURNAL).is_file()]
    return sorted(found, key=lambda d: (d / META).stat().st_mtime)


def upload(directory: str | os.PathLike, tracking_uri: str | None = None) -> UploadReport:
    """Replay the spool in `directory` against its store (or `tracking_uri`); the folder is removed when done.

    Progress is saved after each operation, so a failed upload (raised) goes on from there next time.
    A journal whose run was never created (its tracking agent died first) starts with `create_run`:
    the run is created then, and run.json names it. Raises `SpoolBusy` while the run is still writing
    it or another upload holds it.
    """
    from mlflow import MlflowClient

    directory = Path(directory)
    with open(directory / LOCK, "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            raise SpoolBusy(f"{directory} is still being written by its run, or uploaded by another "
                            "`workbench sync`: try again once that has ended") from exc
        meta = read_meta(directory)
        uri = tracking_uri or meta["tracking_uri"]
        bound_http_retries(uri)
        report = replay_journal(directory, MlflowClient(uri), meta)
        report.tracking_uri = uri
        shutil.rmtree(directory, ignore_errors=True)
    return report


def replay_journal(directory: Path, client, meta: dict, *, start: int | None = None,
                   stop: int | None = None) -> UploadReport:
    """Apply the journal's operations from the saved progress on (or `start`), saving progress after each
    (consecutive metric blocks are applied together, as the agent does: progress is saved after the group)."""
    from workbench.tracking.replay import Replayer, merged_metric_blocks, metric_block_group

    directory = Path(directory)
    progress = directory / PROGRESS
    done = start if start is not None else int(progress.read_text()) if progress.exists() else 0
    replayer = Replayer(client, meta.get("run_id"), directory)
    report = UploadReport(meta.get("run_id"), client.tracking_uri, 0, 0, None)
    _repair_journal(directory / JOURNAL)
    with (directory / JOURNAL).open(encoding="utf-8") as f:
        lines = f.read().splitlines()[:stop]

    def operation(number: int) -> dict:
        try:
            return json.loads(lines[number])
        except json.JSONDecodeError as exc:
            raise ValueError(f"{directory / JOURNAL} line {number + 1} is not a JSON operation: "
                             f"{exc}; the lines before it are uploaded") from exc

    def readable(number: int) -> dict | None:
        """The operation on line `number`; None when it cannot be read (raised once the lines before it are up)."""
        with contextlib.suppress(ValueError):
            return operation(number)
        return None

    number = done
    while number < len(lines):
        first = operation(number)
        if replayer.run_id is None and first["op"] != "create_run":
            raise ValueError(f"{directory / JOURNAL} names no run and does not start by creating one")
        group = metric_block_group(first, (readable(k) for k in range(number + 1, len(lines))))
        values = sum(operation_values(op) for op in group)
        replayer.apply(merged_metric_blocks(group) if len(group) > 1 else first)
        if replayer.run_id != meta.get("run_id"):  # the run was created just now
            meta = {**meta, "run_id": replayer.run_id}
            write_meta(directory, meta)
            report.run_id = replayer.run_id
        report.operations += len(group)
        report.metric_values += values
        if first["op"] == "set_terminated":
            report.status = first.get("status")
        number += len(group)
        save_progress(directory, number)
    return report


def save_progress(directory: Path, done: int) -> None:
    tmp = Path(directory) / (PROGRESS + ".tmp")
    tmp.write_text(str(done))
    tmp.replace(Path(directory) / PROGRESS)
