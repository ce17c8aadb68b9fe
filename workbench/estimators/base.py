"""The core the two estimators share: constructor parameters, their constraints, and one training run.

Parameters are stored as given in `__init__` and checked at `fit` against
`_parameter_constraints` (scikit-learn's Interval / StrOptions), whose choices
come from the workbench registries: a newly registered activation, initializer
or optimizer is accepted by the estimators without touching this file.

`fit` builds the same pieces as `workbench.runner.build_run` (Architecture ->
build_model, build_optimizer, Trainer), on arrays already validated by
scikit-learn's `validate_data`. Randomness comes from one seed split into
independent streams for initialization, dropout, shuffling and the
validation split; the first three are those of `runner.seeds(seed)`.
The hooks are the CLI's: `NanGuard` always, `EarlyStopping` (Keras semantics,
best weights restored) when early_stopping is on; the statistics monitor is
left out (an estimator has nowhere to report it, and it costs time per step).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Integral, Real

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.model_selection import train_test_split
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data

from workbench.nn.activations import ACTIVATIONS
from workbench.nn.init import INITIALIZERS
from workbench.nn.losses import Loss
from workbench.nn.model import Architecture, build_model
from workbench.monitor import EarlyStopping, NanGuard
from workbench.nn.optim import OPTIMIZERS, build_optimizer
from workbench.training import FAILED, Trainer

DTYPES = ("float32", "float64")


@dataclass
class ArrayData:
    """The data object the Trainer reads: train and validation splits, an empty test split."""

    X_train: np.ndarray
    y_train: np.ndarray
    X_val: np.ndarray
    y_val: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    task: str


def random_streams(random_state) -> tuple[np.random.Generator, ...]:
    """Generators for (init, dropout, shuffle, validation split) from `random_state`.

    An int is used as the seed itself, so the first three streams equal
    `workbench.runner.seeds(random_state)`; None or a RandomState draws a seed from it.
    """
    if isinstance(random_state, Integral):
        seed = int(random_state)
    else:
        seed = int(check_random_state(random_state).randint(np.iinfo(np.int32).max))
    return tuple(np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(4))


def can_stratify(labels: np.ndarray, test_fraction: float) -> bool:
    """Whether train_test_split can stratify: every class twice, and both sides at least one slot per class."""
    counts = np.bincount(labels)
    counts = counts[counts > 0]
    n_val = math.ceil(test_fraction * len(labels))
    return counts.min() >= 2 and min(n_val, len(labels) - n_val) >= len(counts)


class BaseMLP(BaseEstimator):
    """Shared parameters and training of `MLPClassifier` and `MLPRegressor` (see their docstrings)."""

    _parameter_constraints: dict = {
        "hidden_layer_sizes": ["array-like", Interval(Integral, 1, None, closed="left")],
        "activation": [StrOptions(set(ACTIVATIONS))],
        "init": [StrOptions(set(INITIALIZERS))],
        "optimizer": [StrOptions(set(OPTIMIZERS))],
        "learning_rate": [Interval(Real, 0, None, closed="neither")],
        "weight_decay": [Interval(Real, 0, None, closed="left")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "max_epochs": [Interval(Integral, 1, None, closed="left")],
        "shuffle": ["boolean"],
        "batch_norm": ["boolean"],
        "dropout": [Interval(Real, 0, 1, closed="left")],
        "early_stopping": ["boolean"],
        "validation_fraction": [Interval(Real, 0, 1, closed="neither")],
        "patience": [Interval(Integral, 1, None, closed="left")],
        "min_delta": [Interval(Real, 0, None, closed="left")],
        "random_state": ["random_state"],
        "dtype": [StrOptions(set(DTYPES))],
    }

    def __init__(
        self,
        hidden_layer_sizes=(100,),
        *,
        activation="relu",
        init="he_normal",
        optimizer="adam",
        learning_rate=1e-3,
        weight_decay=0.0,
        batch_size=32,
        max_epochs=200,
        shuffle=True,
        batch_norm=False,
        dropout=0.0,
        early_stopping=False,
        validation_fraction=0.1,
        patience=10,
        min_delta=0.0,
        random_state=None,
        dtype="float32",
    ):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.init = init
        self.optimizer = optimizer
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.shuffle = shuffle
        self.batch_norm = batch_norm
        self.dropout = dropout
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.min_delta = min_delta
        self.random_state = random_state
        self.dtype = dtype

    # -- validation at the boundary ------------------------------------------------
    def _hidden_sizes(self) -> tuple[int, ...]:
        sizes = self.hidden_layer_sizes
        sizes = [sizes] if isinstance(sizes, Integral) else list(sizes)
        if not all(isinstance(s, Integral) and not isinstance(s, bool) and s >= 1 for s in sizes):
            raise ValueError(
                f"hidden_layer_sizes must be a positive int or a flat sequence of positive ints "
                f"(empty for a linear model), got {self.hidden_layer_sizes!r}"
            )
        return tuple(int(s) for s in sizes)

    def _validate_fit_data(self, X, y, **check_params):
        self._validate_params()
        hidden = self._hidden_sizes()
        X, y = validate_data(self, X, y, dtype=np.dtype(self.dtype), **check_params)
        return X, y, hidden

    def _network_output(self, X) -> np.ndarray:
        """Raw outputs of the fitted network (logits or values) for validated X, as float64."""
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=self.model_.dtype)
        return self.model_.predict(X).astype(np.float64)

    # -- training --------------------------------------------------------------------
    def _fit_network(self, X, y, hidden, *, loss: Loss, n_outputs: int, task: str, meta: dict, stratify=None):
        """Build and train a fresh network on (X, y); set the fitted attributes."""
        init_rng, dropout_rng, shuffle_rng, split_rng = random_streams(self.random_state)
        X_train, y_train, X_val, y_val = X, y, X[:0], y[:0]
        if self.early_stopping:
            if stratify is not None and not can_stratify(stratify, self.validation_fraction):
                stratify = None  # too few samples per class: a plain random split
            X_train, X_val, y_train, y_val = train_test_split(
                X, y, test_size=self.validation_fraction, stratify=stratify,
                random_state=int(split_rng.integers(np.iinfo(np.int32).max)),
            )
        data = ArrayData(X_train, y_train, X_val, y_val, X[:0], y[:0], task)
        architecture = Architecture(
            n_inputs=X.shape[1], n_outputs=loss.output_units(n_outputs), hidden=hidden,
            activation=self.activation, batch_norm=bool(self.batch_norm), dropout=float(self.dropout),
            dtype=self.dtype, meta=meta,
        )
        model = build_model(architecture, init=self.init, rng=init_rng, dropout_rng=dropout_rng)
        batch_size = min(int(self.batch_size), len(X_train))
        optimizer = build_optimizer(
            model.parameters(), self.optimizer, lr=float(self.learning_rate), weight_decay=float(self.weight_decay),
            steps_per_epoch=math.ceil(len(X_train) / batch_size), epochs=int(self.max_epochs),
        )
        hooks = [NanGuard()]
        stopper = None
        if self.early_stopping:
            stopper = EarlyStopping("val/loss", mode="min", patience=self.patience, min_delta=self.min_delta,
                                    restore_best_weights=True)
            hooks.append(stopper)
        trainer = Trainer(model, loss, optimizer, data, epochs=self.max_epochs, batch_size=batch_size,
                          shuffle=bool(self.shuffle), rng=shuffle_rng, hooks=tuple(hooks))
        result = trainer.fit()
        if result.status == FAILED:
            raise ValueError(
                f"training diverged ({result.reason}); lower learning_rate, or scale the inputs "
                "(a StandardScaler in a Pipeline) and, for regression, the targets"
            )
        self.model_ = model
        self.loss_curve_ = list(result.history["train/loss"])
        self.loss_ = self.loss_curve_[-1]
        self.n_iter_ = result.epochs_run
        self.validation_loss_curve_ = list(result.history["val/loss"]) if stopper else None
        self.best_validation_loss_ = stopper.best if stopper else None
        return self
