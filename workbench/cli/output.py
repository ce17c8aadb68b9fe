"""Human output helpers shared by the subcommands."""

from __future__ import annotations

import os
import sys
from typing import TextIO


def is_interactive() -> bool:
    """Progress is for terminals; WORKBENCH_PROGRESS=1 forces it on (logs, CI)."""
    return os.environ.get("WORKBENCH_PROGRESS") == "1" or sys.stderr.isatty()


def print_metrics(outcome, stream: TextIO) -> None:
    print(f"status: {outcome.status}" + (f" ({outcome.reason})" if outcome.reason else ""), file=stream)
    if outcome.run_id:
        print(f"run id: {outcome.run_id}", file=stream)
    for key, value in sorted(outcome.metrics.items()):
        if key != "epoch":
            print(f"{key:>16}: {value:.4f}", file=stream)
