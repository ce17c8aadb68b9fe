"""Training throughput: one epoch of a 784-512-512-10 ReLU MLP on MNIST, batch 128, float32.

Times, in one run and interleaved round by round (so that a noisy neighbour
hits every contender alike):

- workbench's Trainer (heavy-ball momentum SGD and Adam),
- PyTorch on the CPU with the same thread count as numpy's BLAS (when importable),
- scikit-learn's MLPClassifier (solver "sgd", batch 128, max_iter=1, warm start),

and the float32 GEMM rate of numpy's BLAS for this MLP's exact GEMMs (shapes and
memory layouts of the forward and backward passes) and for a big square matmul.
Our epoch's achieved GFLOP/s counts the GEMM flops only: forward 2*n*in*out
per dense layer, backward 4*n*in*out, except the first layer (2*n*in*out: no dX).

Targets (the issue): our epoch <= 0.9x PyTorch's time, and >= 80% of the GEMM rate.
After the timed epochs every parameter, gradient, optimizer state array and model
output of our runs must be float32 (silent float64 upcasts under NEP 50): any
other dtype exits with status 1.

    .venv/bin/python benchmarks/train_throughput.py                  # the full benchmark
    .venv/bin/python benchmarks/train_throughput.py --profile        # + where our epoch's time goes
    .venv/bin/python benchmarks/train_throughput.py --limit 6000 --repeats 1 --no-torch --no-sklearn  # smoke test
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
import warnings
from collections import defaultdict

import _common  # noqa: F401  (puts the repository root on sys.path)
import numpy as np
from _common import DEFAULT_MNIST_DIR, Stopwatch, markdown_table, median, save_results

from workbench.data import load_dataset
from workbench.nn.losses import CrossEntropy
from workbench.nn.model import Architecture, build_model
from workbench.nn.optim import build_optimizer
from workbench.training import Hook, Trainer

HIDDEN = (512, 512)
N_IN, N_OUT = 784, 10
BATCH = 128
SIZES = (N_IN, *HIDDEN, N_OUT)
LEARNING_RATES = {"momentum": 0.01, "adam": 1e-3}
MOMENTUM = 0.9
TARGET_TIME_RATIO = 0.9    # our epoch <= 0.9x PyTorch's
TARGET_GEMM_FRACTION = 0.8  # our epoch >= 80% of the GEMM rate


# -- flop counts and GEMM rates ------------------------------------------------------------------
def epoch_flops(n_samples: int) -> float:
    """GEMM flops of one epoch: per dense layer 2*n*in*out forward, 2*n*in*out for dW, 2*n*in*out for dX (not layer 1)."""
    total = 0
    for i, (fan_in, fan_out) in enumerate(zip(SIZES[:-1], SIZES[1:])):
        passes = 2 if i == 0 else 3
        total += passes * 2 * n_samples * fan_in * fan_out
    return float(total)


def mlp_gemms(batch: int = BATCH) -> list[tuple[str, str, tuple[int, int, int]]]:
    """(name, layout, (m, k, n)) of every GEMM in one training step, as workbench's Dense computes them."""
    gemms = []
    for i, (fan_in, fan_out) in enumerate(zip(SIZES[:-1], SIZES[1:]), start=1):
        gemms.append((f"dense{i} forward  x @ W", "NN", (batch, fan_in, fan_out)))
        gemms.append((f"dense{i} backward x.T @ g", "TN", (fan_in, batch, fan_out)))
        if i > 1:
            gemms.append((f"dense{i} backward g @ W.T", "NT", (batch, fan_out, fan_in)))
    return gemms


def time_call(fn, min_seconds: float = 0.03, rounds: int = 9) -> float:
    """Best (smallest) seconds per call over `rounds` rounds of enough calls to last `min_seconds` each.

    The best round, not the median: a GEMM's rate is what the machine can do, and on a
    shared machine every disturbance only ever makes a round slower.
    """
    fn()
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < min_seconds / 4:
        fn()
        calls += 1
    per_round = max(1, int(calls * 4))
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(per_round):
            fn()
        samples.append((time.perf_counter() - start) / per_round)
    return min(samples)


