"""Many weight vectors of one model, and their losses on a batch by forward passes only.

Gradient-free training (`workbench.training.evolution`) keeps a population of P weight
vectors as the rows of one (P, n) matrix, laid out as the model's parameters in
`model.parameters()` order (`dense1.W`, `dense1.b`, ...). `PopulationForward.losses`
returns the training loss of every row on a batch:

- vectorized across the population for models made only of dense layers, element-wise
  activations and dropout (the MLP shorthand): the first layer is one GEMM,
  X (B, d) @ [W_1 ... W_P] (d, P h), the others batched matrix products
  (P, B, h) @ (P, h, h'); members are taken in chunks so that the activations of a chunk
  stay under `CHUNK_BYTES`;
- a loop over the members for every other layer type (convolutions, pooling, batch and
  layer norm, residual blocks, recurrent layers): each row is copied into the model's own
  arrays and the model runs its forward pass, so any layer the registry knows works.

Both run in training mode, as a backward pass would see the loss (dropout on, batch norm on
batch statistics); the non-trainable state a forward pass moves (batch-norm running
statistics) is put back afterwards, so evaluating a population leaves the model as it was.

Per-member losses are vectorized for cross-entropy and MSE and fall back to the loss
object itself (one call per member) for the others; both give the loss `Loss.__call__` does.
"""

from __future__ import annotations

import numpy as np

from workbench.nn.dense import Dense
from workbench.nn.dropout import Dropout
from workbench.nn.losses import CrossEntropy, Loss, MeanSquaredError

CHUNK_BYTES = 64 << 20  # activations of one chunk of members (float32: 16M values)


class PopulationForward:
    """The flat layout of a model's parameters and the forward passes of many weight vectors."""

    def __init__(self, model) -> None:
        self.model = model
        self.params = model.parameters()  # the live arrays
        self.keys = list(self.params)
        self.shapes = [self.params[k].shape for k in self.keys]
        sizes = [int(self.params[k].size) for k in self.keys]
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
        self.size = int(self.offsets[-1])
        self.dtype = model.dtype
        self.plan = _dense_plan(model, self)

    @property
    def vectorized(self) -> bool:
        """True when the population's forward passes run as batched matrix products."""
        return self.plan is not None

    # -- layout ----------------------------------------------------------------------------
    def flatten(self, params: dict[str, np.ndarray] | None = None, out: np.ndarray | None = None) -> np.ndarray:
        """The parameters (default: the model's) as one flat vector."""
        params = self.params if params is None else params
        out = np.empty(self.size, self.dtype) if out is None else out
        for key, a, b in zip(self.keys, self.offsets[:-1], self.offsets[1:]):
            out[a:b] = params[key].reshape(-1)
        return out

    def load(self, vector: np.ndarray, params: dict[str, np.ndarray] | None = None) -> None:
        """Copy a flat vector into the parameters (default: the model's live arrays), in place."""
        params = self.params if params is None else params
        for key, shape, a, b in zip(self.keys, self.shapes, self.offsets[:-1], self.offsets[1:]):
            params[key][...] = vector[a:b].reshape(shape)

    def views(self, members: np.ndarray, key: str) -> np.ndarray:
        """(P, *shape) views of one parameter in every row of `members`."""
        i = self.keys.index(key)
        a, b = self.offsets[i], self.offsets[i + 1]
        return members[:, a:b].reshape(len(members), *self.shapes[i])

    # -- forward passes ---------------------------------------------------------------------
    def losses(self, members: np.ndarray, loss: Loss, xb: np.ndarray, yb: np.ndarray) -> np.ndarray:
        """The training loss of each row of `members` on (xb, yb), float64 (P,); the model is left as it was."""
        states = _layer_states(self.model)
        saved = self.flatten() if self.plan is None else None
        try:
            if self.plan is not None:
                return self._vectorized(members, loss, xb, yb)
            out = np.empty(len(members))
            for p, row in enumerate(members):
                self.load(row)
                out[p] = loss(self.model.forward(xb, training=True), yb)[0]
            return out
        finally:
            if saved is not None:
                self.load(saved)
            _restore_states(self.model, states)

    def _vectorized(self, members: np.ndarray, loss: Loss, xb: np.ndarray, yb: np.ndarray) -> np.ndarray:
        P = len(members)
        widest = max([xb.shape[-1]] + [self.shapes[self.keys.index(step[1])][1] for step in self.plan
                                       if step[0] == "dense"])
        chunk = max(1, min(P, CHUNK_BYTES // max(1, len(xb) * widest * members.itemsize)))
        out = np.empty(P)
        for start in range(0, P, chunk):
            part = members[start : start + chunk]
            out[start : start + len(part)] = population_losses(loss, self._outputs(part, xb), yb)
        return out

    def _outputs(self, members: np.ndarray, xb: np.ndarray) -> np.ndarray:
        """(P, B, outputs) of the dense-only model for each row of `members`."""
        P = len(members)
        h = None  # (P, B, width) once past the first dense layer
        for step in self.plan:
            if step[0] == "dense":
                W, b = self.views(members, step[1]), self.views(members, step[2])
                if h is None:  # one GEMM for the whole population: (B, d) @ (d, P * h)
                    d, width = W.shape[1], W.shape[2]
                    flat = xb @ np.ascontiguousarray(W.transpose(1, 0, 2)).reshape(d, P * width)
                    h = flat.reshape(len(xb), P, width).transpose(1, 0, 2)
                else:
                    h = np.matmul(h, W)
                h = h + b[:, None, :]
            else:  # element-wise: activations and dropout take any shape
                layer = step[1]
                h = layer.forward(np.broadcast_to(xb, (P, *xb.shape)) if h is None else h, True)
        return h


def _dense_plan(model, forward: PopulationForward) -> list[tuple] | None:
    """("dense", W key, b key) and ("elementwise", layer) steps, or None when a layer needs the loop."""
    plan = []
    for layer in model.layers:
        if isinstance(layer, Dense) and not layer.children():
            plan.append(("dense", f"{layer.name}.W", f"{layer.name}.b"))
        elif (layer.activation is not None or isinstance(layer, Dropout)) and not layer.params \
                and not layer.children():
            plan.append(("elementwise", layer))
        else:
            return None
    return plan if any(step[0] == "dense" for step in plan) else None


def population_losses(loss: Loss, outputs: np.ndarray, yb: np.ndarray) -> np.ndarray:
    """Per-member losses of outputs (P, B, K), as `loss(outputs[p], yb)[0]` gives them (float64)."""
    if type(loss) is CrossEntropy and outputs.ndim == 3:
        z = outputs.astype(np.float64)
        z -= z.max(axis=2, keepdims=True)
        lse = np.log(np.exp(z).sum(axis=2))
        picked = np.take_along_axis(z, np.broadcast_to(yb[None, :, None], (len(z), len(yb), 1)), axis=2)[..., 0]
        return (lse - picked).mean(axis=1)
    if type(loss) is MeanSquaredError:
        diff = outputs.astype(np.float64) - yb
        return (diff * diff).reshape(len(outputs), -1).mean(axis=1)
    return np.array([loss(output, yb)[0] for output in outputs], dtype=np.float64)


def _layer_states(model) -> list[tuple]:
    """Copies of the non-trainable state of every layer that has some (batch-norm running statistics)."""
    return [(layer, {k: v.copy() for k, v in layer.state().items()}) for layer, _ in model.walk() if layer.state()]


def _restore_states(model, states: list[tuple]) -> None:
    for layer, state in states:
        layer.load_state(state)
