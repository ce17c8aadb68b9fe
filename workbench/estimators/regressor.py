"""`MLPRegressor`: a workbench network behind scikit-learn's regressor API, single or multi-output."""

from __future__ import annotations

from numbers import Real

import numpy as np
from sklearn.base import RegressorMixin
from sklearn.utils._param_validation import Interval, StrOptions

from workbench.estimators.base import BaseMLP
from workbench.nn.losses import LOSSES, Huber

REGRESSION_LOSSES = tuple(name for name, cls in LOSSES.items() if cls.task == "regression")


class MLPRegressor(RegressorMixin, BaseMLP):
    """Multi-layer perceptron regressor trained by the workbench's numpy backprop core.

    Same network, training and parameters as `MLPClassifier` (see its
    docstring), with a linear output layer of one unit per target and a
    regression loss. y may be (n_samples,) or (n_samples, n_targets); predict
    returns (n_samples,) when there is one target, as scikit-learn's
    MLPRegressor, always as float64.

    Neither inputs nor targets are rescaled: for targets far from unit scale use
    `TransformedTargetRegressor(MLPRegressor(...), transformer=StandardScaler())`
    after a StandardScaler in a Pipeline.

    Parameters (beyond MLPClassifier's)
    -----------------------------------
    loss : {"mse", "mae", "huber"}, default="mse"
        A regression loss of `workbench.nn.losses.LOSSES`.
    huber_delta : float > 0, default=1.0
        Where the Huber loss turns from quadratic to linear (ignored by other losses).

    Attributes
    ----------
    n_outputs_ : int
        Number of targets; the others as MLPClassifier (without classes_).
    """

    _parameter_constraints: dict = {
        **BaseMLP._parameter_constraints,
        "loss": [StrOptions(set(REGRESSION_LOSSES))],
        "huber_delta": [Interval(Real, 0, None, closed="neither")],
    }

    def __init__(
        self,
        hidden_layer_sizes=(100,),
        *,
        loss="mse",
        huber_delta=1.0,
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
        super().__init__(
            hidden_layer_sizes, activation=activation, init=init, optimizer=optimizer, learning_rate=learning_rate,
            weight_decay=weight_decay, batch_size=batch_size, max_epochs=max_epochs, shuffle=shuffle,
            batch_norm=batch_norm, dropout=dropout, early_stopping=early_stopping,
            validation_fraction=validation_fraction, patience=patience, min_delta=min_delta,
            random_state=random_state, dtype=dtype,
        )
        self.loss = loss
        self.huber_delta = huber_delta

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    def fit(self, X, y):
        """Train a fresh network on X (n_samples, n_features) and targets y (n_samples[, n_targets])."""
        X, y, hidden = self._validate_fit_data(X, y, multi_output=True, y_numeric=True)
        target = np.asarray(y, dtype=X.dtype).reshape(len(y), -1)
        self.n_outputs_ = target.shape[1]
        loss = Huber(self.huber_delta) if self.loss == "huber" else LOSSES[self.loss]()
        meta = {"task": "regression", "loss": self.loss, "classes": []}
        return self._fit_network(X, target, hidden, loss=loss, n_outputs=self.n_outputs_,
                                 task="regression", meta=meta)

    def predict(self, X) -> np.ndarray:
        """Predicted targets, (n_samples,) for one target, else (n_samples, n_targets); float64."""
        output = self._network_output(X)
        return output[:, 0] if self.n_outputs_ == 1 else output
