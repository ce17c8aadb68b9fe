"""Early stopping with Keras 3 semantics: scripted metrics through real Trainer runs and through
the hook methods on a fake trainer (patience, min_delta, baseline, start_from_epoch, mode max,
best-weight restoring, non-finite values, missing keys, checkpoint state)."""

from __future__ import annotations

import math
import warnings
from types import SimpleNamespace

import numpy as np
import pytest

from workbench.errors import UserError
from workbench.monitor import EarlyStopping, build_monitor_hooks
from workbench.nn.losses import CrossEntropy
from workbench.nn.model import Architecture, build_model
from workbench.nn.optim import build_optimizer
from workbench.training import FAILED, FINISHED, Hook, Trainer


class ScriptedMetric(Hook):
    """Overwrites logs[key] with a scripted value per epoch, before early stopping reads it,
    and keeps a copy of the weights at each epoch end."""

    priority = -10

    def __init__(self, key, values):
        self.key, self.values, self.weights = key, values, []

    def on_epoch_end(self, trainer, logs):
        logs[self.key] = self.values[trainer.epoch]
        self.weights.append(trainer.model.state_dict())


def run(values, key="val/loss", epochs=None, **settings):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 5)).astype(np.float32)
    y = rng.integers(0, 3, 40)
    data = SimpleNamespace(task="classification", X_train=X, y_train=y, X_val=X[:10], y_val=y[:10],
                           X_test=X[:10], y_test=y[:10])
    model = build_model(Architecture(5, 3, (6,), batch_norm=True), rng=np.random.default_rng(1))
    script = ScriptedMetric(key, values)
    stopper = EarlyStopping(key, **settings)
    trainer = Trainer(model, CrossEntropy(), build_optimizer(model.parameters(), "sgd", lr=0.1), data,
                      epochs=epochs or len(values), batch_size=10, hooks=(script, stopper))
    result = trainer.fit()
    return result, trainer, stopper, script


def stopped_at(result) -> int | None:
    """0-based epoch at which a stop was requested (None when all epochs ran)."""
    return result.epochs_run - 1 if result.reason else None


def same_weights(model, state) -> bool:
    current = model.state_dict()
    return all(np.array_equal(current[k], state[k]) for k in state)


def test_patience_counts_epochs_without_improvement():
    result, _, stopper, _ = run([1.0, 0.9, 0.95, 0.96, 0.97, 0.5], patience=2)
    assert result.status == FINISHED and "did not improve" in result.reason
    assert stopped_at(result) == 3 == stopper.stopped_epoch
    assert stopper.best == 0.9 and stopper.best_epoch == 1


def test_patience_zero_stops_at_the_first_epoch_without_improvement():
    result, *_ = run([1.0, 0.8, 0.9, 0.7], patience=0)
    assert stopped_at(result) == 2


def test_runs_to_the_end_while_improving():
    result, trainer, stopper, _ = run([1.0, 0.9, 0.8, 0.7], patience=1)
    assert result.reason is None and result.epochs_run == 4 and stopper.stopped_epoch == -1


def test_min_delta_requires_a_large_enough_improvement():
    result, _, stopper, _ = run([1.0, 0.995, 0.99, 0.985, 0.98], patience=2, min_delta=0.01)
    assert stopped_at(result) == 2 and stopper.best == 1.0


def test_baseline_not_beaten_stops_after_patience():
    # Keras: an improvement on best that misses the baseline does not reset wait
    result, _, stopper, _ = run([1.0, 1.1, 1.2, 1.3], patience=2, baseline=0.5)
    assert stopped_at(result) == 1 and stopper.best == 1.0


def test_baseline_beaten_behaves_like_no_baseline():
    result, *_ = run([0.4, 0.45, 0.46, 0.47, 0.3], patience=2, baseline=0.5)
    assert stopped_at(result) == 2


def test_start_from_epoch_ignores_the_warm_up():
    result, _, stopper, _ = run([1.0, 2.0, 3.0, 4.0, 5.0], patience=1, start_from_epoch=2)
    assert stopped_at(result) == 3 and stopper.best == 3.0 and stopper.best_epoch == 2


def test_mode_max_for_accuracy():
    result, _, stopper, _ = run([0.5, 0.6, 0.55, 0.58, 0.9], key="val/accuracy", mode="max", patience=2)
    assert stopped_at(result) == 3 and stopper.best == 0.6
    auto = EarlyStopping("val/accuracy")
    assert auto.mode == "max" and EarlyStopping("train/loss").mode == "min"
    with pytest.raises(UserError, match="mode"):
        EarlyStopping("val/something")