def gemm_operands(layout: str, m: int, k: int, n: int, rng: np.random.Generator):
    """float32 (m x k) and (k x n) operands laid out as the training step has them."""
    f32 = np.float32
    if layout == "NN":    # x (m, k) C-order @ W (k, n) C-order
        return rng.random((m, k), dtype=f32), rng.random((k, n), dtype=f32)
    if layout == "TN":    # x.T: a transposed view of the (k, m) batch; g (k, n) C-order
        return rng.random((k, m), dtype=f32).T, rng.random((k, n), dtype=f32)
    return rng.random((m, k), dtype=f32), rng.random((n, k), dtype=f32).T  # "NT": g @ W.T, W stored (n, k)


def gemm_rate(layout: str, m: int, k: int, n: int, rng: np.random.Generator) -> float:
    """GFLOP/s of numpy's float32 (m x k) @ (k x n), into a preallocated output."""
    a, b = gemm_operands(layout, m, k, n, rng)
    out = np.empty((m, n), np.float32)
    return 2.0 * m * k * n / time_call(lambda: np.matmul(a, b, out=out)) / 1e9


def torch_gemm_rate(layout: str, m: int, k: int, n: int, rng: np.random.Generator) -> float:
    """The same GEMM through torch.matmul (its BLAS), same layouts, into a preallocated output."""
    import torch

    a, b = (torch.from_numpy(np.ascontiguousarray(t.T)).T if not t.flags.c_contiguous else torch.from_numpy(t)
            for t in gemm_operands(layout, m, k, n, rng))
    out = torch.empty((m, n), dtype=torch.float32)
    return 2.0 * m * k * n / time_call(lambda: torch.matmul(a, b, out=out)) / 1e9


def measure_gemms(square: int, with_torch: bool) -> dict:
    rng = np.random.default_rng(0)
    rows, step_flops, step_seconds, torch_seconds = [], 0.0, 0.0, 0.0
    for name, layout, (m, k, n) in mlp_gemms():
        rate = gemm_rate(layout, m, k, n, rng)
        flops = 2.0 * m * k * n
        step_flops += flops
        step_seconds += flops / (rate * 1e9)
        row = {"gemm": name, "layout": layout, "m": m, "k": k, "n": n, "gflops": rate}
        if with_torch:
            row["torch_gflops"] = torch_gemm_rate(layout, m, k, n, rng)
            torch_seconds += flops / (row["torch_gflops"] * 1e9)
        rows.append(row)
    a, b = gemm_operands("NN", square, square, square, rng)
    out = np.empty((square, square), np.float32)
    result = {
        "shapes": rows,
        "mlp_step_gflops": step_flops / step_seconds / 1e9,  # all of one step's GEMMs back to back
        "square_n": square,
        "square_gflops": 2.0 * square**3 / time_call(lambda: np.matmul(a, b, out=out), min_seconds=0.1, rounds=5) / 1e9,
    }
    if with_torch:
        result["torch_mlp_step_gflops"] = step_flops / torch_seconds / 1e9
    return result


def step_rate(shapes: list[dict], key: str) -> float:
    """GFLOP/s of all of one step's GEMMs back to back, from the per-shape rates."""
    flops = [2.0 * g["m"] * g["k"] * g["n"] for g in shapes]
    return sum(flops) / sum(f / g[key] for f, g in zip(flops, shapes))


def best_of(first: dict, second: dict) -> dict:
    """Per figure, the higher of two GEMM measurements (taken before and after the epochs)."""
    shapes = [{**a, **{k: max(a[k], b[k]) for k in a if k.endswith("gflops")}}
              for a, b in zip(first["shapes"], second["shapes"])]
    merged = {**first, "shapes": shapes, "square_gflops": max(first["square_gflops"], second["square_gflops"]),
              "mlp_step_gflops": step_rate(shapes, "gflops")}
    if "torch_mlp_step_gflops" in first:
        merged["torch_mlp_step_gflops"] = step_rate(shapes, "torch_gflops")
    return merged


# -- contenders ------------------------------------------------------------------------------------
class EpochTimer(Hook):
    """Times each epoch from on_epoch_begin to on_epoch_end (the shuffle, every batch, the empty val pass)."""

    def __init__(self) -> None:
        self.seconds: list[float] = []

    def on_epoch_begin(self, trainer) -> None:
        self._start = time.perf_counter()

    def on_epoch_end(self, trainer, logs) -> None:
        self.seconds.append(time.perf_counter() - self._start)


