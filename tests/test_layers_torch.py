"""Image layers against PyTorch (float64, tight tolerance): outputs, input and parameter gradients.

PyTorch is an optional oracle: the module is skipped when it is not installed.
Every layer runs on (N, C, H, W) inputs stored both channels-first and
channels-last in memory (a convolution hands the next layer the latter).
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

from workbench.nn.batchnorm import BatchNorm
from workbench.nn.conv import Conv2D
from workbench.nn.layernorm import LayerNorm
from workbench.nn.model import build_network
from workbench.nn.pooling import AvgPool2D, GlobalAvgPool2D, MaxPool2D

TOL = {"rtol": 1e-10, "atol": 1e-10}


def channels_last(x: np.ndarray) -> np.ndarray:
    """The same (N, C, H, W) values stored (N, H, W, C) in memory."""
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)


def tensor(a: np.ndarray):
    return torch.tensor(np.ascontiguousarray(a), dtype=torch.float64, requires_grad=True)


def run_ours(layer, x: np.ndarray, g_seed: int = 1):
    out = layer.forward(x, True)
    g = np.random.default_rng(g_seed).standard_normal(out.shape)
    return out, g, layer.backward(g)


def tf_same(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow's SAME padding, written out independently of workbench.nn.conv."""
    total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


# every kernel x stride x padding, channels and bias varied along (both patch layouts: C < 8 and C >= 8)
CONV_CASES = [((1, 3, 9)[i % 3], kernel, stride, padding, i % 2 == 0) for i, (kernel, stride, padding) in
              enumerate(itertools.product([1, 2, 3, 5], [1, 2, 3], ["same", "valid", 0, 2]))]


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")  # PyTorch pads a copy then
@pytest.mark.parametrize("channels, kernel, stride, padding, bias", CONV_CASES)
def test_conv2d_matches_torch(channels, kernel, stride, padding, bias):
    rng = np.random.default_rng(channels * 100 + kernel * 10 + stride)
    height, width = 7, 6
    if padding == "valid" and kernel > min(height, width):
        pytest.skip("kernel larger than the image")
    x = rng.standard_normal((2, channels, height, width))
    weight = rng.standard_normal((4, channels, kernel, kernel))
    b = rng.standard_normal(4) if bias else None
    layer = Conv2D("conv1", weight.copy(), None if b is None else b.copy(), stride, padding)
    for x_in in (x, channels_last(x)):
        out, g, dx = run_ours(layer, x_in)
        xt, wt, bt = tensor(x), tensor(weight), (tensor(b) if bias else None)
        if padding == "same":
            (top, bottom), (left, right) = tf_same(height, kernel, stride), tf_same(width, kernel, stride)
            if stride == 1:  # PyTorch's own "same" (stride 1 only) must agree
                reference = F.conv2d(xt, wt, bt, padding="same")
            else:
                reference = F.conv2d(F.pad(xt, (left, right, top, bottom)), wt, bt, stride=stride)
        else:
            reference = F.conv2d(xt, wt, bt, stride=stride, padding=0 if padding == "valid" else padding)
        reference.backward(torch.tensor(g))
        np.testing.assert_allclose(out, reference.detach().numpy(), **TOL)
        np.testing.assert_allclose(dx, xt.grad.numpy(), **TOL)
        np.testing.assert_allclose(layer.grads["W"], wt.grad.numpy(), **TOL)
        if bias:
            np.testing.assert_allclose(layer.grads["b"], bt.grad.numpy(), **TOL)
        np.testing.assert_allclose(layer.forward(x_in, False), out, **TOL)


@pytest.mark.parametrize("size, stride", [(1, None), (2, None), (2, 1), (3, 2), (2, 3), (3, None)])
@pytest.mark.parametrize("kind", ["max", "avg"])
def test_pooling_matches_torch(kind, size, stride):
    rng = np.random.default_rng(size * 10 + (stride or 0))
    x = rng.standard_normal((2, 3, 7, 8))
    cls, reference_fn = (MaxPool2D, F.max_pool2d) if kind == "max" else (AvgPool2D, F.avg_pool2d)
    layer = cls("pool1", size, stride)
    for x_in in (x, channels_last(x)):
        out, g, dx = run_ours(layer, x_in)
        xt = tensor(x)
        reference = reference_fn(xt, size, stride or size)
        reference.backward(torch.tensor(g))
        np.testing.assert_allclose(out, reference.detach().numpy(), **TOL)
        np.testing.assert_allclose(dx, xt.grad.numpy(), **TOL)
        np.testing.assert_array_equal(layer.forward(x_in, False), out)


def test_max_pool_ties_route_to_one_element_like_torch():
    x = np.zeros((1, 2, 4, 5))
    x[0, 1, 1:3, 1:4] = 1.0  # plateaus of equal maxima
    for size, stride in ((2, 2), (2, 1), (3, 1)):
        layer = MaxPool2D("pool1", size, stride)
        _, g, dx = run_ours(layer, x)
        xt = tensor(x)
        F.max_pool2d(xt, size, stride).backward(torch.tensor(g))
        np.testing.assert_allclose(dx, xt.grad.numpy(), **TOL)  # the same elements (sums may round apart)
        assert np.array_equal(dx != 0, xt.grad.numpy() != 0)


def test_global_avg_pool_matches_torch():
    x = np.random.default_rng(0).standard_normal((2, 3, 5, 4))
    layer = GlobalAvgPool2D("gap1")
    for x_in in (x, channels_last(x)):
        out, g, dx = run_ours(layer, x_in)
        xt = tensor(x)
        reference = F.adaptive_avg_pool2d(xt, 1).flatten(1)
        reference.backward(torch.tensor(g))
        np.testing.assert_allclose(out, reference.detach().numpy(), **TOL)
        np.testing.assert_allclose(dx, xt.grad.numpy(), **TOL)


