"""Long short-term memory (Hochreiter & Schmidhuber 1997) with a forget gate (Gers, Schmidhuber & Cummins 2000).

Gates in PyTorch's order i, f, g, o (W, U and b hold four blocks of H columns each):
    i = sigmoid(a_i), f = sigmoid(a_f), g = tanh(a_g), o = sigmoid(a_o),  a = x_t W + h_{t-1} U + b
    c_t = f * c_{t-1} + i * g,   h_t = o * tanh(c_t)
b is one vector (PyTorch's b_ih + b_hh); its forget block starts at `forget_bias` (1.0,
Jozefowicz, Zaremba & Sutskever 2015), so the cell remembers until it learns to forget.

Backward through time, with dh_t the gradient reaching h_t and dc the one carried in c:
    dc_t = dc_{t+1} f_{t+1} + dh_t o (1 - tanh^2 c_t)
    da_o = dh_t tanh(c_t) o (1 - o)
    da_i = dc_t g i (1 - i),  da_f = dc_t c_{t-1} f (1 - f),  da_g = dc_t i (1 - g^2)
    dh_{t-1} += da_t U^T
The cell path multiplies the gradient by f alone at each step (no matrix, no squashing slope):
the "constant error carousel" that carries it over long lags when f stays near 1.

Speed: the gates are computed as 1 / (1 + exp(-a)) on all four blocks at once (tanh a_g =
2 sigmoid(2 a_g) - 1), with the signs and the 2 folded into scaled copies of W, U and b made
once per forward pass, so each step costs one GEMM and about a dozen element-wise calls.
"""

from __future__ import annotations

import numpy as np

from workbench.constraints import Interval
from workbench.nn.keys import Key
from workbench.nn.recurrent import Recurrent, recurrent_keys


