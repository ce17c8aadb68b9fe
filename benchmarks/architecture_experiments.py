"""Classic experiments on architectures (residual, convolutional), CPU-sized, from the specs in experiments/.

    .venv/bin/python benchmarks/architecture_experiments.py                        # all four: 55 min wall on 2 busy
                                                                                   # shared cores (CNN: ~170 s CPU a seed)
    .venv/bin/python benchmarks/architecture_experiments.py --only veit,shattered  # one, or a comma list
    .venv/bin/python benchmarks/architecture_experiments.py --only cnn --seeds 0,1,2,3,4

1. degradation  He et al. (2016): plain MLPs of 8 and 32 layers with batch norm on MNIST get worse with
                depth (training loss), residual ones of the same depth do not; the plain deep net's
                per-layer gradient norms stay healthy (their observation), and what diagnose says.
2. veit         Veit et al. (2016): in a trained residual MLP (16 blocks, digits) the gradient that reaches
                the first block through a single path of k residual bodies falls exponentially with k;
                weighted by the C(n, k) paths of each length, most of the gradient comes from short paths.
3. shattered    Balduzzi et al. (2017): for a scalar input swept over [-2, 2], the gradient of the output
                with respect to the input decorrelates between neighbouring inputs with depth in plain
                nets (white noise), much less in residual nets (200-unit ReLU nets with batch norm, at init).
4. cnn          A small convolutional network on MNIST (experiments/mnist_cnn.toml), several seeds:
                test accuracy after 3 epochs against the 98.5% bar, time, per-layer gradient flow, verdict.

Trained arms are specs in experiments/ (`workbench run experiments/<arm>.toml` runs one alone). The
script builds each with `build_run(load_spec(...))`, trains it, reads the statistics record and asks
`workbench.diagnose.diagnose_record` for a verdict. The path-length and shattering measurements are
backward passes through the model's own layers (`layer.backward`), walked by this script where the
measurement needs a different walk than `model.backward` (a chosen set of residual bodies; batch norm
at fixed statistics). Prints markdown tables, saves every number as JSON under benchmarks/results/
(gitignored) and the figures to experiments/figures/.
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # small GEMMs: one thread is faster on a shared 2-core machine

import argparse
import itertools
import math
import time
import warnings
from pathlib import Path

import _common  # noqa: F401  (puts the repository root on sys.path)
import numpy as np
from _common import REPO_ROOT, RESULTS_DIR, machine_facts, markdown_table, save_results
from classic_experiments import (
    findings_line,
    fmt,
    new_figure,
    save_figure,
    spec_of,
    train,
)
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from workbench.diagnose.thresholds import EXPLODING_RATIO
from workbench.nn.batchnorm import BatchNorm
from workbench.nn.model import build_network
from workbench.nn.residual import Residual
from workbench.runner import build_run

EXPERIMENTS = ("degradation", "veit", "shattered", "cnn")


def nanmedian(values, axis=0):
    """np.nanmedian without the warning for all-NaN columns (the output layer has no dead fraction)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmedian(np.asarray(values, np.float64), axis=axis)


def full_train_loss(run) -> tuple[float, float]:
    """Loss and error on the whole training split in evaluation mode (running batch-norm statistics)."""
    data = run.data
    output = run.model.predict(data.X_train)
    loss, _ = run.loss(output, data.y_train)
    error = float(np.mean(run.loss.predict(output) != data.y_train))
    return float(loss), error


