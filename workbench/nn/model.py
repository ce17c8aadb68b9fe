"""A model is a list of layers: built from spec items, walked by name, saved as JSON + npz.

Every layer has a stable dotted name (`conv1`, `res1.dense1`, `dense3`; the MLP
shorthand gives `dense1`, `bn1`, `act1`, `drop1`, ... as it always did) and the
output layer is the last dense layer of the list. Parameters and gradients are
flat dicts keyed `dense1.W`, `res1.dense1.b`, `bn1.gamma`, ...; their values are
the live arrays, so optimizers and clipping update them in place.

During forward the model keeps a reference (no copy) to each layer's output in
`outputs`, and during backward the gradient arriving at each layer's output in
`grad_outputs`, nested layers included (containers share their root's dicts):
monitoring reads both at no cost.

`columns()` is the walk the tools read: one `Column` per layer with weights, in
forward order, with its path, depth, whether it is the output layer, and the
activation and normalization layers of its block (what follows it in its
container before the next layer with weights), all found from the layers' own
declarations (`workbench.nn.layer`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from workbench.errors import UserError
from workbench.nn.build import BuildContext, build_layers
from workbench.nn.layer import Layer

FORMAT = "workbench.model/2"


@dataclass(frozen=True)
class Architecture:
    """The MLP shorthand: everything needed to rebuild an MLP's structure (weights come separately)."""

    n_inputs: int
    n_outputs: int
    hidden: tuple[int, ...] = (128, 64)
    activation: str = "relu"
    batch_norm: bool = False
    dropout: float = 0.0
    dtype: str = "float32"
    meta: dict = field(default_factory=dict, compare=False)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "Architecture":
        d = json.loads(text)
        d["hidden"] = tuple(d["hidden"])
        return cls(**d)

    def items(self) -> list[dict]:
        """The hidden layers as a layer list (the output layer is appended when building)."""
        return mlp_items(self.hidden, self.activation, self.batch_norm, self.dropout)


def mlp_items(hidden, activation: str, batch_norm: bool, dropout: float) -> list[dict]:
    """[dense -> (batch norm) -> activation -> (dropout)] per hidden width, as layer items."""
    items: list[dict] = []
    for units in hidden:
        items.append({"type": "dense", "units": int(units)})
        if batch_norm:
            items.append({"type": "batch_norm"})
        items.append({"type": activation})
        if dropout > 0.0:
            items.append({"type": "dropout", "rate": float(dropout)})
    return items


@dataclass
class Column:
    """One layer with weights, as the monitor, the record and the diagnosis see it."""

    layer: Layer
    depth: int  # 0 for layers of the top list, 1 inside a residual body, ...
    output: bool  # the model's output layer
    act: Layer | None  # the activation of its block (None: its own output is read)
    norm: Layer | None  # the normalization layer of its block
    container: str  # the type of the container it sits in ("model", "residual", ...)

    @property
    def name(self) -> str:
        return self.layer.name

    def info(self) -> dict:
        """What the statistics record stores about this column."""
        return {"name": self.name, "type": self.layer.type_name, "path": self.name.split("."), "depth": self.depth,
                "output": self.output, "container": self.container,
                "activation": self.act.activation if self.act is not None else None,
                "normalization": self.norm.type_name if self.norm is not None else None,
                "shape": [list(p.shape) for p in (self.layer.params[w] for w in self.layer.weights)]}