class LSTM(Recurrent):
    type_name = "lstm"
    prefix = "lstm"
    gates = 4
    keys = (*recurrent_keys(), Key("forget_bias", float, 1.0, Interval(-100, 100),
                                   "initial bias of the forget gate (Jozefowicz et al. 2015)"))

    @classmethod
    def _build(cls, name, W, U, b, config, ctx):
        H = U.shape[0]
        b[H : 2 * H] = config["forget_bias"]
        return cls(name, W, U, b, return_sequences=config["return_sequences"])

    def _extra_buffers(self, T, N):
        H = self.units
        return {"c": (T + 1, N, H), "tanh_c": (T, N, H), "dc": (N, H), "dc_carry": (N, H), "slope": (N, 4 * H)}

    def _scale(self, dtype) -> np.ndarray:
        """-1 on the sigmoid blocks, -2 on g: a * scale is the exponent of 1 / (1 + exp(.))."""
        H = self.units
        scale = np.full(4 * H, -1.0, dtype)
        scale[2 * H : 3 * H] = -2.0
        return scale

    def _input_projection(self):
        scale = self._scale(self.params["W"].dtype)
        return self.params["W"] * scale, self.params["b"] * scale

    def _initial(self, bufs) -> None:
        state = self.initial_state
        bufs.h[0] = 0.0 if state is None else state[0]
        bufs.c[0] = 0.0 if state is None else state[1]

    def _steps(self, bufs, T: int) -> None:
        H = self.units
        A, h, c, tanh_c, tmp, unit = bufs.A, bufs.h, bufs.c, bufs.tanh_c, bufs.gate_tmp, bufs.unit_tmp
        U = self.params["U"] * self._scale(self.params["U"].dtype)
        matmul, add, multiply, exp, reciprocal, tanh = np.matmul, np.add, np.multiply, np.exp, np.reciprocal, np.tanh
        with np.errstate(over="ignore"):  # exp(+large) = inf gives the gate's limit 0, as it should
            for t in range(T):
                z = A[t]
                matmul(h[t], U, out=tmp)
                add(z, tmp, out=z)
                exp(z, out=z)
                add(z, 1.0, out=z)
                reciprocal(z, out=z)  # i, f, o; and sigmoid(2 a_g) in the g block
                i, f, g, o = z[:, :H], z[:, H : 2 * H], z[:, 2 * H : 3 * H], z[:, 3 * H :]
                multiply(g, 2.0, out=g)
                add(g, -1.0, out=g)  # tanh(a_g)
                multiply(f, c[t], out=c[t + 1])
                multiply(i, g, out=unit)
                add(c[t + 1], unit, out=c[t + 1])
                tanh(c[t + 1], out=tanh_c[t])
                multiply(o, tanh_c[t], out=h[t + 1])

    def _back_steps(self, bufs, T: int) -> None:
        H, N = self.units, bufs.h.shape[1]
        G, dA, dH, c, tanh_c = bufs.A, bufs.dA, bufs.dH, bufs.c, bufs.tanh_c
        dc, carry, slope, unit = bufs.dc, bufs.dc_carry, bufs.slope, bufs.unit_tmp
        UT = self.params["U"].T
        slope4 = slope.reshape(N, 4, H)
        matmul, add, subtract, multiply = np.matmul, np.add, np.subtract, np.multiply
        has_carry = False
        for t in range(T - 1, -1, -1):
            gates, dh, tc = G[t], dH[t], tanh_c[t]
            i, f, g, o = gates[:, :H], gates[:, H : 2 * H], gates[:, 2 * H : 3 * H], gates[:, 3 * H :]
            # the gates' slopes times their partners in da: [g i', c_{t-1} f', i g', tanh(c_t) o']
            subtract(1.0, gates, out=slope)
            multiply(slope, gates, out=slope)  # s (1 - s) on every block; g's is fixed below
            si, sf, sg, so = slope4[:, 0], slope4[:, 1], slope4[:, 2], slope4[:, 3]
            multiply(g, g, out=sg)
            subtract(1.0, sg, out=sg)  # 1 - g^2
            multiply(si, g, out=si)
            multiply(sf, c[t], out=sf)
            multiply(sg, i, out=sg)
            multiply(so, tc, out=so)
            # dc_t = carry + dh o (1 - tanh^2 c_t)
            multiply(tc, tc, out=unit)
            subtract(1.0, unit, out=unit)
            multiply(unit, o, out=unit)
            multiply(unit, dh, out=dc)
            if has_carry:
                add(dc, carry, out=dc)
            da4 = dA[t].reshape(N, 4, H)
            multiply(slope4[:, :3], dc[:, None, :], out=da4[:, :3])
            multiply(so, dh, out=da4[:, 3])
            has_carry = t > 0 and not self.cut(t, T)
            if has_carry:
                multiply(dc, f, out=carry)
                matmul(dA[t], UT, out=unit)
                dH[t - 1] += unit

    @property
    def recurrent_matrix(self) -> np.ndarray:
        """U's g block: what h_{t-1} writes into the cell."""
        H = self.units
        return self.params["U"][:, 2 * H : 3 * H]

    def gate_saturation(self, threshold: float, steps: int) -> float:
        """Fraction of the i, f, o gate values outside [1 - threshold, threshold] (see `Recurrent`)."""
        bufs = self._buffers
        if bufs is None or self._T == 0:
            return float("nan")
        A = bufs.A[self._sampled_steps(steps)]
        gates = A.reshape(A.shape[0], A.shape[1], 4, self.units)  # a view: (steps, N, gate, H)
        return _saturated_sigmoid_share((gates[:, :, :2], gates[:, :, 3]), threshold)


def _saturated_sigmoid_share(blocks: tuple[np.ndarray, ...], threshold: float) -> float:
    """Share of sigmoid values beyond `threshold` or below 1 - threshold, over views of the gate buffer."""
    size = sum(block.size for block in blocks)
    if not size:
        return float("nan")
    count = sum(np.count_nonzero(block > threshold) + np.count_nonzero(block < 1.0 - threshold) for block in blocks)
    return float(count) / size
