"""`load_dataset`: one call from a source name to split, encoded, scaled arrays.

Every source hands over `RawData`; the steps after it are shared, in this order:
finite check, label encoding, class-size check, `limit` subsample, test split
(or the source's own test set), validation split from the training part,
cast to `dtype`, standardization fitted on the training part.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable

import numpy as np

from workbench.data.builtin import BUILTIN_IMPORTS, BUILTIN_LOADERS
from workbench.data.checks import check_class_sizes, check_finite, did_you_mean, encode_labels
from workbench.data.csv_file import load_csv
from workbench.data.dataset import Dataset, RawData, SourceOptions
from workbench.data.mnist import mnist
from workbench.data.npz_file import load_npz
from workbench.data.sequences import SEQUENCE_LOADERS
from workbench.data.splits import fit_standardizer, split_off, subsample
from workbench.data.synthetic import SYNTHETIC_IMPORTS, SYNTHETIC_LOADERS
from workbench.errors import UserError

LOADERS: dict[str, tuple[str, Callable[[SourceOptions], RawData]]] = {
    **BUILTIN_LOADERS,
    **SYNTHETIC_LOADERS,
    "mnist": ("classification", mnist),
    "csv": ("from_file", load_csv),
    "npz": ("from_file", load_npz),
    **SEQUENCE_LOADERS,
}
# source name -> task ("classification", "regression", or "from_file" when the file decides)
SOURCES: dict[str, str] = {name: task for name, (task, _) in LOADERS.items()}
SOURCE_IMPORTS: dict[str, tuple[str, ...]] = {**BUILTIN_IMPORTS, **SYNTHETIC_IMPORTS}
DTYPES = ("float32", "float64")
MNIST_MIN_TEST = 10  # with `limit`, MNIST's test set is capped at max(limit // 6, this)


def source_imports(source: str) -> tuple[str, ...]:
    """The modules that loading `source` imports (scikit-learn's data sets: 2 s of CPU), for a process that
    forks others which will load it: imported once there instead of in each of them."""
    return SOURCE_IMPORTS.get(source, ())


def _check_options(
    source: str, dtype: str, test_fraction: float, val_fraction: float, limit: int | None, options: SourceOptions
) -> None:
    """Validate at the boundary, so the sources and splits can trust their inputs."""
    if source not in SOURCES:
        raise UserError(
            f"unknown data source '{source}'; allowed: {', '.join(SOURCES)}{did_you_mean(str(source), SOURCES)}"
        )
    if dtype not in DTYPES:
        raise UserError(f"dtype '{dtype}' is not allowed; allowed: {', '.join(DTYPES)}")
    reals = {"test_fraction": test_fraction, "val_fraction": val_fraction, "noise": options.noise}
    for name, value in reals.items():
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(value):
            raise UserError(f"{name} = {value!r} is not a number")
    integers = {"seed": options.seed, "n_samples": options.n_samples, "n_features": options.n_features,
                "n_classes": options.n_classes, "limit": limit, "sequence_length": options.sequence_length}
    for name, value in integers.items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Integral)):
            raise UserError(f"{name} = {value!r} is not an integer")
    rules = [
        ("test_fraction", test_fraction, 0 < test_fraction < 1, "between 0 and 1 (exclusive)"),
        ("val_fraction", val_fraction, 0 <= val_fraction < 1, "in [0, 1)"),
        ("noise", options.noise, options.noise >= 0, ">= 0"),
        ("seed", options.seed, 0 <= options.seed <= 2**32 - 1, ">= 0 and <= 4294967295"),
        ("n_samples", options.n_samples, options.n_samples >= 10, ">= 10"),
        ("n_features", options.n_features, options.n_features >= 1, ">= 1"),
        ("n_classes", options.n_classes, options.n_classes >= 2, ">= 2"),
        ("limit", limit, limit is None or limit >= 1, ">= 1 (or unset for all examples)"),
        ("sequence_length", options.sequence_length, options.sequence_length is None or options.sequence_length >= 1,
         ">= 1 (or unset for the source's default)"),
    ]
    for name, value, ok, allowed in rules:
        if not ok:
            raise UserError(f"{name} = {value!r} is out of range; allowed: {allowed}")


def _finish(X: np.ndarray, raw: RawData, dtype: str) -> np.ndarray:
    """A fresh C-contiguous float array of the kept rows (so scaling in place is safe)."""
    out = np.array(X, dtype=dtype, order="C", copy=True)
    if raw.x_divisor != 1.0:
        out /= raw.x_divisor
    return out


def load_dataset(
    source: str,
    *,
    seed: int = 0,
    dtype: str = "float32",
    path: str | None = None,
    target: str | None = None,
    test_fraction: float = 0.25,
    val_fraction: float = 0.15,
    standardize: bool = True,
    n_samples: int = 1000,
    n_features: int = 20,
    n_classes: int = 3,
    noise: float = 0.1,
    limit: int | None = None,
    sequence_length: int | None = None,
) -> Dataset:
    """Load `source`, split it into train / val / test and scale it; the same seed gives the same arrays.

    `val_fraction` is a share of the training part; `limit` keeps at most that many
    examples (stratified, before splitting; for MNIST it caps the training set and
    its own test set at max(limit // 6, 10)). Raises `UserError` for any user mistake.
    """
    options = SourceOptions(seed, None if path is None else str(path), target, n_samples, n_features, n_classes, noise,
                            sequence_length)
    _check_options(source, dtype, test_fraction, val_fraction, limit, options)
    raw = LOADERS[source][1](options)
    classification = raw.task == "classification"
    per_step = classification and raw.y.ndim == 2  # a label at every step of a sequence (copy)
    stratified = classification and not per_step

    check_finite(raw.X, raw.feature_names, raw.origin, raw.row_labels, raw.row_word)
    check_finite(raw.y, raw.target_names, raw.origin, raw.row_labels, raw.row_word)
    X, y = raw.X, raw.y
    X_test = y_test = None
    if raw.test is not None:
        X_test, y_test = raw.test
    classes: tuple = ()
    if per_step:
        codes, classes = encode_labels(y.reshape(-1), raw.origin, raw.label_names)
        y = codes.reshape(y.shape)
    elif classification:
        if raw.test is None:
            y, classes = encode_labels(y, raw.origin, raw.label_names)
        else:
            codes, classes = encode_labels(np.concatenate([y, y_test]), raw.origin, raw.label_names)
            y, y_test = codes[: len(y)], codes[len(y) :]
            if len(np.unique(y)) < len(classes):
                raise UserError(f"{raw.origin}: the test set has classes the training set lacks")
        check_class_sizes(y, classes, raw.origin, val_fraction, own_test=raw.test is not None)

    if limit is not None:
        keep = subsample(y, limit, seed, stratified, raw.origin)
        X, y = X[keep], y[keep]
        if X_test is not None:
            keep = subsample(y_test, max(limit // 6, MNIST_MIN_TEST), seed, stratified, raw.origin)
            X_test, y_test = X_test[keep], y_test[keep]
    split = {"seed": seed, "stratified": stratified, "origin": raw.origin}
    if X_test is None:
        X, y, X_test, y_test = split_off(X, y, test_fraction, part="test", **split)
    X_train, y_train, X_val, y_val = split_off(X, y, val_fraction, part="val", **split)

    parts = [_finish(part, raw, dtype) for part in (X_train, X_val, X_test)]
    if standardize and raw.standardize:
        mean, std = fit_standardizer(parts[0])
        mean, std = mean.astype(dtype), std.astype(dtype)
        for part in parts:
            part -= mean
            part /= std
    y_dtype = np.int64 if classification else dtype
    targets = [np.ascontiguousarray(part, dtype=y_dtype) for part in (y_train, y_val, y_test)]
    n_outputs = len(classes) if classification else int(raw.y.shape[1])
    return Dataset(
        name=raw.name,
        task=raw.task,
        X_train=parts[0],
        y_train=targets[0],
        X_val=parts[1],
        y_val=targets[1],
        X_test=parts[2],
        y_test=targets[2],
        n_classes=len(classes),
        n_outputs=n_outputs,
        classes=classes,
        feature_names=tuple(raw.feature_names),
        sample_shape=raw.sample_shape,
        per_step=per_step,
    )