def moving_mean(steps: np.ndarray, values: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Moving mean over `window` records (fewer when the record is shorter), with the step of each window's end."""
    window = max(1, min(window, len(values)))
    return steps[window - 1:], np.convolve(np.asarray(values, np.float64), np.ones(window) / window, mode="valid")


# ----------------------------------------------------------------------------- 1. degradation (He et al. 2016)
DEGRADATION_ARMS = {
    # arm: (label, layers with weights, residual)
    "degradation_plain8": ("plain, 8 layers", 8, False),
    "degradation_plain32": ("plain, 32 layers", 32, False),
    "degradation_res8": ("residual, 8 layers", 8, True),
    "degradation_res32": ("residual, 32 layers", 32, True),
}
# He et al. 2016, Table 2: ImageNet top-1 error (%, 10-crop) of 18- and 34-layer nets; Table 6 / Fig. 6: CIFAR-10.
HE_IMAGENET = {"plain-18": 27.94, "plain-34": 28.54, "ResNet-18": 27.88, "ResNet-34": 25.03}
HE_CIFAR_TEST_ERROR = {"ResNet-20": 8.75, "ResNet-32": 7.51, "ResNet-44": 7.17, "ResNet-56": 6.97}


def degradation(results_dir: Path, args, shared: dict) -> dict:
    print("\n== 1. He et al. (2016): degradation of plain nets with depth; residual nets of the same depth", flush=True)
    out: dict = {"arms": {}}
    entries = {}
    overrides = [f"training.epochs={args.degradation_epochs}"] if args.degradation_epochs else []
    for arm in DEGRADATION_ARMS:
        entry = train(arm, overrides)
        entry["full_train"] = full_train_loss(entry["run"])
        entries[arm] = entry
    shared["degradation_res32"] = entries["degradation_res32"]

    epochs = len(entries["degradation_plain8"]["result"].history["train/loss"])
    rows = []
    for arm, (label, depth, residual) in DEGRADATION_ARMS.items():
        entry = entries[arm]
        result, record = entry["result"], entry["record"]
        losses = result.history["train/loss"]
        loss_full, error_full = entry["full_train"]
        rows.append([label, *[fmt(v) for v in losses], fmt(loss_full), f"{100 * error_full:.2f}%",
                     fmt(result.history["val/accuracy"][-1], 4), fmt(result.metrics.get("test/accuracy"), 4),
                     f"{entry['seconds']:.0f}s", findings_line(entry["diagnosis"])])
        out["arms"][arm] = {
            "label": label, "layers": depth, "residual": residual, "train_loss_per_epoch": losses,
            "train_loss_full_eval": loss_full, "train_error_full_eval": error_full,
            "val_accuracy": result.history["val/accuracy"], "test_accuracy": result.metrics.get("test/accuracy"),
            "seconds": entry["seconds"], "diagnosis": entry["diagnosis"].to_json() if entry["diagnosis"] else None,
        }
    print(f"\n### Degradation: training loss per epoch (mean over the epoch's batches), then on the whole training "
          f"split in evaluation mode after epoch {epochs}\n")
    table_loss = markdown_table(["arm", *[f"train loss ep {e + 1}" for e in range(epochs)], "final train loss (eval)",
                                 "final train error (eval)", "val acc", "test acc", "train time", "diagnose"], rows)
    print(table_loss)
    plain = [out["arms"][a]["train_loss_full_eval"] for a in ("degradation_plain8", "degradation_plain32")]
    res = [out["arms"][a]["train_loss_full_eval"] for a in ("degradation_res8", "degradation_res32")]
    out["plain_degrades"] = bool(plain[1] > plain[0])
    out["residual_deep_at_or_below_shallow"] = bool(res[1] <= res[0])
    out["residual_deep_below_plain_deep"] = bool(res[1] < plain[1])
    print(f"\nplain 32 above plain 8: {out['plain_degrades']}; residual 32 at or below residual 8: "
          f"{out['residual_deep_at_or_below_shallow']}; residual 32 below plain 32: {out['residual_deep_below_plain_deep']}")

    # Gradient flow through depth (He et al.: "the backward propagated gradients exhibit healthy norms with BN").
    rows = []
    profiles = {}
    for arm in DEGRADATION_ARMS:
        record = entries[arm]["record"]
        bp = np.asarray(record.layer("backprop_norm"), np.float64)
        gn = np.asarray(record.layer("grad_norm"), np.float64)
        ratio = bp / bp[:, -1:]
        last = record.epochs == record.epochs.max()
        first = np.zeros(len(record), bool)
        first[0] = True
        profiles[arm] = {"layers": record.layers, "backprop_ratio_step0": ratio[0].tolist(),
                         "backprop_ratio_last_epoch": nanmedian(ratio[last]).tolist(),
                         "grad_norm_last_epoch": nanmedian(gn[last]).tolist(),
                         "grad_norm_step0": gn[0].tolist()}
        hidden_last = nanmedian(ratio[last])[:-1]
        gn_last = nanmedian(gn[last])
        above = np.flatnonzero(ratio[:, 0] > EXPLODING_RATIO)
        profiles[arm]["steps_first_layer_above_exploding_ratio"] = record.steps[above].tolist()
        rows.append([DEGRADATION_ARMS[arm][0], fmt(ratio[0, 0]),
                     f"{len(above)} of {len(record)}" + (f" (steps {record.steps[above[0]]}-{record.steps[above[-1]]})" if len(above) else ""),
                     fmt(nanmedian(ratio[last])[0]),
                     f"{fmt(hidden_last.min())} .. {fmt(hidden_last.max())}",
                     f"{fmt(gn_last[:-1].min())} .. {fmt(gn_last[:-1].max())}", fmt(gn_last[-1]),
                     findings_line(entries[arm]["diagnosis"])])
    out["gradient_flow"] = profiles
    print("\n### Degradation: gradient flow, ||dL/ds_i|| / ||dL/ds_output|| (back-propagated gradient relative to the "
          "output layer's) and ||dL/dW_i||\n")
    table_flow = markdown_table(["arm", "first layer / output, step 0",
                                 f"recorded steps with first layer / output > {fmt(EXPLODING_RATIO)} (diagnose's exploding ratio)",
                                 "first layer / output, last epoch (median)",
                                 "hidden layers / output, last epoch (min .. max)",
                                 "hidden ‖dL/dW‖, last epoch (min .. max)", "output ‖dL/dW‖", "diagnose"], rows)
    print(table_flow)
    diagnosis = entries["degradation_plain32"]["diagnosis"]
    if diagnosis is not None:
        print("\ndiagnose on degradation_plain32:\n")
        print(diagnosis.report())
    out["tables"] = {"loss": table_loss, "flow": table_flow}

    fig, (ax_loss, ax_bp, ax_gn) = new_figure(15, 4.2, 3)
    colors = {"degradation_plain8": "#ff9896", "degradation_plain32": "#d62728",
              "degradation_res8": "#aec7e8", "degradation_res32": "#1f77b4"}
    for arm, (label, depth, residual) in DEGRADATION_ARMS.items():
        record = entries[arm]["record"]
        steps, smooth = moving_mean(record.steps, record.global_("loss"), 10)
        ax_loss.semilogy(steps, smooth, color=colors[arm], ls="-" if residual else "--",
                         lw=1.4 if depth == 32 else 1.0, label=label)
        profile = profiles[arm]
        x = np.arange(1, len(profile["layers"]) + 1)
        ax_bp.semilogy(x, profile["backprop_ratio_last_epoch"], "o-" if residual else "s--", ms=3,
                       color=colors[arm], label=f"{label}, last epoch")
        if depth == 32:
            ax_bp.semilogy(x, profile["backprop_ratio_step0"], ":", lw=1.2, color=colors[arm], label=f"{label}, step 0")
        ax_gn.semilogy(x, profile["grad_norm_last_epoch"], "o-" if residual else "s--", ms=3, color=colors[arm],
                       label=label)
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("training batch loss (moving mean of 10 records)")
    ax_loss.set_title("Training loss: plain 32 above plain 8", fontsize=10)
    ax_bp.set_xlabel("layer with weights (input → output)")
    ax_bp.set_ylabel("‖dL/ds_i‖ / ‖dL/ds_output‖ (last epoch: median)")
    ax_bp.set_title("Back-propagated gradient through depth", fontsize=10)
    ax_gn.set_xlabel("layer with weights (input → output)")
    ax_gn.set_ylabel("‖dL/dW_i‖, last epoch median")
    ax_gn.set_title("Weight gradient per layer", fontsize=10)
    for ax in (ax_loss, ax_bp, ax_gn):
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"He et al. (2016) degradation, CPU-sized: MLPs of width 64 with batch norm on MNIST, "
                 f"SGD + momentum, {epochs} epochs", fontsize=11)
    if args.degradation_epochs:  # not the committed budget: the figure stays with this run's results
        fig.savefig(results_dir / f"degradation_{epochs}_epochs.png", dpi=90)
        print(f"  figure {(results_dir / f'degradation_{epochs}_epochs.png').relative_to(REPO_ROOT)}")
    else:
        save_figure(fig, "degradation", results_dir)
    return out


