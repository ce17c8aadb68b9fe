"""Digits accuracy: the default experiment against scikit-learn's MLPClassifier, seeds 0-4.

workbench: experiments/digits_mlp.toml through `load_spec(path, [*--set, "seed=S"])`,
`build_run(spec)` and `trainer.fit()` (the spec's monitoring and early stopping, no
MLflow); the figure is the run's test accuracy.

scikit-learn, the same protocol: the 8x8 digits, a 25% stratified test split with
`random_state=S` (the very test set workbench's loader draws for seed S: checked),
StandardScaler fitted on the training part, MLPClassifier(hidden_layer_sizes=(128, 64),
random_state=S, max_iter=2000), every other setting its default.

Target (the issue): our mean >= 0.977 and above scikit-learn's mean.

    .venv/bin/python benchmarks/digits_accuracy.py
    .venv/bin/python benchmarks/digits_accuracy.py --set model.dropout=0.1 --set training.batch_size=64
    .venv/bin/python benchmarks/digits_accuracy.py --search     # + the built-in spec variations
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings

import _common  # noqa: F401  (puts the repository root on sys.path)
import numpy as np
from _common import REPO_ROOT, markdown_table, save_results

from workbench.runner import build_run
from workbench.spec import load_spec

TARGET_MEAN = 0.977
DEFAULT_SPEC = REPO_ROOT / "experiments" / "digits_mlp.toml"

# --search: variations of the spec tried on the same five seeds (each a list of --set overrides)
VARIATIONS: list[list[str]] = [
    [],
    ["model.dropout=0.1"],
    ["model.dropout=0.3"],
    ["optimizer.weight_decay=1e-4"],
    ["optimizer.name=adamw", "optimizer.weight_decay=1e-2"],
    ["training.batch_size=64"],
    ["training.batch_size=16"],
    ["early_stopping.patience=30"],
    ["early_stopping.patience=30", "training.epochs=200"],
    ["model.hidden=[512, 256]"],
    ["model.hidden=[512, 256]", "model.dropout=0.3"],
    ["data.val_fraction=0.1"],
    ["optimizer.lr=3e-4", "early_stopping.patience=30", "training.epochs=200"],
    ["optimizer.schedule=cosine", "early_stopping.enabled=false", "training.epochs=60"],
]


def parse_seeds(text: str) -> list[int]:
    seeds: list[int] = []
    for part in text.split(","):
        if "-" in part:
            lo, hi = part.split("-")
            seeds += list(range(int(lo), int(hi) + 1))
        elif part.strip():
            seeds.append(int(part))
    return seeds


def run_workbench(spec_path, overrides: list[str], seed: int) -> dict:
    spec = load_spec(spec_path, [*overrides, f"seed={seed}"])
    run = build_run(spec)
    start = time.perf_counter()
    result = run.trainer.fit()
    if "test/accuracy" not in result.metrics:
        raise RuntimeError(f"seed {seed}: run ended {result.status} ({result.reason}) without a test accuracy")
    return {
        "seed": seed, "accuracy": result.metrics["test/accuracy"], "status": result.status, "reason": result.reason,
        "epochs": result.epochs_run, "seconds": time.perf_counter() - start,
        "y_test": run.data.y_test, "n_train": len(run.data.X_train), "n_val": len(run.data.X_val),
    }


def run_sklearn(seed: int) -> dict:
    from sklearn.datasets import load_digits
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import train_test_split
    from sklearn.neural_network import MLPClassifier
    from sklearn.preprocessing import StandardScaler

    X, y = load_digits(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, random_state=seed, stratify=y)
    scaler = StandardScaler().fit(X_train)
    clf = MLPClassifier(hidden_layer_sizes=(128, 64), max_iter=2000, random_state=seed)
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        clf.fit(scaler.transform(X_train), y_train)
    converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    return {
        "seed": seed, "accuracy": float(clf.score(scaler.transform(X_test), y_test)), "epochs": int(clf.n_iter_),
        "converged": converged, "seconds": time.perf_counter() - start, "y_test": y_test,
    }


def summary(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values), "std": statistics.pstdev(values), "min": min(values), "max": max(values)}


def evaluate(spec_path, overrides: list[str], seeds: list[int], label: str) -> dict:
    runs = []
    for seed in seeds:
        r = run_workbench(spec_path, overrides, seed)
        runs.append(r)
        print(f"  [{label}] seed {seed}: test accuracy {r['accuracy']:.4f} ({r['epochs']} epochs, {r['seconds']:.1f} s)",
              flush=True)
    return {"overrides": overrides, "runs": runs, **summary([r["accuracy"] for r in runs])}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--spec", default=str(DEFAULT_SPEC), help="spec file (default: experiments/digits_mlp.toml)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="spec override, as the CLI's --set (repeatable)")
    p.add_argument("--seeds", default="0-4", help="seeds, e.g. 0-4 or 0,3,7 (default 0-4)")
    p.add_argument("--threads", type=int, default=1,
                   help="BLAS threads (default 1: these matrices are tiny, and threads only add overhead and noise)")
    p.add_argument("--no-sklearn", action="store_true", help="leave scikit-learn out")
    p.add_argument("--search", action="store_true", help="also try the built-in spec variations on the same seeds")
    p.add_argument("--json", default=None, help="results file (default: benchmarks/results/digits_accuracy-<time>.json)")
    args = p.parse_args(argv)
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=args.threads, user_api="blas")
    seeds = parse_seeds(args.seeds)
    print(f"spec {args.spec} {' '.join('--set ' + o for o in args.overrides)}; seeds {seeds}", flush=True)
    ours = evaluate(args.spec, args.overrides, seeds, "workbench")

    sk = None
    if not args.no_sklearn:
        sk_runs = []
        for seed in seeds:
            r = run_sklearn(seed)
            sk_runs.append(r)
            print(f"  [scikit-learn] seed {seed}: test accuracy {r['accuracy']:.4f} ({r['epochs']} epochs)", flush=True)
        sk = {"runs": sk_runs, **summary([r["accuracy"] for r in sk_runs])}
        for a, b in zip(ours["runs"], sk_runs):  # the same protocol means the same test set
            if not np.array_equal(a["y_test"], b["y_test"]):
                print(f"error: seed {a['seed']}: workbench's test split differs from train_test_split's", file=sys.stderr)
                return 1

    headers = ["seed", "workbench test acc", "epochs (early stop)"] + ([] if sk is None else ["sklearn test acc", "sklearn epochs"])
    rows = []
    for i, r in enumerate(ours["runs"]):
        row = [str(r["seed"]), f"{r['accuracy']:.4f}", str(r["epochs"])]
        if sk is not None:
            s = sk["runs"][i]
            row += [f"{s['accuracy']:.4f}", str(s["epochs"]) + ("" if s["converged"] else " (not converged)")]
        rows.append(row)
    row = ["mean", f"{ours['mean']:.4f} (sd {ours['std']:.4f})", ""]
    if sk is not None:
        row += [f"{sk['mean']:.4f} (sd {sk['std']:.4f})", ""]
    rows.append(row)
    table = markdown_table(headers, rows)

    met_mean = ours["mean"] >= TARGET_MEAN
    met_sk = sk is None or ours["mean"] > sk["mean"]
    n_test = len(ours["runs"][0]["y_test"])
    print(f"\ndigits, {n_test} test images per seed; workbench: {args.spec} "
          f"{' '.join('--set ' + o for o in args.overrides)} (train {ours['runs'][0]['n_train']}, "
          f"val {ours['runs'][0]['n_val']} for early stopping); sklearn: MLPClassifier(128, 64), train on all "
          f"{ours['runs'][0]['n_train'] + ours['runs'][0]['n_val']}\n")
    print(table)
    print(f"\ntarget mean >= {TARGET_MEAN}: {'met' if met_mean else 'MISSED'} ({ours['mean']:.4f}); "
          + ("" if sk is None else f"beat scikit-learn: {'met' if met_sk else 'MISSED'} ({ours['mean']:.4f} vs {sk['mean']:.4f})"))

    search = None
    if args.search:
        search = []
        for overrides in VARIATIONS:
            full = [*args.overrides, *overrides]
            label = " ".join(overrides) or "as the spec"
            search.append(evaluate(args.spec, full, seeds, label) if overrides else {**ours, "overrides": full})
        search_rows = [[" ".join(f"--set {o}" for o in s["overrides"]) or "(the spec as it is)",
                        " ".join(f"{r['accuracy']:.4f}" for r in s["runs"]), f"{s['mean']:.4f}", f"{s['std']:.4f}",
                        f"{s['min']:.4f}", f"{statistics.fmean(r['epochs'] for r in s['runs']):.0f}"]
                       for s in sorted(search, key=lambda s: -s["mean"])]
        print("\nSpec variations, same seeds (best first):\n")
        print(markdown_table(["overrides", "test accuracies (seeds in order)", "mean", "sd", "min", "mean epochs"],
                             search_rows))

    for block in [ours, sk, *(search or [])]:
        for r in (block or {}).get("runs", []):
            r.pop("y_test", None)
    path = save_results("digits_accuracy", {
        "machine": _common.machine_facts(), "spec": str(args.spec), "overrides": args.overrides, "seeds": seeds,
        "threads": args.threads, "workbench": ours, "sklearn": sk, "target_mean": TARGET_MEAN,
        "met": {"mean": met_mean, "beat_sklearn": met_sk}, "search": search, "table": table,
    }, args.json)
    print(f"\nresults: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
