"""Finite-difference gradient checks in float64 for every registered layer, activation and loss.

A component is covered by being registered: the batteries iterate the registries.
Central differences with h = 1e-6; relative error <= 1e-6 as the issue asks.
"""

from __future__ import annotations

import numpy as np
import pytest

from workbench.nn.activations import ACTIVATIONS
from workbench.nn.batchnorm import BatchNorm
from workbench.nn.dense import Dense
from workbench.nn.dropout import Dropout
from workbench.nn.losses import LOSSES
from workbench.nn.model import Architecture, build_model

H = 1e-6
TOL = 1e-6


def rel_error(a: np.ndarray, b: np.ndarray) -> float:
    """max |a - b| / max(|a| + |b|), with a floor of 1e-3 so an exactly-zero gradient
    (a bias before batch norm) is held to an absolute error of 1e-9."""
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(a) + np.abs(b)), 1e-3))


def numeric_grad(f, x: np.ndarray) -> np.ndarray:
    """Central differences of scalar f() with respect to array x (perturbed in place)."""
    grad = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"])
    for _ in it:
        i = it.multi_index
        old = x[i]
        x[i] = old + H
        plus = f()
        x[i] = old - H
        minus = f()
        x[i] = old
        grad[i] = (plus - minus) / (2 * H)
    return grad


def check_layer(layer, x: np.ndarray, training: bool = True) -> None:
    """Loss = sum(forward(x) * R) for a fixed random R, so dL/dy = R."""
    rng = np.random.default_rng(1)
    out = layer.forward(x, training)
    r = rng.standard_normal(out.shape)
    f = lambda: float(np.sum(layer.forward(x, training) * r))
    layer.forward(x, training)
    grad_in = layer.backward(r)
    assert rel_error(grad_in, numeric_grad(f, x)) <= TOL
    for key, param in layer.params.items():
        layer.forward(x, training)
        layer.backward(r)
        analytic = layer.grads[key].copy()
        assert rel_error(analytic, numeric_grad(f, param)) <= TOL, key


def away_from_kinks(shape, rng) -> np.ndarray:
    """Inputs at least 0.05 away from 0, where relu-like derivatives jump."""
    x = rng.standard_normal(shape)
    return np.where(np.abs(x) < 0.05, np.sign(x) * 0.05 + x, x)


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_activation_gradient(name):
    x = away_from_kinks((5, 7), np.random.default_rng(0))
    check_layer(ACTIVATIONS[name]("act"), x)


def test_dense_gradient():
    rng = np.random.default_rng(0)
    layer = Dense("dense1", rng.standard_normal((6, 4)), rng.standard_normal(4))
    check_layer(layer, rng.standard_normal((5, 6)))


def test_batchnorm_gradient_training_mode():
    rng = np.random.default_rng(0)
    layer = BatchNorm("bn1", 4, np.float64)
    layer.params["gamma"][...] = rng.uniform(0.5, 1.5, 4)
    layer.params["beta"][...] = rng.standard_normal(4)
    check_layer(layer, rng.standard_normal((8, 4)) * 3 + 1)


def test_batchnorm_eval_uses_running_statistics():
    rng = np.random.default_rng(0)
    layer = BatchNorm("bn1", 3, np.float64, momentum=1.0)
    x = rng.standard_normal((50, 3)) * 2 + 5
    layer.forward(x, training=True)
    np.testing.assert_allclose(layer.running_mean, x.mean(0))
    np.testing.assert_allclose(layer.running_var, x.var(0, ddof=1))
    out = layer.forward(x, training=False)
    np.testing.assert_allclose(out, (x - x.mean(0)) / np.sqrt(x.var(0, ddof=1) + layer.eps))


def test_dropout_gradient_with_fixed_mask():
    rng = np.random.default_rng(0)
    layer = Dropout("drop1", 0.3, np.random.default_rng(2))
    x = rng.standard_normal((6, 5))
    layer.forward(x, training=True)
    layer.freeze_mask = True
    check_layer(layer, x)


def test_dropout_is_inverted_and_identity_in_eval():
    layer = Dropout("drop1", 0.5, np.random.default_rng(0))
    x = np.ones((2000, 50), np.float32)
    out = layer.forward(x, training=True)
    assert out.dtype == np.float32
    assert set(np.unique(out)) <= {0.0, 2.0}
    assert abs(out.mean() - 1.0) < 0.02
    assert layer.forward(x, training=False) is x


def loss_target(name: str, rng, n: int, k: int):
    if name == "cross_entropy":
        return rng.standard_normal((n, k)), rng.integers(0, k, n)
    if name == "binary_cross_entropy":
        return rng.standard_normal((n, 1)) * 3, rng.integers(0, 2, n)
    out = rng.standard_normal((n, k))
    target = out + away_from_kinks((n, k), rng) * 1.5  # |diff| away from 0 and from huber's delta
    target = np.where(np.abs(np.abs(out - target) - 1.0) < 0.05, target + 0.2, target)
    return out, target


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_loss_gradient(name):
    rng = np.random.default_rng(0)
    output, target = loss_target(name, rng, 6, 4)
    loss = LOSSES[name]()
    _, grad = loss(output, target)
    numeric = numeric_grad(lambda: loss(output, target)[0], output)
    assert rel_error(grad, numeric) <= TOL


def test_cross_entropy_is_stable_for_huge_logits():
    loss = LOSSES["cross_entropy"]()
    logits = np.array([[1000.0, -1000.0, 0.0], [-1e4, 1e4, 0.0]], np.float32)
    value, grad = loss(logits, np.array([0, 0]))
    assert np.isfinite(value) and np.isfinite(grad).all()
    assert value == pytest.approx(1e4, rel=1e-6)


def test_binary_cross_entropy_is_stable_for_huge_logits():
    value, grad = LOSSES["binary_cross_entropy"]()(np.array([[500.0], [-500.0]]), np.array([0, 1]))
    assert value == pytest.approx(500.0) and np.isfinite(grad).all()


@pytest.mark.parametrize(
    "arch",
    [
        Architecture(5, 3, (6, 4), "tanh"),
        Architecture(5, 3, (6,), "gelu", batch_norm=True),
        Architecture(5, 1, (4, 4), "sigmoid", batch_norm=True, dropout=0.3),
        Architecture(5, 2, (), "identity"),
    ],
    ids=["tanh", "gelu-bn", "sigmoid-bn-dropout", "linear"],
)
def test_composed_model_gradient(arch):
    """The whole chain rule through a model, against finite differences of the loss."""
    arch = Architecture(**{**arch.__dict__, "dtype": "float64"})
    model = build_model(arch, init="xavier_normal", rng=np.random.default_rng(0))
    rng = np.random.default_rng(3)
    x = rng.standard_normal((7, 5))
    if arch.n_outputs == 1:
        loss, y = LOSSES["mse"](), rng.standard_normal((7, 1)) * 3
    else:
        loss, y = LOSSES["cross_entropy"](), rng.integers(0, arch.n_outputs, 7)
    model.forward(x, training=True)
    for layer in model.layers:
        if isinstance(layer, Dropout):
            layer.freeze_mask = True
    f = lambda: loss(model.forward(x, training=True), y)[0]
    _, grad = loss(model.forward(x, training=True), y)
    model.backward(grad)
    analytic = {k: v.copy() for k, v in model.gradients().items()}
    for name, param in model.parameters().items():
        assert rel_error(analytic[name], numeric_grad(f, param)) <= TOL, name
