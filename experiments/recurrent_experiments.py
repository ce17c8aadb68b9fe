"""The classic experiments on recurrent networks (experiments/README.md, "Recurrent networks"): every arm
a spec file in this folder, run at a few sequence lengths and seeds, diagnosed, tabulated and drawn.

1. pascanu: Pascanu, Mikolov & Bengio (2013): a tanh rnn on the temporal order problem, with and without
   gradient-norm clipping at 1 (pascanu_temporal_order[_clipped].toml), lengths 20, 50, 100.
2. hochreiter: Hochreiter & Schmidhuber (1997): lstm against a tanh rnn on the adding problem
   (hochreiter_adding_{lstm,rnn}.toml), lengths 10, 50, 100.
3. le: Le, Jaitly & Hinton (2015): a relu rnn with identity recurrent init (IRNN) against a tanh rnn
   on the adding problem (le_adding_{irnn,tanh}.toml), lengths 30, 60.
4. saxe: Saxe et al. (2014): orthogonal against Gaussian recurrent init (saxe_{orthogonal,normal}.toml):
   the horizon after training (saxe) and at initialization over 5 seeds at T = 50 and 200 (saxe_init:
   one epoch at lr 1e-12, so the horizon is a median over many batches of the initial weights).

    .venv/bin/python experiments/recurrent_experiments.py                      # all four, 2 worker processes
    .venv/bin/python experiments/recurrent_experiments.py --only pascanu,saxe --workers 1
    .venv/bin/python experiments/recurrent_experiments.py --quick              # one seed, shorter runs

Each arm runs as `build_run(load_spec(file, overrides))`, then `diagnose_record`; one BLAS thread
per worker. The numbers go to benchmarks/results/recurrent_experiments-<time>.json (gitignored), the
tables to stdout, the figures to experiments/figures/recurrent_*.png.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # small matrices: one thread per worker process
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from concurrent.futures import ProcessPoolExecutor  # noqa: E402
from datetime import datetime, timezone  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
FIGURES = HERE / "figures"
RESULTS = REPO / "benchmarks" / "results"
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

RECORDS = RESULTS / "recurrent_records"  # each arm's statistics record, to diagnose again without training
MAX_POINTS = 1500  # per series kept in the results
MAX_ROWS = 300  # of a heat map


# -- the arms ---------------------------------------------------------------------------------------------------
def jobs(only: set[str], quick: bool, seeds: int | None) -> list[dict]:
    """Every (experiment, arm, length, seed) to run, with its spec file and overrides."""
    out = []

    def add(experiment, arm, spec, lengths, n_seeds, epochs):
        for T in lengths:
            for seed in range(seeds or n_seeds):
                e = epochs(T) if callable(epochs) else epochs
                out.append({"experiment": experiment, "arm": arm, "spec": spec, "T": T, "seed": seed,
                            "overrides": [f"data.sequence_length={T}", f"seed={seed}",
                                          f"training.epochs={max(1, e // 3) if quick else e}"]})

    n = 1 if quick else 3
    if "pascanu" in only:
        epochs = {20: 10, 50: 30, 100: 15}
        for arm, spec in (("no clipping", "pascanu_temporal_order"), ("clipping at 1", "pascanu_temporal_order_clipped")):
            add("pascanu", arm, spec, (20, 50, 100), n, lambda T: epochs[T])
    if "hochreiter" in only:
        epochs = {10: 10, 50: 20, 100: 20}
        for arm, spec in (("lstm", "hochreiter_adding_lstm"), ("tanh rnn", "hochreiter_adding_rnn")):
            add("hochreiter", arm, spec, (10, 50, 100), 1 if quick else 2, lambda T: epochs[T])
    if "le" in only:
        for arm, spec in (("irnn", "le_adding_irnn"), ("tanh rnn", "le_adding_tanh")):
            add("le", arm, spec, (30, 60), 1 if quick else 2, 20)
    if "saxe" in only:
        for arm, spec in (("orthogonal", "saxe_orthogonal"), ("normal", "saxe_normal")):
            add("saxe", arm, spec, (50,), n, 10)
    if "saxe_init" in only:  # the gradient through time at initialization: one epoch at lr 1e-12, many batches
        for arm, spec in (("orthogonal", "saxe_orthogonal"), ("normal", "saxe_normal")):
            for T in (50, 200):
                for seed in range(seeds or (2 if quick else 5)):
                    out.append({"experiment": "saxe_init", "arm": arm, "spec": spec, "T": T, "seed": seed,
                                "overrides": [f"data.sequence_length={T}", f"seed={seed}", "optimizer.lr=1e-12",
                                              "training.epochs=1", "data.n_samples=500"]})
    return out


def thin(values: np.ndarray, limit: int = MAX_POINTS) -> list:
    values = np.asarray(values, dtype=float)
    step = max(1, -(-len(values) // limit))
    return np.round(values[::step], 6).tolist()


def record_path(job: dict) -> Path:
    arm = job["arm"].replace(" ", "-")
    return RECORDS / f"{job['experiment']}-{arm}-T{job['T']}-seed{job['seed']}.npz"


def run_arm(job: dict) -> dict:
    """Train one arm, save its record, diagnose it, and keep what the tables and figures need (plain lists)."""
    from workbench.runner import build_run
    from workbench.spec import load_spec

    spec = load_spec(HERE / f"{job['spec']}.toml", job["overrides"])
    start = time.perf_counter()
    run = build_run(spec)
    result = run.trainer.fit()
    seconds = time.perf_counter() - start
    RECORDS.mkdir(parents=True, exist_ok=True)
    run.record.save(record_path(job))
    trained = {"seconds": seconds, "status": result.status, "epochs": result.epochs_run, "updates": result.steps,
               "metrics": result.metrics, "history": result.history, "task": run.data.task,
               "steps_per_sequence": int(run.data.input_shape[0])}
    return summarize(job, spec, run.record, trained)


def summarize(job: dict, spec, record, trained: dict) -> dict:
    """The diagnosis of an arm's record and what the tables and figures read (also for --rediagnose)."""
    from workbench.data.sequences import baseline
    from workbench.diagnose import diagnose_record
    from workbench.diagnose.figure import time_ratio_grid
    from workbench.diagnose.time_rules import episodes

    diagnosis = diagnose_record(record, spec=spec)
    layer = next(name for name in record.layers if name != record.layers[-1])
    base = baseline(spec.data.source, spec.data.sequence_length)
    metrics = trained["metrics"]
    if trained["task"] == "classification":
        score, error = metrics.get("test/accuracy", float("nan")), 1.0 - metrics.get("test/accuracy", float("nan"))
        solved = error < 0.01
    else:
        score, error = metrics.get("test/loss", float("nan")), metrics.get("test/loss", float("nan"))
        solved = error < 0.01 * base["loss"] * 6  # MSE under 0.01 (6% of the baseline's 0.167)
    grid = time_ratio_grid(record, layer)
    heat = None
    if grid is not None:
        edges, logs = grid
        stride = max(1, -(-len(logs) // MAX_ROWS))
        heat = {"edges": edges.tolist(), "steps": record.steps[::stride].tolist(),
                "log_ratio": np.round(np.nan_to_num(logs[::stride], nan=-99.0), 3).tolist()}
    series = {name: thin(record.global_(name)) for name in ("loss", "grad_norm_global", "clipped")}
    series["step"] = thin(record.steps)
    for stat in ("recurrent_sv", "time_grad_ratio", "time_horizon", "recurrent_grad_norm"):
        series[stat] = thin(record.series(stat, layer))
    horizon = np.asarray(record.series("time_horizon", layer), dtype=float)
    ratio = np.asarray(record.series("time_grad_ratio", layer), dtype=float)
    tail = slice(max(0, len(record) - 40), len(record))
    return {
        "horizon_median": float(np.nanmedian(horizon)), "ratio_median": float(np.nanmedian(ratio)),
        **{k: job[k] for k in ("experiment", "arm", "spec", "T", "seed", "overrides")}, **trained,
        "baseline": base, "score": score, "error": error, "solved": bool(solved),
        "verdict": diagnosis.verdict, "verdicts": diagnosis.verdicts,
        "findings": [{"verdict": f.verdict, "summary": f.summary, "layers": f.layers, "first_step": f.first_step}
                     for f in diagnosis.findings],
        "horizon_start": float(horizon[0]), "horizon_end": float(np.nanmedian(horizon[tail])),
        "ratio_start": float(ratio[0]), "ratio_end": float(np.nanmedian(ratio[tail])),
        "sv_start": float(record.series("recurrent_sv", layer)[0]),
        "sv_end": float(np.nanmedian(record.series("recurrent_sv", layer)[tail])),
        "episodes": episodes(record), "series": series, "heat": heat,
    }


# -- tables -----------------------------------------------------------------------------------------------------
def table(headers: list[str], rows: list[list]) -> str:
    cells = [[str(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    line = lambda values: "| " + " | ".join(v.ljust(w) for v, w in zip(values, widths)) + " |"  # noqa: E731
    return "\n".join([line(headers), "| " + " | ".join("-" * w for w in widths) + " |", *map(line, cells)])


def fmt(x: float, digits: int = 3) -> str:
    return "nan" if x is None or not np.isfinite(x) else f"{x:.{digits}g}"


def grouped(results: list[dict], experiment: str) -> dict[tuple[str, int], list[dict]]:
    out: dict[tuple[str, int], list[dict]] = {}
    for r in results:
        if r["experiment"] == experiment:
            out.setdefault((r["arm"], r["T"]), []).append(r)
    return out


def summary_table(results: list[dict], experiment: str, classification: bool) -> str:
    rows = []
    for (arm, T), runs in sorted(grouped(results, experiment).items(), key=lambda kv: (kv[0][1], kv[0][0])):
        runs = sorted(runs, key=lambda r: r["seed"])
        scores = " ".join(fmt(100 * r["score"] if classification else r["score"]) for r in runs)
        verdicts = "; ".join(" + ".join(r["verdicts"]) or "healthy" for r in runs)
        episodes = " ".join(str(len(r["episodes"])) for r in runs)
        horizon = " ".join(f"{fmt(r['horizon_start'])}->{fmt(r['horizon_end'])}" for r in runs)
        rows.append([arm, T, f"{sum(r['solved'] for r in runs)}/{len(runs)}", scores, fmt(runs[0]["baseline"]["loss"]),
                     horizon, episodes, verdicts, f"{sum(r['seconds'] for r in runs):.0f}"])
    what = "test accuracy % per seed" if classification else "test MSE per seed"
    return table(["arm", "T", "solved", what, "baseline loss", "horizon start->end", "episodes", "verdicts",
                  "seconds"], rows)


def init_table(results: list[dict]) -> str:
    """saxe_init: the horizon and the time ratio at initialization (medians over an epoch of batches), per seed."""
    rows = []
    for (arm, T), runs in sorted(grouped(results, "saxe_init").items(), key=lambda kv: (kv[0][1], kv[0][0])):
        runs = sorted(runs, key=lambda r: r["seed"])
        horizons = [r["horizon_median"] for r in runs]
        rows.append([arm, T, " ".join(fmt(h) for h in horizons), f"{fmt(min(horizons))}-{fmt(max(horizons))}",
                     " ".join(fmt(r["ratio_median"], 2) for r in runs), " ".join(fmt(r["sv_start"]) for r in runs)])
    return table(["arm", "T", "horizon at init per seed (steps)", "range", "time ratio (first / last step) per seed",
                  "largest singular value per seed"], rows)


# -- figures ----------------------------------------------------------------------------------------------------
def _figure(rows: int, cols: int, height: float = 3.6):
    from matplotlib.figure import Figure

    return Figure(figsize=(5.2 * cols, height * rows), dpi=100, layout="constrained")


def _heat(ax, run: dict, title: str) -> None:
    from matplotlib.colors import TwoSlopeNorm

    heat = run.get("heat")
    ax.set_title(title, fontsize=9)
    if not heat:
        return
    logs = np.asarray(heat["log_ratio"], dtype=float)
    logs = np.where(logs == -99.0, np.nan, logs)
    steps = np.asarray(heat["steps"], dtype=float)
    x = np.concatenate([steps, [steps[-1] + (steps[-1] - steps[-2] if len(steps) > 1 else 1)]])
    y = np.asarray(heat["edges"], dtype=float) + 0.5
    mesh = ax.pcolormesh(x, y, np.ma.masked_invalid(logs.T), cmap="PuOr_r", norm=TwoSlopeNorm(0.0, -6, 6),
                         shading="flat", rasterized=True)
    ax.set_ylim(y[-1], y[0])
    ax.set_xlabel("training step")
    ax.set_ylabel("time step t")
    ax.figure.colorbar(mesh, ax=ax, fraction=0.05, pad=0.01).set_label("log10 ||dL/dh_t|| / ||dL/dh_T||", fontsize=7)


def figure_pascanu(results: list[dict], path: Path) -> None:
    groups = grouped(results, "pascanu")
    fig = _figure(2, 3)
    axes = fig.subplots(2, 3)
    lengths = sorted({T for _, T in groups})
    for k, arm in enumerate(("no clipping", "clipping at 1")):
        for i, T in enumerate(lengths):
            runs = groups.get((arm, T), [])
            acc = [100 * r["score"] for r in runs]
            axes[0, 0].scatter(np.full(len(acc), i + (k - 0.5) * 0.2), acc, color=("#d62728", "#1f77b4")[k],
                               label=arm if i == 0 else None, s=18)
    axes[0, 0].axhline(99, color="gray", linestyle="--", linewidth=0.8, label="success: < 1% errors")
    axes[0, 0].axhline(25, color="black", linestyle=":", linewidth=0.8, label="chance 25%")
    axes[0, 0].set_xticks(range(len(lengths)), [str(T) for T in lengths])
    axes[0, 0].set_xlabel("sequence length T")
    axes[0, 0].set_ylabel("test accuracy (%)")
    axes[0, 0].set_title("temporal order, tanh rnn: fresh test sequences", fontsize=9)
    axes[0, 0].legend(fontsize=7)
    T = 50 if 50 in lengths else lengths[-1]
    for k, arm in enumerate(("no clipping", "clipping at 1")):
        runs = groups.get((arm, T), [])
        if not runs:
            continue
        run = min(runs, key=lambda r: r["seed"])
        s = run["series"]
        color = ("#d62728", "#1f77b4")[k]
        axes[0, 1].plot(s["step"], s["grad_norm_global"], color=color, linewidth=0.5, alpha=0.8, label=arm)
        for e in run["episodes"]:
            axes[0, 1].axvline(e["step"], color=color, linewidth=0.6, linestyle=":")
        axes[0, 2].plot(s["step"], s["recurrent_sv"], color=color, label=arm)
        axes[1, 0].plot(s["step"], s["loss"], color=color, linewidth=0.5, alpha=0.8, label=arm)
        _heat(axes[1, 1 + k], run, f"gradient through time, {arm}, T = {T} (seed {run['seed']})")
    axes[0, 1].set_yscale("log")
    axes[0, 1].set_title(f"global gradient norm before clipping, T = {T} (dotted: unclipped episodes)", fontsize=9)
    axes[0, 1].set_xlabel("training step")
    axes[0, 1].legend(fontsize=7)
    axes[0, 2].axhline(1.0, color="gray", linestyle="--", linewidth=0.8, label="1/gamma = 1 (tanh)")
    axes[0, 2].set_title(f"largest singular value of U, T = {T}", fontsize=9)
    axes[0, 2].set_xlabel("training step")
    axes[0, 2].legend(fontsize=7)
    axes[1, 0].set_title(f"batch loss, T = {T}", fontsize=9)
    axes[1, 0].set_xlabel("training step")
    axes[1, 0].axhline(np.log(4), color="black", linestyle=":", linewidth=0.8)
    axes[1, 0].legend(fontsize=7)
    fig.suptitle("Pascanu, Mikolov & Bengio (2013): exploding gradients and clipping in a tanh RNN", fontsize=11)
    fig.savefig(path)


def figure_pair(results: list[dict], experiment: str, arms: tuple[str, str], title: str, path: Path) -> None:
    """Test MSE against length for two arms, their loss curves at the longest length, and their heat maps."""
    groups = grouped(results, experiment)
    lengths = sorted({T for _, T in groups})
    fig = _figure(2, 2, 3.8)
    axes = fig.subplots(2, 2)
    colors = ("#1f77b4", "#d62728")
    for k, arm in enumerate(arms):
        for i, T in enumerate(lengths):
            runs = groups.get((arm, T), [])
            axes[0, 0].scatter(np.full(len(runs), i + (k - 0.5) * 0.15), [r["score"] for r in runs], color=colors[k],
                               s=18, label=arm if i == 0 else None)
    base = next(iter(groups.values()))[0]["baseline"]["loss"]
    axes[0, 0].axhline(base, color="black", linestyle=":", linewidth=0.8, label=f"predict the mean: {base:.3f}")
    axes[0, 0].set_yscale("log")
    axes[0, 0].set_xticks(range(len(lengths)), [str(T) for T in lengths])
    axes[0, 0].set_xlabel("sequence length T")
    axes[0, 0].set_ylabel("test MSE")
    axes[0, 0].legend(fontsize=7)
    axes[0, 0].set_title("adding problem: test MSE on fresh sequences", fontsize=9)
    T = lengths[-1]
    for k, arm in enumerate(arms):
        runs = groups.get((arm, T), [])
        if not runs:
            continue
        run = min(runs, key=lambda r: r["seed"])
        axes[0, 1].plot(range(1, len(run["history"]["val/loss"]) + 1), run["history"]["val/loss"], color=colors[k],
                        marker="o", markersize=3, label=arm)
        _heat(axes[1, k], run, f"gradient through time, {arm}, T = {T} (seed {run['seed']}): {run['verdict']}")
    axes[0, 1].axhline(base, color="black", linestyle=":", linewidth=0.8)
    axes[0, 1].set_yscale("log")
    axes[0, 1].set_title(f"validation MSE by epoch, T = {T}", fontsize=9)
    axes[0, 1].set_xlabel("epoch")
    axes[0, 1].legend(fontsize=7)
    fig.suptitle(title, fontsize=11)
    fig.savefig(path)


def figure_saxe(results: list[dict], path: Path) -> None:
    groups = grouped(results, "saxe")
    fig = _figure(1, 4)
    axes = fig.subplots(1, 4)
    colors = {"orthogonal": "#1f77b4", "normal": "#d62728"}
    init = grouped(results, "saxe_init")
    lengths = sorted({T for _, T in init})
    for (arm, T), runs in init.items():
        i = lengths.index(T)
        k = 0 if arm == "orthogonal" else 1
        horizons = [r["horizon_median"] / (T - 1) for r in runs]
        axes[3].scatter(np.full(len(horizons), i + (k - 0.5) * 0.2), horizons, color=colors[arm], s=20,
                        label=arm if i == 0 else None)
    axes[3].set_xticks(range(len(lengths)), [f"T = {T}" for T in lengths])
    axes[3].set_ylabel("horizon / (T - 1)")
    axes[3].set_title("at initialization, one dot per seed (median over an epoch of batches)", fontsize=9)
    axes = axes[:3]
    for (arm, T), runs in groups.items():
        for r in sorted(runs, key=lambda r: r["seed"]):
            s = r["series"]
            axes[0].plot(s["step"], s["time_horizon"], color=colors[arm], linewidth=0.7,
                         label=arm if r["seed"] == 0 else None)
            axes[1].plot(s["step"], s["recurrent_sv"], color=colors[arm], linewidth=0.7,
                         label=arm if r["seed"] == 0 else None)
            if r["seed"] == 0 and r.get("heat"):
                heat = r["heat"]
                profile = np.asarray(heat["log_ratio"][0], dtype=float)
                end = np.asarray(heat["log_ratio"][-1], dtype=float)
                t = np.asarray(heat["edges"][1:], dtype=float)
                axes[2].plot(t, np.where(profile == -99, np.nan, profile), color=colors[arm], label=f"{arm}, step 0")
                axes[2].plot(t, np.where(end == -99, np.nan, end), color=colors[arm], linestyle="--",
                             label=f"{arm}, end")
    axes[0].set_title("horizon: steps back keeping a tenth of ||dL/dh_T||", fontsize=9)
    axes[0].set_xlabel("training step")
    axes[1].set_title("largest singular value of U", fontsize=9)
    axes[1].set_xlabel("training step")
    axes[2].set_title("log10 ||dL/dh_t|| / ||dL/dh_T|| by time step", fontsize=9)
    axes[2].set_xlabel("time step t")
    for ax in (*axes, fig.axes[3]):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.suptitle("Saxe et al. (2014): orthogonal against Gaussian recurrent initialization (tanh rnn, adding)",
                 fontsize=11)
    fig.savefig(path)


def rediagnose(path: Path, only: set[str]) -> list[dict]:
    """The results of a previous run, each arm diagnosed again from its saved record (no training)."""
    from workbench.monitor import load_record
    from workbench.spec import load_spec

    previous = json.loads(path.read_text())["results"]
    out = []
    for old in previous:
        if old["experiment"] not in only:
            continue
        spec = load_spec(HERE / f"{old['spec']}.toml", old["overrides"])
        keys = ("seconds", "status", "epochs", "updates", "metrics", "history", "steps_per_sequence")
        trained = {k: old[k] for k in keys}
        trained["task"] = "classification" if spec.training.loss == "cross_entropy" else "regression"
        out.append(summarize(old, spec, load_record(record_path(old)), trained))
    return out


# -- main -------------------------------------------------------------------------------------------------------
EXPERIMENTS = ("pascanu", "hochreiter", "le", "saxe", "saxe_init")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", default=",".join(EXPERIMENTS), help=f"comma list of {', '.join(EXPERIMENTS)}")
    p.add_argument("--workers", type=int, default=2, help="processes (each with one BLAS thread)")
    p.add_argument("--seeds", type=int, default=None, help="seeds per arm and length (default: per experiment)")
    p.add_argument("--quick", action="store_true", help="one seed, a third of the epochs (a smoke run)")
    p.add_argument("--no-figures", action="store_true")
    p.add_argument("--rediagnose", metavar="RESULTS.json", default=None,
                   help="no training: diagnose again the records a previous run saved, and redo its tables and figures")
    args = p.parse_args(argv)
    only = {name.strip() for name in args.only.split(",") if name.strip()}
    unknown = only - set(EXPERIMENTS)
    if unknown:
        p.error(f"unknown experiment(s) {', '.join(sorted(unknown))}; choose from {', '.join(EXPERIMENTS)}")
    start = time.perf_counter()
    if args.rediagnose:
        results = rediagnose(Path(args.rediagnose), only)
    else:
        todo = jobs(only, args.quick, args.seeds)
        todo.sort(key=lambda j: -j["T"])  # the longest first, so the workers finish together
        results = []
        with ProcessPoolExecutor(max_workers=max(1, args.workers)) as pool:
            for result in pool.map(run_arm, todo):
                results.append(result)
                print(f"  {result['experiment']} {result['arm']} T={result['T']} seed {result['seed']}: "
                      f"score {fmt(result['score'])}, verdict {result['verdict']}, {result['seconds']:.0f} s",
                      file=sys.stderr, flush=True)
    wall = time.perf_counter() - start
    print(f"# Recurrent experiments ({len(results)} runs, {wall:.0f} s wall, {args.workers} workers)\n")
    for name, classification in (("pascanu", True), ("hochreiter", False), ("le", False), ("saxe", False)):
        if name in only:
            print(f"## {name}\n\n{summary_table(results, name, classification)}\n")
    if "saxe_init" in only:
        print(f"## saxe_init\n\n{init_table(results)}\n")
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    out = RESULTS / f"recurrent_experiments-{stamp}.json"
    out.write_text(json.dumps({"wall_seconds": wall, "workers": args.workers, "quick": args.quick,
                               "results": results}, default=float) + "\n")
    print(f"saved {out}")
    if not args.no_figures:
        FIGURES.mkdir(exist_ok=True)
        if "pascanu" in only:
            figure_pascanu(results, FIGURES / "recurrent_pascanu.png")
        if "hochreiter" in only:
            figure_pair(results, "hochreiter", ("lstm", "tanh rnn"),
                        "Hochreiter & Schmidhuber (1997): LSTM against a tanh RNN on the adding problem",
                        FIGURES / "recurrent_hochreiter.png")
        if "le" in only:
            figure_pair(results, "le", ("irnn", "tanh rnn"),
                        "Le, Jaitly & Hinton (2015): IRNN against a tanh RNN on the adding problem",
                        FIGURES / "recurrent_le.png")
        if "saxe" in only or "saxe_init" in only:
            figure_saxe(results, FIGURES / "recurrent_saxe.png")
        print(f"figures in {FIGURES}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
