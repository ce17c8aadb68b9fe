"""The named optimizers, each a chain of gradient transformations, and `build_optimizer`.

Every optimizer leaves the learning rate to `Optimizer.step` (p -= lr_t * u).
Weight decay is coupled L2 (u starts as g + wd * W, before the optimizer's
scaling) for all but adamw, whose decay is decoupled (p -= lr * wd * p, as
torch.optim.AdamW). Decay applies only to weight matrices, keys ending in ".W":
never to biases or batch-norm gamma/beta (see `is_weight_matrix`).
Conventions follow torch.optim, so trajectories match PyTorch's to rounding.
"""

from __future__ import annotations

from collections.abc import Callable, Collection

import numpy as np

from workbench.nn.optim.optimizer import Optimizer
from workbench.nn.optim.registry import call_with_settings, lookup
from workbench.nn.optim.schedules import build_schedule
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


def _decay(weight_decay: float, decay_mask: Callable[[str], bool] | None) -> tuple[GradientTransformation, ...]:
    """The decay link on the weights `decay_mask` passes (default: keys ending in ".W"); none at weight_decay 0."""
    if not weight_decay:
        return ()
    return (add_decayed_weights(weight_decay, decay_mask or is_weight_matrix),)


def _coupled(weight_decay: float, *links: GradientTransformation, decay_mask=None) -> GradientTransformation:
    """chain(L2 on weight matrices, *links); no decay link at all when weight_decay is 0."""
    return chain(*_decay(weight_decay, decay_mask), *links)


def sgd(*, weight_decay: float = 0.0, decay_mask=None) -> GradientTransformation:
    """Stochastic gradient descent (Robbins & Monro 1951): p -= lr * (g + wd * W)."""
    return _coupled(weight_decay, decay_mask=decay_mask)


def momentum(*, momentum: float = 0.9, weight_decay: float = 0.0, decay_mask=None) -> GradientTransformation:
    """Heavy-ball momentum (Polyak 1964), torch.optim.SGD convention:
    v = mu * v + g; p -= lr * v (g includes wd * W; v starts at 0)."""
    return _coupled(weight_decay, scale_by_momentum(momentum), decay_mask=decay_mask)


def nesterov(*, momentum: float = 0.9, weight_decay: float = 0.0, decay_mask=None) -> GradientTransformation:
    """Nesterov momentum (Sutskever et al. 2013), torch.optim.SGD(nesterov=True) convention:
    v = mu * v + g; p -= lr * (g + mu * v) (g includes wd * W; v starts at 0)."""
    return _coupled(weight_decay, scale_by_momentum(momentum, nesterov=True), decay_mask=decay_mask)


def rmsprop(*, rho: float = 0.9, eps: float = 1e-8, weight_decay: float = 0.0, decay_mask=None) -> GradientTransformation:
    """RMSProp (Tieleman & Hinton 2012, lecture 6e), torch.optim.RMSprop convention (alpha = rho):
    s = rho * s + (1 - rho) * g^2; p -= lr * g / (sqrt(s) + eps) (eps outside the sqrt; s starts at 0)."""
    return _coupled(weight_decay, scale_by_rms(rho, eps), decay_mask=decay_mask)


def adam(*, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8, weight_decay: float = 0.0, decay_mask=None) -> GradientTransformation:
    """Adam (Kingma & Ba 2015, Algorithm 1), t from 1:
    m = b1 * m + (1 - b1) * g; v = b2 * v + (1 - b2) * g^2;
    p -= lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps). Weight decay is coupled L2
    (g includes wd * W), as torch.optim.Adam(weight_decay=wd): use adamw to decouple it."""
    return _coupled(weight_decay, scale_by_adam(beta1, beta2, eps), decay_mask=decay_mask)


def adamw(*, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8, weight_decay: float = 0.0, decay_mask=None) -> GradientTransformation:
    """AdamW (Loshchilov & Hutter 2019, Algorithm 2), torch.optim.AdamW convention:
    Adam on the raw gradient, then p -= lr * wd * W on weight matrices. The decay is
    scaled by the scheduled lr (PyTorch), where the paper scales it by the schedule
    multiplier only."""
    return chain(scale_by_adam(beta1, beta2, eps), *_decay(weight_decay, decay_mask))


def adagrad(*, eps: float = 1e-8, weight_decay: float = 0.0, decay_mask=None) -> GradientTransformation:
    """Adagrad (Duchi, Hazan & Singer 2011), torch.optim.Adagrad convention (accumulator starts at 0):
    s = s + g^2; p -= lr * g / (sqrt(s) + eps) (g includes wd * W)."""
    return _coupled(weight_decay, scale_by_adagrad(eps), decay_mask=decay_mask)


OPTIMIZERS = {
    "sgd": sgd,
    "momentum": momentum,
    "nesterov": nesterov,
    "rmsprop": rmsprop,
    "adam": adam,
    "adamw": adamw,
    "adagrad": adagrad,
}


def build_optimizer(
    params: dict[str, np.ndarray],
    name: str,
    *,
    lr: float,
    weight_decay: float = 0.0,
    momentum: float = 0.9,
    beta1: float = 0.9,
    beta2: float = 0.999,
    eps: float = 1e-8,
    rho: float = 0.9,
    schedule: str = "constant",
    steps_per_epoch: int = 1,
    epochs: int = 1,
    step_size: int = 30,
    gamma: float = 0.1,
    warmup_epochs: int = 5,
    min_lr: float = 0.0,
    weights: Collection[str] | None = None,
) -> Optimizer:
    """The optimizer `name` over `params` at the schedule `schedule` (epochs converted with steps_per_epoch).

    Each optimizer reads only the settings it declares (`registry.hyperparameters`);
    the others are ignored. Unknown names raise UserError listing the allowed ones.
    `weights`: the parameter keys weight decay applies to (the layers' declared weights,
    `model.weight_names()`); default: keys ending in ".W".
    """
    factory = lookup(OPTIMIZERS, name, "optimizer")
    transform = call_with_settings(
        factory, dict(weight_decay=weight_decay, momentum=momentum, beta1=beta1, beta2=beta2, eps=eps, rho=rho,
                      decay_mask=frozenset(weights).__contains__ if weights is not None else None)
    )
    rate = build_schedule(
        schedule,
        float(lr),
        steps_per_epoch=steps_per_epoch,
        epochs=epochs,
        step_size=step_size,
        gamma=gamma,
        warmup_epochs=warmup_epochs,
        min_lr=min_lr,
    )
    return Optimizer(params, transform, rate)
