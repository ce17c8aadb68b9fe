"""Gradient-free training (genetic algorithm, evolution strategy): forward passes only, same trainer, hooks,
checkpoints, tracking and studies as backprop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from support import sqlite_store, wait_until

from workbench.checkpoint import CHECKPOINT_FILE, Checkpoint, restore
from workbench.errors import UserError
from workbench.runner import build_run
from workbench.spec import spec_from_dict
from workbench.training import Hook
from workbench.training.evolution import EvolutionStrategy, GeneticAlgorithm, centered_ranks
from workbench.training.population import PopulationForward, population_losses
from workbench.nn.losses import CrossEntropy, Huber, MeanSquaredError

TINY = {"data": {"source": "moons", "n_samples": 200}, "model": {"hidden": [16]},
        "training": {"epochs": 6, "batch_size": 32}, "monitor": {"every": 1},
        "optimizer": {"population": 20}}
METHODS = ["genetic", "evolution_strategy"]
EPOCHS_FOREVER = 1_000_000


def tiny(method: str, **overrides):
    spec = spec_from_dict({**TINY, "optimizer": {**TINY["optimizer"], "name": method}})
    return spec.with_overrides(overrides) if overrides else spec


class InterruptMidEpoch(Hook):
    """Ctrl-C in the middle of epoch `epoch` (the last checkpoint is of the epoch before)."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_after_update(self, trainer) -> None:
        if trainer.epoch == self.epoch and trainer.batch_index == 2:
            raise KeyboardInterrupt


# -- the population's forward passes -----------------------------------------------------------------
def looped_losses(model, members, loss, xb, yb):
    forward = PopulationForward(model)
    saved = forward.flatten()
    out = []
    for row in members:
        forward.load(row)
        out.append(loss(model.forward(xb, training=True), yb)[0])
    forward.load(saved)
    return np.array(out)


@pytest.mark.parametrize("activation", ["relu", "tanh", "gelu"])
def test_vectorized_population_losses_equal_the_models_own_forward_pass(activation):
    run = build_run(spec_from_dict({"data": {"source": "digits", "limit": 200}, "dtype": "float64",
                                    "model": {"hidden": [12, 8], "activation": activation}}))
    forward = PopulationForward(run.model)
    assert forward.vectorized
    rng = np.random.default_rng(1)
    members = forward.flatten()[None] + 0.1 * rng.standard_normal((7, forward.size))
    xb, yb = run.data.X_train[:16], run.data.y_train[:16]
    before = forward.flatten().copy()
    got = forward.losses(members, run.loss, xb, yb)
    np.testing.assert_allclose(got, looped_losses(run.model, members, run.loss, xb, yb), rtol=1e-10)
    np.testing.assert_array_equal(forward.flatten(), before)  # the model is left as it was


def test_population_forward_loops_over_members_for_other_layer_types_and_restores_state():
    layers = [{"type": "conv2d", "filters": 3, "kernel": 3}, {"type": "batch_norm"}, {"type": "relu"},
              {"type": "max_pool2d", "size": 2}, {"type": "flatten"}]
    run = build_run(spec_from_dict({"data": {"source": "digits", "limit": 100}, "model": {"layers": layers}}))
    forward = PopulationForward(run.model)
    assert not forward.vectorized
    bn = run.model.layer("bn1")
    stats = {k: v.copy() for k, v in bn.state().items()}
    members = forward.flatten()[None] + 0.05 * np.random.default_rng(0).standard_normal((4, forward.size))
    xb, yb = run.data.X_train[:8], run.data.y_train[:8]
    before = forward.flatten().copy()
    got = forward.losses(members.astype(np.float32), run.loss, xb, yb)
    assert got.shape == (4,) and np.isfinite(got).all() and len(set(got.round(6))) == 4
    np.testing.assert_array_equal(forward.flatten(), before)
    for key, value in bn.state().items():  # running statistics are not moved by evaluating a population
        np.testing.assert_array_equal(value, stats[key])


