"""The rule contract, the column readers every rule shares, and the registry `RULES`.

A rule turns rows [start, stop) of a statistics record into `Signals` (per row: does its
condition hold, in which layers, and the number behind it), and describes a finding from the
rows where it held (`describe(evidence) -> Finding`). Conditions are vectorized over rows and
read only those rows (plus a trailing window for the loss trend), so the live diagnosis costs
the same per step however long the run. The numbers come from `thresholds`.
"""

from __future__ import annotations

import warnings

import numpy as np

from workbench.diagnose.context import RunContext
from workbench.diagnose.engine import Evidence, Signals
from workbench.diagnose.findings import Finding
from workbench.diagnose.thresholds import LOSS_MIN_ROWS, LOSS_WINDOW


class Rule:
    """One verdict: `evaluate` rows into signals, `describe` a finding. Persistent unless said otherwise;
    `holds_at_end` rules are dropped at the final update when the run no longer shows the condition."""

    verdict = ""
    persistent = True
    holds_at_end = False

    def evaluate(self, record, start: int, stop: int, ctx: RunContext, state: dict) -> Signals:
        raise NotImplementedError

    def describe(self, ev: Evidence) -> Finding:
        raise NotImplementedError

    def resolved(self, track, record) -> bool:
        """For `holds_at_end` rules, at the final update: the run grew out of the condition (by default:
        it no longer holds over the last window)."""
        return not track.holds_at_end()


def nothing(n: int, n_layers: int) -> Signals:
    """No row holds (a statistic the rule needs is missing, or the net is too shallow for it)."""
    return Signals(np.zeros(n, bool), np.full(n, np.nan), np.zeros((n, n_layers), bool))


def layer_stat(record, stat: str, rows=slice(None)) -> np.ndarray | None:
    """rows x layers of a per-layer statistic as float64, or None when the record lacks it."""
    if stat not in record.layer_stats():
        return None
    return np.asarray(record.layer(stat)[rows], dtype=np.float64)


def global_stat(record, name: str, rows=slice(None)) -> np.ndarray | None:
    if name not in record.global_stats():
        return None
    return np.asarray(record.global_(name)[rows], dtype=np.float64)


def _quiet(fn, values: np.ndarray, **kw) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows give NaN, silently
        return fn(values, **kw)


def row_median(values: np.ndarray) -> np.ndarray:
    return _quiet(np.nanmedian, values, axis=1)


def row_max(values: np.ndarray) -> np.ndarray:
    return _quiet(np.nanmax, values, axis=1)


def median(values) -> float:
    values = np.asarray(values, dtype=np.float64).ravel()
    values = values[np.isfinite(values)]
    return float(np.median(values)) if len(values) else float("nan")


def quantile(values, q: float) -> float:
    values = np.asarray(values, dtype=np.float64).ravel()
    values = values[np.isfinite(values)]
    return float(np.quantile(values, q)) if len(values) else float("nan")


def per_layer(names: list[str], values: np.ndarray) -> dict[str, float]:
    """{layer: median over rows} of a rows x layers block."""
    if values.ndim == 1:
        return {name: float(v) for name, v in zip(names, values, strict=True)}
    return {name: median(values[:, j]) for j, name in enumerate(names)}


def loss_trend(record, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row of [start, stop): the loss improvement across its trailing window and the recent mean.

    The window is the LOSS_WINDOW rows ending at the row; improvement = 1 - mean(second half) /
    mean(first half) (positive: falling). NaN where fewer than LOSS_MIN_ROWS rows or no loss.
    Non-finite losses are left out (divergence has its own rule).
    """
    n = stop - start
    loss = global_stat(record, "loss", slice(max(0, start - LOSS_WINDOW + 1), stop))
    if loss is None:
        return np.full(n, np.nan), np.full(n, np.nan)
    offset = len(loss) - n
    ok = np.isfinite(loss)
    sums = np.concatenate([[0.0], np.cumsum(np.where(ok, loss, 0.0))])
    counts = np.concatenate([[0], np.cumsum(ok)])
    end = np.arange(offset, offset + n) + 1  # exclusive
    begin = np.maximum(end - LOSS_WINDOW, 0)
    middle = (begin + end) // 2
    n1, n2 = counts[middle] - counts[begin], counts[end] - counts[middle]
    with np.errstate(divide="ignore", invalid="ignore"):
        first = (sums[middle] - sums[begin]) / n1
        second = (sums[end] - sums[middle]) / n2
        improvement = 1.0 - second / first
    valid = (end - begin >= LOSS_MIN_ROWS) & (n1 > 0) & (n2 > 0) & (first > 0)
    return np.where(valid, improvement, np.nan), np.where(n2 > 0, second, np.nan)


def _registry() -> list[Rule]:
    from workbench.diagnose.gradient_rules import Divergence, ExplodingGradients, VanishingGradients
    from workbench.diagnose.lr_rules import LearningRateTooHigh, LearningRateTooLow
    from workbench.diagnose.time_rules import ExplodingThroughTime, VanishingThroughTime
    from workbench.diagnose.unit_rules import BadInitialization, DeadUnits, SaturatedUnits

    return [Divergence(), ExplodingGradients(), ExplodingThroughTime(), BadInitialization(), DeadUnits(),
            LearningRateTooHigh(), VanishingGradients(), VanishingThroughTime(), SaturatedUnits(), LearningRateTooLow()]


def __getattr__(name: str):
    """`RULES`, built on first use: the rule modules import this one, so any of them may be imported first."""
    if name == "RULES":
        rules = _registry()
        globals()["RULES"] = rules
        return rules
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
