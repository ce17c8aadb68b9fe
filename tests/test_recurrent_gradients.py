"""Backpropagation through time checked by central differences in float64, and against PyTorch.

Checks run over several steps (single-step checks hide the classic BPTT bugs: the gradient carried
from step t+1 into step t, the gate biases), stacked layers, both return_sequences settings and
truncated BPTT; relative error <= 1e-6 (h = 1e-6). Truncated BPTT is the exact gradient of the
loss with the hidden state held constant at each cut, so its check perturbs a parameter in each
chunk with the chunk's starting state fixed (taken from the full forward pass) and sums the chunks.
PyTorch's nn.RNN, nn.LSTM and nn.GRU (when installed) give the same outputs and gradients in float64:
their W_ih, W_hh are our W^T, U^T (gate order i, f, g, o and r, z, n, as ours), their two bias
vectors add up to our b, except GRU's b_hn, which is our b_rec.
"""

from __future__ import annotations

import numpy as np
import pytest

from workbench.nn.build import BuildContext, build_layers
from workbench.nn.dropout import Dropout
from workbench.nn.losses import CrossEntropy, MeanSquaredError
from workbench.nn.model import Sequential, build_network
from workbench.nn.recurrent import Recurrent
from workbench.nn.registry import LAYERS, check_layers

H = 1e-6
TOL = 1e-6
N, T, F = 3, 6, 2
CELLS = [{"type": "rnn"}, {"type": "rnn", "activation": "relu"}, {"type": "lstm"}, {"type": "gru"}]
CELL_IDS = ["rnn-tanh", "rnn-relu", "lstm", "gru"]


def rel_error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(a) + np.abs(b)), 1e-3))


def numeric_grad(f, x: np.ndarray) -> np.ndarray:
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


def build(items: list[dict], shape=(T, F), seed: int = 0) -> Sequential:
    """Layers in float64 with every parameter moved off its initial value (biases too), all computing dL/dx."""
    ctx = BuildContext(np.dtype("float64"), np.random.default_rng(seed), np.random.default_rng(1), LAYERS,
                       init="xavier_normal")
    layers, _ = build_layers(check_layers(items), shape, ctx)
    model = Sequential(layers, input_shape=shape)
    rng = np.random.default_rng(seed + 10)
    for name, value in model.parameters().items():
        value += rng.standard_normal(value.shape) * (0.4 if name.endswith((".b", ".b_rec")) else 0.25)
    return model


def check(model: Sequential, x: np.ndarray, value=None, grad_out=None) -> None:
    """dL/dx and every parameter gradient of `model` against central differences of `value()`."""
    out = model.forward(x, training=True)
    r = np.random.default_rng(7).standard_normal(out.shape)
    if value is None:
        value = lambda: float(np.sum(model.forward(x, training=True) * r))  # noqa: E731
        grad_out = r
    model.forward(x, training=True)
    grad_in = model.backward(grad_out)
    analytic = {name: grad.copy() for name, grad in model.gradients().items()}
    assert rel_error(grad_in, numeric_grad(value, x)) <= TOL, "input"
    for name, param in model.parameters().items():
        assert rel_error(analytic[name], numeric_grad(value, param)) <= TOL, name


def sequences(shape=(N, T, F), seed: int = 2) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape)


@pytest.mark.parametrize("cell", CELLS, ids=CELL_IDS)
@pytest.mark.parametrize("return_sequences", [False, True], ids=["last", "sequences"])
def test_one_layer_through_time(cell, return_sequences):
    model = build([{**cell, "units": 4, "return_sequences": return_sequences}])
    check(model, sequences())


@pytest.mark.parametrize("cell", CELLS, ids=CELL_IDS)
@pytest.mark.parametrize("return_sequences", [False, True], ids=["last", "sequences"])
def test_stacked_layers_through_time(cell, return_sequences):
    """Two layers of the cell (the first returns every step to the second), then another cell type on top."""
    other = {"type": "gru"} if cell["type"] != "gru" else {"type": "lstm"}
    model = build([{**cell, "units": 3, "return_sequences": True},
                   {**cell, "units": 4, "return_sequences": True},
                   {**other, "units": 2, "return_sequences": return_sequences}])
    check(model, sequences())