# ----------------------------------------------------------------------------- 2. Veit et al. 2016
VEIT_ARM = "veit_resnet16"
VEIT_SAMPLES = 200  # random subsets per path length (all of them when there are fewer)
VEIT_BATCH = 512
VEIT_SHARE = 0.9  # the shortest run of path lengths holding this share of the total gradient


def residual_blocks(model) -> list[int]:
    """Indices in model.layers of the top-level residual blocks."""
    return [i for i, layer in enumerate(model.layers) if isinstance(layer, Residual)]


def path_gradient(model, grad: np.ndarray, keep: set[int]) -> np.ndarray:
    """dL/d(input of the first residual block) through one path (Veit et al. 2016, sec. 6): through the body
    alone of the blocks numbered in `keep` (0-based), through the skip alone of every other block, and through
    the layers between blocks as usual. Needs a forward pass first (the layers' caches); each call reuses it.
    The sum over all 2^n subsets is model.backward's gradient at that point (the paths partition it)."""
    blocks = residual_blocks(model)
    for i in range(len(model.layers) - 1, blocks[0] - 1, -1):
        layer = model.layers[i]
        if isinstance(layer, Residual):
            if blocks.index(i) in keep:
                for inner in reversed(layer.body):
                    grad = inner.backward(grad)
            elif layer.projection is not None:
                grad = layer.projection.backward(grad)
        else:
            grad = layer.backward(grad)
    return grad


