"""LSTM throughput: one epoch of an LSTM regressor, workbench vs torch.nn.LSTM on the CPU, float32.

The network (both frameworks, the same initial weights): sequences of 50 steps x 32 features ->
lstm 128 (last hidden state) -> dense 1, mean squared error, plain SGD (lr 0.01), batches of 64,
4096 random sequences (64 steps per epoch). Both run the same loop (shuffle, gather a batch,
forward, loss, backward, step); the epochs run interleaved, `--interleave` steps of one then of
the other, each framework's time the sum of its own turns, so a noisy neighbour slows both alike.
PyTorch gets as many threads as numpy's BLAS (`--threads`, default 1). Reported: seconds per
epoch, the ratio (target: workbench <= 2x PyTorch's time), and where our time goes, from a
profiling pass: the per-step GEMMs (h_{t-1} U forward, da_t U^T backward, timed alone on the same
shapes), the hoisted GEMMs (x W for all steps, and dW, dU, dx after the loop), and the rest of
the two loops over time (element-wise numpy calls and the Python around them), with the count of
numpy calls per time step and their fixed cost measured on 1-element arrays. Afterwards every
parameter, gradient and output of our model must be float32 (exit 1 otherwise).

    .venv/bin/python benchmarks/rnn_throughput.py
    .venv/bin/python benchmarks/rnn_throughput.py --threads 2 --epochs 3
"""

from __future__ import annotations

import argparse
import sys
import time

import _common
import numpy as np
from _common import Stopwatch, markdown_table, median, save_results

from workbench.nn.losses import MeanSquaredError
from workbench.nn.model import build_network
from workbench.nn.optim import build_optimizer

STEPS, FEATURES, UNITS, BATCH, SAMPLES = 50, 32, 128, 64, 4096
LR = 0.01
TARGET_RATIO = 2.0


