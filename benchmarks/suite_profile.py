"""Where the test suite's time goes: the CPU of every process it starts, by kind, and how busy the cores were.

    .venv/bin/python benchmarks/suite_profile.py [PYTEST ARGS ...]     (default: the whole suite, `-q`)

Runs pytest as the README does (one worker per core) while reading /proc every 0.25 s: for each process
descending from that pytest, its command line, its parent and its CPU time (user + system) at its last
sample. The processes are then summed by kind (the pytest workers, the tracking agents, `workbench`
commands, study scripts, fork servers, mlflow servers, PostgreSQL; a forked child is counted apart from its
parent) into CPU seconds, process counts and shares, beside the wall time and the share of the cores that
was busy. A suite on 2 cores that keeps both busy cannot run faster than its CPU seconds / 2: this says which
processes to make cheaper or fewer. A process that lives less than one sample is missed (it costs little).
Linux only. Results: a table on stdout and benchmarks/results/suite_profile-<time>.json.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections import Counter

from _common import REPO_ROOT, machine_facts, markdown_table, save_results, warn_if_busy

from workbench.machine import proc_stat_fields

INTERVAL_S = 0.25
TICKS = os.sysconf("SC_CLK_TCK")
KINDS = (  # (kind, pattern of the command line), first match wins
    ("pytest worker", r"exec\(eval\(sys\.stdin"),
    ("pytest", r"-m pytest"),
    ("tracking agent", r"workbench\.tracking\.agent"),
    ("mlflow server", r"mlflow server|uvicorn|gunicorn|huey"),
    ("fork server (spawned)", r"multiprocessing\.forkserver"),
    ("multiprocessing spawn", r"multiprocessing\.spawn"),
    ("resource tracker", r"resource_tracker"),
    ("postgres", r"postgres"),
    ("workbench command", r"-m workbench\b|bin/workbench\b"),
    ("study script", r"\bstudy|studies/"),
)


def kind_of(command: str) -> str:
    for kind, pattern in KINDS:
        if re.search(pattern, command):
            return kind
    script = re.search(r"(\S+\.py)\b", command)
    return f"script {os.path.basename(script.group(1))}" if script else "other"


def sample(seen: dict) -> None:
    """Record every process's parent, command line (at first sight) and CPU seconds (at each sight)."""
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        fields = proc_stat_fields(name)
        if fields is None:  # the process ended meanwhile
            continue
        try:
            key = (int(name), fields[19])  # pid and start time: a reused pid is another process
            cpu = (int(fields[11]) + int(fields[12])) / TICKS
            if key not in seen:
                with open(f"/proc/{name}/cmdline", "rb") as f:
                    command = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
                seen[key] = {"pid": int(name), "ppid": int(fields[1]), "command": command, "cpu": cpu}
            else:
                seen[key]["cpu"] = cpu
        except (OSError, ValueError, IndexError):  # the process ended meanwhile
            continue


def descendants(processes: list[dict], root: int) -> list[dict]:
    children: dict[int, list[dict]] = {}
    for p in processes:
        children.setdefault(p["ppid"], []).append(p)
    out, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child["pid"])
    return out


def main(argv: list[str]) -> int:
    if not os.path.isdir("/proc"):
        print("suite_profile: needs Linux's /proc", file=sys.stderr)
        return 2
    warn_if_busy()
    seen: dict = {}
    started = time.monotonic()
    suite = subprocess.Popen([sys.executable, "-m", "pytest", *(argv or ["-q"])], cwd=REPO_ROOT)
    while suite.poll() is None:
        sample(seen)
        time.sleep(INTERVAL_S)
    wall = time.monotonic() - started
    processes = list(seen.values())
    ours = [p for p in processes if p["pid"] == suite.pid] + descendants(processes, suite.pid)
    by_pid = {p["pid"]: p for p in ours}
    cpu, count = Counter(), Counter()
    for p in ours:
        kind = kind_of(p["command"])
        parent = by_pid.get(p["ppid"])
        if parent is not None and parent["command"] == p["command"]:
            kind += " (forked child)"
        cpu[kind] += p["cpu"]
        count[kind] += 1
    total = sum(cpu.values())
    cores = len(os.sched_getaffinity(0))
    rows = [[kind, f"{seconds:.1f}", str(count[kind]), f"{seconds / total:.0%}"] for kind, seconds in cpu.most_common()]
    print(markdown_table(["processes", "CPU s", "count", "share"], rows))
    print(f"\npytest exit {suite.returncode}; wall {wall:.0f} s; CPU {total:.0f} s on {cores} cores: "
          f"busy {total / (wall * cores):.0%}; the floor at this CPU is {total / cores:.0f} s")
    path = save_results("suite_profile", {"machine": machine_facts(), "pytest_args": argv, "exit": suite.returncode,
                                          "wall_s": wall, "cpu_s": total, "cores": cores,
                                          "by_kind": {k: {"cpu_s": v, "count": count[k]} for k, v in cpu.items()}})
    print(f"results: {path.relative_to(REPO_ROOT)}")
    return suite.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
