"""The statistics record: preallocated numpy columns, one row per monitored step.

A record holds, for the recorded steps (rows):

- `steps`, `epochs`: int64 index arrays (the optimizer step of the row, 0-based, and its epoch);
- global columns (`global_(name)`, 1D float32): one value per row (`loss`, `lr`, ...);
- layer columns (`layer(name)`, 2D float32, rows x layers): one value per row and dense layer,
  columns ordered as `layers` (input to output).

Unset cells are NaN, so a statistic that does not apply (batch norm on a block
without it) or a row cut short (a step stopped after its forward pass) reads NaN.

- time series (`time(name, layer)`, 2D float32, rows x bins): per row, one value per time step
  t = 1..T of a recurrent layer (the gradient through time, ||dL/dh_t||). A sequence longer than
  `MAX_TIME_BINS` steps is binned: bin k covers steps edges[k]+1 .. edges[k+1] (`time_edges`)
  and holds the root mean square of their values, so a row costs at most MAX_TIME_BINS floats.

Memory is bounded: at most `max_records` rows (time series included). Arrays start at the size a run
needs (or `max_records`) and double while they may; when a row arrives and the
record holds `max_records` rows, every other row is dropped (rows 0, 2, 4, ...
stay) and the cadence `every` doubles, so a run of any length keeps between
`max_records / 2` and `max_records` evenly spaced rows covering all of it.

Saved as one compressed npz (`save`), read back with `load_record` under
`allow_pickle=False`: names are numpy unicode arrays, `meta` a JSON string.
Readers return views of the live arrays: copy what you keep across new rows.
Incremental consumers (tracking) ask for the rows after the last step they
read, `rows_after(step)`, which stays right when the record compacts.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from workbench.errors import UserError

FORMAT = "workbench.stats/1"
STAT_DTYPE = np.float32
INDEX_DTYPE = np.int64
# Readable under these names through `global_` although they are index arrays, not columns.
INDEX_NAMES = ("step", "epoch")
MAX_TIME_BINS = 64  # values per row of a time series: longer sequences are binned


def time_bins(steps: int) -> np.ndarray:
    """Bin edges (0-based step boundaries, length bins + 1) for a series over `steps` time steps."""
    bins = min(int(steps), MAX_TIME_BINS)
    return np.round(np.linspace(0, int(steps), bins + 1)).astype(INDEX_DTYPE)


class StatsRecord:
    """Rows of per-step statistics: global columns (1D) and per-layer columns (rows x layers)."""

    def __init__(
        self,
        layers: list[str],
        *,
        max_records: int = 100_000,
        every: int = 1,
        activation: str = "",
        meta: dict | None = None,
        capacity: int | None = None,
    ) -> None:
        if int(max_records) < 2:
            raise ValueError(f"max_records must be at least 2, got {max_records}")
        if int(every) < 1:
            raise ValueError(f"every must be at least 1, got {every}")
        self.layers = [str(name) for name in layers]
        self.max_records = int(max_records)
        self.every = int(every)
        self.activation = str(activation)
        self.meta: dict = dict(meta or {})
        self.recording = False  # True while the current step's row accepts `log` / `log_layer`
        self._layer_index = {name: j for j, name in enumerate(self.layers)}
        self._capacity = max(1, min(self.max_records, int(capacity) if capacity else 1024))
        self._n = 0
        self._steps = np.zeros(self._capacity, INDEX_DTYPE)
        self._epochs = np.zeros(self._capacity, INDEX_DTYPE)
        # Storage: float32 buffers (capacity x width); a global column is one buffer column, a layer
        # column `len(layers)` adjacent ones. Columns of one group share a buffer, so a writer fills
        # several statistics of a row with one slice assignment.
        self._buffers: dict[int, np.ndarray] = {}  # group id -> buffer; ids are never reused
        self._next_group = 0
        self._global: dict[str, tuple[int, int]] = {}  # name -> (buffer, column)
        self._layer: dict[str, tuple[int, int]] = {}  # name -> (buffer, first column)
        self._time: dict[tuple[str, str], int] = {}  # (name, layer) -> buffer of rows x bins
        self._time_edges: dict[tuple[str, str], np.ndarray] = {}

    # -- columns -----------------------------------------------------------------------
    def add_group(self, kind: str, names: list[str] | tuple[str, ...]) -> int:
        """Put columns `names` ("global" or "layer") side by side in one buffer; returns its group id.

        Layer columns k occupy buffer columns k*L .. k*L+L-1 (L layers). Existing columns of
        these names move into the group with their values. For writers; `buffer(id)` gives the array.
        """
        if kind not in ("global", "layer"):
            raise ValueError(f"a column group is 'global' or 'layer', got {kind!r}")
        if not names or len(set(names)) != len(names):
            raise ValueError(f"a column group needs distinct names, got {names!r}")
        width = 1 if kind == "global" else len(self.layers)
        mine, other = (self._global, self._layer) if kind == "global" else (self._layer, self._global)
        for name in names:
            self._check_name(name, other)
        buffer = np.full((self._capacity, width * len(names)), np.nan, STAT_DTYPE)
        index = self._next_group
        self._next_group += 1
        for k, name in enumerate(names):
            if name in mine:
                old, column = mine[name]
                buffer[:, k * width : (k + 1) * width] = self._buffers[old][:, column : column + width]
            mine[name] = (index, k * width)
        self._buffers[index] = buffer
        used = {b for b, _ in self._global.values()} | {b for b, _ in self._layer.values()} | set(self._time.values())
        for unused in set(self._buffers) - used:  # buffers whose columns all moved here
            del self._buffers[unused]
        return index

    def add_time_series(self, name: str, layer: str, steps: int) -> int:
        """A time axis for statistic `name` of `layer` over `steps` time steps (binned beyond MAX_TIME_BINS);
        returns its group id (the existing one when it is there already, e.g. after a resume)."""
        key = (str(name), str(layer))
        if layer not in self._layer_index:
            raise KeyError(f"no layer {layer!r} in the record; layers: {', '.join(self.layers)}")
        if key in self._time:
            return self._time[key]
        edges = time_bins(steps)
        index = self._next_group
        self._next_group += 1
        self._buffers[index] = np.full((self._capacity, len(edges) - 1), np.nan, STAT_DTYPE)
        self._time[key], self._time_edges[key] = index, edges
        return index

    def set_time_row(self, name: str, layer: str, row: int, values: np.ndarray) -> None:
        """Store one row of a time series: `values` per time step (binned by root mean square as declared)."""
        key = (name, layer)
        edges = self._time_edges[key]
        if len(values) != edges[-1]:
            return  # a sequence of another length than the series was declared for: nothing to bin it into
        buffer = self._buffers[self._time[key]]
        if len(edges) - 1 == len(values):
            buffer[row] = values
            return
        squares = np.asarray(values, np.float64) ** 2
        buffer[row] = np.sqrt(np.add.reduceat(squares, edges[:-1]) / np.diff(edges))

    def buffer(self, group: int) -> np.ndarray:
        """The storage array of `group` (reallocated when the record grows: see `capacity`)."""
        return self._buffers[group]

    def _check_name(self, name: str, other: dict) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"statistic names are non-empty strings, got {name!r}")
        if name in other or name in INDEX_NAMES:
            raise ValueError(f"{name!r} is already a statistic of the other kind (global vs per layer) or an index")

    # -- writing -------------------------------------------------------------------
    def start_row(self, step: int, epoch: int, force: bool = False) -> int:
        """Open the row of `step`; returns its index, or -1 when the step is off the cadence.

        `force` records the step whatever the cadence (the NaN guard keeps the failing step).
        A full record compacts first (every other row, cadence doubled).
        """
        if not force and step % self.every:
            self.recording = False
            return -1
        if self._n and self._steps[self._n - 1] == step:  # already open (a forced row after a cadence row)
            self.recording = True
            return self._n - 1
        if self._n == self._capacity:
            if self._capacity < self.max_records:
                self._grow(min(self.max_records, 2 * self._capacity))
            else:
                self._compact()
                if not force and step % self.every:
                    self.recording = False
                    return -1
        row = self._n
        self._steps[row] = step
        self._epochs[row] = epoch
        self._n = row + 1
        self.recording = True
        return row

    def stop_recording(self) -> None:
        """Close the current row: `log` and `log_layer` are ignored until the next recorded step."""
        self.recording = False

    def log(self, name: str, value: float) -> bool:
        """Store a global scalar in the current step's row; False (nothing stored) off the cadence."""
        if not self.recording:
            return False
        if name not in self._global:
            self.add_group("global", [name])
        buffer, column = self._global[name]
        self._buffers[buffer][self._n - 1, column] = value
        return True

    def log_layer(self, name: str, layer: str, value: float) -> bool:
        """Store a per-layer scalar in the current step's row; False (nothing stored) off the cadence."""
        if not self.recording:
            return False
        if layer not in self._layer_index:
            raise KeyError(f"no layer {layer!r} in the record; layers: {', '.join(self.layers)}")
        if name not in self._layer:
            self.add_group("layer", [name])
        buffer, column = self._layer[name]
        self._buffers[buffer][self._n - 1, column + self._layer_index[layer]] = value
        return True

    def _grow(self, capacity: int) -> None:
        def grown(array: np.ndarray, fill) -> np.ndarray:
            out = np.full((capacity, *array.shape[1:]), fill, array.dtype)
            out[: self._n] = array[: self._n]
            return out

        self._steps, self._epochs = grown(self._steps, 0), grown(self._epochs, 0)
        self._buffers = {group: grown(buffer, np.nan) for group, buffer in self._buffers.items()}
        self._capacity = capacity

    def _compact(self) -> None:
        """Keep rows 0, 2, 4, ... and double the cadence (in place; the freed rows are reset)."""
        n, kept = self._n, (self._n + 1) // 2
        for array in (self._steps, self._epochs, *self._buffers.values()):
            array[:kept] = array[0:n:2]
            if array.dtype.kind == "f":
                array[kept:n] = np.nan
        self._n = kept
        self.every *= 2

    # -- reading -------------------------------------------------------------------
    def __len__(self) -> int:
        return self._n

    @property
    def capacity(self) -> int:
        """Rows allocated now (at most `max_records`); changes when the arrays are reallocated."""
        return self._capacity

    @property
    def steps(self) -> np.ndarray:
        return self._steps[: self._n]

    @property
    def epochs(self) -> np.ndarray:
        return self._epochs[: self._n]

    @property
    def last_step(self) -> int:
        """The step of the last row (-1 when empty)."""
        return int(self._steps[self._n - 1]) if self._n else -1

    def global_(self, name: str) -> np.ndarray:
        """1D values of global statistic `name` per row ("step" and "epoch" give the index arrays)."""
        if name == "step":
            return self.steps
        if name == "epoch":
            return self.epochs
        if name not in self._global:
            raise KeyError(f"no global statistic {name!r}; available: {', '.join(self.global_stats())}")
        buffer, column = self._global[name]
        return self._buffers[buffer][: self._n, column]

    def layer(self, name: str) -> np.ndarray:
        """2D values (rows x layers) of per-layer statistic `name`."""
        if name not in self._layer:
            raise KeyError(f"no per-layer statistic {name!r}; available: {', '.join(self.layer_stats())}")
        buffer, column = self._layer[name]
        return self._buffers[buffer][: self._n, column : column + len(self.layers)]

    def series(self, stat: str, layer: str | None = None) -> np.ndarray:
        """1D values of one statistic: a layer's column, or a global statistic when `layer` is None."""
        if layer is None:
            return self.global_(stat)
        if layer not in self._layer_index:
            raise KeyError(f"no layer {layer!r} in the record; layers: {', '.join(self.layers)}")
        return self.layer(stat)[:, self._layer_index[layer]]

    def names(self) -> list[str]:
        return self.global_stats() + self.layer_stats()

    def time(self, name: str, layer: str) -> np.ndarray:
        """2D values (rows x bins) of the time series `name` of `layer` (see `time_edges`)."""
        key = (name, layer)
        if key not in self._time:
            shown = ", ".join(f"{n}/{l}" for n, l in self._time) or "none"
            raise KeyError(f"no time series {name!r} for layer {layer!r}; available: {shown}")
        return self._buffers[self._time[key]][: self._n]

    def time_edges(self, name: str, layer: str) -> np.ndarray:
        """Bin edges of a time series: bin k covers time steps edges[k]+1 .. edges[k+1] (1-based)."""
        return self._time_edges[(name, layer)]

    def time_series(self) -> list[tuple[str, str]]:
        """The (statistic, layer) pairs that have a time axis."""
        return list(self._time)

    def global_stats(self) -> list[str]:
        return list(self._global)

    def layer_stats(self) -> list[str]:
        return list(self._layer)

    def rows_after(self, step: int) -> slice:
        """The rows recorded after optimizer step `step` (all rows for step=-1), as a slice."""
        start = int(np.searchsorted(self.steps, step, side="right"))
        return slice(start, self._n)

    def backprop_gain(self) -> np.ndarray:
        """rows x layers: ||dL/ds_i|| / ||dL/ds_{i+1}||, the factor by which the backpropagated
        gradient grows from layer i+1 back into layer i (Glorot & Bengio 2010); NaN for the output layer."""
        norm = self.layer("backprop_norm")
        gain = np.full_like(norm, np.nan)
        with np.errstate(divide="ignore", invalid="ignore"):
            np.divide(norm[:, :-1], norm[:, 1:], out=gain[:, :-1])
        return gain

    def clip_fraction(self) -> float:
        """Fraction of recorded steps where gradient clipping fired (NaN without rows)."""
        if "clipped" not in self._global:
            return float("nan")
        clipped = self.global_("clipped")
        clipped = clipped[np.isfinite(clipped)]
        return float(clipped.mean()) if clipped.size else float("nan")

    # -- persistence -------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        """One compressed npz: index arrays, names as unicode arrays, one array per column, meta as JSON."""
        n = self._n
        arrays = {
            "format": np.array(FORMAT),
            "layers": np.array(self.layers, dtype=str),
            "activation": np.array(self.activation),
            "meta": np.array(json.dumps(self.meta)),
            "every": np.array(self.every, INDEX_DTYPE),
            "max_records": np.array(self.max_records, INDEX_DTYPE),
            "steps": self._steps[:n],
            "epochs": self._epochs[:n],
        }
        arrays.update({f"global/{name}": np.ascontiguousarray(self.global_(name)) for name in self._global})
        arrays.update({f"layer/{name}": np.ascontiguousarray(self.layer(name)) for name in self._layer})
        for name, layer in self._time:
            arrays[f"time/{name}/{layer}"] = np.ascontiguousarray(self.time(name, layer))
            arrays[f"time_edges/{name}/{layer}"] = self._time_edges[(name, layer)]
        with open(path, "wb") as f:
            np.savez_compressed(f, **arrays)

    def __repr__(self) -> str:
        times = f", {len(self._time)} time series" if self._time else ""
        return (
            f"StatsRecord({self._n} rows, every {self.every}, layers {self.layers}, "
            f"{len(self._global)} global and {len(self._layer)} per-layer statistics{times})"
        )


