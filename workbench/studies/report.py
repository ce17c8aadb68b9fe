"""The study report: configurations over seeds, the noise check, importances, plots.

A *configuration* is a combination of the categorical choices of the space (for
init x optimizer: one init and one optimizer); the numeric keys (the learning rate)
are tuned inside it, and its row shows its best trial: mean and standard deviation over
the seeds, the per-seed values, and how many of its trials completed, were pruned or
failed. Without categorical keys each completed trial is its own row.

The comparison asks whether the best two configurations differ by more than the
seed-to-seed noise: Welch's t-test on their per-seed values (p < 0.05), with the
difference against two standard errors shown too. The best configuration was picked
as the best of many, so its mean is optimistic (the winner's curse): rerun it with new
seeds before quoting it.

Files (logged under `report/` on the parent run): summary.md, configurations.csv,
trials.csv, summary.json, and the Optuna plots (optimization_history.png,
intermediate_values.png, parallel_coordinate.png, param_importances.png).
"""

from __future__ import annotations

import csv
import json
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from workbench.studies.space import categorical_keys

MIN_TRIALS_FOR_IMPORTANCE = 4
GENERIC_NAMES = ("name", "mode", "enabled", "monitor")
MAX_SINGLE_ROWS = 20
ALPHA = 0.05


@dataclass
class Row:
    config: dict
    trials: int = 0
    complete: int = 0
    pruned: int = 0
    failed: int = 0
    best: object | None = None  # FrozenTrial

    @property
    def values(self) -> list[float]:
        return list(self.best.user_attrs.get("objective_values") or [self.best.value]) if self.best else []

    @property
    def mean(self) -> float:
        return float(self.best.value) if self.best else math.nan

    @property
    def std(self) -> float:
        std = self.best.user_attrs.get("objective_std") if self.best else None
        return math.nan if std is None else float(std)


@dataclass
class Report:
    folder: Path
    metric: str
    direction: str
    rows: list[Row]
    counts: dict[str, int]
    best: object | None
    comparison: str
    importances: dict[str, float] | None
    importance_note: str
    epochs_total: int
    markdown: str = ""
    plots: list[str] = field(default_factory=list)


def build_report(optuna_study, study, settings, folder: Path) -> Report:
    """Everything the parent run shows, written to `folder`."""
    import optuna

    folder.mkdir(parents=True, exist_ok=True)
    trials = [t for t in optuna_study.get_trials(deepcopy=False) if t.state != optuna.trial.TrialState.WAITING]
    maximize = study.direction == "maximize"
    rows = configuration_rows(trials, categorical_keys(study.space), maximize)
    counts = {s: sum(t.state.name == s for t in trials) for s in ("COMPLETE", "PRUNED", "FAIL", "RUNNING")}
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    best = rows[0].best if rows else None  # the table's first row: same ranking, same ties
    importances, note = param_importances(optuna_study, len(complete))
    report = Report(folder, study.metric, study.direction, rows, counts, best, compare(rows, study.metric),
                    importances, note, sum(int(t.user_attrs.get("epochs_run") or 0) for t in trials))
    report.markdown = markdown(report, settings)
    (folder / "summary.md").write_text(report.markdown, encoding="utf-8")
    write_csvs(report, trials, study, folder)
    (folder / "summary.json").write_text(json.dumps(summary(report, settings), indent=2, default=str), encoding="utf-8")
    if settings.plots:
        report.plots = save_plots(optuna_study, folder, study.metric, importances is not None,
                                  settings.base.training.epochs, settings.seeds)
    return report


def configuration_rows(trials, keys: list[str], maximize: bool) -> list[Row]:
    rows: dict[tuple, Row] = {}
    for t in trials:
        if keys:
            config = {k: t.params.get(k) for k in keys}
        elif t.state.name == "COMPLETE":
            config = {"trial": t.number}
        else:
            continue
        row = rows.setdefault(tuple(config.values()), Row(config))
        row.trials += 1
        row.complete += t.state.name == "COMPLETE"
        row.pruned += t.state.name == "PRUNED"
        row.failed += t.state.name == "FAIL"
        if t.state.name == "COMPLETE" and (row.best is None or _better(t.value, row.best.value, maximize)):
            row.best = t
    sign = -1 if maximize else 1  # best mean first; ties: the smaller spread, then the earlier trial
    ordered = sorted(rows.values(), key=lambda r: (r.best is None, sign * r.mean, r.std, r.best.number) if r.best
                     else (True, 0, 0, 0))
    return ordered if keys else ordered[:MAX_SINGLE_ROWS]


