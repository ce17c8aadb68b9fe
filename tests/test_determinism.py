"""Determinism (issue 7): what is reproducible bit for bit, and what only within a tolerance.

Bit for bit (README, "Reliability"): the same spec, seed, BLAS thread count and machine.
- two `build_run` + `fit` in one process: `trainer.history`, every column of the statistics record
  and the weights equal bitwise (NaN equal to NaN), at the default thread count and with 1 and 2;
- a study over a fixed grid (GridSampler, Categorical-only space) run with 1 worker and with 2
  workers and the same `blas_threads`: the same objective value, per configuration, per seed and
  per epoch, bitwise;
- the workbench's own threads do not change a bit: the optimizer's blocked step with 1, 2 or 3
  threads equals the plain step (tests/test_optim.py).

Within a tolerance: another BLAS thread count (study workers get cores // workers threads unless
`blas_threads` is fixed), another BLAS build or another CPU. BLAS splits and orders the sums of a
matrix product by thread count and kernel (OpenBLAS's Haswell or Zen kernels, MKL), so float32
products differ in their last bits (about 1e-7 relative) and training carries that forward. Whether
two thread counts happen to give the same bits depends on the kernel, the CPU and the shapes; what
holds everywhere is agreement within the tolerances below (the largest differences measured on these
runs are 10 to 100 times smaller).
"""

from __future__ import annotations

import numpy as np
import optuna
import pytest
from support import sqlite_store
from threadpoolctl import threadpool_limits

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


# Across BLAS thread counts, builds and CPUs (a few epochs; chaotic training drifts further on long runs):
LOSS_RTOL = 1e-4  # per-epoch losses (measured: up to 1e-5 with adam, 2e-8 with sgd)
STAT_RTOL = 1e-3  # each statistic of each step, relative to its column's largest value (measured: 1e-4)
WEIGHT_RTOL = 1e-3  # ||a - b|| / ||b|| for each weight array (measured: 1e-4)
WEIGHT_ATOL = 1e-6  # per element, for arrays of rounding noise (a bias before batch norm: zero gradient)
FRACTION_ATOL = 0.02  # dead and saturated fractions: a unit near the threshold may flip


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


def assert_runs_close(a, b) -> None:
    """The same run up to the last bits of float32 products: within the tolerances above."""
    assert a.trainer.history.keys() == b.trainer.history.keys()
    for key in a.trainer.history:
        x, y = np.asarray(a.trainer.history[key]), np.asarray(b.trainer.history[key])
        if key.endswith("accuracy"):  # a sample on the decision boundary may flip
            np.testing.assert_allclose(x, y, atol=2 / len(a.data.y_val), err_msg=key)
        else:
            np.testing.assert_allclose(x, y, rtol=LOSS_RTOL, err_msg=key)
    ra, rb = a.record, b.record
    assert (ra.global_stats(), ra.layer_stats(), ra.layers) == (rb.global_stats(), rb.layer_stats(), rb.layers)
    assert np.array_equal(ra.steps, rb.steps) and np.array_equal(ra.epochs, rb.epochs)
    columns = [(name, ra.global_(name), rb.global_(name)) for name in ra.global_stats()]
    columns += [(name, ra.layer(name), rb.layer(name)) for name in ra.layer_stats()]
    for name, x, y in columns:
        assert np.array_equal(np.isnan(x), np.isnan(y)), name
        x, y = np.nan_to_num(x), np.nan_to_num(y)
        if name.endswith("_frac"):
            np.testing.assert_allclose(x, y, atol=FRACTION_ATOL, err_msg=name)
        else:
            np.testing.assert_allclose(x, y, rtol=0, atol=STAT_RTOL * max(np.abs(y).max(), 1e-30), err_msg=name)
    wa, wb = a.model.parameters(), b.model.parameters()
    assert wa.keys() == wb.keys()
    for key in wa:
        bound = WEIGHT_RTOL * np.linalg.norm(wb[key]) + WEIGHT_ATOL * np.sqrt(wb[key].size)
        assert np.linalg.norm(wa[key] - wb[key]) <= bound, key


@pytest.mark.parametrize("name", sorted(SPECS))
def test_same_spec_and_seed_give_bitwise_identical_history_and_statistics(name):
    spec = spec_from_dict(SPECS[name])
    assert_runs_bitwise_equal(fit(spec), fit(spec))


