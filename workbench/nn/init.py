"""Weight initializers by name, for weights of any shape; biases start at zero.

`initializer(fan_in, fan_out, rng, scale, dtype, shape=None)` returns an array of
`shape` (default: the dense layout (fan_in, fan_out)). `init_weight(name, shape, ...)`
computes the fans from the shape as PyTorch and Keras do: a dense (in, out)
matrix has fan_in = in, fan_out = out; a convolution kernel (out, in, *kernel)
has fan_in = in x kernel area and fan_out = out x kernel area; so `he_normal`
means the same thing in all three.

`scale` is the std for `normal`, the half-width for `uniform`, and a gain
multiplying the formula for every other scheme (1.0 reproduces the paper).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

Initializer = Callable[..., np.ndarray]


def _uniform(limit: float, shape, rng, dtype) -> np.ndarray:
    return rng.uniform(-limit, limit, size=shape).astype(dtype)


def _normal(std: float, shape, rng, dtype) -> np.ndarray:
    return (rng.standard_normal(size=shape) * std).astype(dtype)


def standard(fan_in, fan_out, rng, scale, dtype, shape=None):
    """U[-1/sqrt(fan_in), 1/sqrt(fan_in)]: the common heuristic that Glorot & Bengio (2010, eq. 1) take as baseline."""
    return _uniform(scale / math.sqrt(fan_in), shape or (fan_in, fan_out), rng, dtype)


def xavier_uniform(fan_in, fan_out, rng, scale, dtype, shape=None):
    """U[-a, a], a = sqrt(6 / (fan_in + fan_out)): 'normalized initialization', Glorot & Bengio (2010, eq. 16)."""
    return _uniform(scale * math.sqrt(6.0 / (fan_in + fan_out)), shape or (fan_in, fan_out), rng, dtype)


def xavier_normal(fan_in, fan_out, rng, scale, dtype, shape=None):
    """N(0, 2 / (fan_in + fan_out)): the Gaussian form of Glorot & Bengio (2010), same variance as eq. 16."""
    return _normal(scale * math.sqrt(2.0 / (fan_in + fan_out)), shape or (fan_in, fan_out), rng, dtype)


def he_uniform(fan_in, fan_out, rng, scale, dtype, shape=None):
    """U[-a, a], a = sqrt(6 / fan_in): variance 2/fan_in, He et al. (2015, eq. 10) in uniform form."""
    return _uniform(scale * math.sqrt(6.0 / fan_in), shape or (fan_in, fan_out), rng, dtype)


def he_normal(fan_in, fan_out, rng, scale, dtype, shape=None):
    """N(0, 2 / fan_in): He et al. (2015, eq. 10), keeps the forward variance of ReLU networks (untruncated, as PyTorch)."""
    return _normal(scale * math.sqrt(2.0 / fan_in), shape or (fan_in, fan_out), rng, dtype)


def lecun_normal(fan_in, fan_out, rng, scale, dtype, shape=None):
    """N(0, 1 / fan_in): LeCun et al. (1998, 'Efficient BackProp', sec. 4.6)."""
    return _normal(scale * math.sqrt(1.0 / fan_in), shape or (fan_in, fan_out), rng, dtype)


def orthogonal(fan_in, fan_out, rng, scale, dtype, shape=None):
    """A (semi-)orthogonal matrix times a gain: Saxe et al. (2014); QR of a Gaussian with the sign of diag(R) fixed."""
    if shape is not None and len(shape) > 2:  # a kernel (out, in, *k): orthogonal rows over in x k
        out = shape[0]
        flat = orthogonal(int(np.prod(shape[1:])), out, rng, scale, dtype)
        return np.ascontiguousarray(flat.T).reshape(shape)
    rows, cols = max(fan_in, fan_out), min(fan_in, fan_out)
    q, r = np.linalg.qr(rng.standard_normal(size=(rows, cols)))
    q *= np.sign(np.diag(r))
    if fan_in < fan_out:
        q = q.T
    return (scale * q).astype(dtype)


def normal(fan_in, fan_out, rng, scale, dtype, shape=None):
    """N(0, scale^2): a fixed-scale Gaussian, the 'small random numbers' of early practice."""
    return _normal(scale, shape or (fan_in, fan_out), rng, dtype)


def uniform(fan_in, fan_out, rng, scale, dtype, shape=None):
    """U[-scale, scale]: a fixed-scale uniform."""
    return _uniform(scale, shape or (fan_in, fan_out), rng, dtype)


def zeros(fan_in, fan_out, rng, scale, dtype, shape=None):
    """All zeros: every unit of a layer stays identical (a symmetry-breaking failure to study)."""
    return np.zeros(shape or (fan_in, fan_out), dtype)


INITIALIZERS: dict[str, Initializer] = {
    fn.__name__: fn
    for fn in (standard, xavier_uniform, xavier_normal, he_uniform, he_normal, lecun_normal, orthogonal, normal, uniform, zeros)
}


def fans(shape: tuple[int, ...]) -> tuple[int, int]:
    """(fan_in, fan_out) of a weight: dense (in, out); kernel (out, in, *k) -> (in * k, out * k)."""
    if len(shape) == 2:
        return int(shape[0]), int(shape[1])
    receptive = int(np.prod(shape[2:]))
    return int(shape[1]) * receptive, int(shape[0]) * receptive


def init_weight(name: str, shape: tuple[int, ...], rng: np.random.Generator, scale: float, dtype) -> np.ndarray:
    """A weight of `shape` drawn by the initializer `name`, fans from the shape (see module docstring)."""
    fan_in, fan_out = fans(shape)
    shape = tuple(int(s) for s in shape)
    return INITIALIZERS[name](fan_in, fan_out, rng, scale, np.dtype(dtype), shape if len(shape) != 2 else None)


# -- recurrent matrices ------------------------------------------------------------------------------
# A recurrent layer's U maps h_{t-1} (H units) to each of its G gates: U is (H, G*H), and each (H, H)
# block is drawn on its own (so an lstm's four blocks are each orthogonal, as in PyTorch practice,
# rather than the (H, 4H) matrix being semi-orthogonal as a whole). `scale` is the gain.


def recurrent_orthogonal(units, rng, scale, dtype, spectral_radius=None):
    """An orthogonal (H, H) block times a gain: every singular value is `scale` (Saxe et al. 2014), so
    h_{t-1} -> U h_{t-1} neither shrinks nor grows any direction (the linear part of Pascanu's condition)."""
    return orthogonal(units, units, rng, scale, dtype)


def recurrent_identity(units, rng, scale, dtype, spectral_radius=None):
    """`scale` times the identity: the IRNN of Le, Jaitly & Hinton (2015), which with ReLU units copies
    the hidden state forward unchanged when the input is zero (scale 1), a memory that neither fades nor grows."""
    return (scale * np.eye(units)).astype(dtype)


def recurrent_normal(units, rng, scale, dtype, spectral_radius=None):
    """N(0, scale^2 / H): by the circular law (Girko 1984) the eigenvalues fill the disc of radius
    `scale`, so scale 1 sits at the edge between fading and growing (Sompolinsky et al. 1988)."""
    return (rng.standard_normal(size=(units, units)) * (scale / math.sqrt(units))).astype(dtype)


def recurrent_spectral(units, rng, scale, dtype, spectral_radius=1.0):
    """A Gaussian block rescaled so that its largest |eigenvalue| is `spectral_radius`: the initialization
    of echo-state networks (Jaeger 2001) that Sutskever et al. (2013) and Pascanu, Mikolov & Bengio (2013)
    use for RNNs ("smart" init); below 1 the linearized state fades, above 1 it can grow."""
    block = rng.standard_normal(size=(units, units))
    radius = float(np.max(np.abs(np.linalg.eigvals(block)))) if units else 1.0
    return (block * (spectral_radius / radius)).astype(dtype)


RECURRENT_INITIALIZERS: dict[str, Initializer] = {
    "orthogonal": recurrent_orthogonal,
    "identity": recurrent_identity,
    "normal": recurrent_normal,
    "spectral": recurrent_spectral,
}


def init_recurrent(name: str, units: int, gates: int, rng: np.random.Generator, scale: float, dtype,
                   spectral_radius: float = 1.0) -> np.ndarray:
    """U of shape (H, gates * H): `gates` blocks, each drawn by the recurrent initializer `name`."""
    blocks = [RECURRENT_INITIALIZERS[name](units, rng, scale, np.dtype(dtype), spectral_radius) for _ in range(gates)]
    return np.ascontiguousarray(np.concatenate(blocks, axis=1), dtype=dtype)