class Ours:
    framework = "workbench"

    def __init__(self, data, optimizer: str, seed: int) -> None:
        self.optimizer_name = optimizer
        self.model = build_model(Architecture(N_IN, N_OUT, HIDDEN, "relu"), rng=np.random.default_rng(seed))
        self.optimizer = build_optimizer(self.model.parameters(), optimizer, lr=LEARNING_RATES[optimizer],
                                         momentum=MOMENTUM)
        self.trainer = Trainer(self.model, CrossEntropy(), self.optimizer, data, epochs=0, batch_size=BATCH,
                               rng=np.random.default_rng(seed))
        self.timer = EpochTimer()
        self.trainer.register(self.timer)
        self.losses: list[float] = []

    def epoch(self) -> float:
        self.trainer.epochs += 1
        result = self.trainer.fit()
        if result.status != "FINISHED":
            raise RuntimeError(f"workbench {self.optimizer_name}: training ended {result.status}: {result.reason}")
        self.losses.append(self.trainer.logs["train/loss"])
        return self.timer.seconds[-1]


class Torch:
    framework = "pytorch"

    def __init__(self, data, optimizer: str, seed: int, threads: int, init_model) -> None:
        import torch

        torch.set_num_threads(threads)
        torch.manual_seed(seed)
        self.torch, self.optimizer_name = torch, optimizer
        layers = []
        for i, (fan_in, fan_out) in enumerate(zip(SIZES[:-1], SIZES[1:]), start=1):
            linear = torch.nn.Linear(fan_in, fan_out)
            with torch.no_grad():  # the same initial weights as our model
                linear.weight.copy_(torch.from_numpy(init_model.layer(f"dense{i}").params["W"].T.copy()))
                linear.bias.copy_(torch.from_numpy(init_model.layer(f"dense{i}").params["b"]))
            layers.append(linear)
            if i < len(SIZES) - 1:
                layers.append(torch.nn.ReLU())
        self.net = torch.nn.Sequential(*layers)
        params = self.net.parameters()
        self.opt = (torch.optim.SGD(params, lr=LEARNING_RATES[optimizer], momentum=MOMENTUM) if optimizer == "momentum"
                    else torch.optim.Adam(params, lr=LEARNING_RATES[optimizer]))
        self.loss_fn = torch.nn.CrossEntropyLoss()
        self.X, self.y = torch.from_numpy(data.X_train), torch.from_numpy(data.y_train)
        self.generator = torch.Generator().manual_seed(seed)
        self.losses: list[float] = []

    def epoch(self) -> float:
        torch, net, opt, loss_fn, X, y = self.torch, self.net, self.opt, self.loss_fn, self.X, self.y
        n = len(X)
        net.train()
        total = torch.zeros((), dtype=torch.float64)
        with Stopwatch() as sw:
            order = torch.randperm(n, generator=self.generator)
            for start in range(0, n, BATCH):
                index = order[start : start + BATCH]
                xb, yb = X[index], y[index]
                opt.zero_grad(set_to_none=True)
                loss = loss_fn(net(xb), yb)
                loss.backward()
                opt.step()
                total += loss.detach() * len(index)
        self.losses.append(float(total) / n)
        return sw.seconds


class Sklearn:
    framework = "scikit-learn"

    def __init__(self, data, optimizer: str, seed: int) -> None:
        from sklearn.neural_network import MLPClassifier

        assert optimizer == "momentum"
        self.optimizer_name = optimizer
        self.X, self.y = data.X_train, data.y_train
        # heavy-ball momentum like the others; alpha=0 (sklearn still adds alpha * W, so the cost is the same)
        self.clf = MLPClassifier(hidden_layer_sizes=HIDDEN, activation="relu", solver="sgd", batch_size=BATCH,
                                 learning_rate_init=LEARNING_RATES[optimizer], momentum=MOMENTUM,
                                 nesterovs_momentum=False, alpha=0.0, max_iter=1, warm_start=True, shuffle=True,
                                 random_state=seed)
        self.losses: list[float] = []

    def epoch(self) -> float:
        from sklearn.exceptions import ConvergenceWarning

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            with Stopwatch() as sw:
                self.clf.fit(self.X, self.y)  # warm_start + max_iter=1: one more epoch
        self.losses.append(float(self.clf.loss_))
        return sw.seconds


