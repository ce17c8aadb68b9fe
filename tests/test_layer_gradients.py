"""Finite-difference gradient checks for every registered layer type, and composed image models.

The battery iterates `workbench.nn.registry.LAYERS`: a registered type without an
example here fails the suite, so no new type can skip its gradient check. Each
example is a small layer list and a per-sample input shape, built in float64;
the loss is sum(out * R) for a fixed random R (so dL/dout = R), and the input
gradient and every parameter gradient must match central differences
(h = 1e-6) to a relative error of 1e-6. Then: whole models (a conv net with
pooling and batch norm, nested residual blocks with projections, layer norm),
float32 kept end to end by every type, the first layer's skipped input
gradient, save and load of image models, and the one-line errors for shapes a
layer cannot take.
"""

from __future__ import annotations

import numpy as np
import pytest

from workbench.errors import UserError
from workbench.nn.build import BuildContext, build_layers
from workbench.nn.dropout import Dropout
from workbench.nn.losses import CrossEntropy
from workbench.nn.model import Sequential, build_network
from workbench.nn.registry import LAYERS, check_layers

H = 1e-6
TOL = 1e-6
BATCH = 3

# type -> examples (layer items, per-sample input shape); every registered type needs at least one
CONV = {"type": "conv2d", "filters": 3, "kernel": 3}
EXAMPLES: dict[str, list[tuple[list[dict], tuple[int, ...]]]] = {
    "dense": [([{"type": "dense", "units": 4}], (5,))],
    "conv2d": [
        ([CONV], (2, 5, 5)),
        ([{**CONV, "kernel": 2, "stride": 2}], (2, 5, 5)),  # even kernel, stride 2, "same": padding at the end
        ([{**CONV, "padding": "valid", "bias": False}], (1, 5, 4)),
        ([{**CONV, "padding": 1, "stride": 2}], (2, 5, 5)),
        ([{**CONV, "kernel": 1, "padding": 2}], (2, 3, 3)),  # padding wider than the kernel
        ([{**CONV, "filters": 2, "kernel": 3}], (9, 4, 4)),  # channels-major patches (C >= 8)
        ([{**CONV, "filters": 2, "kernel": 2, "stride": 3, "padding": "valid"}], (9, 5, 5)),  # gaps between patches
    ],
    "max_pool2d": [
        ([{"type": "max_pool2d", "size": 2}], (2, 5, 5)),
        ([{"type": "max_pool2d", "size": 3, "stride": 1}], (2, 5, 4)),  # overlapping windows
        ([{"type": "max_pool2d", "size": 2, "stride": 3}], (1, 5, 5)),  # gaps between windows
    ],
    "avg_pool2d": [
        ([{"type": "avg_pool2d", "size": 2}], (2, 5, 5)),
        ([{"type": "avg_pool2d", "size": 3, "stride": 1}], (2, 5, 4)),
        ([{"type": "avg_pool2d", "size": 2, "stride": 3}], (1, 5, 5)),
    ],
    "global_avg_pool2d": [([{"type": "global_avg_pool2d"}], (3, 4, 5))],
    "flatten": [([{"type": "flatten"}], (2, 3, 4))],
    "residual": [
        ([{"type": "residual", "body": [{"type": "dense", "units": 4}, {"type": "tanh"}]}], (4,)),
        ([{"type": "residual", "body": [{"type": "dense", "units": 3}]}], (5,)),  # dense projection
        ([{"type": "residual", "body": [{**CONV, "stride": 2}, {"type": "tanh"}]}], (2, 5, 5)),  # 1x1 conv projection
    ],
    "batch_norm": [([{"type": "batch_norm"}], (4,)), ([{"type": "batch_norm"}], (3, 4, 4))],
    "layer_norm": [([{"type": "layer_norm"}], (6,)), ([{"type": "layer_norm"}], (3, 4)),
                   ([{"type": "layer_norm"}], (3, 4, 4))],
    "dropout": [([{"type": "dropout", "rate": 0.3}], (6,))],
    **{name: [([{"type": name, "units": 3}], (4, 2)), ([{"type": name, "units": 2, "return_sequences": True}], (3, 2))]
       for name in ("rnn", "lstm", "gru")},
    **{name: [([{"type": name}], (2, 3, 3))] for name in
       ("relu", "leaky_relu", "elu", "gelu", "tanh", "sigmoid", "softsign", "identity")},
}


