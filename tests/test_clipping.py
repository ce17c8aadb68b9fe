"""Gradient clipping hooks: invariants of each mode, the record's pre/post norms, one norm per step."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from workbench.errors import UserError
from workbench.monitor import GradientClipping, GradientNorms, build_monitor_hooks
from workbench.monitor.clipping import EPS
from workbench.nn.losses import CrossEntropy
from workbench.nn.model import Architecture, build_model
from workbench.nn.optim import build_optimizer
from workbench.training import Hook, Trainer


def tiny_trainer(hooks, *, epochs=1, optimizer="sgd", lr=0.1, batch_norm=False):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((48, 6)).astype(np.float32) * 3.0
    y = rng.integers(0, 3, 48)
    data = SimpleNamespace(task="classification", X_train=X, y_train=y, X_val=X[:12], y_val=y[:12],
                           X_test=X[:12], y_test=y[:12])
    model = build_model(Architecture(6, 3, (8, 7), batch_norm=batch_norm), rng=np.random.default_rng(3))
    opt = build_optimizer(model.parameters(), optimizer, lr=lr)
    return Trainer(model, CrossEntropy(), opt, data, epochs=epochs, batch_size=12,
                   rng=np.random.default_rng(4), hooks=tuple(hooks))


class GradientsAround(Hook):
    """Copies the gradients just before the clipper (priority -15) or just after it (priority 0)."""

    def __init__(self, priority):
        self.priority = priority
        self.seen = []

    def on_after_backward(self, trainer):
        self.seen.append({k: v.astype(np.float64) for k, v in trainer.model.gradients().items()})


def run_with_clipping(mode, **settings):
    hooks = build_monitor_hooks(every=1, clipping_mode=mode, **settings)
    before, after = GradientsAround(-15), GradientsAround(0)
    trainer = tiny_trainer([*hooks, before, after], batch_norm=True)
    trainer.fit()
    return hooks, before.seen, after.seen


def flat(grads):
    return np.concatenate([g.ravel() for g in grads.values()])


@pytest.mark.parametrize("max_norm", [1e-3, 0.3, 1e6])
def test_global_norm_bounds_the_norm_and_keeps_the_direction(max_norm):
    hooks, before, after = run_with_clipping("global_norm", max_norm=max_norm)
    record = hooks.record
    for row, (pre, post) in enumerate(zip(before, after)):
        g0, g1 = flat(pre), flat(post)
        norm0, norm1 = np.linalg.norm(g0), np.linalg.norm(g1)
        assert norm1 <= max_norm * (1 + 1e-5)
        np.testing.assert_allclose(g0 @ g1 / (norm0 * norm1), 1.0, rtol=1e-6)  # cosine 1
        np.testing.assert_allclose(g1, g0 * min(max_norm / (norm0 + EPS), 1.0), rtol=1e-5, atol=1e-9)  # torch rule
        fired = max_norm / (norm0 + EPS) < 1.0
        assert record.global_("clipped")[row] == float(fired)
        np.testing.assert_allclose(record.global_("grad_norm_global")[row], norm0, rtol=1e-5)
        np.testing.assert_allclose(record.global_("grad_norm_clipped")[row], norm1, rtol=1e-5)
        w = np.linalg.norm(pre["dense1.W"])
        np.testing.assert_allclose(record.series("grad_norm", "dense1")[row], w, rtol=1e-5)  # pre-clip per layer
    expected_fraction = 1.0 if max_norm == 1e-3 else (0.0 if max_norm == 1e6 else None)
    if expected_fraction is not None:
        assert record.clip_fraction() == expected_fraction == hooks.clipping.clip_fraction


def test_layer_norm_clips_each_layer_on_its_own():
    max_norm = 0.05
    hooks, before, after = run_with_clipping("layer_norm", max_norm=max_norm)
    layers = sorted({name.rpartition(".")[0] for name in before[0]})
    assert layers == ["bn1", "bn2", "dense1", "dense2", "dense3"]
    fired_any = False
    for pre, post in zip(before, after):
        for layer in layers:
            keys = [k for k in pre if k.rpartition(".")[0] == layer]
            g0 = np.concatenate([pre[k].ravel() for k in keys])
            g1 = np.concatenate([post[k].ravel() for k in keys])
            norm0 = np.linalg.norm(g0)
            coef = min(max_norm / (norm0 + EPS), 1.0)
            fired_any |= coef < 1.0
            np.testing.assert_allclose(g1, g0 * coef, rtol=1e-5, atol=1e-9)
            assert np.linalg.norm(g1) <= max_norm * (1 + 1e-5) or coef == 1.0
    assert fired_any and hooks.record.clip_fraction() > 0


def test_value_clipping_bounds_every_element_and_leaves_the_rest():
    max_value = 0.01
    hooks, before, after = run_with_clipping("value", max_value=max_value)
    record = hooks.record
    for row, (pre, post) in enumerate(zip(before, after)):
        g0, g1 = flat(pre), flat(post)
        assert np.abs(g1).max() <= max_value * (1 + 1e-6)
        inside = np.abs(g0) <= max_value
        np.testing.assert_array_equal(g1[inside], g0[inside])
        np.testing.assert_allclose(g1[~inside], np.sign(g0[~inside]) * max_value, rtol=1e-6)
        assert record.global_("clipped")[row] == float((~inside).any())
        np.testing.assert_allclose(record.global_("grad_norm_clipped")[row], np.linalg.norm(g1), rtol=1e-5)
    assert record.clip_fraction() == 1.0


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam", "adamw", "rmsprop"])
@pytest.mark.parametrize("mode", ["global_norm", "layer_norm", "value"])
def test_clipping_composes_with_every_optimizer(optimizer, mode):
    hooks = build_monitor_hooks(every=1, clipping_mode=mode, max_norm=0.1, max_value=0.01)
    trainer = tiny_trainer(hooks, optimizer=optimizer, lr=0.01, epochs=2)
    result = trainer.fit()
    assert result.status == "FINISHED"
    for array in trainer.model.parameters().values():
        assert array.dtype == np.float32 and np.isfinite(array).all()
    assert hooks.clipping.steps == trainer.step


def test_norms_are_computed_once_per_step(monkeypatch):
    fresh = []
    original = GradientNorms.compute

    def counting(self, trainer):
        if trainer.output is not self._token:
            fresh.append(trainer.step)
        return original(self, trainer)

    monkeypatch.setattr(GradientNorms, "compute", counting)
    hooks = build_monitor_hooks(every=1, clipping_mode="global_norm", max_norm=0.1)  # monitor, guard, clipper
    trainer = tiny_trainer(hooks, epochs=2)
    trainer.fit()
    assert fresh == list(range(trainer.step))


def test_clipper_leaves_nonfinite_gradients_to_the_nan_guard():
    hooks = build_monitor_hooks(every=1, clipping_mode="global_norm", max_norm=0.1)
    trainer = tiny_trainer(hooks)
    trainer.model.dense_layers[2].params["W"][0, 0] = np.nan
    with np.errstate(all="ignore"):
        result = trainer.fit()
    assert result.status == "FAILED"
    assert hooks.nan_guard.event["layer"] == "dense3"
    assert hooks.record.global_("clipped")[0] != 1.0


def test_clipping_rejects_bad_settings():
    with pytest.raises(UserError, match="allowed"):
        GradientClipping("norm")
    with pytest.raises(UserError):
        GradientClipping("global_norm", max_norm=0.0)
    with pytest.raises(UserError):
        GradientClipping("value", max_value=-1.0)
