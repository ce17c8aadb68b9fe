"""What this process may use of the machine (its cores and numpy's BLAS threads), and what /proc says of a process.

Shared by the optimizer (how many threads a blocked step uses) and the studies (how many BLAS
threads each worker gets); imports neither mlflow nor optuna.
"""

from __future__ import annotations

import os
from pathlib import Path


def proc_stat_fields(pid: int | str) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (state first: proc(5)'s field 3 is index 0, the parent's
    pid index 1, utime and stime 11 and 12, the start time 19); None without /proc or the process."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2:].split()


def cores() -> int:
    """The cores this process may run on (its CPU affinity; all of them where that is unknown)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


# The variables through which a user (or a test runner sharing the cores) caps BLAS threads.
BLAS_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS",
                         "VECLIB_MAXIMUM_THREADS")


def blas_thread_budget() -> int:
    """The BLAS threads this process may hand out: its cores, or fewer where the environment caps BLAS
    (OPENBLAS_NUM_THREADS=1 and the like: whoever set it shares the machine with others)."""
    budget = cores()
    for key in BLAS_THREAD_VARIABLES:
        value = os.environ.get(key, "").strip()
        if value.isdigit() and int(value) >= 1:
            budget = min(budget, int(value))
    return budget


def blas_threads_in_use() -> int:
    """Threads numpy's BLAS uses now (threadpoolctl); 1 when that cannot be told.

    numpy's own library where it can be told apart (a wheel's `numpy.libs/`): scipy's, loaded later by
    scikit-learn, keeps its own count, and numpy's products do not use it.
    """
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return 1
    import numpy

    blas = [info for info in threadpool_info() if info.get("user_api") == "blas"]
    home = os.path.dirname(numpy.__file__)
    own = [info for info in blas if str(info.get("filepath", "")).startswith((home + os.sep, home + ".libs" + os.sep))]
    return max((info.get("num_threads", 1) for info in own or blas), default=1)


def training_blas_threads(tracked: bool, asked: int | None = None) -> int | None:
    """BLAS threads for `workbench run`'s training process: `asked`, else one core less than the machine has
    when a tracking agent works beside it (None: leave BLAS as it is).

    Why: an agent at work on the core a BLAS thread needs makes every matrix product wait for that thread
    to be scheduled again; measured on 2 cores, digits_mlp trained 3x slower (fit 2.1 s untracked, 5.9-7 s
    tracked), while a second BLAS thread won 4% untracked (digits 4.3 -> 4.1 s, the deep MNIST run
    32.3 -> 31.2 s).
    """
    if asked is not None:
        return int(asked)
    available = cores()
    if tracked and available > 1:
        return min(available - 1, blas_threads_in_use())
    return None


def limit_blas_threads(threads: int | None):
    """A context in which numpy's BLAS uses at most `threads` threads (None: as it is)."""
    import contextlib

    if threads is None:
        return contextlib.nullcontext()
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=int(threads), user_api="blas")
