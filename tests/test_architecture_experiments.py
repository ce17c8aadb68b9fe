"""Tiny versions of the architecture experiments (benchmarks/architecture_experiments.py): each goes the
paper's way at a size that runs in seconds, with margins wide enough for any seed and machine.

- Veit et al. 2016: the single-path gradients partition the model's own gradient; the gradient through a
  path falls with the number of residual bodies on it.
- Balduzzi et al. 2017: the derivative at fixed batch-norm statistics is the function's derivative; a deep
  plain net's gradient decorrelates between neighbouring inputs, a residual net's of the same depth does not.
- He et al. 2016: after a short budget the deep plain net's training loss is above the deep residual net's.
"""

from __future__ import annotations

import importlib
import itertools
import sys
from pathlib import Path

import numpy as np
import pytest

from workbench.nn.model import build_network
from workbench.runner import build_run
from workbench.spec import load_spec

REPO = Path(__file__).resolve().parents[1]
EXPERIMENTS = REPO / "experiments"


@pytest.fixture(scope="module")
def arch():
    """The experiment script as a module (benchmarks/ is a folder of scripts, not a package). The scripts are
    taken out of `sys.modules` again: Hypothesis draws constants from every local module it finds there,
    and the property tests' examples must not depend on whether this ran first in their process."""
    before = set(sys.modules)
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        return importlib.import_module("architecture_experiments")
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
        for name in set(sys.modules) - before:
            if not name.startswith("workbench"):  # the package stays (the property tests load all of it)
                del sys.modules[name]


def tiny_resnet(blocks: int, width: int = 8, seed: int = 0, n_inputs: int = 5):
    body = [{"type": "dense", "units": width}, {"type": "batch_norm"}, {"type": "relu"},
            {"type": "dense", "units": width}, {"type": "batch_norm"}]
    items = [{"type": "dense", "units": width}, {"type": "relu"}]
    for _ in range(blocks):
        items += [{"type": "residual", "body": body}, {"type": "relu"}]
    return build_network(items, (n_inputs,), 3, dtype="float64", rng=np.random.default_rng(seed))


def test_single_paths_sum_to_the_models_gradient(arch):
    model = tiny_resnet(blocks=4)
    x = np.random.default_rng(1).standard_normal((16, 5))
    model.forward(x, training=True)
    grad = np.random.default_rng(2).standard_normal((16, 3))
    paths = [arch.path_gradient(model, grad, set(keep)) for k in range(5) for keep in itertools.combinations(range(4), k)]
    assert len(paths) == 16
    model.backward(grad)
    first_block = arch.residual_blocks(model)[0]
    total = model.grad_outputs[model.layers[first_block - 1].name]
    np.testing.assert_allclose(np.sum(paths, axis=0), total, rtol=1e-10, atol=1e-12)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_gradient_falls_with_path_length_in_a_briefly_trained_resnet(arch, seed):
    spec = load_spec(EXPERIMENTS / "veit_resnet16.toml",
                     [f"seed={seed}", "data.limit=400", "training.epochs=2", "monitor.every=1000"])
    run = build_run(spec)
    run.trainer.fit()
    profile = arch.path_length_profile(run, samples=4, batch=128, seed=seed)
    mean = np.array(profile["mean"])
    assert profile["blocks"] == 16
    assert profile["per_block_factor"] < 0.9
    assert mean[1] < mean[0] and mean[8] < 0.2 * mean[0] and mean[16] < 0.01 * mean[0]
    assert profile["mean_length"] < profile["binomial_mean_length"]  # the gradient favours short paths


def test_fixed_statistics_derivative_matches_finite_differences(arch):
    x = np.linspace(-2.0, 2.0, 64)[:, None]
    for kind in ("plain", "res"):
        model = arch.shatter_model(kind, 4, seed=3, width=16)
        fixed = arch.input_gradients(model, x)["fixed statistics"]
        h = 1e-6
        numeric = (model.predict(x + h) - model.predict(x - h))[:, 0] / (2 * h)
        np.testing.assert_allclose(fixed, numeric, rtol=1e-5, atol=1e-6 * np.abs(numeric).max())


def test_deep_plain_gradients_shatter_residual_ones_do_not(arch):
    x = np.linspace(-2.0, 2.0, 128)[:, None]
    for seed in range(3):
        lag1 = {}
        for kind in ("plain", "res"):
            grads = arch.input_gradients(arch.shatter_model(kind, 16, seed=seed, width=48), x)
            lag1[kind] = arch.autocorrelation(grads["fixed statistics"], [1])[0]
        assert lag1["plain"] < 0.3 < lag1["res"], lag1
        assert lag1["res"] - lag1["plain"] > 0.4, lag1


@pytest.mark.slow
def test_deep_plain_net_trains_worse_than_deep_residual_net():
    overrides = ["data.source=digits", "data.limit=600", "optimizer.lr=0.01", "training.epochs=3",
                 "training.batch_size=32", "monitor.every=1000"]
    for seed in (0, 1):
        loss = {}
        for arm in ("degradation_plain32", "degradation_res32"):
            run = build_run(load_spec(EXPERIMENTS / f"{arm}.toml", [*overrides, f"seed={seed}"]))
            loss[arm] = run.trainer.fit().history["train/loss"][-1]
        assert loss["degradation_plain32"] > 1.3 * loss["degradation_res32"], loss
