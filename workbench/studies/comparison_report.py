"""A comparison's report: arms ranked on their confirmation runs, with how sure the ranking is.

Per arm: the confirmed score (mean and 95% Student t interval over the fresh seeds), whether it is
the best, tied with it or worse (Welch t-test against the best, Holm-adjusted over the comparisons),
the tuned values of its best trial, its tuning trials completed / pruned / failed out of its budget,
the best tuning value (best of N on the validation split: optimistic, shown for the gap, never
used to rank), the median gradient ratio first/last layer and the diagnosis verdicts of its
confirmed runs. Arms whose tuning trials all failed are listed as "did not train" with the reasons
and verdicts; arms whose confirmation diverged on some seeds as "unstable"; unfinished arms as such.

Files (logged under `report/` on the parent run): summary.md, arms.csv, trials.csv (tuning),
confirmations.csv, summary.json, confirmed_scores.png (score and interval by arm) and
lr_sensitivity.png (each arm's tuning score against its tuned learning rate: how wide the range of
good learning rates is).
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from workbench.studies.report import short_key
from workbench.studies.space import label
from workbench.studies.statistics import ALPHA, VersusBest, compare_with_best, mean_interval

CONFIRMED, UNSTABLE, CONFIRMING, TUNING, DID_NOT_TRAIN = "confirmed", "unstable", "confirming", "tuning", "did not train"


@dataclass
class ArmRow:
    arm: object  # comparison.Arm
    budget: int
    confirm_seeds: int
    trials: list = field(default_factory=list)  # tuning trials, WAITING ones left out
    complete: int = 0
    pruned: int = 0
    failed: int = 0
    running: int = 0
    lost: int = 0  # lost with their worker and retried (not counted against the budget)
    best: object | None = None  # best completed tuning trial
    confirmations: list = field(default_factory=list)  # the effective confirmation trial per fresh seed
    status: str = TUNING
    tested: VersusBest | None = None

    @property
    def used(self) -> int:
        return self.complete + self.pruned + self.failed + self.running

    @property
    def scores(self) -> list[float]:
        return [t.value for t in self.confirmations if t.state.name == "COMPLETE"]

    @property
    def failed_confirmations(self) -> list:
        return [t for t in self.confirmations if t.state.name == "FAIL"]

    @property
    def gradient_ratio(self) -> float:
        ratios = sorted(t.user_attrs["gradient_ratio"] for t in self.confirmations
                        if t.state.is_finished() and t.user_attrs.get("gradient_ratio") is not None)
        if not ratios:
            return math.nan
        mid = len(ratios) // 2
        return ratios[mid] if len(ratios) % 2 else (ratios[mid - 1] + ratios[mid]) / 2

    @property
    def verdicts(self) -> Counter:
        return Counter(t.user_attrs.get("verdict") or "no verdict" for t in self.confirmations
                       if t.state.is_finished())

    @property
    def failed_tuning(self) -> list:
        """The tuning trials that failed (diverged, stopped by the live diagnosis, raised), lost ones left out."""
        return [t for t in self.trials if t.state.name == "FAIL" and not _retried(t, self.trials)]

    @property
    def failure_reasons(self) -> Counter:
        """The failed tuning trials' reasons, counted alike when they differ only in their numbers."""
        return Counter(_generic(t.user_attrs.get("failure_reason") or "failed") for t in self.failed_tuning)

    @property
    def tuning_verdicts(self) -> Counter:
        return Counter(v for t in self.trials for v in (t.user_attrs.get("verdicts") or []) if v)


@dataclass
class ComparisonReport:
    folder: Path
    metric: str
    score: str
    direction: str
    rows: list[ArmRow]
    counts: dict[str, int]
    epochs_total: int
    comparison: str  # the one-paragraph conclusion (also the parent run's workbench.comparison tag)
    markdown: str = ""
    plots: list[str] = field(default_factory=list)
    best = None  # no single best *trial*: the parent run gets the best arm's confirmed score instead
    extra_metrics: dict[str, float] = field(default_factory=dict)
    extra_tags: dict[str, str] = field(default_factory=dict)

    @property
    def best_row(self) -> ArmRow | None:
        return next((r for r in self.rows if r.tested is not None and r.tested.best), None)


