"""Monitoring hooks: per-layer statistics, gradient clipping, early stopping, the NaN guard.

    hooks = build_monitor_hooks(every=1, clipping_mode="global_norm", max_norm=1.0,
                                early_stopping={"monitor": "val/loss", "patience": 10,
                                                "restore_best_weights": True})
    trainer = Trainer(model, loss, optimizer, data, epochs=50, batch_size=32, hooks=tuple(hooks))
    trainer.fit()
    record = hooks.record                      # the StatsRecord (also hooks.monitor.record)
    record.layer("grad_norm")                  # rows x layers, float32
    record.series("update_ratio", "dense1")    # one layer's column
    record.global_("grad_norm_global"), record.steps, record.epochs
    record.save("stats.npz"); load_record("stats.npz")

- record.py: `StatsRecord` (preallocated columns, bounded memory: when `max_records`
  rows are full, every other row is dropped and the cadence doubles), `load_record`.
- statistics.py: `StatisticsMonitor`, the statistics and their definitions.
- norms.py: `GradientNorms`, the one gradient-norm computation per step that the
  monitor, the clipper and the NaN guard share.
- clipping.py, early_stopping.py, nan_guard.py: the other hooks.
- gradient_snapshot.py: `GradientSnapshot`, the last dL/dW per layer (the gradient histograms' input).

Hook priorities (lower runs first at each point): monitor -30, NaN guard -20,
clipping -10, early stopping -5, default 0. So the record holds pre-clip norms,
the NaN guard sees gradients before clipping touches them, and early stopping
restores the best weights before a tracking hook saves the model.

Reading while training (tracking, live diagnosis): a step's built-in values land in
the record at the monitor's `on_after_update`, so read from that point on (priority
above -30), taking `record.rows_after(last_step_read)`: it stays right when the
record compacts. Rows of steps cut short (NaN guard) hold what was computed, NaN
for the rest.

A user hook can add its own statistics to the record; columns are created on
first use, saved and loaded like the built-ins, and follow the monitor's cadence
(`record.recording` is False on steps without a row):

    import numpy as np
    from workbench.training import Hook

    class WeightMaxHook(Hook):
        '''Records the largest absolute weight of each dense layer and the batch size.'''

        def __init__(self, monitor):
            self.monitor = monitor                     # its record exists once training begins

        def on_after_backward(self, trainer):        # default priority 0: after the monitor
            record = self.monitor.record
            if not record.recording:                   # this step is off the monitor's cadence
                return
            for layer in trainer.model.dense_layers:
                record.log_layer("weight_absmax", layer.name, float(np.abs(layer.params["W"]).max()))
            record.log("batch_size", len(trainer.xb))

    hooks = build_monitor_hooks(every=4)
    trainer = Trainer(..., hooks=(*hooks, WeightMaxHook(hooks.monitor)))
    trainer.fit()
    hooks.record.series("weight_absmax", "dense1")

This package imports neither mlflow, optuna nor matplotlib.
"""

from __future__ import annotations

from workbench.errors import UserError
from workbench.monitor.clipping import CLIPPING_MODES, GradientClipping
from workbench.monitor.early_stopping import EarlyStopping
from workbench.monitor.gradient_snapshot import GradientSnapshot
from workbench.monitor.nan_guard import NanGuard
from workbench.monitor.norms import GradientNorms, gradient_norms
from workbench.monitor.record import StatsRecord, load_record
from workbench.monitor.statistics import GLOBAL_STATS, LAYER_STATS, StatisticsMonitor

EARLY_STOPPING_KEYS = ("enabled", "monitor", "mode", "patience", "min_delta", "baseline",
                       "restore_best_weights", "start_from_epoch")


class MonitorHooks(list):
    """The hooks `build_monitor_hooks` made, in a list; `.monitor`, `.record` and the others by name."""

    monitor: StatisticsMonitor
    nan_guard: NanGuard | None
    clipping: GradientClipping | None
    early_stopping: EarlyStopping | None

    @property
    def record(self) -> StatsRecord | None:
        """The monitor's record (created when training begins)."""
        return self.monitor.record


def build_monitor_hooks(
    *,
    every: int = 1,
    max_records: int = 100_000,
    clipping_mode: str = "none",
    max_norm: float = 1.0,
    max_value: float = 1.0,
    nan_guard: bool = True,
    early_stopping: dict | None = None,
) -> MonitorHooks:
    """The statistics monitor, then the NaN guard, clipping and early stopping as configured.

    `early_stopping` takes the keyword arguments of `EarlyStopping` (monitor, mode, patience,
    min_delta, baseline, restore_best_weights, start_from_epoch) and optionally `enabled`.
    """
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise UserError(f"monitor.every must be an integer >= 1, got {every!r}")
    if isinstance(max_records, bool) or not isinstance(max_records, int) or max_records < 2:
        raise UserError(f"monitor max_records must be an integer >= 2, got {max_records!r}")
    if clipping_mode not in CLIPPING_MODES:
        raise UserError(f"unknown clipping mode {clipping_mode!r}; allowed: {', '.join(CLIPPING_MODES)}")
    hooks = MonitorHooks()
    hooks.monitor = StatisticsMonitor(every=every, max_records=max_records)
    hooks.append(hooks.monitor)
    hooks.nan_guard = NanGuard(monitor=hooks.monitor) if nan_guard else None
    hooks.clipping = (
        GradientClipping(clipping_mode, max_norm=max_norm, max_value=max_value) if clipping_mode != "none" else None
    )
    hooks.early_stopping = None
    if early_stopping is not None:
        settings = dict(early_stopping)
        unknown = sorted(set(settings) - set(EARLY_STOPPING_KEYS))
        if unknown:
            raise UserError(
                f"unknown early stopping setting(s) {', '.join(unknown)}; allowed: {', '.join(EARLY_STOPPING_KEYS)}"
            )
        if settings.pop("enabled", True):
            hooks.early_stopping = EarlyStopping(**settings)
    hooks.extend(h for h in (hooks.nan_guard, hooks.clipping, hooks.early_stopping) if h is not None)
    return hooks


__all__ = [
    "CLIPPING_MODES",
    "GLOBAL_STATS",
    "LAYER_STATS",
    "EarlyStopping",
    "GradientClipping",
    "GradientNorms",
    "GradientSnapshot",
    "MonitorHooks",
    "NanGuard",
    "StatisticsMonitor",
    "StatsRecord",
    "build_monitor_hooks",
    "gradient_norms",
    "load_record",
]