@pytest.mark.parametrize("cell", CELLS, ids=CELL_IDS)
@pytest.mark.parametrize("return_sequences", [False, True], ids=["last", "sequences"])
@pytest.mark.parametrize("k", [1, 2, 4])
def test_truncated_bptt_is_the_gradient_with_the_state_held_at_each_cut(cell, return_sequences, k):
    model = build([{**cell, "units": 3, "return_sequences": return_sequences}])
    layer = model.layers[0]
    layer.bptt_steps = k
    x = sequences()
    out = model.forward(x, training=True)
    r = np.random.default_rng(7).standard_normal(out.shape)
    states = [layer._buffers.h.copy()] + ([layer._buffers.c.copy()] if cell["type"] == "lstm" else [])
    chunks, end = [], T
    while end > 0:  # cuts counted back from the last step
        chunks.append((max(0, end - k), end))
        end -= k

    def value() -> float:
        total = 0.0
        for a, b in chunks:
            layer.initial_state = tuple(state[a] for state in states)
            layer.return_sequences = True
            h = layer.forward(x[:, a:b], training=True)
            layer.return_sequences = return_sequences
            if return_sequences:
                total += float(np.sum(h * r[:, a:b]))
            elif b == T:
                total += float(np.sum(h[:, -1] * r))
        layer.initial_state = None
        return total

    check(model, x, value, r)


@pytest.mark.parametrize("cell", CELLS, ids=CELL_IDS)
def test_truncation_changes_the_gradient_and_a_long_window_does_not(cell):
    model = build([{**cell, "units": 6}], seed=3)
    layer, x = model.layers[0], sequences()
    r = np.random.default_rng(7).standard_normal(model.forward(x, training=True).shape)

    def grads(k: int) -> dict[str, np.ndarray]:
        layer.bptt_steps = k
        model.forward(x, training=True)
        model.backward(r)
        return {name: g.copy() for name, g in model.gradients().items()}

    full, window, short = grads(0), grads(T), grads(2)
    for name in full:
        assert np.array_equal(full[name], window[name]), name
    assert not np.allclose(full[f"{layer.name}.U"], short[f"{layer.name}.U"])
    norms = layer.time_grad_norms()
    assert norms[: T - 2].max() == 0.0 and norms[-1] > 0  # only the last chunk gets gradient (one loss at T)


@pytest.mark.parametrize("cell", CELLS, ids=CELL_IDS)
def test_time_grad_norms_are_the_norms_of_dl_dh(cell):
    """||dL/dh_t|| from the layer equals the norm of the gradient a perturbation of h_t sees (the last step's)."""
    model = build([{**cell, "units": 4, "return_sequences": True}])
    x = sequences()
    r = np.random.default_rng(7).standard_normal(model.forward(x, training=True).shape)
    model.backward(r)
    norms = model.layers[0].time_grad_norms()
    assert norms.shape == (T,)
    assert norms[-1] == pytest.approx(np.linalg.norm(r[:, -1]), rel=1e-12)  # dL/dh_T: the direct gradient only
    assert np.all(norms > 0)


def test_recurrent_layers_among_dense_dropout_and_layer_norm():
    """rnn (every step) -> dropout -> gru (last step) -> layer norm -> dense -> tanh -> output, with a loss."""
    items = [{"type": "rnn", "units": 4, "return_sequences": True}, {"type": "dropout", "rate": 0.3},
             {"type": "gru", "units": 3}, {"type": "layer_norm"}, {"type": "dense", "units": 4}, {"type": "tanh"}]
    model = build_network(items, (T, F), 3, init="xavier_normal", dtype="float64", rng=np.random.default_rng(0))
    model.layers[0].input_grad = True
    x = sequences()
    model.forward(x, training=True)
    for layer in model.layers:
        if isinstance(layer, Dropout):
            layer.freeze_mask = True
    y = np.random.default_rng(3).integers(0, 3, N)
    loss = CrossEntropy()
    check(model, x, lambda: loss(model.forward(x, training=True), y)[0], loss(model.forward(x, training=True), y)[1])


