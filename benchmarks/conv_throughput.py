"""Convolution throughput: one epoch of a small CNN on MNIST, batch 128, float32, workbench vs PyTorch (CPU).

The network (both frameworks, the same initial weights):

    1x28x28 -> conv 32 5x5 (same) -> relu -> max pool 2 -> conv 64 3x3 (same) -> relu -> max pool 2
            -> flatten (3136) -> dense 10,   softmax cross-entropy, Adam (lr 1e-3) or momentum SGD.

Both run the same plain loop (shuffle, gather a batch, forward, loss, backward,
step); the two epochs run interleaved, 10 steps of one then 10 of the other
(`--interleave`), each framework's epoch time the sum of its own turns, so a
noisy neighbour on a shared machine slows both alike. PyTorch gets as many
threads as numpy's BLAS. Reported: seconds per epoch, the ratio
(target: workbench <= 1.5x PyTorch's time), the CPU seconds each spent (all
threads: on a busy machine the steadier figure, though spinning threads count), the GEMM work per epoch, and from a
profiling pass (a few hundred steps, each layer's forward and backward wrapped
with perf_counter) the share of the step spent in each layer's forward and
backward, the loss and the optimizer. Afterwards every parameter, gradient,
optimizer state, layer output and gradient of our model must be float32 (exit 1
otherwise).

    .venv/bin/python benchmarks/conv_throughput.py --epochs 1
    .venv/bin/python benchmarks/conv_throughput.py --limit 6000 --no-torch      # smoke test
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict

import _common
import numpy as np
from _common import DEFAULT_MNIST_DIR, Stopwatch, markdown_table, median, save_results

from workbench.data.mnist import load_mnist_arrays
from workbench.nn.losses import CrossEntropy
from workbench.nn.model import build_network
from workbench.nn.optim import build_optimizer

BATCH = 128
IMAGE = (1, 28, 28)
LAYERS = [
    {"type": "conv2d", "filters": 32, "kernel": 5},
    {"type": "relu"},
    {"type": "max_pool2d", "size": 2},
    {"type": "conv2d", "filters": 64, "kernel": 3},
    {"type": "relu"},
    {"type": "max_pool2d", "size": 2},
    {"type": "flatten"},
]
N_OUT = 10
LEARNING_RATES = {"adam": 1e-3, "momentum": 0.01}
TARGET_RATIO = 1.5  # our epoch <= 1.5x PyTorch's


def epoch_gflop(n: int) -> float:
    """GEMM flops per epoch: forward 2 P K F per conv, backward 2 P K F for dW and (not conv1) 2 P K F for dx."""
    conv1 = 2 * 28 * 28 * 25 * 1 * 32
    conv2 = 2 * 14 * 14 * 9 * 32 * 64
    dense = 2 * 3136 * 10
    return n * (2 * conv1 + 3 * conv2 + 3 * dense) / 1e9


# -- contenders ---------------------------------------------------------------------------------------
class Contender:
    """An epoch as a sequence of steps that can be run a few at a time (so that contenders interleave)."""

    framework = "?"

    def start_epoch(self) -> None:
        cpu = time.process_time()
        with Stopwatch() as sw:
            self.order = self.shuffle()
        self.seconds, self.position, self.loss_sum = sw.seconds, 0, 0.0
        self.cpu_seconds = time.process_time() - cpu

    def run_steps(self, count: int) -> bool:
        """Up to `count` more steps of the epoch, timed; False when the epoch is done."""
        n = len(self.order)
        cpu = time.process_time()
        with Stopwatch() as sw:
            for _ in range(count):
                if self.position >= n:
                    break
                index = self.order[self.position : self.position + BATCH]
                self.loss_sum += self.step(index) * len(index)
                self.position += len(index)
        self.seconds += sw.seconds
        self.cpu_seconds += time.process_time() - cpu  # all threads of the process (spinning ones too)
        if self.position >= n:
            self.losses.append(float(self.loss_sum) / n)
            return False
        return True

    def epoch(self, steps: int | None = None) -> float:
        self.start_epoch()
        self.run_steps(steps if steps is not None else len(self.order))
        return self.seconds


class Ours(Contender):
    framework = "workbench"

    def __init__(self, X, y, optimizer: str, seed: int) -> None:
        self.X, self.y, self.optimizer_name = X, y, optimizer
        self.model = build_network(LAYERS, IMAGE, N_OUT, dtype="float32", rng=np.random.default_rng(seed))
        self.optimizer = build_optimizer(self.model.parameters(), optimizer, lr=LEARNING_RATES[optimizer], momentum=0.9)
        self.loss = CrossEntropy()
        self.rng = np.random.default_rng(seed)
        self.losses: list[float] = []
        self.output = None

    def shuffle(self):
        return self.rng.permutation(len(self.X))

    def step(self, index) -> float:
        model = self.model
        self.output = model.forward(self.X[index], training=True)
        loss, grad = self.loss(self.output, self.y[index])
        model.backward(grad)
        self.optimizer.step(model.gradients())
        return loss


class Torch(Contender):
    framework = "pytorch"

    def __init__(self, X, y, optimizer: str, seed: int, threads: int, init_model) -> None:
        import torch

        torch.set_num_threads(threads)
        torch.manual_seed(seed)
        nn = torch.nn
        self.torch, self.optimizer_name = torch, optimizer
        self.net = nn.Sequential(
            nn.Conv2d(1, 32, 5, padding="same"), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding="same"), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(3136, 10),
        )
        ours = {layer.name: layer for layer in init_model.layers}
        with torch.no_grad():  # the same initial weights as our model
            for module, name in ((self.net[0], "conv1"), (self.net[3], "conv2")):
                module.weight.copy_(torch.from_numpy(ours[name].params["W"]))
                module.bias.copy_(torch.from_numpy(ours[name].params["b"]))
            self.net[7].weight.copy_(torch.from_numpy(ours["dense1"].params["W"].T.copy()))
            self.net[7].bias.copy_(torch.from_numpy(ours["dense1"].params["b"]))
        params = self.net.parameters()
        self.opt = (torch.optim.Adam(params, lr=LEARNING_RATES[optimizer]) if optimizer == "adam"
                    else torch.optim.SGD(params, lr=LEARNING_RATES[optimizer], momentum=0.9))
        self.loss_fn = nn.CrossEntropyLoss()
        self.X, self.y = torch.from_numpy(X), torch.from_numpy(y.astype(np.int64))
        self.generator = torch.Generator().manual_seed(seed)
        self.losses: list[float] = []

    def shuffle(self):
        self.net.train()
        return self.torch.randperm(len(self.X), generator=self.generator)

    def step(self, index) -> float:
        self.opt.zero_grad(set_to_none=True)
        loss = self.loss_fn(self.net(self.X[index]), self.y[index])
        loss.backward()
        self.opt.step()
        return loss.detach()


# -- float32 discipline ----------------------------------------------------------------------------------
def dtype_violations(run: Ours) -> list[str]:
    bad = []

    def check(kind: str, name: str, value) -> None:
        value = np.asarray(value)
        if value.dtype != np.float32 and not (value.ndim == 0 and np.issubdtype(value.dtype, np.integer)):
            bad.append(f"{kind} {name}: {value.dtype}{list(value.shape)}")

    model = run.model
    for name, value in model.parameters().items():
        check("parameter", name, value)
    for name, value in model.gradients().items():
        check("gradient", name, value)
    for name, value in run.optimizer.state_dict().items():
        check("optimizer state", name, value)
    for name, value in model.outputs.items():
        check("training output of", name, value)
    for name, value in model.grad_outputs.items():
        check("gradient at the output of", name, value)
    check("step", "model output", run.output)
    check("model", "predict() output", model.predict(run.X[:1000]))
    xb = run.X[:BATCH]
    _, grad = CrossEntropy()(model.forward(xb, training=True), np.zeros(BATCH, np.int64))
    check("loss", "gradient", grad)
    model.layers[0].input_grad = True  # the input gradient too, once
    check("model", "input gradient", model.backward(grad))
    model.layers[0].input_grad = False
    return bad


# -- where the time goes ----------------------------------------------------------------------------------
def profile(X, y, optimizer: str, seed: int, steps: int) -> dict:
    """Seconds per step in each layer's forward and backward, the loss, the optimizer step and the rest."""
    run = Ours(X, y, optimizer, seed)
    run.epoch(steps=5)  # warm up: buffers, first touches
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
        layer.forward = timed(layer.forward, f"{layer.name} forward ({layer.describe()})")
    for layer in reversed(run.model.layers):
        layer.backward = timed(layer.backward, f"{layer.name} backward ({layer.describe()})")
    run.loss = timed(run.loss, "loss (softmax cross-entropy)")
    run.optimizer.step = timed(run.optimizer.step, f"optimizer step ({optimizer})")
    total = run.epoch(steps=steps)
    per_step = {key: seconds / steps for key, seconds in spent.items()}
    per_step["rest: shuffle, batch gather, loop"] = (total - sum(spent.values())) / steps
    return {"optimizer": optimizer, "steps": steps, "step_seconds": total / steps, "parts": per_step}