# -- float32 discipline --------------------------------------------------------------------------
def dtype_violations(run: Ours, X: np.ndarray) -> list[str]:
    """Every array of the run that is not float32 (integer 0-d step counters excepted)."""
    bad = []

    def check(kind: str, name: str, value) -> None:
        value = np.asarray(value)
        if value.dtype == np.float32:
            return
        if value.ndim == 0 and np.issubdtype(value.dtype, np.integer):
            return  # "step", "adam.count"
        bad.append(f"{kind} {name}: {value.dtype}{list(value.shape)}")

    model = run.model
    for name, value in model.parameters().items():
        check("parameter", name, value)
    for name, value in model.gradients().items():
        check("gradient", name, value)
    for name, value in run.optimizer.state_dict().items():
        check("optimizer state", name, value)
    for name, value in model.outputs.items():  # cached by the last training forward pass
        check("training output of", name, value)
    for name, value in model.grad_outputs.items():
        check("gradient at the output of", name, value)
    check("trainer", "batch output", run.trainer.output)
    check("model", "predict() output", model.predict(X[:1000]))
    check("model", "forward(training=True) output", model.forward(X[:BATCH], training=True))
    _, grad = CrossEntropy()(model.forward(X[:BATCH]), np.zeros(BATCH, np.int64))
    check("loss", "gradient", grad)
    return bad


# -- profile of one of our epochs ----------------------------------------------------------------------
def profile_epoch(data, optimizer: str, seed: int) -> dict:
    """Wall time of one epoch split by layer call, loss, optimizer step and the rest (shuffle, X[index], loop)."""
    run = Ours(data, optimizer, seed)
    run.epoch()  # warm up
    spent: dict[str, float] = defaultdict(float)

    def timed(fn, key):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[key] += time.perf_counter() - start
        return wrapper

    for layer in run.model.layers:
        file = sys.modules[type(layer).__module__].__file__.split("workbench/", 1)[-1]
        layer.forward = timed(layer.forward, f"{layer.name}.forward ({type(layer).__name__}, workbench/{file})")
        layer.backward = timed(layer.backward, f"{layer.name}.backward ({type(layer).__name__}, workbench/{file})")
    run.trainer.loss = timed(run.trainer.loss, "loss: CrossEntropy.__call__ (workbench/nn/losses.py)")
    run.optimizer.step = timed(run.optimizer.step,
                               f"optimizer.step ({optimizer}, workbench/nn/optim/optimizer.py + transforms.py)")
    total = run.epoch()
    parts = dict(sorted(spent.items(), key=lambda kv: -kv[1]))
    parts["rest: shuffle, X[index] gather, loop, hooks"] = total - sum(spent.values())
    gather = time_call(lambda: data.X_train[np.random.default_rng(0).permutation(len(data.X_train))[:BATCH]], rounds=3)
    lines, traced_total = line_profile(run.epoch)
    return {"optimizer": optimizer, "epoch_seconds": total, "parts": parts,
            "gather_one_batch_seconds_x_steps": gather * run.trainer.steps_per_epoch,
            "lines": lines, "traced_epoch_seconds": traced_total}