def data(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((SAMPLES, STEPS, FEATURES)).astype(np.float32)
    y = (X[:, :5, 0].sum(axis=1, keepdims=True) * 0.2).astype(np.float32)
    return X, y


class Contender:
    """An epoch as a sequence of steps that can be run a few at a time (so that contenders interleave)."""

    name = ""

    def __init__(self, X, y, seed: int) -> None:
        self.X, self.y, self.rng = X, y, np.random.default_rng(seed)
        self.seconds = 0.0
        self.order = np.arange(len(X))
        self.position = len(X)

    def start_epoch(self) -> None:
        self.order = self.rng.permutation(len(self.X))
        self.position = 0
        self.seconds = 0.0

    def run_steps(self, count: int) -> bool:
        """Run up to `count` steps of the epoch; False when the epoch is done."""
        start = time.perf_counter()
        for _ in range(count):
            if self.position >= len(self.X):
                break
            index = self.order[self.position : self.position + BATCH]
            self.position += BATCH
            self.step(self.X[index], self.y[index])
        self.seconds += time.perf_counter() - start
        return self.position < len(self.X)


class Ours(Contender):
    name = "workbench"

    def __init__(self, X, y, seed: int) -> None:
        super().__init__(X, y, seed)
        self.model = build_network([{"type": "lstm", "units": UNITS}], (STEPS, FEATURES), 1, init="xavier_uniform",
                                   dtype="float32", rng=np.random.default_rng(seed))
        self.loss = MeanSquaredError()
        self.optimizer = build_optimizer(self.model.parameters(), "sgd", lr=LR, weights=self.model.weight_names())
        self.grads = self.model.gradients()

    def step(self, xb, yb) -> float:
        out = self.model.forward(xb, training=True)
        value, grad = self.loss(out, yb)
        self.model.backward(grad)
        self.optimizer.step(self.grads)
        return value


class Torch(Contender):
    name = "pytorch"

    def __init__(self, X, y, seed: int, threads: int, ours: Ours) -> None:
        import torch

        super().__init__(X, y, seed)
        torch.set_num_threads(threads)
        self.torch = torch
        self.lstm = torch.nn.LSTM(FEATURES, UNITS, batch_first=True)
        self.head = torch.nn.Linear(UNITS, 1)
        lstm, dense = ours.model.layers
        with torch.no_grad():  # the same initial weights (gate order i, f, g, o in both)
            self.lstm.weight_ih_l0.copy_(torch.from_numpy(lstm.params["W"].T.copy()))
            self.lstm.weight_hh_l0.copy_(torch.from_numpy(lstm.params["U"].T.copy()))
            self.lstm.bias_ih_l0.copy_(torch.from_numpy(lstm.params["b"]))
            self.lstm.bias_hh_l0.zero_()
            self.head.weight.copy_(torch.from_numpy(dense.params["W"].T.copy()))
            self.head.bias.copy_(torch.from_numpy(dense.params["b"]))
        parameters = [*self.lstm.parameters(), *self.head.parameters()]
        self.optimizer = torch.optim.SGD(parameters, lr=LR)
        self.tX, self.ty = torch.from_numpy(X), torch.from_numpy(y)

    def run_steps(self, count: int) -> bool:
        with self.torch.enable_grad():
            return super().run_steps(count)

    def step(self, xb, yb) -> float:
        torch = self.torch
        xb, yb = torch.from_numpy(xb), torch.from_numpy(yb)
        self.optimizer.zero_grad(set_to_none=False)
        out, _ = self.lstm(xb)
        loss = torch.nn.functional.mse_loss(self.head(out[:, -1]), yb)
        loss.backward()
        self.optimizer.step()
        return loss.item()


def dtype_violations(run: Ours) -> list[str]:
    xb = run.X[:BATCH]
    out = run.model.forward(xb, training=True)
    grad = run.model.backward(np.ones_like(out))
    arrays = {"output": out, **run.model.parameters(), **run.model.gradients()}
    if grad is not None:
        arrays["input gradient"] = grad
    return [f"{name}: {a.dtype}" for name, a in arrays.items() if a.dtype != np.float32]


def numpy_call_cost(repeats: int = 20000) -> float:
    """Seconds of one element-wise numpy call on tiny arrays: the fixed cost every call pays."""
    a, b, out = np.ones(1, np.float32), np.ones(1, np.float32), np.empty(1, np.float32)
    start = time.perf_counter()
    for _ in range(repeats):
        np.multiply(a, b, out=out)
    return (time.perf_counter() - start) / repeats


def profile(run: Ours, steps: int) -> dict:
    """Where one training step goes: the two loops over time, the hoisted GEMMs, the per-step GEMMs alone."""
    lstm = run.model.layers[0]
    timings = {"forward loop": 0.0, "backward loop": 0.0, "step total": 0.0}
    forward_steps, back_steps = lstm._steps, lstm._back_steps

    def timed(fn, key):
        def wrapper(*args):
            t = time.perf_counter()
            fn(*args)
            timings[key] += time.perf_counter() - t
        return wrapper

    lstm._steps, lstm._back_steps = timed(forward_steps, "forward loop"), timed(back_steps, "backward loop")
    counted = {"calls": 0}
    try:
        for k in range(steps):
            index = np.arange(k * BATCH, (k + 1) * BATCH) % SAMPLES
            with Stopwatch() as sw:
                run.step(run.X[index], run.y[index])
            timings["step total"] += sw.seconds
    finally:
        lstm._steps, lstm._back_steps = forward_steps, back_steps
    # the per-step GEMMs alone, same shapes, as many as the loops make
    U = lstm.params["U"]
    h = np.random.default_rng(0).standard_normal((BATCH, UNITS)).astype(np.float32)
    gates = np.empty((BATCH, 4 * UNITS), np.float32)
    unit = np.empty((BATCH, UNITS), np.float32)
    start = time.perf_counter()
    for _ in range(steps):
        for _ in range(STEPS):
            np.matmul(h, U, out=gates)
        for _ in range(STEPS - 1):
            np.matmul(gates, U.T, out=unit)
    step_gemm = time.perf_counter() - start
    # what the monitor adds on a recorded step for this layer (statistics through time)
    from workbench.monitor.record import StatsRecord
    from workbench.monitor.statistics import GATE_STEPS, SATURATION, SpectralNorm, horizon

    record, spectral = StatsRecord([lstm.name]), SpectralNorm()
    record.add_time_series("time_grad_norm", lstm.name, STEPS)
    run.step(run.X[:BATCH], run.y[:BATCH])
    spectral(lstm.recurrent_matrix)  # the first call is the exact SVD; later ones the power iteration
    start = time.perf_counter()
    for k in range(steps):
        row = record.start_row(k, 0)
        norms = lstm.time_grad_norms()
        horizon(norms, 0)
        spectral(lstm.recurrent_matrix)
        lstm.gate_saturation(SATURATION, GATE_STEPS)
        record.set_time_row("time_grad_norm", lstm.name, row, norms)
    recurrent_stats = (time.perf_counter() - start) / steps
    total = timings["step total"]
    loops = timings["forward loop"] + timings["backward loop"]
    call = numpy_call_cost()
    calls_forward, calls_backward = 12, 19  # numpy calls per time step in LSTM._steps / _back_steps
    rows = {
        "per-step GEMMs (h U, da U^T)": step_gemm,
        "element-wise work and Python in the loops over time": loops - step_gemm,
        "outside the loops (hoisted x W, dW, dU, dx GEMMs; loss; dense; SGD)": total - loops,
    }
    counted["calls"] = (calls_forward + calls_backward) * STEPS * steps
    return {
        "steps": steps, "seconds_per_step": total / steps,
        "shares": {key: value / total for key, value in rows.items()},
        "seconds": rows,
        "numpy_calls_per_time_step": {"forward": calls_forward, "backward": calls_backward},
        "fixed_cost_per_numpy_call_us": call * 1e6,
        "fixed_cost_share": counted["calls"] * call / total,
        "recurrent_statistics_seconds": recurrent_stats,
        "recurrent_statistics_share": recurrent_stats * steps / total,
    }


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=3, help="timed epochs per contender (median reported)")
    p.add_argument("--threads", type=int, default=1, help="BLAS threads for numpy and torch")
    p.add_argument("--interleave", type=int, default=4, help="steps of one contender before the other's turn")
    p.add_argument("--profile-steps", type=int, default=32)
    p.add_argument("--no-torch", action="store_true")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=args.threads, user_api="blas")
    _common.warn_if_busy()
    X, y = data()
    ours = Ours(X, y, seed=0)
    contenders: list[Contender] = [ours]
    if not args.no_torch:
        try:
            contenders.append(Torch(X, y, 0, args.threads, ours))
        except ImportError:
            print("torch is not installed: timing workbench alone", file=sys.stderr)
    for contender in contenders:  # warm-up: buffers, caches, thread pools
        contender.start_epoch()
        contender.run_steps(4)
    times: dict[str, list[float]] = {c.name: [] for c in contenders}
    ratios = []
    for _ in range(args.epochs):
        for contender in contenders:
            contender.start_epoch()
        running = list(contenders)
        while running:
            running = [c for c in running if c.run_steps(args.interleave)]
        for contender in contenders:
            times[contender.name].append(contender.seconds)
        if len(contenders) == 2:
            ratios.append(ours.seconds / contenders[1].seconds)
    rows = [[name, f"{median(values):.3f}", " ".join(f"{v:.3f}" for v in values)] for name, values in times.items()]
    print(f"## LSTM {UNITS} units, {STEPS} steps x {FEATURES} features, batch {BATCH}, {SAMPLES} sequences, "
          f"float32, {args.threads} thread(s)\n")
    print(markdown_table(["contender", "s / epoch (median)", "epochs"], rows))
    result = {"times": times, "threads": args.threads, "machine": _common.machine_facts()}
    if ratios:
        ratio = median(ratios)
        result["ratio"] = ratio
        verdict = "meets" if ratio <= TARGET_RATIO else "misses"
        print(f"\nworkbench / pytorch: {ratio:.2f}x (median of per-epoch ratios {', '.join(f'{r:.2f}' for r in ratios)};"
              f" target <= {TARGET_RATIO:g}x: {verdict})")
    prof = profile(ours, args.profile_steps)
    result["profile"] = prof
    print(f"\n## Where our time goes ({prof['steps']} steps, {1e3 * prof['seconds_per_step']:.1f} ms per step)\n")
    print(markdown_table(["part", "share", "ms per step"],
                         [[k, f"{100 * v:.0f}%", f"{1e3 * prof['seconds'][k] / prof['steps']:.2f}"]
                          for k, v in prof["shares"].items()]))
    calls = prof["numpy_calls_per_time_step"]
    print(f"\nnumpy calls per time step: {calls['forward']} forward, {calls['backward']} backward; fixed cost "
          f"{prof['fixed_cost_per_numpy_call_us']:.2f} us per call, {100 * prof['fixed_cost_share']:.0f}% of the step")
    print(f"the monitor's statistics through time on a recorded step: {1e3 * prof['recurrent_statistics_seconds']:.2f} ms "
          f"({100 * prof['recurrent_statistics_share']:.1f}% of a step)")
    bad = dtype_violations(ours)
    path = save_results("rnn_throughput", result)
    print(f"\nsaved {path}")
    if bad:
        print("not float32: " + ", ".join(bad), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