def path_length_profile(run, samples: int = VEIT_SAMPLES, batch: int = VEIT_BATCH, seed: int = 0) -> dict:
    """Mean ||dL/dx|| at the first block's input over paths of each length k = 0..n (random subsets of k bodies),
    after one forward pass in training mode on `batch` training examples (the weights unchanged; batch-norm
    running statistics restored afterwards)."""
    model, data = run.model, run.data
    state = model.state_dict()
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(data.X_train), min(batch, len(data.X_train)), replace=False)
    output = model.forward(data.X_train[pick], training=True)
    _, grad = run.loss(output, data.y_train[pick])
    n = len(residual_blocks(model))
    mean, spread = [], []
    for k in range(n + 1):
        if math.comb(n, k) <= samples:
            subsets = [set(s) for s in itertools.combinations(range(n), k)]
        else:
            subsets = [set(rng.choice(n, k, replace=False).tolist()) for _ in range(samples)]
        norms = np.array([np.linalg.norm(path_gradient(model, grad, s)) for s in subsets])
        mean.append(float(norms.mean()))
        spread.append([float(np.percentile(norms, 10)), float(np.percentile(norms, 90))])
    model.backward(grad)  # the model's own gradient, all paths together, for reference
    total_at_first_block = float(np.linalg.norm(model.grad_outputs[model.layers[residual_blocks(model)[0] - 1].name]))
    model.load_state_dict(state)
    mean = np.array(mean)
    counts = np.array([math.comb(n, k) for k in range(n + 1)], np.float64)
    total = counts * mean
    share = total / total.sum()
    lengths = np.arange(n + 1)
    slope, _ = np.polyfit(lengths[mean > 0], np.log(mean[mean > 0]), 1)
    lo, hi = shortest_window(share, VEIT_SHARE)
    return {"blocks": n, "mean": mean.tolist(), "p10_p90": spread, "paths": counts.tolist(), "share": share.tolist(),
            "per_block_factor": float(np.exp(slope)), "peak_length": int(np.argmax(share)),
            "mean_length": float((lengths * share).sum()), "binomial_mean_length": n / 2,
            "window": [lo, hi], "window_share": float(share[lo:hi + 1].sum()),
            "window_path_fraction": float(counts[lo:hi + 1].sum() / 2.0**n),
            "norm_full_gradient": total_at_first_block}


def shortest_window(share: np.ndarray, target: float) -> tuple[int, int]:
    """The shortest run of consecutive lengths whose shares sum to at least `target` (the earliest on ties)."""
    best = (0, len(share) - 1)
    for lo in range(len(share)):
        acc = 0.0
        for hi in range(lo, len(share)):
            acc += share[hi]
            if acc >= target:
                if hi - lo < best[1] - best[0]:
                    best = (lo, hi)
                break
    return best