def build_comparison_report(plan, comparison, settings, folder: Path) -> ComparisonReport:
    folder.mkdir(parents=True, exist_ok=True)
    rows = arm_rows(plan, comparison, settings)
    rank(rows, comparison.score_direction == "maximize")
    tuning = [t for r in rows for t in r.trials]
    confirm_trials = [t for t in plan.confirm_study.get_trials(deepcopy=False) if t.state.name != "WAITING"]
    counts = {s: sum(t.state.name == s for t in tuning) for s in ("COMPLETE", "PRUNED", "FAIL", "RUNNING")}
    epochs = sum(int(t.user_attrs.get("epochs_run") or 0) for t in tuning + confirm_trials)
    report = ComparisonReport(folder, comparison.metric, comparison.score, comparison.score_direction, rows, counts,
                              epochs, conclusion(rows, comparison))
    report.extra_metrics, report.extra_tags = parent_summary(report)
    report.markdown = markdown(report, comparison, settings)
    (folder / "summary.md").write_text(report.markdown, encoding="utf-8")
    write_files(report, comparison, confirm_trials, folder)
    if settings.plots:
        report.plots = save_figures(report, comparison, folder)
    return report


def arm_rows(plan, comparison, settings) -> list[ArmRow]:
    from workbench.studies.comparison import best_trial

    maximize = comparison.direction == "maximize"
    confirm_trials = plan.confirm_study.get_trials(deepcopy=False)
    states = plan.states()
    rows = []
    for arm in plan.arms:
        stored = plan.arm_studies[arm.label].get_trials(deepcopy=False)
        row = ArmRow(arm, settings.n_trials, settings.confirm_seeds,
                     trials=[t for t in stored if t.state.name != "WAITING"])
        for t in row.trials:
            if _retried(t, stored):
                row.lost += 1
                continue
            row.complete += t.state.name == "COMPLETE"
            row.pruned += t.state.name == "PRUNED"
            row.failed += t.state.name == "FAIL"
            row.running += t.state.name == "RUNNING"
        row.best = best_trial(row.trials, maximize)
        tuned = plan.tuned(states[arm.label])
        if row.best is not None:
            row.confirmations = effective_confirmations(confirm_trials, arm.label, row.best.number,
                                                        settings.base.seed, settings.confirm_seeds)
        finished = [t for t in row.confirmations if t.state.is_finished()]
        if not tuned:
            row.status = TUNING
        elif row.best is None:
            row.status = DID_NOT_TRAIN
        elif len(finished) < settings.confirm_seeds:
            row.status = CONFIRMING
        else:
            row.status = UNSTABLE if any(t.state.name == "FAIL" for t in finished) else CONFIRMED
        rows.append(row)
    return rows


def effective_confirmations(confirm_trials, arm: str, best: int, base_seed: int, n: int) -> list:
    """Per fresh seed of (arm, best trial), the stored trial that counts: the retry of a lost one."""
    from workbench.studies.comparison import confirmation_seed

    out = []
    for j in range(n):
        seed = confirmation_seed(base_seed, j)
        same = [t for t in confirm_trials if t.user_attrs.get("arm") == arm and t.user_attrs.get("best_trial") == best
                and t.user_attrs.get("seed") == seed and not _retried(t, confirm_trials)]
        if same:
            out.append(max(same, key=lambda t: t.number))
    return out