def load_record(path: str | Path) -> StatsRecord:
    """A record saved by `StatsRecord.save` (read with allow_pickle=False); it can keep growing."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"statistics file {path} does not exist: give the path of a stats .npz saved by workbench")
    with np.load(path, allow_pickle=False) as data:
        arrays = {key: data[key] for key in data.files}
    if str(arrays.get("format", "")) != FORMAT:
        raise UserError(f"{path} is not a workbench statistics record (expected format {FORMAT})")
    n = len(arrays["steps"])
    record = StatsRecord(
        [str(name) for name in arrays["layers"]],
        max_records=int(arrays["max_records"]),
        every=int(arrays["every"]),
        activation=str(arrays["activation"]),
        meta=json.loads(str(arrays["meta"])),
        capacity=max(n, 1),
    )
    record._steps[:n] = arrays["steps"]
    record._epochs[:n] = arrays["epochs"]
    record._n = n
    for key, value in arrays.items():
        kind, _, name = key.partition("/")
        if kind in ("global", "layer"):
            group = record.add_group(kind, [name])
            record.buffer(group)[:n] = value.reshape(n, -1)
        elif kind == "time":  # time/<statistic>/<layer>, with its edges in time_edges/<statistic>/<layer>
            stat, _, layer = name.partition("/")
            edges = arrays[f"time_edges/{name}"]
            group = record.add_time_series(stat, layer, int(edges[-1]))
            record._time_edges[(stat, layer)] = np.asarray(edges, INDEX_DTYPE)
            record.buffer(group)[:n] = value.reshape(n, -1)
    return record
