"""A search space over dotted spec keys: categorical, float (linear or log) and int.

    space = {"model.init": Categorical(["xavier_normal", "he_normal"]),
             "optimizer.lr": Float(1e-4, 1e-1, log=True),
             "model.hidden": Categorical([[64, 64], [128]])}

Every key must be a spec key and every choice (every bound, for numbers) a valid value
for it: `check_space` raises one `UserError` line before any storage or run is created.
Choices Optuna cannot store (lists) are suggested by their label ("[64, 64]") and mapped back.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from workbench.errors import UserError
from workbench.spec import Spec, known_keys
from workbench.spec.keys import suggest_key

PLAIN = (bool, int, float, str, type(None))


@dataclass(frozen=True)
class Categorical:
    """One of `choices` (bools, numbers, strings; lists are stored by their label)."""

    choices: tuple

    def __init__(self, choices) -> None:
        object.__setattr__(self, "choices", tuple(tuple(c) if isinstance(c, list) else c for c in choices))

    def labels(self) -> list:
        return [c if isinstance(c, PLAIN) else label(c) for c in self.choices]

    def suggest(self, trial, key: str) -> Any:
        picked = trial.suggest_categorical(key, self.labels())
        return self.choices[self.labels().index(picked)]

    def checked_values(self) -> list:
        return [list(c) if isinstance(c, tuple) else c for c in self.choices]

    def describe(self) -> str:
        return "{" + ", ".join(str(c) for c in self.labels()) + "}"


@dataclass(frozen=True)
class Float:
    """A float in [low, high], uniform or log-uniform (`log=True`), optionally on a `step` grid."""

    low: float
    high: float
    log: bool = False
    step: float | None = None

    def suggest(self, trial, key: str) -> float:
        return trial.suggest_float(key, self.low, self.high, log=self.log, step=self.step)

    def checked_values(self) -> list:
        return [float(self.low), float(self.high)]

    def describe(self) -> str:
        return f"{'log-' if self.log else ''}uniform [{self.low:g}, {self.high:g}]"


@dataclass(frozen=True)
class Int:
    """An integer in [low, high] (both included), on a `step` grid or log-uniform."""

    low: int
    high: int
    step: int = 1
    log: bool = False

    def suggest(self, trial, key: str) -> int:
        return trial.suggest_int(key, self.low, self.high, step=self.step, log=self.log)

    def checked_values(self) -> list:
        return [int(self.low), int(self.high)]

    def describe(self) -> str:
        return f"int [{self.low}, {self.high}]" + (" log" if self.log else "")


Dimension = Categorical | Float | Int


def label(value: Any) -> str:
    """How a non-plain choice is shown and stored: `[64, 64]`."""
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(str(v) for v in value) + "]"
    return str(value)


def check_space(space: dict[str, Dimension], base: Spec) -> None:
    """Raise a one-line UserError for a key that is not a spec key or a value the spec refuses."""
    if not space:
        raise UserError("the search space is empty: give at least one key, "
                        "e.g. {'optimizer.lr': Float(1e-4, 1e-1, log=True)}")
    keys = set(known_keys())
    for key, dimension in space.items():
        if key not in keys:
            match = suggest_key(key)
            hint = f": did you mean '{match}'?" if match and match != key else ""
            raise UserError(f"search space key '{key}' is not a spec key{hint} (see workbench/spec/schema.py)")
        if key == "seed":
            raise UserError("search space key 'seed' is set by the study (seeds per configuration): "
                            "use --seeds instead")
        if not isinstance(dimension, (Categorical, Float, Int)):
            raise UserError(f"search space {key}: expected Categorical, Float or Int, got {type(dimension).__name__}")
        _check_dimension(key, dimension)
        for value in dimension.checked_values():
            try:
                base.with_overrides({key: value})
            except UserError as exc:
                raise UserError(f"search space {key}: {exc}") from None


def _check_dimension(key: str, d: Dimension) -> None:
    if isinstance(d, Categorical):
        if not d.choices:
            raise UserError(f"search space {key}: Categorical needs at least one choice")
        if len(set(map(str, d.labels()))) != len(d.choices):
            raise UserError(f"search space {key}: choices repeat: {d.describe()}")
        return
    if not (math.isfinite(d.low) and math.isfinite(d.high)) or d.low > d.high:
        raise UserError(f"search space {key}: needs low <= high, got [{d.low}, {d.high}]")
    if d.log and d.low <= 0:
        raise UserError(f"search space {key}: a log scale needs low > 0, got {d.low}")
    if d.log and d.step not in (None, 1):
        raise UserError(f"search space {key}: a log scale cannot have a step")


def suggest(space: dict[str, Dimension], trial) -> dict[str, Any]:
    """The trial's value for every key (spec values: lists are lists again)."""
    out = {}
    for key, dimension in space.items():
        value = dimension.suggest(trial, key)
        out[key] = list(value) if isinstance(value, tuple) else value
    return out


def categorical_keys(space: dict[str, Dimension]) -> list[str]:
    """The keys whose choices define a 'configuration' in the report's table."""
    return [key for key, d in space.items() if isinstance(d, Categorical)]
