"""Seeded synthetic problems: toy 2-D shapes and generated tables of any width."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from workbench.data.dataset import RawData, SourceOptions
from workbench.errors import UserError


def _names(n: int) -> tuple[str, ...]:
    return tuple(f"x{i}" for i in range(n))


def _two_shapes(outer: np.ndarray, inner: np.ndarray, noise: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The points of two shapes labelled 0 (outer) and 1 (inner), shuffled, plus Gaussian noise: the arrays
    scikit-learn's `make_moons` / `make_circles` give for `random_state=seed` (the same draws from a
    `RandomState(seed)`, in the same order; a test holds them to stored values), without importing scikit-learn,
    which costs a process 2 s of CPU: a study's every worker paid it for the toy problems."""
    rng = np.random.RandomState(seed)
    X = np.concatenate([outer, inner], axis=1).T
    y = np.concatenate([np.zeros(outer.shape[1], dtype=np.intp), np.ones(inner.shape[1], dtype=np.intp)])
    order = np.arange(len(y))
    rng.shuffle(order)
    X, y = X[order], y[order]
    X += rng.normal(scale=noise, size=X.shape)
    return X, y


def make_moons(n_samples: int, noise: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two interleaving half circles of n // 2 and n - n // 2 points."""
    n_out = n_samples // 2
    outer = np.linspace(0, np.pi, n_out)
    inner = np.linspace(0, np.pi, n_samples - n_out)
    return _two_shapes(np.stack([np.cos(outer), np.sin(outer)]),
                       np.stack([1 - np.cos(inner), 1 - np.sin(inner) - 0.5]), noise, seed)


def make_circles(n_samples: int, noise: float, seed: int, factor: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """A circle of radius `factor` inside the unit circle, n // 2 points on the outer one."""
    n_out = n_samples // 2
    outer = np.linspace(0, 2 * np.pi, n_out, endpoint=False)
    inner = np.linspace(0, 2 * np.pi, n_samples - n_out, endpoint=False)
    return _two_shapes(np.stack([np.cos(outer), np.sin(outer)]),
                       np.stack([np.cos(inner) * factor, np.sin(inner) * factor]), noise, seed)


def moons(options: SourceOptions) -> RawData:
    """Two interleaving half circles: the classic not-linearly-separable toy."""
    X, y = make_moons(options.n_samples, options.noise, options.seed)
    return RawData("moons", "moons", "classification", X, y, _names(2))


def circles(options: SourceOptions) -> RawData:
    """A small circle inside a large one (factor 0.5)."""
    X, y = make_circles(options.n_samples, options.noise, options.seed)
    return RawData("circles", "circles", "classification", X, y, _names(2))


def make_spirals(n_samples: int, n_classes: int, noise: float, seed: int, turns: float = 1.0) -> tuple:
    """`n_classes` interleaved spiral arms in 2-D; arm k starts at angle 2*pi*k/K and its
    radius grows from 0 to 1 over `turns` turns; Gaussian noise of std `noise` on the points."""
    rng = np.random.default_rng(seed)
    y = np.arange(n_samples) % n_classes
    radius = rng.uniform(0.0, 1.0, n_samples)
    angle = 2 * np.pi * (y / n_classes + turns * radius)
    X = radius[:, None] * np.stack([np.cos(angle), np.sin(angle)], axis=1)
    X += noise * rng.standard_normal(X.shape)
    return X, y


def spirals(options: SourceOptions) -> RawData:
    X, y = make_spirals(options.n_samples, options.n_classes, options.noise, options.seed)
    return RawData("spirals", "spirals", "classification", X, y, _names(2))


def classification(options: SourceOptions) -> RawData:
    """sklearn's make_classification with an informative share that suits n_features and n_classes."""
    from sklearn.datasets import make_classification

    d, k = options.n_features, options.n_classes
    needed = math.ceil(math.log2(k))  # make_classification puts classes on hypercube vertices
    if needed > d:
        raise UserError(
            f"classification: n_classes={k} needs n_features >= {needed} (classes sit on the corners of a "
            f"hypercube in the informative features): raise n_features or lower n_classes"
        )
    informative = min(d, max(needed + 1, d // 2))
    redundant = min(2, d - informative)
    clusters = 2 if 2 * k <= 2**informative else 1
    X, y = make_classification(
        n_samples=options.n_samples,
        n_features=d,
        n_informative=informative,
        n_redundant=redundant,
        n_classes=k,
        n_clusters_per_class=clusters,
        random_state=options.seed,
    )
    return RawData("classification", "classification", "classification", X, y, _names(d))


def regression(options: SourceOptions) -> RawData:
    """sklearn's make_regression: a random linear model of (at most) 10 informative features plus noise."""
    from sklearn.datasets import make_regression

    X, y = make_regression(
        n_samples=options.n_samples, n_features=options.n_features, noise=options.noise, random_state=options.seed
    )
    return RawData("regression", "regression", "regression", X, y.reshape(-1, 1), _names(options.n_features))


SYNTHETIC_LOADERS: dict[str, tuple[str, Callable[[SourceOptions], RawData]]] = {
    "moons": ("classification", moons),
    "circles": ("classification", circles),
    "spirals": ("classification", spirals),
    "classification": ("classification", classification),
    "regression": ("regression", regression),
}
# What loading each of them imports beyond numpy (moons, circles and spirals: nothing).
SYNTHETIC_IMPORTS: dict[str, tuple[str, ...]] = {"classification": ("sklearn.datasets",),
                                                 "regression": ("sklearn.datasets",)}
