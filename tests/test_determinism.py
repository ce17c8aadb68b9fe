"""Determinism (issue 7): the same spec and seed give bit-identical results.

- two `build_run` + `fit` in one process: `trainer.history` and every column of the statistics
  record equal bitwise (NaN equal to NaN);
- 1 and 2 BLAS threads (threadpoolctl): the same bits (study workers get cores // workers threads,
  so a study run with 1 worker and with 2 workers trains with different BLAS thread counts);
- a study over a fixed grid (GridSampler, Categorical-only space) run with 1 worker and with 2
  workers and the same `blas_threads`: the same objective value, per configuration, per seed and
  per epoch, bitwise. (Without `blas_threads`, workers get cores // workers threads, and OpenBLAS
  splits large products differently with another thread count: last-bit differences.)
"""

from __future__ import annotations

import numpy as np
import optuna
import pytest
from threadpoolctl import threadpool_info, threadpool_limits

from workbench.runner import build_run
from workbench.spec import spec_from_dict
from workbench.studies import Categorical, Study

SPECS = {
    "moons-adam": {"data": {"source": "moons", "n_samples": 300}, "model": {"hidden": [16, 16]},
                   "training": {"epochs": 3, "batch_size": 32}, "optimizer": {"name": "adam", "lr": 0.01},
                   "monitor": {"every": 1}},
    "digits-dropout-bn-sgd": {"data": {"source": "digits"}, "model": {"hidden": [64, 32], "dropout": 0.2,
                              "batch_norm": True, "activation": "tanh"},
                              "training": {"epochs": 2, "batch_size": 64},
                              "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9}, "monitor": {"every": 1}},
    "diverging": {"data": {"source": "moons", "n_samples": 200}, "model": {"hidden": [16, 16, 16],
                  "init_scale": 100.0}, "training": {"epochs": 2, "batch_size": 32},
                  "optimizer": {"name": "sgd", "lr": 0.1}, "monitor": {"every": 1, "nan_guard": False}},
}


def fit(spec, threads: int | None = None):
    with threadpool_limits(limits=threads) if threads else _nothing(), np.errstate(all="ignore"):
        run = build_run(spec)
        run.trainer.fit()
    return run


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def assert_runs_bitwise_equal(a, b) -> None:
    assert a.trainer.history.keys() == b.trainer.history.keys()
    for key in a.trainer.history:
        x, y = np.asarray(a.trainer.history[key]), np.asarray(b.trainer.history[key])
        assert x.dtype == y.dtype and np.array_equal(x, y, equal_nan=True), key
    ra, rb = a.record, b.record
    assert ra is not None and len(ra) > 0
    assert (ra.global_stats(), ra.layer_stats(), ra.layers) == (rb.global_stats(), rb.layer_stats(), rb.layers)
    assert np.array_equal(ra.steps, rb.steps) and np.array_equal(ra.epochs, rb.epochs)
    for name in ra.global_stats():
        assert np.array_equal(ra.global_(name), rb.global_(name), equal_nan=True), name
    for name in ra.layer_stats():
        assert np.array_equal(ra.layer(name), rb.layer(name), equal_nan=True), name
    wa, wb = a.model.parameters(), b.model.parameters()
    assert wa.keys() == wb.keys()
    for key in wa:
        assert np.array_equal(wa[key], wb[key], equal_nan=True), key


@pytest.mark.parametrize("name", sorted(SPECS))
def test_same_spec_and_seed_give_bitwise_identical_history_and_statistics(name):
    spec = spec_from_dict(SPECS[name])
    assert_runs_bitwise_equal(fit(spec), fit(spec))


def test_a_different_seed_gives_different_losses():  # the comparison above can tell runs apart
    spec = spec_from_dict(SPECS["moons-adam"])
    a, b = fit(spec), fit(spec.with_overrides({"seed": spec.seed + 1}))
    assert not np.array_equal(a.trainer.history["train/loss"], b.trainer.history["train/loss"])


OPENBLAS = any(i.get("internal_api") == "openblas" for i in threadpool_info())


@pytest.mark.skipif(not OPENBLAS, reason="a property of OpenBLAS (MKL may reorder sums with the thread count)")
@pytest.mark.parametrize("name", ["moons-adam", "digits-dropout-bn-sgd"])
def test_one_and_two_blas_threads_give_bitwise_identical_runs(name):
    """Layers up to 256 wide: OpenBLAS gives the same bits with 1 and 2 threads. (Not for every shape:
    a 4096-wide layer with batches of 2048 differs in the last bits; see the grid test below.)"""
    spec = spec_from_dict({**SPECS[name], "model": {**SPECS[name]["model"], "hidden": [256, 256]}})
    assert_runs_bitwise_equal(fit(spec, threads=1), fit(spec, threads=2))


# Large products (a 4096-wide layer, batches of 2048) are where OpenBLAS splits the work differently
# with another thread count: a study on 2 cores with 1 worker (2 BLAS threads) and with 2 workers
# (1 each) then differs in the last bits for (xavier_normal, 2048). `blas_threads` pins the count.
GRID = {"model.init": ["he_normal", "xavier_normal"], "training.batch_size": [64, 2048]}
BASE = {"data": {"source": "moons", "n_samples": 3000}, "model": {"hidden": [4096]},
        "training": {"epochs": 3}, "monitor": {"every": 1000}}


def grid_values(tmp_path, monkeypatch, workers: int, blas_threads: int | None):
    folder = tmp_path / f"workers{workers}"
    folder.mkdir()
    monkeypatch.chdir(folder)
    study = Study(name="grid", base=BASE, space={k: Categorical(v) for k, v in GRID.items()}, seeds=2,
                  metric="val/loss", direction="minimize", n_trials=4, pruner="none",
                  sampler=optuna.samplers.GridSampler(GRID, seed=0))
    result = study.run(workers=workers, storage=str(folder / "optuna.journal"), blas_threads=blas_threads,
                       tracking_uri=f"sqlite:///{folder / 'mlflow.db'}", quiet=True)
    assert result.report.counts["COMPLETE"] == 4
    journal = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(folder / "optuna.journal")))
    trials = optuna.load_study(study_name="grid", storage=journal).get_trials(deepcopy=False)
    values = {}
    for t in trials:
        key = tuple(sorted(t.params.items()))
        assert key not in values, "a grid point ran twice"
        values[key] = (t.value, tuple(t.user_attrs["objective_values"]),
                       tuple(t.intermediate_values[s] for s in sorted(t.intermediate_values)))
    return values, {t.user_attrs["worker"] for t in trials}, {t.user_attrs["blas_threads"] for t in trials}