@pytest.mark.parametrize("loss", [CrossEntropy(), MeanSquaredError(), Huber(0.5)], ids=lambda l: l.name)
def test_per_member_losses_equal_the_loss_object(loss):
    rng = np.random.default_rng(0)
    outputs = rng.standard_normal((5, 9, 3))
    yb = rng.integers(0, 3, 9) if isinstance(loss, CrossEntropy) else rng.standard_normal((9, 3))
    expected = [loss(o, yb)[0] for o in outputs]
    np.testing.assert_allclose(population_losses(loss, outputs, yb), expected, rtol=1e-12)


def test_centered_ranks_are_in_half_open_unit_range_and_put_non_finite_last():
    ranks = centered_ranks(np.array([3.0, np.nan, -1.0, 10.0]))
    np.testing.assert_allclose(ranks, [1 / 6, -0.5, -1 / 6, 0.5])


# -- training ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", METHODS)
def test_gradient_free_training_reduces_the_training_loss(name):
    run = build_run(tiny(name, **({"optimizer.lr": 0.02} if name == "evolution_strategy" else {})))
    result = run.trainer.fit()
    losses = result.history["train/loss"]
    assert result.status == "FINISHED" and len(losses) == 6
    assert losses[-1] < 0.8 * losses[0], losses
    assert result.metrics["val/accuracy"] > 0.7
    assert run.trainer.optimizer.step_count == run.trainer.step == 6 * run.trainer.steps_per_epoch


@pytest.mark.parametrize("name", METHODS)
def test_reproducible_from_the_seed(name):
    a, b = build_run(tiny(name)), build_run(tiny(name))
    ra, rb = a.trainer.fit(), b.trainer.fit()
    assert ra.history == rb.history
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert all(np.array_equal(sa[k], sb[k]) for k in sa)
    other = build_run(tiny(name, seed=1)).trainer.fit()
    assert other.history["train/loss"] != ra.history["train/loss"]


@pytest.mark.parametrize("name", METHODS)
def test_statistics_that_need_a_backward_pass_are_absent_not_zero(name):
    run = build_run(tiny(name, **{"training.epochs": 2}))
    result = run.trainer.fit()
    record = run.record
    for stat in ("grad_norm", "backprop_norm"):
        assert np.isnan(record.layer(stat)).all(), stat
    assert np.isnan(record.global_("grad_norm_global")).all()
    for stat in ("weight_norm", "update_ratio", "act_std"):
        assert np.isfinite(record.layer(stat)).all(), stat
    assert (record.layer("update_ratio") > 0).any()
    best, mean, spread = (record.global_(f"fitness_{k}") for k in ("best", "mean", "spread"))
    assert np.all(best >= mean) and np.all(spread >= 0) and np.all(best <= 0)
    assert {"fitness/best", "fitness/mean", "fitness/spread"} <= set(result.metrics)


def test_an_odd_population_of_the_evolution_strategy_uses_antithetic_pairs():
    run = build_run(tiny("evolution_strategy", **{"optimizer.population": 7, "training.epochs": 1}))
    run.trainer.fit()
    optimizer = run.trainer.optimizer
    assert isinstance(optimizer, EvolutionStrategy) and optimizer.pairs == 3
    assert optimizer.forward_passes == 6 * run.trainer.steps_per_epoch


def test_genetic_algorithm_keeps_its_elite_and_the_model_is_the_best_member():
    run = build_run(tiny("genetic", **{"training.epochs": 1}))
    run.trainer.fit()
    ga = run.trainer.optimizer
    assert isinstance(ga, GeneticAlgorithm) and ga.elite == 2
    np.testing.assert_array_equal(ga.members[0], ga.forward.flatten())


@pytest.mark.parametrize("name", METHODS)
def test_interrupted_run_resumes_from_its_checkpoint_bit_for_bit(tmp_path, name):
    spec = tiny(name)
    whole = build_run(spec)
    expected = whole.trainer.fit()
    first = build_run(spec, hooks=(InterruptMidEpoch(3),))
    first.trainer.register(Checkpoint(first, tmp_path, interval_s=0))
    with pytest.raises(KeyboardInterrupt):
        first.trainer.fit()
    with np.load(tmp_path / CHECKPOINT_FILE, allow_pickle=False) as data:
        keys = set(data.files)
    population_key = "optimizer.genetic.members" if name == "genetic" else "optimizer.es.adam.adam.m.dense1.W"
    assert population_key in keys and "optimizer.step" in keys
    second = build_run(spec)
    restore(second, tmp_path)
    result = second.trainer.fit()
    assert result.history == expected.history and result.metrics == expected.metrics
    final, reference = second.model.state_dict(), whole.model.state_dict()
    assert all(np.array_equal(final[k], reference[k]) for k in reference)