def veit(results_dir: Path, args, shared: dict) -> dict:
    print("\n== 2. Veit et al. (2016): gradient magnitude against path length in a trained residual MLP", flush=True)
    out: dict = {}
    spec = spec_of(VEIT_ARM)
    untrained = build_run(spec)
    profiles = {"at initialization": path_length_profile(untrained)}
    entry = train(VEIT_ARM)
    profiles["trained"] = path_length_profile(entry["run"])
    if "degradation_res32" in shared:  # the 15-block residual MLP of experiment 1, trained on MNIST
        profiles["degradation_res32 (MNIST), trained"] = path_length_profile(shared["degradation_res32"]["run"])
    out["arm"] = {"test_accuracy": entry["result"].metrics.get("test/accuracy"),
                  "train_loss": entry["result"].history["train/loss"][-1], "seconds": entry["seconds"],
                  "diagnosis": entry["diagnosis"].to_json() if entry["diagnosis"] else None}
    out["profiles"] = profiles
    rows = []
    for name, p in profiles.items():
        m = np.array(p["mean"])
        rows.append([name, p["blocks"], fmt(m[1] / m[0]), fmt(m[min(5, len(m) - 1)] / m[0]),
                     fmt(m[len(m) // 2] / m[0]), fmt(p["per_block_factor"]), p["peak_length"],
                     fmt(p["mean_length"]), fmt(p["binomial_mean_length"]),
                     f"{p['window'][0]}-{p['window'][1]} ({100 * p['window_share']:.0f}%)",
                     f"{100 * p['window_path_fraction']:.1f}%"])
    print("\n### Veit: mean ||dL/dx|| at the first block's input through single paths of k residual bodies "
          "(relative to k = 0, the path of skips only), and the share of the total by length (C(n,k) x mean)\n")
    table = markdown_table(["network", "blocks n", "k=1 / k=0", "k=5 / k=0", "k=n/2 / k=0", "fitted factor per body",
                            "length with the largest share", "mean length (gradient-weighted)",
                            "mean length (all paths)", f"shortest lengths holding {100 * VEIT_SHARE:.0f}%",
                            "of all 2^n paths"], rows)
    print(table)
    out["tables"] = {"paths": table}
    print(f"\n  {VEIT_ARM}: test accuracy {fmt(out['arm']['test_accuracy'], 4)}, diagnose: {findings_line(entry['diagnosis'])}")

    fig, (ax_n, ax_mag, ax_share) = new_figure(15, 4.2, 3)
    styles = {"at initialization": ("#7f7f7f", "s--"), "trained": ("#1f77b4", "o-"),
              "degradation_res32 (MNIST), trained": ("#2ca02c", "^-")}
    main = profiles["trained"]
    n = main["blocks"]
    k = np.arange(n + 1)
    ax_n.bar(k, np.array(main["paths"]), color="#9edae5")
    ax_n.set_title(f"(a) number of paths of length k: C({n}, k)", fontsize=10)
    ax_n.set_xlabel("path length k (residual bodies on the path)")
    ax_n.set_ylabel("paths")
    for ax in (ax_n, ax_mag, ax_share):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    for name, p in profiles.items():
        color, style = styles.get(name, ("#9467bd", "d-"))
        kk = np.arange(p["blocks"] + 1)
        m = np.array(p["mean"])
        ax_mag.semilogy(kk, m / m[0], style, ms=3, color=color, label=f"{name} (×{fmt(p['per_block_factor'])} per body)")
        ax_share.plot(kk, p["share"], style, ms=3, color=color, label=name)
    ax_mag.set_title("(b) gradient magnitude of one path of length k", fontsize=10)
    ax_mag.set_xlabel("path length k")
    ax_mag.set_ylabel("mean ‖dL/dx‖, relative to k = 0")
    ax_share.plot(k, main["paths"] / np.sum(main["paths"]), ":", color="black", lw=1, label="share of paths (binomial)")
    ax_share.set_title("(c) total gradient by length: C(n, k) × (b), normalized", fontsize=10)
    ax_share.set_xlabel("path length k")
    ax_share.set_ylabel("share of the total gradient magnitude")
    for ax in (ax_n, ax_mag, ax_share):
        ax.grid(True, which="both", alpha=0.3)
    ax_mag.legend(fontsize=8)
    ax_share.legend(fontsize=8)
    fig.suptitle(f"Veit et al. (2016) Fig. 6 analogue: residual MLP of {n} blocks on digits "
                 f"(and the 15-block MNIST net of experiment 1)", fontsize=11)
    save_figure(fig, "veit_paths", results_dir)
    return out


# ----------------------------------------------------------------------------- 3. Balduzzi et al. 2017
SHATTER_WIDTH = 200  # their 200-unit rectifier layers
SHATTER_POINTS = 256  # 256 inputs equally spaced in [-2, 2]
SHATTER_RUNS = 20  # random initializations averaged per depth
SHATTER_DEPTHS = (1, 2, 4, 8, 16, 24, 50)
SHATTER_LAGS = (1, 2, 4, 8, 16, 32, 64)


def shatter_items(kind: str, depth: int, width: int = SHATTER_WIDTH) -> list[dict]:
    """Plain: depth x [dense, batch_norm, relu]. Residual: a dense stem, then depth blocks
    y = x + dense(relu(batch_norm(x))) (pre-activation, one dense layer per block). Batch norm with
    momentum 1, so that one forward pass in training mode leaves the batch's statistics as running ones."""
    bn = {"type": "batch_norm", "momentum": 1.0}
    if kind == "plain":
        return [item for _ in range(depth) for item in ({"type": "dense", "units": width}, bn, {"type": "relu"})]
    body = [bn, {"type": "relu"}, {"type": "dense", "units": width}]
    return [{"type": "dense", "units": width}, *({"type": "residual", "body": body} for _ in range(depth))]


def shatter_model(kind: str, depth: int, seed: int, width: int = SHATTER_WIDTH):
    model = build_network(shatter_items(kind, depth, width), (1,), 1, init="he_normal", dtype="float64",
                          rng=np.random.default_rng(seed))
    model.layers[0].input_grad = True  # we want dOutput/dx itself
    return model


def backward_at_fixed_statistics(layers, grad: np.ndarray) -> np.ndarray:
    """The model's backward pass with batch norm taken as the affine map it is at fixed (running) statistics,
    y = gamma (x - mu) / sqrt(var + eps) + beta, so dy/dx = gamma / sqrt(var + eps): each output's derivative
    with respect to its own input. Every other layer runs its own backward; needs an eval-mode forward first."""
    for layer in reversed(layers):
        if isinstance(layer, BatchNorm):
            grad = grad * (layer.params["gamma"] / np.sqrt(layer.running_var + layer.eps))
        elif isinstance(layer, Residual):
            skip = grad if layer.projection is None else layer.projection.backward(grad)
            grad = backward_at_fixed_statistics(layer.body, grad) + skip
        else:
            grad = layer.backward(grad)
    return grad


def input_gradients(model, x: np.ndarray) -> dict[str, np.ndarray]:
    """Per-point gradient of the output with respect to the scalar input, two ways:
    'fixed statistics': f'(x_i) of the network with batch norm at the batch's statistics (frozen), the
    derivative of the function it computes; 'batch-coupled': model.backward after a training-mode forward,
    d(sum_j f(x_j))/dx_i, which adds how x_i moves the batch statistics (what autodiff gives in training mode)."""
    n = len(x)
    model.forward(x, training=True)  # batch statistics, kept as running ones (momentum 1)
    coupled = model.backward(np.ones((n, 1)))[:, 0].copy()
    for layer, _ in model.walk():  # running_var is unbiased (n / (n - 1)): make it the batch's own
        if isinstance(layer, BatchNorm):
            layer.running_var *= (n - 1) / n
    model.forward(x, training=False)
    fixed = backward_at_fixed_statistics(model.layers, np.ones((n, 1)))[:, 0].copy()
    return {"fixed statistics": fixed, "batch-coupled": coupled}


def autocorrelation(g: np.ndarray, lags) -> np.ndarray:
    """Sample autocorrelation of a sequence at the given lags (mean removed, normalized by the lag-0 sum)."""
    g = g - g.mean()
    v = float(np.dot(g, g))
    return np.array([float(np.dot(g[:-k], g[k:])) / v for k in lags])


def shattered(results_dir: Path, args, shared: dict) -> dict:
    print("\n== 3. Balduzzi et al. (2017): shattered gradients, plain vs residual nets at initialization", flush=True)
    x = np.linspace(-2.0, 2.0, SHATTER_POINTS)[:, None]
    lags = np.array(SHATTER_LAGS)
    out: dict = {"lags": lags.tolist(), "depths": list(SHATTER_DEPTHS), "runs": SHATTER_RUNS, "acf": {}}
    examples = {}
    # Check the fixed-statistics derivative against central differences of the eval-mode network (float64).
    check = shatter_model("res", 8, seed=123)
    g = input_gradients(check, x)["fixed statistics"]
    h = 1e-6
    fd = (check.predict(x + h) - check.predict(x - h))[:, 0] / (2 * h)
    out["finite_difference_check"] = float(np.max(np.abs(g - fd)) / np.max(np.abs(fd)))
    print(f"  fixed-statistics derivative vs central differences (residual, 8 blocks): max error "
          f"{out['finite_difference_check']:.1e} of the largest gradient")
    start = time.perf_counter()
    for kind in ("plain", "res"):
        for depth in SHATTER_DEPTHS:
            acfs = {"fixed statistics": [], "batch-coupled": []}
            for seed in range(SHATTER_RUNS):
                grads = input_gradients(shatter_model(kind, depth, seed), x)
                for how, gr in grads.items():
                    acfs[how].append(autocorrelation(gr, lags))
                if seed == 0:
                    examples[(kind, depth)] = grads["fixed statistics"]
            for how, values in acfs.items():
                values = np.array(values)
                out["acf"].setdefault(how, {}).setdefault(kind, {})[depth] = {
                    "mean": values.mean(axis=0).tolist(), "std": values.std(axis=0).tolist()}
    out["seconds_measuring"] = time.perf_counter() - start

    def lag1(how, kind, depth):
        return out["acf"][how][kind][depth]["mean"][0]

    rows = []
    for depth in SHATTER_DEPTHS:
        a = out["acf"]["fixed statistics"]
        rows.append([depth, fmt(lag1("fixed statistics", "plain", depth), 2), f"{a['plain'][depth]['std'][0]:.2f}",
                     fmt(lag1("fixed statistics", "res", depth), 2), f"{a['res'][depth]['std'][0]:.2f}",
                     fmt(lag1("batch-coupled", "plain", depth), 2), fmt(lag1("batch-coupled", "res", depth), 2)])
    print(f"\n### Shattered gradients: lag-1 autocorrelation of dOutput/dx over {SHATTER_POINTS} points in [-2, 2] "
          f"(neighbours 4/255 apart), mean (and std) over {SHATTER_RUNS} initializations\n")
    table_lag1 = markdown_table(["depth", "plain", "plain std", "residual", "residual std", "plain, batch-coupled",
                                 "residual, batch-coupled"], rows)
    print(table_lag1)
    rows = []
    for kind in ("plain", "res"):
        for depth in (2, 8, 24, 50):
            m = out["acf"]["fixed statistics"][kind][depth]["mean"]
            rows.append([("plain" if kind == "plain" else "residual") + f", depth {depth}", *[fmt(v, 2) for v in m]])
    print("\n### Shattered gradients: autocorrelation against lag (fixed statistics), mean over initializations\n")
    table_acf = markdown_table(["network", *[f"lag {k}" for k in SHATTER_LAGS]], rows)
    print(table_acf)
    out["tables"] = {"lag1": table_lag1, "acf": table_acf}

    fig = Figure(figsize=(15, 7.6), layout="constrained")
    axes = fig.subplots(2, 3)
    xs = x[:, 0]
    for ax, (kind, depth), title in ((axes[0, 0], ("plain", 2), "plain, 2 layers"),
                                     (axes[0, 1], ("plain", 24), "plain, 24 layers"),
                                     (axes[0, 2], ("res", 50), "residual, 50 blocks")):
        ax.plot(xs, examples[(kind, depth)], lw=0.8, color="#d62728" if kind == "plain" else "#1f77b4")
        ax.set_title(f"dOutput/dx, {title} (one initialization)", fontsize=10)
        ax.set_xlabel("input x")
        ax.grid(True, alpha=0.3)
    cmap = {d: c for d, c in zip(SHATTER_DEPTHS, ["#fdae6b", "#fd8d3c", "#f16913", "#d94801", "#a63603", "#7f2704", "#3f0f00"])}
    for ax, kind, name in ((axes[1, 0], "plain", "plain"), (axes[1, 1], "res", "residual")):
        for depth in SHATTER_DEPTHS:
            m = out["acf"]["fixed statistics"][kind][depth]["mean"]
            ax.plot(lags, m, "o-", ms=3, color=cmap[depth], label=f"depth {depth}")
        ax.axhline(0, color="grey", lw=0.6)
        ax.set_xscale("log", base=2)
        ax.set_ylim(-0.3, 1.02)
        ax.set_xlabel("lag (points; 1 = 4/255 in x)")
        ax.set_ylabel("autocorrelation")
        ax.set_title(f"{name} nets: autocorrelation of the gradient", fontsize=10)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
    ax = axes[1, 2]
    depths = np.array(SHATTER_DEPTHS)
    for kind, color, name in (("plain", "#d62728", "plain"), ("res", "#1f77b4", "residual")):
        for how, style in (("fixed statistics", "o-"), ("batch-coupled", "x:")):
            ax.plot(depths, [lag1(how, kind, d) for d in depths], style, ms=4, color=color, label=f"{name}, {how}")
    ax.axhline(0, color="grey", lw=0.6)
    ax.set_xscale("log")
    ax.set_xlabel("depth (layers or blocks)")
    ax.set_ylabel("lag-1 autocorrelation")
    ax.set_title("Neighbour correlation against depth", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.suptitle(f"Balduzzi et al. (2017) Fig. 1-2 analogue: {SHATTER_WIDTH}-unit ReLU nets with batch norm at "
                 f"initialization, 1-d input, {SHATTER_POINTS} points in [-2, 2], {SHATTER_RUNS} initializations",
                 fontsize=11)
    save_figure(fig, "shattered_gradients", results_dir)
    return out


# ----------------------------------------------------------------------------- 4. a small CNN on MNIST
CNN_ARM = "mnist_cnn"
CNN_TARGET = 0.985


def cnn(results_dir: Path, args, shared: dict) -> dict:
    seeds = [int(s) for s in args.seeds.split(",")]
    print(f"\n== 4. A small CNN on MNIST ({CNN_ARM}.toml), seeds {seeds}: test accuracy after 3 epochs, "
          f"target {CNN_TARGET:.1%}", flush=True)
    out: dict = {"target": CNN_TARGET, "runs": {}}
    variants = [("as committed", [])]
    if args.cnn_variant:
        variants.append((f"--set {' --set '.join(args.cnn_variant)}", list(args.cnn_variant)))
    entries = {}
    rows = []
    for label, overrides in variants:
        accs = []
        for seed in seeds:
            cpu = time.process_time()
            entry = train(CNN_ARM, [f"seed={seed}", *overrides])
            entry["cpu_seconds"] = time.process_time() - cpu
            entries[(label, seed)] = entry
            result = entry["result"]
            acc = result.metrics.get("test/accuracy")
            accs.append(acc)
            rows.append([label, seed, fmt(acc, 4), "yes" if acc >= CNN_TARGET else "no",
                         ", ".join(fmt(v, 4) for v in result.history["val/accuracy"]),
                         f"{entry['seconds']:.0f}s", f"{entry['cpu_seconds']:.0f}s", findings_line(entry["diagnosis"])])
            out["runs"][f"{label} / seed {seed}"] = {
                "overrides": overrides, "seed": seed, "test_accuracy": acc,
                "val_accuracy": result.history["val/accuracy"], "train_loss": result.history["train/loss"],
                "wall_seconds": entry["seconds"], "cpu_seconds": entry["cpu_seconds"],
                "diagnosis": entry["diagnosis"].to_json() if entry["diagnosis"] else None}
        accs = np.array(accs)
        out.setdefault("summary", {})[label] = {
            "mean": float(accs.mean()), "std": float(accs.std(ddof=1)) if len(accs) > 1 else 0.0,
            "min": float(accs.min()), "max": float(accs.max()), "all_reach_target": bool((accs >= CNN_TARGET).all())}
    print(f"\n### CNN on MNIST: test accuracy after 3 epochs (target {CNN_TARGET:.1%})\n")
    table_runs = markdown_table(["spec", "seed", "test acc", f">= {CNN_TARGET:.1%}", "val acc per epoch",
                                 "wall time", "CPU time", "diagnose"], rows)
    print(table_runs)
    rows = [[label, len(seeds), fmt(s["mean"], 4), fmt(s["std"], 2), f"{fmt(s['min'], 4)} .. {fmt(s['max'], 4)}",
             "yes" if s["all_reach_target"] else "no"] for label, s in out["summary"].items()]
    table_summary = markdown_table(["spec", "seeds", "mean test acc", "std (ddof 1)", "min .. max", "all >= target"], rows)
    print()
    print(table_summary)

    # Per-layer gradient flow of the first seed's run.
    entry = entries[(variants[0][0], seeds[0])]
    record = entry["record"]
    bp = np.asarray(record.layer("backprop_norm"), np.float64)
    gn = np.asarray(record.layer("grad_norm"), np.float64)
    ur = np.asarray(record.layer("update_ratio"), np.float64)
    dead = np.asarray(record.layer("dead_frac"), np.float64)
    rows = []
    for e in range(int(record.epochs.max()) + 1):
        mask = record.epochs == e
        rows.append([f"epoch {e + 1}", *[f"{fmt(a)} / {fmt(b)} / {fmt(c)} / {fmt(d, 2)}" for a, b, c, d in zip(
            nanmedian(bp[mask] / bp[mask][:, -1:]), nanmedian(gn[mask]), nanmedian(ur[mask]), nanmedian(dead[mask]))]])
    first = [f"{fmt(bp[0, j] / bp[0, -1])} / {fmt(gn[0, j])} / {fmt(ur[0, j])} / {fmt(dead[0, j], 2)}"
             for j in range(len(record.layers))]
    rows.insert(0, ["step 0", *first])
    print(f"\n### CNN gradient flow (seed {seeds[0]}): ||dL/ds_i||/||dL/ds_out|| / ||dL/dW_i|| / update ratio / "
          "dead fraction, median per epoch\n")
    table_flow = markdown_table(["when", *record.layers], rows)
    print(table_flow)
    if entry["diagnosis"] is not None:
        print(f"\ndiagnose on {CNN_ARM} (seed {seeds[0]}):\n")
        print(entry["diagnosis"].report())
    out["tables"] = {"runs": table_runs, "summary": table_summary, "flow": table_flow}
    out["gradient_flow_layers"] = record.layers

    fig, (ax_acc, ax_bp, ax_gn) = new_figure(15, 4.2, 3)
    palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b"]
    for i, ((label, seed), e) in enumerate(entries.items()):
        val = e["result"].history["val/accuracy"]
        ax_acc.plot(np.arange(1, len(val) + 1), val, "o-" if label == variants[0][0] else "s--", ms=4,
                    color=palette[seeds.index(seed) % len(palette)], label=f"seed {seed}" + ("" if label == variants[0][0] else f" ({label})"))
    ax_acc.axhline(CNN_TARGET, color="grey", ls=":", lw=1, label=f"{CNN_TARGET:.1%}")
    ax_acc.set_xlabel("epoch")
    ax_acc.set_ylabel("validation accuracy")
    ax_acc.set_title("Validation accuracy per epoch", fontsize=10)
    layer_colors = ["#440154", "#21918c", "#e66101", "#d62728"]
    for j, name in enumerate(record.layers):
        ax_bp.semilogy(*moving_mean(record.steps, bp[:, j] / bp[:, -1], 5), color=layer_colors[j % 4], lw=1, label=name)
        ax_gn.semilogy(*moving_mean(record.steps, gn[:, j], 5), color=layer_colors[j % 4], lw=1, label=name)
    ax_bp.set_xlabel("step")
    ax_bp.set_ylabel("‖dL/ds_i‖ / ‖dL/ds_output‖")
    ax_bp.set_title(f"Back-propagated gradient per layer (seed {seeds[0]})", fontsize=10)
    ax_gn.set_xlabel("step")
    ax_gn.set_ylabel("‖dL/dW_i‖")
    ax_gn.set_title(f"Weight gradient per layer (seed {seeds[0]})", fontsize=10)
    for ax in (ax_acc, ax_bp, ax_gn):
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("A small CNN on MNIST: conv 5x5x32, max pool, conv 3x3x64, max pool, dense 10; Adam 1e-3, "
                 "batch 128, 3 epochs", fontsize=11)
    save_figure(fig, "mnist_cnn", results_dir)
    return out


# ----------------------------------------------------------------------------- main
RUNNERS = {"degradation": degradation, "veit": veit, "shattered": shattered, "cnn": cnn}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default=",".join(EXPERIMENTS),
                        help=f"comma-separated experiments to run, of {', '.join(EXPERIMENTS)} (default: all)")
    parser.add_argument("--seeds", default="0,1,2", help="seeds of the MNIST CNN (default 0,1,2)")
    parser.add_argument("--degradation-epochs", type=int, default=None,
                        help="train the degradation arms this many epochs instead of their specs' 3")
    parser.add_argument("--cnn-variant", action="append", default=[], metavar="KEY=VALUE",
                        help="also run the CNN seeds with this override (repeatable), e.g. optimizer.lr=0.002")
    args = parser.parse_args(argv)
    chosen = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in RUNNERS]
    if unknown:
        parser.error(f"unknown experiment(s) {', '.join(unknown)}: choose from {', '.join(EXPERIMENTS)}")
    stamp = time.strftime("%Y%m%dT%H%M%S")
    results_dir = RESULTS_DIR / f"architecture-{stamp}"
    results_dir.mkdir(parents=True, exist_ok=True)
    payload: dict = {"machine": machine_facts(), "experiments": {}, "seconds": {}}
    shared: dict = {}
    total = time.perf_counter()
    for name in chosen:
        start = time.perf_counter()
        payload["experiments"][name] = RUNNERS[name](results_dir, args, shared)
        payload["seconds"][name] = round(time.perf_counter() - start, 1)
        print(f"  [{name}: {payload['seconds'][name]:.0f}s]", flush=True)
    payload["seconds"]["total"] = round(time.perf_counter() - total, 1)
    path = save_results("architecture_experiments", payload, results_dir / "architecture_experiments.json")
    print(f"\ntotal {payload['seconds']['total']:.0f}s ({', '.join(f'{k} {v:.0f}s' for k, v in payload['seconds'].items() if k != 'total')}); "
          f"results {path.relative_to(REPO_ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