def rel_error(a: np.ndarray, b: np.ndarray) -> float:
    """max |a - b| / max(|a| + |b|), floored at 1e-3 (an exactly-zero gradient is held to 1e-9 absolute)."""
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(a) + np.abs(b)), 1e-3))


def numeric_grad(f, x: np.ndarray) -> np.ndarray:
    """Central differences of scalar f() with respect to array x (perturbed in place)."""
    grad = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        old = x[i]
        x[i] = old + H
        plus = f()
        x[i] = old - H
        minus = f()
        x[i] = old
        grad[i] = (plus - minus) / (2 * H)
    return grad


def build(items: list[dict], input_shape, dtype="float64", seed=0) -> tuple[Sequential, tuple[int, ...]]:
    """Checked items built for `input_shape` (any output shape), every layer computing dL/dx."""
    ctx = BuildContext(dtype=np.dtype(dtype), rng=np.random.default_rng(seed), dropout_rng=np.random.default_rng(1),
                       registry=LAYERS, init="xavier_normal")
    layers, shape = build_layers(check_layers(items), tuple(input_shape), ctx)
    return Sequential(layers, input_shape=input_shape), shape


def randomize_affine(model: Sequential, rng) -> None:
    """gamma and beta away from 1 and 0, biases away from 0, so that their gradients are tested in general."""
    for layer, _ in model.walk():
        for key, value in layer.params.items():
            if key in ("gamma", "beta", "b"):
                value[...] = rng.uniform(0.5, 1.5, value.shape) if key == "gamma" else rng.standard_normal(value.shape)


def away_from_kinks(shape, rng) -> np.ndarray:
    x = rng.standard_normal(shape)
    return np.where(np.abs(x) < 0.05, np.sign(x) * 0.05 + x, x)


def freeze_dropout(model: Sequential, x: np.ndarray) -> None:
    model.forward(x, training=True)
    for layer, _ in model.walk():
        if isinstance(layer, Dropout):
            layer.freeze_mask = True


def check_model(model: Sequential, x: np.ndarray, loss=None, y=None) -> None:
    """Input gradient and every parameter gradient of the model against central differences."""
    freeze_dropout(model, x)
    if loss is None:
        r = np.random.default_rng(1).standard_normal(model.forward(x, training=True).shape)
        value = lambda: float(np.sum(model.forward(x, training=True) * r))
        grad_out = lambda: r
    else:
        value = lambda: loss(model.forward(x, training=True), y)[0]
        grad_out = lambda: loss(model.forward(x, training=True), y)[1]
    grad_in = model.backward(grad_out())
    analytic = {name: grad.copy() for name, grad in model.gradients().items()}
    assert grad_in is not None and grad_in.shape == x.shape
    assert rel_error(grad_in, numeric_grad(value, x)) <= TOL, "input"
    for name, param in model.parameters().items():
        assert rel_error(analytic[name], numeric_grad(value, param)) <= TOL, name


@pytest.mark.parametrize("type_name", sorted(LAYERS))
def test_every_registered_layer_gradient(type_name):
    assert type_name in EXAMPLES, f"layer type {type_name!r} is registered but has no gradient-check example here"
    for index, (items, shape) in enumerate(EXAMPLES[type_name]):
        rng = np.random.default_rng(index)
        model, _ = build(items, shape, seed=index)
        randomize_affine(model, rng)
        check_model(model, away_from_kinks((BATCH, *shape), rng))


