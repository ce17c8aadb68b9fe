"""The hook API: named points in the training loop, with no-op defaults.

Call order for one run (Keras-style; each point receives the trainer, which
exposes everything: model, optimizer, step, epoch, batch, loss, logs):

    on_train_begin
      per epoch:  on_epoch_begin
        per batch:  on_batch_begin -> forward + loss -> on_after_forward
                    -> backward -> on_after_backward (gradients complete, before the update:
                       monitoring and clipping live here) -> update -> on_after_update
        on_evaluate(split="val", metrics)  -> on_epoch_end(logs)
    on_train_end   (also after a stop, an exception or an interrupt; `trainer.status` says which)
    on_evaluate(split="test", metrics)     (only when training ended normally or was stopped)

Any hook may call `trainer.stop(reason)`; the loop ends after the current
batch. Hooks run in order of `priority` (lower first), then registration;
the built-in hooks take theirs from `HOOK_ORDER`, the one table of who runs
before whom (user hooks default to 0, between clipping and live diagnosis).
A point no registered hook overrides costs nothing per step.
"""

from __future__ import annotations

import itertools
import weakref
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from workbench.training.trainer import Trainer

HOOK_POINTS = (
    "on_train_begin",
    "on_epoch_begin",
    "on_batch_begin",
    "on_after_forward",
    "on_after_backward",
    "on_after_update",
    "on_evaluate",
    "on_epoch_end",
    "on_train_end",
)


# The order of the built-in hooks at every point, and why (lower runs first).
HOOK_ORDER: dict[str, int] = {
    "monitor": -30,  # records the step's statistics before anything stops or rescales it
    "gradient_snapshot": -25,  # copies dL/dW before the NaN guard stops or the clipper rescales it
    "nan_guard": -20,  # stops on a non-finite step, after the monitor recorded it
    "clipping": -10,  # rescales the gradients before the update, after the guard
    "early_stopping": -5,  # restores the best weights before tracking saves the model
    "user": 0,  # hooks without a priority of their own
    "live_diagnosis": 40,  # reads the monitor's row; tags and prunes before the tracker logs the epoch
    "study_objective": 40,  # reports the epoch to Optuna after early stopping, before the tracker
    "tracker": 50,  # logs what the hooks above produced
    "checkpoint": 90,  # saves once the monitor, early stopping and tracking have updated their state
    "progress": 100,  # prints last
}


def hook_priority(name: str) -> int:
    """The priority of a built-in hook, from `HOOK_ORDER`."""
    return HOOK_ORDER[name]


class Hook:
    """Base class: override the points you need; the rest cost nothing."""

    priority = HOOK_ORDER["user"]

    def on_train_begin(self, trainer: "Trainer") -> None: ...
    def on_epoch_begin(self, trainer: "Trainer") -> None: ...
    def on_batch_begin(self, trainer: "Trainer") -> None: ...
    def on_after_forward(self, trainer: "Trainer") -> None: ...
    def on_after_backward(self, trainer: "Trainer") -> None: ...
    def on_after_update(self, trainer: "Trainer") -> None: ...
    def on_evaluate(self, trainer: "Trainer", split: str, metrics: dict[str, float]) -> None: ...
    def on_epoch_end(self, trainer: "Trainer", logs: dict[str, float]) -> None: ...
    def on_train_end(self, trainer: "Trainer") -> None: ...

    def overridden_points(self) -> list[str]:
        return [p for p in HOOK_POINTS if getattr(type(self), p) is not getattr(Hook, p)]


class RemovableHandle:
    """Returned by `Trainer.register`; `remove()` unregisters the hook (also as a context manager)."""

    _ids = itertools.count()

    def __init__(self, registry: "HookRegistry") -> None:
        self.id = next(self._ids)
        self._registry = weakref.ref(registry)

    def remove(self) -> None:
        registry = self._registry()
        if registry is not None:
            registry.remove(self.id)

    def __enter__(self) -> "RemovableHandle":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.remove()


class HookRegistry:
    """Hooks by id, and per point the ordered list of bound methods to call."""

    def __init__(self) -> None:
        self._hooks: dict[int, Hook] = {}
        self.points: dict[str, list] = {p: [] for p in HOOK_POINTS}

    def add(self, hook: Hook) -> RemovableHandle:
        if not isinstance(hook, Hook):
            raise TypeError(f"hooks must subclass workbench.training.Hook, got {type(hook).__name__}")
        handle = RemovableHandle(self)
        self._hooks[handle.id] = hook
        self._rebuild()
        return handle

    def remove(self, hook_id: int) -> None:
        self._hooks.pop(hook_id, None)
        self._rebuild()

    def __iter__(self):
        return iter(self.ordered())

    def ordered(self) -> list[Hook]:
        return [hook for _, hook in sorted(self._hooks.items(), key=lambda item: (item[1].priority, item[0]))]

    def _rebuild(self) -> None:
        self.points = {p: [] for p in HOOK_POINTS}
        for hook in self.ordered():
            for point in hook.overridden_points():
                self.points[point].append(getattr(hook, point))
