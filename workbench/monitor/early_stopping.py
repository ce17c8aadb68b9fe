"""Early stopping as a hook, with the semantics of Keras 3 `keras.callbacks.EarlyStopping`.

At each epoch end, for the value v of `monitor` in `trainer.logs` (from epoch
`start_from_epoch` on):

    wait += 1
    if v improves on best (min: v + min_delta < best; max: v - min_delta > best):
        best, best_epoch = v, epoch (and the weights, with restore_best_weights)
        if no baseline, or v also improves on the baseline: wait = 0
    elif wait >= patience and epoch > 0: stop (status FINISHED)

`best` starts at +inf (min) or -inf (max), so the first monitored epoch is
always the best so far; a baseline only decides whether `wait` restarts, so
a run that never beats it stops after `patience` epochs. With
`restore_best_weights`, the best weights (those of the first monitored epoch
if none is better) are loaded back in `on_train_end`, whether or not the run
was stopped, before the trainer evaluates the test split.

Beyond Keras: a non-finite monitored value stops the run with status FAILED;
a missing key warns once, listing the keys available (Keras warns every
epoch); `best` is reset in `on_train_begin` too, so an instance can be reused,
except right after `load_state_dict` (a resumed run keeps its state).
Epochs are 0-based, as `trainer.epoch`.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from workbench.errors import UserError
from workbench.training.hooks import Hook, hook_priority
from workbench.training.trainer import FAILED, FINISHED

MODES = ("min", "max", "auto")
_MAX_WORDS = ("accuracy", "acc", "auc", "r2", "f1", "precision", "recall")


def infer_mode(monitor: str) -> str:
    """'auto': max for accuracy-like names (accuracy, auc, r2, ...), min for losses and errors."""
    word = monitor.rpartition("/")[2].removeprefix("val_")
    if word in _MAX_WORDS:
        return "max"
    if "loss" in word or "error" in word or word in ("mse", "mae", "rmse"):
        return "min"
    raise UserError(f"early stopping cannot tell whether {monitor!r} should go down or up: set mode to 'min' or 'max'")


class EarlyStopping(Hook):
    """Stop when `monitor` has not improved for `patience` epochs (Keras 3 semantics; see module docstring)."""

    priority = hook_priority("early_stopping")

    def __init__(
        self,
        monitor: str = "val/loss",
        *,
        mode: str = "auto",
        patience: int = 0,
        min_delta: float = 0.0,
        baseline: float | None = None,
        restore_best_weights: bool = False,
        start_from_epoch: int = 0,
    ) -> None:
        if mode not in MODES:
            raise UserError(f"unknown early stopping mode {mode!r}; allowed: {', '.join(MODES)}")
        if int(patience) < 0 or int(start_from_epoch) < 0:
            raise UserError(
                f"early stopping patience and start_from_epoch must be >= 0, got {patience}, {start_from_epoch}"
            )
        self.monitor = str(monitor)
        self.mode = infer_mode(self.monitor) if mode == "auto" else mode
        self.patience = int(patience)
        self.min_delta = abs(float(min_delta))
        self.baseline = None if baseline is None else float(baseline)
        self.restore_best_weights = bool(restore_best_weights)
        self.start_from_epoch = int(start_from_epoch)
        self._loaded = False
        self._warned = False
        self._reset()

    def _reset(self) -> None:
        self.wait = 0
        self.best = math.inf if self.mode == "min" else -math.inf
        self.best_epoch = -1
        self.stopped_epoch = -1
        self.best_weights: dict[str, np.ndarray] | None = None

    def _improves(self, value: float, reference: float) -> bool:
        if self.mode == "min":
            return value + self.min_delta < reference
        return value - self.min_delta > reference

    # -- hook points -------------------------------------------------------------------
    def on_train_begin(self, trainer) -> None:
        if not self._loaded:
            self._reset()
        self._loaded = False

    def on_epoch_end(self, trainer, logs) -> None:
        epoch = int(trainer.epoch)
        if self.monitor not in logs:
            if not self._warned:
                warnings.warn(
                    f"early stopping monitors {self.monitor!r}, which is not in the logs; "
                    f"available: {', '.join(logs) or 'none'}",
                    stacklevel=2,
                )
                self._warned = True
            return
        value = float(logs[self.monitor])
        if not math.isfinite(value):
            self.stopped_epoch = epoch
            trainer.stop(f"early stopping: {self.monitor} is {value} at epoch {epoch}", FAILED)
            return
        if epoch < self.start_from_epoch:
            return
        if self.restore_best_weights and self.best_weights is None:
            self.best_weights, self.best_epoch = trainer.model.state_dict(), epoch
        self.wait += 1
        if self._improves(value, self.best):
            self.best, self.best_epoch = value, epoch
            if self.restore_best_weights:
                self.best_weights = trainer.model.state_dict()
            if self.baseline is None or self._improves(value, self.baseline):
                self.wait = 0
            return
        if self.wait >= self.patience and epoch > 0:
            self.stopped_epoch = epoch
            trainer.stop(
                f"early stopping: {self.monitor} did not improve for {self.wait} epochs "
                f"(best {self.best:.6g} at epoch {self.best_epoch})",
                FINISHED,
            )

    def on_train_end(self, trainer) -> None:
        if self.restore_best_weights and self.best_weights is not None:
            trainer.model.load_state_dict(self.best_weights)

    # -- checkpoints -------------------------------------------------------------------
    def state_dict(self) -> dict[str, np.ndarray]:
        """wait, best, best_epoch, stopped_epoch and the best weights (if any) as arrays."""
        state = {
            "early_stopping.wait": np.array(self.wait, np.int64),
            "early_stopping.best": np.array(self.best, np.float64),
            "early_stopping.best_epoch": np.array(self.best_epoch, np.int64),
            "early_stopping.stopped_epoch": np.array(self.stopped_epoch, np.int64),
        }
        for name, value in (self.best_weights or {}).items():
            state[f"early_stopping.best_weights.{name}"] = value.copy()
        return state

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Restore a `state_dict()`; the next `on_train_begin` keeps it (a resume, not a fresh run)."""
        self.wait = int(state["early_stopping.wait"])
        self.best = float(state["early_stopping.best"])
        self.best_epoch = int(state["early_stopping.best_epoch"])
        self.stopped_epoch = int(state["early_stopping.stopped_epoch"])
        prefix = "early_stopping.best_weights."
        weights = {key[len(prefix):]: np.array(value) for key, value in state.items() if key.startswith(prefix)}
        self.best_weights = weights or None
        self._loaded = True
