"""From checked layer items to built layers: names, shapes and weights.

`build_layers(items, input_shape, ctx)` walks a layer list once: each item's
class (from the registry) builds itself for the shape the previous layer gives,
drawing its weights from the one initialization stream in list order, so the
same list and seed always give the same weights. Names are the item's type
prefix and its rank among the items of that prefix in its container (`conv1`,
`conv2`, `act1`, ...); nested layers carry their container's name before a dot
(`res1.dense1`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from workbench.errors import UserError
from workbench.nn.init import init_weight

MAX_PARAMETERS = 100_000_000  # a numpy model beyond this is out of memory or out of patience


@dataclass
class BuildContext:
    """What building needs besides the items: dtype, random streams, default init, where we are."""

    dtype: np.dtype
    rng: np.random.Generator
    dropout_rng: np.random.Generator
    registry: dict
    init: str = "he_normal"
    init_scale: float = 1.0
    where: str = "model.layers"  # the item being built, for error lines
    parameters: int = 0  # counted as layers are built, to refuse a model too large before it is allocated

    def weight(self, config: dict, shape: tuple[int, ...]) -> np.ndarray:
        """A weight of `shape` by the item's init (or the model's), its fans taken from the shape."""
        self.reserve(int(np.prod(shape)))
        init = config.get("init") or self.init
        scale = config.get("init_scale") or self.init_scale
        return init_weight(init, shape, self.rng, scale, self.dtype)

    def zeros(self, shape) -> np.ndarray:
        self.reserve(int(np.prod(shape)))
        return np.zeros(shape, self.dtype)

    def reserve(self, count: int) -> None:
        self.parameters += count
        if self.parameters > MAX_PARAMETERS:
            raise UserError(
                f"{self.where} takes the model past {MAX_PARAMETERS:,} parameters: "
                "use fewer or smaller layers (units, filters) or a pooling layer before dense layers"
            )

    def fail(self, problem: str, fix: str) -> UserError:
        """A one-line shape error naming the item being built."""
        return UserError(f"{self.where}: {problem}: {fix}")


def shape_text(shape: tuple[int, ...]) -> str:
    return "x".join(str(s) for s in shape) if len(shape) > 1 else f"{shape[0]} features" if shape else "a scalar"


def build_layers(
    items: list[dict], input_shape: tuple[int, ...], ctx: BuildContext, prefix: str = "",
    where: str = "model.layers",
) -> tuple[list, tuple[int, ...]]:
    """Build `items` in order for `input_shape`; returns the layers and the output shape."""
    counts: dict[str, int] = {}
    layers = []
    shape = tuple(input_shape)
    for index, item in enumerate(items):
        cls = ctx.registry[item["type"]]
        counts[cls.prefix] = counts.get(cls.prefix, 0) + 1
        ctx.where = f"{where}[{index}]"
        layer, shape = cls.from_config(f"{prefix}{cls.prefix}{counts[cls.prefix]}", item, shape, ctx)
        layers.append(layer)
    return layers, shape
