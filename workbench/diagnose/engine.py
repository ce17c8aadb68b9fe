"""Running the rules over a statistics record, all at once or incrementally as training goes.

Each rule turns record rows into per-row signals (does the condition hold at this step, in
which layers, and the number behind it). The `Diagnoser` keeps those signals per rule, grown
in place, and evaluates only rows it has not seen (`record.rows_after(last step)`, which stays
right when the record compacts), so live diagnosis costs the same per step however long the run.
A verdict fires when its condition is persistent (see `thresholds`), or at its first hit for
the rules that need no persistence; its finding is described from the stored signals and the
record, and described again from everything at the end (`final=True`).

    diagnosis = diagnose_record(record, spec=spec)      # offline: one pass
    diagnoser = Diagnoser(spec=spec); diagnoser.update(record) ... diagnoser.update(record, final=True)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from workbench.diagnose.context import RunContext
from workbench.diagnose.findings import Diagnosis, Finding
from workbench.diagnose.thresholds import MIN_PERSISTENT_ROWS, PERSISTENCE_FRACTION, PERSISTENCE_WINDOW

MAX_SPANS = 20  # contiguous stretches listed per finding
SPAN_GAP = 5  # rows: stretches closer than this merge


@dataclass
class Signals:
    """A rule's verdict on rows [start, stop) of a record."""

    hit: np.ndarray  # (n,) bool: the condition holds at this row
    value: np.ndarray  # (n,) float: the measurement behind it
    layers: np.ndarray | None = None  # (n, len(record.layers)) bool: where it holds, when per layer


class Track:
    """A rule's signals over all rows seen so far, in growable arrays (amortized O(1) per row)."""

    def __init__(self, n_layers: int) -> None:
        self.n = 0
        self.n_layers = n_layers
        self._cap = 0
        self._steps = np.zeros(0, np.int64)
        self._epochs = np.zeros(0, np.int64)
        self._hit = np.zeros(0, bool)
        self._value = np.zeros(0, np.float64)
        self._layers = np.zeros((0, n_layers), bool)
        self._cum = np.zeros(1, np.int64)  # hits in rows [0, i)

    def append(self, steps: np.ndarray, epochs: np.ndarray, signals: Signals) -> None:
        k = len(steps)
        if self.n + k > self._cap:
            cap = max(64, 2 * (self.n + k))

            def grow(a: np.ndarray, extra: int = 0) -> np.ndarray:
                out = np.zeros((cap + extra, *a.shape[1:]), a.dtype)
                out[: len(a)] = a
                return out

            self._steps, self._epochs = grow(self._steps), grow(self._epochs)
            self._hit, self._value, self._layers = grow(self._hit), grow(self._value), grow(self._layers)
            self._cum = grow(self._cum, 1)
            self._cap = cap
        a, b = self.n, self.n + k
        self._steps[a:b], self._epochs[a:b] = steps, epochs
        self._hit[a:b] = signals.hit
        self._value[a:b] = signals.value
        if signals.layers is not None:
            self._layers[a:b] = signals.layers
        else:
            self._layers[a:b] = False
        self._cum[a + 1 : b + 1] = self._cum[a] + np.cumsum(signals.hit)
        self.n = b

    steps = property(lambda self: self._steps[: self.n])
    epochs = property(lambda self: self._epochs[: self.n])
    hit = property(lambda self: self._hit[: self.n])
    value = property(lambda self: self._value[: self.n])
    layers = property(lambda self: self._layers[: self.n])

    def holds_at_end(self) -> bool:
        """The condition holds in at least PERSISTENCE_FRACTION of the last PERSISTENCE_WINDOW rows."""
        window = min(PERSISTENCE_WINDOW, self.n)
        return window > 0 and self._cum[self.n] - self._cum[self.n - window] >= PERSISTENCE_FRACTION * window

    def first_persistent(self, start: int, final: bool) -> int | None:
        """The first hit row of the first window, ending at row >= `start`, where the condition persists."""
        n, window = self.n, PERSISTENCE_WINDOW
        if n == 0:
            return None
        need = math.ceil(PERSISTENCE_FRACTION * window)
        if n < window:
            if not final:
                return None
            need = max(MIN_PERSISTENT_ROWS, math.ceil(PERSISTENCE_FRACTION * n))
            window = n
        ends = np.arange(max(start, window - 1), n)  # window = rows (end - window, end]
        if not len(ends):
            return None
        counts = self._cum[ends + 1] - self._cum[ends + 1 - window]
        ok = np.flatnonzero(counts >= need)
        if not len(ok):
            return None
        end = int(ends[ok[0]])
        return end + 1 - window + int(np.argmax(self.hit[end + 1 - window : end + 1]))


