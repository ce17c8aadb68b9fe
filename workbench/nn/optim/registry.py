"""Name lookup in the optimizer and schedule registries (plain dicts name -> factory).

A factory declares the settings it reads as keyword-only arguments; the
builders pass each factory only those, so one flat set of spec settings
(momentum, beta1, ..., step_size, gamma, ...) serves every entry.
"""

from __future__ import annotations

import inspect
from typing import Callable

from workbench.errors import UserError


def lookup(registry: dict[str, Callable], name: str, what: str) -> Callable:
    """`registry[name]`, or a UserError naming the allowed names."""
    if name not in registry:
        raise UserError(f"unknown {what} {name!r}; allowed: {', '.join(sorted(registry))}")
    return registry[name]


def hyperparameters(factory: Callable) -> tuple[str, ...]:
    """The keyword-only settings a registered factory reads (the others do not apply to it)."""
    return tuple(name for name in _keywords(factory) if name not in CONTEXT)


# Keyword-only arguments that come from the model, not from the spec: not hyperparameters.
CONTEXT = ("decay_mask",)


def _keywords(factory: Callable) -> tuple[str, ...]:
    parameters = inspect.signature(factory).parameters.values()
    return tuple(parameter.name for parameter in parameters if parameter.kind is parameter.KEYWORD_ONLY)


def call_with_settings(factory: Callable, settings: dict, *args):
    """`factory(*args, **the settings and context it declares)`, leaving out those it does not read."""
    return factory(*args, **{name: settings[name] for name in _keywords(factory) if name in settings})
