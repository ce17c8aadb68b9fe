"""The small data sets bundled with scikit-learn (read from its package, no network)."""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np

from workbench.data.dataset import RawData, SourceOptions


def _bundled(loader_name: str, task: str, *, raw_features: bool = False) -> Callable[[SourceOptions], RawData]:
    """A loader for `sklearn.datasets.<loader_name>`; sklearn is imported on first use only."""

    def load(options: SourceOptions) -> RawData:
        X, target, features, target_names, images_shape = _read(loader_name, raw_features)
        name = loader_name.removeprefix("load_")
        if task == "classification":
            label_names = None if target_names is None else tuple(v.item() for v in np.asarray(target_names))
            shape = (1, *images_shape[1:]) if images_shape is not None else None  # digits: 8x8 gray, one channel
            return RawData(name, name, task, X, target, features, label_names=label_names, sample_shape=shape)
        y = np.asarray(target, dtype=np.float64).reshape(len(X), -1)
        return RawData(name, name, task, X, y, features, target_names=("target",))

    return load


@functools.lru_cache(maxsize=None)
def _read(loader_name: str, raw_features: bool) -> tuple:
    """(X, target, feature names, target names, images' shape) of a bundled set, read once per process and
    shared read-only: scikit-learn parses its CSV on every call (digits: 0.08 s, twice a trial of two seeds
    in a study, half a quick trial's fixed cost)."""
    from sklearn import datasets

    loader = getattr(datasets, loader_name)
    # diabetes ships pre-scaled features; ask for the raw ones so standardize=False means raw
    bunch = loader(scaled=False) if raw_features else loader()
    X = np.array(bunch.data, dtype=np.float64)
    target = np.array(bunch.target)
    for array in (X, target):
        array.flags.writeable = False
    features = tuple(str(f) for f in getattr(bunch, "feature_names", [f"x{i}" for i in range(X.shape[1])]))
    images = getattr(bunch, "images", None)
    return X, target, features, getattr(bunch, "target_names", None), None if images is None else images.shape


BUILTIN_LOADERS: dict[str, tuple[str, Callable[[SourceOptions], RawData]]] = {
    "digits": ("classification", _bundled("load_digits", "classification")),
    "breast_cancer": ("classification", _bundled("load_breast_cancer", "classification")),
    "wine": ("classification", _bundled("load_wine", "classification")),
    "iris": ("classification", _bundled("load_iris", "classification")),
    "diabetes": ("regression", _bundled("load_diabetes", "regression", raw_features=True)),
}
# What loading each of them imports (a study's fork server imports it once for all of its workers).
BUILTIN_IMPORTS: dict[str, tuple[str, ...]] = {name: ("sklearn.datasets",) for name in BUILTIN_LOADERS}
