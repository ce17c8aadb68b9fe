"""Per-layer training statistics, recorded every `every` steps into a `StatsRecord`.

Per layer with weights i (columns `model.columns()`: dense, convolutional, ...,
nested ones included, input to output), W its weight (the first it declares),
s_i its output (pre-activation), y_i the block's activation output (the layer's
own output when no activation follows it in its container, the logits s_L for
the output layer). Units are read on the axis the layer declares (`unit_axis`:
the features of a dense layer, the channels of a convolution):

    grad_norm       ||dL/dW_i||                     (before clipping; W only)
    weight_norm     ||W_i(t)||                      (the weights that produced this step's gradient)
    update_ratio    ||W_i(t+1) - W_i(t)|| / ||W_i(t)||  (the update actually applied, any optimizer:
                                                    W is copied before the update on recorded steps)
    backprop_norm   ||dL/ds_i||                     (the gradient flowing back into the layer,
                                                    Glorot & Bengio 2010; `record.backprop_gain()`
                                                    gives ||dL/ds_i|| / ||dL/ds_{i+1}||)
    act_mean        mean(y_i), act_std  std(y_i)    (over batch and units)
    dead_frac       relu: fraction of units whose output is 0 for every sample of the batch
                    (and every position, for channels; found from the sums over all other
                    axes, as relu outputs are >= 0); defined for relu only: 0 for the other
                    activations, NaN where no activation follows (the output layer)
    sat_frac        tanh: fraction of outputs with |y| > 0.97; sigmoid: outside [0.03, 0.97];
                    0 for the other activations; NaN where no activation follows
    bn_gamma_mean, bn_running_mean, bn_running_var
                    means over units of the block's normalization gamma and running statistics
                    (after this step's forward); NaN for blocks without them
    nonfinite       NaN/Inf elements in W, b, their gradients, dL/ds_i and y_i (counted only when
                    a norm or sum comes out non-finite: a norm is finite iff all elements are)

Recurrent layers (rnn, lstm, gru; columns present only in models that have one, NaN for the
other layers), on the recorded steps, with dh_t = dL/dh_t the gradient reaching the hidden
state at step t over the batch (the loss at t when every step's state goes on, plus what
flows back from t+1) and T the last step:

    time_grad_norm  ||dL/dh_t|| for t = 1..T: a time series (`record.time`), binned beyond
                    record.MAX_TIME_BINS steps; the heat map of the diagnosis figure
    time_grad_ratio ||dL/dh_first|| / ||dL/dh_T||, first = 1, or T - k + 1 under truncated BPTT
                    (bptt_steps = k), the earliest step the recurrent path reaches
    time_horizon    how many steps back from T the gradient keeps at least HORIZON_FRACTION of
                    ||dL/dh_T|| at every step (Pascanu, Mikolov & Bengio 2013's "steps in the past"
                    it can still carry information from); T - first when it never falls below
    recurrent_grad_norm  ||dL/dU|| (grad_norm, weight_norm and update_ratio read W, the input weights)
    recurrent_sv    the largest singular value of the recurrent matrix (rnn: U; lstm: its g block,
                    gru: its n block, the blocks that write new content into the state): for an rnn,
                    below 1/gamma (gamma = max |phi'|: 1 for tanh and relu, 1/4 for sigmoid) the gradient
                    must vanish through time, and above it is necessary for it to explode (Pascanu et
                    al. 2013, sec. 2.1). Warm-started power iteration (POWER_ITERATIONS products per
                    record), exact (SVD) at the first record and every SVD_EVERY records
    gate_sat_frac   lstm (i, f, o) and gru (r, z): fraction of sigmoid gate values outside
                    [0.03, 0.97] over the batch at up to GATE_STEPS evenly spaced steps
The rnn's own output is its activation, so dead_frac (relu) and sat_frac (tanh) read it.

Global: `loss` (batch loss), `lr` (the optimizer's `lr()` at this step, NaN
without one), `grad_norm_global` (all parameters, before clipping),
`grad_norm_clipped` (after clipping), `clipped` (1 when clipping fired, else 0).
All columns are float32; `record.steps` and `record.epochs` index the rows.

Cost per recorded step and layer: about ten numpy calls and no array-sized
temporaries (tanh and sigmoid add two comparisons): `np.dot(v, v)` on raveled
views for squared norms, one gemv for the column sums of y; W is copied into a
snapshot while its norm is taken, and the update norm is taken from W and the
snapshot, both block by block (`norms.CHUNK`) so each block is read from memory
once. The values of a row reach the record in two slice assignments. Off-cadence
steps cost a modulo. The variance comes from sum and dot (E[y^2] - E[y]^2) and
is recomputed with `np.var` in float64 when that difference cancels.
When the optimizer declares `leaves_step_in_grads` (workbench's own do: after
`step()` the gradient buffer of W holds exactly p_before - p_after), the update
norm is read from that buffer and no snapshot is taken: one pass over W and one
over its step. Any other optimizer gets the snapshot, exact for any update rule
but two extra passes over W per recorded step (the largest cost on wide layers).
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np

from workbench.monitor.norms import CHUNK, copy_squared_norm, gradient_norms, squared_distance, squared_norm
from workbench.monitor.record import StatsRecord
from workbench.nn.init import fans
from workbench.nn.recurrent import Recurrent
from workbench.training.hooks import Hook, hook_priority

LAYER_STATS = (
    "grad_norm", "weight_norm", "update_ratio", "backprop_norm", "act_mean", "act_std", "dead_frac", "sat_frac",
    "bn_gamma_mean", "bn_running_mean", "bn_running_var", "nonfinite",
)
GLOBAL_STATS = ("loss", "lr", "grad_norm_global", "grad_norm_clipped", "clipped")
RECURRENT_STATS = ("time_grad_ratio", "time_horizon", "recurrent_grad_norm", "recurrent_sv", "gate_sat_frac")
TIME_STATS = ("time_grad_norm",)
SATURATION = 0.97  # |tanh| beyond it (sigmoid beyond 0.03 and 0.97): f' below 6% of its maximum
HORIZON_FRACTION = 0.1  # the horizon counts the steps back where ||dL/dh_t|| >= this x ||dL/dh_T||
POWER_ITERATIONS = 2  # products M^T M v per record for the largest singular value (warm-started)
SVD_EVERY = 50  # records between exact SVDs (which also reset the power iteration)
GATE_STEPS = 8  # time steps read for the gate saturation
_NAN = math.nan


class SpectralNorm:
    """The largest singular value of a matrix that changes slowly, by warm-started power iteration.

    sigma = ||M v|| for the unit vector v of the last call after POWER_ITERATIONS products with
    M^T M: a lower bound that is exact at the first call and every SVD_EVERY calls (an SVD),
    and between them tracks sigma within the gap to the second singular value.
    """

    def __init__(self) -> None:
        self.v: np.ndarray | None = None
        self.calls = 0

    def __call__(self, matrix: np.ndarray) -> float:
        M = np.asarray(matrix, dtype=np.float64)
        if self.v is None or self.calls % SVD_EVERY == 0 or not np.isfinite(self.v).all():
            self.calls += 1
            if not np.isfinite(M).all():
                return _NAN
            _, singular, vt = np.linalg.svd(M)
            self.v = vt[0]
            return float(singular[0])
        self.calls += 1
        v = self.v
        for _ in range(POWER_ITERATIONS):
            v = M.T @ (M @ v)
            norm = float(np.sqrt(np.dot(v, v)))
            if not norm > 0.0 or not math.isfinite(norm):
                self.v = None
                return 0.0 if norm == 0.0 else _NAN
            v = v / norm
        self.v = v
        return float(np.linalg.norm(M @ v))


def horizon(norms: np.ndarray, first: int) -> tuple[float, float]:
    """(ratio ||dL/dh_first|| / ||dL/dh_T||, steps back from T keeping HORIZON_FRACTION of it); 0-based `first`."""
    last = float(norms[-1])
    if not (last > 0.0 and math.isfinite(last)):
        return _NAN, _NAN
    window = norms[first:]
    below = np.flatnonzero(window[::-1] < HORIZON_FRACTION * last)
    return float(window[0]) / last, float(below[0] - 1 if len(below) else len(window) - 1)


class _RecurrentBlock:
    """What the monitor reads for one recurrent layer."""

    def __init__(self, j: int, layer: Recurrent, norms) -> None:
        self.j, self.layer, self.name = j, layer, layer.name
        self.iU = norms.index[f"{layer.name}.U"]
        self.spectral = SpectralNorm()


def _fans(layer) -> list[int]:
    """[fan_in, fan_out] of a layer's first weight (dense (in, out); kernel (out, in, *k))."""
    return list(fans(layer.params[layer.weights[0]].shape))


