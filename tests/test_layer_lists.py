"""Models as layer lists: the MLP shorthand builds the same model as before, layer lists build,
name, walk, save and load any architecture, and a layer list's mistakes are one line each."""

from __future__ import annotations

import numpy as np
import pytest

from workbench.errors import UserError
from workbench.nn.activations import ACTIVATIONS
from workbench.nn.batchnorm import BatchNorm
from workbench.nn.dense import Dense
from workbench.nn.dropout import Dropout
from workbench.nn.init import INITIALIZERS
from workbench.nn.model import Architecture, Sequential, build_model, build_network
from workbench.runner import build_run
from workbench.spec import load_spec, spec_from_dict

# train/loss and val/loss of `experiments/digits_mlp.toml` for 5 epochs, computed by the release before layer
# lists (commit e72ffd9) with one BLAS thread. Bitwise identity holds on the same machine and thread count
# (test_mlp_shorthand_builds_the_model_of_the_previous_release proves it structurally); across CPUs and
# BLAS kernels the float32 sums round differently, so the stored figures are compared within 1e-5.
PREVIOUS_RELEASE_DIGITS = {
    "train/loss": [1.463193255287784, 0.4217474765919305, 0.26217461695204247, 0.20979605245215077, 0.147952627520878],
    "val/loss": [0.3696448504924774, 0.17670398950576782, 0.13281191885471344, 0.10743433237075806, 0.0907571092247963],
}


def legacy_mlp(arch: Architecture, init: str, init_scale: float, rng, dropout_rng) -> Sequential:
    """The MLP builder of the previous release, verbatim in substance: the reference the shorthand must match."""
    dtype = np.dtype(arch.dtype)
    initializer = INITIALIZERS[init]
    sizes = [arch.n_inputs, *arch.hidden, arch.n_outputs]
    layers = []
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:]), start=1):
        weight = initializer(fan_in, fan_out, rng, init_scale, dtype)
        layers.append(Dense(f"dense{i}", weight, np.zeros(fan_out, dtype), input_grad=i > 1))
        if i == len(sizes) - 1:
            break
        if arch.batch_norm:
            layers.append(BatchNorm(f"bn{i}", fan_out, dtype))
        layers.append(ACTIVATIONS[arch.activation](f"act{i}"))
        if arch.dropout > 0.0:
            layers.append(Dropout(f"drop{i}", arch.dropout, dropout_rng))
    return Sequential(layers, arch)


@pytest.mark.parametrize("init", ["he_normal", "xavier_uniform", "orthogonal", "standard"])
@pytest.mark.parametrize("batch_norm,dropout", [(False, 0.0), (True, 0.3)])
def test_mlp_shorthand_builds_the_model_of_the_previous_release(init, batch_norm, dropout):
    arch = Architecture(12, 4, (16, 8, 8), "tanh", batch_norm, dropout)
    new = build_model(arch, init, 1.0, np.random.default_rng(3), np.random.default_rng(4))
    old = legacy_mlp(arch, init, 1.0, np.random.default_rng(3), np.random.default_rng(4))
    assert [layer.name for layer in new.layers] == [layer.name for layer in old.layers]
    assert list(new.parameters()) == list(old.parameters())
    for key, value in old.parameters().items():
        assert np.array_equal(new.parameters()[key], value), key  # same machine: bit for bit
    x = np.random.default_rng(5).standard_normal((9, 12)).astype(np.float32)
    for _ in range(2):  # the dropout masks come from the same stream in the same order
        a, b = new.forward(x, training=True), old.forward(x, training=True)
        assert np.array_equal(a, b)
        new.backward(np.ones_like(a))
        old.backward(np.ones_like(b))
        for key, grad in old.gradients().items():
            assert np.array_equal(new.gradients()[key], grad), key
    assert new.layers[0].input_grad is False and new.summary() == old.summary()


def test_digits_mlp_losses_match_the_previous_release():
    run = build_run(load_spec("experiments/digits_mlp.toml", ["training.epochs=5"]))
    run.trainer.fit()
    for key, want in PREVIOUS_RELEASE_DIGITS.items():
        np.testing.assert_allclose(run.trainer.history[key], want, rtol=1e-5, err_msg=key)


def test_layer_list_equal_to_the_shorthand_builds_the_same_model():
    shorthand = spec_from_dict({"model": {"hidden": [32, 16], "activation": "tanh", "dropout": 0.1}})
    listed = spec_from_dict({"model": {"layers": [
        {"type": "dense", "units": 32}, {"type": "tanh"}, {"type": "dropout", "rate": 0.1},
        {"type": "dense", "units": 16}, {"type": "tanh"}, {"type": "dropout", "rate": 0.1}]}})
    a, b = build_run(shorthand).model, build_run(listed).model
    assert list(a.parameters()) == list(b.parameters())
    assert all(np.array_equal(a.parameters()[k], v) for k, v in b.parameters().items())


RESIDUAL = [
    {"type": "dense", "units": 16}, {"type": "relu"},
    {"type": "residual", "body": [
        {"type": "dense", "units": 16}, {"type": "relu"},
        {"type": "residual", "body": [{"type": "dense", "units": 8}, {"type": "tanh"}]},
    ]},
    {"type": "layer_norm"}, {"type": "relu"},
]