def rank(rows: list[ArmRow], maximize: bool) -> None:
    """Confirmed arms by the statistics (best, tied, worse), then unstable, unfinished, did-not-train ones."""
    confirmed = {r.arm.label: r for r in rows if r.status == CONFIRMED}
    tested = compare_with_best({label: r.scores for label, r in confirmed.items()}, maximize=maximize)
    for t in tested:
        confirmed[t.name].tested = t
    order = {t.name: i for i, t in enumerate(tested)}
    sign = -1 if maximize else 1
    group = {CONFIRMED: 0, UNSTABLE: 1, CONFIRMING: 2, TUNING: 3, DID_NOT_TRAIN: 4}

    def key(r: ArmRow):
        scores = r.scores
        within = order.get(r.arm.label, sign * (sum(scores) / len(scores)) if scores else math.inf)
        return group[r.status], within, r.arm.index

    rows.sort(key=key)


def conclusion(rows: list[ArmRow], comparison) -> str:
    best = next((r for r in rows if r.tested is not None and r.tested.best), None)
    if best is None:
        return "No arm is confirmed yet: nothing to rank (run the same command again to finish the comparison)."
    interval = best.tested.interval
    ties = [r.arm.label for r in rows if r.tested is not None and r.tested.verdict == "tied"]
    untested = [r.arm.label for r in rows if r.tested is not None and r.tested.verdict == "untested"]
    text = (f"Best: {best.arm.label}, {comparison.score} {_ci(interval)} over {interval.n} fresh seed(s). ")
    if untested:
        text += (f"With one confirmation seed there is no interval: {len(untested)} arm(s) cannot be told apart "
                 "from the best (use --confirm-seeds 3 or more). ")
    elif ties:
        text += (f"Tied with it (not significantly different, Welch t-tests Holm-corrected over "
                 f"{sum(r.tested is not None and not r.tested.best for r in rows)} comparisons, alpha {ALPHA}): "
                 f"{', '.join(ties)}. ")
    elif any(r.tested is not None and not r.tested.best for r in rows):
        text += "Every other confirmed arm is significantly worse (Welch t-tests, Holm-corrected, alpha 0.05). "
    else:
        text += "No other arm is confirmed. "
    failed = [r.arm.label for r in rows if r.status == DID_NOT_TRAIN]
    if failed:
        text += f"Did not train at any setting tried: {', '.join(failed)}. "
    unstable = [r.arm.label for r in rows if r.status == UNSTABLE]
    if unstable:
        text += f"Diverged on some fresh seeds: {', '.join(unstable)}. "
    return text.strip()


# -- text ---------------------------------------------------------------------------------------------
def markdown(report: ComparisonReport, comparison, settings) -> str:
    rows = report.rows
    n_arms, n, c = len(rows), settings.n_trials, settings.confirm_seeds
    keys = " x ".join(comparison.compare)
    tuned = ", ".join(f"{k} ({d.describe()})" for k, d in comparison.space.items())
    lines = [f"# Comparison {settings.study_name}", "",
             f"Protocol: {n_arms} arms ({keys}). Each arm tuned {tuned} with the same budget: {n} trial(s) x "
             f"{settings.seeds} seed(s) x {settings.base.training.epochs} epochs, sampler {_name(comparison.sampler)}, "
             f"pruner {_name(comparison.pruner)} within the arm, objective {report.metric}. Its best setting was "
             f"trained again on {c} fresh seed(s) no tuning trial used and scored on {report.score} (the test "
             f"split, which tuning never read). Ranked on those runs: mean [95% t interval]; 'tied' = not "
             f"significantly different from the best (Welch t-test, Holm-corrected, alpha {ALPHA}). "
             f"Tuning trials: {report.counts['COMPLETE']} complete, {report.counts['PRUNED']} pruned, "
             f"{report.counts['FAIL']} failed; {report.epochs_total} epochs trained.", ""]
    lines += table_lines(report, comparison)
    lines += ["", report.comparison, ""]
    notes = arm_notes(report, comparison, settings)
    if notes:
        lines += notes + [""]
    lines.append("Columns: 'tuning best' is the best of the arm's tuning trials on the validation split (optimistic: "
                 "the best of N); 'grad ratio' is the median over training steps of ||dL/dW|| of the first layer "
                 "over the last layer's, then over the confirmed runs (<< 1: vanishing, >> 1: exploding); "
                 "'verdicts' are workbench diagnose's on the confirmed runs.")
    return "\n".join(lines) + "\n"


