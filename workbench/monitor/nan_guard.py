"""The NaN guard: stops a run at the first non-finite value and says where it appeared.

Two cheap checks per step: the batch loss after the forward pass (a float),
and the global gradient norm after the backward pass (shared with the monitor
and the clipper: a norm is finite iff every element is). Only when one fails
does it look for the culprit, scanning with `np.isfinite`:

1. forward: the layer outputs in forward order (`model.outputs`); the first
   non-finite one names the layer ("forward pass at layer dense3");
2. backward: from the output layer back, the gradient arriving at each
   layer's output (`model.grad_outputs`) then the layer's parameter gradients;
   the first non-finite one names the layer ("backward pass at layer dense1");
3. a non-finite loss with finite outputs names the loss ("forward pass at layer loss").

Then `trainer.stop(reason, FAILED)`, with reason like "non-finite value in
forward pass at layer dense3 (step 412, epoch 3)", and `event` holds
{step, epoch, layer, pass}. With a monitor attached, the failing step gets a
row in the record whatever the cadence, and the event goes into `record.meta`.
"""

from __future__ import annotations

import math

import numpy as np

from workbench.monitor.norms import gradient_norms
from workbench.training.hooks import Hook, hook_priority
from workbench.training.trainer import FAILED


def _finite(array: np.ndarray | None) -> bool:
    return array is None or bool(np.isfinite(array).all())


def first_nonfinite_output(model) -> str | None:
    """The first layer, in forward order, whose last output holds a NaN or Inf."""
    for layer in model.computation_order():  # inside a residual block, its layers before the sum
        if not _finite(model.outputs.get(layer.name)):
            return layer.name
    return None


def first_nonfinite_gradient(model) -> str | None:
    """The first layer, walking back from the output, whose incoming or parameter gradient is non-finite."""
    for layer, _ in reversed(list(model.walk())):
        if not _finite(model.grad_outputs.get(layer.name)):
            return layer.name
        if not all(_finite(g) for g in layer.grads.values()):
            return layer.name
    return None


class NanGuard(Hook):
    """Stop with status FAILED at the first NaN or Inf in the loss or the gradients."""

    priority = hook_priority("nan_guard")

    def __init__(self, monitor=None) -> None:
        self.monitor = monitor
        self.event: dict | None = None

    def on_train_begin(self, trainer) -> None:
        self.norms = gradient_norms(trainer)
        self.event = None

    def on_after_forward(self, trainer) -> None:
        if not math.isfinite(trainer.batch_loss):
            self._trip(trainer, "forward")

    def on_after_backward(self, trainer) -> None:
        if not math.isfinite(self.norms.compute(trainer)):
            self._trip(trainer, "backward")

    def _trip(self, trainer, stage: str) -> None:
        model = trainer.model
        layer, where = first_nonfinite_output(model), "forward"
        if layer is None and stage == "backward":
            layer, where = first_nonfinite_gradient(model), "backward"
        if layer is None:
            layer = "loss" if stage == "forward" else "unknown"
        self.event = {"step": int(trainer.step), "epoch": int(trainer.epoch), "layer": layer, "pass": where}
        if self.monitor is not None and self.monitor.record is not None:
            self.monitor.capture(trainer, stage)
            self.monitor.record.meta["nan_event"] = dict(self.event)
        trainer.stop(
            f"non-finite value in {where} pass at layer {layer} (step {trainer.step}, epoch {trainer.epoch})", FAILED
        )