def _count_nonfinite(array: np.ndarray) -> int:
    return int(array.size - np.count_nonzero(np.isfinite(array)))


class _Block:
    """What the monitor reads for one layer with weights, looked up once per run."""

    def __init__(self, column, norms, max_batch: int) -> None:
        layer = column.layer
        self.name = layer.name
        weight = layer.weights[0]
        self.W, self.b = layer.params[weight], layer.params.get("b")
        self.w = self.W.reshape(-1)
        self.step_taken = layer.grads[weight].reshape(-1)  # holds p_before - p_after once the optimizer stepped
        self.snap = np.empty(self.W.size, self.W.dtype)  # W before the update (optimizers without the contract)
        self.scratch = np.empty(min(self.W.size, CHUNK), self.W.dtype)
        self.iW = norms.index[f"{layer.name}.{weight}"]
        self.ib = norms.index.get(f"{layer.name}.b")
        act = column.act
        self.output = act.name if act is not None else layer.name  # y: activation output, or the layer's own
        self.kind = act.activation if act is not None else getattr(layer, "output_activation", None)
        self.unit_axis = layer.unit_axis
        self.ones_batch = np.ones(max_batch, self.W.dtype)  # column sums of 2-d outputs by gemv: ones[:n] @ y
        self.units = 0
        self.ones_units = np.ones(0, self.W.dtype)
        self.bn = column.norm
        if self.bn is not None:
            self.bn_gamma = self.bn.params.get("gamma")
            self.bn_mean, self.bn_var = getattr(self.bn, "running_mean", None), getattr(self.bn, "running_var", None)
            self.bn_ones = np.ones(self.bn_gamma.size if self.bn_gamma is not None else 0, self.W.dtype)
        self.weight_norm = _NAN
        self.forward_nonfinite = 0

    def unit_sums(self, y: np.ndarray) -> np.ndarray:
        """Per-unit sums of the output over every other axis (a gemv for 2-d outputs)."""
        if y.ndim == 2:
            ones = self.ones_batch
            if len(y) != len(ones):
                ones = ones[: len(y)] if len(y) < len(ones) else np.ones(len(y), y.dtype)
            sums = np.dot(ones, y)
        else:
            axis = self.unit_axis % y.ndim
            sums = y.sum(axis=tuple(a for a in range(y.ndim) if a != axis))
        if len(sums) != self.units:
            self.units, self.ones_units = len(sums), np.ones(len(sums), y.dtype)
        return sums


