"""One run from start to end: build, (track,) train, and report an outcome.

The lifecycle lives here rather than in the trainer so that tracking can wrap
it: the MLflow run is created before training and closed with the true status
after it, whether it finished, failed, diverged or was interrupted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from workbench.runner import Run, build_run
from workbench.spec import Spec
from workbench.training import FAILED, FINISHED, KILLED, Hook


@dataclass
class Outcome:
    """What `workbench run` reports: the contract's JSON object."""

    run_id: str | None
    experiment: str
    status: str
    reason: str | None
    metrics: dict[str, float] = field(default_factory=dict)
    verdict: str | None = None
    run: Run | None = field(default=None, repr=False)

    @property
    def exit_code(self) -> int:
        return 0 if self.status == FINISHED else 130 if self.status == KILLED else 1

    def to_json(self) -> dict[str, Any]:
        metrics = {k: (v if math.isfinite(v) else None) for k, v in self.metrics.items() if k != "epoch"}
        return {"run_id": self.run_id, "experiment": self.experiment, "status": self.status,
                "reason": self.reason, "metrics": metrics, "verdict": self.verdict}


def execute(
    spec: Spec,
    *,
    track: bool = True,
    tracking_uri: str | None = None,
    progress: bool = False,
    spec_path: str | None = None,
    hooks: tuple[Hook, ...] = (),
    tracker_options: dict[str, Any] | None = None,
) -> Outcome:
    """Train the run a spec describes; exceptions and interrupts propagate after the run is closed truthfully."""
    extra = list(hooks)
    if progress:
        from workbench.progress import ProgressPrinter

        extra.append(ProgressPrinter())
    run = build_run(spec, hooks=tuple(extra))
    tracker = None
    if track:
        from workbench.tracking import RunTracker

        tracker = RunTracker(spec, tracking_uri=tracking_uri, spec_path=spec_path, **(tracker_options or {}))
        tracker.start(run)
    try:
        result = run.trainer.fit()
    except KeyboardInterrupt:
        if tracker:
            tracker.finish(run, None, KILLED, run.trainer.stop_reason or "interrupted")
        raise
    except Exception as exc:
        if tracker:
            tracker.finish(run, None, FAILED, f"{type(exc).__name__}: {exc}")
        raise
    verdict = tracker.finish(run, result, result.status, result.reason) if tracker else None
    return Outcome(tracker.run_id if tracker else None, spec.name, result.status, result.reason,
                   result.metrics, verdict, run)