class Sequential(Layer):
    """Layers applied in order; forward and backward walk the list both ways. Also the root model."""

    type_name = "sequential"
    prefix = "seq"

    def __init__(self, layers: list[Layer], architecture: Architecture | None = None, name: str = "",
                 input_shape: tuple[int, ...] | None = None, meta: dict | None = None) -> None:
        super().__init__(name)
        self.layers = layers
        self.architecture = architecture
        self.input_shape = tuple(input_shape) if input_shape is not None else None
        self.meta = dict(meta or (architecture.meta if architecture is not None else {}))
        self.outputs: dict[str, np.ndarray] = {}
        self.grad_outputs: dict[str, np.ndarray] = {}
        self._by_name = {layer.name: layer for layer, _ in self.walk()}
        if len(self._by_name) != sum(1 for _ in self.walk()):
            raise ValueError("layer names must be unique")
        for layer, _ in self.walk():  # containers record their layers into the root's dicts
            if layer.children():
                layer.outputs, layer.grad_outputs = self.outputs, self.grad_outputs

    # -- computation -------------------------------------------------------
    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        outputs = self.outputs
        for layer in self.layers:
            x = layer.forward(x, training)
            outputs[layer.name] = x
        return x

    def backward(self, grad: np.ndarray) -> np.ndarray | None:
        grad_outputs = self.grad_outputs
        for layer in reversed(self.layers):
            grad_outputs[layer.name] = grad
            grad = layer.backward(grad)
            if grad is None:
                break
        return grad

    def predict(self, X: np.ndarray, batch_size: int = 4096) -> np.ndarray:
        """Raw outputs in evaluation mode, in batches to bound memory (flat rows of an image model are reshaped)."""
        shape = self.input_shape
        if shape and X.ndim == 2 and len(shape) > 1 and X.shape[1] == int(np.prod(shape)):
            X = X.reshape(len(X), *shape)
        parts = [self.forward(X[i : i + batch_size], training=False) for i in range(0, len(X), batch_size)]
        if not parts:
            return np.zeros((0, self.output_layer.params["W"].shape[1]), self.dtype)
        return np.concatenate(parts)

    # -- structure -----------------------------------------------------------
    def children(self) -> list[Layer]:
        return self.layers

    def walk(self, depth: int = 0) -> Iterator[tuple[Layer, int]]:
        """Every layer below this one with its depth, containers before their children, in forward order."""
        for layer in self.layers:
            yield layer, depth
            yield from _walk_children(layer, depth + 1)

    def computation_order(self) -> list[Layer]:
        """Every layer in the order its output is computed: a container after the layers inside it."""
        def visit(layer: Layer) -> Iterator[Layer]:
            for child in layer.children():
                yield from visit(child)
            yield layer

        return [layer for top in self.layers for layer in visit(top)]

    def layer(self, name: str) -> Layer:
        return self._by_name[name]

    @property
    def output_layer(self) -> Layer:
        return self.layers[-1]

    @property
    def dense_layers(self) -> list[Layer]:
        """The dense layers of the model, nested ones included (the MLP's columns)."""
        return [layer for layer, _ in self.walk() if layer.type_name == "dense"]

    @property
    def weighted_layers(self) -> list[Layer]:
        return [column.layer for column in self.columns()]

    @property
    def dtype(self) -> np.dtype:
        return next(iter(self.parameters().values())).dtype

    def parameters(self) -> dict[str, np.ndarray]:
        return {f"{layer.name}.{key}": value for layer, _ in self.walk() for key, value in layer.params.items()}

    def gradients(self) -> dict[str, np.ndarray]:
        return {f"{layer.name}.{key}": value for layer, _ in self.walk() for key, value in layer.grads.items()}

    def weight_names(self) -> set[str]:
        """Parameter keys that are weights (declared by their layers): monitored and weight-decayed."""
        return {f"{layer.name}.{key}" for layer, _ in self.walk() for key in layer.weights}

    def columns(self) -> list[Column]:
        """The layers with weights in forward order, each with its block (see module docstring)."""
        found: list[Column] = []
        self._collect_columns(self, 0, "model", found)
        if found and found[-1].layer is self.output_layer:
            found[-1].output = True
        return found

    def _collect_columns(self, container: Layer, depth: int, kind: str, found: list[Column]) -> None:
        siblings = container.children()
        for i, layer in enumerate(siblings):
            if layer.weights:
                act = norm = None
                for after in siblings[i + 1 :]:
                    if after.weights or after.children():
                        break
                    if act is None and after.activation is not None:
                        act = after
                    if norm is None and after.normalizes:
                        norm = after
                found.append(Column(layer, depth, False, act, norm, kind))
            if layer.children():
                self._collect_columns(layer, depth + 1, layer.type_name, found)

    def activation_after(self, name: str) -> Layer | None:
        """The activation layer of a weighted layer's block (None for the output layer)."""
        return next((c.act for c in self.columns() if c.name == name), None)

    def summary(self) -> str:
        arch = self.architecture
        n_params = sum(p.size for p in self.parameters().values())
        if arch is not None:
            sizes = "-".join(str(s) for s in (arch.n_inputs, *arch.hidden, arch.n_outputs))
            extras = [arch.activation] + (["batchnorm"] if arch.batch_norm else []) + (
                [f"dropout {arch.dropout:g}"] if arch.dropout else [])
            return f"MLP {sizes} ({', '.join(extras)}; {n_params} parameters)"
        shape = "x".join(map(str, self.input_shape)) if self.input_shape else "?"
        return f"{shape} -> " + " -> ".join(layer.describe() for layer in self.layers) + f" ({n_params} parameters)"

    def config(self) -> dict:
        """The layer list that rebuilds this model (output layer included)."""
        return {"type": self.type_name, "layers": [layer.config() for layer in self.layers]}

    # -- persistence -----------------------------------------------------------
    def state_dict(self) -> dict[str, np.ndarray]:
        """Parameters plus non-trainable state (batch-norm running statistics)."""
        state = {name: value.copy() for name, value in self.parameters().items()}
        for layer, _ in self.walk():
            for key, value in layer.state().items():
                state[f"{layer.name}.{key}"] = value.copy()
        return state

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        for layer, _ in self.walk():
            for key, target in {**layer.params, **layer.state()}.items():
                full = f"{layer.name}.{key}"
                if full not in state:
                    raise UserError(f"weights file has no array '{full}': it was saved from a different architecture")
                value = np.asarray(state[full])
                if value.shape != target.shape:
                    raise UserError(f"weights '{full}' have shape {value.shape}, the model expects {target.shape}")
                target[...] = value

    def description(self) -> dict:
        """Everything that rebuilds the structure, as JSON-able data (saved beside the weights)."""
        return {"format": FORMAT, "input_shape": list(self.input_shape or ()), "dtype": str(self.dtype),
                "layers": [layer.config() for layer in self.layers], "meta": self.meta,
                "architecture": json.loads(self.architecture.to_json()) if self.architecture is not None else None}

    def save(self, path: str | Path) -> None:
        """Weights and layer list in one npz (no pickle: the layer list is a JSON string array)."""
        arrays = self.state_dict()
        arrays["__layers__"] = np.array(json.dumps(self.description()))
        if self.architecture is not None:
            arrays["__architecture__"] = np.array(self.architecture.to_json())
        with open(path, "wb") as f:
            np.savez(f, **arrays)

    @classmethod
    def load(cls, path: str | Path) -> "Sequential":
        path = Path(path)
        if not path.is_file():
            raise UserError(f"model file {path} does not exist: give the path of a weights .npz saved by workbench")
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
        if "__layers__" in arrays:
            model = model_from_description(json.loads(str(arrays.pop("__layers__"))))
            arrays.pop("__architecture__", None)
        elif "__architecture__" in arrays:  # saved before layer lists
            arch = Architecture.from_json(str(arrays.pop("__architecture__")))
            model = build_model(arch, init="zeros", rng=np.random.default_rng(0))
        else:
            raise UserError(f"{path} has no architecture record: it was not saved by Sequential.save")
        model.load_state_dict(arrays)
        return model


