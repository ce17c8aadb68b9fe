"""What rnn, lstm and gru share: keys, building, the loop through time and truncated BPTT.

A recurrent layer reads sequences x of shape (N, T, F) (batch first, as the data and
`torch.nn.LSTM(batch_first=True)`), keeps a hidden state h_t of H units and returns
either the last one, h_T (N, H) (`return_sequences = false`), or all of them (N, T, H).
Its parameters: W (F, G*H) for the input, U (H, G*H) for the recurrent connection and
b (G*H,), G being the number of gate blocks (rnn 1, lstm 4, gru 3); W and U are weights.

Forward, for t = 1..T: a_t = x_t W + h_{t-1} U + b, then the cell turns a_t (and its
state) into h_t. The input projection x_t W + b of every step is one GEMM before the loop;
inside it, one GEMM per step (h_{t-1} U) and the cell's element-wise work, on time-major
buffers allocated once per batch shape.

Backward through time (Werbos 1990), for t = T..1, with dh_t = dL/dh_t the gradient
reaching h_t (the loss at step t, when every step's state goes on, plus what flows back
from step t+1): the cell turns dh_t into da_t = dL/da_t, and
    dh_{t-1} += da_t U^T                (the recurrent path: the gradient carried from t into t-1)
    dW = sum_t x_t^T da_t,  dU = sum_t h_{t-1}^T da_t,  db = sum_t da_t,  dx_t = da_t W^T,
the three sums and dx being one GEMM each after the loop.

Truncated BPTT (`bptt_steps = k`, Williams & Peng 1990): the recurrent path is cut every
k steps counted back from the last step (between steps T-k and T-k+1, T-2k and T-2k+1, ...):
the hidden state is carried forward but held constant at the cut, as `h.detach()` every
k steps in PyTorch, and the update still comes once per batch. 0 backpropagates through
the whole sequence.

After each backward pass, `time_grad_norms()` gives ||dL/dh_t|| over the batch for
t = 1..T (the gradient through time the monitor records); the layer keeps dh_t for all t
anyway, so asking costs one pass over them and not asking costs nothing.
"""

from __future__ import annotations

import numpy as np

from workbench.constraints import Choices, Interval
from workbench.nn.build import shape_text
from workbench.nn.init import RECURRENT_INITIALIZERS, init_recurrent
from workbench.nn.keys import Key, init_keys
from workbench.nn.layer import Layer

SEQUENCE_SOURCES = '"adding", "temporal_order", "copy" or "sequential_mnist"'


def recurrent_keys() -> tuple[Key, ...]:
    """The keys every recurrent layer takes (a cell adds its own after them)."""
    return (
        Key("units", int, constraint=Interval(1, 100_000), doc="hidden units H", example=32),
        Key("return_sequences", bool, False,
            doc="true: every step's hidden state goes on (steps x units); false: the last one (units)"),
        *init_keys(),
        Key("recurrent_init", str, "orthogonal", Choices(tuple(RECURRENT_INITIALIZERS)),
            "initializer of the recurrent matrix U, per gate block"),
        Key("recurrent_scale", float, 1.0, Interval(0, None, "neither"),
            "gain of orthogonal, diagonal of identity, spectral radius of normal (std scale/sqrt(units))"),
        Key("spectral_radius", float, 1.0, Interval(0, None, "neither"),
            "largest |eigenvalue| of each block of U with recurrent_init = spectral"),
    )


class _Buffers:
    """Time-major work arrays for one (T, N) shape, reused while the shape stays."""

    def __init__(self, T: int, N: int, F: int, H: int, G: int, dtype, extra: dict[str, tuple]) -> None:
        self.shape = (T, N, F, dtype)
        self.A = np.empty((T, N, G * H), dtype)  # pre-activations, then the gates
        self.h = np.empty((T + 1, N, H), dtype)  # h_0 .. h_T (h_0: the initial state)
        self.dA = np.empty((T, N, G * H), dtype)  # dL/da_t
        self.dH = np.empty((T, N, H), dtype)  # dL/dh_t, t = 1..T
        self.gate_tmp = np.empty((N, G * H), dtype)
        self.unit_tmp = np.empty((N, H), dtype)
        for name, shape in extra.items():
            setattr(self, name, np.empty(shape, dtype))


