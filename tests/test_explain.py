"""Attributions, feature importance and unit importance (`workbench explain`), on every layer type."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from support import sqlite_store
from test_layer_gradients import EXAMPLES, randomize_affine

from workbench.cli import main
from workbench.explain import explain, integrated_gradients, saliency, unit_importance
from workbench.explain.gradients import class_selector, evaluation_with_gradients
from workbench.explain.units import loss_with_units_removed
from workbench.nn.batchnorm import BatchNorm
from workbench.nn.model import build_network
from workbench.nn.registry import LAYERS
from workbench.runner import build_run
from workbench.spec import spec_from_dict

REPO = Path(__file__).resolve().parents[1]
N_CLASSES = 3


def classifier(items: list[dict], shape: tuple[int, ...], seed: int = 0, dtype: str = "float64"):
    """The example's layers, flattened if needed, then a dense output of 3 classes; non-trivial running stats."""
    if len(shape) > 1 and not any(item["type"] in ("rnn", "lstm", "gru") and not item.get("return_sequences")
                                  for item in items):
        items = [*items, {"type": "flatten"}]
    rng = np.random.default_rng(seed)
    model = build_network(items, shape, N_CLASSES, init="xavier_normal", dtype=dtype, rng=rng,
                          meta={"task": "classification", "loss": "cross_entropy"})
    randomize_affine(model, rng)
    for layer, _ in model.walk():
        if isinstance(layer, BatchNorm):  # evaluation mode uses these: make them matter
            layer.running_mean[...] = rng.standard_normal(layer.running_mean.shape) * 0.3
            layer.running_var[...] = rng.uniform(0.5, 2.0, layer.running_var.shape)
    return model


EVERY_EXAMPLE = [(name, items, shape) for name in sorted(LAYERS) for items, shape in EXAMPLES[name][:2]]


def test_every_registered_layer_type_has_an_example():
    assert set(LAYERS) <= {name for name, _, _ in EVERY_EXAMPLE}


@pytest.mark.parametrize("name, items, shape", EVERY_EXAMPLE, ids=[f"{n}-{i}" for i, (n, _, _) in
                                                                   enumerate(EVERY_EXAMPLE)])
def test_integrated_gradients_are_complete_on_every_layer_type(name, items, shape):
    model = classifier(items, shape)
    rng = np.random.default_rng(1)
    X = rng.standard_normal((4, *shape))
    selector = class_selector(model, N_CLASSES, np.array([0, 1, 2, 1]))
    result = integrated_gradients(model, X, selector, baseline="zero", steps=16)
    assert result.complete, (result.completeness_error, result.steps)
    np.testing.assert_allclose(result.sums, result.f_x - result.f_baseline, rtol=0.01, atol=1e-9)
    # F is the function the model predicts with (evaluation mode: running statistics, no dropout)
    np.testing.assert_allclose(result.f_x, (model.predict(X) * selector).sum(axis=1), rtol=1e-10)
    np.testing.assert_allclose(result.f_baseline, (model.predict(np.zeros_like(X)) * selector).sum(axis=1),
                               rtol=1e-10, atol=1e-12)
    assert (result.steps >= 16).all()


def test_adaptive_steps_grow_where_the_path_crosses_relu_kinks_and_a_warning_names_the_steps_needed():
    model = classifier([{"type": "dense", "units": 32}, {"type": "relu"}, {"type": "dense", "units": 32},
                        {"type": "relu"}], (6,))
    X = np.random.default_rng(2).standard_normal((8, 6)) * 3
    selector = class_selector(model, N_CLASSES, np.zeros(8, dtype=int))
    adaptive = integrated_gradients(model, X, selector, steps=2)  # 1% by default
    assert adaptive.complete and adaptive.steps.min() >= 2 and adaptive.steps.max() >= 64
    assert len(set(adaptive.steps.tolist())) > 1  # each sample takes the steps it needs
    capped = integrated_gradients(model, X, selector, steps=2, max_steps=2, tolerance=1e-6)
    assert not capped.complete
    (warning,) = capped.warnings
    assert "steps needed (--max-steps" in warning and "of 8 samples" in warning


