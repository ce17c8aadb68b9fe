"""What the MLflow UI shows about a run before anyone adds a column: its name and its description.

    run_name = single_run_name("digits-mlp", run_id)          # "digits-mlp 3f9a2c"
    run_name = trial_run_name({"model.init": "he_normal", "optimizer.name": "adam", "optimizer.lr": 0.0016})
                                                               # "he_normal adam lr=1.6e-3"
    note = run_description(spec_name=..., model=..., dataset=..., status=..., diagnosis=..., metrics=...)
    note = parent_description(report, experiment_id)          # the study's table, conclusion, best trial

Descriptions are markdown in the `mlflow.note.content` tag (the run page's "Description"; on an
experiment, the experiment page's). Everything here is plain text in, text out: no MLflow import.
"""

from __future__ import annotations

import math
from pathlib import Path

TAG_NOTE = "mlflow.note.content"
SHORT_ID = 6  # characters of the run id in a single run's name
MAX_NOTE_CHARS = 7900  # MLflow accepts 8000 characters in a run's tag value
MAX_EXPERIMENT_NOTE_CHARS = 19_900  # and 20000 in an experiment's
SHOWN_METRICS = ("test/accuracy", "test/r2", "test/loss", "val/accuracy", "val/r2", "val/loss", "train/loss")


def single_run_name(spec_name: str, run_id: str) -> str:
    """A single run: the spec's name and the first characters of its run id."""
    return f"{spec_name} {run_id[:SHORT_ID]}"


def trial_run_name(params: dict, arm: str = "") -> str:
    """A trial: the values it searched, categorical ones bare, numbers as key=value with the key's last part;
    a comparison's trial starts with its arm's values (the label "he_normal+adam" reads "he_normal adam")."""
    parts = [part for part in str(arm or "").split("+") if part]
    for key, value in params.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            parts.append(str(value))
        else:
            parts.append(f"{str(key).rsplit('.', 1)[-1]}={short_number(value)}")
    return " ".join(parts) or "trial"


def short_number(value: float) -> str:
    """Two significant digits, exponents without padding: 0.0016 -> 1.6e-3, 0.25 -> 0.25, 64 -> 64."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    value = float(value)
    if not math.isfinite(value) or value == 0:
        return f"{value:g}"
    if 1e-2 <= abs(value) < 1e4:
        return f"{value:.2g}"
    mantissa, exponent = f"{value:.1e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


def metric_value(value) -> str:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return str(value)
    return f"{value:.4g}" if math.isfinite(value) else str(value)


def run_description(*, spec_name: str, model: str | None, dataset: str | None, status: str | None = None,
                    reason: str | None = None, diagnosis: dict | None = None, metrics: dict | None = None,
                    parent: str | None = None) -> str:
    """A training run's note: what was trained on what, the verdict and why, the final metrics."""
    lines = [f"**{spec_name}**" + (f" ({parent})" if parent else "")]
    if model:
        lines.append(f"- model: {model}")
    if dataset:
        lines.append(f"- data: {dataset}")
    if status:
        lines.append(f"- status: {status}" + (f" ({reason})" if reason else ""))
    if diagnosis is not None:
        verdict = diagnosis.get("verdict", "unknown")
        findings = diagnosis.get("findings") or []
        why = findings[0].get("summary") if findings else "no finding in the gradient statistics"
        lines.append("")
        lines.append(f"**Verdict: {verdict}**: {one_line(why)}")
        others = [f.get("verdict") for f in findings[1:]]
        if others:
            lines.append(f"(also: {', '.join(map(str, others))}; see diagnosis.json)")
    shown = {k: metrics[k] for k in SHOWN_METRICS if metrics and k in metrics}
    if shown:
        lines += ["", "| metric | final value |", "|---|---|"]
        lines += [f"| {key} | {metric_value(value)} |" for key, value in shown.items()]
    return clip("\n".join(lines))


def parent_description(summary_markdown: str, *, best_run_id: str | None, best_number: int | None,
                       best_name: str | None, experiment_id: str | None) -> str:
    """A study's parent run: the report's summary (comparison table, conclusion), the best trial linked."""
    lines = []
    if best_run_id:
        link = f"#/experiments/{experiment_id}/runs/{best_run_id}" if experiment_id else None
        label = f"trial {best_number}" + (f" ({best_name})" if best_name else "")
        lines.append(f"**Best trial:** [{label}]({link})" if link else f"**Best trial:** {label} (run {best_run_id})")
        lines.append("")
    lines.append(summary_markdown.strip())
    return clip("\n".join(lines))


def study_parent_note(report, experiment_id: str | None) -> str:
    """A study's parent run: its report's summary (`report.markdown`), the best trial (`report.best`) linked."""
    best = getattr(report, "best", None)
    attrs = dict(getattr(best, "user_attrs", None) or {}) if best is not None else {}
    return parent_description(getattr(report, "markdown", "") or "", best_run_id=attrs.get("mlflow_run_id"),
                              best_number=getattr(best, "number", None),
                              best_name=trial_run_name(dict(best.params), attrs.get("arm", "")) if best else None,
                              experiment_id=experiment_id)


def study_description(script: str | Path | None, fallback: str) -> str:
    """A study's experiment: the docstring of the script that defines it, else `fallback`."""
    import ast

    if script and str(script).endswith(".py"):
        try:
            docstring = ast.get_docstring(ast.parse(Path(script).read_text(encoding="utf-8")))
        except (OSError, SyntaxError, ValueError):
            docstring = None
        if docstring:
            return clip(docstring.strip(), MAX_EXPERIMENT_NOTE_CHARS)
    return clip(fallback, MAX_EXPERIMENT_NOTE_CHARS)


def experiment_description(spec_path: str | Path | None, fallback: str) -> str:
    """The leading comment block of a spec file (its purpose, in its author's words), else `fallback`."""
    if spec_path:
        try:
            text = Path(spec_path).read_text(encoding="utf-8")
        except OSError:
            text = ""
        comment = []
        for line in text.splitlines():
            stripped = line.strip()
            if not stripped.startswith("#"):
                break
            comment.append(stripped.lstrip("#").strip())
        note = " ".join(line for line in comment if line).strip()
        if note:
            return clip(note)
    return clip(fallback)


def one_line(text) -> str:
    return " ".join(str(text or "").split())


def clip(text: str, limit: int = MAX_NOTE_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 4] + "\n..."
