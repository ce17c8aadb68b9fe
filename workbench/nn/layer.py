"""The one layer contract every building block of a model follows.

`forward(x, training)` computes the output and caches what the backward pass
needs; `backward(grad_out)` applies the chain rule, fills `grads` (keyed like
`params`) and returns the gradient with respect to the layer's input.
"""

from __future__ import annotations

import numpy as np


class Layer:
    """Base class: a named layer that owns its parameters and their gradients."""

    kind = "layer"

    def __init__(self, name: str) -> None:
        self.name = name
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        raise NotImplementedError

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def state(self) -> dict[str, np.ndarray]:
        """Non-trainable state saved with the weights (batch norm running stats)."""
        return {}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        for key, value in state.items():
            getattr(self, key)[...] = value

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"
