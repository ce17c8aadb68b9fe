"""`Optimizer`: ties a chain of gradient transformations, a learning-rate schedule and the live parameters.

One step: the chain turns the gradients into updates in place, then
`p -= lr_t * u` in place, with lr_t = schedule(step_count). Parameters are
never rebound (the model holds the same arrays), their dtype never changes.

The state is data: `state_dict()` is a flat dict of numpy arrays with
npz-friendly keys ("step", "adam.count", "adam.m.dense1.W", ...), and
`load_state_dict` on an optimizer built the same way resumes bit for bit.

Blocked steps: the update is a chain of elementwise passes over every parameter
(Adam: 13), memory-bound once the parameters outgrow the cache. From
`BLOCKED_MIN_SIZE` parameters on, a step runs the whole chain on one block of
`BLOCK_SIZE` elements after the other, so a block stays in cache across the
passes, and splits the blocks among `threads` threads (numpy releases the GIL in
its loops). Every element sees the same operations in the same order as in the
plain step, so the result is bit for bit the same.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterator

import numpy as np

from workbench.errors import UserError
from workbench.machine import blas_threads_in_use, cores
from workbench.nn.optim.schedules import ConstantSchedule
from workbench.nn.optim.transforms import GradientTransformation, Params, chain, link_names, param_slots

BLOCKED_MIN_SIZE = 1 << 17  # parameters; below, blocks and threads cost more than they save
BLOCK_SIZE = 1 << 17  # elements per block (512 KiB per float32 buffer)


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

    def __init__(self, params: Params, transform: GradientTransformation, schedule: Callable[[int], float] | float,
                 *, threads: int | None = None) -> None:
        self.params = params
        self.transform = chain(transform)  # always a chain: state keys read "<link>.<slot>.<param>"
        self.schedule = schedule if callable(schedule) else ConstantSchedule(float(schedule))
        self.state = self.transform.init(params)
        self.step_count = 0
        self.threads = threads  # blocked steps: None = as many as numpy's BLAS uses, at most the cores
        self._size = sum(param.size for param in params.values())
        links = self.transform.links
        self._elementwise = links is not None and all(link.prepare is not None for link in links)
        self._plan: tuple | None = None  # (identity of the arrays, blocks per thread), rebuilt when they change
        self._pool: tuple[int, ThreadPoolExecutor] | None = None  # (pid that made it, pool)

    def lr(self) -> float:
        """The learning rate of the next step."""
        return float(self.schedule(self.step_count))

    def step(self, grads: Params) -> None:
        """p -= lr * u for every parameter, u the chain's update.

        `grads` is consumed: afterwards `grads[k]` holds the step just taken,
        lr * u = p_before - p_after (what an update-ratio monitor needs).
        """
        groups = self._blocks(grads)
        if groups is not None:
            self._blocked_step(groups)
            return
        self.transform.update(grads, self.state, self.params)
        lr = self.lr()
        for key, param in self.params.items():
            update = grads[key]
            update *= lr
            param -= update
        self.step_count += 1

    # -- blocked steps --------------------------------------------------------------------
    def _blocked_step(self, groups: list[list]) -> None:
        links = self.transform.links
        kernels = [link.prepare(self.state[name]) for name, link in zip(link_names(links), links)]
        lr = self.lr()

        def run(blocks: list) -> None:
            for key, grad, param, slots in blocks:
                for kernel, link_slots in zip(kernels, slots):
                    kernel(key, grad, link_slots, param)
                grad *= lr
                param -= grad

        if len(groups) == 1:
            run(groups[0])
        else:
            errors = np.geterr()  # numpy's error state is per thread: the pool's threads take the caller's

            def run_as_caller(blocks: list) -> None:
                with np.errstate(**errors):
                    run(blocks)

            pool = self._thread_pool(len(groups) - 1)
            futures = [pool.submit(run_as_caller, group) for group in groups[1:]]
            run(groups[0])
            for future in futures:
                future.result()
        self.step_count += 1

    def _blocks(self, grads: Params) -> list[list] | None:
        """Per thread, its blocks (key, grad, param, [slots of each link]) as flat views; None for a plain step."""
        if not self._elementwise or self._size < BLOCKED_MIN_SIZE:  # a small model: no per-step bookkeeping
            return None
        identity = tuple((id(grads.get(key)), id(param)) for key, param in self.params.items())
        if self._plan is not None and self._plan[0] == identity:
            return self._plan[1]
        groups = self._plan_blocks(grads)
        self._plan = (identity, groups)
        return groups

    def _plan_blocks(self, grads: Params) -> list[list] | None:
        total = self._size
        if total < BLOCKED_MIN_SIZE or set(grads) != set(self.params):
            return None
        link_states = [self.state[name] for name in link_names(self.transform.links)]
        arrays = []
        for key, param in self.params.items():
            slots = [param_slots(state, key) for state in link_states]
            every = [grads[key], param, *(a for link in slots for a in link.values())]
            if not all(a.flags.c_contiguous and a.shape == param.shape for a in every):
                return None  # a flat view would be a copy: blocks would update copies
            arrays.append((key, grads[key].reshape(-1), param.reshape(-1),
                           [{slot: a.reshape(-1) for slot, a in link.items()} for link in slots]))
        threads = self.threads or min(blas_threads_in_use(), cores())  # an explicit number is taken as given
        threads = max(1, min(threads, -(-total // BLOCK_SIZE)))
        share = -(-total // threads)  # elements per thread, blocks cut at the shares' borders
        groups: list[list] = [[] for _ in range(threads)]
        offset = 0
        for key, grad, param, slots in arrays:
            start = 0
            while start < grad.size:
                thread = min(offset // share, threads - 1)
                stop = min(grad.size, start + BLOCK_SIZE, start + (thread + 1) * share - offset)
                groups[thread].append((key, grad[start:stop], param[start:stop],
                                       [{slot: a[start:stop] for slot, a in link.items()} for link in slots]))
                offset += stop - start
                start = stop
        return [group for group in groups if group]

    def _thread_pool(self, workers: int) -> ThreadPoolExecutor:
        pid = os.getpid()
        if self._pool is None or self._pool[0] != pid or self._pool[1]._max_workers < workers:
            self._pool = (pid, ThreadPoolExecutor(max_workers=workers, thread_name_prefix="workbench-optimizer"))
        return self._pool[1]

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
