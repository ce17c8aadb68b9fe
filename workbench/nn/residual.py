"""Residual block: y = body(x) + P(x) (He et al. 2016, "Deep residual learning", eq. 1 and 2).

P is the identity when the body keeps the shape, else a learned projection
(eq. 2): a dense layer for flat samples, a 1x1 convolution (strided to the
body's spatial size) for images. Backward sums the two paths:
    dL/dx = body'(x)^T g + P'(x)^T g   (g = dL/dy),
so the gradient reaches x through the skip path undiminished whatever the body
does to it, which is why deep residual networks train (Veit et al. 2016 read a
residual network as an ensemble of paths of different lengths).
The body is any layer list, residual blocks included.
"""

from __future__ import annotations

import numpy as np

from workbench.nn.build import build_layers
from workbench.nn.keys import LAYERS_KIND, Key
from workbench.nn.layer import Layer


class Residual(Layer):
    """y = body(x) + P(x): P the identity, or a learned dense / 1x1 conv projection when the body changes the shape
    (He et al. 2016); bodies nest."""

    type_name = "residual"
    prefix = "res"
    keys = (
        Key("body", LAYERS_KIND, doc="the layers of the residual branch",
            example=[{"type": "dense", "units": 64}, {"type": "relu"}, {"type": "dense", "units": 64}]),
        Key("projection", bool, True, doc="learn a projection of x when the body changes its shape"),
    )

    def __init__(self, name: str, body: list[Layer], projection: Layer | None) -> None:
        super().__init__(name)
        self.body = body
        self.projection = projection
        self.skip_body = False  # True: y = P(x) only (Veit et al.'s paths that skip this block)
        self.outputs: dict[str, np.ndarray] = {}
        self.grad_outputs: dict[str, np.ndarray] = {}

    @classmethod
    def from_config(cls, name, config, input_shape, ctx):
        where = ctx.where
        if not config["body"]:
            raise ctx.fail("a residual block has an empty body", "give body at least one layer, "
                           'e.g. body = [{type = "dense", units = 64}, {type = "relu"}]')
        body, shape = build_layers(config["body"], input_shape, ctx, prefix=f"{name}.", where=f"{where}.body")
        ctx.where = where
        projection = None
        if tuple(shape) != tuple(input_shape):
            if not config["projection"]:
                raise ctx.fail(f"the body turns {'x'.join(map(str, input_shape))} into {'x'.join(map(str, shape))} "
                               "and projection = false", "set projection = true or make the body keep the shape")
            projection = cls._projection(name, input_shape, shape, ctx)
        layer = cls(name, body, projection)
        layer.item = {"body": [child.config() for child in body], "projection": config["projection"]}
        return layer, tuple(shape)

    @staticmethod
    def _projection(name, input_shape, shape, ctx) -> Layer:
        registry = ctx.registry
        if len(input_shape) == 1 and len(shape) == 1:
            config = {"type": "dense", "units": shape[0], "init": None, "init_scale": None}
        elif len(input_shape) == 3 and len(shape) == 3 and "conv2d" in registry:
            stride = max(1, -(-input_shape[1] // shape[1]))
            config = {"type": "conv2d", "filters": shape[0], "kernel": 1, "stride": stride, "padding": "valid",
                      "bias": False, "init": None, "init_scale": None}
            config = {k: v for k, v in config.items() if k == "type" or k in {key.name for key in registry["conv2d"].keys}}
        else:
            raise ctx.fail(f"no projection maps {'x'.join(map(str, input_shape))} onto the body's output "
                           f"{'x'.join(map(str, shape))}", "make the body keep the number of axes (no flatten inside)")
        from workbench.nn.keys import check_item

        config = check_item(config, ctx.where, registry, lambda v, w: v)
        layer, out = registry[config["type"]].from_config(f"{name}.proj", config, input_shape, ctx)
        if tuple(out) != tuple(shape):
            raise ctx.fail(f"a projection of {'x'.join(map(str, input_shape))} gives {'x'.join(map(str, out))}, "
                           f"not the body's {'x'.join(map(str, shape))}", "make the body's stride divide the image size")
        return layer

    def children(self) -> list[Layer]:
        return [*self.body, *([self.projection] if self.projection is not None else [])]

    def describe(self) -> str:
        return "res[" + " -> ".join(layer.describe() for layer in self.body) + "]"

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        skip = self.projection.forward(x, training) if self.projection is not None else x
        if self.projection is not None:
            self.outputs[self.projection.name] = skip
        if self.skip_body:
            return skip.copy()
        h = x
        for layer in self.body:
            h = layer.forward(h, training)
            self.outputs[layer.name] = h
        return h + skip

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        grad_skip = grad_out
        if self.projection is not None:
            self.grad_outputs[self.projection.name] = grad_out
            grad_skip = self.projection.backward(grad_out)
        if self.skip_body:
            return grad_skip
        grad = grad_out
        for layer in reversed(self.body):
            self.grad_outputs[layer.name] = grad
            grad = layer.backward(grad)
        return grad + grad_skip
