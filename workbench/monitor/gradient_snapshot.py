"""A hook that keeps a copy of the last weight gradients, for `gradient_histograms`.

Why a copy: `optimizer.step(grads)` consumes the gradient arrays (afterwards they hold
the step taken, lr * u, see `workbench.nn.optim.Optimizer.step`), so after `fit()`
`model.gradients()` are no longer dL/dW. This hook copies each dense layer's dL/dW
into preallocated buffers right after the backward pass, before clipping or the
update touch them: one `np.copyto` per layer per step into preallocated buffers (for a
64-256-128-10 MLP about 15 microseconds, a few percent of a step), so the snapshot is
always the last backward pass, the failing one of a diverged run included.

    snapshot = GradientSnapshot()
    run.trainer.register(snapshot)
    run.trainer.fit()
    save_run_plots(out, record=run.record, history=run.trainer.history, gradients=snapshot.gradients)

If training stops on a NaN in the forward pass, no backward ran for that step and the
snapshot holds the last step that had one (`snapshot.step` says which).
"""

from __future__ import annotations

import numpy as np

from workbench.training.hooks import Hook, hook_priority


class GradientSnapshot(Hook):
    """Copies of dL/dW per dense layer (`gradients`, keyed by layer name) from the last copied step."""

    priority = hook_priority("gradient_snapshot")

    def __init__(self) -> None:
        self.step: int | None = None  # the optimizer step the copies come from (None before any)
        self._copies: dict[str, np.ndarray] = {}
        self._pairs: list[tuple[np.ndarray, np.ndarray]] = []

    @property
    def gradients(self) -> dict[str, np.ndarray]:
        """Layer name -> dL/dW of step `step`; empty before the first backward pass."""
        return self._copies if self.step is not None else {}

    def on_train_begin(self, trainer) -> None:
        layers = trainer.model.weighted_layers
        self._copies = {layer.name: np.empty_like(layer.grads[layer.weights[0]]) for layer in layers}
        self._pairs = [(self._copies[layer.name], layer.grads[layer.weights[0]]) for layer in layers]
        self.step = None

    def on_after_backward(self, trainer) -> None:
        for copy, live in self._pairs:
            np.copyto(copy, live)
        self.step = int(trainer.step)
