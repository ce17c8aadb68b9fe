"""Study throughput with 1 and 2 workers, and the epochs pruning saves, on init_vs_optimizer --quick.

    .venv/bin/python benchmarks/study_scaling.py                 # both tables (about 6 minutes on 2 cores)
    .venv/bin/python benchmarks/study_scaling.py --trials 24 --pruning-trials 40 --json out.json
    .venv/bin/python benchmarks/study_scaling.py --full --trials 12 --skip-pruning   # full-size trials

1. Scaling: the quick study (8 epochs, 2 seeds per trial) with pruning off so every trial does the
   same work, run with 1 then 2 workers on fresh stores (journal + MLflow SQLite in a temporary
   folder). Trials per minute are counted over the optimization (first trial start to last trial end)
   and over the whole command (start-up, the workers' start and the report included). Target: >= 1.7x.
   "s per trial" is a trial's own wall time; "CPU cores busy" is the CPU time of the study's
   processes over the command's wall time: below 2 with 2 workers means the cores were shared.
   The 1-worker run (trials in this process) also splits a trial's time into training (`Trainer.fit`,
   its hooks and the metric sender thread included) and the rest, the per-trial fixed cost (data,
   model, the MLflow run's creation, model, record, diagnosis and status, Optuna's bookkeeping),
   in wall and CPU seconds.
2. Pruning: the same quick study and budget with the median pruner and without, 1 worker, the same
   sampler seed: epochs trained, best value, wall time.

Timings depend on the machine and on whatever else runs on it: the load average is printed.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib.util
import io
import json
import os
import resource
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "studies" / "init_vs_optimizer.py"


def load_study():
    spec = importlib.util.spec_from_file_location("init_vs_optimizer", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.study


def cpu_seconds() -> float:
    """User + system time of this process, of its finished children, and of the workers' fork server with the
    workers it has reaped (they are its children, not ours; read from /proc, where there is one)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime + fork_server_cpu_seconds()


def fork_server_cpu_seconds() -> float:
    from multiprocessing import forkserver

    from workbench.machine import proc_stat_fields

    pid = getattr(forkserver._forkserver, "_forkserver_pid", None)  # noqa: SLF001 - no public accessor
    if pid is None:
        return 0.0
    fields = proc_stat_fields(pid)
    if fields is None:
        return 0.0
    utime, stime, cutime, cstime = (int(v) for v in fields[11:15])  # fields 14-17 of proc(5)
    return (utime + stime + cutime + cstime) / os.sysconf("SC_CLK_TCK")


class FitClock:
    """Wall and CPU seconds spent in `Trainer.fit` in this process while installed (a 1-worker study)."""

    def __init__(self) -> None:
        self.wall = self.cpu = 0.0
        self.calls = 0

    def __enter__(self):
        from workbench.training.trainer import Trainer

        self.original = original = Trainer.fit
        clock = self

        def fit(trainer, *args, **kwargs):
            wall, cpu = time.perf_counter(), time.process_time()
            try:
                return original(trainer, *args, **kwargs)
            finally:
                clock.wall += time.perf_counter() - wall
                clock.cpu += time.process_time() - cpu
                clock.calls += 1

        Trainer.fit = fit
        return self

    def __exit__(self, *exc) -> None:
        from workbench.training.trainer import Trainer

        Trainer.fit = self.original


