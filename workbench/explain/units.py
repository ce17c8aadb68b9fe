"""Which units and weights drive the error: first-order estimates of the loss change if they were removed.

Removing unit i of a layer (its output a_i set to 0 for every sample) changes the loss by
about -sum_n a_{n,i} dL/da_{n,i} to first order (a Taylor expansion around the trained network:
the idea of Optimal Brain Damage, LeCun, Denker & Solla 1990, at first order). Molchanov, Tyree,
Karras, Aila & Kautz (2017) rank units for pruning by the absolute value per sample, summed over
the batch (for channels: of the mean over positions first):

    score_i = sum_n | mean_positions( a_{n,i} * dL/da_{n,i} ) |

The gradient is that of the batch's mean loss, so the scores are on the scale of the loss. The
signed estimate of removing the unit for the whole batch, delta_i = -sum_n sum_positions a * dL/da,
is reported beside it. A unit is a layer's output on its declared unit axis (features, channels),
read after the activation of its block (where removing it means zeroing it; the layer's own output
where no activation follows); the model's output layer has no removable units. Weights get the
same first-order score, sum |W * dL/dW| per layer.

`units_removed(model, {layer: [units]})` zeroes units for real (the block's output, in the
forward pass), so an estimate can be checked against the measured change of the loss.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from workbench.explain.gradients import as_model_input, chunk_rows, evaluation_with_gradients


@dataclass
class LayerUnits:
    """One layer's units: their scores, signed estimates, and the layer's weight score."""

    layer: str  # the layer with weights
    output: str  # the layer whose output holds the units (its block's activation, or itself)
    score: np.ndarray  # (units,) Molchanov et al. 2017
    delta: np.ndarray  # (units,) first-order loss change if removed (signed)
    weight_score: float  # sum |W * dL/dW|

    @property
    def total(self) -> float:
        return float(self.score.sum())


@dataclass
class UnitImportance:
    loss: float  # the loss on the batch the scores were taken on
    layers: list[LayerUnits]

    def top(self, k: int = 10) -> list[tuple[str, int, float, float]]:
        """The k units with the largest scores over all layers: (layer, unit, score, delta)."""
        rows = [(lu.layer, i, float(lu.score[i]), float(lu.delta[i])) for lu in self.layers for i in range(len(lu.score))]
        return sorted(rows, key=lambda row: -row[2])[:k]

    def layer(self, name: str) -> LayerUnits:
        return next(lu for lu in self.layers if lu.layer == name)


def unit_blocks(model) -> list[tuple[object, str, int]]:
    """(column, output layer name, unit axis) for every layer with weights except the output layer."""
    return [(c, c.act.name if c.act is not None else c.name, c.layer.unit_axis)
            for c in model.columns() if not c.output]


def unit_importance(model, loss, X: np.ndarray, y: np.ndarray) -> UnitImportance:
    """The scores of every removable unit and the weight scores per layer, on (X, y) (chunks accumulate)."""
    X = as_model_input(model, X)
    blocks = unit_blocks(model)
    scores = [None] * len(blocks)
    deltas = [None] * len(blocks)
    weight_scores = np.zeros(len(blocks))
    n = len(X)
    total_loss = 0.0
    step = chunk_rows(model)
    with evaluation_with_gradients(model):
        for start in range(0, n, step):
            xb, yb = X[start : start + step], y[start : start + step]
            output = model.forward(xb, training=True)
            value, grad = loss(output, yb)
            share = len(xb) / n  # chunk means -> the mean over all of X
            total_loss += value * share
            model.backward(grad * grad.dtype.type(share))
            for j, (column, name, axis) in enumerate(blocks):
                a, g = model.outputs[name], model.grad_outputs[name]
                product = np.moveaxis(a.astype(np.float64) * g, axis % a.ndim, 1)
                product = product.reshape(len(product), product.shape[1], -1)  # (batch, units, positions)
                s = np.abs(product.mean(axis=2)).sum(axis=0)
                d = -product.sum(axis=(0, 2))
                scores[j] = s if scores[j] is None else scores[j] + s
                deltas[j] = d if deltas[j] is None else deltas[j] + d
                layer = column.layer
                W = layer.params[layer.weights[0]]
                weight_scores[j] += float(np.abs(W.astype(np.float64) * layer.grads[layer.weights[0]]).sum())
    layers = [LayerUnits(column.name, name, scores[j], deltas[j], float(weight_scores[j]))
              for j, (column, name, _) in enumerate(blocks)]
    return UnitImportance(float(total_loss), layers)


@contextlib.contextmanager
def units_removed(model, removed: dict[str, list[int] | np.ndarray]) -> Iterator[None]:
    """Within the block, the listed units of each layer (by its name, as in `UnitImportance`) output 0."""
    blocks = {column.name: (name, axis) for column, name, axis in unit_blocks(model)}
    patched = []
    for layer_name, units in removed.items():
        name, axis = blocks[layer_name]
        target = model.layer(name)
        original = target.forward

        def forward(x, training, _original=original, _units=np.asarray(units, dtype=np.int64), _axis=axis):
            y = _original(x, training)
            if len(_units):
                y = y.copy()
                index = [slice(None)] * y.ndim
                index[_axis % y.ndim] = _units
                y[tuple(index)] = 0
            return y

        target.forward = forward
        patched.append(target)
    try:
        yield
    finally:
        for target in patched:
            target.__dict__.pop("forward", None)


def loss_with_units_removed(model, loss, X: np.ndarray, y: np.ndarray, removed: dict) -> float:
    """The model's loss on (X, y) in evaluation mode with `removed` units zeroed."""
    X = as_model_input(model, X)
    with units_removed(model, removed):
        return float(loss(model.predict(X), y)[0])
