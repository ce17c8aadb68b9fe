"""Checking one value against its declared field: type first, then constraint.

Ints never accept bools or floats (`epochs = 10.0` is a mistake); floats accept ints
(`lr = 1`) and come out as Python floats; lists come out as tuples so the Spec stays
immutable and hashable.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

from workbench.errors import UserError

from workbench.constraints import Choices, NonEmpty
from .messages import close_match, located, show
from .schema import Field

_KIND_NAMES = {
    int: "an integer",
    float: "a number",
    bool: "a boolean: use true or false",
    str: "a string",
    list: "a list of integers",
    "layers": "a list of layer tables",
}


def coerce(field: Field, value: Any, where: str) -> Any:
    """The value as its field's Python type, or a UserError naming key, value and rule."""
    if value is None and field.optional:
        return None
    if field.kind == "layers":
        try:
            return _layers(field, value)
        except UserError as error:
            raise UserError(located(str(error), where)) from None
    converted = _convert(field.kind, value)
    if converted is None:
        raise _error(field, value, where, f"is not {_KIND_NAMES[field.kind]}")
    if field.kind is float and not math.isfinite(converted):
        raise _error(field, value, where, "is not a finite number")
    if field.kind is str and not _encodable(converted):
        raise _error(field, value, where, "contains characters that cannot be written to a file")
    _check_constraint(field, converted, value, where)
    return converted


def _convert(kind: type, value: Any) -> Any:
    """Python value of `kind`, or None when the type is wrong."""
    is_int = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if kind is bool:
        return value if isinstance(value, bool) else None
    if kind is int:
        return int(value) if is_int else None
    if kind is float:
        if not isinstance(value, numbers.Real) or isinstance(value, bool):
            return None
        try:
            return float(value)
        except OverflowError:  # an int beyond float range
            return math.inf
    if kind is str:
        return str(value) if isinstance(value, str) else None
    if kind is list:
        if not isinstance(value, (list, tuple)):
            return None
        if not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in value):
            return None
        return tuple(int(v) for v in value)
    raise TypeError(f"unknown field kind {kind!r}")  # a schema bug, not a user error


def _check_constraint(field: Field, value: Any, given: Any, where: str) -> None:
    """`value` is the converted value, `given` what the user wrote (shown in the error)."""
    rule = field.constraint
    if rule is None:
        return
    if isinstance(rule, Choices):
        if not rule.contains(value):
            match = close_match(value, rule.names)
            hint = f' (did you mean "{match}"?)' if match else ""
            raise UserError(located(f"{field.key} = {show(given)} is not allowed: {rule.describe()}{hint}", where))
        return
    if isinstance(rule, NonEmpty):
        if not rule.contains(value):
            raise _error(field, given, where, f"is not allowed: {rule.describe()}")
        return
    items = value if field.kind is list else (value,)
    if not all(rule.contains(item) for item in items):
        prefix = "every item " if field.kind is list else ""
        raise _error(field, given, where, f"is out of range: {prefix}{rule.describe()}")


def _error(field: Field, value: Any, where: str, problem: str) -> UserError:
    example = f" (e.g. {field.key} = {show(field.shown_example)})"
    hint = f"; {field.hint}" if field.hint and "out of range" in problem else ""
    return UserError(located(f"{field.key} = {show(value)} {problem}{example}{hint}", where))


def _encodable(text: str) -> bool:
    """False for lone surrogates, which no file (or TOML) can hold."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _layers(field: Field, value: Any) -> tuple[dict, ...]:
    """A layer list checked against the registry: complete items, None defaults left out (TOML has no null)."""
    from workbench.nn.registry import check_layers

    if not isinstance(value, (list, tuple)) or not value:
        example = '[{type = "dense", units = 64}, {type = "relu"}]'
        raise UserError(f"{field.key} = {show(value)} must be a non-empty list of layer tables, e.g. {example}")
    return tuple(_without_none(item) for item in check_layers(list(value), field.key))


def _without_none(item: dict) -> dict:
    return {k: ([_without_none(i) for i in v] if isinstance(v, list) else v) for k, v in item.items() if v is not None}
