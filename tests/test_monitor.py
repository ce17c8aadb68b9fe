"""The statistics monitor and its record: every statistic against plain numpy, the record's
save/load round trip (allow_pickle=False), bounded memory, custom statistics, the factory."""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest

from workbench.errors import UserError
from workbench.monitor import (
    GLOBAL_STATS,
    LAYER_STATS,
    StatisticsMonitor,
    StatsRecord,
    build_monitor_hooks,
    load_record,
)
from workbench.nn.losses import CrossEntropy
from workbench.nn.model import Architecture, build_model
from workbench.nn.optim import build_optimizer
from workbench.training import Hook, Trainer

RTOL = 2e-5  # float32 sums and dots against float64 numpy


def tiny_data(n: int = 48, features: int = 6, classes: int = 3, seed: int = 0) -> SimpleNamespace:
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, features)).astype(np.float32)
    y = rng.integers(0, classes, n)
    return SimpleNamespace(task="classification", X_train=X, y_train=y, X_val=X[:12], y_val=y[:12],
                           X_test=X[:12], y_test=y[:12])


def tiny_trainer(hooks, *, activation="relu", batch_norm=False, epochs=1, batch_size=12, optimizer="sgd",
                 lr=0.1, init_scale=1.0, data=None, hidden=(8, 7)):
    data = data or tiny_data()
    arch = Architecture(data.X_train.shape[1], 3, hidden, activation=activation, batch_norm=batch_norm)
    model = build_model(arch, init="he_normal", init_scale=init_scale, rng=np.random.default_rng(3))
    opt = build_optimizer(model.parameters(), optimizer, lr=lr)
    return Trainer(model, CrossEntropy(), opt, data, epochs=epochs, batch_size=batch_size,
                   rng=np.random.default_rng(4), hooks=tuple(hooks))


class Capture(Hook):
    """Copies, after the monitor, everything a statistic is computed from (priority 100: last)."""

    priority = 100

    def __init__(self):
        self.steps = []

    def on_after_forward(self, trainer):
        model = trainer.model
        self.current = {
            "step": trainer.step,
            "loss": trainer.batch_loss,
            "outputs": {k: np.array(v, np.float64) for k, v in model.outputs.items()},
        }

    def on_after_backward(self, trainer):
        model = trainer.model
        c = self.current
        c["grads"] = {k: np.array(v, np.float64) for k, v in model.gradients().items()}
        c["before"] = {k: np.array(v, np.float64) for k, v in model.parameters().items()}
        c["grad_outputs"] = {k: np.array(v, np.float64) for k, v in model.grad_outputs.items()}
        c["bn"] = {layer.name: (layer.running_mean.astype(np.float64), layer.running_var.astype(np.float64))
                   for layer in model.layers if layer.kind == "batchnorm"}
        c["lr"] = trainer.optimizer.lr()

    def on_after_update(self, trainer):
        self.current["after"] = {k: np.array(v, np.float64) for k, v in trainer.model.parameters().items()}
        self.steps.append(self.current)


def expected_row(model, c) -> dict[str, np.ndarray]:
    """Every statistic of one step, in plain float64 numpy from the captured arrays."""
    dense = [layer.name for layer in model.dense_layers]
    out = {name: np.full(len(dense), np.nan) for name in LAYER_STATS}
    for j, name in enumerate(dense):
        W0, W1 = c["before"][f"{name}.W"], c["after"][f"{name}.W"]
        out["grad_norm"][j] = np.linalg.norm(c["grads"][f"{name}.W"])
        out["weight_norm"][j] = np.linalg.norm(W0)
        out["update_ratio"][j] = np.linalg.norm(W1 - W0) / np.linalg.norm(W0)
        out["backprop_norm"][j] = np.linalg.norm(c["grad_outputs"][name])
        act = model.activation_after(name)
        y = c["outputs"][act.name if act is not None else name]
        out["act_mean"][j], out["act_std"][j] = y.mean(), y.std()
        if act is not None:
            out["dead_frac"][j] = np.mean(np.all(y == 0.0, axis=0)) if act.activation == "relu" else 0.0
            if act.activation == "tanh":
                out["sat_frac"][j] = np.mean(np.abs(y) > 0.97)
            elif act.activation == "sigmoid":
                out["sat_frac"][j] = np.mean((y > 0.97) | (y < 0.03))
            else:
                out["sat_frac"][j] = 0.0
        bn = f"bn{name.removeprefix('dense')}"
        if bn in c["bn"]:
            out["bn_gamma_mean"][j] = c["before"][f"{bn}.gamma"].mean()
            out["bn_running_mean"][j] = c["bn"][bn][0].mean()
            out["bn_running_var"][j] = c["bn"][bn][1].mean()
        arrays = [W0, c["before"][f"{name}.b"], c["grads"][f"{name}.W"], c["grads"][f"{name}.b"],
                  c["grad_outputs"][name], y]
        out["nonfinite"][j] = sum(int(np.sum(~np.isfinite(a))) for a in arrays)
    grads = np.concatenate([g.ravel() for g in c["grads"].values()])
    out["grad_norm_global"] = np.linalg.norm(grads)
    out["loss"], out["lr"] = c["loss"], c["lr"]
    return out