def test_per_step_output_with_a_target_at_every_step():
    """lstm (every step) -> the output dense applied per step -> cross-entropy over (N, T, C) with (N, T) labels."""
    model = build_network([{"type": "lstm", "units": 4, "return_sequences": True}], (T, F), 5,
                          init="xavier_normal", dtype="float64", rng=np.random.default_rng(0), per_step=True)
    model.layers[0].input_grad = True
    assert model.layers[-1].per_step
    x = sequences()
    y = np.random.default_rng(3).integers(0, 5, (N, T))
    loss = CrossEntropy()
    out = model.forward(x, training=True)
    assert out.shape == (N, T, 5)
    check(model, x, lambda: loss(model.forward(x, training=True), y)[0], loss(out, y)[1])
    assert loss.predict(out).shape == (N, T)


def test_regression_loss_through_a_stack():
    model = build_network([{"type": "lstm", "units": 3, "return_sequences": True}, {"type": "rnn", "units": 3}],
                          (T, F), 1, init="xavier_normal", dtype="float64", rng=np.random.default_rng(0))
    model.layers[0].input_grad = True
    x, y = sequences(), np.random.default_rng(3).standard_normal((N, 1))
    loss = MeanSquaredError()
    check(model, x, lambda: loss(model.forward(x, training=True), y)[0], loss(model.forward(x, training=True), y)[1])


@pytest.mark.parametrize("cell", CELLS, ids=CELL_IDS)
def test_float32_in_float32_out(cell):
    ctx = BuildContext(np.dtype("float32"), np.random.default_rng(0), np.random.default_rng(1), LAYERS)
    layers, _ = build_layers(check_layers([{**cell, "units": 5, "return_sequences": True}]), (T, F), ctx)
    layer = layers[0]
    x = sequences().astype(np.float32)
    out = layer.forward(x, training=True)
    grad = layer.backward(np.ones_like(out))
    assert out.dtype == grad.dtype == np.float32
    assert all(g.dtype == np.float32 for g in layer.grads.values())
    assert isinstance(layer, Recurrent)


# -- PyTorch as the reference --------------------------------------------------------------------------------
def torch_pair(cell: dict, units: int, return_sequences: bool, seed: int = 0):
    """Our layer and PyTorch's module with the same float64 weights."""
    torch = pytest.importorskip("torch")
    model = build([{**cell, "units": units, "return_sequences": return_sequences}], seed=seed)
    layer = model.layers[0]
    p = {k: torch.tensor(v) for k, v in layer.params.items()}
    kind = cell["type"]
    if kind == "rnn":
        module = torch.nn.RNN(F, units, batch_first=True, nonlinearity=cell.get("activation", "tanh"))
    else:
        module = getattr(torch.nn, kind.upper())(F, units, batch_first=True)
    module = module.double()
    with torch.no_grad():
        module.weight_ih_l0.copy_(p["W"].T)
        module.weight_hh_l0.copy_(p["U"].T)
        split = np.random.default_rng(seed + 1).uniform(0.2, 0.8, layer.params["b"].shape)  # any split of b works
        module.bias_ih_l0.copy_(p["b"] * torch.tensor(split))
        module.bias_hh_l0.copy_(p["b"] * torch.tensor(1 - split))
        if kind == "gru":
            H = units
            module.bias_ih_l0[2 * H :] = p["b"][2 * H :]
            module.bias_hh_l0[2 * H :] = p["b_rec"]
    return torch, layer, module


