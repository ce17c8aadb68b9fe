"""The simple recurrent layer (Elman 1990): h_t = phi(x_t W + h_{t-1} U + b), phi = tanh or relu.

Backward through time (see `workbench.nn.recurrent`), with dh_t the gradient reaching h_t:
    da_t = dh_t * phi'(a_t)       tanh: 1 - h_t^2;  relu: 1[h_t > 0]
    dh_{t-1} += da_t U^T
So the gradient from step T reaches step t multiplied by prod_{s=t+1..T} diag(phi'(a_s)) U^T:
with ||U|| below 1/gamma (gamma bounding |phi'|: 1 for tanh and relu) it must vanish
geometrically, and it can only explode when ||U|| is above it (Pascanu, Mikolov & Bengio 2013,
sec. 2.1). relu with U = I (the IRNN of Le, Jaitly & Hinton 2015) passes it unchanged
through every active unit.
"""

from __future__ import annotations

import numpy as np

from workbench.constraints import Choices
from workbench.nn.keys import Key
from workbench.nn.recurrent import Recurrent, recurrent_keys

RNN_ACTIVATIONS = ("tanh", "relu")


class SimpleRNN(Recurrent):
    type_name = "rnn"
    prefix = "rnn"
    gates = 1
    keys = (*recurrent_keys()[:2], Key("activation", str, "tanh", Choices(RNN_ACTIVATIONS), "phi: tanh or relu"),
            *recurrent_keys()[2:])

    def __init__(self, name, W, U, b, *, activation: str = "tanh", **kwargs) -> None:
        super().__init__(name, W, U, b, **kwargs)
        self.output_activation = activation

    @classmethod
    def _build(cls, name, W, U, b, config, ctx):
        return cls(name, W, U, b, activation=config["activation"], return_sequences=config["return_sequences"])

    def describe(self) -> str:
        return f"rnn {self.units} {self.output_activation}" + (" seq" if self.return_sequences else "")

    def _steps(self, bufs, T: int) -> None:
        A, h, tmp, U = bufs.A, bufs.h, bufs.gate_tmp, self.params["U"]
        relu = self.output_activation == "relu"
        matmul, add = np.matmul, np.add
        for t in range(T):
            matmul(h[t], U, out=tmp)
            add(tmp, A[t], out=tmp)
            if relu:
                np.maximum(tmp, 0.0, out=h[t + 1])
            else:
                np.tanh(tmp, out=h[t + 1])

    def _back_steps(self, bufs, T: int) -> None:
        dA, dH, h, tmp = bufs.dA, bufs.dH, bufs.h, bufs.unit_tmp
        slope = dA  # phi'(a_t) for all t first (one vectorized pass), then da_t = dh_t * phi'(a_t) in place
        if self.output_activation == "relu":
            np.greater(h[1:], 0.0, out=slope, casting="unsafe")
        else:
            np.multiply(h[1:], h[1:], out=slope)
            np.subtract(1.0, slope, out=slope)
        UT = self.params["U"].T
        matmul, multiply = np.matmul, np.multiply
        for t in range(T - 1, -1, -1):
            multiply(dH[t], slope[t], out=dA[t])
            if t and not self.cut(t, T):
                matmul(dA[t], UT, out=tmp)
                dH[t - 1] += tmp
