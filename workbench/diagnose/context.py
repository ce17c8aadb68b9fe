"""What the rules know about a run besides its statistics: layers, activation, and the spec.

The spec is optional (a bare record diagnoses too; only the advice gets less specific). It may
be a `Spec`, its nested `to_dict()`, a flat dict of dotted keys, or MLflow params (strings).
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

RELU_FAMILY = ("relu", "leaky_relu", "elu", "gelu")
SQUASHING = ("tanh", "sigmoid", "softsign")


def flat_spec(spec: Any) -> dict[str, Any]:
    """Dotted keys ("optimizer.lr") to values, from any of the accepted spec forms."""
    if spec is None:
        return {}
    if hasattr(spec, "flatten"):
        return dict(spec.flatten())
    if not isinstance(spec, Mapping):
        raise TypeError(f"spec must be a Spec or a mapping, got {type(spec).__name__}")
    out: dict[str, Any] = {}

    def walk(prefix: str, d: Mapping) -> None:
        for key, value in d.items():
            name = f"{prefix}{key}"
            if isinstance(value, Mapping):
                walk(f"{name}.", value)
            else:
                out[name] = _parse(value) if isinstance(value, str) else value

    walk("", spec)
    return out


def _parse(text: str) -> Any:
    """An MLflow param back to its value: params are logged as TOML values (`0.001`, `[64, 64]`, `true`)."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except (tomllib.TOMLDecodeError, ValueError, RecursionError):
        return text


@dataclass
class RunContext:
    """Layers (input to output), hidden layers, activation and spec values the rules and advice read."""

    layers: list[str]
    activation: str = ""
    layer_sizes: list[list[int]] = field(default_factory=list)
    batch_norm: bool = False
    spec: dict[str, Any] = field(default_factory=dict)
    columns: list[dict] = field(default_factory=list)  # per layer: type, path, depth, output (record meta)
    meta: dict[str, Any] = field(default_factory=dict)  # the record's meta (recurrent layers, ...)

    @classmethod
    def of(cls, record, spec: Any = None) -> "RunContext":
        meta = dict(getattr(record, "meta", {}) or {})
        flat = flat_spec(spec)
        activation = str(getattr(record, "activation", "") or flat.get("model.activation") or "")
        return cls(
            layers=[str(name) for name in record.layers],
            activation=activation,
            layer_sizes=[list(map(int, s)) for s in meta.get("layer_sizes", [])],
            batch_norm=bool(meta.get("normalized", meta.get("batch_norm", flat.get("model.batch_norm", False)))),
            spec=flat,
            columns=[dict(c) for c in meta.get("columns", [])],
            meta=meta,
        )

    @property
    def trunk(self) -> list[int]:
        """Columns on the main path (depth 0); inside a residual body the skip path carries the gradient around."""
        if len(self.columns) != len(self.layers):
            return list(range(len(self.layers)))
        return [j for j, c in enumerate(self.columns) if int(c.get("depth", 0)) == 0]

    @property
    def layer_list(self) -> bool:
        """The model came from `model.layers` (advice names layer items, not the MLP shorthand's keys)."""
        return self.spec.get("model.layers") is not None

    @property
    def hidden(self) -> list[str]:
        return self.layers[:-1]

    def get(self, key: str, default: Any = None) -> Any:
        return self.spec.get(key, default)

    @property
    def lr(self) -> float | None:
        value = self.spec.get("optimizer.lr")
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None

    @property
    def relu_like(self) -> bool:
        return self.activation in RELU_FAMILY

    @property
    def squashing(self) -> bool:
        return self.activation in SQUASHING

    def span(self, layers: list[str]) -> str:
        from workbench.diagnose.advice import layer_span

        return layer_span(layers)