def run_once(study, *, n_trials: int, workers: int, sampler_seed: int = 0, quick: bool = True) -> dict:
    with tempfile.TemporaryDirectory(prefix="study-bench-") as tmp:
        cpu_before, start = cpu_seconds(), time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()), FitClock() as clock:  # the study's own report
            result = study.run(n_trials=n_trials, workers=workers, quick=quick, quiet=True, sampler_seed=sampler_seed,
                               storage=str(Path(tmp) / "optuna.journal"), tracking_uri=f"sqlite:///{tmp}/mlflow.db")
        wall, cpu = time.perf_counter() - start, cpu_seconds() - cpu_before
        import optuna
        from optuna.storages.journal import JournalFileBackend

        storage = optuna.storages.JournalStorage(JournalFileBackend(str(Path(tmp) / "optuna.journal")))
        trials = optuna.load_study(study_name=result.study_name, storage=storage).get_trials()
    span = (max(t.datetime_complete for t in trials) - min(t.datetime_start for t in trials)).total_seconds()
    report = result.report
    trial_s = sum(t.user_attrs.get("seconds", 0) for t in trials) / len(trials)
    fixed = {}
    if workers == 1 and clock.calls:  # the trials ran in this process: their training was timed
        fixed = {"fit_wall_s": clock.wall / len(trials), "fit_cpu_s": clock.cpu / len(trials),
                 "fixed_wall_s": trial_s - clock.wall / len(trials),
                 "cpu_per_trial_s": cpu / len(trials), "fixed_cpu_s": cpu / len(trials) - clock.cpu / len(trials)}
    return {**fixed, "workers": workers, "trials": len(trials), "wall_s": wall, "optimization_s": span, "cpu_s": cpu,
            "cores_used": cpu / wall, "trial_s": trial_s,
            "trials_per_min": 60 * len(trials) / span, "trials_per_min_wall": 60 * len(trials) / wall,
            "epochs": report.epochs_total, "best": report.best.value if report.best else None,
            "pruned": report.counts["PRUNED"], "failed": report.counts["FAIL"], "complete": report.counts["COMPLETE"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=24, help="trials per scaling run (default 24)")
    parser.add_argument("--pruning-trials", type=int, default=40,
                        help="trials per pruning run (default 40, the quick budget)")
    parser.add_argument("--full", action="store_true",
                        help="scaling on the full-size trials (30 epochs x 3 seeds) instead of --quick's (8 x 2)")
    parser.add_argument("--skip-scaling", action="store_true")
    parser.add_argument("--skip-pruning", action="store_true")
    parser.add_argument("--json", help="also write the measurements to this file")
    args = parser.parse_args()
    study = load_study()
    print(f"cores: {len(os.sched_getaffinity(0))}; load average before: {os.getloadavg()[0]:.2f}")
    out = {}
    if not args.skip_scaling:
        unpruned = dataclasses.replace(study, pruner="none")
        rows = [run_once(unpruned, n_trials=args.trials, workers=w, quick=not args.full) for w in (1, 2)]
        speedup = rows[1]["trials_per_min"] / rows[0]["trials_per_min"]
        wall_speedup = rows[1]["trials_per_min_wall"] / rows[0]["trials_per_min_wall"]
        size = "full size, pruner none, {} trials x 3 seeds x 30 epochs" if args.full else \
            "--quick, pruner none, {} trials x 2 seeds x 8 epochs"
        print(f"\nScaling: init_vs_optimizer {size.format(args.trials)}\n")
        print("| workers | trials | optimization (s) | trials/min | whole command (s) | trials/min (command) "
              "| s per trial | CPU cores busy |")
        print("|---|---|---|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['workers']} | {r['trials']} | {r['optimization_s']:.1f} | {r['trials_per_min']:.1f} | "
                  f"{r['wall_s']:.1f} | {r['trials_per_min_wall']:.1f} | {r['trial_s']:.2f} | {r['cores_used']:.2f} |")
        print(f"\nspeed-up with 2 workers: {speedup:.2f}x over the optimization, {wall_speedup:.2f}x over the command")
        one = rows[0]
        if "fit_wall_s" in one:
            print(f"\nA trial's time, 1 worker (mean over {one['trials']} trials): {one['trial_s']:.2f} s wall, of which "
                  f"training {one['fit_wall_s']:.2f} s and not training (the fixed cost) {one['fixed_wall_s']:.2f} s "
                  f"({one['fixed_wall_s'] / one['trial_s']:.0%}); CPU {one['cpu_per_trial_s']:.2f} s a trial (the "
                  f"command's, start-up and report included), of which training {one['fit_cpu_s']:.2f} s and not "
                  f"training {one['fixed_cpu_s']:.2f} s")
        out["scaling"] = {"rows": rows, "speedup": speedup, "speedup_command": wall_speedup}
    if not args.skip_pruning:
        rows = [run_once(dataclasses.replace(study, pruner=p), n_trials=args.pruning_trials, workers=1)
                for p in ("median", "none")]
        for r, name in zip(rows, ("median", "none"), strict=True):
            r["pruner"] = name
        saved = 1 - rows[0]["epochs"] / rows[1]["epochs"]
        print(f"\nPruning: init_vs_optimizer --quick, {args.pruning_trials} trials, 1 worker, sampler seed 0\n")
        print("| pruner | complete | pruned | failed | epochs trained | best val/accuracy | wall (s) | CPU (s) |")
        print("|---|---|---|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['pruner']} | {r['complete']} | {r['pruned']} | {r['failed']} | {r['epochs']} | "
                  f"{r['best']:.4f} | {r['wall_s']:.1f} | {r['cpu_s']:.1f} |")
        print(f"\nepochs saved by the median pruner: {saved:.0%} "
              f"(best value {rows[0]['best']:.4f} vs {rows[1]['best']:.4f})")
        out["pruning"] = {"rows": rows, "epochs_saved": saved}
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
