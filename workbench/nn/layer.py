"""The one layer contract every building block of a model follows.

`forward(x, training)` computes the output and caches what the backward pass
needs; `backward(grad_out)` applies the chain rule, fills `grads` (keyed like
`params`) and returns the gradient with respect to the layer's input.

A layer also declares what it is, so that nothing outside its class needs to
know its type (the registry, the spec, the monitor, the diagnosis and the save
format read these declarations):

- `type_name`: its name in the layer registry and in specs (`"conv2d"`);
- `prefix`: the stem of its generated name (`conv` -> `conv1`, `conv2`, ...);
- `keys`: the spec keys it takes (`workbench.nn.keys.Key`: type, range, default);
- `weights`: which of its parameters are weights (monitored, weight-decayed);
- `unit_axis`: the axis of its output (batch axis included) that holds its units
  or channels, for dead and saturated fractions;
- `time_axis`: the axis of its output that is time, or None;
- `activation`: for element-wise activations, their name (None otherwise);
- `normalizes`: True for normalization layers (batch norm, layer norm);
- `input_ndim`: the per-sample rank its input must have (3 for images, 1 for
  dense), None for any; a model whose first layer wants images gets image data.

`from_config(name, config, input_shape, ctx)` builds the layer from a checked
spec item (`workbench.nn.keys.check_item`) for a per-sample input shape (no
batch axis), drawing weights through `ctx` (`workbench.nn.build.BuildContext`),
and returns it with its per-sample output shape; a shape it cannot take is a
one-line `UserError` naming `ctx.where`. `config()` gives back the item, for saving.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np


class Layer:
    """Base class: a named layer that owns its parameters and their gradients."""

    type_name: ClassVar[str] = "layer"
    prefix: ClassVar[str] = "layer"
    keys: ClassVar[tuple] = ()
    weights: ClassVar[tuple[str, ...]] = ()
    unit_axis: ClassVar[int] = 1
    time_axis: ClassVar[int | None] = None
    activation: ClassVar[str | None] = None
    normalizes: ClassVar[bool] = False
    input_ndim: ClassVar[int | None] = None  # the per-sample rank it needs (3: images), None: any
    kind = "layer"

    def __init__(self, name: str) -> None:
        self.name = name
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        self.input_grad = True  # False: nobody consumes dL/dx (the model's first layer); backward may skip it
        self.item: dict = {}  # the spec item it was built from (config() returns it)

    @classmethod
    def from_config(cls, name: str, config: dict, input_shape: tuple[int, ...], ctx) -> tuple["Layer", tuple[int, ...]]:
        """Build from a checked spec item; the default suits parameter-free, shape-keeping layers."""
        layer = cls(name)
        layer.item = {k: v for k, v in config.items() if k != "type"}
        return layer, tuple(input_shape)

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        raise NotImplementedError

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def children(self) -> list["Layer"]:
        """Nested layers in forward order (containers override)."""
        return []

    def config(self) -> dict:
        """The spec item that rebuilds this layer (weights come separately)."""
        return {"type": self.type_name, **self.item}

    def state(self) -> dict[str, np.ndarray]:
        """Non-trainable state saved with the weights (batch norm running stats)."""
        return {}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        for key, value in state.items():
            getattr(self, key)[...] = value

    def describe(self) -> str:
        """A short label for model summaries (`conv 16 3x3`, `relu`)."""
        return self.type_name

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"
