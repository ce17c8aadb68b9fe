"""Small helpers shared by the benchmarks: paths, machine facts, timing, tables, JSON results.

The benchmarks are scripts (`python benchmarks/<name>.py`), not a package:
importing this module puts the repository root on `sys.path`, so `workbench`
imports without an install.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"  # gitignored
DEFAULT_MNIST_DIR = REPO_ROOT.parent / "shared" / "data" / "mnist"

if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except (OSError, AttributeError):
        return None


def blas_info() -> list[dict]:
    """numpy's BLAS libraries as threadpoolctl sees them (name, version, threads, architecture)."""
    import numpy  # noqa: F401  (loads the BLAS so threadpoolctl finds it)
    from threadpoolctl import threadpool_info

    keep = ("internal_api", "version", "num_threads", "architecture", "threading_layer")
    return [{k: info.get(k) for k in keep} for info in threadpool_info() if info.get("user_api") == "blas"]


def blas_threads() -> int:
    """Threads numpy's BLAS uses now (the largest, if several BLAS libraries are loaded)."""
    return max((info["num_threads"] for info in blas_info()), default=1)


def machine_facts() -> dict:
    import numpy as np

    facts = {
        "cpu": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "blas": blas_info(),
        "load_average_1min_at_start": load_average(),
    }
    for name in ("sklearn", "torch"):
        try:
            module = __import__(name)
            facts[name] = module.__version__
        except ImportError:
            facts[name] = None
    return facts


def warn_if_busy(threshold: float = 0.5) -> None:
    """Timings on a shared 2-core machine are only meaningful when it is idle: say so when it is not."""
    load = load_average()
    if load is not None and load > threshold:
        print(f"warning: 1-minute load average is {load} before the run: other processes will distort the timings",
              file=sys.stderr)


def median(values) -> float:
    return float(statistics.median(values))


class Stopwatch:
    """`with Stopwatch() as sw: ...; sw.seconds` (perf_counter)."""

    def __enter__(self) -> "Stopwatch":
        self.start = time.perf_counter()
        self.seconds = float("nan")
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self.start


def markdown_table(headers: list[str], rows: list[list]) -> str:
    """A GitHub-flavoured markdown table; numbers are expected pre-formatted as strings."""
    cells = [[str(c) for c in row] for row in rows]
    widths = [max(len(str(h)), *(len(r[i]) for r in cells)) if cells else len(str(h)) for i, h in enumerate(headers)]
    line = lambda values: "| " + " | ".join(v.ljust(w) for v, w in zip(values, widths)) + " |"  # noqa: E731
    out = [line([str(h) for h in headers]), "| " + " | ".join("-" * w for w in widths) + " |"]
    out += [line(r) for r in cells]
    return "\n".join(out)


def save_results(name: str, payload: dict, path: str | Path | None = None) -> Path:
    """Write `payload` as JSON to `path`, or to benchmarks/results/<name>-<UTC time>.json; returns the path."""
    if path is None:
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        path = RESULTS_DIR / f"{name}-{stamp}.json"
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"benchmark": name, "utc": datetime.now(timezone.utc).isoformat(timespec="seconds"), **payload}
    path.write_text(json.dumps(payload, indent=2, default=_jsonable) + "\n")
    return path


def _jsonable(value):
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")