@pytest.fixture(params=["plain", "blocked"])
def optimizer_path(request, monkeypatch):
    """The optimizer's plain step, or its blocked step forced on tiny models (blocks of 7, 2 threads):
    either way the step it leaves in the gradients is what the monitor's update ratio reads."""
    from workbench.nn.optim import optimizer as optimizer_module

    if request.param == "blocked":
        monkeypatch.setattr(optimizer_module, "BLOCKED_MIN_SIZE", 0)
        monkeypatch.setattr(optimizer_module, "BLOCK_SIZE", 7)

    def prepare(trainer):
        trainer.optimizer.threads = 2
        return trainer

    prepare.path = request.param
    return prepare


def assert_blocked_if_asked(trainer, optimizer_path):
    plan = trainer.optimizer._plan
    assert (plan is not None and plan[1] is not None) == (optimizer_path.path == "blocked")


@pytest.mark.parametrize(
    "activation, batch_norm, init_scale",
    [("relu", False, 1.0), ("relu", True, 1.0), ("tanh", False, 4.0), ("sigmoid", False, 6.0), ("elu", False, 1.0)],
)
def test_every_statistic_matches_plain_numpy(activation, batch_norm, init_scale, optimizer_path):
    hooks = build_monitor_hooks(every=1, nan_guard=False)
    capture = Capture()
    trainer = optimizer_path(tiny_trainer([*hooks, capture], activation=activation, batch_norm=batch_norm,
                                          init_scale=init_scale, optimizer="adam", lr=0.05, epochs=2))
    trainer.fit()
    assert_blocked_if_asked(trainer, optimizer_path)
    record = hooks.record
    assert len(record) == len(capture.steps) == 8
    assert list(record.steps) == [c["step"] for c in capture.steps]
    assert list(record.epochs) == [0] * 4 + [1] * 4
    for row, c in enumerate(capture.steps):
        want = expected_row(trainer.model, c)
        for name in LAYER_STATS:
            np.testing.assert_allclose(record.layer(name)[row], want[name], rtol=RTOL, atol=1e-6, err_msg=name)
        np.testing.assert_allclose(record.global_("loss")[row], want["loss"], rtol=RTOL)
        np.testing.assert_allclose(record.global_("lr")[row], want["lr"], rtol=RTOL)
        np.testing.assert_allclose(record.global_("grad_norm_global")[row], want["grad_norm_global"], rtol=RTOL)
        np.testing.assert_allclose(record.global_("grad_norm_clipped")[row], want["grad_norm_global"], rtol=RTOL)
        assert record.global_("clipped")[row] == 0.0
    if activation == "tanh":  # the scale makes saturation actually happen, so the test means something
        assert np.nanmax(record.layer("sat_frac")) > 0.1


class PlainSGD:
    """An optimizer that does not leave its step in the gradients: the monitor must snapshot W."""

    def __init__(self, params, lr):
        self.params, self._lr = params, lr

    def lr(self):
        return self._lr

    def step(self, grads):
        for key, param in self.params.items():
            param -= self._lr * grads[key]


@pytest.mark.parametrize("use_contract", [True, False], ids=["step-in-grads", "snapshot"])
def test_update_ratio_is_exact_with_and_without_the_optimizer_contract(use_contract):
    hooks = build_monitor_hooks(every=1, nan_guard=False)
    capture = Capture()
    trainer = tiny_trainer([*hooks, capture], optimizer="adam", lr=0.05)
    if not use_contract:
        trainer.optimizer = PlainSGD(trainer.model.parameters(), 0.1)
    assert getattr(trainer.optimizer, "leaves_step_in_grads", False) is use_contract
    trainer.fit()
    for row, c in enumerate(capture.steps):
        want = expected_row(trainer.model, c)
        np.testing.assert_allclose(hooks.record.layer("update_ratio")[row], want["update_ratio"], rtol=RTOL)
        np.testing.assert_allclose(hooks.record.layer("weight_norm")[row], want["weight_norm"], rtol=RTOL)