class Evidence:
    """What a rule's `describe` reads: its track, the record, the context, and where the finding starts."""

    def __init__(self, record, ctx: RunContext, track: Track, first: int, persistent: bool = True) -> None:
        self.record, self.ctx, self.track, self.first = record, ctx, track, first
        self.persistent = persistent
        hit = track.hit.copy()
        hit[:first] = False
        self.hit = hit  # rows of the track from the finding's start on
        self.hit_steps = track.steps[hit]

    @property
    def first_step(self) -> int:
        return int(self.track.steps[self.first])

    @property
    def first_epoch(self) -> int:
        return int(self.track.epochs[self.first])

    @property
    def last_step(self) -> int:
        return int(self.hit_steps[-1]) if len(self.hit_steps) else self.first_step

    @property
    def share(self) -> float:
        """Fraction of the recorded rows from the first hit on where the condition holds."""
        after = self.track.n - self.first
        return float(self.hit.sum() / after) if after else 0.0

    def values(self) -> np.ndarray:
        v = self.track.value[self.hit]
        return v[np.isfinite(v)]

    def rows(self, steps: np.ndarray | None = None) -> np.ndarray:
        """Record row indices of `steps` (default: the hit steps) still present in the record."""
        return np.flatnonzero(np.isin(self.record.steps, self.hit_steps if steps is None else steps))

    def flagged_layers(self, min_share: float = 0.5) -> list[str]:
        """Layers where the condition holds in at least `min_share` of the hit rows."""
        layers = self.track.layers[self.hit]
        if not len(layers) or not layers.any():
            layers = self.track.layers[self.first : self.first + 1]
        share = layers.mean(axis=0) if len(layers) else np.zeros(self.track.n_layers)
        names = self.ctx.layers
        picked = [names[j] for j in np.flatnonzero((share >= min_share) & (share > 0))]
        return picked or [names[j] for j in np.flatnonzero(share > 0)]

    def spans(self) -> list[list[int]]:
        """Contiguous stretches [first step, last step] where the condition holds (small gaps merged)."""
        index = np.flatnonzero(self.hit)
        if not len(index):
            return []
        breaks = np.flatnonzero(np.diff(index) > SPAN_GAP)
        starts = np.concatenate([[index[0]], index[breaks + 1]])
        ends = np.concatenate([index[breaks], [index[-1]]])
        steps = self.track.steps
        spans = [[int(steps[a]), int(steps[b])] for a, b in zip(starts, ends, strict=True)]
        return spans if len(spans) <= MAX_SPANS else spans[: MAX_SPANS - 1] + [[spans[MAX_SPANS - 1][0], spans[-1][1]]]

    def finding(self, verdict: str, summary: str, layers: list[str], evidence: dict[str, Any],
                advice: list[str | None]) -> Finding:
        if self.persistent:
            evidence = {"share_of_steps": self.share, "rows_hit": int(self.hit.sum()), **evidence,
                        "spans": self.spans()}
        return Finding(verdict, summary, layers, self.first_step, self.first_epoch, self.last_step,
                       evidence, [a for a in advice if a])