@pytest.mark.parametrize("items, shape", [
    ([{"type": "dense", "units": 5}, {"type": "tanh"}, {"type": "dropout", "rate": 0.5}], (4,)),
    ([{"type": "conv2d", "filters": 2, "kernel": 3}, {"type": "batch_norm"}, {"type": "elu"},
      {"type": "max_pool2d", "size": 2}], (1, 5, 5)),
    ([{"type": "lstm", "units": 3}], (4, 2)),
], ids=["dense-dropout", "conv-bn-pool", "lstm"])
def test_saliency_equals_a_finite_difference_input_gradient(items, shape):
    model = classifier(items, shape, seed=3)
    rng = np.random.default_rng(4)
    x = rng.standard_normal((1, *shape))
    selector = class_selector(model, N_CLASSES, np.array([2]))
    got = saliency(model, x, selector).values[0]
    h, expected = 1e-6, np.zeros(shape)
    for i in np.ndindex(shape):
        plus, minus = x.copy(), x.copy()
        plus[(0, *i)] += h
        minus[(0, *i)] -= h
        expected[i] = (model.predict(plus)[0, 2] - model.predict(minus)[0, 2]) / (2 * h)
    assert np.max(np.abs(got - expected)) <= 1e-6 * max(1.0, np.max(np.abs(expected)))


def test_evaluation_with_gradients_leaves_the_model_as_it_was():
    model = classifier([{"type": "dense", "units": 4}, {"type": "batch_norm"}, {"type": "relu"},
                        {"type": "dropout", "rate": 0.4}], (3,))
    x = np.random.default_rng(0).standard_normal((5, 3))
    before = model.predict(x).copy()
    stats = [v.copy() for v in model.layer("bn1").state().values()]
    with evaluation_with_gradients(model):
        model.forward(x, training=True)
        model.backward(np.ones((5, N_CLASSES)))
    assert model.layers[0].input_grad is False and model.layer("drop1").rate == 0.4
    assert "forward" not in vars(model.layer("bn1"))
    np.testing.assert_array_equal(model.predict(x), before)
    for value, saved in zip(model.layer("bn1").state().values(), stats):
        np.testing.assert_array_equal(value, saved)


