"""Sequence tasks for recurrent networks, generated offline from the seed, and MNIST read row by row.

Samples are (T, F) sequences (held flat as T*F features, `sample_shape = (T, F)`); each task
states what a model that ignores the input scores (`baseline`), so "learned nothing" is a number:

- adding (Le, Jaitly & Hinton 2015's form of Hochreiter & Schmidhuber 1997's problem): two channels,
  values U[0, 1] and a marker that is 1 at exactly two steps, one in each half; the target is the sum of
  the two marked values. Predicting the mean, 1, gives MSE Var(u1 + u2) = 2/12 = 0.167.
- temporal_order (Hochreiter & Schmidhuber 1997, exp. 6a, as Pascanu, Mikolov & Bengio 2013 use it):
  one-hot symbols from an alphabet of 6, A, B and four distractors; A or B appears once at a step in
  [0.1 T, 0.2 T) and once in [0.5 T, 0.6 T), distractors everywhere else; the class (AA, AB, BA, BB) is
  read at the end. Chance: 25% accuracy, cross-entropy ln 4 = 1.386.
- copy (Arjovsky, Shah & Bengio 2016): T + 20 steps of one-hot symbols over 10 channels (0 blank,
  1-8 data, 9 delimiter): 10 data symbols, T - 1 blanks, the delimiter, 10 blanks; the target at every
  step is blank except the last 10 steps, which must reproduce the 10 data symbols (9 classes). A
  memoryless model (blank, then a uniform guess over 8) scores 10 ln 8 / (T + 20).
- sequential_mnist: each MNIST image read in T steps of 784 / T pixels (28: row by row; 784: pixel by
  pixel, Le et al. 2015), from the IDX files at data.path. Chance: 10%, cross-entropy ln 10.

`data.sequence_length` is T (for copy: the number of blanks between the symbols and their recall);
unset, each task takes its default (`DEFAULT_LENGTH`). The task encodings are the task, so
`data.standardize` does not apply to adding, temporal_order and copy (sequential_mnist is
standardized per pixel like mnist).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from workbench.data.dataset import RawData, SourceOptions
from workbench.data.mnist import load_mnist_arrays
from workbench.errors import UserError

DEFAULT_LENGTH = {"adding": 50, "temporal_order": 50, "copy": 10, "sequential_mnist": 28}
MAX_VALUES = 200_000_000  # n_samples x steps x channels: beyond it the arrays take gigabytes
COPY_SYMBOLS, COPY_DATA = 10, 8  # steps to remember; data symbols 1..8 (0 blank, 9 delimiter)
ORDER_SYMBOLS = ("A", "B", "c", "d", "e", "f")
MNIST_PIXELS = 784


def baseline(source: str, steps: int) -> dict[str, float]:
    """What a model that ignores the input scores on `source` with sequences of `steps` (loss, accuracy)."""
    if source == "adding":
        return {"loss": 1.0 / 6.0}  # MSE of predicting E[u1 + u2] = 1
    if source == "temporal_order":
        return {"loss": math.log(4.0), "accuracy": 0.25}
    if source == "copy":
        T = steps
        return {"loss": COPY_SYMBOLS * math.log(COPY_DATA) / (T + 20),
                "accuracy": (T + 10 + COPY_SYMBOLS / COPY_DATA) / (T + 20)}
    if source == "sequential_mnist":
        return {"loss": math.log(10.0), "accuracy": 0.1}
    raise KeyError(source)


def _length(source: str, options: SourceOptions) -> int:
    return int(options.sequence_length) if options.sequence_length is not None else DEFAULT_LENGTH[source]


def _check_size(source: str, n: int, steps: int, channels: int) -> None:
    if n * steps * channels > MAX_VALUES:
        raise UserError(
            f"{source}: {n} sequences of {steps} steps x {channels} channels are {n * steps * channels:,} values, "
            f"more than {MAX_VALUES:,}: lower data.n_samples or data.sequence_length")


def _names(steps: int, channels: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(f"t{t}.{c}" for t in range(steps) for c in channels)


def adding(options: SourceOptions) -> RawData:
    T, n = _length("adding", options), options.n_samples
    if T < 2:
        raise UserError(f"adding: data.sequence_length = {T} is too short: the two marked steps need T >= 2")
    _check_size("adding", n, T, 2)
    rng = np.random.default_rng(options.seed)
    values = rng.uniform(0.0, 1.0, (n, T))
    half = T // 2
    first = rng.integers(0, half, n)
    second = rng.integers(half, T, n)
    marker = np.zeros((n, T))
    rows = np.arange(n)
    marker[rows, first] = 1.0
    marker[rows, second] = 1.0
    X = np.stack([values, marker], axis=2).reshape(n, T * 2)
    y = (values[rows, first] + values[rows, second]).reshape(n, 1)
    return RawData("adding", "adding", "regression", X, y, _names(T, ("value", "marker")), target_names=("sum",),
                   sample_shape=(T, 2), standardize=False)


def temporal_order(options: SourceOptions) -> RawData:
    T, n = _length("temporal_order", options), options.n_samples
    if T < 10:
        raise UserError(f"temporal_order: data.sequence_length = {T} is too short: the two relevant symbols "
                        "sit in [0.1 T, 0.2 T) and [0.5 T, 0.6 T), which needs T >= 10")
    _check_size("temporal_order", n, T, len(ORDER_SYMBOLS))
    rng = np.random.default_rng(options.seed)
    symbols = rng.integers(2, len(ORDER_SYMBOLS), (n, T))  # distractors c..f
    first = rng.integers(int(0.1 * T), max(int(0.2 * T), int(0.1 * T) + 1), n)
    second = rng.integers(int(0.5 * T), max(int(0.6 * T), int(0.5 * T) + 1), n)
    a, b = rng.integers(0, 2, n), rng.integers(0, 2, n)  # 0: A, 1: B
    rows = np.arange(n)
    symbols[rows, first] = a
    symbols[rows, second] = b
    X = np.eye(len(ORDER_SYMBOLS))[symbols].reshape(n, T * len(ORDER_SYMBOLS))
    y = 2 * a + b
    return RawData("temporal_order", "temporal_order", "classification", X, y, _names(T, ORDER_SYMBOLS),
                   label_names=("AA", "AB", "BA", "BB"), sample_shape=(T, len(ORDER_SYMBOLS)), standardize=False)


def copy(options: SourceOptions) -> RawData:
    T, n = _length("copy", options), options.n_samples
    steps, channels = T + 20, COPY_DATA + 2
    _check_size("copy", n, steps, channels)
    rng = np.random.default_rng(options.seed)
    data = rng.integers(1, COPY_DATA + 1, (n, COPY_SYMBOLS))
    inputs = np.zeros((n, steps), np.int64)
    inputs[:, :COPY_SYMBOLS] = data
    inputs[:, T + 9] = COPY_DATA + 1  # the delimiter, after T - 1 blanks
    y = np.zeros((n, steps), np.int64)
    y[:, -COPY_SYMBOLS:] = data
    X = np.eye(channels)[inputs].reshape(n, steps * channels)
    names = ("blank", *(str(k) for k in range(1, COPY_DATA + 1)), "delimiter")
    return RawData("copy", "copy", "classification", X, y, _names(steps, names),
                   label_names=names[: COPY_DATA + 1], sample_shape=(steps, channels), standardize=False)


def sequential_mnist(options: SourceOptions) -> RawData:
    if options.path is None:
        raise UserError("data source 'sequential_mnist' needs a path: set data.path to the folder holding the "
                        "MNIST IDX files")
    T = _length("sequential_mnist", options)
    if MNIST_PIXELS % T:
        divisors = [d for d in range(1, MNIST_PIXELS + 1) if MNIST_PIXELS % d == 0]
        raise UserError(f"sequential_mnist: data.sequence_length = {T} does not divide the 784 pixels of an image: "
                        f"use 28 (rows) or 784 (pixels), or another divisor ({', '.join(map(str, divisors))})")
    X_train, y_train, X_test, y_test = load_mnist_arrays(options.path)
    width = MNIST_PIXELS // T
    names = _names(T, tuple(f"p{k}" for k in range(width)))
    return RawData("sequential_mnist", str(options.path), "classification", X_train, y_train, names,
                   test=(X_test, y_test), x_divisor=255.0, sample_shape=(T, width))


SEQUENCE_LOADERS: dict[str, tuple[str, Callable[[SourceOptions], RawData]]] = {
    "adding": ("regression", adding),
    "temporal_order": ("classification", temporal_order),
    "copy": ("classification", copy),
    "sequential_mnist": ("classification", sequential_mnist),
}
