"""The training loop and its hook API."""

from __future__ import annotations

import numpy as np
import pytest

from workbench.nn.losses import CrossEntropy
from workbench.nn.model import Architecture, build_model
from workbench.nn.optim import build_optimizer
from workbench.training import HOOK_POINTS, FAILED, FINISHED, Hook, Trainer


def make_trainer(data, epochs=3, dtype="float32", hooks=(), seed=0, **arch):
    arch = Architecture(5, 3, tuple(arch.pop("hidden", (16, 8))), dtype=dtype, **arch)
    model = build_model(arch, init="he_normal", rng=np.random.default_rng(seed))
    optimizer = build_optimizer(model.parameters(), "adam", lr=1e-2)
    return Trainer(model, CrossEntropy(), optimizer, data, epochs=epochs, batch_size=32,
                   rng=np.random.default_rng(seed + 1), hooks=hooks)


class RecordAll(Hook):
    def __init__(self):
        self.calls = []


for _point in HOOK_POINTS:
    setattr(RecordAll, _point, (lambda p: lambda self, trainer, *a: self.calls.append(p))(_point))


def test_training_learns_and_reports(blobs):
    result = make_trainer(blobs, epochs=10).fit()
    assert result.status == FINISHED
    assert result.metrics["test/accuracy"] > 0.9
    assert result.history["train/loss"][-1] < result.history["train/loss"][0]
    assert set(result.metrics) >= {"train/loss", "val/loss", "val/accuracy", "test/loss", "test/accuracy"}


def test_hook_points_are_called_in_documented_order(blobs):
    hook = RecordAll()
    trainer = make_trainer(blobs, epochs=2, hooks=(hook,))
    trainer.fit()
    calls = hook.calls
    assert calls[0] == "on_train_begin"
    assert calls[1:7] == ["on_epoch_begin", "on_batch_begin", "on_after_forward", "on_after_backward",
                          "on_after_update", "on_batch_begin"]
    assert calls.count("on_after_update") == trainer.step == 2 * 7
    assert calls[-3:] == ["on_epoch_end", "on_train_end", "on_evaluate"]  # val each epoch, test at the end
    assert calls.count("on_evaluate") == 3


def test_removable_handle_unregisters(blobs):
    hook = RecordAll()
    trainer = make_trainer(blobs, epochs=1)
    handle = trainer.register(hook)
    handle.remove()
    trainer.fit()
    assert hook.calls == []
    with trainer.register(hook):
        pass
    assert trainer.hooks.ordered() == []


def test_hook_can_stop_training_with_a_reason(blobs):
    class StopAtStep(Hook):
        def on_after_update(self, trainer):
            if trainer.step == 5:
                trainer.stop("enough", FAILED)

    result = make_trainer(blobs, epochs=10, hooks=(StopAtStep(),)).fit()
    assert (result.status, result.reason, result.steps) == (FAILED, "enough", 5)


def test_exception_in_loop_calls_train_end_with_failed_status(blobs):
    seen = {}

    class Boom(Hook):
        def on_after_backward(self, trainer):
            raise RuntimeError("boom")

        def on_train_end(self, trainer):
            seen["status"] = trainer.status

    with pytest.raises(RuntimeError):
        make_trainer(blobs, hooks=(Boom(),)).fit()
    assert seen["status"] == FAILED


def test_float32_end_to_end(blobs):
    """Parameters, activations, gradients and optimizer state stay float32: no silent upcast (NEP 50)."""
    trainer = make_trainer(blobs, epochs=2, activation="gelu", batch_norm=True, dropout=0.2)
    trainer.fit()
    model = trainer.model
    arrays = {**model.parameters(), **model.gradients(), **model.outputs, **model.grad_outputs,
              **{k: v for k, v in trainer.optimizer.state_dict().items() if np.asarray(v).dtype.kind == "f"}}
    bad = {k: v.dtype for k, v in arrays.items() if v is not None and np.asarray(v).dtype != np.float32}
    assert not bad, f"upcast to another dtype: {bad}"


def test_float64_available(blobs):
    data = type(blobs)(*(a.astype(np.float64) if a.dtype.kind == "f" else a for a in
                         (blobs.X_train, blobs.y_train, blobs.X_val, blobs.y_val, blobs.X_test, blobs.y_test)))
    trainer = make_trainer(data, epochs=1, dtype="float64")
    trainer.fit()
    assert all(v.dtype == np.float64 for v in trainer.model.gradients().values())


def test_same_seed_gives_identical_losses(blobs):
    a = make_trainer(blobs, epochs=3, dropout=0.3).fit().history["train/loss"]
    b = make_trainer(blobs, epochs=3, dropout=0.3).fit().history["train/loss"]
    c = make_trainer(blobs, epochs=3, dropout=0.3, seed=5).fit().history["train/loss"]
    assert a == b
    assert a != c


def test_save_and_load_predict_identically(blobs, tmp_path):
    trainer = make_trainer(blobs, epochs=2, batch_norm=True)
    trainer.fit()
    path = tmp_path / "weights.npz"
    trainer.model.save(path)
    from workbench.nn.model import Sequential

    loaded = Sequential.load(path)
    np.testing.assert_array_equal(loaded.predict(blobs.X_test), trainer.model.predict(blobs.X_test))
    with np.load(path, allow_pickle=False) as f:
        assert "dense1.W" in f.files and "bn1.running_mean" in f.files
