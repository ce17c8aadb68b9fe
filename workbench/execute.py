"""One run from start to end: build, (track,) train, and report an outcome.

The lifecycle lives here rather than in the trainer so that tracking can wrap
it: the MLflow run is created before training and closed with the true status
after it, whether it finished, failed, diverged or was interrupted.
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbench.errors import UserError
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
    spec: Spec | None = None,
    *,
    resume_run_id: str | None = None,
    track: bool = True,
    tracking_uri: str | None = None,
    progress: bool = False,
    spec_path: str | None = None,
    hooks: tuple[Hook, ...] = (),
    tracker_options: dict[str, Any] | None = None,
    checkpoint_dir: str | None = None,
) -> Outcome:
    """Train the run a spec describes; exceptions and interrupts propagate after the run is closed truthfully.

    Checkpoints are registered here, where the run is executed: a tracked run writes them to a
    temporary folder that the tracker uploads as `checkpoint/` (unless `tracker_options` says
    `checkpoint=False`); any run, tracked or not, writes them to `checkpoint_dir` when given
    (`workbench.checkpoint.restore(run, checkpoint_dir)` continues from there).

    With `resume_run_id` (and no spec) the tracked run of that id continues from its last checkpoint:
    its spec.toml is the spec, the same MLflow run is re-opened and closed with the new outcome.
    """
    if resume_run_id is None:
        if spec is None:
            raise ValueError("execute() needs a spec or a resume_run_id")
        return _execute(spec, track=track, tracking_uri=tracking_uri, progress=progress, spec_path=spec_path,
                        hooks=hooks, tracker_options=tracker_options, checkpoint_dir=checkpoint_dir)
    if spec is not None:
        raise UserError("--resume continues a run with the spec it was started with: give no SPEC and no --set")
    if not track:
        raise UserError("--resume continues a tracked run: it cannot be combined with --no-track")
    from workbench.tracking.resume import fetch_resume

    with tempfile.TemporaryDirectory(prefix="workbench-resume-") as tmp:
        spec, checkpoint_dir = fetch_resume(resume_run_id, tracking_uri, tmp)
        return _execute(spec, track=True, tracking_uri=tracking_uri, progress=progress, spec_path=None,
                        hooks=hooks, tracker_options=tracker_options, resume=(resume_run_id, checkpoint_dir))


def _execute(spec: Spec, *, track, tracking_uri, progress, spec_path, hooks, tracker_options,
             resume: tuple[str, Any] | None = None, checkpoint_dir: str | None = None) -> Outcome:
    extra = list(hooks)
    if progress:
        from workbench.progress import ProgressPrinter

        extra.append(ProgressPrinter())
    run = build_run(spec, hooks=tuple(extra))
    if resume is not None:
        from workbench.checkpoint import restore

        restore(run, resume[1])
    tracker = None
    options = dict(tracker_options or {})
    folder = Path(checkpoint_dir) if checkpoint_dir is not None else None
    if folder is None and track and options.get("checkpoint", True):
        folder = Path(tempfile.mkdtemp(prefix="workbench-checkpoint-"))  # uploaded, then removed, by the tracker
    if folder is not None:
        from workbench.checkpoint import Checkpoint

        folder.mkdir(parents=True, exist_ok=True)
        run.trainer.register(Checkpoint(run, folder))
    if track:
        from workbench.tracking import make_tracker

        tracker = make_tracker(spec, tracking_uri=tracking_uri, spec_path=spec_path, resume=resume is not None,
                               **options)
        tracker.checkpoint_dir = folder if checkpoint_dir is None else None  # a user's folder stays theirs
        if resume is not None:
            tracker.resume(run, resume[0])
        else:
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
