"""Look inside a trained model: input attributions, feature importance, unit importance, their figures.

    from workbench.explain import explain
    result = explain(model, X_test, y_test, samples=16, method="integrated_gradients")
    print(result.report()); result.save("explain/")

- attributions.py: saliency, gradient x input, integrated gradients with adaptive steps until
  completeness holds (Sundararajan, Taly & Yan 2017), by the model's own backward pass.
- gradients.py: evaluation-mode passes that keep the backward caches (dropout off, batch-norm
  running statistics) and input gradients of a chosen output.
- features.py: mean |attribution| per feature and scikit-learn's permutation importance.
- units.py: first-order estimates of the loss change if a unit were removed (Molchanov et al. 2017),
  per layer and per unit; units removed for real to check them.
- figures.py: heat maps over images, feature importance bars, unit importance (matplotlib, no pyplot).
- api.py: `explain` and `Explanation` (report, JSON, files).
- tracked.py: `explain_run` for `workbench explain RUN_ID|latest|MODEL.npz` (reads and writes MLflow
  through workbench.tracking's helpers: the run's model, spec and data in, explain/ artifacts out).
"""

from workbench.explain.api import Explanation, explain
from workbench.explain.attributions import (
    METHODS,
    Attributions,
    gradient_x_input,
    integrated_gradients,
    saliency,
)
from workbench.explain.units import UnitImportance, loss_with_units_removed, unit_importance, units_removed

__all__ = [
    "METHODS",
    "Attributions",
    "Explanation",
    "UnitImportance",
    "explain",
    "gradient_x_input",
    "integrated_gradients",
    "loss_with_units_removed",
    "saliency",
    "unit_importance",
    "units_removed",
]


class _CallableModule(type(__import__("sys"))):
    """`workbench.explain(model, X, ...)` calls `explain`: importing this package makes it an attribute of
    `workbench` (replacing the function of that name there), so the package itself is callable."""

    def __call__(self, *args, **kwargs):
        return explain(*args, **kwargs)


__import__("sys").modules[__name__].__class__ = _CallableModule
