"""What this process may use of the machine: its cores and numpy's BLAS threads.

Shared by the optimizer (how many threads a blocked step uses) and the studies (how many BLAS
threads each worker gets); imports neither mlflow nor optuna.
"""

from __future__ import annotations

import os


def cores() -> int:
    """The cores this process may run on (its CPU affinity; all of them where that is unknown)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def blas_threads_in_use() -> int:
    """Threads numpy's BLAS uses now (threadpoolctl); 1 when that cannot be told."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return 1
    return max((info.get("num_threads", 1) for info in threadpool_info() if info.get("user_api") == "blas"), default=1)