@pytest.mark.parametrize("type_name", sorted(LAYERS))
def test_every_registered_layer_keeps_float32(type_name):
    items, shape = EXAMPLES[type_name][0]
    model, _ = build(items, shape, dtype="float32")
    x = np.random.default_rng(0).standard_normal((BATCH, *shape)).astype(np.float32)
    out = model.forward(x, training=True)
    grad = model.backward(np.ones_like(out))
    arrays = {"output": out, "input gradient": grad, "eval output": model.forward(x, training=False),
              **model.parameters(), **model.gradients()}
    for layer, _ in model.walk():
        arrays.update({f"{layer.name}.{k}": v for k, v in layer.state().items()})
    assert {name: a.dtype for name, a in arrays.items() if a.dtype != np.float32} == {}


# -- whole models -------------------------------------------------------------------------------------------
CONV_NET = [
    {"type": "conv2d", "filters": 3, "kernel": 3}, {"type": "batch_norm"}, {"type": "relu"},
    {"type": "max_pool2d", "size": 2},
    {"type": "conv2d", "filters": 4, "kernel": 2}, {"type": "avg_pool2d", "size": 2, "stride": 1},
    {"type": "flatten"},
]
NESTED_RESIDUALS = [
    {"type": "residual", "body": [  # image body: stride 2 and 3 filters, so a 1x1 strided projection
        {"type": "conv2d", "filters": 3, "kernel": 3, "stride": 2}, {"type": "tanh"},
        {"type": "residual", "body": [{"type": "conv2d", "filters": 3, "kernel": 3}, {"type": "batch_norm"}]},
    ]},
    {"type": "global_avg_pool2d"},
    {"type": "residual", "body": [  # flat body: 3 -> 4 features, so a dense projection
        {"type": "dense", "units": 4}, {"type": "tanh"},
        {"type": "residual", "body": [{"type": "dense", "units": 4}, {"type": "sigmoid"}]},
    ]},
]
LAYER_NORM_NET = [
    {"type": "conv2d", "filters": 3, "kernel": 3}, {"type": "layer_norm"}, {"type": "gelu"},
    {"type": "flatten"}, {"type": "dense", "units": 5}, {"type": "layer_norm"}, {"type": "elu"},
]


@pytest.mark.parametrize("items, shape", [(CONV_NET, (2, 5, 5)), (NESTED_RESIDUALS, (2, 5, 5)),
                                          (LAYER_NORM_NET, (1, 5, 5))], ids=["conv-bn-pool", "nested-residuals",
                                                                            "layer-norm"])
def test_composed_image_model_gradient(items, shape):
    model = build_network(items, shape, 3, init="xavier_normal", dtype="float64", rng=np.random.default_rng(0))
    rng = np.random.default_rng(3)
    randomize_affine(model, rng)
    assert model.layers[0].input_grad is False  # the model's first layer skips dL/dx ...
    model.layers[0].input_grad = True  # ... unless asked, which the check needs
    check_model(model, rng.standard_normal((BATCH, *shape)), CrossEntropy(), rng.integers(0, 3, BATCH))


def test_first_conv_layer_skips_the_input_gradient():
    model = build_network(CONV_NET, (2, 5, 5), 3, dtype="float64")
    x = np.random.default_rng(0).standard_normal((BATCH, 2, 5, 5))
    out = model.forward(x, training=True)
    assert model.backward(np.ones_like(out)) is None
    assert np.abs(model.gradients()["conv1.W"]).sum() > 0


def test_conv_backward_can_run_twice_after_one_forward():
    model, _ = build([CONV], (2, 5, 5))
    x = np.random.default_rng(0).standard_normal((BATCH, 2, 5, 5))
    out = model.forward(x, training=True)
    first = model.backward(np.ones_like(out)).copy(), model.gradients()["conv1.W"].copy()
    second = model.backward(np.ones_like(out)), model.gradients()["conv1.W"]
    assert np.array_equal(first[0], second[0]) and np.array_equal(first[1], second[1])


