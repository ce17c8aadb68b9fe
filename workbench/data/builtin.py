"""The small data sets bundled with scikit-learn (read from its package, no network)."""

from __future__ import annotations

import functools
import gzip
import importlib.util
from collections.abc import Callable
from pathlib import Path

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
    direct = DIRECT_READERS.get(loader_name)
    found = direct() if direct is not None else None
    if found is not None:
        return found
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


def _read_digits() -> tuple | None:
    """The digits as `_read` gives them, parsed from the file scikit-learn's `load_digits` parses (its package's
    datasets/data/digits.csv.gz: 64 pixel columns, then the label), found without importing scikit-learn: that
    import is 2 s of CPU, most of the start of the default `workbench run`. None where the file is not there (then
    scikit-learn reads it); a test holds the arrays and names to `load_digits`'."""
    spec = importlib.util.find_spec("sklearn")  # finds the package without running it
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    path = next((p for p in (Path(f) / "datasets" / "data" / "digits.csv.gz" for f in folders) if p.is_file()), None)
    if path is None:
        return None
    with gzip.open(path, "rt", encoding="utf-8") as text:
        table = np.loadtxt(text, delimiter=",")
    X = np.ascontiguousarray(table[:, :-1])
    target = table[:, -1].astype(int)
    for array in (X, target):
        array.flags.writeable = False
    features = tuple(f"pixel_{row}_{column}" for row in range(8) for column in range(8))
    return X, target, features, np.arange(10), (len(X), 8, 8)


DIRECT_READERS: dict[str, Callable[[], tuple | None]] = {"load_digits": _read_digits}


BUILTIN_LOADERS: dict[str, tuple[str, Callable[[SourceOptions], RawData]]] = {
    "digits": ("classification", _bundled("load_digits", "classification")),
    "breast_cancer": ("classification", _bundled("load_breast_cancer", "classification")),
    "wine": ("classification", _bundled("load_wine", "classification")),
    "iris": ("classification", _bundled("load_iris", "classification")),
    "diabetes": ("regression", _bundled("load_diabetes", "regression", raw_features=True)),
}
# What loading each of them imports (a study's fork server imports it once for all of its workers): scikit-learn,
# but for the sets read directly.
BUILTIN_IMPORTS: dict[str, tuple[str, ...]] = {name: ("sklearn.datasets",) for name in BUILTIN_LOADERS
                                               if f"load_{name}" not in DIRECT_READERS}
