"""`MLPClassifier`: a workbench network behind scikit-learn's classifier API.

Labels of any type (ints, strings) are encoded to 0..K-1 with a LabelEncoder;
the network has K outputs trained with softmax cross-entropy (also for K = 2,
where the decision function is the log-odds z_1 - z_0).
"""

from __future__ import annotations

import numpy as np
from scipy.special import log_softmax
from sklearn.base import ClassifierMixin
from sklearn.preprocessing import LabelEncoder
from sklearn.utils.multiclass import check_classification_targets

from workbench.estimators.base import BaseMLP
from workbench.nn.losses import CrossEntropy


class MLPClassifier(ClassifierMixin, BaseMLP):
    """Multi-layer perceptron classifier trained by the workbench's numpy backprop core.

    The network is [dense -> (batch norm) -> activation -> (dropout)] per hidden
    size, then a dense output layer with one logit per class, trained with
    softmax cross-entropy by mini-batch `optimizer` for `max_epochs` epochs.
    Computation runs in `dtype` (float32 by default); predict_proba,
    predict_log_proba and decision_function return float64.

    Inputs are used as given: put a StandardScaler in front in a Pipeline
    (neural networks train poorly on unscaled features).

    Parameters
    ----------
    hidden_layer_sizes : int or sequence of int, default=(100,)
        Width of each hidden layer; () gives multinomial logistic regression.
    activation : str, default="relu"
        A name in `workbench.nn.activations.ACTIVATIONS`.
    init : str, default="he_normal"
        A name in `workbench.nn.init.INITIALIZERS` (biases start at zero).
    optimizer : str, default="adam"
        A name in `workbench.nn.optim.OPTIMIZERS`, at a constant learning rate.
    learning_rate : float, default=1e-3
    weight_decay : float, default=0.0
        L2 on weight matrices (decoupled for "adamw"), never on biases.
    batch_size : int, default=32
        Mini-batch size, capped at the number of training samples.
    max_epochs : int, default=200
    shuffle : bool, default=True
        Reshuffle the training samples every epoch.
    batch_norm : bool, default=False
        Batch normalization after each hidden dense layer.
    dropout : float in [0, 1), default=0.0
        Inverted dropout after each hidden activation.
    early_stopping : bool, default=False
        Hold out `validation_fraction` of the training data (stratified when
        every class can appear on both sides, else a plain random split),
        stop when its loss has not improved by more than `min_delta` for
        `patience` epochs, and keep the weights of the best epoch.
    validation_fraction : float in (0, 1), default=0.1
    patience : int, default=10
    min_delta : float, default=0.0
    random_state : int, RandomState instance or None, default=None
        Seeds initialization, dropout, shuffling and the validation split.
        An int gives the same streams as the CLI's `seed`.
    dtype : {"float32", "float64"}, default="float32"
        Precision of the weights and of the computation.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
    model_ : workbench.nn.model.Sequential
        The trained network (`model_.save(path)` writes a reloadable npz).
    n_features_in_ : int
    feature_names_in_ : ndarray of str, only when X has string column names
    loss_curve_ : list of float
        Mean training loss of each epoch.
    loss_ : float
        Training loss of the last epoch.
    n_iter_ : int
        Epochs run.
    validation_loss_curve_ : list of float or None
        Validation loss of each epoch (None without early stopping).
    best_validation_loss_ : float or None
        Loss of the epoch whose weights were kept (None without early stopping).
    """

    def fit(self, X, y):
        """Train a fresh network on X (n_samples, n_features) and labels y (n_samples,)."""
        X, y, hidden = self._validate_fit_data(X, y)
        check_classification_targets(y)
        encoder = LabelEncoder().fit(y)
        self.classes_ = encoder.classes_
        target = encoder.transform(y).astype(np.int64)
        meta = {"task": "classification", "loss": CrossEntropy.name, "classes": [str(c) for c in self.classes_]}
        return self._fit_network(X, target, hidden, loss=CrossEntropy(), n_outputs=len(self.classes_),
                                 task="classification", meta=meta, stratify=target)

    def decision_function(self, X) -> np.ndarray:
        """Logits (n_samples, n_classes); for two classes the log-odds z_1 - z_0, shape (n_samples,)."""
        logits = self._network_output(X)
        return logits[:, 1] - logits[:, 0] if logits.shape[1] == 2 else logits

    def predict_proba(self, X) -> np.ndarray:
        """Softmax of the logits: class probabilities, rows sum to 1, columns ordered as `classes_`."""
        return CrossEntropy.probabilities(self._network_output(X))

    def predict_log_proba(self, X) -> np.ndarray:
        """Log of `predict_proba`, computed stably from the logits."""
        return log_softmax(self._network_output(X), axis=1)

    def predict(self, X) -> np.ndarray:
        """The most probable class of each sample (argmax of the logits)."""
        index = self._network_output(X).argmax(axis=1)
        return self.classes_[index]
