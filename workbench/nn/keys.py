"""The keys a layer type declares, and the check of one spec item against them.

Each layer class lists its `keys` (name, type, default, range) in the style of
Keras layer configs; `check_item` turns a spec item such as
`{type = "conv2d", filters = 16, kernel = 3}` into a complete, typed config or
raises a one-line `UserError` that names the item (`model.layers[3].filters`),
what was given and what is allowed, with a close match for typos.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from workbench.constraints import Choices, Constraint, Interval
from workbench.errors import UserError
from workbench.nn.init import INITIALIZERS

REQUIRED = object()
LAYERS_KIND = "layers"  # a nested layer list (a residual body)


@dataclass(frozen=True)
class Key:
    """One key of a layer type. `kind` is int, float, bool, str, `"int_or_str"` or `LAYERS_KIND`."""

    name: str
    kind: object
    default: object = REQUIRED
    constraint: Constraint | None = None
    doc: str = ""
    example: object = None

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    @property
    def shown_example(self) -> object:
        return self.example if self.example is not None else self.default


def init_keys(init_default: object = None) -> tuple[Key, ...]:
    """`init` and `init_scale`, shared by every layer with weights (None: the model's default)."""
    return (
        Key("init", str, init_default, Choices(tuple(INITIALIZERS)), "weight initializer (default: model.init)",
            example="he_normal"),
        Key("init_scale", float, None, Interval(0, None, "neither"),
            "std, half-width or gain of the initializer (default: model.init_scale)", example=1.0),
    )


def _show(value: object) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, bool):
        return "true" if value else "false"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _match(word: str, candidates) -> str:
    found = difflib.get_close_matches(str(word).lower(), [c.lower() for c in candidates], n=1)
    return f'did you mean "{found[0]}"? ' if found else ""


_KIND_WORDS = {int: "an integer", float: "a number", bool: "true or false", str: "a string",
               "int_or_str": "an integer or a string", LAYERS_KIND: "a list of layer tables"}


def _coerce(key: Key, value: object, where: str) -> object:
    kind, example = key.kind, f"(e.g. {key.name} = {_show(key.shown_example)})"
    ok = (
        (kind is bool and isinstance(value, bool))
        or (kind is int and isinstance(value, int) and not isinstance(value, bool))
        or (kind is float and isinstance(value, (int, float)) and not isinstance(value, bool))
        or (kind is str and isinstance(value, str))
        or (kind == "int_or_str" and isinstance(value, (int, str)) and not isinstance(value, bool))
        or (kind == LAYERS_KIND and isinstance(value, list))
    )
    if not ok:
        raise UserError(f"{where} = {_show(value)} must be {_KIND_WORDS[kind]} {example}")
    if kind is float:
        value = float(value)
    constraint = key.constraint
    if constraint is not None and kind != "int_or_str":  # int_or_str keys are checked by their layer
        if not constraint.contains(value):
            if isinstance(constraint, Choices):
                raise UserError(f"{where} = {_show(value)} is not allowed: {_match(value, constraint.names)}"
                                f"{constraint.describe()}")
            raise UserError(f"{where} = {_show(value)} is out of range: {constraint.describe()} {example}")
    return value


def check_item(
    item: object, where: str, registry: Mapping[str, type], check_nested: Callable[[list, str], list]
) -> dict:
    """A complete config for one layer item (defaults filled, `type` first), or a one-line UserError."""
    types = ", ".join(registry)
    if not isinstance(item, Mapping):
        raise UserError(f"{where} = {_show(item)} is not a layer table: write one as {{type = \"dense\", units = 64}}")
    if "type" not in item:
        raise UserError(f"{where} has no type: add type = \"...\" (choose one of {types})")
    type_name = item["type"]
    if not isinstance(type_name, str) or type_name not in registry:
        raise UserError(f"{where}.type = {_show(type_name)} is not a layer type: "
                        f"{_match(type_name, registry) if isinstance(type_name, str) else ''}(choose one of {types})")
    cls = registry[type_name]
    declared = {key.name: key for key in cls.keys}
    for name in item:
        if name != "type" and name not in declared:
            allowed = ", ".join(declared) or "none besides type"
            raise UserError(f"{where}.{name} is not a key of a {type_name} layer: {_match(name, declared)}"
                            f"(its keys: {allowed})")
    config: dict = {"type": type_name}
    for name, key in declared.items():
        if name not in item or (item[name] is None and key.default is None):  # None: a saved default
            if key.required:
                raise UserError(f"{where}.{name} is missing: a {type_name} layer needs it "
                                f"(e.g. {name} = {_show(key.shown_example)})")
            config[name] = key.default
            continue
        value = _coerce(key, item[name], f"{where}.{name}")
        config[name] = check_nested(value, f"{where}.{name}") if key.kind == LAYERS_KIND else value
    return config

