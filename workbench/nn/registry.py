"""The layer registry: the one place each layer type is named.

`LAYERS` maps a spec `type` to its class; the spec's allowed types, the docs,
the save format and the contract tests (gradient checks) are built from it, so a
new type is registered here and nowhere else. `check_layers` validates a spec's
layer list, nested bodies included, into complete configs.
"""

from __future__ import annotations

import sys

from workbench.nn.activations import ACTIVATIONS
from workbench.nn.batchnorm import BatchNorm
from workbench.nn.conv import Conv2D
from workbench.nn.dense import Dense
from workbench.nn.dropout import Dropout
from workbench.nn.flatten import Flatten
from workbench.nn.gru import GRU
from workbench.nn.keys import check_item
from workbench.nn.layer import Layer
from workbench.nn.layernorm import LayerNorm
from workbench.nn.lstm import LSTM
from workbench.nn.pooling import AvgPool2D, GlobalAvgPool2D, MaxPool2D
from workbench.nn.residual import Residual
from workbench.nn.rnn import SimpleRNN

LAYERS: dict[str, type[Layer]] = {
    cls.type_name: cls
    for cls in (Dense, Conv2D, MaxPool2D, AvgPool2D, GlobalAvgPool2D, Flatten, Residual, BatchNorm, LayerNorm,
                Dropout, SimpleRNN, LSTM, GRU, *ACTIVATIONS.values())
}


def check_layers(items: list, where: str = "model.layers") -> list[dict]:
    """Complete, typed configs for a layer list, or a one-line UserError naming the item."""
    return [check_item(item, f"{where}[{i}]", LAYERS, check_layers) for i, item in enumerate(items)]


def layer_doc(cls: type[Layer]) -> str:
    """The first line of a layer class's docstring (its module's when the class has none)."""
    text = cls.__doc__ or sys.modules[cls.__module__].__doc__ or ""
    return " ".join(text.strip().split("\n\n")[0].split())


def _key_text(key) -> str:
    from workbench.nn.keys import LAYERS_KIND

    if key.required:
        shown = "[...]" if key.kind == LAYERS_KIND else repr(key.shown_example).replace("'", '"')
        return f"`{key.name}` (required, e.g. {shown})"
    default = "model's" if key.default is None and key.name.startswith("init") else repr(key.default).replace("'", '"')
    if key.default is None and not key.name.startswith("init"):
        default = "none"
    return f"`{key.name}` = {default.replace('True', 'true').replace('False', 'false')}"


def layer_reference() -> str:
    """The layer types as a markdown table, built from the registry (the README shows it; a test compares)."""
    rows = ["| type | keys | what it computes |", "| --- | --- | --- |"]
    activations = [name for name, cls in LAYERS.items() if cls.activation is not None]
    for name, cls in LAYERS.items():
        if cls.activation is not None:
            continue
        keys = ", ".join(_key_text(key) for key in cls.keys) or "-"
        rows.append(f"| `{name}` | {keys} | {layer_doc(cls).replace('|', '/')} |")
    rows.append(f"| {', '.join(f'`{a}`' for a in activations)} | - | element-wise activations "
                f"(`workbench/nn/activations.py`, each with its derivative) |")
    return "\n".join(rows) + "\n"
