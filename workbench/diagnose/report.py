"""The human report: the verdict line first, then each finding with its numbers and what to try."""

from __future__ import annotations

import math
import textwrap

from workbench.diagnose.advice import fmt
from workbench.diagnose.advice import layer_span as span
from workbench.diagnose.findings import Diagnosis, Finding

WIDTH = 100
HIDDEN_EVIDENCE = ("spans", "profile", "act_std", "update_ratio")  # shown compactly or not at all


def format_report(diagnosis: Diagnosis) -> str:
    run = f" (run {diagnosis.run_id})" if diagnosis.run_id else ""
    lines = [f"verdict: {diagnosis.verdict}{run}"]
    if not diagnosis.findings:
        lines.append(f"no finding in {diagnosis.rows} recorded steps (up to step {diagnosis.last_step}) "
                     f"over {len(diagnosis.layers)} layers")
        return "\n".join(lines)
    others = ", ".join(f.verdict for f in diagnosis.findings[1:])
    if others:
        lines.append(f"also: {others}")
    for i, finding in enumerate(diagnosis.findings, 1):
        lines.append("")
        lines.extend(format_finding(i, finding))
    return "\n".join(lines)


def format_finding(i: int, f: Finding) -> list[str]:
    where = span(f.layers) if f.layers else "the whole model"
    when = f"step {f.first_step}" + (f"-{f.last_step}" if f.last_step != f.first_step else "")
    lines = [f"{i}. {f.verdict} [{f.severity}] at {where}, {when} (epoch {f.first_epoch})"]
    lines += _wrap(f.summary, "   ")
    numbers = evidence_line(f.evidence)
    if numbers:
        lines += _wrap("evidence: " + numbers, "   ")
    for name, layer in (f.evidence.get("layers") or {}).items():  # through-time findings: the heat map per layer
        if isinstance(layer, dict) and layer.get("heat_map"):
            lines.append(f"   gradient through time of {name}, log10 ||dL/dh_t|| / ||dL/dh_T|| from -6 ' ' to 0 '@' "
                         "('!' above 1), t = 1 on the left:")
            lines += [f"   {row}" for row in layer["heat_map"]]
    for item in f.advice:
        lines += _wrap("try: " + item, "   ", "        ")
    return lines


def evidence_line(evidence: dict) -> str:
    parts = []
    for key, value in evidence.items():
        if key in HIDDEN_EVIDENCE or value is None or (isinstance(value, float) and not math.isfinite(value)):
            continue
        if key == "layers" and isinstance(value, dict):  # per-layer evidence: its heat map is drawn below
            value = {k: {n: v for n, v in d.items() if n != "heat_map"} if isinstance(d, dict) else d
                     for k, d in value.items()}
        parts.append(f"{key}={_value(value)}")
    profile = evidence.get("profile") or evidence.get("act_std")
    if profile:
        name = "profile" if "profile" in evidence else "act_std"
        parts.append(f"{name}=[" + " ".join(fmt(v) if v is not None else "nan" for v in profile.values()) + "]")
    return ", ".join(parts)


def _value(value) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return fmt(value)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    return str(value)


def _wrap(text: str, indent: str, subsequent: str | None = None) -> list[str]:
    return textwrap.wrap(text, WIDTH, initial_indent=indent, subsequent_indent=subsequent or indent,
                         break_on_hyphens=False) or [indent]
