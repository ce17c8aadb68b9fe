"""Tracking overhead: wall time of `workbench run SPEC` with MLflow tracking vs `--no-track`.

    .venv/bin/python benchmarks/tracking_overhead.py [--reps 3] [--spec experiments/digits_mlp.toml]

Each repetition runs both commands as subprocesses (full monitoring, the spec as
it is), alternating which goes first; the overhead is median(tracked) /
median(untracked) over the repetitions. Tracked runs log to a SQLite store in a
temporary folder whose tables are created beforehand (a one-time cost of a new
store, reported separately). CPU time of the subprocesses (user + system) is
reported next to wall time: on a busy machine it is the steadier of the two.
Target: <= 1.25x. Results: a table on stdout and benchmarks/results/tracking_overhead-<time>.json.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import REPO_ROOT, machine_facts, markdown_table, median, save_results, warn_if_busy

TARGET = 1.25


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--spec", default=str(REPO_ROOT / "experiments" / "digits_mlp.toml"))
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", default=None, help="JSON results path")
    options = parser.parse_args()
    warn_if_busy()

    with tempfile.TemporaryDirectory(prefix="tracking-overhead-") as tmp:
        tmp = Path(tmp)
        uri = f"sqlite:///{tmp / 'mlflow.db'}"
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "MLFLOW_TRACKING_URI": uri}
        env.pop("WORKBENCH_PROGRESS", None)
        base = [sys.executable, "-m", "workbench", "run", options.spec, "--quiet"]
        base += [a for o in options.overrides for a in ("--set", o)]
        commands = {"tracked": base, "no-track": [*base, "--no-track"]}

        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", f"from mlflow import MlflowClient; MlflowClient({uri!r}).search_experiments()"],
                       check=True, capture_output=True, env=env)
        store_seconds = time.perf_counter() - start

        times: dict[str, list[tuple[float, float]]] = {name: [] for name in commands}
        for rep in range(options.reps):
            order = list(commands) if rep % 2 == 0 else list(reversed(commands))
            for name in order:
                times[name].append(timed_run(commands[name], tmp, env))
                wall, cpu = times[name][-1]
                print(f"rep {rep + 1} {name:>8}: {wall:6.1f} s wall, {cpu:6.1f} s CPU", file=sys.stderr, flush=True)

    wall = {name: median(w for w, _ in runs) for name, runs in times.items()}
    cpu = {name: median(c for _, c in runs) for name, runs in times.items()}
    ratio_wall, ratio_cpu = wall["tracked"] / wall["no-track"], cpu["tracked"] / cpu["no-track"]
    rows = [[name, f"{wall[name]:.1f}", f"{cpu[name]:.1f}", ", ".join(f"{w:.1f}" for w, _ in times[name])]
            for name in commands]
    rows.append(["tracked / no-track", f"{ratio_wall:.2f}x", f"{ratio_cpu:.2f}x", f"target <= {TARGET}x"])
    command = " ".join(["workbench", "run", Path(options.spec).name, "--quiet", *base[6:]])
    print(f"`{command}` [--no-track], median of {options.reps}; tracked to a SQLite store "
          f"(creating its tables first took {store_seconds:.1f} s, not counted)\n")
    print(markdown_table(["run", "wall s (median)", "CPU s (median)", "wall s (each)"], rows))
    path = save_results("tracking_overhead", {
        "spec": options.spec, "overrides": options.overrides, "reps": options.reps, "target": TARGET,
        "store_creation_s": store_seconds, "wall_s": {k: [w for w, _ in v] for k, v in times.items()},
        "cpu_s": {k: [c for _, c in v] for k, v in times.items()}, "median_wall_s": wall, "median_cpu_s": cpu,
        "ratio_wall": ratio_wall, "ratio_cpu": ratio_cpu, "meets_target": ratio_wall <= TARGET,
        "machine": machine_facts(),
    }, options.out)
    print(f"\nresults: {path}", file=sys.stderr)
    if ratio_wall > TARGET:
        sys.exit(1)


if __name__ == "__main__":
    main()
