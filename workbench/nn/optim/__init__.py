"""Optimizers as chains of gradient transformations, weight decay, learning-rate schedules.

    optimizer = build_optimizer(params, "adamw", lr=1e-3, weight_decay=1e-2,
                                schedule="warmup_cosine", steps_per_epoch=470, epochs=20)
    optimizer.step(grads)            # params updated in place; grads consumed

or by hand, optax style (a clipping link composes the same way):

    Optimizer(params, chain(add_decayed_weights(1e-4), scale_by_adam(0.9, 0.999, 1e-8)),
              WarmupCosineSchedule(1e-3, warmup_steps=500, total_steps=9400))

- transforms.py: the links (`init`/`update`, in place) and `chain`.
- optimizers.py: the registry `OPTIMIZERS` and `build_optimizer`.
- schedules.py: the registry `SCHEDULES` and the schedules, in steps.
- optimizer.py: `Optimizer` (step, lr, state_dict for exact resume).
"""

from workbench.nn.optim.optimizer import Optimizer
from workbench.nn.optim.optimizers import OPTIMIZERS, build_optimizer
from workbench.nn.optim.registry import hyperparameters
from workbench.nn.optim.schedules import (
    SCHEDULES,
    ConstantSchedule,
    CosineSchedule,
    StepSchedule,
    WarmupCosineSchedule,
    build_schedule,
)
from workbench.nn.optim.transforms import (
    GradientTransformation,
    add_decayed_weights,
    chain,
    is_weight_matrix,
    scale_by_adagrad,
    scale_by_adam,
    scale_by_momentum,
    scale_by_rms,
)

__all__ = [
    "OPTIMIZERS",
    "SCHEDULES",
    "ConstantSchedule",
    "CosineSchedule",
    "GradientTransformation",
    "Optimizer",
    "StepSchedule",
    "WarmupCosineSchedule",
    "add_decayed_weights",
    "build_optimizer",
    "build_schedule",
    "chain",
    "hyperparameters",
    "is_weight_matrix",
    "scale_by_adagrad",
    "scale_by_adam",
    "scale_by_momentum",
    "scale_by_rms",
]
