"""From the statistics record to MLflow metric blocks: which rows, which keys, how many points.

    feed = MetricFeed(log_every=10, planned_steps=trainer.epochs * trainer.steps_per_epoch)
    block = feed.pull(record, complete=False)     # a MetricBlock of the new rows on the cadence, or None

Keys: `<stat>/<layer>` for the `LAYER_METRICS`, `grad_norm/global` and `clip/fraction` (the running
fraction of recorded steps where clipping fired). Non-finite values go as they are (MLflow stores NaN
and clamps +-inf to +-1.8e308).

Bounded points: a series gets at most 2 x `MAX_POINTS` points whatever the run's length. The first
`MAX_POINTS` come at `monitor.log_every` (the start of training, where most gradient trouble begins,
at full cadence, and a short run entirely); after them the cadence is `log_every` doubled (as the
record doubles its own when it compacts) until the planned steps fit in `MAX_POINTS` more. A
300-epoch run logs no more points per series than a 3-epoch one of 1,000 points, and costs about the
same to log. The MLflow UI draws a few hundred points a chart; the full resolution is the `stats/`
artifact.
"""

from __future__ import annotations

import time

import numpy as np

from workbench.tracking.metric_logger import MetricBlock

# Per-layer statistics shown in the MLflow UI as `<stat>/<layer>` (the record holds more).
LAYER_METRICS = ("grad_norm", "weight_norm", "update_ratio", "backprop_norm", "act_std", "dead_frac", "sat_frac")
HIDDEN_ONLY = ("dead_frac", "sat_frac")  # undefined (NaN) for the output layer: not logged there
GLOBAL_METRICS = {"grad_norm_global": "grad_norm/global"}
CLIP_FRACTION = "clip/fraction"
MAX_POINTS = 1000  # per metric series


def bounded_cadence(log_every: int, planned_steps: int | None, max_points: int = MAX_POINTS) -> int:
    """`log_every`, doubled until `planned_steps` / cadence is at most `max_points`."""
    cadence = max(1, int(log_every))
    if planned_steps:
        while planned_steps / cadence > max_points:
            cadence *= 2
    return cadence

# Statistics through time, logged as `<stat>/<layer>` for recurrent layers (README: recurrent networks).
RECURRENT_METRICS = ("time_grad_ratio", "time_horizon", "recurrent_grad_norm", "recurrent_sv", "gate_sat_frac")


class MetricFeed:
    """Hands the record's rows on the cadence over as `MetricBlock`s, each row once."""

    def __init__(self, log_every: int, planned_steps: int | None = None) -> None:
        self.cadence = max(1, int(log_every))  # for the first MAX_POINTS points
        self.switch_step = MAX_POINTS * self.cadence
        self.late_cadence = bounded_cadence(self.cadence, planned_steps)  # for the rest of the run
        self.cursor = -1  # last record step handed over
        self.logged_until = -1  # resumed runs: the last step whose statistics MLflow has
        self._clip_count = 0.0  # clipped steps among the rows handed over so far
        self._clip_rows = 0

    def skip_to(self, record) -> None:
        """A resumed run: the rows already in `record` were handed over by the first attempt."""
        if record is not None and len(record):
            self.cursor = int(record.steps[-1])
            self.clip_fractions(record, slice(0, len(record)))  # the running clip fraction goes on

    def pull(self, record, complete: bool) -> MetricBlock | None:
        """The rows after the cursor (all but the newest unless `complete`: within a step the newest
        row may still be filling) whose step is on the cadence."""
        if record is None or not len(record):
            return None
        rows = record.rows_after(self.cursor)
        stop = rows.stop if complete else rows.stop - 1
        if stop <= rows.start:
            return None
        rows = slice(rows.start, stop)
        steps = record.steps[rows]
        keep = (steps % self.cadence == 0) & (steps > self.logged_until)
        keep &= (steps < self.switch_step) | (steps % self.late_cadence == 0)
        clip = self.clip_fractions(record, rows)
        self.cursor = int(steps[-1])
        if not keep.any():
            return None
        keys, columns = self._columns(record, rows, keep)
        if clip is not None:
            keys.append(CLIP_FRACTION)
            columns.append(clip[keep, None])
        if not keys:
            return None
        values = np.concatenate(columns, axis=1, dtype=np.float64)
        return MetricBlock(tuple(keys), values, steps[keep].copy(), int(time.time() * 1000))

    def _columns(self, record, rows: slice, keep: np.ndarray) -> tuple[list[str], list[np.ndarray]]:
        keys: list[str] = []
        columns: list[np.ndarray] = []
        available = set(record.layer_stats())
        output_layer = record.layers[-1] if record.layers else None
        for stat in LAYER_METRICS:
            if stat not in available:
                continue
            block = record.layer(stat)[rows][keep]
            for j, layer in enumerate(record.layers):
                if stat in HIDDEN_ONLY and layer == output_layer:
                    continue
                keys.append(f"{stat}/{layer}")
                columns.append(block[:, j : j + 1])
        recurrent = record.meta.get("recurrent") or {}
        for stat in RECURRENT_METRICS if recurrent else ():  # the series through time, recurrent layers only
            if stat not in available:
                continue
            block = record.layer(stat)[rows][keep]
            for j, layer in enumerate(record.layers):
                info = recurrent.get(layer)
                if info is None or (stat == "gate_sat_frac" and info.get("type") == "rnn"):
                    continue
                keys.append(f"{stat}/{layer}")
                columns.append(block[:, j : j + 1])
        available = set(record.global_stats())
        for stat, key in GLOBAL_METRICS.items():
            if stat in available:
                keys.append(key)
                columns.append(record.global_(stat)[rows][keep, None])
        return keys, columns

    def clip_fractions(self, record, rows: slice) -> np.ndarray | None:
        """The running fraction of clipped steps at each row of `rows` (NaN rows do not count)."""
        if "clipped" not in record.global_stats():
            return None
        clipped = record.global_("clipped")[rows].astype(np.float64)
        counted = np.isfinite(clipped)
        count = self._clip_count + np.cumsum(np.where(counted, clipped, 0.0))
        total = self._clip_rows + np.cumsum(counted)
        self._clip_count, self._clip_rows = float(count[-1]), int(total[-1])
        with np.errstate(invalid="ignore", divide="ignore"):
            return count / total
