"""The NaN guard: stops at the first non-finite value and names the layer, the pass and the step."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from workbench.monitor import NanGuard, build_monitor_hooks
from workbench.nn.losses import CrossEntropy
from workbench.nn.model import Architecture, build_model
from workbench.nn.optim import build_optimizer
from workbench.training import FAILED, Hook, Trainer


def tiny_trainer(hooks, *, epochs=2, hidden=(8, 7, 6), dropout=0.0):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((48, 6)).astype(np.float32)
    y = rng.integers(0, 3, 48)
    data = SimpleNamespace(task="classification", X_train=X, y_train=y, X_val=X[:12], y_val=y[:12],
                           X_test=X[:12], y_test=y[:12])
    model = build_model(Architecture(6, 3, hidden, dropout=dropout), rng=np.random.default_rng(3))
    opt = build_optimizer(model.parameters(), "adam", lr=0.01)
    return Trainer(model, CrossEntropy(), opt, data, epochs=epochs, batch_size=12,
                   rng=np.random.default_rng(4), hooks=tuple(hooks))


class PoisonAt(Hook):
    """At the start of batch `step`, runs `poison(model)`."""

    def __init__(self, step, poison):
        self.step, self.poison = step, poison

    def on_batch_begin(self, trainer):
        if trainer.step == self.step:
            self.poison(trainer.model)


def nan_weight(layer):
    def poison(model):
        model.layer(layer).params["W"][0, 0] = np.nan
    return poison


@pytest.mark.parametrize("layer", ["dense1", "dense2", "dense4"])
def test_forward_nan_names_the_first_layer_with_a_nonfinite_output(layer):
    hooks = build_monitor_hooks(every=4)
    trainer = tiny_trainer([*hooks, PoisonAt(5, nan_weight(layer))])
    with np.errstate(all="ignore"):
        result = trainer.fit()
    assert result.status == FAILED
    assert result.reason == f"non-finite value in forward pass at layer {layer} (step 5, epoch 1)"
    assert hooks.nan_guard.event == {"step": 5, "epoch": 1, "layer": layer, "pass": "forward"}
    record = hooks.record
    assert list(record.steps) == [0, 4, 5]  # the failing step is kept off the cadence
    assert record.meta["nan_event"] == hooks.nan_guard.event
    j = record.layers.index(layer)
    assert record.layer("nonfinite")[-1, j] > 0 and (record.layer("nonfinite")[-1, :j] == 0).all()
    assert np.isnan(record.global_("loss")[-1])
    assert np.isnan(record.layer("grad_norm")[-1]).all()  # stopped before the backward pass
    assert trainer.step == 5  # no update happened at the failing step


class InfIntoGradientOf(Hook):
    """Patches the backward of the layer after `dense` so that the gradient into `dense` holds an Inf at `step`."""

    def __init__(self, dense, step):
        self.dense, self.step = dense, step

    def on_train_begin(self, trainer):
        model = trainer.model
        after = model.layers[model.layers.index(model.layer(self.dense)) + 1]
        original = after.backward

        def backward(grad_out):
            grad_in = original(grad_out)
            if trainer.step == self.step:
                grad_in = grad_in.copy()
                grad_in[0, 0] = np.inf
            return grad_in

        after.backward = backward


@pytest.mark.parametrize("dense", ["dense1", "dense3"])
def test_backward_inf_names_the_layer_it_flows_into(dense):
    hooks = build_monitor_hooks(every=1)
    trainer = tiny_trainer([*hooks, InfIntoGradientOf(dense, 3)])
    before = {}
    trainer.register(type("Keep", (Hook,), {"on_after_forward": lambda self, t: before.update(t.model.state_dict())})())
    with np.errstate(all="ignore"):
        result = trainer.fit()
    assert result.status == FAILED
    assert result.reason == f"non-finite value in backward pass at layer {dense} (step 3, epoch 0)"
    assert hooks.nan_guard.event == {"step": 3, "epoch": 0, "layer": dense, "pass": "backward"}
    record = hooks.record
    assert record.last_step == 3 and np.isfinite(record.global_("loss")[-1])
    assert not np.isfinite(record.global_("grad_norm_global")[-1])
    assert record.series("nonfinite", dense)[-1] > 0
    for name, value in trainer.model.state_dict().items():  # the update of the bad step never ran
        np.testing.assert_array_equal(value, before[name], err_msg=name)


def test_nonfinite_loss_with_finite_outputs_names_the_loss():
    class NanLoss(CrossEntropy):
        def __call__(self, output, target):
            loss, grad = super().__call__(output, target)
            return float("nan"), grad

    guard = NanGuard()
    trainer = tiny_trainer([guard])
    trainer.loss = NanLoss()
    result = trainer.fit()
    assert result.status == FAILED and guard.event["layer"] == "loss" and guard.event["pass"] == "forward"
    assert result.reason == "non-finite value in forward pass at layer loss (step 0, epoch 0)"


def test_guard_alone_without_monitor_and_healthy_runs_pass():
    guard = NanGuard()
    trainer = tiny_trainer([guard], dropout=0.2)
    result = trainer.fit()
    assert result.status == "FINISHED" and guard.event is None
    trainer = tiny_trainer([guard, PoisonAt(2, nan_weight("dense3"))])
    with np.errstate(all="ignore"):
        result = trainer.fit()
    assert guard.event["layer"] == "dense3" and result.status == FAILED