def test_dead_relu_units_are_counted():
    hooks = build_monitor_hooks(every=1, nan_guard=False)
    capture = Capture()
    trainer = tiny_trainer([*hooks, capture])
    dense1 = trainer.model.dense_layers[0]
    dense1.params["b"][:3] = -100.0  # three units of dense1 never fire
    trainer.fit()
    dead = hooks.record.series("dead_frac", "dense1")
    np.testing.assert_allclose(dead, 3 / 8)


def test_cadence_records_every_kth_step_and_backprop_gain():
    hooks = build_monitor_hooks(every=3)
    trainer = tiny_trainer(hooks, epochs=3)  # 12 steps
    trainer.fit()
    record = hooks.record
    assert list(record.steps) == [0, 3, 6, 9]
    assert list(record.epochs) == [0, 0, 1, 2]
    norm = record.layer("backprop_norm")
    gain = record.backprop_gain()
    np.testing.assert_allclose(gain[:, 0], norm[:, 0] / norm[:, 1], rtol=1e-6)
    assert np.isnan(gain[:, -1]).all()
    assert gain.shape == norm.shape


def test_record_dtypes_and_reader_api():
    hooks = build_monitor_hooks(every=1)
    trainer = tiny_trainer(hooks, activation="tanh")
    trainer.fit()
    record = hooks.record
    assert record.layers == ["dense1", "dense2", "dense3"]
    assert record.activation == "tanh"
    assert record.steps.dtype == np.int64 and record.epochs.dtype == np.int64
    assert set(record.layer_stats()) == set(LAYER_STATS)
    assert set(record.global_stats()) == set(GLOBAL_STATS)
    assert record.names() == record.global_stats() + record.layer_stats()
    for name in record.layer_stats():
        assert record.layer(name).dtype == np.float32 and record.layer(name).shape == (len(record), 3)
    for name in record.global_stats():
        assert record.global_(name).dtype == np.float32 and record.global_(name).shape == (len(record),)
    np.testing.assert_array_equal(record.global_("step"), record.steps)
    np.testing.assert_array_equal(record.series("grad_norm", "dense2"), record.layer("grad_norm")[:, 1])
    np.testing.assert_array_equal(record.series("loss"), record.global_("loss"))
    assert record.meta["model"] == trainer.model.summary() and record.meta["every"] == 1
    with pytest.raises(KeyError, match="available"):
        record.layer("no_such_stat")
    with pytest.raises(KeyError, match="dense1"):
        record.series("grad_norm", "dense9")
    for param in trainer.model.parameters().values():
        assert param.dtype == np.float32


def test_save_load_round_trip_without_pickle(tmp_path):
    hooks = build_monitor_hooks(every=2)
    trainer = tiny_trainer(hooks, batch_norm=True, epochs=2)
    trainer.fit()
    record = hooks.record
    record.meta["note"] = {"nested": [1, 2.5, "x"]}
    path = tmp_path / "stats.npz"
    record.save(path)
    with np.load(path, allow_pickle=False) as raw:  # every array loads without pickle
        assert raw["layers"].dtype.kind == "U"
        assert all(raw[key].dtype != object for key in raw.files)
    loaded = load_record(path)
    assert len(loaded) == len(record)
    assert loaded.layers == record.layers and loaded.activation == record.activation
    assert loaded.meta == record.meta and loaded.every == record.every
    np.testing.assert_array_equal(loaded.steps, record.steps)
    np.testing.assert_array_equal(loaded.epochs, record.epochs)
    assert loaded.layer_stats() == record.layer_stats() and loaded.global_stats() == record.global_stats()
    for name in record.layer_stats():
        np.testing.assert_array_equal(loaded.layer(name), record.layer(name))
    for name in record.global_stats():
        np.testing.assert_array_equal(loaded.global_(name), record.global_(name))
    with pytest.raises(UserError):
        load_record(tmp_path / "missing.npz")


