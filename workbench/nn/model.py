"""A sequential model: named layers from input to output, parameters by stable names.

Layers are named by kind and block: `dense1`, `bn1`, `act1`, `drop1`, ...,
and the output layer is the last `denseN`. Parameters and gradients are flat
dicts keyed `dense1.W`, `dense1.b`, `bn1.gamma`, ...; their values are the live
arrays, so optimizers and clipping update them in place.

During forward the model keeps a reference (no copy) to each layer's output in
`outputs`, and during backward the gradient arriving at each layer's output in
`grad_outputs`: monitoring reads both at no cost.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from workbench.errors import UserError
from workbench.nn.activations import ACTIVATIONS, Activation
from workbench.nn.batchnorm import BatchNorm
from workbench.nn.dense import Dense
from workbench.nn.dropout import Dropout
from workbench.nn.init import INITIALIZERS
from workbench.nn.layer import Layer


@dataclass(frozen=True)
class Architecture:
    """Everything needed to rebuild a model's structure (weights come separately)."""

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


class Sequential:
    """Layers applied in order; forward and backward walk the list both ways."""

    def __init__(self, layers: list[Layer], architecture: Architecture | None = None) -> None:
        self.layers = layers
        self.architecture = architecture
        self.outputs: dict[str, np.ndarray] = {}
        self.grad_outputs: dict[str, np.ndarray] = {}
        self._by_name = {layer.name: layer for layer in layers}
        if len(self._by_name) != len(layers):
            raise ValueError("layer names must be unique")

    # -- computation -------------------------------------------------------
    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        outputs = self.outputs
        for layer in self.layers:
            x = layer.forward(x, training)
            outputs[layer.name] = x
        return x

    def backward(self, grad: np.ndarray) -> None:
        grad_outputs = self.grad_outputs
        for layer in reversed(self.layers):
            grad_outputs[layer.name] = grad
            grad = layer.backward(grad)
            if grad is None:
                break

    def predict(self, X: np.ndarray, batch_size: int = 4096) -> np.ndarray:
        """Raw outputs in evaluation mode, in batches to bound memory."""
        parts = [self.forward(X[i : i + batch_size], training=False) for i in range(0, len(X), batch_size)]
        if not parts:
            return np.zeros((0, self.layers[-1].params["W"].shape[1]), self.dtype)
        return np.concatenate(parts)

    # -- structure -----------------------------------------------------------
    def layer(self, name: str) -> Layer:
        return self._by_name[name]

    @property
    def dense_layers(self) -> list[Dense]:
        return [layer for layer in self.layers if isinstance(layer, Dense)]

    @property
    def dtype(self) -> np.dtype:
        return self.dense_layers[0].params["W"].dtype

    def parameters(self) -> dict[str, np.ndarray]:
        return {f"{layer.name}.{key}": value for layer in self.layers for key, value in layer.params.items()}

    def gradients(self) -> dict[str, np.ndarray]:
        return {f"{layer.name}.{key}": value for layer in self.layers for key, value in layer.grads.items()}

    def activation_after(self, dense_name: str) -> Activation | None:
        """The activation layer that follows a dense layer in its block (None for the output layer)."""
        index = self.layers.index(self._by_name[dense_name])
        for layer in self.layers[index + 1 :]:
            if isinstance(layer, Dense):
                return None
            if isinstance(layer, Activation):
                return layer
        return None

    def summary(self) -> str:
        arch = self.architecture
        if arch is None:
            return " -> ".join(layer.name for layer in self.layers)
        sizes = "-".join(str(s) for s in (arch.n_inputs, *arch.hidden, arch.n_outputs))
        extras = [arch.activation] + (["batchnorm"] if arch.batch_norm else []) + ([f"dropout {arch.dropout:g}"] if arch.dropout else [])
        n_params = sum(p.size for p in self.parameters().values())
        return f"MLP {sizes} ({', '.join(extras)}; {n_params} parameters)"

    # -- persistence -----------------------------------------------------------
    def state_dict(self) -> dict[str, np.ndarray]:
        """Parameters plus non-trainable state (batch-norm running statistics)."""
        state = {name: value.copy() for name, value in self.parameters().items()}
        for layer in self.layers:
            for key, value in layer.state().items():
                state[f"{layer.name}.{key}"] = value.copy()
        return state

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        for layer in self.layers:
            for key, target in {**layer.params, **layer.state()}.items():
                full = f"{layer.name}.{key}"
                if full not in state:
                    raise UserError(f"weights file has no array '{full}': it was saved from a different architecture")
                value = np.asarray(state[full])
                if value.shape != target.shape:
                    raise UserError(f"weights '{full}' have shape {value.shape}, the model expects {target.shape}")
                target[...] = value

    def save(self, path: str | Path) -> None:
        """Weights and architecture in one npz (no pickle: the architecture is a JSON string array)."""
        arrays = self.state_dict()
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
        if "__architecture__" not in arrays:
            raise UserError(f"{path} has no architecture record: it was not saved by Sequential.save")
        arch = Architecture.from_json(str(arrays.pop("__architecture__")))
        model = build_model(arch, init="zeros", rng=np.random.default_rng(0))
        model.load_state_dict(arrays)
        return model


def build_model(
    architecture: Architecture,
    init: str = "he_normal",
    init_scale: float = 1.0,
    rng: np.random.Generator | None = None,
    dropout_rng: np.random.Generator | None = None,
) -> Sequential:
    """Build the MLP: [dense -> (batch norm) -> activation -> (dropout)] per hidden size, then a dense output."""
    arch = architecture
    rng = rng if rng is not None else np.random.default_rng(0)
    dropout_rng = dropout_rng if dropout_rng is not None else np.random.default_rng(1)
    dtype = np.dtype(arch.dtype)
    initializer = INITIALIZERS[init]
    sizes = [arch.n_inputs, *arch.hidden, arch.n_outputs]
    layers: list[Layer] = []
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:]), start=1):
        weight = initializer(fan_in, fan_out, rng, init_scale, dtype)
        layers.append(Dense(f"dense{i}", weight, np.zeros(fan_out, dtype), input_grad=i > 1))
        if i == len(sizes) - 1:
            break
        if arch.batch_norm:
            layers.append(BatchNorm(f"bn{i}", fan_out, dtype))
        layers.append(ACTIVATIONS[arch.activation](f"act{i}"))
        if arch.dropout > 0.0:
            layers.append(Dropout(f"drop{i}", arch.dropout, dropout_rng))
    return Sequential(layers, arch)