def test_a_different_seed_gives_different_losses():  # the comparison above can tell runs apart
    spec = spec_from_dict(SPECS["moons-adam"])
    a, b = fit(spec), fit(spec.with_overrides({"seed": spec.seed + 1}))
    assert not np.array_equal(a.trainer.history["train/loss"], b.trainer.history["train/loss"])


# Layers 256 wide: products that BLAS splits among its threads (digits: 600 samples, enough for the point).
WIDE = {name: {**SPECS[name], "model": {**SPECS[name]["model"], "hidden": [256, 256]}}
        for name in ("moons-adam", "digits-dropout-bn-sgd")}
WIDE["digits-dropout-bn-sgd"]["data"] = {"source": "digits", "limit": 600}


@pytest.fixture(scope="module")
def wide_runs():
    """Each wide spec trained twice with 1 BLAS thread and twice with 2: {(name, threads): (run, run)}."""
    runs = {}
    for name, spec in WIDE.items():
        for threads in (1, 2):
            runs[name, threads] = (fit(spec_from_dict(spec), threads), fit(spec_from_dict(spec), threads))
    return runs


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("name", sorted(WIDE))
def test_the_same_blas_thread_count_gives_bitwise_identical_runs(wide_runs, name, threads):
    assert_runs_bitwise_equal(*wide_runs[name, threads])


@pytest.mark.parametrize("name", sorted(WIDE))
def test_one_and_two_blas_threads_agree_within_the_stated_tolerance(wide_runs, name):
    """Not bit for bit: OpenBLAS gives the same bits with 1 and 2 threads on some CPUs and shapes, not on
    others (AMD EPYC with the Zen/Haswell kernels: losses differ from the 6th significant digit)."""
    one, two = wide_runs[name, 1][0], wide_runs[name, 2][0]
    assert_runs_close(one, two)


def test_the_tolerance_comparison_tells_different_runs_apart(wide_runs):
    spec = spec_from_dict(WIDE["moons-adam"])
    other = fit(spec.with_overrides({"seed": spec.seed + 1}), 1)
    with pytest.raises(AssertionError):
        assert_runs_close(wide_runs["moons-adam", 1][0], other)


# Without `blas_threads`, a study on 2 cores with 1 worker (2 BLAS threads) and with 2 workers (1 each)
# may differ in the last bits (large products split differently); `blas_threads` pins the count, and
# then the worker count changes nothing. Products of a 1024-wide layer with batches up to 512.
GRID = {"model.init": ["he_normal", "xavier_normal"], "training.batch_size": [64, 512]}
BASE = {"data": {"source": "moons", "n_samples": 1000}, "model": {"hidden": [1024]},
        "training": {"epochs": 2}, "monitor": {"every": 1000}}


def grid_values(tmp_path, monkeypatch, workers: int, blas_threads: int | None):
    folder = tmp_path / f"workers{workers}"
    folder.mkdir()
    monkeypatch.chdir(folder)
    study = Study(name="grid", base=BASE, space={k: Categorical(v) for k, v in GRID.items()}, seeds=2,
                  metric="val/loss", direction="minimize", n_trials=4, pruner="none",
                  sampler=optuna.samplers.GridSampler(GRID, seed=0))
    result = study.run(workers=workers, storage=str(folder / "optuna.journal"), blas_threads=blas_threads,
                       tracking_uri=sqlite_store(folder), quiet=True, plots=False)
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


def test_workers_share_the_blas_threads_the_environment_allows(monkeypatch):
    """OPENBLAS_NUM_THREADS (or the like) caps the threads the workers share: whoever set it shares the
    machine (a test runner's workers, a cluster's job); threads beyond the cores spin against each other."""
    from workbench import machine
    from workbench.studies.workers import threads_per_worker

    monkeypatch.setattr(machine, "cores", lambda: 8)
    for key in machine.BLAS_THREAD_VARIABLES:
        monkeypatch.delenv(key, raising=False)
    assert (machine.blas_thread_budget(), threads_per_worker(2), threads_per_worker(16)) == (8, 4, 1)
    monkeypatch.setenv("OMP_NUM_THREADS", "4")
    assert (machine.blas_thread_budget(), threads_per_worker(2), threads_per_worker(1)) == (4, 2, 4)
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "1")
    assert (machine.blas_thread_budget(), threads_per_worker(1)) == (1, 1)
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "many")  # not a count: ignored
    assert machine.blas_thread_budget() == 4