@pytest.mark.slow
def test_a_grid_study_gives_the_same_values_per_configuration_with_one_and_two_workers(tmp_path, monkeypatch):
    """Same sampler seed, same grid, same BLAS threads per worker: --workers 1 and 2 agree bit for bit,
    per configuration: the mean, each seed's value and every intermediate value."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    one, one_workers, one_threads = grid_values(tmp_path, monkeypatch, 1, blas_threads=1)
    two, two_workers, two_threads = grid_values(tmp_path, monkeypatch, 2, blas_threads=1)
    assert one_threads == two_threads == {1}
    assert len(one) == 4 and one.keys() == two.keys()
    for config in one:  # exact float equality: same bits, not approximately equal
        assert one[config] == two[config], config
    assert len(one_workers) == 1 and len(two_workers) == 2  # the second study really ran on two processes


def test_blas_threads_is_checked_and_defaults_to_cores_over_workers(tmp_path):
    from workbench.errors import UserError
    from workbench.studies.workers import blas_threads, threads_per_worker

    study = Study(name="t", base=BASE, space={"model.init": Categorical(["he_normal"])})
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert blas_threads(study.settings(workers=2, tracking_uri=tracking)) == threads_per_worker(2)
    assert blas_threads(study.settings(workers=2, tracking_uri=tracking, blas_threads=3)) == 3
    with pytest.raises(UserError, match="blas_threads must be an integer >= 1"):
        study.settings(blas_threads=0, tracking_uri=tracking)
