"""The layer registry: the one place each layer type is named.

`LAYERS` maps a spec `type` to its class; the spec's allowed types, the docs,
the save format and the contract tests (gradient checks) are built from it, so a
new type is registered here and nowhere else. `check_layers` validates a spec's
layer list, nested bodies included, into complete configs.
"""

from __future__ import annotations

from workbench.nn.activations import ACTIVATIONS
from workbench.nn.batchnorm import BatchNorm
from workbench.nn.conv import Conv2D
from workbench.nn.dense import Dense
from workbench.nn.dropout import Dropout
from workbench.nn.flatten import Flatten
from workbench.nn.keys import check_item
from workbench.nn.layer import Layer
from workbench.nn.layernorm import LayerNorm
from workbench.nn.pooling import AvgPool2D, GlobalAvgPool2D, MaxPool2D
from workbench.nn.residual import Residual

LAYERS: dict[str, type[Layer]] = {
    cls.type_name: cls
    for cls in (Dense, Conv2D, MaxPool2D, AvgPool2D, GlobalAvgPool2D, Flatten, Residual, BatchNorm, LayerNorm,
                Dropout, *ACTIVATIONS.values())
}


def check_layers(items: list, where: str = "model.layers") -> list[dict]:
    """Complete, typed configs for a layer list, or a one-line UserError naming the item."""
    return [check_item(item, f"{where}[{i}]", LAYERS, check_layers) for i, item in enumerate(items)]