def line_profile(fn) -> tuple[list[dict], float]:
    """Exclusive wall time per source line of workbench/ while `fn()` runs (a small line tracer).

    A line's time is from its 'line' event to the next event of any traced frame, so
    C calls (numpy, BLAS) count on the line that makes them, and nested workbench calls
    on their own lines. The tracer's own cost is kept out of the intervals as far as it can be.
    """
    import linecache

    root = str(_common.REPO_ROOT / "workbench")
    stats: dict[tuple[str, int], float] = defaultdict(float)
    hits: dict[tuple[str, int], int] = defaultdict(int)
    clock = time.perf_counter
    state = [None, 0.0]

    def local(frame, event, arg):
        now = clock()
        if state[0] is not None:
            stats[state[0]] += now - state[1]
        if event == "line":
            key = (frame.f_code.co_filename, frame.f_lineno)
            hits[key] += 1
            state[0] = key
        elif event == "return":
            caller = frame.f_back
            state[0] = (caller.f_code.co_filename, caller.f_lineno) if caller is not None else None
        state[1] = clock()
        return local

    def tracer(frame, event, arg):
        if not frame.f_code.co_filename.startswith(root):
            return None
        return local(frame, event, arg)

    start = clock()
    sys.settrace(tracer)
    try:
        fn()
    finally:
        sys.settrace(None)
    total = clock() - start
    out = []
    for (file, line), seconds in sorted(stats.items(), key=lambda kv: -kv[1]):
        if not file.startswith(root):
            continue
        out.append({"file": "workbench" + file[len(root):], "line": line, "seconds": seconds, "hits": hits[(file, line)],
                    "source": linecache.getline(file, line).strip()})
    return out, total


# -- main --------------------------------------------------------------------------------------------------
def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(DEFAULT_MNIST_DIR), help="folder of the MNIST IDX files (default: %(default)s)")
    p.add_argument("--repeats", type=int, default=5, help="timed epochs per contender, after one warm-up (default 5)")
    p.add_argument("--threads", type=int, default=None, help="BLAS / torch threads (default: numpy's BLAS setting)")
    p.add_argument("--optimizers", default="momentum,adam", help="ours and PyTorch's (default: momentum,adam)")
    p.add_argument("--no-torch", action="store_true", help="leave PyTorch out")
    p.add_argument("--no-sklearn", action="store_true", help="leave scikit-learn out")
    p.add_argument("--limit", type=int, default=None, help="train on this many images only (smoke tests)")
    p.add_argument("--square", type=int, default=2048, help="size of the square GEMM (default 2048)")
    p.add_argument("--profile", action="store_true", help="also split one of our epochs by layer and step")
    p.add_argument("--top", type=int, default=20, help="lines shown by --profile (default 20)")
    p.add_argument("--strict", action="store_true", help="exit 2 when a target is missed")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="results file (default: benchmarks/results/train_throughput-<time>.json)")
    return p.parse_args(argv)


def fmt(x: float, digits: int = 2) -> str:
    return f"{x:.{digits}f}"