def compare(rows: list[Row], metric: str) -> str:
    """Whether the best two configurations differ by more than the seed-to-seed noise."""
    ranked = [r for r in rows if r.best is not None]
    if len(ranked) < 2:
        return "Fewer than two configurations completed: nothing to compare yet."
    a, b = ranked[0], ranked[1]
    va, vb = a.values, b.values
    head = (f"Best {describe(a)}: {metric} {a.mean:.4g} ± {_fmt(a.std, 3)} over {len(va)} seed(s) "
            f"(trial {a.best.number}); runner-up {describe(b)}: {b.mean:.4g} ± {_fmt(b.std, 3)} "
            f"(trial {b.best.number}). "
            f"Difference {abs(a.mean - b.mean):.3g}")
    if len(va) < 2 or len(vb) < 2:
        return head + ": with one seed per configuration the seed-to-seed noise is unknown; run with --seeds 3 or more."
    se = math.sqrt(_var(va) / len(va) + _var(vb) / len(vb))
    p = welch_p(va, vb)
    if se == 0:
        verdict = "exceeds" if a.mean != b.mean else "does not exceed"
        return head + f" {verdict} the seed-to-seed noise (no spread at all between seeds)."
    exceeds = p < ALPHA if not math.isnan(p) else abs(a.mean - b.mean) > 2 * se
    verdict = "exceeds" if exceeds else "is within"
    return (head + f" {verdict} the seed-to-seed noise (Welch t-test p = {p:.3g}; "
            f"two standard errors = {2 * se:.3g}). The best of many is optimistic: confirm with new seeds.")


def welch_p(a: list[float], b: list[float]) -> float:
    """Two-sided p-value of Welch's t-test (scipy), NaN when scipy is missing."""
    try:
        from scipy import stats
    except ImportError:
        return math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(stats.ttest_ind(a, b, equal_var=False).pvalue)


def param_importances(optuna_study, n_complete: int) -> tuple[dict[str, float] | None, str]:
    import optuna

    if n_complete < MIN_TRIALS_FOR_IMPORTANCE:
        return None, f"needs at least {MIN_TRIALS_FOR_IMPORTANCE} completed trials (have {n_complete})"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return dict(optuna.importance.get_param_importances(optuna_study)), "fANOVA (optuna default)"
    except Exception as exc:  # noqa: BLE001 - e.g. a parameter that never varied
        return None, f"not computed: {exc}"


def describe(row: Row) -> str:
    return ", ".join(f"{short_key(k, row.config)}={v}" for k, v in row.config.items())


def short_key(key: str, keys) -> str:
    """'init' for model.init; the full key when the last part is generic or ambiguous (optimizer.name)."""
    last = key.rpartition(".")[2]
    if last in GENERIC_NAMES or sum(k.rpartition(".")[2] == last for k in keys) > 1:
        return key
    return last


def markdown(report: Report, settings) -> str:
    running = f", {report.counts['RUNNING']} running" if report.counts["RUNNING"] else ""
    lines = [f"# Study {settings.study_name}", "",
             f"Objective: {report.direction} {report.metric}, mean over {settings.seeds} seed(s) per trial. "
             f"Trials: {report.counts['COMPLETE']} complete, {report.counts['PRUNED']} pruned, "
             f"{report.counts['FAIL']} failed" + running + f" (budget {settings.n_trials}); "
             f"{report.epochs_total} epochs trained.", ""]
    lines += table_lines(report.rows, report.metric) + ["", report.comparison, ""]
    if report.best is not None:
        params = ", ".join(f"{k}={_value(v)}" for k, v in report.best.params.items())
        lines.append(f"Best trial {report.best.number}: {report.metric} {report.best.value:.4g} with {params}; "
                     f"MLflow run {report.best.user_attrs.get('mlflow_run_id')}.")
    if report.importances:
        ranked = ", ".join(f"{k} {v:.2f}" for k, v in report.importances.items())
        lines.append(f"Parameter importances ({report.importance_note}): {ranked}.")
    else:
        lines.append(f"Parameter importances: {report.importance_note}.")
    return "\n".join(lines) + "\n"


