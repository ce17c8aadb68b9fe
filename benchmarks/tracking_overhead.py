"""Tracking overhead: wall time of `workbench run SPEC` with MLflow tracking vs `--no-track`, and where it goes.

    .venv/bin/python benchmarks/tracking_overhead.py [--reps 5] [--case digits|deep|both]
    .venv/bin/python benchmarks/tracking_overhead.py --spec SPEC [--set KEY=VALUE]...   # any run

Cases:
- digits: experiments/digits_mlp.toml as it is (100 epochs with early stopping, monitor every step);
- deep: 30 hidden layers of 128 with batch norm on MNIST, 3 epochs, monitor every step, log every 10
  steps (batch 120: about 1,275 steps, 128 logged rows of 31 layers x 7 statistics), the data from
  ../shared/data/mnist (`--mnist DIR`).

Each repetition runs the tracked and the untracked command as subprocesses, alternating which goes
first; the overhead is median(tracked) / median(untracked) over the repetitions. Tracked runs log to
a SQLite store in a temporary folder whose tables are created beforehand (a one-time cost of a new
store, reported separately). CPU time of the subprocesses (user + system, the tracking agent
included) is reported next to wall time. A tracked run reports where its tracking time went
(`WORKBENCH_TIMINGS`: the training process's hand-over and wait, the agent's import, store, metrics,
figures, model): the medians are printed. Target: <= 1.25x in wall time for each case.
Results: tables on stdout and benchmarks/results/tracking_overhead-<time>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import (
    DEFAULT_MNIST_DIR,
    REPO_ROOT,
    machine_facts,
    markdown_table,
    median,
    save_results,
    warn_if_busy,
)

TARGET = 1.25
DIGITS = REPO_ROOT / "experiments" / "digits_mlp.toml"
DEEP = ["data.source=\"mnist\"", "model.hidden=[" + ", ".join(["128"] * 30) + "]", "model.batch_norm=true",
        "model.dropout=0.0", "training.epochs=3", "training.batch_size=120", "early_stopping.enabled=false",
        "monitor.every=1", "monitor.log_every=10"]


def timed_run(args: list[str], cwd: Path, env: dict) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one `workbench run` subprocess; raises if it fails."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args)} exited with {proc.returncode}:\n{proc.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def cases(options) -> dict[str, tuple[str, list[str]]]:
    if options.spec:
        return {Path(options.spec).stem: (options.spec, options.overrides)}
    chosen = {"digits": (str(DIGITS), []),
              "deep": (str(DIGITS), [*DEEP, f"data.path=\"{Path(options.mnist).resolve()}\""])}
    return chosen if options.case == "both" else {options.case: chosen[options.case]}


def measure(name: str, spec: str, overrides: list[str], reps: int, tmp: Path, base_env: dict) -> dict:
    uri = f"sqlite:///{tmp / f'{name}.db'}"
    timings_file = tmp / f"{name}-timings.jsonl"
    env = {**base_env, "MLFLOW_TRACKING_URI": uri}
    base = [sys.executable, "-m", "workbench", "run", spec, "--quiet"] + [a for o in overrides for a in ("--set", o)]
    commands = {"tracked": base, "no-track": [*base, "--no-track"]}
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", f"from mlflow import MlflowClient; MlflowClient({uri!r}).search_experiments()"],
                   check=True, capture_output=True, env=env)
    store_seconds = time.perf_counter() - start
    times: dict[str, list[tuple[float, float]]] = {command: [] for command in commands}
    for rep in range(reps):
        order = list(commands) if rep % 2 == 0 else list(reversed(commands))
        for command in order:
            run_env = {**env, "WORKBENCH_TIMINGS": str(timings_file)} if command == "tracked" else env
            times[command].append(timed_run(commands[command], tmp, run_env))
            wall, cpu = times[command][-1]
            print(f"{name} rep {rep + 1} {command:>8}: {wall:6.1f} s wall, {cpu:6.1f} s CPU", file=sys.stderr,
                  flush=True)
    breakdown = []
    if timings_file.exists():
        breakdown = [json.loads(line) for line in timings_file.read_text().splitlines() if line.strip()]
    wall = {command: median(w for w, _ in runs) for command, runs in times.items()}
    cpu = {command: median(c for _, c in runs) for command, runs in times.items()}
    return {"spec": spec, "overrides": overrides, "store_creation_s": store_seconds,
            "wall_s": {k: [w for w, _ in v] for k, v in times.items()},
            "cpu_s": {k: [c for _, c in v] for k, v in times.items()}, "median_wall_s": wall, "median_cpu_s": cpu,
            "ratio_wall": wall["tracked"] / wall["no-track"], "ratio_cpu": cpu["tracked"] / cpu["no-track"],
            "timings": breakdown}


def print_case(name: str, result: dict, reps: int) -> None:
    rows = [[command, f"{result['median_wall_s'][command]:.1f}", f"{result['median_cpu_s'][command]:.1f}",
             ", ".join(f"{w:.1f}" for w in result["wall_s"][command])] for command in ("tracked", "no-track")]
    rows.append(["tracked / no-track", f"{result['ratio_wall']:.2f}x", f"{result['ratio_cpu']:.2f}x",
                 f"target <= {TARGET}x"])
    print(f"\n### {name}: `workbench run {Path(result['spec']).name}` "
          f"{' '.join('--set ' + o for o in result['overrides'])} [--no-track], median of {reps}; "
          f"tracked to a SQLite store (creating its tables first took {result['store_creation_s']:.1f} s, "
          "not counted)\n")
    print(markdown_table(["run", "wall s (median)", "CPU s (median)", "wall s (each)"], rows))
    if result["timings"]:
        keys: dict[str, None] = {}
        for entry in result["timings"]:
            for side in ("main", "agent"):
                for key in entry.get(side, {}):
                    keys[f"{side}: {key}"] = None
        lines = []
        for key in keys:
            side, what = key.split(": ", 1)
            values = [entry.get(side, {}).get(what, 0.0) for entry in result["timings"]]
            lines.append([("training process" if side == "main" else "tracking agent"), what, f"{median(values):.2f}"])
        print("\nWhere the tracking time went (median s over the tracked runs; the agent's work overlaps training "
              "until the training process hands the end over):\n")
        print(markdown_table(["process", "what", "s (median)"], lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--case", choices=("digits", "deep", "both"), default="both")
    parser.add_argument("--mnist", default=str(DEFAULT_MNIST_DIR), help="folder of the MNIST IDX files (deep case)")
    parser.add_argument("--spec", default=None, help="measure this spec instead of the cases")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", default=None, help="JSON results path")
    options = parser.parse_args()
    warn_if_busy()
    results = {}
    with tempfile.TemporaryDirectory(prefix="tracking-overhead-") as tmp:
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
        env.pop("WORKBENCH_PROGRESS", None)
        for name, (spec, overrides) in cases(options).items():
            results[name] = measure(name, spec, overrides, options.reps, Path(tmp), env)
    for name, result in results.items():
        print_case(name, result, options.reps)
    met = all(r["ratio_wall"] <= TARGET for r in results.values())
    path = save_results("tracking_overhead", {"reps": options.reps, "target": TARGET, "cases": results,
                                              "meets_target": met, "machine": machine_facts()}, options.out)
    print(f"\nresults: {path}", file=sys.stderr)
    if not met:
        sys.exit(1)


if __name__ == "__main__":
    main()