def main(argv=None) -> int:
    args = parse_args(argv)
    from threadpoolctl import threadpool_limits

    _common.warn_if_busy()
    limiter = threadpool_limits(limits=args.threads, user_api="blas") if args.threads else None
    threads = _common.blas_threads()
    facts = _common.machine_facts()

    with Stopwatch() as load_time:
        data = load_dataset("mnist", path=args.data, dtype="float32", val_fraction=0.0, standardize=False,
                            limit=args.limit, seed=args.seed)
    X = data.X_train
    if X.dtype != np.float32 or X.shape[1] != N_IN or X.min() < 0.0 or X.max() > 1.0:
        print(f"error: MNIST training images are {X.dtype}{X.shape} in [{X.min()}, {X.max()}], "
              "expected float32 (n, 784) in [0, 1]", file=sys.stderr)
        return 1
    data = dataclasses.replace(data, X_test=data.X_test[:0], y_test=data.y_test[:0])  # no test pass after each fit()
    n = len(X)
    flops = epoch_flops(n)
    print(f"MNIST: {n} training images, {X.dtype}, loaded in {load_time.seconds:.1f} s; BLAS threads: {threads}; "
          f"GEMM work per epoch: {flops / 1e9:.1f} GFLOP", flush=True)

    torch_error = None
    if not args.no_torch:
        try:
            import torch

            torch.set_num_threads(threads)
        except ImportError as error:
            torch_error = f"not importable ({error})"
    with_torch = not args.no_torch and torch_error is None

    gemm_before = measure_gemms(args.square, with_torch)
    print(f"numpy float32 GEMM: this MLP's GEMMs {gemm_before['mlp_step_gflops']:.0f} GFLOP/s, "
          f"{args.square}^3 square {gemm_before['square_gflops']:.0f} GFLOP/s", flush=True)

    optimizers = [o.strip() for o in args.optimizers.split(",") if o.strip()]
    contenders: list = [Ours(data, opt, args.seed) for opt in optimizers]
    if with_torch:
        init_model = build_model(Architecture(N_IN, N_OUT, HIDDEN, "relu"), rng=np.random.default_rng(args.seed))
        contenders += [Torch(data, opt, args.seed, threads, init_model) for opt in optimizers]
    if not args.no_sklearn:
        contenders.append(Sklearn(data, "momentum", args.seed))

    times: dict[int, list[float]] = defaultdict(list)
    for c in contenders:  # warm-up epoch: first touches, BLAS buffers, caches
        c.epoch()
        print(f"  warm-up {c.framework} {c.optimizer_name} done", flush=True)
    for r in range(args.repeats):  # round-robin, so that machine noise is shared
        for i, c in enumerate(contenders):
            times[i].append(c.epoch())
        print(f"  round {r + 1}/{args.repeats}: " + ", ".join(
            f"{c.framework}/{c.optimizer_name} {times[i][-1]:.2f}s" for i, c in enumerate(contenders)), flush=True)

    violations = {}
    for c in contenders:
        if isinstance(c, Ours):
            bad = dtype_violations(c, X)
            if bad:
                violations[c.optimizer_name] = bad

    gemm = best_of(gemm_before, measure_gemms(args.square, with_torch))
    rows, results = [], []
    torch_time = {c.optimizer_name: median(times[i]) for i, c in enumerate(contenders) if isinstance(c, Torch)}
    torch_best = {c.optimizer_name: min(times[i]) for i, c in enumerate(contenders) if isinstance(c, Torch)}
    for i, c in enumerate(contenders):
        t, best = median(times[i]), min(times[i])
        achieved = flops / t / 1e9
        vs_torch = t / torch_time[c.optimizer_name] if c.optimizer_name in torch_time else None
        best_vs_torch = best / torch_best[c.optimizer_name] if c.optimizer_name in torch_best else None
        entry = {"framework": c.framework, "optimizer": c.optimizer_name, "threads": threads,
                 "epoch_seconds": times[i], "median_seconds": t, "best_seconds": best, "gflops": achieved,
                 "fraction_of_mlp_gemm_rate": achieved / gemm["mlp_step_gflops"],
                 "best_fraction_of_mlp_gemm_rate": flops / best / 1e9 / gemm["mlp_step_gflops"],
                 "fraction_of_square_gemm_rate": achieved / gemm["square_gflops"],
                 "time_vs_pytorch": vs_torch, "best_time_vs_pytorch": best_vs_torch,
                 "train_loss_last_epoch": c.losses[-1]}
        results.append(entry)
        rows.append([c.framework, "SGD momentum 0.9" if c.optimizer_name == "momentum" else "Adam",
                     fmt(t), fmt(best), fmt(max(times[i])), f"{n / t:,.0f}",
                     "-" if vs_torch is None else f"{vs_torch:.2f}x", "-" if best_vs_torch is None else f"{best_vs_torch:.2f}x",
                     f"{achieved:.0f}", f"{100 * entry['fraction_of_mlp_gemm_rate']:.0f}%",
                     f"{100 * entry['fraction_of_square_gemm_rate']:.0f}%", f"{c.losses[-1]:.4f}"])
    headers = ["framework", "optimizer", "epoch s (median)", "best", "worst", "images/s", "time vs PyTorch",
               "best vs best", "GFLOP/s", "% MLP GEMM rate", "% square GEMM rate", "train loss (last epoch)"]
    table = markdown_table(headers, rows)
    gemm_headers = ["GEMM (float32)", "m x k x n", "layout", "numpy GFLOP/s"] + (["torch GFLOP/s"] if with_torch else [])
    gemm_rows = [[g["gemm"], f"{g['m']} x {g['k']} x {g['n']}", g["layout"], f"{g['gflops']:.0f}"]
                 + ([f"{g['torch_gflops']:.0f}"] if with_torch else []) for g in gemm["shapes"]]
    gemm_rows.append(["this MLP's step, all GEMMs", "", "", f"{gemm['mlp_step_gflops']:.0f}"]
                     + ([f"{gemm['torch_mlp_step_gflops']:.0f}"] if with_torch else []))
    gemm_rows.append([f"square {args.square}^3", "", "NN", f"{gemm['square_gflops']:.0f}"] + ([""] if with_torch else []))
    gemm_table = markdown_table(gemm_headers, gemm_rows)

    targets = []
    for r in results:
        if r["framework"] != "workbench":
            continue
        if r["time_vs_pytorch"] is not None:
            targets.append({"target": f"{r['optimizer']}: epoch <= {TARGET_TIME_RATIO}x PyTorch's (median)",
                            "value": f"{r['time_vs_pytorch']:.2f}x (best vs best {r['best_time_vs_pytorch']:.2f}x)",
                            "met": r["time_vs_pytorch"] <= TARGET_TIME_RATIO})
        targets.append({"target": f"{r['optimizer']}: >= {TARGET_GEMM_FRACTION:.0%} of the MLP GEMM rate (median)",
                        "value": f"{r['fraction_of_mlp_gemm_rate']:.0%} (best epoch {r['best_fraction_of_mlp_gemm_rate']:.0%})",
                        "met": r["fraction_of_mlp_gemm_rate"] >= TARGET_GEMM_FRACTION})
    targets.append({"target": "all arrays float32 after training", "value": "yes" if not violations else "NO",
                    "met": not violations})

    facts["load_average_1min_at_end"] = _common.load_average()
    print()
    print(f"One epoch, 784-512-512-10 ReLU MLP, batch {BATCH}, {n} MNIST images, float32, {threads} BLAS threads "
          f"({facts['cpu']}, {facts['logical_cpus']} CPUs); median of {args.repeats} epochs after 1 warm-up; "
          f"load average {facts['load_average_1min_at_start']} at start, {facts['load_average_1min_at_end']} at end")
    print()
    print(table)
    print()
    print("GEMM rates (best of 9 rounds, the better of a measurement before and one after the epochs):")
    print()
    print(gemm_table)
    print()
    print(markdown_table(["target", "measured", "met"],
                         [[t["target"], t["value"], "yes" if t["met"] else "NO"] for t in targets]))
    if torch_error:
        print(f"\nPyTorch left out: {torch_error}")

    profile = None
    if args.profile:
        profile = [profile_epoch(data, opt, args.seed) for opt in optimizers]
        for p in profile:
            print(f"\nWhere one workbench epoch goes ({p['optimizer']}, {p['epoch_seconds']:.2f} s, profiled):\n")
            print(markdown_table(["part", "seconds", "share"],
                                 [[k, fmt(v, 3), f"{100 * v / p['epoch_seconds']:.0f}%"] for k, v in p["parts"].items()]))
            print(f"(of the rest: X[index] gathers alone take {p['gather_one_batch_seconds_x_steps']:.3f} s per epoch)")
            traced = p["traced_epoch_seconds"]
            print(f"\nHottest lines ({p['optimizer']}; exclusive time, one epoch under a line tracer: {traced:.2f} s):\n")
            print(markdown_table(["file:line", "source", "seconds", "share", "calls"],
                                 [[f"{r['file']}:{r['line']}", f"`{r['source'][:70]}`", fmt(r["seconds"], 3),
                                   f"{100 * r['seconds'] / traced:.0f}%", str(r["hits"])] for r in p["lines"][:args.top]]))

    path = save_results("train_throughput", {
        "machine": facts, "threads": threads, "n_images": n, "batch_size": BATCH, "sizes": SIZES,
        "epoch_gflop": flops / 1e9, "gemm": gemm, "gemm_before": gemm_before, "results": results, "targets": targets,
        "dtype_violations": violations, "torch": torch_error or ("left out" if args.no_torch else "included"),
        "profile": profile, "table": table, "gemm_table": gemm_table,
    }, args.json)
    print(f"\nresults: {path}")
    if limiter is not None:
        limiter.restore_original_limits()
    if violations:
        print("\nFAIL: arrays that are not float32 after training (a silent float64 upcast?):", file=sys.stderr)
        for opt, bad in violations.items():
            for line in bad:
                print(f"  [{opt}] {line}", file=sys.stderr)
        return 1
    if args.strict and not all(t["met"] for t in targets):
        print("targets missed (--strict)", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
