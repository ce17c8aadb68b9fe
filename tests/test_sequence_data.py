"""The sequence tasks: their definitions, seeds, shapes, and the score of a model that ignores the input."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from workbench.data import load_dataset
from workbench.data.sequences import baseline
from workbench.errors import UserError
from workbench.nn.losses import CrossEntropy

MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"


def sequences(ds):
    T, F = ds.sample_shape
    return ds.X_train.reshape(len(ds.X_train), T, F)


def test_adding_problem_definition_and_its_mean_baseline():
    ds = load_dataset("adding", seed=3, n_samples=4000, sequence_length=30)
    assert ds.task == "regression" and ds.sample_shape == (30, 2) and ds.X_train.dtype == np.float32
    x = sequences(ds)
    values, marker = x[..., 0], x[..., 1]
    assert ((values >= 0) & (values <= 1)).all()  # not standardized: the encoding is the task
    assert (marker.sum(axis=1) == 2).all() and (marker[:, :15].sum(axis=1) == 1).all()
    np.testing.assert_allclose((values * marker).sum(axis=1), ds.y_train[:, 0], rtol=1e-6)
    mse_of_the_mean = float(np.mean((ds.y_train[:, 0] - 1.0) ** 2))
    assert mse_of_the_mean == pytest.approx(baseline("adding", 30)["loss"], rel=0.1)


def test_temporal_order_definition_and_chance():
    T = 40
    ds = load_dataset("temporal_order", seed=0, n_samples=2000, sequence_length=T)
    x = sequences(ds)
    assert ds.sample_shape == (T, 6) and ds.classes == ("AA", "AB", "BA", "BB")
    assert (x.sum(axis=2) == 1).all()  # one-hot
    symbols = x.argmax(axis=2)
    relevant = symbols < 2  # A or B
    assert (relevant.sum(axis=1) == 2).all()
    positions = np.argwhere(relevant)[:, 1].reshape(-1, 2)  # (first, second) per sequence
    assert ((0.1 * T <= positions[:, 0]) & (positions[:, 0] < 0.2 * T)).all()
    assert ((0.5 * T <= positions[:, 1]) & (positions[:, 1] < 0.6 * T)).all()
    label = 2 * symbols[np.arange(len(x)), positions[:, 0]] + symbols[np.arange(len(x)), positions[:, 1]]
    assert (label == ds.y_train).all()
    counts = np.bincount(ds.y_train, minlength=4) / len(ds.y_train)
    assert np.all(np.abs(counts - 0.25) < 0.05)
    assert baseline("temporal_order", T) == {"loss": math.log(4), "accuracy": 0.25}


def test_copy_task_definition_and_memoryless_baseline():
    T = 7
    ds = load_dataset("copy", seed=1, n_samples=300, sequence_length=T)
    assert ds.per_step and ds.sample_shape == (T + 20, 10) and ds.y_train.shape == (len(ds.X_train), T + 20)
    symbols = sequences(ds).argmax(axis=2)
    assert ((symbols[:, :10] >= 1) & (symbols[:, :10] <= 8)).all()
    assert (symbols[:, 10 : T + 9] == 0).all() and (symbols[:, T + 9] == 9).all() and (symbols[:, T + 10 :] == 0).all()
    assert (ds.y_train[:, : T + 10] == 0).all() and (ds.y_train[:, T + 10 :] == symbols[:, :10]).all()
    # the memoryless strategy: blank for T + 10 steps, then a uniform guess over the 8 symbols
    logits = np.full((len(ds.y_train), T + 20, 9), -50.0)
    logits[:, : T + 10, 0] = 50.0
    logits[:, T + 10 :, 1:] = 0.0
    loss, _ = CrossEntropy()(logits, ds.y_train)
    assert loss == pytest.approx(baseline("copy", T)["loss"], rel=1e-9)
    assert baseline("copy", T)["loss"] == pytest.approx(10 * math.log(8) / (T + 20))


@pytest.mark.parametrize("source", ["adding", "temporal_order", "copy"])
def test_a_seed_gives_the_same_sequences(source):
    a = load_dataset(source, seed=5, n_samples=200, sequence_length=12)
    b = load_dataset(source, seed=5, n_samples=200, sequence_length=12)
    c = load_dataset(source, seed=6, n_samples=200, sequence_length=12)
    assert np.array_equal(a.X_train, b.X_train) and np.array_equal(a.y_train, b.y_train)
    assert not np.array_equal(a.X_train, c.X_train)


def test_sequence_length_defaults_and_limits():
    assert load_dataset("adding", n_samples=100).sample_shape == (50, 2)
    assert load_dataset("copy", n_samples=100).sample_shape == (30, 10)
    with pytest.raises(UserError, match="sequence_length = 0 is out of range"):
        load_dataset("adding", n_samples=100, sequence_length=0)
    with pytest.raises(UserError, match="lower data.n_samples or data.sequence_length"):
        load_dataset("copy", n_samples=1_000_000, sequence_length=100_000)


@pytest.mark.skipif(not MNIST.is_dir(), reason="needs the MNIST IDX files in ../shared/data/mnist")
def test_sequential_mnist_reads_rows_and_pixels():
    rows = load_dataset("sequential_mnist", path=str(MNIST), limit=600, standardize=False)
    flat = load_dataset("mnist", path=str(MNIST), limit=600, standardize=False)
    assert rows.sample_shape == (28, 28) and rows.n_classes == 10
    np.testing.assert_array_equal(rows.X_train, flat.X_train)  # the same pixels, read as 28 steps of 28
    pixels = load_dataset("sequential_mnist", path=str(MNIST), limit=600, sequence_length=784)
    assert pixels.sample_shape == (784, 1)
    with pytest.raises(UserError, match="does not divide the 784 pixels"):
        load_dataset("sequential_mnist", path=str(MNIST), sequence_length=50)