def table_lines(report: ComparisonReport, comparison) -> list[str]:
    compare_keys, tuned_keys = list(comparison.compare), list(comparison.space)
    shown = [*compare_keys, *tuned_keys]
    header = ["rank", *(short_key(k, shown) for k in compare_keys),
              f"{report.score} mean [95% CI]", "vs best (Holm p)", *(short_key(k, shown) for k in tuned_keys),
              "tuning c/p/f of budget", f"tuning best {report.metric}", "grad ratio first/last", "verdicts"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for i, r in enumerate(report.rows, 1):
        params = [_value(r.best.params.get(k)) if r.best else "-" for k in tuned_keys]
        cells = [str(i) if r.status == CONFIRMED else "-", *(label(r.arm.values[k]) for k in compare_keys),
                 score_cell(r), versus_cell(r), *params, f"{r.complete}/{r.pruned}/{r.failed} of {r.budget}",
                 _fmt(r.best.value) if r.best else "-", _fmt(r.gradient_ratio, 3), verdict_cell(r)]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def score_cell(r: ArmRow) -> str:
    if r.status == DID_NOT_TRAIN:
        return "did not train"
    if r.status == TUNING:
        return f"tuning ({r.used} of {r.budget})"
    scores = r.scores
    if r.status == CONFIRMING:
        return f"confirming ({len(scores)} of {r.confirm_seeds} seeds)"
    if not scores:
        return f"diverged on all {r.confirm_seeds} seeds"
    cell = _ci(mean_interval(scores))
    if r.status == UNSTABLE:
        cell += f", diverged on {len(r.failed_confirmations)} of {r.confirm_seeds} seeds"
    return cell


def versus_cell(r: ArmRow) -> str:
    if r.tested is None:
        return "-"
    if r.tested.verdict in ("best", "untested"):
        return r.tested.verdict
    return f"{r.tested.verdict} ({_p(r.tested.p_holm)})"


def verdict_cell(r: ArmRow) -> str:
    counts = r.verdicts if r.confirmations else r.tuning_verdicts
    text = ", ".join(f"{v} x{k}" for v, k in counts.most_common())
    if r.status == DID_NOT_TRAIN:
        text = "tuning: " + (text or "no verdict")
    return text or "-"


def arm_notes(report: ComparisonReport, comparison, settings) -> list[str]:
    """Why arms did not train or were unstable, in words, with the learning rates tried."""
    notes = []
    for r in report.rows:
        if r.status == DID_NOT_TRAIN:
            verdicts = ", ".join(f"{v} x{k}" for v, k in r.tuning_verdicts.most_common())
            notes.append(f"- {r.arm.label} did not train{_range_tried(r.trials, comparison, ' at any {key} tried ({span})')}: "
                         f"{r.failed} of {r.budget} tuning trials failed, {r.pruned} were pruned. Reasons: "
                         f"{_reasons(r.failed_tuning) or 'none recorded'}. Verdicts: {verdicts or 'none'}.")
        elif r.failed_tuning:
            notes.append(f"- {r.arm.label}: {r.failed} of {r.budget} tuning trials failed"
                         f"{_range_tried(r.failed_tuning, comparison, ' (at {key} {span})')}: {_reasons(r.failed_tuning)}.")
        if r.status == UNSTABLE:
            notes.append(f"- {r.arm.label} diverged on {len(r.failed_confirmations)} of {r.confirm_seeds} fresh "
                         f"seeds at its tuned setting: {_reasons(r.failed_confirmations)}.")
        elif r.status in (TUNING, CONFIRMING):
            notes.append(f"- {r.arm.label} is not finished ({score_cell(r)}): run the same command again.")
        if r.lost:
            notes.append(f"- {r.arm.label}: {r.lost} tuning trial(s) lost with their worker were retried "
                         "(the retries count in the budget).")
    return notes


def _range_tried(trials, comparison, phrase: str) -> str:
    """`phrase` with {key} (short) and {span} ("0.001 to 0.1"): the first numeric tuned key's range over `trials`."""
    for key in comparison.space:
        values = [t.params[key] for t in trials if isinstance(t.params.get(key), (int, float))]
        if values:
            low, high = min(values), max(values)
            span = _value(low) if low == high else f"{_value(low)} to {_value(high)}"
            return phrase.format(key=short_key(key, list(comparison.space)), span=span)
    return ""


def _reasons(trials, most: int = 3) -> str:
    """The trials' failure reasons, alike ones (differing only in their numbers) once with their count."""
    groups: dict[str, list[str]] = {}
    for t in trials:
        reason = t.user_attrs.get("failure_reason") or "failed"
        groups.setdefault(_generic(reason), []).append(reason)
    ranked = sorted(groups.values(), key=len, reverse=True)
    return "; ".join(f"'{alike[0]}'" + (f" ({len(alike)} alike)" if len(alike) > 1 else "") for alike in ranked[:most])


# -- files ------------------------------------------------------------------------------------------------
def parent_summary(report: ComparisonReport) -> tuple[dict[str, float], dict[str, str]]:
    metrics, tags = {}, {}
    best = report.best_row
    for r in report.rows:
        scores = r.scores
        if r.status in (CONFIRMED, UNSTABLE) and scores:
            interval = mean_interval(scores)
            key = _metric_key(r.arm.label)
            metrics[f"confirmed/{key}/mean"] = interval.mean
            if not math.isnan(interval.low):
                metrics[f"confirmed/{key}/ci_low"], metrics[f"confirmed/{key}/ci_high"] = interval.low, interval.high
    if best is not None:
        metrics["best_value"] = best.tested.interval.mean
        metrics[f"best/{report.score}"] = best.tested.interval.mean
        tags["workbench.best_arm"] = best.arm.label
        tags["workbench.tied_arms"] = ",".join(r.arm.label for r in report.rows
                                               if r.tested is not None and r.tested.verdict == "tied")[:5000]
    failed = [r.arm.label for r in report.rows if r.status == DID_NOT_TRAIN]
    if failed:
        tags["workbench.did_not_train"] = ",".join(failed)[:5000]
    return metrics, tags


def write_files(report: ComparisonReport, comparison, confirm_trials, folder: Path) -> None:
    compare_keys, tuned_keys = list(comparison.compare), list(comparison.space)
    with open(folder / "arms.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["arm", *compare_keys, "status", "verdict_vs_best", "mean", "ci_low", "ci_high", "p_holm",
                    "scores", *tuned_keys, "tuning_complete", "tuning_pruned", "tuning_failed", "budget",
                    "tuning_best_value", "best_trial", "gradient_ratio", "verdicts"])
        for r in report.rows:
            interval = mean_interval(r.scores)
            w.writerow([r.arm.label, *(r.arm.values[k] for k in compare_keys), r.status,
                        r.tested.verdict if r.tested else "", interval.mean, interval.low, interval.high,
                        r.tested.p_holm if r.tested else "", " ".join(map(str, r.scores)),
                        *(r.best.params.get(k) if r.best else "" for k in tuned_keys), r.complete, r.pruned,
                        r.failed, r.budget, r.best.value if r.best else "", r.best.number if r.best else "",
                        r.gradient_ratio, " ".join(f"{v}:{k}" for v, k in r.verdicts.items())])
    with open(folder / "trials.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["arm", "number", "state", *tuned_keys, "value", "values", "verdicts", "epochs_run",
                    "mlflow_run_id", "reason"])
        for r in report.rows:
            for t in r.trials:
                a = t.user_attrs
                w.writerow([r.arm.label, t.number, t.state.name, *(t.params.get(k, "") for k in tuned_keys), t.value,
                            " ".join(map(str, a.get("objective_values") or [])), " ".join(map(str, a.get("verdicts") or [])),
                            a.get("epochs_run"), a.get("mlflow_run_id"),
                            a.get("failure_reason") or a.get("prune_reason") or ""])
    with open(folder / "confirmations.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["arm", "number", "state", "best_trial", "seed", "score", "tuning_metric_value", "gradient_ratio",
                    "verdict", "mlflow_run_id", "reason"])
        for t in confirm_trials:
            a = t.user_attrs
            w.writerow([a.get("arm"), t.number, t.state.name, a.get("best_trial"), a.get("seed"), t.value,
                        a.get("tuning_metric_value"), a.get("gradient_ratio"), a.get("verdict"), a.get("mlflow_run_id"),
                        a.get("failure_reason") or ""])
    summary = {"score": report.score, "metric": report.metric, "direction": report.direction,
               "counts": report.counts, "epochs_total": report.epochs_total, "conclusion": report.comparison,
               "arms": [arm_summary(r, tuned_keys) for r in report.rows]}
    (folder / "summary.json").write_text(json.dumps(summary, indent=2, default=_json_safe), encoding="utf-8")