def test_names_walk_and_columns_of_nested_residual_blocks():
    model = build_network(RESIDUAL, (5,), 3)
    columns = model.columns()
    assert [c.name for c in columns] == ["dense1", "res1.dense1", "res1.res1.dense1", "res1.res1.proj",
                                         "res1.proj", "dense2"]
    assert [c.depth for c in columns] == [0, 1, 2, 2, 1, 0]
    assert [c.output for c in columns] == [False] * 5 + [True]
    assert columns[0].act.name == "act1" and columns[2].act.name == "res1.res1.act1"
    assert columns[3].act is None and columns[-1].act is None
    info = columns[2].info()
    assert info["path"] == ["res1", "res1", "dense1"] and info["type"] == "dense" and info["container"] == "residual"
    assert set(model.weight_names()) == {f"{c.name}.W" for c in columns}
    x = np.random.default_rng(0).standard_normal((4, 5)).astype(np.float32)
    y = model.forward(x, training=True)
    model.backward(np.ones_like(y))
    assert {c.name for c in columns} <= set(model.outputs) and {c.name for c in columns} <= set(model.grad_outputs)


def test_a_saved_layer_list_loads_with_its_structure_and_weights(tmp_path):
    model = build_network(RESIDUAL, (5,), 3, rng=np.random.default_rng(7))
    x = np.random.default_rng(1).standard_normal((6, 5)).astype(np.float32)
    model.forward(x, training=True)  # moves nothing (no batch norm), but exercises the training path
    path = tmp_path / "weights.npz"
    model.save(path)
    loaded = Sequential.load(path)
    assert loaded.summary() == model.summary()
    assert np.array_equal(loaded.predict(x), model.predict(x))
    with np.load(path, allow_pickle=False) as archive:
        assert "__layers__" in archive.files


def test_spec_layer_list_round_trips_through_toml(tmp_path):
    spec = spec_from_dict({"model": {"layers": RESIDUAL}})
    path = tmp_path / "spec.toml"
    path.write_text(spec.to_toml())
    assert load_spec(path) == spec
    assert "model.hidden" not in spec.flatten()  # the list replaces the shorthand


@pytest.mark.parametrize("model,expect", [
    ({"layers": [{"type": "dens", "units": 4}]}, ['model.layers[0].type = "dens" is not a layer type', 'did you mean "dense"']),
    ({"layers": [{"type": "dense"}]}, ["model.layers[0].units is missing"]),
    ({"layers": [{"type": "relu"}, {"type": "dense", "units": 0}]}, ["model.layers[1].units = 0 is out of range"]),
    ({"layers": [{"type": "dense", "unit": 3}]}, ["model.layers[0].unit is not a key of a dense layer", '"units"']),
    ({"layers": [{"type": "residual", "body": [{"type": "dense", "units": "x"}]}]},
     ['model.layers[0].body[0].units = "x" must be an integer']),
    ({"layers": [{"units": 3}]}, ["model.layers[0] has no type"]),
    ({"layers": [{"type": "dense", "units": 4}], "hidden": [3]}, ["model.layers and model.hidden are both given"]),
    ({"layers": "dense"}, ["model.layers", "must be a non-empty list of layer tables"]),
])
def test_layer_list_mistakes_are_one_line_naming_the_item(model, expect):
    with pytest.raises(UserError) as error:
        spec_from_dict({"model": model})
    message = str(error.value)
    assert "\n" not in message
    for text in expect:
        assert text in message


def test_shape_mistakes_name_the_item_before_any_work():
    with pytest.raises(UserError, match=r"model.layers\[0\]: the body turns 5 into 3 and projection = false"):
        build_network([{"type": "residual", "projection": False, "body": [{"type": "dense", "units": 3}]}], (5,), 2)
    with pytest.raises(UserError, match=r"model.layers\[1\].*100,000,000 parameters"):
        build_network([{"type": "dense", "units": 20000}, {"type": "dense", "units": 20000}], (5,), 2)


def test_readme_layer_table_is_the_registry():
    from pathlib import Path

    from workbench.nn.registry import layer_reference

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert layer_reference() in readme, "README's layer table is stale: paste workbench.nn.registry.layer_reference()"


def test_nan_guard_names_the_nested_layer_where_the_forward_pass_broke():
    spec = spec_from_dict({"data": {"source": "iris"}, "model": {"layers": RESIDUAL}, "training": {"epochs": 2}})
    run = build_run(spec)
    run.model.layer("res1.res1.dense1").params["W"][0, 0] = np.nan
    result = run.trainer.fit()
    assert result.status == "FAILED" and "at layer res1.res1.dense1" in result.reason


@pytest.mark.parametrize("shape,items", [
    ((3,), [{"type": "dense", "units": 4}, {"type": "batch_norm"}, {"type": "tanh"}]),
    ((2, 5, 5), [{"type": "conv2d", "filters": 3, "kernel": 3}, {"type": "batch_norm"}, {"type": "tanh"},
                 {"type": "flatten"}]),
])
def test_batch_norm_backward_after_evaluation_is_the_fixed_maps_gradient(shape, items):
    """Found by the Balduzzi experiment: backward after an eval forward reused the training batch's cache."""
    model = build_network(items, shape, 2, dtype="float64", rng=np.random.default_rng(0))
    model.layers[0].input_grad = True
    rng = np.random.default_rng(1)
    model.forward(rng.standard_normal((8, *shape)), training=True)  # moves the running statistics
    x = rng.standard_normal((5, *shape)) + 2.0
    weights = rng.standard_normal((5, 2))
    model.forward(x, training=False)
    grad = model.backward(weights)
    numeric = np.zeros_like(x)
    for index in np.ndindex(*x.shape):
        step = np.zeros_like(x)
        step[index] = 1e-6
        numeric[index] = (np.sum(model.predict(x + step) * weights) - np.sum(model.predict(x - step) * weights)) / 2e-6
    np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-8)
