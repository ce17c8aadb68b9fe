"""scikit-learn estimators over the workbench training core.

    from workbench.estimators import MLPClassifier, MLPRegressor
    make_pipeline(StandardScaler(), MLPClassifier(hidden_layer_sizes=(64, 64), random_state=0)).fit(X, y)

- base.py: parameters, their constraints (from the registries) and one training run, shared.
- classifier.py / regressor.py: the two estimators.

Training registers two hooks of `workbench.monitor`: NanGuard (a divergence stops the fit,
which raises ValueError) and, with early_stopping=True, EarlyStopping on val/loss with
restore_best_weights, as the CLI's [early_stopping] section.

Requires scikit-learn >= 1.6 (`validate_data`, `__sklearn_tags__`).
"""

from workbench.estimators.classifier import MLPClassifier
from workbench.estimators.regressor import MLPRegressor

__all__ = ["MLPClassifier", "MLPRegressor"]
