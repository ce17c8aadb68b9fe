"""Constraints a spec value must satisfy, declared once in the schema table.

As scikit-learn's `_parameter_constraints`: each constraint can check a value and
describe itself, so the check and the error message ("must be > 0 and <= 10") come
from the same object and never drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Closed = Literal["both", "left", "right", "neither"]


@dataclass(frozen=True)
class Interval:
    """A number between `low` and `high` (None: unbounded); `closed` says which ends count."""

    low: float | None
    high: float | None
    closed: Closed = "both"

    def contains(self, value: float) -> bool:
        """True when `value` lies inside; NaN never does."""
        if self.low is not None:
            if value < self.low or (value == self.low and self.closed not in ("both", "left")):
                return False
        if self.high is not None:
            if value > self.high or (value == self.high and self.closed not in ("both", "right")):
                return False
        return value == value  # NaN fails

    def describe(self) -> str:
        """The rule in words, e.g. 'must be > 0 and <= 10'."""
        parts = []
        if self.low is not None:
            parts.append((">= " if self.closed in ("both", "left") else "> ") + _number(self.low))
        if self.high is not None:
            parts.append(("<= " if self.closed in ("both", "right") else "< ") + _number(self.high))
        return "must be " + " and ".join(parts)


@dataclass(frozen=True)
class Choices:
    """One of a fixed tuple of names (the tuple lives in `schema.py`)."""

    names: tuple[str, ...]

    def contains(self, value: str) -> bool:
        """True for an exact (case-sensitive) match."""
        return value in self.names

    def describe(self) -> str:
        """The allowed names, comma-separated."""
        return "choose one of " + ", ".join(self.names)


@dataclass(frozen=True)
class NonEmpty:
    """A string with at least one non-blank character."""

    def contains(self, value: str) -> bool:
        """True unless the string is empty or only whitespace."""
        return bool(value.strip())

    def describe(self) -> str:
        """The rule in words."""
        return "must not be empty"


Constraint = Interval | Choices | NonEmpty

# Shorthands that keep the schema table readable.
POSITIVE = Interval(0, None, "neither")  # > 0
NON_NEGATIVE = Interval(0, None, "left")  # >= 0
FRACTION = Interval(0, 1, "left")  # [0, 1)
OPEN_FRACTION = Interval(0, 1, "neither")  # (0, 1)


def at_least(low: int) -> Interval:
    """An integer lower bound, inclusive: `at_least(1)` is >= 1."""
    return Interval(low, None, "left")


def _number(x: float) -> str:
    """An integral bound prints without '.0' (`> 0`, `<= 10`)."""
    return str(int(x)) if float(x).is_integer() else repr(float(x))