# -- spec mistakes ---------------------------------------------------------------------------------------
def test_population_of_one_is_a_one_line_spec_error():
    with pytest.raises(UserError, match=r"optimizer.population = 1 is out of range: must be >= 2") as info:
        spec_from_dict({"optimizer": {"name": "genetic", "population": 1}})
    assert "\n" not in str(info.value)


def test_clipping_with_a_gradient_free_optimizer_is_a_user_error():
    with pytest.raises(UserError, match=r'clipping.mode = "global_norm" clips gradients.*set clipping.mode = "none"'):
        build_run(tiny("genetic", **{"clipping.mode": "global_norm"}))


# -- the command line: Ctrl-C, checkpoint, resume ------------------------------------------------------------
@pytest.mark.slow
def test_ctrl_c_ends_a_genetic_run_killed_with_its_population_in_the_checkpoint(tmp_path):
    from mlflow import MlflowClient

    uri = sqlite_store(tmp_path)
    spec_path = tmp_path / "ga.toml"
    # a million epochs: the run is still training when its second epoch shows in MLflow, on any machine
    # (400 epochs were done in 4 s here, before the tracking agent had logged two of them on a CI machine)
    spec = tiny("genetic", **{"training.epochs": EPOCHS_FOREVER, "name": "ga-interrupt"})
    spec_path.write_text(spec.to_toml(), encoding="utf-8")
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    env.pop("WORKBENCH_PROGRESS", None)
    command = [sys.executable, "-m", "workbench", "run", str(spec_path), "--json", "--quiet", "--no-plots"]
    proc = subprocess.Popen(command,
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    client = MlflowClient(uri)

    def two_epochs_logged():
        runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
        if runs and len(client.get_metric_history(runs[0].info.run_id, "epoch")) >= 2:
            return runs[0].info.run_id
        return None

    try:
        run_id = wait_until(two_epochs_logged, "two epochs logged", process=proc)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130 and "interrupted" in err and "Traceback" not in err
    assert client.get_run(run_id).info.status == "KILLED"
    local = client.download_artifacts(run_id, f"checkpoint/{CHECKPOINT_FILE}", str(tmp_path))
    with np.load(local, allow_pickle=False) as data:
        members = data["optimizer.genetic.members"]
        epoch = int(data["trainer.epoch"])
    assert members.shape[0] == 20 and 1 <= epoch < EPOCHS_FOREVER


@pytest.mark.slow
def test_gradient_free_optimizers_in_a_study_with_pruning(tmp_path, monkeypatch):
    import optuna

    from workbench.studies import Categorical, Study

    monkeypatch.chdir(tmp_path)
    stores = {"storage": str(tmp_path / "optuna.journal"), "tracking_uri": sqlite_store(tmp_path), "quiet": True,
              "plots": False}
    base = {**TINY, "training": {"epochs": 3, "batch_size": 32}, "monitor": {"every": 5}}
    space = {"optimizer.name": Categorical(METHODS)}
    done = Study(name="evolution", base=base, space=space, seeds=1, n_trials=2, pruner="median",
                 sampler=optuna.samplers.GridSampler({"optimizer.name": METHODS}, seed=0)).run(n_trials=2, **stores)
    assert done.report.counts["COMPLETE"] == 2
    pruned = Study(name="evolution-pruned", base=base, space=space, seeds=1, n_trials=2,
                   pruner=optuna.pruners.ThresholdPruner(lower=0.999),
                   sampler=optuna.samplers.GridSampler({"optimizer.name": METHODS}, seed=0)).run(n_trials=2, **stores)
    assert pruned.report.counts["PRUNED"] == 2
    journal = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(stores["storage"]))
    trials = optuna.load_study(study_name="evolution-pruned", storage=journal).get_trials(deepcopy=False)
    assert all("pruned at epoch 0" in t.user_attrs["prune_reason"] for t in trials)
    assert {t.params["optimizer.name"] for t in trials} == set(METHODS)