def _walk_children(layer: Layer, depth: int) -> Iterator[tuple[Layer, int]]:
    for child in layer.children():
        yield child, depth
        yield from _walk_children(child, depth + 1)


def model_from_description(description: dict) -> Sequential:
    """Rebuild a saved model's structure (zero weights, to be loaded)."""
    arch = description.get("architecture")
    architecture = None
    if arch is not None:
        arch = dict(arch)
        arch["hidden"] = tuple(arch["hidden"])
        architecture = Architecture(**arch)
    return build_network(
        description["layers"], tuple(description["input_shape"]), None, init="zeros",
        dtype=description.get("dtype", "float32"), rng=np.random.default_rng(0), dropout_rng=np.random.default_rng(1),
        architecture=architecture, meta=description.get("meta"),
    )


def build_network(
    items: list[dict],
    input_shape: tuple[int, ...],
    n_outputs: int | None,
    *,
    init: str = "he_normal",
    init_scale: float = 1.0,
    dtype: str | np.dtype = "float32",
    rng: np.random.Generator | None = None,
    dropout_rng: np.random.Generator | None = None,
    architecture: Architecture | None = None,
    meta: dict | None = None,
    per_step: bool = False,
) -> Sequential:
    """Build checked layer items for `input_shape`, then a dense output of `n_outputs` (None: items end with it).

    `per_step`: the data has a target at every step of a sequence (copy), so the output layer applies
    at every step of the sequence the last recurrent layer returns (`return_sequences = true`).
    """
    from workbench.nn.registry import LAYERS, check_layers

    items = check_layers(list(items))
    if n_outputs is not None:
        output = {"type": "dense", "units": int(n_outputs), "init": None, "init_scale": None}
        if per_step:
            output["per_step"] = True
        items.append(output)
    ctx = BuildContext(
        dtype=np.dtype(dtype), rng=rng if rng is not None else np.random.default_rng(0),
        dropout_rng=dropout_rng if dropout_rng is not None else np.random.default_rng(1),
        registry=LAYERS, init=init, init_scale=init_scale,
    )
    try:
        layers, shape = build_layers(items, tuple(input_shape), ctx)
    except UserError:
        if n_outputs is not None and ctx.where == f"model.layers[{len(items) - 1}]":
            _explain_sequence_output(items, per_step)
        raise
    layers[0].input_grad = False  # nobody consumes dL/dx of the model's input: skip that GEMM (as PyTorch)
    if len(shape) != (2 if getattr(layers[-1], "per_step", False) else 1):
        raise UserError(f"model.layers ends with per-sample shape {'x'.join(map(str, shape))}, "
                        'but the output layer is dense: add {type = "flatten"} or {type = "global_avg_pool2d"} last')
    return Sequential(layers, architecture, input_shape=tuple(input_shape), meta=meta)