def test_custom_statistics_logged_saved_and_loaded(tmp_path):
    class WeightMaxHook(Hook):  # the example of workbench/monitor/__init__.py
        def __init__(self, monitor):
            self.monitor = monitor

        def on_after_backward(self, trainer):
            record = self.monitor.record
            if not record.recording:
                return
            for layer in trainer.model.dense_layers:
                record.log_layer("weight_absmax", layer.name, float(np.abs(layer.params["W"]).max()))
            record.log("batch_size", len(trainer.xb))

    hooks = build_monitor_hooks(every=2)
    trainer = tiny_trainer([*hooks, WeightMaxHook(hooks.monitor)], epochs=2)
    trainer.fit()
    record = hooks.record
    assert len(record) == 4
    np.testing.assert_array_equal(record.global_("batch_size"), [12, 12, 12, 12])
    assert np.isfinite(record.layer("weight_absmax")).all()
    assert not record.recording  # closed at the end of training
    assert record.log("late", 1.0) is False
    record.save(tmp_path / "s.npz")
    loaded = load_record(tmp_path / "s.npz")
    np.testing.assert_array_equal(loaded.layer("weight_absmax"), record.layer("weight_absmax"))
    np.testing.assert_array_equal(loaded.global_("batch_size"), record.global_("batch_size"))