# -- main ----------------------------------------------------------------------------------------------------
def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(DEFAULT_MNIST_DIR), help="folder of the MNIST IDX files (default: %(default)s)")
    p.add_argument("--epochs", type=int, default=1, help="timed epochs per framework, after a warm-up (default 1)")
    p.add_argument("--interleave", type=int, default=10,
                   help="steps each framework runs before the other takes its turn (default 10)")
    p.add_argument("--warmup-steps", type=int, default=20, help="untimed steps of each framework first (default 20)")
    p.add_argument("--profile-steps", type=int, default=100, help="steps of the profiling pass (default 100, 0: none)")
    p.add_argument("--optimizer", default="adam", choices=sorted(LEARNING_RATES), help="(default: adam)")
    p.add_argument("--threads", type=int, default=None, help="BLAS / torch threads (default: numpy's BLAS setting)")
    p.add_argument("--no-torch", action="store_true", help="leave PyTorch out")
    p.add_argument("--limit", type=int, default=None, help="train on this many images only (smoke tests)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="results file (default: benchmarks/results/conv_throughput-<time>.json)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from threadpoolctl import threadpool_limits

    _common.warn_if_busy()
    limiter = threadpool_limits(limits=args.threads, user_api="blas") if args.threads else None  # noqa: F841
    threads = _common.blas_threads()
    facts = _common.machine_facts()

    X_train, y_train, _, _ = load_mnist_arrays(args.data)
    X = (X_train[: args.limit].astype(np.float32) * np.float32(1 / 255)).reshape(-1, *IMAGE)
    y = y_train[: args.limit].astype(np.int64)
    n = len(X)
    print(f"MNIST: {n} training images {X.dtype}{list(X.shape[1:])}; threads: {threads}; "
          f"GEMM work per epoch {epoch_gflop(n):.0f} GFLOP", flush=True)

    contenders: list = [Ours(X, y, args.optimizer, args.seed)]
    torch_error = None
    if not args.no_torch:
        try:
            contenders.append(Torch(X, y, args.optimizer, args.seed, threads, contenders[0].model))
        except ImportError as error:
            torch_error = f"not importable ({error})"
    for c in contenders:  # warm-up
        c.epoch(steps=args.warmup_steps)
    times: dict[str, list[float]] = defaultdict(list)
    cpu_times: dict[str, list[float]] = defaultdict(list)
    for e in range(args.epochs):
        for c in contenders:
            c.start_epoch()
        running = list(contenders)
        while running:  # a few steps each in turn, so that a noisy neighbour slows both alike
            running = [c for c in running if c.run_steps(args.interleave)]
        for c in contenders:
            times[c.framework].append(c.seconds)
            cpu_times[c.framework].append(c.cpu_seconds)
        print(f"  epoch {e + 1}/{args.epochs}: " + ", ".join(f"{c.framework} {times[c.framework][-1]:.2f} s "
                                                             f"(loss {c.losses[-1]:.4f})" for c in contenders), flush=True)

    violations = dtype_violations(contenders[0])
    ours = median(times["workbench"])
    theirs = median(times["pytorch"]) if "pytorch" in times else None
    ratio = ours / theirs if theirs else None
    rows = [[c.framework, f"{median(times[c.framework]):.2f}", f"{min(times[c.framework]):.2f}",
             f"{median(cpu_times[c.framework]):.2f}", f"{n / median(times[c.framework]):,.0f}",
             f"{epoch_gflop(n) / median(times[c.framework]):.0f}", f"{c.losses[-1]:.4f}"] for c in contenders]
    table = markdown_table(["framework", "epoch s (median)", "best", "CPU s (median)", "images/s", "GEMM GFLOP/s",
                            "train loss"], rows)
    cpu_ratio = (median(cpu_times["workbench"]) / median(cpu_times["pytorch"])) if "pytorch" in cpu_times else None

    prof = profile(X, y, args.optimizer, args.seed, args.profile_steps) if args.profile_steps else None
    facts["load_average_1min_at_end"] = _common.load_average()
    print(f"\nOne epoch of a conv 32 5x5 - pool - conv 64 3x3 - pool - dense 10 CNN, batch {BATCH}, {n} MNIST images, "
          f"float32, {args.optimizer}, {threads} threads ({facts['cpu']}, {facts['logical_cpus']} CPUs); load average "
          f"{facts['load_average_1min_at_start']} at start, {facts['load_average_1min_at_end']} at end\n")
    print(table)
    if ratio is not None:
        print(f"\nworkbench / PyTorch epoch time: {ratio:.2f}x (target <= {TARGET_RATIO}x: "
              f"{'met' if ratio <= TARGET_RATIO else 'NOT met'}); CPU time: {cpu_ratio:.2f}x")
    if torch_error:
        print(f"\nPyTorch left out: {torch_error}")
    if prof:
        step = prof["step_seconds"]
        print(f"\nWhere a workbench step goes ({prof['steps']} profiled steps, {1e3 * step:.1f} ms a step):\n")
        print(markdown_table(["part", "ms / step", "share"],
                             [[k, f"{1e3 * v:.2f}", f"{100 * v / step:.0f}%"] for k, v in prof["parts"].items()]))
    print("\nfloat32 everywhere: " + ("yes" if not violations else "NO:\n  " + "\n  ".join(violations)))
    path = save_results("conv_throughput", {
        "machine": facts, "threads": threads, "n_images": n, "batch_size": BATCH, "layers": LAYERS,
        "optimizer": args.optimizer, "epoch_gflop": epoch_gflop(n), "epoch_seconds": dict(times),
        "median_seconds": {k: median(v) for k, v in times.items()}, "time_vs_pytorch": ratio,
        "cpu_seconds": dict(cpu_times), "cpu_time_vs_pytorch": cpu_ratio,
        "target_ratio": TARGET_RATIO, "train_loss": {c.framework: c.losses for c in contenders},
        "profile": prof, "dtype_violations": violations, "torch": torch_error or ("left out" if args.no_torch else "included"),
        "table": table,
    }, args.json)
    print(f"\nresults: {path}")
    return 1 if violations else 0


if __name__ == "__main__":
    sys.exit(main())
