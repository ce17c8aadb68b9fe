"""Gradient transformations: the links an optimizer is chained from (optax's idea, numpy in place).

A `GradientTransformation` is a name and two functions:

- `init(params) -> state`: the link's state, a dict whose values are ints,
  floats, or dicts `param name -> np.ndarray` (one slot per parameter, in the
  parameter's dtype). Keys starting with "_" are scratch buffers: preallocated
  work space, not state, so never checkpointed.
- `update(grads, state, params) -> None`: turns `grads` IN PLACE into updates
  and advances `state` in place. Params are read, never written.

The learning rate is not a link: `Optimizer.step` applies `p -= lr * update`
last, so a schedule can change lr without touching any state. Every link works
through `out=` ufuncs on preallocated buffers, and every scalar is a python
float, so float32 stays float32 (numpy 2 promotes float32 * np.float64 to
float64) and no parameter-sized array is allocated per step.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import numpy as np

Params = dict[str, np.ndarray]
State = dict


Kernel = Callable[[str, np.ndarray, dict, np.ndarray], None]


class GradientTransformation(NamedTuple):
    """A link: `init(params) -> state`, `update(grads, state, params) -> None` (in place).

    `prepare`, on an elementwise link (every one here): `prepare(state) -> kernel` advances the
    link's scalar state for one step and returns `kernel(key, grad, slots, param)`, the update
    of one parameter (`slots`: slot name -> that parameter's buffer). The kernel touches each
    element on its own, so `Optimizer` may run it on blocks of the arrays, in threads.
    """

    name: str
    init: Callable[[Params], State]
    update: Callable[[Params, State, Params], None]
    links: tuple | None = None  # a chain's flattened links; None for a single link
    prepare: Callable[[State], Kernel] | None = None


def elementwise(name: str, init: Callable[[Params], State], prepare: Callable[[State], Kernel]) -> GradientTransformation:
    """A link defined by its per-parameter kernel; `update` runs the kernel once per parameter."""

    cached: list = [None, {}]  # [the state, key -> its slots]: the buffers never change, only their values

    def update(grads: Params, state: State, params: Params) -> None:
        kernel = prepare(state)
        if cached[0] is not state:
            cached[0], cached[1] = state, {}
        slots = cached[1]
        for key, grad in grads.items():
            found = slots.get(key)
            if found is None:
                found = slots[key] = param_slots(state, key)
            kernel(key, grad, found, params[key])

    return GradientTransformation(name, init, update, None, prepare)


def param_slots(state: State, key: str) -> dict[str, np.ndarray]:
    """The buffers of parameter `key` in a link's state: slot name -> array (slots without `key` left out)."""
    return {slot: value[key] for slot, value in state.items() if isinstance(value, dict) and key in value}


def link_names(links) -> list[str]:
    """Unique names for a chain's links: a name used twice gets a suffix ("clip", "clip_2")."""
    names: list[str] = []
    for link in links:
        name, count = link.name, 1
        while name in names:
            count += 1
            name = f"{link.name}_{count}"
        names.append(name)
    return names


def chain(*transforms: GradientTransformation) -> GradientTransformation:
    """Apply `transforms` one after the other; the state is `{link name: link state}`.

    Nested chains are flattened, so state keys read `<link>.<slot>.<param>`
    ("adam.m.dense1.W") however the chain was built; see `link_names`.
    """
    links: list[GradientTransformation] = []
    for transform in transforms:
        links.extend((transform,) if transform.links is None else transform.links)
    pairs = tuple(zip(link_names(links), links))

    def init(params: Params) -> State:
        return {name: link.init(params) for name, link in pairs}

    def update(grads: Params, state: State, params: Params) -> None:
        for name, link in pairs:
            link.update(grads, state[name], params)

    return GradientTransformation("chain", init, update, tuple(links))


def _zeros(params: Params, keys=None) -> dict[str, np.ndarray]:
    """One zero buffer per parameter, same shape and dtype (float32 stays float32)."""
    return {key: np.zeros_like(params[key]) for key in (params if keys is None else keys)}


def is_weight_matrix(name: str) -> bool:
    """Weight decay applies to weight matrices only: keys ending in ".W".

    Biases (".b") and batch-norm scale and shift (".gamma", ".beta") are not
    decayed, the usual practice (decaying them pulls units towards zero output
    and shrinks normalized activations without regularizing capacity).
    """
    return name.endswith(".W")


def add_decayed_weights(weight_decay: float, mask: Callable[[str], bool] = is_weight_matrix) -> GradientTransformation:
    """u += weight_decay * p for every parameter whose name passes `mask`.

    Its position in the chain decides what it is: before the optimizer's
    scaling it is coupled L2 regularization (the gradient of wd/2 * ||W||^2);
    after it, it is decoupled weight decay (AdamW, Loshchilov & Hutter 2019).
    """
    weight_decay = float(weight_decay)

    def init(params: Params) -> State:
        return {"_scratch": _zeros(params, [key for key in params if mask(key)])}

    def kernel(key: str, grad: np.ndarray, slots: dict, param: np.ndarray) -> None:
        scratch = slots.get("_scratch")
        if scratch is not None:  # a masked-out parameter has no buffer
            np.multiply(param, weight_decay, out=scratch)
            grad += scratch

    return elementwise("weight_decay", init, lambda state: kernel)


def scale_by_momentum(momentum: float, nesterov: bool = False) -> GradientTransformation:
    """Heavy ball (Polyak 1964), PyTorch convention: v = mu * v + g; u = v.

    Nesterov (Sutskever et al. 2013, as torch.optim.SGD(nesterov=True)):
    v = mu * v + g; u = g + mu * v. Velocity starts at zero, so the first step
    gives v = g as in torch.optim.SGD.
    """
    momentum = float(momentum)

    def init(params: Params) -> State:
        state = {"velocity": _zeros(params)}
        if nesterov:
            state["_scratch"] = _zeros(params)
        return state

    def kernel(key: str, grad: np.ndarray, slots: dict, param: np.ndarray) -> None:
        velocity = slots["velocity"]
        velocity *= momentum
        velocity += grad
        if nesterov:
            scratch = slots["_scratch"]
            np.multiply(velocity, momentum, out=scratch)
            grad += scratch
        else:
            np.copyto(grad, velocity)

    return elementwise("nesterov" if nesterov else "momentum", init, lambda state: kernel)


def scale_by_rms(rho: float, eps: float) -> GradientTransformation:
    """RMSProp (Hinton 2012, lecture 6e), PyTorch convention (eps outside the sqrt):
    s = rho * s + (1 - rho) * g^2; u = g / (sqrt(s) + eps)."""
    rho, eps = float(rho), float(eps)

    def init(params: Params) -> State:
        return {"mean_square": _zeros(params), "_scratch": _zeros(params)}

    def kernel(key: str, grad: np.ndarray, slots: dict, param: np.ndarray) -> None:
        mean_square, scratch = slots["mean_square"], slots["_scratch"]
        np.multiply(grad, grad, out=scratch)
        scratch *= 1.0 - rho
        mean_square *= rho
        mean_square += scratch
        np.sqrt(mean_square, out=scratch)
        scratch += eps
        grad /= scratch

    return elementwise("rmsprop", init, lambda state: kernel)


def scale_by_adagrad(eps: float) -> GradientTransformation:
    """Adagrad (Duchi, Hazan & Singer 2011), PyTorch convention, accumulator starts at 0:
    s = s + g^2; u = g / (sqrt(s) + eps)."""
    eps = float(eps)

    def init(params: Params) -> State:
        return {"sum_square": _zeros(params), "_scratch": _zeros(params)}

    def kernel(key: str, grad: np.ndarray, slots: dict, param: np.ndarray) -> None:
        sum_square, scratch = slots["sum_square"], slots["_scratch"]
        np.multiply(grad, grad, out=scratch)
        sum_square += scratch
        np.sqrt(sum_square, out=scratch)
        scratch += eps
        grad /= scratch

    return elementwise("adagrad", init, lambda state: kernel)


def scale_by_adam(beta1: float, beta2: float, eps: float) -> GradientTransformation:
    """Adam (Kingma & Ba 2015, Algorithm 1), with bias correction; t counts from 1:
    m = b1 * m + (1 - b1) * g; v = b2 * v + (1 - b2) * g^2;
    u = m_hat / (sqrt(v_hat) + eps) with m_hat = m / (1 - b1^t), v_hat = v / (1 - b2^t).

    Computed as u = m / (sqrt(v) * c + eps * bc1) with bc1 = 1 - b1^t and
    c = bc1 / sqrt(1 - b2^t): the same quantity (multiply the numerator and the
    denominator by bc1), one pass fewer; torch.optim.Adam agrees to rounding.
    """
    beta1, beta2, eps = float(beta1), float(beta2), float(eps)

    def init(params: Params) -> State:
        return {"count": 0, "m": _zeros(params), "v": _zeros(params), "_scratch": _zeros(params)}

    def prepare(state: State) -> Kernel:
        state["count"] += 1
        t = state["count"]
        bias_correction1 = 1.0 - beta1**t
        denominator_scale = bias_correction1 / math.sqrt(1.0 - beta2**t)
        denominator_eps = eps * bias_correction1

        def kernel(key: str, grad: np.ndarray, slots: dict, param: np.ndarray) -> None:
            m, v, scratch = slots["m"], slots["v"], slots["_scratch"]
            m *= beta1
            np.multiply(grad, 1.0 - beta1, out=scratch)
            m += scratch
            np.multiply(grad, grad, out=scratch)
            scratch *= 1.0 - beta2
            v *= beta2
            v += scratch
            np.sqrt(v, out=grad)
            grad *= denominator_scale
            grad += denominator_eps
            np.divide(m, grad, out=grad)

        return kernel

    return elementwise("adam", init, prepare)