def test_capacity_compacts_keeping_every_other_row_and_doubling_the_cadence():
    record = StatsRecord(["dense1", "dense2"], max_records=8, every=1, capacity=2)
    seen = []
    for step in range(50):
        if record.start_row(step, step // 10) >= 0:
            record.log("value", float(step))
            record.log_layer("twice", "dense2", 2.0 * step)
            seen.append(step)
    assert len(record) <= 8 and record.capacity == 8
    assert record.every == 8
    steps = record.steps
    assert steps[0] == 0 and (np.diff(steps) == record.every).all()  # evenly spaced, covering the run
    assert steps[-1] >= 50 - record.every
    np.testing.assert_array_equal(record.global_("value"), steps)  # values moved with their rows
    np.testing.assert_array_equal(record.series("twice", "dense2"), 2.0 * steps)
    assert np.isnan(record.series("twice", "dense1")).all()
    np.testing.assert_array_equal(record.epochs, steps // 10)


def test_monitor_memory_is_bounded_in_a_run():
    hooks = build_monitor_hooks(every=1, max_records=4)
    trainer = tiny_trainer(hooks, epochs=5)  # 20 steps
    trainer.fit()
    record = hooks.record
    assert len(record) <= 4 and record.every == 8
    assert list(record.steps) == [0, 8, 16]
    assert np.isfinite(record.layer("update_ratio")).all()


def test_rows_after_serves_incremental_readers_across_compaction():
    record = StatsRecord(["dense1"], max_records=6)
    read_until, collected = -1, []
    for step in range(30):
        if record.start_row(step, 0) >= 0:
            record.log("loss", float(step))
        if step % 5 == 4:
            rows = record.rows_after(read_until)
            collected.extend(record.steps[rows].tolist())
            read_until = record.last_step
    assert collected == sorted(set(collected))  # no step read twice, in order
    assert collected[-1] == record.last_step
    assert record.rows_after(record.last_step) == slice(len(record), len(record))


def test_stat_names_cannot_collide():
    record = StatsRecord(["dense1"])
    record.start_row(0, 0)
    record.log("a", 1.0)
    with pytest.raises(ValueError):
        record.log_layer("a", "dense1", 1.0)
    with pytest.raises(ValueError):
        record.log("step", 1.0)


def test_factory_validates_and_orders_hooks():
    hooks = build_monitor_hooks(clipping_mode="global_norm", early_stopping={"patience": 2, "enabled": True})
    assert isinstance(hooks.monitor, StatisticsMonitor) and hooks[0] is hooks.monitor
    assert [type(h).__name__ for h in hooks] == ["StatisticsMonitor", "NanGuard", "GradientClipping", "EarlyStopping"]
    priorities = [h.priority for h in hooks]
    assert priorities == sorted(priorities)
    assert build_monitor_hooks(nan_guard=False, early_stopping={"enabled": False}).early_stopping is None
    with pytest.raises(UserError, match="allowed"):
        build_monitor_hooks(clipping_mode="norm")
    with pytest.raises(UserError):
        build_monitor_hooks(every=0)
    with pytest.raises(UserError, match="patiense"):
        build_monitor_hooks(early_stopping={"patiense": 3})


def test_monitor_imports_no_tracking_or_plotting_library():
    code = ("import sys, workbench.monitor; "
            "bad = [m for m in ('mlflow', 'optuna', 'matplotlib') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_act_std_stays_accurate_when_the_mean_dominates():
    hooks = build_monitor_hooks(every=1, nan_guard=False)
    capture = Capture()
    trainer = tiny_trainer([*hooks, capture], lr=0.0)
    trainer.model.dense_layers[0].params["b"][:] = 300.0  # E[y^2] - E[y]^2 would cancel in float32
    trainer.fit()
    for row, c in enumerate(capture.steps):
        y = c["outputs"]["act1"]
        np.testing.assert_allclose(hooks.record.series("act_std", "dense1")[row], y.std(), rtol=1e-4)


def test_nonfinite_counts_match_a_full_scan(optimizer_path):
    hooks = build_monitor_hooks(every=1, nan_guard=False)
    capture = Capture()
    trainer = optimizer_path(tiny_trainer([*hooks, capture], epochs=1))
    trainer.model.dense_layers[1].params["W"][0, :2] = [np.nan, np.inf]
    with np.errstate(all="ignore"):
        trainer.fit()
    assert_blocked_if_asked(trainer, optimizer_path)
    record = hooks.record
    for row, c in enumerate(capture.steps):
        want = expected_row(trainer.model, c)["nonfinite"]
        np.testing.assert_array_equal(record.layer("nonfinite")[row], want)
    assert record.layer("nonfinite")[0, 1] > 0 and record.layer("nonfinite")[0, 0] > 0  # dense1 via backprop


@pytest.mark.parametrize("activation", ["tanh", "sigmoid"])
def test_saturation_is_actually_exercised(activation):
    hooks = build_monitor_hooks(every=1)
    trainer = tiny_trainer(hooks, activation=activation, init_scale=6.0)
    trainer.fit()
    assert np.nanmax(hooks.record.layer("sat_frac")[:, :2]) > 0.1
    assert (hooks.record.layer("dead_frac")[:, :2] == 0.0).all()
    assert np.isnan(hooks.record.layer("sat_frac")[:, 2]).all()


def test_a_second_fit_continues_the_record():
    hooks = build_monitor_hooks(every=1)
    trainer = tiny_trainer(hooks, epochs=1)
    trainer.fit()
    trainer.epochs = 3
    trainer.fit()
    record = hooks.record
    assert list(record.steps) == list(range(12)) and list(record.epochs) == [0] * 4 + [1] * 4 + [2] * 4
    assert np.isfinite(record.layer("update_ratio")).all() and np.isfinite(record.global_("loss")).all()


def test_a_loaded_record_keeps_growing_in_a_resumed_run(tmp_path):
    hooks = build_monitor_hooks(every=1)
    trainer = tiny_trainer(hooks, epochs=1)
    trainer.fit()
    hooks.record.save(tmp_path / "s.npz")
    resumed = build_monitor_hooks(every=1)
    resumed.monitor.record = load_record(tmp_path / "s.npz")
    trainer2 = tiny_trainer(resumed, epochs=2)
    trainer2.epoch, trainer2.step = 1, 4
    trainer2.fit()
    record = resumed.record
    assert list(record.steps) == list(range(8))
    np.testing.assert_array_equal(record.layer("grad_norm")[:4], hooks.record.layer("grad_norm"))
    assert np.isfinite(record.layer("grad_norm")).all() and np.isfinite(record.global_("lr")).all()


def test_blockwise_copy_and_distance_match_numpy():
    from workbench.monitor.norms import CHUNK, copy_squared_norm, squared_distance

    rng = np.random.default_rng(0)
    for size in (7, CHUNK, 3 * CHUNK + 5):
        a = rng.standard_normal(size).astype(np.float32)
        b = (a + 1e-3 * rng.standard_normal(size)).astype(np.float32)
        copy = np.empty_like(a)
        np.testing.assert_allclose(copy_squared_norm(copy, a), np.sum(a.astype(np.float64) ** 2), rtol=1e-5)
        np.testing.assert_array_equal(copy, a)
        scratch = np.empty(min(size, CHUNK), np.float32)
        want = np.sum((a.astype(np.float64) - b) ** 2)
        np.testing.assert_allclose(squared_distance(a, b, scratch), want, rtol=1e-4)