class Recurrent(Layer):
    """Base of the recurrent layers (see module docstring); cells implement `_steps` and `_back_steps`."""

    kind = "recurrent"
    gates = 1
    unit_axis = -1  # the hidden units: last axis of (N, H) and of (N, T, H)
    time_axis = None  # set per layer: 1 when it returns sequences
    input_ndim = 2  # (T, F) per sample
    weights = ("W", "U")
    # what |a| the cell's squashing function reads: "tanh" or "relu" for rnn, None for gated cells
    output_activation: str | None = None

    def __init__(self, name: str, W: np.ndarray, U: np.ndarray, b: np.ndarray, *, return_sequences: bool = False,
                 input_grad: bool = True) -> None:
        super().__init__(name)
        self.units = U.shape[0]
        self.params = {"W": W, "U": U, "b": b}
        self.grads = {key: np.zeros_like(value) for key, value in self.params.items()}
        self.return_sequences = bool(return_sequences)
        self.time_axis = 1 if self.return_sequences else None
        self.input_grad = input_grad
        self.bptt_steps = 0  # 0: the whole sequence; k: the recurrent path is cut every k steps (set by the trainer)
        self.initial_state: tuple[np.ndarray, ...] | None = None  # (h_0[, c_0]) per sample; None: zeros
        self._buffers: _Buffers | None = None
        self._xt: np.ndarray | None = None
        self._T = 0
        self._grads_through_time = False

    # -- building ----------------------------------------------------------------------------
    @classmethod
    def from_config(cls, name, config, input_shape, ctx):
        if len(input_shape) != 2:
            article = "an" if cls.type_name in ("rnn", "lstm") else "a"  # as spoken: an R-N-N, an L-S-T-M, a G-R-U
            first = ctx.where == "model.layers[0]"
            fix = (f"use sequence data (data.source = {SEQUENCE_SOURCES})" if first else
                   "set return_sequences = true on the recurrent layer before it (a layer between them must "
                   f"keep the steps), or use sequence data (data.source = {SEQUENCE_SOURCES})")
            raise ctx.fail(f"{article} {cls.type_name} layer reads sequences (steps x features) but gets "
                           f"{shape_text(input_shape)}", fix)
        steps, features = (int(s) for s in input_shape)
        H, G = config["units"], cls.gates
        W = ctx.weight(config, (features, G * H))
        ctx.reserve(H * G * H)
        U = init_recurrent(config["recurrent_init"], H, G, ctx.rng, config["recurrent_scale"], ctx.dtype,
                           config["spectral_radius"])
        b = ctx.zeros(G * H)
        layer = cls._build(name, W, U, b, config, ctx)
        layer.item = {k: v for k, v in config.items() if k != "type"}
        return layer, ((steps, H) if config["return_sequences"] else (H,))

    @classmethod
    def _build(cls, name, W, U, b, config, ctx) -> "Recurrent":
        return cls(name, W, U, b, return_sequences=config["return_sequences"])

    def describe(self) -> str:
        return f"{self.type_name} {self.units}" + (" seq" if self.return_sequences else "")

    # -- buffers --------------------------------------------------------------------------------
    def _extra_buffers(self, T: int, N: int) -> dict[str, tuple]:
        """Cell-specific work arrays: name -> shape."""
        return {}

    def _work(self, T: int, N: int, F: int) -> _Buffers:
        dtype = self.params["U"].dtype
        bufs = self._buffers
        if bufs is None or bufs.shape != (T, N, F, dtype):
            bufs = self._buffers = _Buffers(T, N, F, self.units, self.gates, dtype, self._extra_buffers(T, N))
        return bufs

    # -- forward ---------------------------------------------------------------------------------
    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        N, T, F = x.shape
        bufs = self._work(T, N, F)
        xt = x.transpose(1, 0, 2)  # (T, N, F): each step's batch contiguous
        if not xt.flags.c_contiguous:
            xt = np.ascontiguousarray(xt)
        self._xt, self._T = xt, T
        self._grads_through_time = False  # dH holds this pass's dL/dh_t only once backward has run
        W, b = self._input_projection()
        np.matmul(xt.reshape(T * N, F), W, out=bufs.A.reshape(T * N, -1))  # the input projection, hoisted
        bufs.A += b
        # every step's states go on: a fresh array each call (the next layer and `predict` keep it)
        h = np.empty_like(bufs.h) if self.return_sequences else bufs.h
        bufs.h = h
        self._initial(bufs)
        self._steps(bufs, T)
        if self.return_sequences:
            return h[1:].transpose(1, 0, 2)
        return h[T].copy()

    def _input_projection(self) -> tuple[np.ndarray, np.ndarray]:
        """(W, b) of the hoisted x W + b (a cell may fold constants into copies of them)."""
        return self.params["W"], self.params["b"]

    def _initial(self, bufs: _Buffers) -> None:
        state = self.initial_state
        if state is None:
            bufs.h[0] = 0.0
        else:
            bufs.h[0] = state[0]

    def _steps(self, bufs: _Buffers, T: int) -> None:
        raise NotImplementedError

    # -- backward ----------------------------------------------------------------------------------
    def cut(self, t: int, T: int) -> bool:
        """True when truncated BPTT stops the recurrent path from step t (0-based) into step t-1."""
        k = self.bptt_steps
        return k > 0 and (T - t) % k == 0

    def backward(self, grad_out: np.ndarray) -> np.ndarray | None:
        bufs, T, xt = self._buffers, self._T, self._xt
        _, N, F = xt.shape
        dH = bufs.dH
        if self.return_sequences:
            dH[...] = grad_out.transpose(1, 0, 2)
        else:
            dH[:-1] = 0.0
            dH[-1] = grad_out
        self._back_steps(bufs, T)
        self._grads_through_time = True
        dx = self._parameter_grads(bufs, xt.reshape(T * N, F), T, N)
        return None if dx is None else dx.reshape(T, N, F).transpose(1, 0, 2)

    def _parameter_grads(self, bufs: _Buffers, X: np.ndarray, T: int, N: int) -> np.ndarray | None:
        """dW, dU, db as one GEMM (or sum) over all steps each; returns dx (T*N, F), or None when not needed."""
        dA = bufs.dA.reshape(T * N, -1)
        np.matmul(X.T, dA, out=self.grads["W"])
        np.matmul(bufs.h[:T].reshape(T * N, self.units).T, dA, out=self.grads["U"])
        np.sum(dA, axis=0, out=self.grads["b"])
        return dA @ self.params["W"].T if self.input_grad else None

    def _back_steps(self, bufs: _Buffers, T: int) -> None:
        raise NotImplementedError

    # -- what the monitor reads ----------------------------------------------------------------------
    def time_grad_norms(self) -> np.ndarray | None:
        """||dL/dh_t|| over the batch for t = 1..T of the last forward pass, once its backward pass has run
        (float64); None otherwise (before any, or after a forward pass without backward, as in evaluation)."""
        bufs = self._buffers
        if bufs is None or not self._grads_through_time:
            return None
        dot = np.dot  # one BLAS dot per step: faster than an einsum over all of them, float32 sums are accurate here
        rows = bufs.dH.reshape(self._T, -1)
        squares = np.array([dot(row, row) for row in rows], dtype=np.float64)
        for t in np.flatnonzero(~np.isfinite(squares)):  # a float32 sum that overflowed: again in float64
            squares[t] = np.dot(rows[t].astype(np.float64), rows[t].astype(np.float64))
        return np.sqrt(squares)

    def gate_saturation(self, threshold: float, steps: int) -> float:
        """Fraction of the sigmoid gate values of the last forward pass outside [1 - threshold, threshold],
        at up to `steps` evenly spaced time steps (NaN for a cell without gates)."""
        return float("nan")

    def _sampled_steps(self, steps: int) -> slice:
        """Up to `steps` evenly spaced time steps, as a slice (a view of the buffers, no copy)."""
        stride = max(1, -(-self._T // max(1, steps)))
        return slice(self._T - 1 - stride * ((self._T - 1) // stride), self._T, stride)  # ends at the last step

    @property
    def recurrent_matrix(self) -> np.ndarray:
        """The matrix that carries h_{t-1} into the state (rnn: U; gated cells: the block writing new content)."""
        return self.params["U"]
