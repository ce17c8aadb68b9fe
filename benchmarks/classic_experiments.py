"""Classic experiments of the backprop literature, reproduced CPU-sized from the specs in experiments/.

    .venv/bin/python benchmarks/classic_experiments.py                  # all five: ~6.5 minutes on 2 shared cores
    .venv/bin/python benchmarks/classic_experiments.py --only glorot    # one (or a comma list)
    .venv/bin/python benchmarks/classic_experiments.py --only he,dying --run-plots

1. glorot     Glorot & Bengio (2010): the back-propagated gradient ||dL/ds_i|| shrinks by
              sqrt(1/3) per layer toward the input under standard init U[-1/sqrt(n), 1/sqrt(n)],
              stays flat under normalized (Xavier) init; weight gradients stay level in both; the
              top sigmoid layer saturates; their Table 1 (test error on MNIST), CPU-sized.
2. he         He et al. (2015): 30 ReLU layers, Xavier vs He init; Xavier halves the variance per layer.
3. ioffe      Ioffe & Szegedy (2015): 3x100 sigmoid MLP on MNIST with and without batch norm.
4. exploding  A deep ReLU net initialized above He diverges; diagnose suggests a clipping threshold,
              and the same spec clipped at it trains.
5. dying      A large Adam learning rate kills whole ReLU layers.

Each arm is a spec in experiments/ (`workbench run experiments/<arm>.toml` runs it alone). The
script builds each run with `build_run(load_spec(...))`, trains it, reads the statistics record,
and asks `workbench.diagnose.diagnose_record` for a verdict. It prints markdown tables, saves all
numbers as JSON under benchmarks/results/ (gitignored) and the figures to experiments/figures/.

"Init probes": the profile at initialization is measured on many batches, not one, by running the
same spec (same seed, hence the same initial weights) with lr 1e-12 for one short epoch, so the
weights do not move while the monitor records every step.
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # small GEMMs: one thread is faster on a shared 2-core machine

import argparse  # noqa: E402
import contextlib  # noqa: E402
import math  # noqa: E402
import re  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import _common  # noqa: E402, F401  (puts the repository root on sys.path)
import numpy as np  # noqa: E402
from _common import REPO_ROOT, RESULTS_DIR, machine_facts, markdown_table, save_results  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator  # noqa: E402

from workbench.runner import build_run  # noqa: E402
from workbench.spec import load_spec  # noqa: E402
from workbench.training import Hook  # noqa: E402

try:
    from workbench.diagnose import diagnose_record
except ImportError:  # diagnose not there yet: verdicts are reported as unavailable
    diagnose_record = None

EXPERIMENTS_DIR = REPO_ROOT / "experiments"
FIGURES_DIR = EXPERIMENTS_DIR / "figures"
EXPERIMENTS = ("glorot", "he", "ioffe", "exploding", "dying")
SQRT_THIRD = math.sqrt(1.0 / 3.0)
PROBE_LR = "1e-12"
FIG_DPI = 90
ARM_COLORS = {"a": "#d62728", "b": "#1f77b4", "c": "#2ca02c", "d": "#9467bd", "e": "#8c564b"}


# ----------------------------------------------------------------------------- helpers
def fmt(x, digits: int = 3) -> str:
    if x is None:
        return "-"
    x = float(x)
    if not math.isfinite(x):
        return "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")
    if x == 0:
        return "0"
    return f"{x:.{digits}g}" if 1e-3 <= abs(x) < 1e5 else f"{x:.2e}"


def pct(x) -> str:
    return "-" if x is None or not math.isfinite(x) else f"{100 * x:.2f}%"


def spec_of(arm: str, overrides: list[str] | tuple[str, ...] = ()):
    """The arm's spec; a relative data.path is read relative to the repository root (as the files say)."""
    path = EXPERIMENTS_DIR / f"{arm}.toml"
    spec = load_spec(path, list(overrides))
    if spec.data.path is not None and not Path(spec.data.path).is_absolute():
        spec = load_spec(path, [*overrides, f"data.path={(REPO_ROOT / spec.data.path).resolve()}"])
    return spec


def train(arm: str, overrides=(), hooks=(), quiet_numpy: bool = False) -> dict:
    """Build, train and diagnose one arm; returns spec, run, result, seconds, diagnosis."""
    spec = spec_of(arm, overrides)
    run = build_run(spec)
    for hook in hooks:
        run.trainer.register(hook)
    start = time.perf_counter()
    with warnings.catch_warnings(), (np.errstate(all="ignore") if quiet_numpy else contextlib.nullcontext()):
        if quiet_numpy:  # the arm that overflows on purpose
            warnings.simplefilter("ignore", RuntimeWarning)
        result = run.trainer.fit()
    seconds = time.perf_counter() - start
    diagnosis = diagnose_record(run.record, spec=spec) if diagnose_record is not None else None
    label = f"{arm}" + (f" [{' '.join(overrides)}]" if overrides else "")
    test = result.metrics.get("test/accuracy")
    print(f"  {label}: {result.status} after {result.steps} steps in {seconds:.1f}s, test accuracy {fmt(test, 4)}, "
          f"verdict {diagnosis.verdict if diagnosis else 'n/a'}", flush=True)
    return {"arm": arm, "spec": spec, "run": run, "result": result, "seconds": seconds, "diagnosis": diagnosis,
            "record": run.record}


def probe(arm: str, extra=(), limit: int | None = None, epochs: int = 1) -> object:
    """The statistics record of the arm's initial weights over many batches (lr 1e-12: nothing moves)."""
    overrides = [f"optimizer.lr={PROBE_LR}", "optimizer.schedule=constant", f"training.epochs={epochs}",
                 "monitor.every=1", "clipping.mode=none", *extra]
    if limit is not None:
        overrides.append(f"data.limit={limit}")
    run = build_run(spec_of(arm, overrides))
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        run.trainer.fit()
    return run.record


def findings_json(diagnosis) -> dict | None:
    return diagnosis.to_json() if diagnosis is not None else None