RECURRENT_TYPES = ("rnn", "lstm", "gru")


def _explain_sequence_output(items: list[dict], per_step: bool) -> None:
    """The output layer cannot take what the last layer gives: say which recurrent layer to change (one line)."""
    last = next((i for i in range(len(items) - 2, -1, -1) if items[i]["type"] in RECURRENT_TYPES), None)
    if last is None:
        return
    returns = items[last].get("return_sequences", False)
    where = f"model.layers[{last}]"
    if per_step and not returns:
        raise UserError(f"{where}.return_sequences = false, but the data has a target at every step: "
                        f"set return_sequences = true on {where} (the output layer then applies at every step)")
    if not per_step and returns:
        raise UserError(f"{where}.return_sequences = true, but the data has one target per sequence: "
                        f"set return_sequences = false on {where} (the output layer reads the last hidden state)")


def build_model(
    architecture: Architecture,
    init: str = "he_normal",
    init_scale: float = 1.0,
    rng: np.random.Generator | None = None,
    dropout_rng: np.random.Generator | None = None,
) -> Sequential:
    """Build the MLP shorthand: its layer list, then a dense output (bit-identical to the MLP builder of old)."""
    arch = architecture
    return build_network(
        arch.items(), (arch.n_inputs,), arch.n_outputs, init=init, init_scale=init_scale, dtype=arch.dtype,
        rng=rng, dropout_rng=dropout_rng, architecture=arch, meta=arch.meta,
    )
