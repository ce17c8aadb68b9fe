"""Monitoring overhead: training time with `build_monitor_hooks(every=k)` as a multiple of plain training.

    .venv/bin/python benchmarks/monitor_overhead.py [--threads N] [--wide-rounds N] [--digits-rounds N] [--mnist DIR]

Two workloads, each timed in whole epochs (no validation set, so only training
steps are measured): (a) the wide MLP 784-512-512-10 relu, batch 128, on the
first 10000 MNIST training images; (b) the digits MLP 64-128-64-10 relu
he_normal, batch 32, on scikit-learn's digits, standardized. Adam, lr 1e-3.
Monitoring = the statistics monitor at cadence k plus the NaN guard (the
factory's defaults; no clipping). Configurations are interleaved round by
round (one epoch each, order alternating), each with its own model and
optimizer from the same seed, and the overhead of a configuration is the
median over rounds of its time divided by plain training's time in the same
round: short paired measurements, so a busy machine slows both sides alike.
Targets: <= 1.05x at every step on the wide MLP, <= 1.25x on the digits MLP.

It also asserts that no silent float64 upcast happens: parameters, gradients
and optimizer state stay float32, record columns float32, indices int64.
Results: a table on stdout and benchmarks/results/monitor_overhead.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from workbench.monitor import build_monitor_hooks  # noqa: E402
from workbench.nn.losses import CrossEntropy  # noqa: E402
from workbench.nn.model import Architecture, build_model  # noqa: E402
from workbench.nn.optim import build_optimizer  # noqa: E402
from workbench.training import Trainer  # noqa: E402

CADENCES = (1, 4, 16, 64, 256)
TARGETS = {"wide_mnist": 1.05, "digits": 1.25}


def mnist_data(directory: Path, n: int) -> SimpleNamespace:
    from workbench.data.mnist import read_idx

    images = read_idx(directory / "train-images.idx3-ubyte.gz")[:n]
    labels = read_idx(directory / "train-labels.idx1-ubyte.gz")[:n]
    X = images.reshape(len(images), -1).astype(np.float32) / np.float32(255.0)
    return _data(X, labels.astype(np.int64))


def digits_data() -> SimpleNamespace:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    X = bunch.data.astype(np.float64)
    X = (X - X.mean(axis=0)) / np.where(X.std(axis=0) > 0, X.std(axis=0), 1.0)
    return _data(X.astype(np.float32), bunch.target.astype(np.int64))


def _data(X: np.ndarray, y: np.ndarray) -> SimpleNamespace:
    empty_X, empty_y = X[:0], y[:0]
    return SimpleNamespace(task="classification", X_train=X, y_train=y, X_val=empty_X, y_val=empty_y,
                           X_test=empty_X, y_test=empty_y)


def make_trainer(data, hidden: tuple[int, ...], batch_size: int, every: int | None) -> tuple[Trainer, list]:
    arch = Architecture(data.X_train.shape[1], 10, hidden, activation="relu")
    model = build_model(arch, init="he_normal", rng=np.random.default_rng(0))
    optimizer = build_optimizer(model.parameters(), "adam", lr=1e-3)
    hooks = build_monitor_hooks(every=every) if every is not None else []
    trainer = Trainer(model, CrossEntropy(), optimizer, data, epochs=0, batch_size=batch_size,
                      rng=np.random.default_rng(1), hooks=tuple(hooks))
    return trainer, hooks


def time_epochs(trainer: Trainer, epochs: int) -> float:
    trainer.epochs += epochs
    start = time.perf_counter()
    result = trainer.fit()
    elapsed = time.perf_counter() - start
    assert result.status == "FINISHED", result.reason
    return elapsed


def check_dtypes(trainer: Trainer, hooks) -> None:
    """No silent float64: params, grads, optimizer state float32; record float32 / int64."""
    for name, array in {**trainer.model.parameters(), **trainer.model.gradients()}.items():
        assert array.dtype == np.float32, f"{name} is {array.dtype}"
    for name, array in trainer.optimizer.state_dict().items():
        assert array.ndim == 0 or array.dtype == np.float32, f"optimizer state {name} is {array.dtype}"
    if hooks:
        record = hooks.record
        for name in record.global_stats():
            assert record.global_(name).dtype == np.float32, f"record {name} is {record.global_(name).dtype}"
        for name in record.layer_stats():
            assert record.layer(name).dtype == np.float32, f"record {name} is {record.layer(name).dtype}"
        assert record.steps.dtype == np.int64 and record.epochs.dtype == np.int64
        for block in hooks.monitor.blocks:  # the monitor's own work buffers
            assert block.snap.dtype == block.scratch.dtype == np.float32, block.name
        assert len(record) > 0


def bench(name: str, data, hidden, batch_size: int, epochs_per_round: int, rounds: int) -> dict:
    configs: dict[str, tuple[Trainer, list]] = {"plain": make_trainer(data, hidden, batch_size, None)}
    for every in CADENCES:
        configs[f"every={every}"] = make_trainer(data, hidden, batch_size, every)
    for trainer, _ in configs.values():  # warm-up: caches, BLAS threads, first-touch allocations
        time_epochs(trainer, 1)
    times: dict[str, list[float]] = {key: [] for key in configs}
    order = list(configs)
    for r in range(rounds):
        for key in order if r % 2 == 0 else reversed(order):
            times[key].append(time_epochs(configs[key][0], epochs_per_round))
    for trainer, hooks in configs.values():
        check_dtypes(trainer, hooks)
    plain = times["plain"]
    steps = configs["plain"][0].steps_per_epoch * epochs_per_round
    rows = {}
    for key, values in times.items():
        ratios = [v / p for v, p in zip(values, plain)]
        rows[key] = {
            "median_s": statistics.median(values),
            "ms_per_step": 1e3 * statistics.median(values) / steps,
            "overhead": statistics.median(ratios),
            "overhead_of_medians": statistics.median(values) / statistics.median(plain),
        }
    return {"workload": name, "hidden": list(hidden), "batch_size": batch_size, "steps_per_round": steps,
            "rounds": rounds, "target": TARGETS[name], "results": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wide-rounds", type=int, default=15, help="interleaved rounds (one epoch each), wide MLP")
    parser.add_argument("--digits-rounds", type=int, default=300, help="interleaved rounds (one epoch each), digits")
    parser.add_argument("--mnist", type=Path, default=ROOT.parent / "shared" / "data" / "mnist")
    parser.add_argument("--mnist-images", type=int, default=10_000)
    parser.add_argument("--threads", type=int, default=None,
                        help="BLAS threads (default: the library's own choice)")
    args = parser.parse_args()

    wide, digits = mnist_data(args.mnist, args.mnist_images), digits_data()  # scikit-learn loads its own BLAS
    if args.threads is not None:
        from threadpoolctl import threadpool_limits

        threadpool_limits(args.threads)
    reports = [
        bench("wide_mnist", wide, (512, 512), 128, 1, args.wide_rounds),
        bench("digits", digits, (128, 64), 32, 1, args.digits_rounds),
    ]
    print(f"{'workload':<12} {'config':<10} {'ms/step':>9} {'overhead':>9} {'target':>7}")
    ok = True
    for report in reports:
        for key, row in report["results"].items():
            target = report["target"]
            within = key == "plain" or row["overhead"] <= target
            ok &= within
            mark = "" if key == "plain" else ("ok" if within else "OVER")
            print(f"{report['workload']:<12} {key:<10} {row['ms_per_step']:>9.3f} {row['overhead']:>8.3f}x {mark:>7}")
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    name = "monitor_overhead.json" if args.threads is None else f"monitor_overhead_threads{args.threads}.json"
    from threadpoolctl import threadpool_info

    blas = [{k: pool.get(k) for k in ("internal_api", "num_threads")} for pool in threadpool_info()]
    meta = {"python": platform.python_version(), "numpy": np.__version__, "cpus": os.cpu_count(), "blas": blas,
            "load_average_at_end": os.getloadavg(),
            "machine": platform.machine(), "command": " ".join([Path(sys.executable).name, *sys.argv])}
    (out / name).write_text(json.dumps({"meta": meta, "workloads": reports, "all_within_target": ok}, indent=2))
    print(f"BLAS: {blas}; load average {os.getloadavg()}")
    print(f"written {out / name}; all within target: {ok}")


if __name__ == "__main__":
    main()