def test_restores_best_weights_when_stopped_before_the_test_evaluation():
    result, trainer, stopper, script = run([1.0, 0.5, 0.8, 0.9, 0.95], patience=2, restore_best_weights=True)
    assert stopped_at(result) == 3 and stopper.best_epoch == 1
    assert same_weights(trainer.model, script.weights[1])
    assert not same_weights(trainer.model, script.weights[3])
    output = trainer.model.predict(trainer.data.X_test)
    test_loss, _ = CrossEntropy()(output, trainer.data.y_test)
    assert result.metrics["test/loss"] == pytest.approx(test_loss)  # test split evaluated after the restore


def test_restores_best_weights_even_without_a_stop():
    result, trainer, _, script = run([1.0, 0.5, 0.8, 0.9], patience=10, restore_best_weights=True)
    assert result.reason is None
    assert same_weights(trainer.model, script.weights[1])


def test_no_restore_without_the_flag():
    result, trainer, _, script = run([1.0, 0.5, 0.8, 0.9], patience=10)
    assert same_weights(trainer.model, script.weights[3])


def test_restores_first_monitored_weights_when_none_is_better():
    result, trainer, stopper, script = run([1.0, 1.0, 1.0], patience=5, baseline=0.1, restore_best_weights=True)
    assert stopper.best_epoch == 0
    assert same_weights(trainer.model, script.weights[0])


def test_nonfinite_monitored_value_fails_the_run():
    result, *_ = run([1.0, math.nan, 0.5], patience=5)
    assert result.status == FAILED and "nan" in result.reason and stopped_at(result) == 1


def test_factory_builds_it_from_a_spec_section():
    hooks = build_monitor_hooks(early_stopping={"monitor": "val/loss", "mode": "min", "patience": 1,
                                                "min_delta": 0.0, "restore_best_weights": True})
    assert hooks.early_stopping.patience == 1 and hooks.early_stopping.restore_best_weights


# -- the hook methods on a fake trainer ---------------------------------------------------------
class FakeModel:
    def __init__(self):
        self.w = np.zeros(3, np.float32)

    def state_dict(self):
        return {"dense1.W": self.w.copy()}

    def load_state_dict(self, state):
        self.w[...] = state["dense1.W"]


def fake_trainer():
    trainer = SimpleNamespace(epoch=0, model=FakeModel(), stopped=None)
    trainer.stop = lambda reason, status=FINISHED: setattr(trainer, "stopped", (reason, status))
    return trainer


def drive(stopper, trainer, values, key="val/loss"):
    stopper.on_train_begin(trainer)
    for epoch, value in enumerate(values):
        trainer.epoch = epoch
        trainer.model.w[:] = epoch
        stopper.on_epoch_end(trainer, {key: value, "train/loss": 1.0})
        if trainer.stopped:
            break
    stopper.on_train_end(trainer)


def test_fake_trainer_stop_and_restore():
    stopper, trainer = EarlyStopping("val/loss", patience=1, restore_best_weights=True), fake_trainer()
    drive(stopper, trainer, [3.0, 2.0, 2.5, 1.0])
    assert trainer.epoch == 2 and trainer.stopped[1] == FINISHED
    assert (trainer.model.w == 1).all()


def test_missing_key_warns_once_with_the_available_keys():
    stopper, trainer = EarlyStopping("val/loss", patience=0), fake_trainer()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        drive(stopper, trainer, [1.0, 2.0, 3.0], key="val/accuracy")
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1 and "val/accuracy" in messages[0] and "train/loss" in messages[0]
    assert trainer.stopped is None


def test_state_dict_round_trip_resumes_the_count():
    stopper, trainer = EarlyStopping("val/loss", patience=3, restore_best_weights=True), fake_trainer()
    drive(stopper, trainer, [3.0, 2.0, 2.5, 2.6])  # best 2.0 at epoch 1, wait 2
    state = stopper.state_dict()
    assert all(isinstance(v, np.ndarray) for v in state.values())
    assert int(state["early_stopping.wait"]) == 2 and float(state["early_stopping.best"]) == 2.0
    resumed, trainer2 = EarlyStopping("val/loss", patience=3, restore_best_weights=True), fake_trainer()
    resumed.load_state_dict(state)
    resumed.on_train_begin(trainer2)  # a resume keeps the loaded state
    assert resumed.wait == 2 and resumed.best == 2.0 and resumed.best_epoch == 1
    trainer2.epoch = 4
    resumed.on_epoch_end(trainer2, {"val/loss": 2.7})
    assert trainer2.stopped is not None and resumed.stopped_epoch == 4
    resumed.on_train_end(trainer2)
    assert (trainer2.model.w == 1).all()


def test_reused_instance_starts_fresh():
    stopper, trainer = EarlyStopping("val/loss", patience=1), fake_trainer()
    drive(stopper, trainer, [1.0, 2.0, 3.0])
    assert trainer.stopped
    trainer = fake_trainer()
    drive(stopper, trainer, [5.0, 4.0, 3.0])
    assert trainer.stopped is None and stopper.best == 3.0
