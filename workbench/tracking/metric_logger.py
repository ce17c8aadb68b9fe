"""Metrics to MLflow off the training thread: a queue, a background thread, `log_batch` in chunks.

Logging one value per call costs milliseconds on SQLite and far more over HTTP,
so the training thread only hands over blocks of numbers (a few microseconds);
the sender thread turns them into `Metric` entities and sends at most
`MAX_METRICS_PER_BATCH` (MLflow's limit for one `log_batch`) at a time, whenever
a second has passed or a full chunk is waiting. `close()` drains everything.

A failed send is retried (a busy SQLite file, a server hiccup); values that still
cannot be sent are counted and reported by `close()`, never raised into training.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass

import numpy as np

MAX_METRICS_PER_BATCH = 1000  # MLflow's limit on metrics in one log_batch call
SEND_INTERVAL_S = 1.0
RETRY_DELAYS_S = (0.5, 2.0, 5.0)
_STOP = object()


@dataclass(frozen=True)
class MetricBlock:
    """Values of `keys` (columns) at `steps` (rows): `values[i, j]` is key j at step i."""

    keys: tuple[str, ...]
    values: np.ndarray  # (rows, keys), owned by the block (a copy of the caller's data)
    steps: np.ndarray  # (rows,) int
    timestamp_ms: int

    @classmethod
    def single(cls, metrics: dict[str, float], step: int) -> "MetricBlock":
        keys = tuple(metrics)
        values = np.array([[float(metrics[k]) for k in keys]], dtype=np.float64)
        return cls(keys, values, np.array([int(step)]), int(time.time() * 1000))

    def __len__(self) -> int:
        return self.values.size

    def entities(self) -> list:
        from mlflow.entities import Metric

        rows = self.values.tolist()
        steps = self.steps.tolist()
        t, keys = self.timestamp_ms, self.keys
        return [Metric(key, value, t, step) for step, row in zip(steps, rows) for key, value in zip(keys, row)]


class MetricLogger:
    """Sends `MetricBlock`s to one MLflow run from a background thread."""

    def __init__(self, client, run_id: str, *, interval_s: float = SEND_INTERVAL_S) -> None:
        self.client, self.run_id, self.interval_s = client, run_id, interval_s
        self.sent = 0
        self.dropped = 0
        self.error: BaseException | None = None
        self._failing = False  # after a chunk is lost, try each later chunk once (no retry delays)
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._work, name=f"mlflow-metrics-{run_id[:8]}", daemon=True)
        self._closed = False
        self._thread.start()

    def put(self, block: MetricBlock) -> None:
        """Queue a block (the caller must not change its arrays afterwards)."""
        if len(block) and not self._closed:
            self._queue.put(block)

    def log(self, metrics: dict[str, float], step: int) -> None:
        """Queue a few scalars at one step (per-epoch metrics)."""
        if metrics:
            self.put(MetricBlock.single(metrics, step))

    def close(self, timeout: float | None = None) -> bool:
        """Send everything queued and stop the thread; True when it finished within `timeout`."""
        if not self._closed:
            self._closed = True
            self._queue.put(_STOP)
        self._thread.join(timeout)
        return not self._thread.is_alive()

    # -- the sender thread ---------------------------------------------------------------
    def _work(self) -> None:
        pending: list = []
        last_send = time.monotonic()
        stopping = False
        while not stopping:
            wait = max(0.0, self.interval_s - (time.monotonic() - last_send))
            try:
                item = self._queue.get(timeout=wait) if wait > 0 else self._queue.get_nowait()
            except queue.Empty:
                item = None
            while item is not None:  # take everything already queued
                if item is _STOP:
                    stopping = True
                else:
                    pending.extend(item.entities())
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    item = None
            due = stopping or time.monotonic() - last_send >= self.interval_s
            while pending and (due or len(pending) >= MAX_METRICS_PER_BATCH):
                chunk, pending = pending[:MAX_METRICS_PER_BATCH], pending[MAX_METRICS_PER_BATCH:]
                self._send(chunk)
            if due:
                last_send = time.monotonic()

    def _send(self, metrics: list) -> None:
        retry = not self._failing and not getattr(self.client, "handles_outages", False)  # a ResilientClient retries
        for delay in (*(RETRY_DELAYS_S if retry else ()), None):
            try:
                self.client.log_batch(self.run_id, metrics=metrics, synchronous=True)
                self.sent += len(metrics)
                self._failing = False
                return
            except Exception as exc:  # noqa: BLE001 - reported by close(), never raised into training
                self.error = exc
                if delay is None:
                    self.dropped += len(metrics)
                    self._failing = True
                    return
                time.sleep(delay)
