"""Figure cost: seconds to draw and save each of a run's figures, and all of them together.

    .venv/bin/python benchmarks/figure_cost.py [--case digits|deep|both] [--reps 3] [--mnist DIR]

A run's figures are drawn after training, off the training path but on the path to `workbench run`
returning: the `plots/` PNGs and GIF (`workbench.plots.save_run_plots`, drawn by the tracking agent's
forked child) and the diagnosis figure (`plots/diagnosis.png`, drawn by the training process).
The cases are those of `benchmarks/tracking_overhead.py` (digits: experiments/digits_mlp.toml; deep:
30 hidden layers of 128 with batch norm on MNIST, 3 epochs, monitor every step). The run is trained
once untracked; each figure is then drawn `--reps` times into a temporary folder (the first draw of
the process is warm: matplotlib is imported and a figure drawn before timing). The median per figure
and the median total are printed. Target: all figures of a run together in at most 2 s.
Results: a table on stdout and benchmarks/results/figure_cost-<time>.json.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from _common import DEFAULT_MNIST_DIR, REPO_ROOT, machine_facts, markdown_table, median, save_results, warn_if_busy

TARGET_S = 2.0
DIGITS = REPO_ROOT / "experiments" / "digits_mlp.toml"
DEEP = {"data.source": "mnist", "model.hidden": [128] * 30, "model.batch_norm": True, "model.dropout": 0.0,
        "training.epochs": 3, "training.batch_size": 120, "early_stopping.enabled": False, "monitor.every": 1,
        "monitor.log_every": 10}


def trained(case: str, mnist: Path):
    """(record, history, gradients) of the case's run, trained once here without tracking."""
    from workbench.monitor.gradient_snapshot import GradientSnapshot
    from workbench.runner import build_run
    from workbench.spec import load_spec

    spec = load_spec(DIGITS)
    if case == "deep":
        spec = spec.with_overrides({**DEEP, "data.path": str(Path(mnist).resolve())})
    snapshot = GradientSnapshot()
    run = build_run(spec, hooks=(snapshot,))
    run.trainer.fit()
    return run.record, dict(run.trainer.history), snapshot


def time_figures(record, history, gradients, reps: int) -> dict[str, float]:
    from workbench.diagnose import diagnose_record
    from workbench.diagnose.figure import save_diagnosis_figure
    from workbench.plots.run_plots import PLOT_FILES, save_run_plots

    diagnosis = diagnose_record(record)
    seconds: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        save_run_plots(Path(tmp) / "warm", record=record, history=history, gradients=gradients,
                       names=["loss.png"])
        for _ in range(reps):
            for name in PLOT_FILES:
                start = time.perf_counter()
                written = save_run_plots(Path(tmp), record=record, history=history, gradients=gradients,
                                         names=[name])
                if written:
                    seconds.setdefault(name, []).append(time.perf_counter() - start)
            start = time.perf_counter()
            save_diagnosis_figure(Path(tmp) / "diagnosis.png", record, diagnosis)
            seconds.setdefault("diagnosis.png", []).append(time.perf_counter() - start)
    return {name: median(values) for name, values in seconds.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=["digits", "deep", "both"], default="both")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--mnist", type=Path, default=DEFAULT_MNIST_DIR)
    args = parser.parse_args(argv)
    warn_if_busy()
    cases = ["digits", "deep"] if args.case == "both" else [args.case]
    results = {}
    for case in cases:
        record, history, gradients = trained(case, args.mnist)
        per_figure = time_figures(record, history, gradients, args.reps)
        results[case] = {"rows": len(record), "layers": len(record.layers), "seconds": per_figure,
                         "total_s": sum(per_figure.values())}
        rows = [[name, f"{s:.2f}"] for name, s in per_figure.items()]
        rows.append(["all together", f"{sum(per_figure.values()):.2f} (target <= {TARGET_S:g})"])
        print(f"\n{case}: {len(record)} record rows x {len(record.layers)} layers")
        print(markdown_table(["figure", "seconds (median)"], rows))
    path = save_results("figure_cost", {"machine": machine_facts(), "reps": args.reps, "cases": results})
    print(f"\nresults: {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