def test_eval_convolution_in_chunks_equals_one_pass(monkeypatch):
    from workbench.nn import conv

    model, _ = build([CONV, {"type": "relu"}, {"type": "conv2d", "filters": 9, "kernel": 3}], (2, 6, 6))
    x = np.random.default_rng(0).standard_normal((7, 2, 6, 6))
    whole = model.forward(x, training=False)
    monkeypatch.setattr(conv, "EVAL_PATCH_BYTES", 1000)  # a few images per chunk
    np.testing.assert_allclose(model.forward(x, training=False), whole, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(model.forward(x, training=True), whole, rtol=1e-12, atol=1e-12)


def test_image_model_saves_and_loads(tmp_path):
    items = [*CONV_NET[:4], {"type": "layer_norm"}, {"type": "max_pool2d", "size": 2, "stride": 1}, {"type": "flatten"}]
    model = build_network(items, (2, 6, 6), 3, rng=np.random.default_rng(0))
    x = np.random.default_rng(1).standard_normal((4, 2, 6, 6)).astype(np.float32)
    model.forward(x, training=True)  # moves the batch norm's running statistics
    model.save(tmp_path / "model.npz")
    loaded = Sequential.load(tmp_path / "model.npz")
    assert [layer.config() for layer in loaded.layers] == [layer.config() for layer in model.layers]
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    assert loaded.summary() == model.summary()


# -- shapes a layer cannot take: one line naming the item -----------------------------------------------------
@pytest.mark.parametrize("items, shape, where, words", [
    ([{"type": "dense", "units": 4}], (1, 5, 5), "model.layers[0]", ["flatten"]),
    ([CONV, {"type": "max_pool2d", "size": 6}], (1, 5, 5), "model.layers[1]", ["larger than the 5x5 image"]),
    ([CONV, {"type": "avg_pool2d", "size": 2, "stride": 2}, {"type": "avg_pool2d", "size": 3}], (1, 5, 5),
     "model.layers[2]", ["larger than the 2x2 image"]),
    ([{"type": "dense", "units": 4}, CONV], (16,), "model.layers[1]", ["images", "mnist", "(N, C, H, W)"]),
    ([CONV], (64,), "model.layers[0]", ["images", "digits"]),
    ([{"type": "max_pool2d", "size": 2}], (64,), "model.layers[0]", ["images"]),
    ([{"type": "global_avg_pool2d"}], (64,), "model.layers[0]", ["images"]),
    ([{"type": "residual", "projection": False, "body": [{**CONV, "filters": 4}]}], (2, 5, 5), "model.layers[0]",
     ["projection = false", "projection = true"]),
    ([{**CONV, "kernel": 7, "padding": "valid"}], (1, 5, 5), "model.layers[0]", ["7x7 kernel", "larger"]),
    ([{**CONV, "padding": "sme"}], (1, 5, 5), "model.layers[0]", ['"same"', '"valid"']),
    ([{**CONV, "padding": -1}], (1, 5, 5), "model.layers[0]", ["negative"]),
    ([{**CONV, "stride": 0}], (1, 5, 5), "model.layers[0].stride", [">= 1"]),
    ([{"type": "conv2d", "kernel": 3}], (1, 5, 5), "model.layers[0].filters", ["missing"]),
])
def test_shape_errors_are_one_line_and_name_the_item(items, shape, where, words):
    with pytest.raises(UserError) as raised:
        build_network(items, shape, 3)
    message = str(raised.value)
    assert "\n" not in message and message.startswith(where), message
    for word in words:
        assert word in message, message


def test_output_shapes_and_descriptions():
    model = build_network(CONV_NET, (2, 7, 6), 3)
    assert model.input_shape == (2, 7, 6)
    x = np.zeros((2, 2, 7, 6), np.float32)
    model.forward(x, training=False)
    shapes = {name: out.shape[1:] for name, out in model.outputs.items()}
    assert shapes == {"conv1": (3, 7, 6), "bn1": (3, 7, 6), "act1": (3, 7, 6), "pool1": (3, 3, 3), "conv2": (4, 3, 3),
                      "pool2": (4, 2, 2), "flatten1": (16,), "dense1": (3,)}
    assert model.summary().startswith("2x7x6 -> conv 3 3x3 -> batchnorm -> relu -> maxpool 2 -> conv 4 2x2 -> "
                                      "avgpool 2 /1 -> flatten -> dense 3")