def table_lines(rows: list[Row], metric: str) -> list[str]:
    if not rows:
        return ["(no trial has finished yet)"]
    keys = list(rows[0].config)
    extra = sorted({k for r in rows if r.best for k in r.best.params if k not in keys})
    header = [*keys, f"{metric} mean", "std", "per seed", "trials", "pruned", "failed", *extra, "best trial"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        seeds = " ".join(f"{v:.3g}" for v in r.values) if r.best else ""
        params = [_value(r.best.params.get(k)) if r.best else "" for k in extra]
        cells = [*map(str, r.config.values()), _fmt(r.mean), _fmt(r.std, 3), seeds, str(r.trials), str(r.pruned),
                 str(r.failed), *params, str(r.best.number) if r.best else "-"]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def write_csvs(report: Report, trials, study, folder: Path) -> None:
    keys = list(report.rows[0].config) if report.rows else []
    with open(folder / "configurations.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow([*keys, "mean", "std", "values", "trials", "complete", "pruned", "failed", "best_trial",
                    "mlflow_run_id"])
        for r in report.rows:
            best = (r.best.number, r.best.user_attrs.get("mlflow_run_id")) if r.best else ("", "")
            w.writerow([*r.config.values(), r.mean, r.std, " ".join(map(str, r.values)), r.trials, r.complete,
                        r.pruned, r.failed, *best])
    params = list(study.space)
    with open(folder / "trials.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["number", "state", *params, "value", "std", "values", "epochs_run", "mlflow_run_id", "reason"])
        for t in trials:
            a = t.user_attrs
            values = " ".join(map(str, a.get("objective_values") or []))
            w.writerow([t.number, t.state.name, *[t.params.get(k, "") for k in params], t.value, a.get("objective_std"),
                        values, a.get("epochs_run"), a.get("mlflow_run_id"),
                        a.get("failure_reason") or a.get("prune_reason") or ""])


def summary(report: Report, settings) -> dict:
    best = report.best
    return {
        "study": settings.study_name, "metric": report.metric, "direction": report.direction,
        "seeds": settings.seeds, "n_trials": settings.n_trials, "counts": report.counts,
        "epochs_total": report.epochs_total, "comparison": report.comparison, "importances": report.importances,
        "best": None if best is None else {
            "number": best.number, "value": best.value, "params": best.params,
            "std": best.user_attrs.get("objective_std"), "values": best.user_attrs.get("objective_values"),
            "mlflow_run_id": best.user_attrs.get("mlflow_run_id")},
        "configurations": [{"config": r.config, "mean": r.mean if r.best else None, "std": r.std if r.best else None,
                            "values": r.values, "trials": r.trials, "complete": r.complete, "pruned": r.pruned,
                            "failed": r.failed, "best_trial": r.best.number if r.best else None} for r in report.rows],
    }


def save_plots(optuna_study, folder: Path, metric: str, with_importances: bool, epochs: int, seeds: int) -> list[str]:
    """Optuna's matplotlib plots as PNGs (experimental API: its warnings are silenced)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm

    plots = {"optimization_history": lambda: ovm.plot_optimization_history(optuna_study, target_name=metric),
             "intermediate_values": lambda: ovm.plot_intermediate_values(optuna_study),
             "parallel_coordinate": lambda: ovm.plot_parallel_coordinate(optuna_study, target_name=metric)}
    if with_importances:
        plots["param_importances"] = lambda: ovm.plot_param_importances(optuna_study, target_name=metric)
    written = []
    for name, plot in plots.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ax = plot()
                figure = (ax.flat[0] if hasattr(ax, "flat") else ax).figure
                if name == "intermediate_values":  # one stretch of `epochs` steps per seed
                    figure.axes[0].set_xlabel(f"step = seed index x {epochs} epochs + epoch")
                    for k in range(1, seeds):
                        figure.axes[0].axvline(k * epochs - 0.5, color="grey", linestyle=":", linewidth=1)
                figure.savefig(folder / f"{name}.png", dpi=100, bbox_inches="tight")
            plt.close(figure)
            written.append(f"{name}.png")
        except Exception:  # noqa: BLE001 - a plot that cannot be drawn yet (too few trials) is skipped
            plt.close("all")
    return written


def _better(value: float, reference: float, maximize: bool) -> bool:
    return value > reference if maximize else value < reference


def _var(values: list[float]) -> float:
    mean = sum(values) / len(values)
    return sum((v - mean) ** 2 for v in values) / (len(values) - 1)


def _fmt(value: float, digits: int = 4) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}g}"


def _value(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)
