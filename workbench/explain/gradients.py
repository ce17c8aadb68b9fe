"""Gradients of a chosen model output with respect to the input, by the model's own backward pass.

Not every layer keeps what its backward pass needs after an evaluation-mode forward pass
(max pooling records its argmax only in training mode), and two of them compute something
else in training mode: dropout drops units and batch norm uses the batch's statistics. `evaluation_with_gradients(model)` makes a
training-mode pass compute the evaluation-mode function (what `model.predict` computes)
while keeping every cache:

- dropout layers get rate 0 (identity forward and backward);
- batch-norm layers, on this instance only, apply their running statistics, y = x s + t
  with s = gamma / sqrt(running_var + eps) per channel, and backpropagate g s (their
  running statistics are not moved);
- the first layer computes dL/dx (`input_grad`), which models skip when training.

Everything is put back when the block ends. Any other layer computes the same function in
both modes (dense, convolutions, pooling, layer norm, residual blocks, recurrent layers,
activations), so attributions work for every layer type the registry has.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np

from workbench.nn.batchnorm import BatchNorm
from workbench.nn.dropout import Dropout

ROWS_BUDGET = 1 << 20  # input values per forward/backward chunk (4 MiB of float32 inputs)


@contextlib.contextmanager
def evaluation_with_gradients(model) -> Iterator[None]:
    """Training-mode passes of `model` compute its evaluation-mode function, with input gradients (see above)."""
    first = model.layers[0]
    saved_input_grad = first.input_grad
    dropouts = [(layer, layer.rate) for layer, _ in model.walk() if isinstance(layer, Dropout)]
    norms = [layer for layer, _ in model.walk() if isinstance(layer, BatchNorm)]
    first.input_grad = True
    for layer, _ in dropouts:
        layer.rate = 0.0
    for layer in norms:
        _freeze_batch_norm(layer)
    try:
        yield
    finally:
        first.input_grad = saved_input_grad
        for layer, rate in dropouts:
            layer.rate = rate
        for layer in norms:
            for name in ("forward", "backward"):
                layer.__dict__.pop(name, None)


def _freeze_batch_norm(layer: BatchNorm) -> None:
    """Instance methods: the running-statistics affine map and its derivative (gamma, beta grads included)."""
    cache = {}

    def shape_of(x: np.ndarray) -> tuple[int, ...]:
        return (1, -1) + (1,) * (x.ndim - 2)  # channels on axis 1 (features of flat samples)

    def forward(x: np.ndarray, training: bool) -> np.ndarray:
        shape = shape_of(x)
        inv_std = (1.0 / np.sqrt(layer.running_var + layer.eps)).astype(x.dtype)
        xhat = (x - layer.running_mean.reshape(shape)) * inv_std.reshape(shape)
        cache.update(xhat=xhat, scale=(layer.params["gamma"] * inv_std).reshape(shape))
        return xhat * layer.params["gamma"].reshape(shape) + layer.params["beta"].reshape(shape)

    def backward(grad_out: np.ndarray) -> np.ndarray:
        axes = tuple(a for a in range(grad_out.ndim) if a != 1)
        layer.grads["gamma"][...] = (grad_out * cache["xhat"]).sum(axis=axes)
        layer.grads["beta"][...] = grad_out.sum(axis=axes)
        return grad_out * cache["scale"]

    layer.forward, layer.backward = forward, backward


def as_model_input(model, X: np.ndarray) -> np.ndarray:
    """X shaped as the model's per-sample input (flat rows of an image or sequence model are reshaped)."""
    X = np.asarray(X, dtype=model.dtype)
    shape = tuple(model.input_shape or ())
    if shape and X.shape[1:] != shape and X.ndim == 2 and X.shape[1] == int(np.prod(shape)):
        X = X.reshape(len(X), *shape)
    return X


def chunk_rows(model) -> int:
    """Rows per forward/backward chunk: bounded input memory, and at most 8192 rows."""
    per_row = int(np.prod(model.input_shape)) if model.input_shape else 1
    return max(1, min(8192, ROWS_BUDGET // max(1, per_row)))


def output_and_gradient(model, X: np.ndarray, selector: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """F(x) = sum_k selector[i, k] * output[i, k] per row, and dF/dx, in chunks (float64 F, model-dtype grads).

    Call inside `evaluation_with_gradients(model)`. `selector` is (N, outputs): one-hot rows pick a logit
    (a class) or a regression output; -1 picks its negative (class 0 of a one-logit binary model). A model
    with an output at every step (N, T, K) is explained through its last step.
    """
    n = len(X)
    values = np.empty(n)
    grads = np.empty_like(X)
    step = chunk_rows(model)
    for start in range(0, n, step):
        part = slice(start, start + step)
        output = model.forward(X[part], training=True)
        sel = selector[part].astype(output.dtype, copy=False)
        if output.ndim == 3 and sel.ndim == 2:  # per-step outputs (N, T, K): the last step's output
            full = np.zeros_like(output)
            full[:, -1] = sel
            sel = full
        values[part] = (output.astype(np.float64) * sel).reshape(len(sel), -1).sum(axis=1)
        grad = model.backward(sel.reshape(output.shape))
        if grad is None:
            raise RuntimeError("the model returned no input gradient")
        grads[part] = grad
    return values, grads


def class_selector(model, n_outputs: int, classes: np.ndarray, loss_name: str | None = None) -> np.ndarray:
    """(N, outputs) rows that select, per sample, the logit of its class (or output `classes[i]` in regression).

    A binary cross-entropy model has one logit z: class 1 is z, class 0 is -z.
    """
    classes = np.asarray(classes, dtype=np.int64)
    selector = np.zeros((len(classes), n_outputs))
    if n_outputs == 1 and loss_name == "binary_cross_entropy":
        selector[:, 0] = np.where(classes == 1, 1.0, -1.0)
    else:
        selector[np.arange(len(classes)), classes] = 1.0
    return selector
