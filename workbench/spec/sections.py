"""The frozen spec: one dataclass per section, defaults read from the schema table.

Build a `Spec` through `spec_from_dict` / `load_spec` (they validate); the dataclass
constructors trust their arguments. `Spec()` is the all-defaults spec. Field names and
order match `schema.FIELDS` exactly (a test checks).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .schema import default as d
from .toml_writer import dumps


@dataclass(frozen=True, slots=True)
class DataSpec:
    """Where the examples come from and how they are split."""

    source: str = d("data.source")
    path: str | None = d("data.path")
    target: str | None = d("data.target")
    test_fraction: float = d("data.test_fraction")
    val_fraction: float = d("data.val_fraction")
    standardize: bool = d("data.standardize")
    n_samples: int = d("data.n_samples")
    n_features: int = d("data.n_features")
    n_classes: int = d("data.n_classes")
    noise: float = d("data.noise")
    limit: int | None = d("data.limit")
    sequence_length: int | None = d("data.sequence_length")


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """The network: a layer list, or the MLP shorthand (widths, activation, regularization), and its init."""

    hidden: tuple[int, ...] = d("model.hidden")
    activation: str = d("model.activation")
    init: str = d("model.init")
    init_scale: float = d("model.init_scale")
    batch_norm: bool = d("model.batch_norm")
    dropout: float = d("model.dropout")
    layers: tuple[dict, ...] | None = d("model.layers")

    def items(self) -> list[dict]:
        """The hidden layers as a layer list: `layers`, or the shorthand expanded (the output layer comes later)."""
        if self.layers is not None:
            return [dict(item) for item in self.layers]
        from workbench.nn.model import mlp_items

        return mlp_items(self.hidden, self.activation, self.batch_norm, self.dropout)


@dataclass(frozen=True, slots=True)
class OptimizerSpec:
    """Update rule, its hyperparameters and the learning-rate schedule."""

    name: str = d("optimizer.name")
    lr: float = d("optimizer.lr")
    weight_decay: float = d("optimizer.weight_decay")
    momentum: float = d("optimizer.momentum")
    beta1: float = d("optimizer.beta1")
    beta2: float = d("optimizer.beta2")
    eps: float = d("optimizer.eps")
    rho: float = d("optimizer.rho")
    schedule: str = d("optimizer.schedule")
    step_size: int = d("optimizer.step_size")
    gamma: float = d("optimizer.gamma")
    warmup_epochs: int = d("optimizer.warmup_epochs")
    min_lr: float = d("optimizer.min_lr")
    population: int = d("optimizer.population")
    mutation_scale: float = d("optimizer.mutation_scale")
    crossover_rate: float = d("optimizer.crossover_rate")
    sigma: float = d("optimizer.sigma")


@dataclass(frozen=True, slots=True)
class TrainingSpec:
    """Loss and loop settings."""

    loss: str = d("training.loss")
    epochs: int = d("training.epochs")
    batch_size: int = d("training.batch_size")
    shuffle: bool = d("training.shuffle")
    huber_delta: float = d("training.huber_delta")
    bptt_steps: int = d("training.bptt_steps")


@dataclass(frozen=True, slots=True)
class ClippingSpec:
    """Gradient clipping, applied after the backward pass and before the update."""

    mode: str = d("clipping.mode")
    max_norm: float = d("clipping.max_norm")
    max_value: float = d("clipping.max_value")


@dataclass(frozen=True, slots=True)
class EarlyStoppingSpec:
    """Keras' EarlyStopping vocabulary."""

    enabled: bool = d("early_stopping.enabled")
    monitor: str = d("early_stopping.monitor")
    mode: str = d("early_stopping.mode")
    patience: int = d("early_stopping.patience")
    min_delta: float = d("early_stopping.min_delta")
    baseline: float | None = d("early_stopping.baseline")
    restore_best_weights: bool = d("early_stopping.restore_best_weights")
    start_from_epoch: int = d("early_stopping.start_from_epoch")


@dataclass(frozen=True, slots=True)
class MonitorSpec:
    """Cadence and limits of the statistics stream."""

    every: int = d("monitor.every")
    log_every: int = d("monitor.log_every")
    nan_guard: bool = d("monitor.nan_guard")
    max_records: int = d("monitor.max_records")


@dataclass(frozen=True, slots=True)
class Spec:
    """One run, completely: validated once, then read everywhere, never mutated."""

    name: str = d("name")
    seed: int = d("seed")
    dtype: str = d("dtype")
    data: DataSpec = field(default_factory=DataSpec)
    model: ModelSpec = field(default_factory=ModelSpec)
    optimizer: OptimizerSpec = field(default_factory=OptimizerSpec)
    training: TrainingSpec = field(default_factory=TrainingSpec)
    clipping: ClippingSpec = field(default_factory=ClippingSpec)
    early_stopping: EarlyStoppingSpec = field(default_factory=EarlyStoppingSpec)
    monitor: MonitorSpec = field(default_factory=MonitorSpec)

    def to_dict(self) -> dict[str, Any]:
        """Nested plain dict (lists, not tuples); None values omitted, as in TOML."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if dataclasses.is_dataclass(value):
                out[f.name] = {k: _plain(v) for k, v in _items(value) if v is not None}
            elif value is not None:
                out[f.name] = _plain(value)
        return out

    def flatten(self) -> dict[str, Any]:
        """Every dotted key ("optimizer.lr") to its Python value, None included: MLflow params."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if dataclasses.is_dataclass(value):
                out.update({f"{f.name}.{k}": _plain(v) for k, v in _items(value)})
            else:
                out[f.name] = _plain(value)
        return out

    def to_toml(self) -> str:
        """The spec as a TOML file that `load_spec` reads back to an equal Spec."""
        return "# workbench experiment spec\n" + dumps(self.to_dict())

    def with_overrides(self, overrides: Mapping[str, Any]) -> Spec:
        """A new, validated Spec with dotted keys replaced (Optuna trials, sweeps)."""
        from .validate import override_dict  # late: validate builds Specs

        return override_dict(self.to_dict(), overrides)


SECTION_CLASSES: dict[str, type] = {
    "data": DataSpec,
    "model": ModelSpec,
    "optimizer": OptimizerSpec,
    "training": TrainingSpec,
    "clipping": ClippingSpec,
    "early_stopping": EarlyStoppingSpec,
    "monitor": MonitorSpec,
}


SHORTHAND = ("hidden", "activation", "batch_norm", "dropout")  # replaced by model.layers when it is given


def _items(section: object) -> list[tuple[str, Any]]:
    """A section's fields; a model with a layer list leaves out the shorthand it replaces."""
    skip = SHORTHAND if isinstance(section, ModelSpec) and section.layers is not None else ()
    return [(f.name, getattr(section, f.name)) for f in dataclasses.fields(section) if f.name not in skip]


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value
