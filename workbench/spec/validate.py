"""From a plain mapping to a validated Spec: keys, then each value, then cross-field rules.

This is the one boundary where spec input is checked; everything downstream trusts
the Spec. Missing keys and sections take their declared defaults.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from workbench.errors import UserError

from .keys import check_keys, nest, set_dotted
from .messages import DICT_SOURCE, located, show
from .schema import CLASSIFICATION_LOSSES, FIELDS, FILE_SOURCES, REGRESSION_SOURCES, SECTIONS
from .sections import SECTION_CLASSES, SHORTHAND, Spec
from .values import coerce

PATH_EXAMPLES = {"mnist": "data/mnist", "csv": "data/my.csv", "npz": "data/my.npz", "sequential_mnist": "data/mnist"}
REGRESSION_LOSSES = ("mse", "mae", "huber")


def build_spec(
    document: Mapping[Any, Any], source: str = DICT_SOURCE, origins: Mapping[str, str] | None = None
) -> Spec:
    """Validate `document` into a Spec. `origins` maps a dotted key to where its value
    came from when that is not `source` (a --set argument), for the error line."""
    origins = origins or {}
    if not isinstance(document, Mapping):
        raise UserError(located(f"a spec must be a table of keys, got {show(document)}", source))
    document = nest(document, source)
    check_keys(document, source)
    values = {}
    for field in FIELDS:
        table = document.get(field.section, {}) if field.section else document
        raw = table.get(field.name, _MISSING)
        values[field.key] = field.default if raw is _MISSING else coerce(field, raw, origins.get(field.key, source))
    sections = {
        name: SECTION_CLASSES[name](**{f.name: values[f.key] for f in FIELDS if f.section == name}) for name in SECTIONS
    }
    spec = Spec(**{f.name: values[f.key] for f in FIELDS if not f.section}, **sections)
    model = document.get("model", {})
    shorthand = [key for key in SHORTHAND if model.get(key) is not None]
    if model.get("layers") is not None and shorthand:
        message = (f"model.layers and model.{shorthand[0]} are both given: the layer list replaces the MLP shorthand "
                   f"(hidden, activation, batch_norm, dropout): remove model.{shorthand[0]} or write it into the list")
        raise UserError(located(message, origins.get(f"model.{shorthand[0]}", origins.get("model.layers", source))))
    _check_cross_fields(spec, lambda *keys: next((origins[k] for k in keys if k in origins), source))
    return spec


def override_dict(document: Mapping[str, Any], overrides: Mapping[str, Any]) -> Spec:
    """`document` with dotted keys replaced, validated (backs `Spec.with_overrides`)."""
    updated = copy.deepcopy(dict(document))
    for key, value in overrides.items():
        set_dotted(updated, key, value, DICT_SOURCE)
    return build_spec(updated, DICT_SOURCE)


def _check_cross_fields(spec: Spec, where: Any) -> None:
    """Rules that involve several keys; the task check against real data comes later."""
    source, loss = spec.data.source, spec.training.loss
    if source in FILE_SOURCES and spec.data.path is None:
        example = PATH_EXAMPLES[source]
        message = f'data.source = "{source}" reads a file but data.path is not set: set data.path = "{example}"'
        raise UserError(located(message, where("data.source", "data.path")))
    if source == "csv" and spec.data.target is None:
        message = 'data.source = "csv" needs the name of the target column: set data.target = "label"'
        raise UserError(located(message, where("data.source", "data.target")))
    if source in REGRESSION_SOURCES and loss in CLASSIFICATION_LOSSES:
        message = (
            f'training.loss = "{loss}" needs class labels but data.source = "{source}" is a regression set: '
            f"set training.loss to one of {', '.join(REGRESSION_LOSSES)}"
        )
        raise UserError(located(message, where("training.loss", "data.source")))
    if source not in REGRESSION_SOURCES and source not in FILE_SOURCES and loss in REGRESSION_LOSSES:
        message = (
            f'training.loss = "{loss}" is a regression loss but data.source = "{source}" is a classification set '
            '(class labels, not values): set training.loss = "cross_entropy"'
        )
        raise UserError(located(message, where("training.loss", "data.source")))


_MISSING = object()
