"""Gated recurrent unit (Cho et al. 2014), in the form of cuDNN and PyTorch's `nn.GRU`.

Gates in PyTorch's order r, z, n (W, U and b hold three blocks of H columns each):
    r = sigmoid(x W_r + h_{t-1} U_r + b_r),  z = sigmoid(x W_z + h_{t-1} U_z + b_z)
    q = h_{t-1} U_n + b_rec,                 n = tanh(x W_n + b_n + r * q)
    h_t = (1 - z) * n + z * h_{t-1}
b_r and b_z stand for PyTorch's b_ih + b_hh of those gates; the candidate keeps two
biases, b_n (in b) and b_rec, because the reset gate multiplies only the recurrent one.
Cho et al. apply the reset before the product, tanh(x W_n + (r * h_{t-1}) U_n); applying it
after lets one GEMM h_{t-1} U serve all three gates, and is what cuDNN, PyTorch and Keras
(reset_after) compute.

Backward through time, with dh_t the gradient reaching h_t:
    da_n = dh_t (1 - z) (1 - n^2)          dq = da_n r           da_r = da_n q r (1 - r)
    da_z = dh_t (h_{t-1} - n) z (1 - z)
    dh_{t-1} += dh_t z + [da_r, da_z, dq] U^T
so the gradient passes z unchanged through the direct path (z near 1: a long memory).
dU and db_rec sum the recurrent-side gradients [da_r, da_z, dq], dW and db the input-side
[da_r, da_z, da_n].
"""

from __future__ import annotations

import numpy as np

from workbench.nn.lstm import _saturated_sigmoid_share
from workbench.nn.recurrent import Recurrent, recurrent_keys


class GRU(Recurrent):
    type_name = "gru"
    prefix = "gru"
    gates = 3
    keys = recurrent_keys()

    @classmethod
    def _build(cls, name, W, U, b, config, ctx):
        layer = cls(name, W, U, b, return_sequences=config["return_sequences"])
        H = U.shape[0]
        layer.params["b_rec"] = ctx.zeros(H)
        layer.grads["b_rec"] = np.zeros_like(layer.params["b_rec"])
        return layer

    @classmethod
    def from_arrays(cls, name, W, U, b, b_rec, return_sequences=False) -> "GRU":
        layer = cls(name, W, U, b, return_sequences=return_sequences)
        layer.params["b_rec"] = b_rec
        layer.grads["b_rec"] = np.zeros_like(b_rec)
        return layer

    def _extra_buffers(self, T, N):
        H = self.units
        return {"q": (T, N, H), "dn": (T, N, H), "slope": (N, 2 * H), "unit2": (N, H)}

    def _scale(self, dtype) -> np.ndarray:
        """-1 on r and z (the exponent of 1 / (1 + exp(.))), 1 on n."""
        H = self.units
        scale = np.full(3 * H, -1.0, dtype)
        scale[2 * H :] = 1.0
        return scale

    def _input_projection(self):
        scale = self._scale(self.params["W"].dtype)
        return self.params["W"] * scale, self.params["b"] * scale

    def _steps(self, bufs, T: int) -> None:
        H = self.units
        A, h, q, tmp, unit = bufs.A, bufs.h, bufs.q, bufs.gate_tmp, bufs.unit_tmp
        U = self.params["U"] * self._scale(self.params["U"].dtype)
        b_rec = self.params["b_rec"]
        matmul, add, subtract, multiply, exp, reciprocal, tanh = (
            np.matmul, np.add, np.subtract, np.multiply, np.exp, np.reciprocal, np.tanh)
        with np.errstate(over="ignore"):
            for t in range(T):
                a = A[t]
                matmul(h[t], U, out=tmp)
                rz = a[:, : 2 * H]
                add(rz, tmp[:, : 2 * H], out=rz)
                exp(rz, out=rz)
                add(rz, 1.0, out=rz)
                reciprocal(rz, out=rz)
                r, z, n = a[:, :H], a[:, H : 2 * H], a[:, 2 * H :]
                add(tmp[:, 2 * H :], b_rec, out=q[t])
                multiply(r, q[t], out=unit)
                add(n, unit, out=n)
                tanh(n, out=n)
                subtract(h[t], n, out=unit)
                multiply(unit, z, out=unit)
                add(n, unit, out=h[t + 1])

    def _back_steps(self, bufs, T: int) -> None:
        H = self.units
        G, dA, dH, h, q, dn = bufs.A, bufs.dA, bufs.dH, bufs.h, bufs.q, bufs.dn
        slope, u, v = bufs.slope, bufs.unit_tmp, bufs.unit2
        UT = self.params["U"].T
        matmul, add, subtract, multiply = np.matmul, np.add, np.subtract, np.multiply
        for t in range(T - 1, -1, -1):
            gates, dh, da = G[t], dH[t], dA[t]
            rz, r, z, n = gates[:, : 2 * H], gates[:, :H], gates[:, H : 2 * H], gates[:, 2 * H :]
            subtract(1.0, rz, out=slope)
            multiply(slope, rz, out=slope)  # r (1 - r), z (1 - z)
            multiply(n, n, out=u)
            subtract(1.0, u, out=u)  # 1 - n^2
            subtract(1.0, z, out=v)
            multiply(v, dh, out=v)  # dh (1 - z)
            multiply(u, v, out=dn[t])  # da_n
            multiply(dn[t], r, out=da[:, 2 * H :])  # dq
            multiply(dn[t], q[t], out=da[:, :H])
            multiply(da[:, :H], slope[:, :H], out=da[:, :H])  # da_r
            subtract(h[t], n, out=u)
            multiply(u, dh, out=u)
            multiply(u, slope[:, H:], out=da[:, H : 2 * H])  # da_z
            if t and not self.cut(t, T):
                matmul(da, UT, out=u)
                multiply(dh, z, out=v)
                add(u, v, out=u)
                dH[t - 1] += u

    def _parameter_grads(self, bufs, X, T, N):
        H = self.units
        dA = bufs.dA.reshape(T * N, 3 * H)
        dn = bufs.dn.reshape(T * N, H)
        rz = dA[:, : 2 * H]
        gW, gb = self.grads["W"], self.grads["b"]
        gW[:, : 2 * H] = X.T @ rz
        gW[:, 2 * H :] = X.T @ dn
        np.matmul(bufs.h[:T].reshape(T * N, H).T, dA, out=self.grads["U"])
        gb[: 2 * H] = rz.sum(axis=0)
        gb[2 * H :] = dn.sum(axis=0)
        self.grads["b_rec"][...] = dA[:, 2 * H :].sum(axis=0)
        if not self.input_grad:
            return None
        W = self.params["W"]
        dx = rz @ W[:, : 2 * H].T
        dx += dn @ W[:, 2 * H :].T
        return dx

    @property
    def recurrent_matrix(self) -> np.ndarray:
        """U's n block: what h_{t-1} (through the reset gate) writes into the candidate."""
        return self.params["U"][:, 2 * self.units :]

    def gate_saturation(self, threshold: float, steps: int) -> float:
        """Fraction of the r and z gate values outside [1 - threshold, threshold] (see `Recurrent`)."""
        bufs = self._buffers
        if bufs is None or self._T == 0:
            return float("nan")
        return _saturated_sigmoid_share((bufs.A[self._sampled_steps(steps), :, : 2 * self.units],), threshold)
