"""Diagnosis while training: the same rules, run on the new rows every N steps, as a hook.

    live = LiveDiagnosis(every_n_steps=50, on_finding=print)      # stop_on=STOP_ON_SICK by default
    run = build_run(spec, hooks=(live,))
    run.trainer.fit()            # stops with status FAILED and reason "diagnosis: exploding_gradients ..."
    live.findings, live.diagnosis().verdict

It reads the record of the run's `StatisticsMonitor` (found among the trainer's hooks),
evaluates only rows recorded since its last look, calls `on_finding(finding)` once per verdict
as it appears (the tracker tags the run, a study logs the reason), and when the verdict is in
`stop_on` asks the trainer to stop. At the end of training it looks once more with the short-
record and final rules (a NaN guard stop is seen there: the guard ends the step before any
update), so `diagnosis()` then equals `diagnose_record` on the whole record.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from workbench.diagnose.engine import Diagnoser
from workbench.diagnose.findings import VERDICTS, Diagnosis, Finding
from workbench.training import FAILED, Hook
from workbench.training.hooks import hook_priority

# Verdicts a run does not recover from by itself: what a study prunes.
STOP_ON_SICK = ("divergence", "exploding_gradients", "dead_units", "vanishing_gradients")


class LiveDiagnosis(Hook):
    """Diagnose the run's statistics record every `every_n_steps`; stop on the verdicts in `stop_on`
    (by default `STOP_ON_SICK`; `stop_on=()` only watches)."""

    priority = hook_priority("live_diagnosis")

    def __init__(
        self,
        every_n_steps: int = 50,
        stop_on: Iterable[str] = STOP_ON_SICK,
        on_finding: Callable[[Finding], Any] | None = None,
        *,
        spec: Any = None,
        stop_status: str = FAILED,
        record: Any = None,
    ) -> None:
        if int(every_n_steps) < 1:
            raise ValueError(f"every_n_steps must be at least 1, got {every_n_steps}")
        unknown = sorted(set(stop_on) - set(VERDICTS))
        if unknown:
            raise ValueError(f"unknown verdict(s) {', '.join(unknown)} in stop_on; allowed: {', '.join(VERDICTS)}")
        self.every_n_steps = int(every_n_steps)
        self.stop_on = tuple(stop_on)
        self.on_finding = on_finding
        self.spec = spec
        self.stop_status = stop_status
        self.given_record = record
        self.record = record
        self.diagnoser = Diagnoser(spec=spec)
        self.stopped_by: Finding | None = None

    @property
    def findings(self) -> list[Finding]:
        return self.diagnoser.findings

    def diagnosis(self, run_id: str | None = None) -> Diagnosis:
        return self.diagnoser.diagnosis(run_id)

    # -- hook points -------------------------------------------------------------------------
    def on_train_begin(self, trainer) -> None:
        self.record = self.given_record if self.given_record is not None else _monitor_record(trainer)
        self.diagnoser = Diagnoser(spec=self.spec)
        self.stopped_by = None

    def on_after_update(self, trainer) -> None:
        if trainer.step % self.every_n_steps == 0:
            self._look(trainer, final=False)

    def on_train_end(self, trainer) -> None:
        self._look(trainer, final=True)

    def _look(self, trainer, final: bool) -> None:
        record = self.record if self.record is not None else _monitor_record(trainer)
        if record is None:
            return
        self.record = record
        for finding in self.diagnoser.update(record, final=final):
            if self.on_finding is not None:
                self.on_finding(finding)
            if finding.verdict in self.stop_on and self.stopped_by is None and not final:
                self.stopped_by = finding
                trainer.stop(f"diagnosis: {finding.verdict}: {finding.summary}", self.stop_status)


def _monitor_record(trainer):
    """The record of the `StatisticsMonitor` registered on the trainer (None when monitoring is off)."""
    from workbench.monitor import StatisticsMonitor

    for hook in trainer.hooks:
        if isinstance(hook, StatisticsMonitor):
            return hook.record
    return None