class Diagnoser:
    """Incremental diagnosis of one record: `update` as rows arrive, `diagnosis()` at any time."""

    def __init__(self, *, spec: Any = None, rules=None) -> None:
        from workbench.diagnose.rules import RULES

        self.spec = spec
        self.rules = list(rules if rules is not None else RULES)
        self.ctx: RunContext | None = None
        self.tracks: dict[str, Track] = {}
        self.first: dict[str, int] = {}  # verdict -> first row of its finding in the track
        self.found: dict[str, Finding] = {}
        self.cursor = -1  # last step evaluated
        self.state: dict[str, Any] = {}  # rules' running values (peak learning rate, initial loss)
        self._record = None

    def update(self, record, *, final: bool = False) -> list[Finding]:
        """Evaluate the rows recorded since the last call; returns the findings that appeared."""
        self._record = record
        if self.ctx is None:
            if not len(record) or not record.layers:
                return []
            self.ctx = RunContext.of(record, self.spec)
            self.tracks = {rule.verdict: Track(len(self.ctx.layers)) for rule in self.rules}
        rows = record.rows_after(self.cursor)
        start, stop = rows.start, rows.stop
        new: list[Finding] = []
        if stop > start:
            steps, epochs = record.steps[start:stop], record.epochs[start:stop]
            for rule in self.rules:
                track = self.tracks[rule.verdict]
                offset = track.n
                track.append(steps, epochs, rule.evaluate(record, start, stop, self.ctx, self.state))
                if rule.verdict not in self.first:
                    first = self._first(rule, track, offset, final)
                    if first is not None:
                        self.first[rule.verdict] = first
                        self.found[rule.verdict] = self._describe(rule, record)
                        new.append(self.found[rule.verdict])
            self.cursor = int(record.steps[stop - 1])
        if final:
            appeared = [f.verdict for f in new]
            for rule in self.rules:
                if rule.verdict not in self.first and rule.persistent:
                    first = self.tracks[rule.verdict].first_persistent(0, True)
                    if first is not None:
                        self.first[rule.verdict] = first
                        appeared.append(rule.verdict)
            for rule in self.rules:  # a condition the run grew out of is not its verdict (rules that say so)
                if getattr(rule, "holds_at_end", False) and rule.verdict in self.first \
                        and rule.resolved(self.tracks[rule.verdict], record):
                    del self.first[rule.verdict]
                    self.found.pop(rule.verdict, None)
            for rule in self.rules:  # the final evidence covers the whole run
                if rule.verdict in self.first:
                    self.found[rule.verdict] = self._describe(rule, record)
            new = [self.found[v] for v in appeared if v in self.found]
        return new

    def _first(self, rule, track: Track, offset: int, final: bool) -> int | None:
        if not rule.persistent:
            hits = np.flatnonzero(track.hit[offset:])
            return offset + int(hits[0]) if len(hits) else None
        return track.first_persistent(offset, final)

    def _describe(self, rule, record) -> Finding:
        track, first = self.tracks[rule.verdict], self.first[rule.verdict]
        return rule.describe(Evidence(record, self.ctx, track, first, rule.persistent))

    @property
    def findings(self) -> list[Finding]:
        return list(self.found.values())

    def diagnosis(self, run_id: str | None = None) -> Diagnosis:
        record = self._record
        rows = len(record) if record is not None else 0
        return Diagnosis(self.findings, run_id, rows, int(record.last_step) if rows else -1,
                         list(self.ctx.layers) if self.ctx else [])


def diagnose_record(record, *, spec: Any = None, spec_dict: Any = None, run_id: str | None = None) -> Diagnosis:
    """Diagnose a whole statistics record (in memory or `load_record`ed); no MLflow needed.

    `spec` (or `spec_dict`) makes the advice concrete: a `Spec`, its `to_dict()`, dotted keys or MLflow params.
    """
    diagnoser = Diagnoser(spec=spec if spec is not None else spec_dict)
    diagnoser.update(record, final=True)
    return diagnoser.diagnosis(run_id)