@pytest.mark.parametrize("shape", [(6,), (4, 5), (3, 4, 5)], ids=["flat", "sequence", "image"])
def test_layer_norm_matches_torch(shape):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, *shape)) * 2 + 1
    size = shape[0] if len(shape) == 3 else shape[-1]
    layer = LayerNorm("ln1", size, np.float64, images=len(shape) == 3, eps=1e-5)
    layer.params["gamma"][...] = rng.uniform(0.5, 1.5, size)
    layer.params["beta"][...] = rng.standard_normal(size)
    inputs = (x, channels_last(x)) if len(shape) == 3 else (x,)
    for x_in in inputs:
        out, g, dx = run_ours(layer, x_in)
        xt, gamma, beta = tensor(x), tensor(layer.params["gamma"]), tensor(layer.params["beta"])
        if len(shape) == 3:  # one mean and variance per sample over (C, H, W), affine per channel
            reference = F.group_norm(xt, 1, gamma, beta, eps=1e-5)
        else:
            reference = F.layer_norm(xt, (size,), gamma, beta, eps=1e-5)
        reference.backward(torch.tensor(g))
        np.testing.assert_allclose(out, reference.detach().numpy(), **TOL)
        np.testing.assert_allclose(dx, xt.grad.numpy(), **TOL)
        np.testing.assert_allclose(layer.grads["gamma"], gamma.grad.numpy(), **TOL)
        np.testing.assert_allclose(layer.grads["beta"], beta.grad.numpy(), **TOL)


def test_batch_norm_on_images_matches_torch_in_training_and_evaluation():
    rng = np.random.default_rng(0)
    channels = 3
    layer = BatchNorm("bn1", channels, np.float64, momentum=0.1, eps=1e-5)
    layer.params["gamma"][...] = rng.uniform(0.5, 1.5, channels)
    layer.params["beta"][...] = rng.standard_normal(channels)
    reference = torch.nn.BatchNorm2d(channels, eps=1e-5, momentum=0.1, dtype=torch.float64)
    with torch.no_grad():
        reference.weight.copy_(torch.tensor(layer.params["gamma"]))
        reference.bias.copy_(torch.tensor(layer.params["beta"]))
    for step in range(3):  # running statistics move alike
        x = rng.standard_normal((4, channels, 5, 3)) * (step + 1) + step
        x_in = channels_last(x) if step % 2 else x
        out, g, dx = run_ours(layer, x_in)
        xt = tensor(x)
        reference.zero_grad()
        expected = reference.train()(xt)
        expected.backward(torch.tensor(g))
        np.testing.assert_allclose(out, expected.detach().numpy(), **TOL)
        np.testing.assert_allclose(dx, xt.grad.numpy(), **TOL)
        np.testing.assert_allclose(layer.grads["gamma"], reference.weight.grad.numpy(), **TOL)
        np.testing.assert_allclose(layer.grads["beta"], reference.bias.grad.numpy(), **TOL)
        np.testing.assert_allclose(layer.running_mean, reference.running_mean.numpy(), **TOL)
        np.testing.assert_allclose(layer.running_var, reference.running_var.numpy(), **TOL)
    x = rng.standard_normal((2, channels, 5, 3))
    np.testing.assert_allclose(layer.forward(x, False), reference.eval()(torch.tensor(x)).detach().numpy(), **TOL)


def test_small_cnn_matches_torch_end_to_end():
    """The benchmark's network shape, small: the whole forward pass and every parameter gradient."""
    items = [{"type": "conv2d", "filters": 4, "kernel": 5}, {"type": "relu"}, {"type": "max_pool2d", "size": 2},
             {"type": "conv2d", "filters": 6, "kernel": 3}, {"type": "batch_norm"}, {"type": "relu"},
             {"type": "avg_pool2d", "size": 2}, {"type": "flatten"}]
    model = build_network(items, (2, 12, 12), 5, dtype="float64", rng=np.random.default_rng(0))
    nn = torch.nn
    net = nn.Sequential(nn.Conv2d(2, 4, 5, padding="same"), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Conv2d(4, 6, 3, padding="same"), nn.BatchNorm2d(6), nn.ReLU(), nn.AvgPool2d(2),
                        nn.Flatten(), nn.Linear(54, 5)).double()
    pairs = [(net[0], "conv1"), (net[3], "conv2"), (net[4], "bn1"), (net[8], "dense1")]
    with torch.no_grad():
        for module, name in pairs:
            params = model.layer(name).params
            first, second = ("gamma", "beta") if name.startswith("bn") else ("W", "b")
            module.weight.copy_(torch.tensor(params[first].T if name.startswith("dense") else params[first]))
            module.bias.copy_(torch.tensor(params[second]))
    rng = np.random.default_rng(1)
    x, g = rng.standard_normal((3, 2, 12, 12)), rng.standard_normal((3, 5))
    out = model.forward(x, training=True)
    model.backward(g)
    expected = net.train()(torch.tensor(x))
    expected.backward(torch.tensor(g))
    np.testing.assert_allclose(out, expected.detach().numpy(), **TOL)
    for module, name in pairs:
        grads = model.layer(name).grads
        first, second = ("gamma", "beta") if name.startswith("bn") else ("W", "b")
        weight_grad = module.weight.grad.numpy()
        np.testing.assert_allclose(grads[first], weight_grad.T if name.startswith("dense") else weight_grad, **TOL)
        np.testing.assert_allclose(grads[second], module.bias.grad.numpy(), **TOL)
