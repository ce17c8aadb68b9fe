"""Backprop against evolution on digits: validation accuracy per forward pass and per second.

Backpropagation (Adam, SGD) against the two gradient-free optimizers of workbench.training.evolution
(a genetic algorithm and an evolution strategy, Salimans et al. 2017) on the same model (digits,
one hidden layer of 32 ReLU units), data, batches (32) and seeds. Every run records, per epoch,
its validation accuracy, the training forward passes it has spent (one per sample and model
evaluated: a backprop step on a batch of B costs B, plus a backward pass of about twice that; a
generation of population P costs (P + 1) B: the members, and the model itself for the hooks)
and its seconds since training began (one BLAS thread for every method). Every run trains until
it has spent both budgets, FORWARD_BUDGET forward passes and SECONDS_BUDGET seconds (no early
stopping). The report gives, per method, the forward passes and seconds it needs to reach 80%
and 90% validation accuracy (mean over the seeds that get there, and how many do), its accuracy
at the equal budget of forward passes and at the equal wall time, and plots validation accuracy
against forward passes and against seconds. Seconds depend on the machine and its load.

This is a fixed protocol, not a search: each method runs with the settings below (the
gradient-free ones with their defaults; SGD with a learning rate that trains, as its default
1e-3 barely moves in this budget). With tracking, one MLflow parent run holds the report and
one child run per method and seed holds its curves (`budget/forward_passes`, `budget/seconds`).

    python studies/backprop_vs_evolution.py --quick          # 1 seed, few epochs: a minute or two
    python studies/backprop_vs_evolution.py --seeds 3        # the measured protocol (minutes on 2 cores)
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

from workbench.errors import UserError
from workbench.spec import spec_from_dict
from workbench.training import Hook

NAME = "backprop-vs-evolution"
BASE = {"data": {"source": "digits"}, "model": {"hidden": [32]}, "training": {"batch_size": 32},
        "early_stopping": {"enabled": False}, "monitor": {"every": 10, "log_every": 50}}
METHODS = {  # label -> spec overrides
    "adam": {"optimizer.name": "adam", "optimizer.lr": 1e-3},
    "sgd": {"optimizer.name": "sgd", "optimizer.lr": 0.05},
    "genetic": {"optimizer.name": "genetic"},
    "evolution_strategy": {"optimizer.name": "evolution_strategy"},
}
THRESHOLDS = (0.8, 0.9)
# Every run trains until it has spent both budgets: FORWARD_BUDGET training forward passes (what the
# gradient-free methods spend in 60 epochs: 51 models x 1,144 samples x 60) and SECONDS_BUDGET seconds.
FORWARD_BUDGET, SECONDS_BUDGET = 51 * 1144 * 60, 60.0
QUICK_BUDGETS = (51 * 1144 * 4, 4.0)
MAX_EPOCHS = 100_000


class BudgetMeter(Hook):
    """Adds the training forward passes and seconds spent so far to each epoch's validation metrics, and
    stops the run at the end of the epoch where both budgets are spent."""

    def __init__(self, forward_budget: float = math.inf, seconds_budget: float = math.inf) -> None:
        self.forward_budget, self.seconds_budget = forward_budget, seconds_budget

    def on_train_begin(self, trainer) -> None:
        self.start = time.perf_counter()
        self.forward = self.backward = 0
        self.members = getattr(trainer.optimizer, "forward_passes", 0)

    def on_after_update(self, trainer) -> None:
        batch = len(trainer.xb)
        members = getattr(trainer.optimizer, "forward_passes", None)
        if members is None:  # backprop: one forward and one backward pass of the batch
            self.forward += batch
            self.backward += batch
        else:  # the population's members on the batch, and the model's own forward pass
            self.forward += (members - self.members + 1) * batch
            self.members = members

    def on_evaluate(self, trainer, split, metrics) -> None:
        if split == "val":  # these metrics become the epoch's logs and history
            metrics["budget/forward_passes"] = float(self.forward)
            metrics["budget/backward_passes"] = float(self.backward)
            metrics["budget/seconds"] = time.perf_counter() - self.start

    def on_epoch_end(self, trainer, logs) -> None:
        if self.forward >= self.forward_budget and time.perf_counter() - self.start >= self.seconds_budget:
            trainer.stop(f"budget spent: {self.forward:.3g} forward passes, {self.seconds_budget:g} s")


def run_all(seeds: int, budgets: tuple[float, float], track: bool, tracking_uri: str | None,
            parent_run_id: str | None, progress: bool) -> dict:
    from threadpoolctl import threadpool_limits

    from workbench.execute import execute

    curves: dict[str, list[dict]] = {}
    with threadpool_limits(1):  # every method on one BLAS thread: seconds compare like with like
        for label, overrides in METHODS.items():
            for seed in range(seeds):
                spec = spec_from_dict(BASE).with_overrides(
                    {**overrides, "seed": seed, "name": NAME, "training.epochs": MAX_EPOCHS})
                options = dict(parent_run_id=parent_run_id, run_name=f"{label} seed {seed}", plots=False,
                               checkpoint=False, tags={"workbench.study": NAME, "workbench.role": "trial",
                                                       "workbench.method": label}) if track else None
                outcome = execute(spec, track=track, tracking_uri=tracking_uri, hooks=(BudgetMeter(*budgets),),
                                  tracker_options=options)
                history = outcome.run.trainer.history
                curves.setdefault(label, []).append({
                    "seed": seed, "status": outcome.status, "run_id": outcome.run_id,
                    "val_accuracy": history["val/accuracy"], "forward": history["budget/forward_passes"],
                    "backward": history["budget/backward_passes"], "seconds": history["budget/seconds"],
                    "test_accuracy": outcome.metrics.get("test/accuracy", math.nan)})
                if progress:
                    last = curves[label][-1]
                    print(f"{label:>18} seed {seed}: val {last['val_accuracy'][-1]:.3f}, test {last['test_accuracy']:.3f}, "
                          f"{len(last['val_accuracy'])} epochs, {last['forward'][-1]:.3g} forward passes, "
                          f"{last['seconds'][-1]:.1f} s",
                          file=sys.stderr, flush=True)
    return curves


def first_reach(values, budget, threshold: float) -> float:
    """The budget (forward passes or seconds) at the first epoch whose accuracy reaches `threshold`; NaN: never."""
    hit = np.flatnonzero(np.asarray(values) >= threshold)
    return float(np.asarray(budget)[hit[0]]) if hit.size else math.nan


def accuracy_at(values, budget, amount: float) -> float:
    """The accuracy of the last epoch ended within `amount` of budget (NaN when even the first needs more)."""
    inside = np.flatnonzero(np.asarray(budget) <= amount * (1 + 1e-9))
    return float(np.asarray(values)[inside[-1]]) if inside.size else math.nan


def summarize(curves: dict, budgets: tuple[float, float]) -> dict:
    equal_forward, equal_seconds = budgets
    rows = {}
    for label, runs in curves.items():
        row = {"seeds": len(runs), "final_val": float(np.mean([r["val_accuracy"][-1] for r in runs])),
               "final_test": float(np.mean([r["test_accuracy"] for r in runs])),
               "forward_total": float(np.mean([r["forward"][-1] for r in runs])),
               "seconds_total": float(np.mean([r["seconds"][-1] for r in runs])),
               "val_at_equal_forward": float(np.nanmean([accuracy_at(r["val_accuracy"], r["forward"], equal_forward)
                                                         for r in runs])),
               "val_at_equal_seconds": float(np.nanmean([accuracy_at(r["val_accuracy"], r["seconds"], equal_seconds)
                                                         for r in runs]))}
        for t in THRESHOLDS:
            forward = [first_reach(r["val_accuracy"], r["forward"], t) for r in runs]
            seconds = [first_reach(r["val_accuracy"], r["seconds"], t) for r in runs]
            reached = [f for f in forward if math.isfinite(f)]
            row[f"reach_{t:g}"] = {"seeds": len(reached),
                                   "forward": float(np.mean(reached)) if reached else None,
                                   "seconds": float(np.nanmean(seconds)) if reached else None}
        rows[label] = row
    return {"equal_forward": equal_forward, "equal_seconds": equal_seconds, "methods": rows}


def markdown(summary: dict) -> str:
    def reach(cell) -> str:
        if cell["forward"] is None:
            return "never"
        return f"{cell['forward']:.3g} / {cell['seconds']:.1f} s ({cell['seeds']} seeds)"

    lines = [f"| method | val acc at {summary['equal_forward']:.3g} forward passes | val acc at "
             f"{summary['equal_seconds']:.1f} s | " + " | ".join(f"to {t:.0%} val acc: forward passes / seconds"
                                                               for t in THRESHOLDS)
             + " | final val acc | test acc | forward passes / seconds in all |",
             "|---|---|---|" + "---|" * len(THRESHOLDS) + "---|---|---|"]
    for label, row in summary["methods"].items():
        lines.append(f"| {label} | {row['val_at_equal_forward']:.3f} | {row['val_at_equal_seconds']:.3f} | "
                     + " | ".join(reach(row[f"reach_{t:g}"]) for t in THRESHOLDS)
                     + f" | {row['final_val']:.3f} | {row['final_test']:.3f} | "
                       f"{row['forward_total']:.3g} / {row['seconds_total']:.0f} s |")
    return "\n".join(lines)


def figure(curves: dict, budgets: tuple[float, float], path: Path) -> Path:
    from matplotlib.figure import Figure

    colors = {"adam": "tab:blue", "sgd": "tab:cyan", "genetic": "tab:red", "evolution_strategy": "tab:orange"}
    fig = Figure(figsize=(12, 4.6), dpi=110, layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    for ax, key, label, budget in ((axes[0], "forward", "training forward passes (samples x models evaluated)",
                                    budgets[0]),
                                   (axes[1], "seconds", "seconds of training (1 BLAS thread; a shared machine)",
                                    budgets[1])):
        ax.axvline(budget, color="0.3", linestyle="--", linewidth=1, label="the equal budget")
        for method, runs in curves.items():
            for i, run in enumerate(runs):
                ax.plot(run[key], run["val_accuracy"], color=colors.get(method), alpha=0.85, linewidth=1.3,
                        label=method if i == 0 else None)
        for t in THRESHOLDS:
            ax.axhline(t, color="0.5", linestyle=":", linewidth=1)
        ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.grid(True, alpha=0.3)
    axes[0].set_ylabel("validation accuracy")
    axes[0].set_ylim(0, 1)
    axes[0].legend(loc="lower right")
    fig.suptitle("Digits, one hidden layer of 32: backprop (Adam, SGD) against a genetic algorithm and an evolution "
                 "strategy (one line per seed)")
    fig.savefig(path)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="backprop_vs_evolution.py", description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3, help="seeds per method (default 3)")
    parser.add_argument("--quick", action="store_true", help="1 seed and a few epochs (a smoke test)")
    parser.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: MLFLOW_TRACKING_URI "
                                                             "or sqlite:///mlflow.db)")
    parser.add_argument("--no-track", action="store_true", help="no MLflow: only the report folder")
    parser.add_argument("--out", default=NAME, help=f"folder for the report (default ./{NAME})")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    try:
        if args.seeds < 1:
            raise UserError(f"--seeds {args.seeds}: use at least 1")
        seeds = 1 if args.quick else args.seeds
        parent = client = None
        if not args.no_track:
            from workbench.tracking import ensure_experiment, open_client, resolve_tracking_uri

            uri = resolve_tracking_uri(args.tracking_uri)
            client = open_client(uri)
            experiment = ensure_experiment(client, NAME)
            parent = client.create_run(experiment, run_name=f"{NAME} ({seeds} seeds{', quick' if args.quick else ''})",
                                       tags={"workbench.study": NAME, "workbench.role": "study"}).info.run_id
            args.tracking_uri = uri
        budgets = QUICK_BUDGETS if args.quick else (FORWARD_BUDGET, SECONDS_BUDGET)
        curves = run_all(seeds, budgets, not args.no_track, args.tracking_uri, parent, not args.quiet)
        summary = summarize(curves, budgets)
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        table = markdown(summary)
        (out / "report.md").write_text(f"# {NAME}\n\n{table}\n", encoding="utf-8")
        (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
        (out / "curves.json").write_text(json.dumps(curves) + "\n", encoding="utf-8")
        figure(curves, budgets, out / "accuracy_vs_budget.png")
        if client is not None:
            client.log_artifacts(parent, str(out), "report")
            client.set_terminated(parent, "FINISHED")
        print(table)
        print(f"report: {out}/report.md, {out}/accuracy_vs_budget.png" + (f"; MLflow parent run {parent}" if parent else ""))
    except UserError as exc:
        print(f"backprop_vs_evolution.py: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("backprop_vs_evolution.py: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