@pytest.mark.parametrize("cell", CELLS, ids=CELL_IDS)
@pytest.mark.parametrize("return_sequences", [False, True], ids=["last", "sequences"])
def test_same_outputs_and_gradients_as_pytorch(cell, return_sequences):
    units = 5
    torch, layer, module = torch_pair(cell, units, return_sequences)
    x = np.random.default_rng(4).standard_normal((4, 9, F))
    ours = layer.forward(x, training=True)
    tx = torch.tensor(x, requires_grad=True)
    theirs, _ = module(tx)
    if not return_sequences:
        theirs = theirs[:, -1]
    np.testing.assert_allclose(ours, theirs.detach().numpy(), rtol=1e-10, atol=1e-12)
    r = np.random.default_rng(5).standard_normal(ours.shape)
    dx = layer.backward(r)
    (theirs * torch.tensor(r)).sum().backward()
    H = units
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(layer.grads["W"], module.weight_ih_l0.grad.numpy().T, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(layer.grads["U"], module.weight_hh_l0.grad.numpy().T, rtol=1e-9, atol=1e-12)
    bias_ih, bias_hh = module.bias_ih_l0.grad.numpy(), module.bias_hh_l0.grad.numpy()
    np.testing.assert_allclose(layer.grads["b"], bias_ih, rtol=1e-9, atol=1e-12)  # d/db = d/db_ih ...
    if cell["type"] == "gru":
        np.testing.assert_allclose(layer.grads["b"][: 2 * H], bias_hh[: 2 * H], rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(layer.grads["b_rec"], bias_hh[2 * H :], rtol=1e-9, atol=1e-12)  # b_hn
    else:
        np.testing.assert_allclose(layer.grads["b"], bias_hh, rtol=1e-9, atol=1e-12)  # ... = d/db_hh


def test_stacked_lstm_matches_a_two_layer_pytorch_lstm():
    torch = pytest.importorskip("torch")
    model = build([{"type": "lstm", "units": 4, "return_sequences": True}, {"type": "lstm", "units": 4}])
    module = torch.nn.LSTM(F, 4, num_layers=2, batch_first=True).double()
    with torch.no_grad():
        for k, layer in enumerate(model.layers):
            getattr(module, f"weight_ih_l{k}").copy_(torch.tensor(layer.params["W"].T))
            getattr(module, f"weight_hh_l{k}").copy_(torch.tensor(layer.params["U"].T))
            getattr(module, f"bias_ih_l{k}").copy_(torch.tensor(layer.params["b"]))
            getattr(module, f"bias_hh_l{k}").zero_()
    x = sequences((4, 7, F))
    ours = model.forward(x, training=True)
    theirs, _ = module(torch.tensor(x))
    np.testing.assert_allclose(ours, theirs[:, -1].detach().numpy(), rtol=1e-10, atol=1e-12)
    model.layers[0].input_grad = True
    r = np.random.default_rng(5).standard_normal(ours.shape)
    model.backward(r)
    (theirs[:, -1] * torch.tensor(r)).sum().backward()
    for k, layer in enumerate(model.layers):
        np.testing.assert_allclose(layer.grads["U"], getattr(module, f"weight_hh_l{k}").grad.numpy().T,
                                   rtol=1e-9, atol=1e-12)


def test_a_recurrent_model_with_a_per_step_output_saves_and_loads(tmp_path):
    model = build_network([{"type": "lstm", "units": 4, "return_sequences": True},
                           {"type": "gru", "units": 3, "return_sequences": True}], (T, F), 5, per_step=True,
                          rng=np.random.default_rng(0))
    x = sequences().astype(np.float32)
    model.save(tmp_path / "model.npz")
    loaded = Sequential.load(tmp_path / "model.npz")
    assert loaded.layers[-1].per_step and loaded.summary() == model.summary()
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))


def test_layer_norm_between_stacked_recurrent_layers():
    """lstm (every step) -> layer norm over each step's units -> gru: layer norm on (T, H) sequences."""
    model = build([{"type": "lstm", "units": 4, "return_sequences": True}, {"type": "layer_norm"},
                   {"type": "gru", "units": 3}])
    check(model, sequences())
