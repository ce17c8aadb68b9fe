"""What a diagnosis says: findings (verdict, severity, where, when, evidence, advice) and their order.

The headline verdict of a run is its most severe finding, or "healthy" when there is none.
Ties in severity go by `VERDICTS` order, which puts causes before their symptoms: a bad
initialization explains the vanishing gradients and dead units it produces from step 0, and
dead units are the visible damage of a learning rate that is too high.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

HEALTHY = "healthy"

# verdict -> severity, in tie-break order (causes first).
VERDICTS: dict[str, str] = {
    "divergence": "critical",
    "exploding_gradients": "error",
    "exploding_through_time": "error",
    "bad_initialization": "error",
    "dead_units": "error",
    "lr_too_high": "error",
    "vanishing_gradients": "error",
    "vanishing_through_time": "error",
    "saturated_units": "warning",
    "lr_too_low": "warning",
}
SEVERITIES = ("critical", "error", "warning")


def rank(verdict: str) -> tuple[int, int]:
    """Sort key: most severe first, then the `VERDICTS` order."""
    order = list(VERDICTS)
    return SEVERITIES.index(VERDICTS[verdict]), order.index(verdict)


@dataclass
class Finding:
    """One verdict that holds: where (layers), when (first and last step), the numbers, what to try."""

    verdict: str
    summary: str
    layers: list[str]
    first_step: int
    first_epoch: int
    last_step: int
    evidence: dict[str, Any] = field(default_factory=dict)
    advice: list[str] = field(default_factory=list)

    @property
    def severity(self) -> str:
        return VERDICTS[self.verdict]

    def to_json(self) -> dict[str, Any]:
        return plain({
            "verdict": self.verdict, "severity": self.severity, "summary": self.summary,
            "layers": list(self.layers), "first_step": self.first_step, "first_epoch": self.first_epoch,
            "last_step": self.last_step, "evidence": self.evidence, "advice": list(self.advice),
        })


@dataclass
class Diagnosis:
    """The findings on one statistics record, most severe first."""

    findings: list[Finding]
    run_id: str | None = None
    rows: int = 0
    last_step: int = -1
    layers: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.findings = sorted(self.findings, key=lambda f: rank(f.verdict))

    @property
    def verdict(self) -> str:
        return self.findings[0].verdict if self.findings else HEALTHY

    @property
    def verdicts(self) -> list[str]:
        return [f.verdict for f in self.findings]

    def finding(self, verdict: str) -> Finding | None:
        return next((f for f in self.findings if f.verdict == verdict), None)

    def to_json(self) -> dict[str, Any]:
        """The `--json` object and the `diagnosis.json` artifact (finite numbers only: NaN is null)."""
        return {
            "verdict": self.verdict,
            "run_id": self.run_id,
            "findings": [f.to_json() for f in self.findings],
            "record": plain({"rows": self.rows, "last_step": self.last_step, "layers": list(self.layers)}),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Diagnosis":
        """The Diagnosis of a `to_json` object (a `diagnosis.json` artifact), e.g. to draw its figure elsewhere."""
        record = data.get("record") or {}
        findings = [Finding(verdict=f["verdict"], summary=f.get("summary", ""), layers=list(f.get("layers") or []),
                            first_step=int(f["first_step"]), first_epoch=int(f.get("first_epoch", 0)),
                            last_step=int(f["last_step"]), evidence=dict(f.get("evidence") or {}),
                            advice=list(f.get("advice") or []))
                    for f in data.get("findings") or []]
        return cls(findings, run_id=data.get("run_id"), rows=int(record.get("rows") or 0),
                   last_step=int(record.get("last_step", -1)), layers=list(record.get("layers") or []))

    def dumps(self) -> str:
        return json.dumps(self.to_json(), allow_nan=False)

    def report(self) -> str:
        from workbench.diagnose.report import format_report

        return format_report(self)


def plain(value: Any) -> Any:
    """JSON-safe: numpy scalars and arrays to Python, NaN and infinities to None, 4 significant digits."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if hasattr(value, "tolist"):  # numpy scalar or array
        return plain(value.tolist())
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, float):
        return float(f"{value:.4g}") if math.isfinite(value) else None
    return str(value)
