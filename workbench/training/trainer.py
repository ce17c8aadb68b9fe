"""The training loop: mini-batch epochs, evaluation, and hook points.

The loop itself stays short; everything optional (monitoring, clipping, early
stopping, the NaN guard, tracking, live diagnosis) is a hook. See
`workbench.training.hooks` for the call order.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from workbench.nn.losses import Loss
from workbench.nn.model import Sequential
from workbench.training.hooks import Hook, HookRegistry, RemovableHandle
from workbench.training.metrics import accuracy, r2_score

FINISHED, FAILED, KILLED = "FINISHED", "FAILED", "KILLED"


@dataclass
class TrainResult:
    """How a fit ended and what it measured."""

    status: str
    reason: str | None
    epochs_run: int
    steps: int
    metrics: dict[str, float]
    history: dict[str, list[float]] = field(default_factory=dict)


class Trainer:
    """Trains `model` on `data` (an object with X_/y_ train, val, test arrays and `task`)."""

    def __init__(
        self,
        model: Sequential,
        loss: Loss,
        optimizer: Any,
        data: Any,
        *,
        epochs: int,
        batch_size: int,
        shuffle: bool = True,
        rng: np.random.Generator | None = None,
        hooks: tuple[Hook, ...] = (),
        eval_batch_size: int = 4096,
    ) -> None:
        self.model, self.loss, self.optimizer, self.data = model, loss, optimizer, data
        self.epochs, self.batch_size, self.shuffle = int(epochs), int(batch_size), bool(shuffle)
        self.rng = rng if rng is not None else np.random.default_rng(0)
        self.eval_batch_size = eval_batch_size
        # A gradient-free optimizer (workbench.training.evolution) evaluates its population itself:
        # `output, loss = optimizer.evaluate(model, loss, xb, yb)` replaces forward + loss, and there is
        # no backward pass (on_after_backward is not called); `optimizer.step(grads)` then updates.
        self.gradient_free = not getattr(optimizer, "uses_gradients", True)
        self.hooks = HookRegistry()
        for hook in hooks:
            self.register(hook)
        n = len(data.X_train)
        self.steps_per_epoch = max(1, math.ceil(n / self.batch_size))
        # Loop state, readable by hooks.
        self.epoch = 0            # index of the current (or next) epoch, 0-based
        self.step = 0             # number of completed updates
        self.batch_index = 0
        self.xb: np.ndarray | None = None
        self.yb: np.ndarray | None = None
        self.output: np.ndarray | None = None
        self.batch_loss = float("nan")
        self.logs: dict[str, float] = {}
        self.history: dict[str, list[float]] = {}
        self.status = "RUNNING"
        self.stop_reason: str | None = None
        self.stop_requested = False
        self._stop_status = FINISHED

    # -- hook API ----------------------------------------------------------------
    def register(self, hook: Hook) -> RemovableHandle:
        """Add a hook; the returned handle's `remove()` takes it out again."""
        return self.hooks.add(hook)

    def stop(self, reason: str, status: str = FINISHED) -> None:
        """Ask the loop to end after the current batch; FAILED marks a divergence."""
        if not self.stop_requested:
            self.stop_requested, self.stop_reason, self._stop_status = True, reason, status

    def _call(self, point: str, *args: Any) -> None:
        for fn in self.hooks.points[point]:
            fn(self, *args)

    # -- evaluation ----------------------------------------------------------------
    def evaluate(self, split: str) -> dict[str, float]:
        """Loss and accuracy (or R^2) on one split, in evaluation mode; notifies `on_evaluate`."""
        X, y = getattr(self.data, f"X_{split}"), getattr(self.data, f"y_{split}")
        if len(X) == 0:
            return {}
        output = self.model.predict(X, self.eval_batch_size)
        loss_value, _ = self.loss(output, y)
        metrics = {f"{split}/loss": loss_value}
        if self.data.task == "classification":
            metrics[f"{split}/accuracy"] = accuracy(self.loss.predict(output), y)
        else:
            metrics[f"{split}/r2"] = r2_score(output, y)
        self._call("on_evaluate", split, metrics)
        return metrics

    # -- the loop --------------------------------------------------------------------
    def fit(self) -> TrainResult:
        """Run the epochs; returns how it ended. Interrupts and exceptions propagate after `on_train_end`."""
        self.status = "RUNNING"
        try:
            self._call("on_train_begin")
            while self.epoch < self.epochs and not self.stop_requested:
                self._run_epoch()
                if not self.stop_requested:
                    self.epoch += 1
            self.status = self._stop_status if self.stop_requested else FINISHED
        except KeyboardInterrupt:
            self.status, self.stop_reason = KILLED, self.stop_reason or "interrupted"
            self._call("on_train_end")
            raise
        except Exception as exc:
            self.status, self.stop_reason = FAILED, f"{type(exc).__name__}: {exc}"
            self._call("on_train_end")
            raise
        self._call("on_train_end")
        metrics = dict(self.logs)
        if self.status != KILLED and all(math.isfinite(v) for v in self.logs.values()):
            metrics.update(self.evaluate("test"))
        return TrainResult(self.status, self.stop_reason, self.epoch + (1 if self.stop_requested else 0),
                           self.step, metrics, self.history)

    def _run_epoch(self) -> None:
        X, y, bs = self.data.X_train, self.data.y_train, self.batch_size
        n = len(X)
        self._call("on_epoch_begin")
        order = self.rng.permutation(n) if self.shuffle else np.arange(n)
        model, loss_fn, optimizer = self.model, self.loss, self.optimizer
        params_grads = model.gradients()
        total, seen = 0.0, 0
        for self.batch_index, start in enumerate(range(0, n, bs)):
            index = order[start : start + bs]
            self.xb, self.yb = X[index], y[index]
            self._call("on_batch_begin")
            if self.gradient_free:  # forward passes only: no backward pass, no on_after_backward
                self.output, self.batch_loss = optimizer.evaluate(model, loss_fn, self.xb, self.yb)
                self._call("on_after_forward")
                if self.stop_requested:
                    break
            else:
                self.output = model.forward(self.xb, training=True)
                self.batch_loss, grad = loss_fn(self.output, self.yb)
                self._call("on_after_forward")
                if self.stop_requested:
                    break
                model.backward(grad)
                self._call("on_after_backward")
                if self.stop_requested:
                    break
            optimizer.step(params_grads)
            self.step += 1
            total += self.batch_loss * len(index)
            seen += len(index)
            self._call("on_after_update")
            if self.stop_requested:
                break
        self.logs = {"epoch": float(self.epoch), "train/loss": total / seen if seen else float("nan")}
        if not (self.stop_requested and self._stop_status == FAILED):
            self.logs.update(self.evaluate("val"))
        for key, value in self.logs.items():
            self.history.setdefault(key, []).append(value)
        self._call("on_epoch_end", self.logs)

    # -- checkpoints -------------------------------------------------------------------
    def state_dict(self) -> dict[str, np.ndarray]:
        """Loop position, shuffling RNG and history as arrays (weights and optimizer state live elsewhere)."""
        return {
            "trainer.epoch": np.array(self.epoch),
            "trainer.step": np.array(self.step),
            "trainer.rng": np.array(json.dumps(self.rng.bit_generator.state)),
            "trainer.history": np.array(json.dumps(self.history)),
        }

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        self.epoch = int(state["trainer.epoch"])
        self.step = int(state["trainer.step"])
        self.rng.bit_generator.state = json.loads(str(state["trainer.rng"]))
        self.history = json.loads(str(state["trainer.history"]))
