"""The small data sets bundled with scikit-learn (read from its package, no network)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from workbench.data.dataset import RawData, SourceOptions


def _bundled(loader_name: str, task: str, *, raw_features: bool = False) -> Callable[[SourceOptions], RawData]:
    """A loader for `sklearn.datasets.<loader_name>`; sklearn is imported on first use only."""

    def load(options: SourceOptions) -> RawData:
        from sklearn import datasets

        loader = getattr(datasets, loader_name)
        # diabetes ships pre-scaled features; ask for the raw ones so standardize=False means raw
        bunch = loader(scaled=False) if raw_features else loader()
        name = loader_name.removeprefix("load_")
        X = np.asarray(bunch.data, dtype=np.float64)
        features = tuple(str(f) for f in getattr(bunch, "feature_names", [f"x{i}" for i in range(X.shape[1])]))
        if task == "classification":
            names = getattr(bunch, "target_names", None)
            label_names = None if names is None else tuple(v.item() for v in np.asarray(names))
            images = getattr(bunch, "images", None)  # digits: 8x8 gray images, one channel
            shape = (1, *images.shape[1:]) if images is not None else None
            return RawData(name, name, task, X, np.asarray(bunch.target), features, label_names=label_names,
                           sample_shape=shape)
        y = np.asarray(bunch.target, dtype=np.float64).reshape(len(X), -1)
        return RawData(name, name, task, X, y, features, target_names=("target",))

    return load


BUILTIN_LOADERS: dict[str, tuple[str, Callable[[SourceOptions], RawData]]] = {
    "digits": ("classification", _bundled("load_digits", "classification")),
    "breast_cancer": ("classification", _bundled("load_breast_cancer", "classification")),
    "wine": ("classification", _bundled("load_wine", "classification")),
    "iris": ("classification", _bundled("load_iris", "classification")),
    "diabetes": ("regression", _bundled("load_diabetes", "regression", raw_features=True)),
}
