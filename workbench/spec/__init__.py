"""The experiment spec: a TOML file validated into one frozen `Spec`.

    spec = load_spec("experiments/digits_mlp.toml", ["optimizer.lr=0.01"])
    spec.optimizer.lr, spec.flatten()["model.hidden"], spec.to_toml()

Every key is declared once in `FIELDS` (type, default, constraint, doc); every user
mistake raises `workbench.errors.UserError` with one line naming key, value and rule.
"""

from .loader import apply_overrides, load_spec, spec_from_dict
from .schema import (
    ACTIVATION_CHOICES,
    CLIPPING_MODE_CHOICES,
    DATA_SOURCE_CHOICES,
    DTYPE_CHOICES,
    FIELDS,
    INIT_CHOICES,
    LOSS_CHOICES,
    MONITOR_MODE_CHOICES,
    OPTIMIZER_CHOICES,
    SCHEDULE_CHOICES,
    Field,
    known_keys,
)
from .sections import (
    ClippingSpec,
    DataSpec,
    EarlyStoppingSpec,
    ModelSpec,
    MonitorSpec,
    OptimizerSpec,
    Spec,
    TrainingSpec,
)

__all__ = [
    "ACTIVATION_CHOICES",
    "CLIPPING_MODE_CHOICES",
    "DATA_SOURCE_CHOICES",
    "DTYPE_CHOICES",
    "FIELDS",
    "INIT_CHOICES",
    "LOSS_CHOICES",
    "MONITOR_MODE_CHOICES",
    "OPTIMIZER_CHOICES",
    "SCHEDULE_CHOICES",
    "ClippingSpec",
    "DataSpec",
    "EarlyStoppingSpec",
    "Field",
    "ModelSpec",
    "MonitorSpec",
    "OptimizerSpec",
    "Spec",
    "TrainingSpec",
    "apply_overrides",
    "known_keys",
    "load_spec",
    "spec_from_dict",
]