def arm_summary(r: ArmRow, tuned_keys: list[str]) -> dict:
    interval = mean_interval(r.scores)
    return {"arm": r.arm.label, "values": r.arm.values, "status": r.status,
            "versus_best": r.tested.verdict if r.tested else None,
            "p_holm": None if r.tested is None or math.isnan(r.tested.p_holm) else r.tested.p_holm,
            "scores": r.scores, "mean": None if math.isnan(interval.mean) else interval.mean,
            "ci": None if math.isnan(interval.low) else [interval.low, interval.high],
            "tuned": {k: r.best.params.get(k) for k in tuned_keys} if r.best else None,
            "tuning": {"budget": r.budget, "complete": r.complete, "pruned": r.pruned, "failed": r.failed,
                       "running": r.running, "lost_and_retried": r.lost,
                       "best_value": r.best.value if r.best else None, "best_trial": r.best.number if r.best else None},
            "gradient_ratio": None if math.isnan(r.gradient_ratio) else r.gradient_ratio,
            "verdicts": dict(r.verdicts), "tuning_verdicts": dict(r.tuning_verdicts),
            "failure_reasons": dict(r.failure_reasons),
            "confirmation_failures": [t.user_attrs.get("failure_reason") for t in r.failed_confirmations]}


def save_figures(report: ComparisonReport, comparison, folder: Path) -> list[str]:
    from workbench.studies.comparison_figures import confirmed_scores_figure, sensitivity_figure

    written = []
    for name, draw in (("confirmed_scores.png", confirmed_scores_figure), ("lr_sensitivity.png", sensitivity_figure)):
        try:
            if draw(report, comparison, folder / name):
                written.append(name)
        except Exception as exc:  # noqa: BLE001 - a figure must not cost the report
            print(f"workbench: warning: {name} not drawn: {exc}")
    return written


# -- small helpers -------------------------------------------------------------------------------------------
def _retried(trial, trials) -> bool:
    return any(trial.number in t.system_attrs.get("retry_history", ()) for t in trials)


def _generic(reason: str) -> str:
    """A failure reason with its numbers (epochs, seeds, values; not the digits of names like dense1) as N."""
    return re.sub(r"(?<![A-Za-z_\d.])-?\d+(?:\.\d+)?(?:e-?\d+)?", "N", reason)


def _ci(interval) -> str:
    if math.isnan(interval.low):
        return f"{interval.mean:.4g}"
    return f"{interval.mean:.4g} [{interval.low:.4g}, {interval.high:.4g}]"


def _p(p: float) -> str:
    return "p < 0.001" if p < 0.001 else f"p = {p:.2g}"


def _fmt(value, digits: int = 4) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}g}"


def _value(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _name(value) -> str:
    return value if isinstance(value, str) else type(value).__name__


def _metric_key(label: str) -> str:
    """MLflow metric names allow letters, digits, _ - . / and spaces: '+' becomes '_'."""
    return re.sub(r"[^A-Za-z0-9_\-. /]", "_", label)


def _json_safe(value):
    if isinstance(value, float) and math.isnan(value):
        return None
    return str(value)