# -- feature importance: the informative features come first -------------------------------------------------
@pytest.fixture(scope="module")
def informative(tmp_path_factory):
    """A model trained where only features 0, 1 and 2 (of 8) carry the label."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((900, 8))
    y = ((1.5 * X[:, 0] - 1.0 * X[:, 1] + 0.8 * X[:, 2]) > 0).astype(np.int64)
    path = tmp_path_factory.mktemp("data") / "informative.npz"
    np.savez(path, X=X, y=y)
    spec = spec_from_dict({"data": {"source": "npz", "path": str(path)}, "model": {"hidden": [16]},
                           "training": {"epochs": 8}, "optimizer": {"lr": 0.02}})
    run = build_run(spec)
    run.trainer.fit()
    return run


@pytest.mark.xdist_group("explain_informative")
@pytest.mark.parametrize("method", ["integrated_gradients", "gradient_x_input", "saliency"])
def test_features_that_carry_the_label_rank_first_by_attribution_and_by_permutation(informative, method):
    data = informative.data
    result = explain(informative.model, data.X_test, data.y_test, samples=100, method=method, units=False)
    assert set(np.argsort(-result.feature_importance)[:3]) == {0, 1, 2}
    assert set(np.argsort(-result.permutation.mean)[:3]) == {0, 1, 2}
    assert result.permutation.mean[3:].max() < 0.2 * result.permutation.mean[:3].min()


# -- unit importance: the estimate finds the units that matter ----------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_removing_the_units_with_the_largest_estimated_effect_raises_the_loss_more_than_random_units(seed):
    run = build_run(spec_from_dict({"seed": seed, "data": {"source": "digits", "limit": 700},
                                    "model": {"hidden": [48, 24]}, "training": {"epochs": 10}}))
    run.trainer.fit()
    model, loss, X, y = run.model, run.loss, run.data.X_test, run.data.y_test
    scores = unit_importance(model, loss, X, y)
    base = loss_with_units_removed(model, loss, X, y, {})
    rng = np.random.default_rng(seed)
    for layer in scores.layers:
        k = len(layer.score) // 4
        top = np.argsort(-layer.score)[:k]
        worst = loss_with_units_removed(model, loss, X, y, {layer.layer: top})
        random = [loss_with_units_removed(model, loss, X, y, {layer.layer: rng.choice(len(layer.score), k, False)})
                  for _ in range(5)]
        assert worst > max(random), (layer.layer, worst, random, base)
    # the first-order estimate tracks the measured change of removing one unit
    layer = scores.layers[0]
    measured = [loss_with_units_removed(model, loss, X, y, {layer.layer: [i]}) - base for i in range(len(layer.score))]
    assert np.corrcoef(layer.delta, measured)[0, 1] > 0.7


def test_unit_importance_covers_convolution_channels_and_residual_blocks():
    layers = [{"type": "conv2d", "filters": 4, "kernel": 3}, {"type": "relu"},
              {"type": "residual", "body": [{"type": "conv2d", "filters": 4, "kernel": 3}, {"type": "tanh"}]},
              {"type": "global_avg_pool2d"}]
    run = build_run(spec_from_dict({"data": {"source": "digits", "limit": 100}, "model": {"layers": layers}}))
    scores = unit_importance(run.model, run.loss, run.data.X_test, run.data.y_test)
    assert [lu.layer for lu in scores.layers] == ["conv1", "res1.conv1"]
    assert all(lu.score.shape == (4,) and np.isfinite(lu.score).all() for lu in scores.layers)
    layer, unit, _, _ = scores.top(1)[0]
    removed = loss_with_units_removed(run.model, run.loss, run.data.X_test, run.data.y_test, {layer: [unit]})
    assert np.isfinite(removed)


# -- the command line ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tracked(tmp_path_factory):
    """A tracked digits run (small), and the store."""
    from workbench.execute import execute

    folder = tmp_path_factory.mktemp("store")
    uri = sqlite_store(folder)
    spec = spec_from_dict({"name": "explain-test", "data": {"source": "digits", "limit": 400},
                           "model": {"hidden": [16]}, "training": {"epochs": 3}})
    outcome = execute(spec, tracking_uri=uri, tracker_options={"plots": False, "checkpoint": False})
    return uri, outcome.run_id


@pytest.mark.slow
@pytest.mark.xdist_group("explain_tracked")
def test_explain_a_run_logs_its_artifacts_and_prints_one_json_object(tracked, capsys):
    from mlflow import MlflowClient

    uri, run_id = tracked
    assert main(["explain", run_id, "--tracking-uri", uri, "--samples", "5", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["run_id"] == run_id and out["method"] == "integrated_gradients" and len(out["samples"]) == 5
    assert all(s["completeness_error"] <= 0.01 and s["steps"] >= 32 for s in out["samples"])
    assert out["completeness"]["holds"] is True
    assert out["units"]["layers"][0]["layer"] == "dense1"
    names = {f.path for f in MlflowClient(uri).list_artifacts(run_id, "explain")}
    assert {"explain/attributions.npz", "explain/heatmaps.png", "explain/unit_importance.png",
            "explain/summary.json"} <= names


@pytest.mark.slow
@pytest.mark.xdist_group("explain_tracked")
def test_explain_a_model_file_writes_beside_it(tracked, tmp_path, capsys):
    from mlflow import MlflowClient

    uri, run_id = tracked
    local = Path(MlflowClient(uri).download_artifacts(run_id, "model", str(tmp_path)))
    assert main(["explain", str(local / "weights.npz"), "--method", "saliency", "--samples", "3"]) == 0
    out = capsys.readouterr().out
    assert "saliency" in out and "completeness" not in out
    with np.load(local / "explain" / "attributions.npz", allow_pickle=False) as data:
        assert data["attributions"].shape == (3, 64) and str(data["method"]) == "saliency"


@pytest.mark.slow
@pytest.mark.xdist_group("explain_tracked")
@pytest.mark.parametrize("args, expected", [
    (["--samples", "0"], "--samples 0: explain at least one sample, e.g. --samples 16"),
    (["--method", "integrated_gradient"], "did you mean integrated_gradients?"),
    (["--method", "lime"], "use one of integrated_gradients, saliency, gradient_x_input"),
    (["--max-steps", "8"], "--max-steps 8 is below --steps 32"),
])
def test_bad_options_exit_2_with_one_line_naming_the_fix(tracked, capsys, args, expected):
    uri, run_id = tracked
    assert main(["explain", run_id, "--tracking-uri", uri, *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expected in err[0] and err[0].startswith("workbench: error: ")


@pytest.mark.slow
@pytest.mark.xdist_group("explain_tracked")
def test_explain_a_run_without_a_model_exits_2_with_one_line(tracked):
    from mlflow import MlflowClient

    uri, _ = tracked
    client = MlflowClient(uri)
    bare = client.create_run(client.get_experiment_by_name("explain-test").experiment_id).info.run_id
    proc = subprocess.run([sys.executable, "-m", "workbench", "explain", bare, "--tracking-uri", uri],
                          capture_output=True, text=True, timeout=300, cwd=REPO)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr
    assert f"run '{bare}' has no model (model/weights.npz)" in lines[0] and "workbench run" in lines[0]


def test_explain_a_model_file_without_its_spec_names_the_fix(tmp_path, capsys):
    model = build_network([{"type": "dense", "units": 3}], (4,), 2)
    model.save(tmp_path / "alone.npz")
    assert main(["explain", str(tmp_path / "alone.npz")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pass --spec SPEC.toml" in err[0]


@pytest.mark.xdist_group("explain_informative")
def test_workbench_explain_is_callable_from_python(informative):
    import workbench

    data = informative.data
    result = workbench.explain(informative.model, data.X_test[:20], data.y_test[:20], samples=4)
    assert result.attributions.values.shape == (4, 8) and result.attributions.complete
