"""What the plots read from a statistics record, tolerant of what a record lacks.

A record (see `workbench.monitor.record.StatsRecord`) has `layers`, `steps`,
`epochs`, `layer(stat) -> (rows x layers)` and `global_(name) -> (rows,)`.
The plots only ask through these helpers, so an older record missing a
statistic yields no plot rather than an exception.
"""

from __future__ import annotations

import numpy as np


def n_rows(record) -> int:
    """How many rows (recorded steps) the record holds; 0 for None."""
    return 0 if record is None else len(np.asarray(record.steps))


def layer_stat(record, stat: str) -> np.ndarray | None:
    """The (rows x layers) array of a per-layer statistic, as float; None when absent or empty."""
    if n_rows(record) == 0 or not list(record.layers):
        return None
    try:
        values = np.asarray(record.layer(stat), dtype=float)
    except (KeyError, ValueError):
        return None
    if values.ndim != 2 or values.shape[0] == 0:
        return None
    return values


def global_stat(record, name: str) -> np.ndarray | None:
    """A global statistic (one value per row), as float; None when absent or empty."""
    if n_rows(record) == 0:
        return None
    try:
        values = np.asarray(record.global_(name), dtype=float)
    except (KeyError, ValueError):
        return None
    return values if values.ndim == 1 and len(values) else None


def run_label(record) -> str:
    """A short description for titles: activation and depth, when the record knows them."""
    parts = []
    activation = getattr(record, "activation", None)
    if activation:
        parts.append(str(activation))
    if record is not None and list(record.layers):
        parts.append(f"{len(record.layers)} dense layers")
    return f" ({', '.join(parts)})" if parts else ""
