"""`Optimizer`: ties a chain of gradient transformations, a learning-rate schedule and the live parameters.

One step: the chain turns the gradients into updates in place, then
`p -= lr_t * u` in place, with lr_t = schedule(step_count). Parameters are
never rebound (the model holds the same arrays), their dtype never changes.

The state is data: `state_dict()` is a flat dict of numpy arrays with
npz-friendly keys ("step", "adam.count", "adam.m.dense1.W", ...), and
`load_state_dict` on an optimizer built the same way resumes bit for bit.
"""

from __future__ import annotations

from typing import Callable, Iterator

import numpy as np

from workbench.errors import UserError
from workbench.nn.optim.schedules import ConstantSchedule
from workbench.nn.optim.transforms import GradientTransformation, Params, chain


def _leaves(state: dict, prefix: str = "") -> Iterator[tuple[str, dict, str]]:
    """(flat key, container, slot) for every checkpointed value; "_" slots (scratch) are skipped."""
    for slot, value in state.items():
        if slot.startswith("_"):
            continue
        if isinstance(value, dict):
            yield from _leaves(value, f"{prefix}{slot}.")
        else:
            yield f"{prefix}{slot}", state, slot


class Optimizer:
    """Updates `params` in place from gradients through `transform` at the rate `schedule(step_count)`.

    `schedule` is a callable step -> lr, or a number for a constant rate.
    `step(grads)` consumes `grads`: their arrays are overwritten with the steps taken.
    `leaves_step_in_grads` declares that contract, so a monitor can read the update
    p_before - p_after from the gradient buffers instead of snapshotting the weights.
    """

    leaves_step_in_grads = True

    def __init__(self, params: Params, transform: GradientTransformation, schedule: Callable[[int], float] | float) -> None:
        self.params = params
        self.transform = chain(transform)  # always a chain: state keys read "<link>.<slot>.<param>"
        self.schedule = schedule if callable(schedule) else ConstantSchedule(float(schedule))
        self.state = self.transform.init(params)
        self.step_count = 0

    def lr(self) -> float:
        """The learning rate of the next step."""
        return float(self.schedule(self.step_count))

    def step(self, grads: Params) -> None:
        """p -= lr * u for every parameter, u the chain's update.

        `grads` is consumed: afterwards `grads[k]` holds the step just taken,
        lr * u = p_before - p_after (what an update-ratio monitor needs).
        """
        self.transform.update(grads, self.state, self.params)
        lr = self.lr()
        for key, param in self.params.items():
            update = grads[key]
            update *= lr
            param -= update
        self.step_count += 1

    def state_dict(self) -> dict[str, np.ndarray]:
        """A flat copy of the state: "step" and "<link>.<slot>[.<param>]" -> array (ints as int64 scalars)."""
        state = {"step": np.asarray(self.step_count, dtype=np.int64)}
        for key, container, slot in _leaves(self.state):
            value = container[slot]
            state[key] = value.copy() if isinstance(value, np.ndarray) else np.asarray(value)
        return state

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Restore a `state_dict()` taken from an optimizer built the same way (arrays filled in place)."""
        leaves = list(_leaves(self.state))
        expected = {"step"} | {key for key, _, _ in leaves}
        if set(state) != expected:
            missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
            raise UserError(
                f"optimizer state does not match this optimizer (missing: {', '.join(missing) or 'none'}; "
                f"unexpected: {', '.join(unexpected) or 'none'}); resume with the optimizer the checkpoint was made with"
            )
        for key, container, slot in leaves:
            value, target = np.asarray(state[key]), container[slot]
            if isinstance(target, np.ndarray):
                if value.shape != target.shape:
                    raise UserError(f"optimizer state {key!r} has shape {value.shape}, expected {target.shape}")
                target[...] = value
            else:
                container[slot] = type(target)(value.item())
        self.step_count = int(np.asarray(state["step"]).item())

    def __repr__(self) -> str:
        links = ", ".join(link.name for link in self.transform.links)
        return f"Optimizer(chain({links}), schedule={self.schedule!r}, step_count={self.step_count})"
