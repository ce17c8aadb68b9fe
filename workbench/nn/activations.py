"""Element-wise activations, each with its derivative beside it.

Every activation caches what its derivative needs (input or output) and
multiplies the incoming gradient by f'(x). Constants are Python floats so that
float32 arrays stay float32 under NEP 50.
"""

from __future__ import annotations

import math

import numpy as np

from workbench.nn.layer import Layer


class Activation(Layer):
    """Base for parameter-free element-wise layers; `y` is the cached output."""

    kind = "activation"
    activation = "identity"
    prefix = "act"

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls.type_name = cls.activation  # every activation name is a layer type

    def describe(self) -> str:
        return self.activation

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self._x: np.ndarray | None = None
        self._y: np.ndarray | None = None


class Identity(Activation):
    """f(x) = x, f'(x) = 1."""

    activation = "identity"

    def forward(self, x, training):
        self._y = x
        return x

    def backward(self, grad_out):
        return grad_out


class ReLU(Activation):
    """f(x) = max(x, 0), f'(x) = 1[x > 0] (Nair & Hinton 2010)."""

    activation = "relu"

    def forward(self, x, training):
        self._y = np.maximum(x, 0.0)
        return self._y

    def backward(self, grad_out):
        return grad_out * (self._y > 0.0)


class LeakyReLU(Activation):
    """f(x) = x if x > 0 else a x, f'(x) = 1 or a (Maas et al. 2013), a = 0.01."""

    activation = "leaky_relu"
    slope = 0.01

    def forward(self, x, training):
        self._x = x
        self._y = np.where(x > 0.0, x, x * self.slope)
        return self._y

    def backward(self, grad_out):
        return np.where(self._x > 0.0, grad_out, grad_out * self.slope)


class ELU(Activation):
    """f(x) = x if x > 0 else a (e^x - 1), f'(x) = 1 or f(x) + a (Clevert et al. 2016), a = 1."""

    activation = "elu"
    alpha = 1.0

    def forward(self, x, training):
        self._x = x
        self._y = np.where(x > 0.0, x, self.alpha * np.expm1(np.minimum(x, 0.0)))
        return self._y

    def backward(self, grad_out):
        return np.where(self._x > 0.0, grad_out, grad_out * (self._y + self.alpha))


_GELU_C = math.sqrt(2.0 / math.pi)


class GELU(Activation):
    """Tanh approximation of GELU (Hendrycks & Gimpel 2016), as in BERT and GPT-2.

    f(x) = x/2 (1 + tanh(u)), u = c (x + 0.044715 x^3), c = sqrt(2/pi);
    f'(x) = (1 + t)/2 + x/2 (1 - t^2) c (1 + 3 * 0.044715 x^2), t = tanh(u).
    """

    activation = "gelu"

    def forward(self, x, training):
        self._x = x
        self._t = np.tanh(_GELU_C * (x + 0.044715 * x**3))
        self._y = 0.5 * x * (1.0 + self._t)
        return self._y

    def backward(self, grad_out):
        x, t = self._x, self._t
        dydx = 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * _GELU_C * (1.0 + 3 * 0.044715 * x * x)
        return grad_out * dydx


class Tanh(Activation):
    """f(x) = tanh(x), f'(x) = 1 - f(x)^2."""

    activation = "tanh"

    def forward(self, x, training):
        self._y = np.tanh(x)
        return self._y

    def backward(self, grad_out):
        return grad_out * (1.0 - self._y * self._y)


class Sigmoid(Activation):
    """f(x) = 1/(1 + e^-x), computed as (1 + tanh(x/2))/2 to avoid overflow; f'(x) = f(1 - f)."""

    activation = "sigmoid"

    def forward(self, x, training):
        self._y = 0.5 * (1.0 + np.tanh(0.5 * x))
        return self._y

    def backward(self, grad_out):
        return grad_out * (self._y * (1.0 - self._y))


class Softsign(Activation):
    """f(x) = x/(1 + |x|), f'(x) = 1/(1 + |x|)^2 (Bergstra et al. 2009; Glorot & Bengio 2010)."""

    activation = "softsign"

    def forward(self, x, training):
        self._d = 1.0 + np.abs(x)
        self._y = x / self._d
        return self._y

    def backward(self, grad_out):
        return grad_out / (self._d * self._d)


ACTIVATIONS: dict[str, type[Activation]] = {
    cls.activation: cls for cls in (ReLU, LeakyReLU, ELU, GELU, Tanh, Sigmoid, Softsign, Identity)
}