class StatisticsMonitor(Hook):
    """Fills `self.record` with the statistics above every `every` steps (see module docstring).

    A recorded step's built-in values collect in two Python lists through the three stages and
    reach the record in two slice assignments at `on_after_update` (or as soon as the step is
    cut short: NaN guard, stop, end of epoch), as numpy calls cost more than the arithmetic here.
    """

    priority = hook_priority("monitor")

    def __init__(self, every: int = 1, max_records: int = 100_000) -> None:
        if int(every) < 1:
            raise ValueError(f"every must be at least 1, got {every}")
        if int(max_records) < 2:
            raise ValueError(f"max_records must be at least 2, got {max_records}")
        self.every, self.max_records = int(every), int(max_records)
        self.record: StatsRecord | None = None
        self._groups_of: StatsRecord | None = None  # the record whose built-in column groups are laid out
        self._row = -1
        self._pending = False

    # -- setup -------------------------------------------------------------------------
    def on_train_begin(self, trainer) -> None:
        model = trainer.model
        columns = model.columns()
        names = [column.name for column in columns]
        kinds = [column.act.activation for column in columns if column.act is not None]
        activation = kinds[0] if kinds else "identity"
        record = self.record
        if record is None or record.layers != names:
            expected = trainer.epochs * trainer.steps_per_epoch // self.every + 2
            record = self.record = StatsRecord(
                names, max_records=self.max_records, every=self.every, activation=activation, capacity=expected
            )
        recurrent = [(j, column.layer) for j, column in enumerate(columns) if isinstance(column.layer, Recurrent)]
        if self._groups_of is not record:  # a new record: lay out the built-in columns
            self._layer_group = record.add_group("layer", LAYER_STATS)
            self._global_group = record.add_group("global", GLOBAL_STATS)
            self._recurrent_group = record.add_group("layer", RECURRENT_STATS) if recurrent else None
            self._groups_of = record
        arch = getattr(model, "architecture", None)
        record.meta.update(
            every=self.every,
            max_records=self.max_records,
            activation=activation,
            model=model.summary(),
            layer_sizes=[_fans(column.layer) for column in columns],
            batch_norm=any(layer.type_name == "batch_norm" for layer, _ in model.walk()),
            normalized=any(layer.normalizes for layer, _ in model.walk()),
            columns=[column.info() for column in columns],
            dtype=str(model.dtype),
            batch_size=int(trainer.batch_size),
            steps_per_epoch=int(trainer.steps_per_epoch),
        )
        if arch is not None:
            record.meta["architecture"] = arch.to_json()
        if recurrent:  # what the diagnosis through time needs to know of each recurrent layer
            record.meta["recurrent"] = {
                layer.name: {"type": layer.type_name, "activation": layer.output_activation, "units": layer.units,
                             "return_sequences": layer.return_sequences, "bptt_steps": layer.bptt_steps}
                for _, layer in recurrent}
        self.norms = gradient_norms(trainer)
        n = len(columns)
        self.blocks = [_Block(column, self.norms, trainer.batch_size) for column in columns]
        for j, block in enumerate(self.blocks):  # where the layer's statistics go in the row's values
            block.slots = SimpleNamespace(**{name: k * n + j for k, name in enumerate(LAYER_STATS)})
        self.recurrent = [_RecurrentBlock(j, layer, self.norms) for j, layer in recurrent]
        self._step_in_grads = bool(getattr(trainer.optimizer, "leaves_step_in_grads", False))
        lr = getattr(trainer.optimizer, "lr", None)
        self._lr = lr if callable(lr) else None
        self._layer_template = [_NAN] * (len(LAYER_STATS) * n)
        self._global_template = [_NAN] * len(GLOBAL_STATS)
        self._row = -1
        self._pending = False

    # -- the three stages of a recorded step -------------------------------------------
    def on_after_forward(self, trainer) -> None:
        if self._pending:
            self._flush()
        self._row = row = self.record.start_row(trainer.step, trainer.epoch)
        if row >= 0:
            self._forward(trainer)

    def on_after_backward(self, trainer) -> None:
        if self._row >= 0:
            self._backward(trainer)

    def on_after_update(self, trainer) -> None:
        if self._row < 0:
            return
        norms, sqrt = self.norms, math.sqrt
        values = self._layer_values
        self._global_values[3:5] = (norms.clipped_norm, 1.0 if norms.clipped else 0.0)
        for block in self.blocks:
            w = block.weight_norm
            if self._step_in_grads:
                update = sqrt(float(np.dot(block.step_taken, block.step_taken)))
            else:
                update = sqrt(squared_distance(block.w, block.snap, block.scratch))
            values[block.slots.update_ratio] = update / w if w > 0.0 else _NAN
        self._flush()

    def _flush(self) -> None:
        """Write the pending row's values into the record (two slice assignments)."""
        record, row = self.record, self._row
        record.buffer(self._layer_group)[row] = self._layer_values
        record.buffer(self._global_group)[row] = self._global_values
        self._pending = False

    def _forward(self, trainer) -> None:
        self._pending = True
        self._layer_values = values = self._layer_template[:]
        self._global_values = [trainer.batch_loss, _NAN, _NAN, _NAN, _NAN]
        outputs, dot, sqrt, isfinite, count = trainer.model.outputs, np.dot, math.sqrt, math.isfinite, np.count_nonzero
        for block in self.blocks:
            slots = block.slots
            y = outputs[block.output]
            v = y.ravel()
            column_sums = block.unit_sums(y)
            size = v.size
            mean = float(dot(column_sums, block.ones_units)) / size
            square = float(dot(v, v)) / size
            var = square - mean * mean
            if isfinite(var):
                bad = 0
                if var < 1e-3 * square:  # E[y^2] - E[y]^2 cancels: recompute in float64
                    var = float(np.var(y, dtype=np.float64))
                values[slots.act_std] = sqrt(var)
            else:
                bad = int(size - count(np.isfinite(v)))
                values[slots.act_std] = var
            block.forward_nonfinite = values[slots.nonfinite] = bad
            values[slots.act_mean] = mean
            kind = block.kind
            if kind == "relu":  # outputs >= 0: a unit is zero on the whole batch iff its column sum is 0
                values[slots.dead_frac] = 1.0 - count(column_sums) / block.units
                values[slots.sat_frac] = 0.0
            elif kind is not None:  # None: the output layer, where dead and saturated units do not apply
                values[slots.dead_frac] = 0.0
                if kind == "tanh":
                    values[slots.sat_frac] = (count(y > SATURATION) + count(y < -SATURATION)) / size
                elif kind == "sigmoid":
                    values[slots.sat_frac] = (count(y > SATURATION) + count(y < 1.0 - SATURATION)) / size
                else:
                    values[slots.sat_frac] = 0.0

    def _backward(self, trainer) -> None:
        norms = self.norms
        self._global_values[1:3] = (self._lr() if self._lr is not None else _NAN, norms.compute(trainer))
        grad_outputs, dot, sqrt, isfinite = trainer.model.grad_outputs, np.dot, math.sqrt, math.isfinite
        sq, norms_bad = norms.sq, norms.nonfinite
        values = self._layer_values
        for block in self.blocks:
            slots = block.slots
            bad = block.forward_nonfinite + norms_bad[block.iW] + (norms_bad[block.ib] if block.ib is not None else 0)
            values[slots.grad_norm] = sqrt(sq[block.iW])
            w = block.w
            w_sq = float(np.dot(w, w)) if self._step_in_grads else copy_squared_norm(block.snap, w)
            if not isfinite(w_sq):  # scan W, and b with it (b shares its gradient signal dL/ds with W)
                w_sq, count = squared_norm(block.w)
                bad += count + (_count_nonfinite(block.b) if block.b is not None else 0)
            block.weight_norm = values[slots.weight_norm] = sqrt(w_sq)
            g = grad_outputs[block.name].ravel()
            bp_sq = float(dot(g, g))
            if not isfinite(bp_sq):
                bp_sq, count = squared_norm(g)
                bad += count
            values[slots.backprop_norm] = sqrt(bp_sq)
            values[slots.nonfinite] = bad
            bn = block.bn
            if bn is not None:
                ones = block.bn_ones
                units = len(ones)
                if block.bn_gamma is not None:
                    values[slots.bn_gamma_mean] = float(dot(block.bn_gamma, ones)) / units
                if block.bn_mean is not None:
                    values[slots.bn_running_mean] = float(dot(block.bn_mean, ones)) / units
                    values[slots.bn_running_var] = float(dot(block.bn_var, ones)) / units
        if self.recurrent:
            self._through_time()

    def _through_time(self) -> None:
        """The recurrent statistics of this row, written straight into their group (see module docstring)."""
        record, row = self.record, self._row
        buffer, n, sq = record.buffer(self._recurrent_group), len(record.layers), self.norms.sq
        for block in self.recurrent:
            layer, j = block.layer, block.j
            buffer[row, 2 * n + j] = math.sqrt(sq[block.iU])
            buffer[row, 3 * n + j] = block.spectral(layer.recurrent_matrix)
            buffer[row, 4 * n + j] = layer.gate_saturation(SATURATION, GATE_STEPS)
            norms = layer.time_grad_norms()
            if norms is None:
                continue
            T, k = len(norms), layer.bptt_steps
            first = T - k if 0 < k < T else 0
            buffer[row, j], buffer[row, n + j] = horizon(norms, first)
            record.add_time_series("time_grad_norm", block.name, T)
            record.set_time_row("time_grad_norm", block.name, row, norms)

    # -- rows end with the batch ---------------------------------------------------------
    def _end_row(self) -> None:
        if self._pending:
            self._flush()
        if self.record is not None:
            self.record.stop_recording()

    def on_evaluate(self, trainer, split, metrics) -> None:
        self._end_row()

    def on_epoch_end(self, trainer, logs) -> None:
        self._end_row()

    def on_train_end(self, trainer) -> None:
        self._end_row()

    # -- the NaN guard keeps the failing step -------------------------------------------
    def capture(self, trainer, stage: str) -> None:
        """Record the current step whatever the cadence, up to `stage` ("forward" or "backward")."""
        if self.record is None:
            return
        if not (self._row >= 0 and self.record.last_step == trainer.step):
            self._row = self.record.start_row(trainer.step, trainer.epoch, force=True)
            self._forward(trainer)
            if stage == "backward":
                self._backward(trainer)
        if self._pending:
            self._flush()
