"""The arrays a training run consumes, already split, encoded and scaled.

`RawData` is what a source hands over (one table, or a train and a test table
for sources with their own test set); `Dataset` is what `load_dataset` returns.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, eq=False)
class Dataset:
    """Train, validation and test arrays plus what a model and a report need to know.

    Classification: `y_*` are int64 labels 0..K-1 of shape (n,), `classes[k]` is the
    original value or name of label k. Regression: `y_*` have shape (n, n_targets).
    """

    name: str
    task: str
    X_train: np.ndarray
    y_train: np.ndarray
    X_val: np.ndarray
    y_val: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    n_classes: int
    n_outputs: int
    classes: tuple
    feature_names: tuple[str, ...]
    sample_shape: tuple[int, ...] | None = None  # images: (C, H, W) of the flat features; None: flat only
    per_step: bool = False  # sequences with a label at every step: y_* are (n, T)

    @property
    def n_features(self) -> int:
        return int(np.prod(self.X_train.shape[1:]))

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The per-sample shape the arrays have now: (features,) or (C, H, W)."""
        return tuple(int(s) for s in self.X_train.shape[1:])

    def shaped(self, shape: tuple[int, ...]) -> "Dataset":
        """The same data with samples of `shape` (views, no copy): images for a model that starts with a convolution."""
        if tuple(shape) == self.input_shape:
            return self
        reshape = lambda X: X.reshape(len(X), *shape)  # noqa: E731
        return dataclasses.replace(self, X_train=reshape(self.X_train), X_val=reshape(self.X_val),
                                   X_test=reshape(self.X_test))

    def summary(self) -> str:
        """One line for logs and tags, e.g. 'digits: 1797 samples, 64 features, 10 classes (...)'."""
        sizes = (len(self.y_train), len(self.y_val), len(self.y_test))
        if self.task == "classification":
            outputs = f"{self.n_classes} classes"
        else:
            outputs = f"{self.n_outputs} target{'s' if self.n_outputs != 1 else ''}"
        return (
            f"{self.name}: {sum(sizes)} samples, {self.n_features} features, {outputs} "
            f"(train {sizes[0]} / val {sizes[1]} / test {sizes[2]})"
        )


@dataclass(frozen=True, eq=False)
class RawData:
    """One source's examples before splitting, as the source read them.

    `y` holds raw labels (ints or strings) for classification and an (n, k) float
    array for regression. `test` is set by sources that ship their own test set.
    `x_divisor` lets MNIST keep uint8 pixels until after subsampling (cheap), then
    divide by 255 once the kept rows are cast to float.
    """

    name: str
    origin: str
    task: str
    X: np.ndarray
    y: np.ndarray
    feature_names: tuple[str, ...]
    target_names: tuple[str, ...] = ("y",)
    label_names: tuple | None = None
    row_labels: np.ndarray | None = None
    row_word: str = "row"
    test: tuple[np.ndarray, np.ndarray] | None = None
    x_divisor: float = 1.0
    sample_shape: tuple[int, ...] | None = None  # images (C, H, W) or sequences (T, F): X holds them flattened
    standardize: bool = True  # False: the encoding is the task (one-hot symbols, markers): data.standardize skips it


@dataclass(frozen=True)
class SourceOptions:
    """What a source may need to produce its examples (each reads only its own)."""

    seed: int = 0
    path: str | None = None
    target: str | None = None
    n_samples: int = 1000
    n_features: int = 20
    n_classes: int = 3
    noise: float = 0.1
    sequence_length: int | None = None  # sequence sources: steps per sequence (None: the source's default)