def findings_line(diagnosis) -> str:
    """'verdict (layers, from step N); ...' for every finding."""
    if diagnosis is None:
        return "diagnose not available"
    if not diagnosis.findings:
        return "healthy"
    parts = []
    for f in diagnosis.findings:
        layers = _span(f.layers)
        parts.append(f"{f.verdict} ({layers}, from step {f.first_step})")
    return "; ".join(parts)


def _span(layers: list[str]) -> str:
    try:
        from workbench.diagnose.advice import layer_span

        return layer_span(list(layers))
    except ImportError:
        return ", ".join(layers)


def nanmedian_rows(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmedian(np.asarray(values, dtype=np.float64)[mask], axis=0)


def nanmean_rows(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(np.asarray(values, dtype=np.float64)[mask], axis=0)


def layer_sizes(record) -> list[tuple[int, int]]:
    return [tuple(map(int, s)) for s in record.meta["layer_sizes"]]


def grad_rms(record) -> np.ndarray:
    """rows x layers: ||dL/dW_i|| / sqrt(fan_in * fan_out), the RMS weight gradient (Glorot's Var[dC/dw])."""
    sizes = np.array([a * b for a, b in layer_sizes(record)], dtype=np.float64)
    return np.asarray(record.layer("grad_norm"), dtype=np.float64) / np.sqrt(sizes)


def save_figure(fig: Figure, name: str, results_dir: Path) -> Path:
    FIGURES_DIR.mkdir(parents=True, exist_ok=True)
    path = FIGURES_DIR / f"{name}.png"
    fig.savefig(path, dpi=FIG_DPI)
    fig.savefig(results_dir / f"{name}.png", dpi=FIG_DPI)
    kb = path.stat().st_size / 1024
    print(f"  figure {path.relative_to(REPO_ROOT)} ({kb:.0f} KB)")
    return path


def run_plots(entry: dict, results_dir: Path) -> None:
    """--run-plots: workbench's own figures of one run (heatmap, act std by depth, loss curves...)."""
    from workbench.plots import save_run_plots

    out = results_dir / "runs" / entry["arm"]
    save_run_plots(out, record=entry["record"], history=entry["result"].history)


def new_figure(width: float, height: float, ncols: int) -> tuple[Figure, list]:
    fig = Figure(figsize=(width, height), layout="constrained")
    axes = fig.subplots(1, ncols, squeeze=False).ravel()
    return fig, list(axes)


# ----------------------------------------------------------------------------- 1. Glorot & Bengio
GLOROT_ARMS = {
    # arm: (label, paper test error on MNIST, Table 1)
    "glorot_tanh_standard": ("tanh, standard init", 0.0176),
    "glorot_tanh_normalized": ("tanh, normalized init", 0.0164),
    "glorot_sigmoid_standard": ("sigmoid, standard init", 0.0221),
    "glorot_softsign_standard": ("softsign, standard init", 0.0164),
    "glorot_softsign_normalized": ("softsign, normalized init", 0.0172),
}
GLOROT_PROBE_LIMIT = 2000  # MNIST examples for the init probe: ~166 batches of 10


def predicted_gain(record, init: str) -> np.ndarray:
    """Glorot's linear-regime prediction of ||dL/ds_i|| / ||dL/ds_{i+1}|| for each dense layer i < L.

    ||dL/ds_i||^2 = ||dL/ds_{i+1} W_{i+1}^T||^2 * f'^2 ~ n_i Var[W_{i+1}] ||dL/ds_{i+1}||^2 (f' = 1 at 0),
    with n_i the width of layer i (the fan-in of W_{i+1}): standard init Var = 1/(3 n_i) gives sqrt(1/3)
    for every pair; normalized Var = 2/(n_i + n_{i+1}) gives 1 between equal widths.
    """
    sizes = layer_sizes(record)
    gains = []
    for i in range(len(sizes) - 1):
        fan_in, fan_out = sizes[i + 1]
        var = 1.0 / (3.0 * fan_in) if init == "standard" else 2.0 / (fan_in + fan_out)
        gains.append(math.sqrt(fan_in * var))
    return np.array(gains)


def mean_slope(record, activation: str) -> np.ndarray | None:
    """E[f'(s_i)] per dense layer from the activation moments (median over rows): tanh f' = 1 - y^2,
    sigmoid f' = y (1 - y); None for other activations (their slope is not a function of y's moments)."""
    everything = np.ones(len(record), bool)
    m = nanmedian_rows(record.layer("act_mean"), everything)
    second = nanmedian_rows(record.layer("act_std"), everything) ** 2 + m**2  # E[y^2]
    if activation == "tanh":
        return 1.0 - second
    if activation == "sigmoid":
        return m - second
    return None


def glorot(results_dir: Path, args) -> dict:
    print("\n== 1. Glorot & Bengio (2010): gradients through depth, saturation, Table 1", flush=True)
    out: dict = {"arms": {}}
    entries = {}
    for arm, (label, paper_error) in GLOROT_ARMS.items():
        init_record = probe(arm, limit=GLOROT_PROBE_LIMIT)
        entry = train(arm)
        entries[arm] = (entry, init_record)
        if args.run_plots:
            run_plots(entry, results_dir)

    layers = entries["glorot_tanh_standard"][0]["record"].layers
    pairs = [f"{layers[i]}/{layers[i + 1]}" for i in range(len(layers) - 1)]
    print("\n### Glorot: back-propagated gradient ratio ||dL/ds_i|| / ||dL/ds_{i+1}|| per layer pair "
          f"(prediction: sqrt(1/3) = {SQRT_THIRD:.3f} for standard init, 1 for normalized between equal widths)\n")
    rows = []
    for arm, (entry, init_record) in entries.items():
        record = entry["record"]
        init = entry["spec"].model.init
        label = GLOROT_ARMS[arm][0]
        epochs = record.epochs
        last = int(epochs.max())
        gain_run = np.asarray(record.backprop_gain(), dtype=np.float64)
        linear = predicted_gain(record, init)
        slope = mean_slope(init_record, entry["spec"].model.activation)
        phases = {"prediction (linear regime)": linear}
        if slope is not None:
            phases["prediction x mean slope f'(s_i) at init"] = linear * slope[:-1]
        phases.update({
            f"init, median of {len(init_record)} batches": nanmedian_rows(init_record.backprop_gain(), np.ones(len(init_record), bool))[:-1],
            "step 0 (one batch)": gain_run[0, :-1],
            "epoch 1, median": nanmedian_rows(gain_run, epochs == 0)[:-1],
            f"epoch {last + 1} (last), median": nanmedian_rows(gain_run, epochs == last)[:-1],
        })
        arm_out = out["arms"].setdefault(arm, {"label": label})
        arm_out["backprop_gain"] = {k: v.tolist() for k, v in phases.items()}
        for phase, gains in phases.items():
            hidden = gains[:-1]  # hidden-to-hidden pairs (equal widths)
            geo = float(np.exp(np.mean(np.log(hidden)))) if np.all(hidden > 0) else float("nan")
            predicted = float(np.exp(np.mean(np.log(phases["prediction (linear regime)"][:-1]))))
            rows.append([label, phase, *[fmt(g) for g in gains], fmt(geo), fmt(geo / predicted)])
        arm_out["backprop_norm_init"] = nanmedian_rows(init_record.layer("backprop_norm"), np.ones(len(init_record), bool)).tolist()
    table_gain = markdown_table(["arm", "when", *pairs, "geo. mean of hidden pairs", "geo. mean / linear prediction"], rows)
    print(table_gain)

    print("\n### Glorot: RMS weight gradient per layer, ||dL/dW_i|| / sqrt(fan_in fan_out), relative to "
          f"{layers[-2]} (prediction: about equal across layers at init, both inits)\n")
    rows = []
    for arm in ("glorot_tanh_standard", "glorot_tanh_normalized", "glorot_softsign_standard", "glorot_softsign_normalized"):
        entry, init_record = entries[arm]
        record = entry["record"]
        epochs = record.epochs
        last = int(epochs.max())
        rms_run = grad_rms(record)
        phases = {
            "init (probe median)": nanmedian_rows(grad_rms(init_record), np.ones(len(init_record), bool)),
            "epoch 1, median": nanmedian_rows(rms_run, epochs == 0),
            f"epoch {last + 1}, median": nanmedian_rows(rms_run, epochs == last),
        }
        arm_out = out["arms"][arm]
        arm_out["grad_rms"] = {k: v.tolist() for k, v in phases.items()}
        for phase, rms in phases.items():
            rel = rms / rms[-2]
            hidden = rms[:-1]
            rows.append([GLOROT_ARMS[arm][0], phase, *[fmt(r) for r in rel], fmt(hidden.max() / hidden.min())])
    table_rms = markdown_table(["arm", "when", *layers, "max/min over hidden"], rows)
    print(table_rms)

    # Saturation of the sigmoid arm (their Figure 2): per epoch, mean activation and saturated fraction.
    entry, _ = entries["glorot_sigmoid_standard"]
    record = entry["record"]
    hidden = record.layers[:-1]
    act_mean, sat = np.asarray(record.layer("act_mean"), np.float64), np.asarray(record.layer("sat_frac"), np.float64)
    rows, sat_out = [], []
    steps_per_epoch = record.meta["steps_per_epoch"]
    for e in range(int(record.epochs.max()) + 1):
        mask = record.epochs == e
        m, s = nanmean_rows(act_mean, mask), nanmean_rows(sat, mask)
        sat_out.append({"epoch": e + 1, "act_mean": m[:-1].tolist(), "sat_frac": s[:-1].tolist()})
        rows.append([e + 1, *[f"{fmt(m[j], 2)} / {fmt(s[j], 2)}" for j in range(len(hidden))]])
    top = sat[:, len(hidden) - 1]
    crossed = np.flatnonzero(top >= 0.9)
    first_sat_step = int(record.steps[crossed[0]]) if len(crossed) else None
    print(f"\n### Glorot: sigmoid arm, mean activation / saturated fraction (outside [0.03, 0.97]) per hidden layer "
          f"and epoch (top hidden layer {hidden[-1]} saturated >= 90% from step {first_sat_step}, "
          f"epoch {fmt(first_sat_step / steps_per_epoch if first_sat_step is not None else None, 2)})\n")
    table_sat = markdown_table(["epoch", *hidden], rows)
    print(table_sat)
    out["sigmoid_saturation"] = {"per_epoch": sat_out, "top_saturated_from_step": first_sat_step}

    # Table 1.
    rows = []
    for arm, (entry, _) in entries.items():
        label, paper = GLOROT_ARMS[arm]
        result = entry["result"]
        test = result.metrics.get("test/accuracy", float("nan"))
        val = result.history.get("val/accuracy", [float("nan")])
        arm_out = out["arms"][arm]
        arm_out.update(test_accuracy=test, val_accuracy=val, paper_test_error=paper, seconds=entry["seconds"],
                       steps=result.steps, status=result.status, diagnosis=findings_json(entry["diagnosis"]))
        rows.append([label, pct(paper), pct(1 - test), pct(1 - val[-1]), pct(1 - max(val)),
                     f"{entry['seconds']:.0f}s", findings_line(entry["diagnosis"])])
    spec = entries["glorot_tanh_standard"][0]["spec"]
    print(f"\n### Glorot Table 1, CPU-sized: 5 hidden layers of {spec.model.hidden[0]} (paper: 1000), SGD batch "
          f"{spec.training.batch_size}, lr {spec.optimizer.lr} {spec.optimizer.schedule}, {spec.training.epochs} epochs "
          f"on 50,000 MNIST training images; test error on the 10,000 test images\n")
    table1 = markdown_table(["arm", "paper test error", "our test error", "our val error (last)", "our val error (best epoch)",
                             "train time", "diagnose"], rows)
    print(table1)
    out["tables"] = {"backprop_gain": table_gain, "grad_rms": table_rms, "sigmoid_saturation": table_sat, "table1": table1}

    glorot_figures(entries, results_dir)
    return out


def glorot_figures(entries: dict, results_dir: Path) -> None:
    # Figure 1: back-propagated gradient and weight-gradient profiles, tanh standard vs normalized.
    fig, (ax_init, ax_train, ax_w) = new_figure(13.5, 4.0, 3)
    styles = {"glorot_tanh_standard": ("#d62728", "standard U[±1/√n]"),
              "glorot_tanh_normalized": ("#1f77b4", "normalized (Xavier)")}
    for arm, (color, name) in styles.items():
        entry, init_record = entries[arm]
        record = entry["record"]
        depth = np.arange(1, len(record.layers) + 1)
        everything = np.ones(len(init_record), bool)
        bp_init = nanmedian_rows(init_record.layer("backprop_norm"), everything)
        ax_init.semilogy(depth, bp_init / bp_init[-1], "o-", color=color, label=f"{name}: measured")
        pred = np.concatenate([np.cumprod(predicted_gain(record, entry["spec"].model.init)[::-1])[::-1], [1.0]])
        ax_init.semilogy(depth, pred, ":", color=color, label=f"{name}: prediction")
        epochs = record.epochs
        last = int(epochs.max())
        bp = np.asarray(record.layer("backprop_norm"), np.float64)
        bp1 = nanmedian_rows(bp / bp[:, -1:], epochs == 0)
        bpl = nanmedian_rows(bp / bp[:, -1:], epochs == last)
        ax_train.semilogy(depth, bp1, "o-", color=color, label=f"{name}: epoch 1")
        ax_train.semilogy(depth, bpl, "s--", color=color, alpha=0.6, label=f"{name}: epoch {last + 1}")
        rms_init = nanmedian_rows(grad_rms(init_record), everything)
        rms1 = nanmedian_rows(grad_rms(record), epochs == 0)
        ax_w.semilogy(depth, rms_init / rms_init[-2], "o-", color=color, label=f"{name}: init")
        ax_w.semilogy(depth, rms1 / rms1[-2], "s--", color=color, alpha=0.6, label=f"{name}: epoch 1")
    labels = [f"{i}" for i in range(1, 6)] + ["out"]
    for ax, title, ylabel in (
        (ax_init, "At initialization (probe, median over batches)", "‖dL/ds_i‖ / ‖dL/ds_out‖"),
        (ax_train, "During training (median over the epoch)", "‖dL/ds_i‖ / ‖dL/ds_out‖"),
        (ax_w, "Weight gradients (RMS per weight)", "RMS(dL/dW_i) / RMS(dL/dW_5)"),
    ):
        ax.set_xticks(np.arange(1, 7), labels)
        ax.set_xlabel("layer (1 = first hidden, out = output)")
        ax.set_ylabel(ylabel)
        ax.set_title(title, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_locator(LogLocator(subs=(0.2, 0.3, 0.5)))
        ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    fig.suptitle("Glorot & Bengio (2010), 5 tanh layers of 256 on MNIST: back-propagated gradients shrink "
                 "×0.577 per layer toward the input with standard init", fontsize=11)
    save_figure(fig, "glorot_gradients", results_dir)

    # Figure 2: their Figure 2, the sigmoid arm's mean activation and saturation per hidden layer.
    entry, _ = entries["glorot_sigmoid_standard"]
    record = entry["record"]
    hidden = record.layers[:-1]
    x = record.steps / record.meta["steps_per_epoch"]
    fig, (ax_m, ax_s) = new_figure(12, 3.8, 2)
    cmap = [(0.27, 0.0, 0.33), (0.23, 0.32, 0.55), (0.13, 0.57, 0.55), (0.37, 0.79, 0.38), (0.85, 0.5, 0.1)]
    act_mean, act_std = np.asarray(record.layer("act_mean"), np.float64), np.asarray(record.layer("act_std"), np.float64)
    sat = np.asarray(record.layer("sat_frac"), np.float64)
    stride = max(1, len(x) // 600)
    for j, name in enumerate(hidden):
        ax_m.plot(x[::stride], act_mean[::stride, j], color=cmap[j % len(cmap)], lw=1.2, label=f"layer {j + 1}")
        ax_m.fill_between(x[::stride], (act_mean - act_std)[::stride, j], (act_mean + act_std)[::stride, j],
                          color=cmap[j % len(cmap)], alpha=0.12, lw=0)
        ax_s.plot(x[::stride], sat[::stride, j], color=cmap[j % len(cmap)], lw=1.2, label=f"layer {j + 1}")
    ax_m.set_ylabel("mean sigmoid output (band: ±1 std)")
    ax_m.set_ylim(0, 1)
    ax_s.set_ylabel("fraction outside [0.03, 0.97]")
    ax_s.set_ylim(-0.02, 1.02)
    for ax in (ax_m, ax_s):
        ax.set_xlabel("epoch")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8, ncol=1)
    ax_m.set_title("Mean activation per hidden layer", fontsize=10)
    ax_s.set_title("Saturated fraction per hidden layer", fontsize=10)
    fig.suptitle("Glorot & Bengio (2010) Fig. 2 analogue: 5 sigmoid layers, standard init — the top hidden layer "
                 "is driven to 0 and stays saturated", fontsize=11)
    save_figure(fig, "glorot_sigmoid_saturation", results_dir)


# ----------------------------------------------------------------------------- 2. He et al.
HE_ARMS = {"he_relu30_xavier": ("Xavier (var 1/fan_in here)", "#d62728"), "he_relu30_he": ("He (var 2/fan_in)", "#1f77b4")}
HE_SEEDS = (0, 1, 2, 3, 4)
HE_DEPTHS = (1, 2, 5, 10, 15, 20, 25, 30)


def he(results_dir: Path, args) -> dict:
    print("\n== 2. He et al. (2015): 30 ReLU layers, Xavier vs He initialization", flush=True)
    out: dict = {"arms": {}}
    profiles, entries = {}, {}
    for arm in HE_ARMS:
        per_seed = []
        for seed in HE_SEEDS:
            record = probe(arm, extra=[f"seed={seed}"])
            std = nanmedian_rows(record.layer("act_std"), np.ones(len(record), bool))[:-1]
            per_seed.append(std / std[0])
        profiles[arm] = np.exp(np.mean(np.log(np.array(per_seed)), axis=0))  # geometric mean over seeds
        entries[arm] = train(arm)
        if args.run_plots:
            run_plots(entries[arm], results_dir)

    n_hidden = len(profiles["he_relu30_he"])
    depth = np.arange(1, n_hidden + 1)
    pred = {"he_relu30_xavier": 2.0 ** (-(depth - 1) / 2.0), "he_relu30_he": np.ones(n_hidden)}
    rows = []
    for d in HE_DEPTHS:
        if d > n_hidden:
            continue
        rows.append([d, fmt(profiles["he_relu30_xavier"][d - 1]), fmt(pred["he_relu30_xavier"][d - 1]),
                     fmt(profiles["he_relu30_he"][d - 1]), fmt(pred["he_relu30_he"][d - 1])])
    factor = {arm: float(profiles[arm][-1] ** (1.0 / (n_hidden - 1))) for arm in HE_ARMS}
    rows.append(["per-layer factor", fmt(factor["he_relu30_xavier"]), fmt(2 ** -0.5),
                 fmt(factor["he_relu30_he"]), "1"])
    print(f"\n### He: activation std of hidden layer l over layer 1's at initialization (geometric mean over seeds "
          f"{HE_SEEDS[0]}-{HE_SEEDS[-1]}, each the median over a probe epoch)\n")
    table_std = markdown_table(["layer", "Xavier measured", "Xavier predicted 2^-(l-1)/2", "He measured", "He predicted"], rows)
    print(table_std)

    rows = []
    for arm, (name, _) in HE_ARMS.items():
        entry = entries[arm]
        result = entry["result"]
        loss = result.history["train/loss"]
        pick = [0, 4, 9, 19, len(loss) - 1]
        rows.append([name, *[fmt(loss[i]) for i in pick if i < len(loss)], fmt(result.metrics.get("test/accuracy"), 4),
                     findings_line(entry["diagnosis"])])
        out["arms"][arm] = {"label": name, "act_std_rel_init": profiles[arm].tolist(), "train_loss": loss,
                            "val_accuracy": result.history.get("val/accuracy"), "test_accuracy": result.metrics.get("test/accuracy"),
                            "seconds": entry["seconds"], "diagnosis": findings_json(entry["diagnosis"])}
    loss = entries["he_relu30_he"]["result"].history["train/loss"]
    heads = [f"train loss ep {i + 1}" for i in [0, 4, 9, 19, len(loss) - 1]]
    spec = entries["he_relu30_he"]["spec"]
    print(f"\n### He: training ({spec.optimizer.name} {spec.optimizer.momentum}, lr {spec.optimizer.lr}, batch "
          f"{spec.training.batch_size}, {spec.training.epochs} epochs, {spec.data.source})\n")
    table_train = markdown_table(["init", *heads, "test accuracy", "diagnose"], rows)
    print(table_train)
    out["per_layer_factor"] = factor
    out["tables"] = {"act_std": table_std, "training": table_train}

    fig, (ax_std, ax_loss) = new_figure(12, 4.0, 2)
    for arm, (name, color) in HE_ARMS.items():
        ax_std.semilogy(depth, profiles[arm], "o-", ms=3, color=color, label=f"{name}: measured")
        ax_std.semilogy(depth, pred[arm], ":", color=color, label=f"{name}: predicted")
        history = entries[arm]["result"].history
        ax_loss.plot(np.arange(1, len(history["train/loss"]) + 1), history["train/loss"], "-", color=color, label=f"{name}: train")
        ax_loss.plot(np.arange(1, len(history["val/loss"]) + 1), history["val/loss"], "--", color=color, alpha=0.6, label=f"{name}: val")
    ax_std.set_xlabel("hidden layer")
    ax_std.set_ylabel("std(activation) / std(layer 1)")
    ax_std.set_title("Activation scale at step 0 (5 seeds)", fontsize=10)
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("cross-entropy loss")
    ax_loss.set_title("Loss curves (SGD + momentum, lr 0.001)", fontsize=10)
    for ax in (ax_std, ax_loss):
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("He et al. (2015): 30 ReLU layers of 128 on digits — Xavier halves the variance per layer and stalls, "
                 "He keeps it and trains", fontsize=11)
    save_figure(fig, "he_relu30", results_dir)
    return out


# ----------------------------------------------------------------------------- 3. Ioffe & Szegedy
IOFFE_ARMS = {"ioffe_sigmoid_plain": ("without BN", "#d62728"), "ioffe_sigmoid_bn": ("with BN", "#1f77b4")}
IOFFE_TARGETS = (0.90, 0.95, 0.97)
VAL_EVERY = 50


class ValidationCurve(Hook):
    """Validation accuracy every `every` steps (evaluation mode, the model's own `predict`)."""

    def __init__(self, every: int) -> None:
        self.every = every
        self.steps: list[int] = []
        self.accuracy: list[float] = []

    def _measure(self, trainer) -> None:
        data = trainer.data
        predicted = trainer.loss.predict(trainer.model.predict(data.X_val))
        self.steps.append(int(trainer.step))
        self.accuracy.append(float(np.mean(predicted == data.y_val)))

    def on_train_begin(self, trainer) -> None:
        self._measure(trainer)

    def on_after_update(self, trainer) -> None:
        if trainer.step % self.every == 0:
            self._measure(trainer)


def ioffe(results_dir: Path, args) -> dict:
    print("\n== 3. Ioffe & Szegedy (2015): 3x100 sigmoid on MNIST, with and without batch norm", flush=True)
    out: dict = {"arms": {}}
    entries, curves = {}, {}
    for arm in IOFFE_ARMS:
        curves[arm] = ValidationCurve(VAL_EVERY)
        entries[arm] = train(arm, hooks=[curves[arm]])
        if args.run_plots:
            run_plots(entries[arm], results_dir)

    rows_speed, rows_drift = [], []
    for arm, (name, _) in IOFFE_ARMS.items():
        entry, curve = entries[arm], curves[arm]
        acc, steps = np.array(curve.accuracy), np.array(curve.steps)
        reach = {}
        for target in IOFFE_TARGETS:
            hit = np.flatnonzero(acc >= target)
            reach[target] = int(steps[hit[0]]) if len(hit) else None
        record = entry["record"]
        top = len(record.layers) - 2  # the top hidden layer
        mean = np.asarray(record.layer("act_mean"), np.float64)[:, top]
        std = np.asarray(record.layer("act_std"), np.float64)[:, top]
        spe = record.meta["steps_per_epoch"]
        epochs = record.epochs
        first = epochs == 0
        late = epochs >= 1
        per_epoch_mean = [float(np.nanmean(mean[epochs == e])) for e in range(int(epochs.max()) + 1)]
        per_epoch_std = [float(np.nanmean(std[epochs == e])) for e in range(int(epochs.max()) + 1)]
        drift = {
            "mean_step0": float(mean[0]), "std_step0": float(std[0]),
            "mean_end": float(np.nanmean(mean[epochs == epochs.max()])), "std_end": float(np.nanmean(std[epochs == epochs.max()])),
            "mean_range_epoch1": float(np.nanmax(mean[first]) - np.nanmin(mean[first])),
            "mean_drift_after_epoch1": float(max(per_epoch_mean[1:]) - min(per_epoch_mean[1:])) if late.any() else float("nan"),
            "std_drift_after_epoch1": float(max(per_epoch_std[1:]) - min(per_epoch_std[1:])) if late.any() else float("nan"),
            "per_epoch_mean": per_epoch_mean, "per_epoch_std": per_epoch_std,
        }
        result = entry["result"]
        rows_speed.append([name, *[str(reach[t]) if reach[t] is not None else "not reached" for t in IOFFE_TARGETS],
                           fmt(acc[-1], 4), fmt(result.metrics.get("test/accuracy"), 4), f"{entry['seconds']:.0f}s",
                           findings_line(entry["diagnosis"])])
        first_mean = mean[first]
        rows_drift.append([name, f"{fmt(drift['mean_step0'])} / {fmt(drift['std_step0'])}",
                           f"{fmt(np.nanmin(first_mean))} to {fmt(np.nanmax(first_mean))}",
                           f"{fmt(drift['mean_end'])} / {fmt(drift['std_end'])}",
                           fmt(drift["mean_end"] - drift["mean_step0"]), fmt(drift["std_end"] - drift["std_step0"]),
                           fmt(drift["mean_drift_after_epoch1"])])
        out["arms"][arm] = {"label": name, "steps_to": {str(k): v for k, v in reach.items()}, "val_curve_steps": curve.steps,
                            "val_curve_accuracy": curve.accuracy, "test_accuracy": result.metrics.get("test/accuracy"),
                            "top_hidden_activation": drift, "steps_per_epoch": spe, "seconds": entry["seconds"],
                            "diagnosis": findings_json(entry["diagnosis"])}
    spec = entries["ioffe_sigmoid_plain"]["spec"]
    print(f"\n### Ioffe: steps to reach a validation accuracy (measured every {VAL_EVERY} steps; SGD lr {spec.optimizer.lr}, "
          f"batch {spec.training.batch_size}, {spec.training.epochs} epochs)\n")
    table_speed = markdown_table(["arm", *[f"steps to {t:.2f}" for t in IOFFE_TARGETS], "final val acc", "test acc",
                                  "train time", "diagnose"], rows_speed)
    print(table_speed)
    print("\n### Ioffe: top hidden layer's sigmoid outputs, mean / std (over batch and units)\n")
    table_drift = markdown_table(["arm", "step 0: mean / std", "epoch 1: mean from .. to", "last epoch: mean / std",
                                  "mean change, step 0 to end", "std change, step 0 to end",
                                  "spread of epoch means after epoch 1"], rows_drift)
    print(table_drift)
    out["tables"] = {"speed": table_speed, "drift": table_drift}

    fig, (ax_acc, ax_act) = new_figure(12, 4.0, 2)
    for arm, (name, color) in IOFFE_ARMS.items():
        curve = curves[arm]
        ax_acc.plot(curve.steps, curve.accuracy, color=color, label=name)
        record = entries[arm]["record"]
        top = len(record.layers) - 2
        mean = np.asarray(record.layer("act_mean"), np.float64)[:, top]
        std = np.asarray(record.layer("act_std"), np.float64)[:, top]
        ax_act.plot(record.steps, mean, color=color, lw=1, label=f"{name}: mean")
        ax_act.fill_between(record.steps, mean - std, mean + std, color=color, alpha=0.15, lw=0, label=f"{name}: ±1 std")
    for target in IOFFE_TARGETS:
        ax_acc.axhline(target, color="grey", lw=0.6, ls=":")
    ax_acc.set_ylim(0.8, 1.0)
    ax_acc.set_xlabel("step")
    ax_acc.set_ylabel("validation accuracy")
    ax_acc.set_title("Validation accuracy (every 50 steps)", fontsize=10)
    ax_act.set_xlabel("step")
    ax_act.set_ylabel("sigmoid output of the top hidden layer")
    ax_act.set_ylim(0, 1)
    ax_act.set_title("Top hidden layer activations over training", fontsize=10)
    for ax in (ax_acc, ax_act):
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("Ioffe & Szegedy (2015) Fig. 1 analogue: 3x100 sigmoid MLP on MNIST, batch 60, same SGD learning rate",
                 fontsize=11)
    save_figure(fig, "ioffe_bn", results_dir)
    return out


# ----------------------------------------------------------------------------- 4. exploding gradients
def suggested_max_norm(diagnosis) -> tuple[float | None, str]:
    """The clipping threshold the diagnosis suggests: from its advice (`--set clipping.max_norm=X`), else its evidence."""
    if diagnosis is None:
        return None, "diagnose not available"
    for verdict in ("exploding_gradients", "divergence"):
        finding = diagnosis.finding(verdict)
        if finding is None:
            continue
        for advice in finding.advice:
            match = re.search(r"clipping\.max_norm=([0-9.eE+-]+)", advice)
            if match:
                return float(match.group(1)), f"{verdict} advice"
        value = finding.evidence.get("suggested_max_norm")
        if value is not None and math.isfinite(value):
            return float(value), f"{verdict} evidence"
    return None, "no suggestion in the diagnosis"


def own_max_norm(record) -> float:
    """Fallback: median global gradient norm over the finite rows (Pascanu et al. 2013's heuristic)."""
    norms = np.asarray(record.global_("grad_norm_global"), np.float64)
    norms = norms[np.isfinite(norms)]
    return float(np.median(norms)) if len(norms) else float("nan")


def exploding(results_dir: Path, args) -> dict:
    print("\n== 4. Exploding gradients: 20 ReLU layers at 1.3x He init, then clipped at diagnose's threshold", flush=True)
    out: dict = {"arms": {}}
    base = train("exploding_relu", quiet_numpy=True)
    suggestion, source = suggested_max_norm(base["diagnosis"])
    if suggestion is None:
        suggestion, source = own_max_norm(base["record"]), "own fallback: median global gradient norm"
    committed = spec_of("exploding_relu_clipped").clipping.max_norm
    if abs(committed - suggestion) > 0.01 * max(abs(suggestion), 1e-12):
        print(f"  note: experiments/exploding_relu_clipped.toml has max_norm {committed}, diagnose now suggests "
              f"{fmt(suggestion)}: the run below uses the suggestion; update the file")
    clipped = train("exploding_relu_clipped", [f"clipping.max_norm={fmt(suggestion)}"], quiet_numpy=True)
    if args.run_plots:
        run_plots(base, results_dir)
        run_plots(clipped, results_dir)

    rows = []
    for entry in (base, clipped):
        result, record, diagnosis = entry["result"], entry["record"], entry["diagnosis"]
        bp = np.asarray(record.layer("backprop_norm"), np.float64)
        act = np.asarray(record.layer("act_std"), np.float64)
        norms = np.asarray(record.global_("grad_norm_global"), np.float64)
        spec = entry["spec"]
        first = {}
        if diagnosis is not None:
            for f in diagnosis.findings:
                first[f.verdict] = {"layers": f.layers, "first_step": f.first_step, "summary": f.summary,
                                    "evidence": f.to_json()["evidence"], "advice": f.advice}
        clip_fraction = record.clip_fraction()
        rows.append([entry["arm"], spec.clipping.mode + (f" {fmt(spec.clipping.max_norm)}" if spec.clipping.mode != "none" else ""),
                     result.status, result.steps, fmt(bp[0, 0] / bp[0, -1]), fmt(act[0, -2] / act[0, 0]),
                     fmt(np.nanmax(norms[np.isfinite(norms)]) if np.isfinite(norms).any() else float("nan")),
                     pct(clip_fraction) if math.isfinite(clip_fraction) else "-",
                     fmt(result.metrics.get("test/accuracy"), 4), findings_line(diagnosis)])
        out["arms"][entry["arm"]] = {"status": result.status, "reason": result.reason, "steps": result.steps,
                                     "max_norm": spec.clipping.max_norm if spec.clipping.mode != "none" else None,
                                     "backprop_ratio_step0": float(bp[0, 0] / bp[0, -1]),
                                     "act_std_ratio_step0": float(act[0, -2] / act[0, 0]),
                                     "test_accuracy": result.metrics.get("test/accuracy"),
                                     "train_loss": result.history.get("train/loss"), "clip_fraction": clip_fraction,
                                     "findings": first, "diagnosis": findings_json(diagnosis), "seconds": entry["seconds"]}
    out["suggested_max_norm"] = suggestion
    out["suggestion_source"] = source
    out["committed_max_norm"] = committed
    print(f"\n### Exploding: diagnose's clipping threshold for exploding_relu: {fmt(suggestion)} ({source}); "
          f"experiments/exploding_relu_clipped.toml has {committed}\n")
    table = markdown_table(["arm", "clipping", "status", "steps", "‖dL/ds_1‖/‖dL/ds_out‖ at step 0",
                            "act std last/first hidden at step 0", "max global grad norm", "clipped steps",
                            "test acc", "diagnose"], rows)
    print(table)
    if base["diagnosis"] is not None:
        print("\ndiagnose on exploding_relu:\n")
        print(base["diagnosis"].report())
    out["tables"] = {"arms": table}

    fig, (ax_bp, ax_norm, ax_loss) = new_figure(14, 3.9, 3)
    for entry, color, name in ((base, "#d62728", "no clipping"), (clipped, "#1f77b4", f"global-norm clip {fmt(suggestion)}")):
        record = entry["record"]
        bp = np.asarray(record.layer("backprop_norm"), np.float64)
        depth = np.arange(1, bp.shape[1] + 1)
        if entry is base:
            ax_bp.semilogy(depth, bp[0] / bp[0, -1], "o-", ms=3, color="black", label="step 0 (both arms)")
            ax_bp.semilogy(depth, 1.3 ** (bp.shape[1] - depth), ":", color="grey", label="1.3^(depth to output)")
        else:
            last = record.epochs == record.epochs.max()
            ax_bp.semilogy(depth, nanmedian_rows(bp / bp[:, -1:], last), "s--", ms=3, color=color, label=f"{name}: last epoch")
        steps = record.steps
        norms = np.asarray(record.global_("grad_norm_global"), np.float64)
        loss = np.asarray(record.global_("loss"), np.float64)
        keep = steps < 300
        ax_norm.semilogy(steps[keep], np.where(np.isfinite(norms[keep]), norms[keep], np.nan), color=color, lw=1, label=name)
        ax_loss.semilogy(steps[keep], np.where(np.isfinite(loss[keep]), loss[keep], np.nan), color=color, lw=1, label=name)
        bad = keep & ~np.isfinite(loss)
        if bad.any():
            for ax in (ax_norm, ax_loss):
                ax.axvline(steps[bad][0], color=color, ls=":", lw=1)
                ax.text(steps[bad][0], 0.95, f" NaN at step {steps[bad][0]}", color=color, fontsize=8,
                        transform=ax.get_xaxis_transform(), va="top")
    ax_norm.axhline(suggestion, color="#1f77b4", ls="--", lw=0.8, label="max_norm")
    ax_bp.set_xlabel("dense layer (input → output)")
    ax_bp.set_ylabel("‖dL/ds_i‖ / ‖dL/ds_out‖")
    ax_bp.set_title("Back-propagated gradient through depth", fontsize=10)
    ax_norm.set_xlabel("step")
    ax_norm.set_ylabel("global gradient norm (before clipping)")
    ax_norm.set_title("Gradient norm, first 300 steps", fontsize=10)
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("batch loss")
    ax_loss.set_title("Loss, first 300 steps", fontsize=10)
    for ax in (ax_bp, ax_norm, ax_loss):
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("Exploding gradients: 20 ReLU layers at 1.3x He init, momentum lr 0.001 — diverges at once; "
                 "clipped at diagnose's threshold it trains", fontsize=11)
    save_figure(fig, "exploding_relu", results_dir)
    return out


# ----------------------------------------------------------------------------- 5. dying ReLU
def dying(results_dir: Path, args) -> dict:
    print("\n== 5. Dying ReLU: Adam at lr 0.1, and the same spec at lr 1e-3 as control", flush=True)
    out: dict = {"arms": {}}
    sick = train("dying_relu")
    control = train("dying_relu", ["optimizer.lr=0.001"])
    control["arm"] = "dying_relu (lr 0.001 control)"
    if args.run_plots:
        run_plots(sick, results_dir)
    rows = []
    for entry in (sick, control):
        record, result, diagnosis = entry["record"], entry["result"], entry["diagnosis"]
        dead = np.asarray(record.layer("dead_frac"), np.float64)[:, :-1]
        epochs = record.epochs
        phases = {"step 0": dead[0], "epoch 1 (mean)": nanmean_rows(dead, epochs == 0),
                  "last epoch (mean)": nanmean_rows(dead, epochs == epochs.max())}
        finding = diagnosis.finding("dead_units") if diagnosis is not None else None
        for phase, values in phases.items():
            rows.append([entry["arm"], phase, *[fmt(v, 2) for v in values],
                         fmt(result.metrics.get("test/accuracy"), 4) if phase.startswith("last") else "",
                         findings_line(diagnosis) if phase.startswith("last") else ""])
        out["arms"][entry["arm"]] = {"lr": entry["spec"].optimizer.lr, "dead_frac": {k: v.tolist() for k, v in phases.items()},
                                     "test_accuracy": result.metrics.get("test/accuracy"),
                                     "dead_units_finding": finding.to_json() if finding else None,
                                     "diagnosis": findings_json(diagnosis), "seconds": entry["seconds"]}
    hidden = sick["record"].layers[:-1]
    print("\n### Dying ReLU: fraction of units that output 0 on every example of the batch, per hidden layer\n")
    table = markdown_table(["arm", "when", *hidden, "test acc", "diagnose"], rows)
    print(table)
    finding = sick["diagnosis"].finding("dead_units") if sick["diagnosis"] is not None else None
    if finding is not None:
        print(f"\ndiagnose dead_units on dying_relu: {finding.summary}")
        print(f"  dead_fraction per layer (evidence): {finding.evidence.get('dead_fraction')}")
    out["tables"] = {"dead_frac": table}

    fig, axes = new_figure(12, 3.8, 2)
    colors = ["#440154", "#21918c", "#e66101", "#d62728"]
    for ax, entry, title in ((axes[0], sick, "Adam lr 0.1 (dying_relu.toml)"), (axes[1], control, "Adam lr 0.001 (control)")):
        record = entry["record"]
        dead = np.asarray(record.layer("dead_frac"), np.float64)
        for j, name in enumerate(record.layers[:-1]):
            ax.plot(record.steps, dead[:, j], color=colors[j % len(colors)], lw=1, label=name)
        ax.axhline(0.7, color="grey", ls=":", lw=0.8, label="diagnose threshold 0.7")
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("step")
        ax.set_ylabel("dead fraction (0 on the whole batch)")
        ax.set_title(f"{title}: test acc {fmt(entry['result'].metrics.get('test/accuracy'), 3)}", fontsize=10)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("Dying ReLU: 3x128 ReLU MLP on digits — a 100x learning rate kills layers 2 and 3 within the first epoch",
                 fontsize=11)
    save_figure(fig, "dying_relu", results_dir)
    return out


# ----------------------------------------------------------------------------- main
RUNNERS = {"glorot": glorot, "he": he, "ioffe": ioffe, "exploding": exploding, "dying": dying}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default=",".join(EXPERIMENTS),
                        help=f"comma-separated experiments to run, of {', '.join(EXPERIMENTS)} (default: all)")
    parser.add_argument("--run-plots", action="store_true",
                        help="also save workbench's own figures of every run under benchmarks/results/classic-*/runs/")
    args = parser.parse_args(argv)
    chosen = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in RUNNERS]
    if unknown:
        parser.error(f"unknown experiment(s) {', '.join(unknown)}: choose from {', '.join(EXPERIMENTS)}")
    stamp = time.strftime("%Y%m%dT%H%M%S")
    results_dir = RESULTS_DIR / f"classic-{stamp}"
    results_dir.mkdir(parents=True, exist_ok=True)
    if diagnose_record is None:
        print("warning: workbench.diagnose is not importable: verdicts are left out")
    payload: dict = {"machine": machine_facts(), "experiments": {}, "seconds": {}}
    total = time.perf_counter()
    for name in chosen:
        start = time.perf_counter()
        payload["experiments"][name] = RUNNERS[name](results_dir, args)
        payload["seconds"][name] = round(time.perf_counter() - start, 1)
        print(f"  [{name}: {payload['seconds'][name]:.0f}s]", flush=True)
    payload["seconds"]["total"] = round(time.perf_counter() - total, 1)
    path = save_results("classic_experiments", payload, results_dir / "classic_experiments.json")
    print(f"\ntotal {payload['seconds']['total']:.0f}s ({', '.join(f'{k} {v:.0f}s' for k, v in payload['seconds'].items() if k != 'total')}); "
          f"results {path.relative_to(REPO_ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
