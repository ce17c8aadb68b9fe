"""Learning-rate schedules: callables `step -> lr` (a python float), defined in optimizer steps.

`step` counts updates from 0 (the first update uses `schedule(0)`). The
registry `SCHEDULES` builds a schedule from the epoch-level settings of a spec,
converting epochs to steps with `steps_per_epoch`; `build_schedule` is the
one entry point that checks the name.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

from workbench.nn.optim.registry import call_with_settings, lookup

Schedule = Callable[[int], float]


@dataclass(frozen=True)
class ConstantSchedule:
    """lr_t = lr."""

    lr: float

    def __call__(self, step: int) -> float:
        return float(self.lr)


@dataclass(frozen=True)
class StepSchedule:
    """lr_t = lr * gamma ** (t // step_size), as torch.optim.lr_scheduler.StepLR."""

    lr: float
    step_size: int
    gamma: float

    def __call__(self, step: int) -> float:
        return float(self.lr) * float(self.gamma) ** (step // self.step_size)


def _cosine(lr: float, min_lr: float, progress: float) -> float:
    """Half a cosine from lr (progress 0) to min_lr (progress 1), Loshchilov & Hutter 2017 (SGDR)."""
    return float(min_lr) + (float(lr) - float(min_lr)) * 0.5 * (1.0 + math.cos(math.pi * progress))


@dataclass(frozen=True)
class CosineSchedule:
    """lr_t = min_lr + (lr - min_lr) * (1 + cos(pi * t / T)) / 2 for t <= T, then min_lr.

    As torch's CosineAnnealingLR with T_max = T: the last update of a run of T
    steps (t = T - 1) is just above min_lr; min_lr is reached at t = T.
    """

    lr: float
    total_steps: int
    min_lr: float = 0.0

    def __call__(self, step: int) -> float:
        if step >= self.total_steps:
            return float(self.min_lr)
        return _cosine(self.lr, self.min_lr, step / self.total_steps)


@dataclass(frozen=True)
class WarmupCosineSchedule:
    """Linear warmup, then cosine decay (Goyal et al. 2017; Loshchilov & Hutter 2017).

    lr_t = lr * (t + 1) / W for t < W (from lr / W, never exactly 0, to lr at
    t = W - 1), then min_lr + (lr - min_lr) * (1 + cos(pi * (t - W) / (T - W))) / 2,
    and min_lr from t = T on. W is capped at T.
    """

    lr: float
    warmup_steps: int
    total_steps: int
    min_lr: float = 0.0

    def __call__(self, step: int) -> float:
        warmup = min(self.warmup_steps, self.total_steps)
        if step >= self.total_steps:
            return float(self.min_lr)
        if step < warmup:
            return float(self.lr) * (step + 1) / warmup
        return _cosine(self.lr, self.min_lr, (step - warmup) / (self.total_steps - warmup))


def constant(lr: float) -> Schedule:
    """A constant learning rate."""
    return ConstantSchedule(lr)


def step(lr: float, *, steps_per_epoch: int, step_size: int, gamma: float) -> Schedule:
    """Multiply lr by gamma every `step_size` epochs."""
    return StepSchedule(lr, step_size * steps_per_epoch, gamma)


def cosine(lr: float, *, steps_per_epoch: int, epochs: int, min_lr: float) -> Schedule:
    """Cosine from lr to min_lr over the whole run (epochs * steps_per_epoch steps)."""
    return CosineSchedule(lr, epochs * steps_per_epoch, min_lr)


def warmup_cosine(lr: float, *, steps_per_epoch: int, epochs: int, warmup_epochs: int, min_lr: float) -> Schedule:
    """Linear warmup over `warmup_epochs`, then cosine to min_lr at the end of the run."""
    return WarmupCosineSchedule(lr, warmup_epochs * steps_per_epoch, epochs * steps_per_epoch, min_lr)


SCHEDULES: dict[str, Callable[..., Schedule]] = {
    "constant": constant,
    "step": step,
    "cosine": cosine,
    "warmup_cosine": warmup_cosine,
}


def build_schedule(name: str, lr: float, **settings) -> Schedule:
    """The schedule `name` at base rate lr; settings: steps_per_epoch, epochs, step_size, gamma, warmup_epochs, min_lr."""
    return call_with_settings(lookup(SCHEDULES, name, "learning-rate schedule"), settings, lr)
