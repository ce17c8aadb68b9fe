"""`explain(model, X, y)`: attributions for chosen samples, global feature importance, unit importance.

    from workbench import explain, load_model
    result = explain(load_model(run_id), X_test, y_test, samples=16)    # integrated gradients
    print(result.report()); result.save("explain/")                    # attributions.npz + figures

What is explained: `samples` rows of (X, y), misclassified ones first (then in order); each row's
attribution is for its predicted class (classification; for images also for its true class) or
for output 0 (regression, `output` picks another). Feature importance is the mean absolute
attribution over the explained rows; permutation importance and unit importance use all of (X, y).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from workbench.explain.attributions import DEFAULT_MAX_STEPS, DEFAULT_STEPS, METHODS, TOLERANCE, Attributions, attribute
from workbench.explain.features import (
    MAX_PERMUTED_FEATURES,
    PermutationImportance,
    mean_absolute_attribution,
    permutation_importance,
    rank_agreement,
)
from workbench.explain.gradients import as_model_input, class_selector
from workbench.explain.units import UnitImportance, unit_importance

DEFAULT_SAMPLES = 16
NPZ_FILE, HEATMAP_FILE = "attributions.npz", "heatmaps.png"
FEATURES_FILE, UNITS_FILE, SUMMARY_FILE = "feature_importance.png", "unit_importance.png", "summary.json"
TOP_FEATURES, TOP_UNITS = 10, 10


@dataclass
class Explanation:
    """Everything `explain` found; `report()` for people, `to_json()` for programs, `save(folder)` for files."""

    method: str
    task: str
    indices: np.ndarray  # rows of X explained
    labels: np.ndarray
    predicted: np.ndarray
    attributions: Attributions  # for the predicted class (or the chosen output)
    true_attributions: Attributions | None  # images: for the true class
    feature_importance: np.ndarray  # mean |attribution| per flattened feature
    feature_names: list[str]
    permutation: PermutationImportance | None
    units: UnitImportance | None
    image_shape: tuple[int, ...] | None = None
    classes: list[str] | None = None
    baseline: str = "zero"
    warnings: list[str] = field(default_factory=list)
    source: dict[str, Any] = field(default_factory=dict)  # where the model came from (run id, path)
    X: np.ndarray | None = None  # the explained rows
    display: np.ndarray | None = None  # the explained rows as drawn (e.g. before standardization)

    @property
    def agreement(self) -> float | None:
        """Spearman rank correlation of attribution and permutation importance (None without the latter)."""
        if self.permutation is None:
            return None
        return rank_agreement(self.feature_importance, self.permutation.mean)

    def samples(self) -> list[dict[str, Any]]:
        a = self.attributions
        rows = []
        for i, index in enumerate(self.indices):
            row = {"index": int(index), "label": _plain(self.labels[i]), "predicted": _plain(self.predicted[i]),
                   "f_x": float(a.f_x[i]), "attribution_sum": float(a.sums[i])}
            if a.completeness_error is not None:
                row.update(f_baseline=float(a.f_baseline[i]), completeness_error=float(a.completeness_error[i]),
                           steps=int(a.steps[i]))
            else:
                row.update(f_baseline=None, completeness_error=None, steps=None)
            rows.append(row)
        return rows

    def to_json(self) -> dict[str, Any]:
        a = self.attributions
        order = np.argsort(-self.feature_importance)[:TOP_FEATURES]
        out: dict[str, Any] = {
            **self.source,
            "method": self.method, "baseline": self.baseline if a.completeness_error is not None else None,
            "task": self.task, "samples": self.samples(),
            "completeness": None if a.completeness_error is None else {
                "tolerance": a.tolerance, "holds": a.complete,
                "max_error": float(a.completeness_error.max()) if len(a.completeness_error) else 0.0,
                "steps_max": int(a.steps.max()) if len(a.steps) else 0},
            "feature_importance": [{"feature": self.feature_names[j], "mean_abs_attribution": float(self.feature_importance[j]),
                                    **({"permutation_importance": float(self.permutation.mean[j]),
                                        "permutation_std": float(self.permutation.std[j])} if self.permutation else {})}
                                   for j in order],
            "rank_agreement": _finite(self.agreement),
            "units": None if self.units is None else {
                "loss": self.units.loss,
                "layers": [{"layer": lu.layer, "units": int(len(lu.score)), "score": lu.total,
                            "weight_score": lu.weight_score} for lu in self.units.layers],
                "top": [{"layer": layer, "unit": unit, "score": score, "delta": delta}
                        for layer, unit, score, delta in self.units.top(TOP_UNITS)]},
            "warnings": list(self.warnings),
        }
        return out

    def dumps(self) -> str:
        return json.dumps(_json_safe(self.to_json()), allow_nan=False)

    def report(self) -> str:
        a = self.attributions
        lines = []
        where = self.source.get("run_id") or self.source.get("model") or "model"
        lines.append(f"explain: {where}: {len(self.indices)} samples, {self.method.replace('_', ' ')}"
                     + (f" (baseline {self.baseline})" if a.completeness_error is not None else ""))
        header = f"  {'sample':>6} {'label':>8} {'pred':>8} {'F(x)':>9}"
        if a.completeness_error is not None:
            header += f" {'F(base)':>9} {'sum attr':>9} {'completeness':>12} {'steps':>5}"
        else:
            header += f" {'sum attr':>9}"
        lines.append(header)
        for row in self.samples():
            line = (f"  {row['index']:>6} {_short(row['label']):>8} {_short(row['predicted']):>8} {row['f_x']:>9.4g}")
            if row["completeness_error"] is not None:
                line += (f" {row['f_baseline']:>9.4g} {row['attribution_sum']:>9.4g} "
                         f"{row['completeness_error']:>11.3%} {row['steps']:>5}")
            else:
                line += f" {row['attribution_sum']:>9.4g}"
            lines.append(line)
        if a.completeness_error is not None:
            state = "holds" if a.complete else "does NOT hold"
            lines.append(f"completeness (attributions sum to F(x) - F(baseline) within {a.tolerance:.0%}) {state}: "
                         f"worst error {a.completeness_error.max():.3%}, up to {int(a.steps.max())} steps")
        order = np.argsort(-self.feature_importance)[:TOP_FEATURES]
        shown = ", ".join(f"{self.feature_names[j]} {self.feature_importance[j]:.3g}" for j in order)
        lines.append(f"top features (mean |attribution|): {shown}")
        if self.permutation is not None:
            porder = np.argsort(-self.permutation.mean)[:TOP_FEATURES]
            shown = ", ".join(f"{self.feature_names[j]} {self.permutation.mean[j]:.3g}" for j in porder)
            lines.append(f"top features (permutation importance, loss rise): {shown}")
            lines.append(f"rank agreement of the two (Spearman): {self.agreement:.2f}")
        if self.units is not None:
            layers = ", ".join(f"{lu.layer} {lu.total:.3g}" for lu in self.units.layers)
            lines.append(f"units by layer (sum of first-order loss changes if removed): {layers}")
            top = ", ".join(f"{layer}[{unit}] {score:.3g}" for layer, unit, score, _ in self.units.top(5))
            lines.append(f"top units: {top}")
        for warning in self.warnings:
            lines.append(f"warning: {warning}")
        return "\n".join(lines)

    def save(self, folder: str | Path) -> list[Path]:
        """attributions.npz, summary.json and the figures into `folder`; returns the paths written."""
        from workbench.explain.figures import feature_importance_bars, heatmap_grid, unit_importance_figure

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        written = [folder / NPZ_FILE, folder / SUMMARY_FILE]
        np.savez_compressed(folder / NPZ_FILE, **self.arrays())
        (folder / SUMMARY_FILE).write_text(self.dumps() + "\n", encoding="utf-8")
        figures = []
        if self.image_shape is not None and self.X is not None:
            shape = self.image_shape
            images = (self.display if self.display is not None else self.X).reshape(len(self.X), *shape)
            pred = self.attributions.values.reshape(len(self.X), *shape)
            true = (self.true_attributions.values.reshape(len(self.X), *shape)
                    if self.true_attributions is not None else None)
            figures.append((HEATMAP_FILE, heatmap_grid(images, pred, true, labels=self.labels, predicted=self.predicted,
                                                      indices=self.indices, classes=self.classes,
                                                      method=self.method)))
        else:
            figures.append((FEATURES_FILE, feature_importance_bars(self.feature_names, self.feature_importance,
                                                                  self.permutation, method=self.method)))
        if self.units is not None and self.units.layers:
            figures.append((UNITS_FILE, unit_importance_figure(self.units)))
        for name, fig in figures:
            fig.savefig(folder / name)
            written.append(folder / name)
        return written

    def arrays(self) -> dict[str, np.ndarray]:
        """What attributions.npz holds (plain arrays: np.load(..., allow_pickle=False))."""
        a = self.attributions
        out = {"indices": self.indices, "X": self.X, "labels": np.asarray(self.labels), "predicted": np.asarray(self.predicted),
               "attributions": a.values, "f_x": a.f_x, "selector": a.selector,
               "feature_importance": self.feature_importance, "feature_names": np.array(self.feature_names, dtype=str),
               "method": np.array(self.method)}
        if a.completeness_error is not None:
            out.update(baseline=a.baseline, f_baseline=a.f_baseline, completeness_error=a.completeness_error,
                       steps=a.steps)
        if self.true_attributions is not None:
            out["attributions_true_class"] = self.true_attributions.values
        if self.permutation is not None:
            out.update(permutation_importance=self.permutation.mean, permutation_std=self.permutation.std)
        if self.units is not None:
            for lu in self.units.layers:
                out[f"units/{lu.layer}/score"] = lu.score
                out[f"units/{lu.layer}/delta"] = lu.delta
            out["units/layers"] = np.array([lu.layer for lu in self.units.layers], dtype=str)
            out["units/weight_score"] = np.array([lu.weight_score for lu in self.units.layers])
        return {k: v for k, v in out.items() if v is not None}


def explain(model, X: np.ndarray, y: np.ndarray | None = None, *, samples: int | None = DEFAULT_SAMPLES,
            method: str = "integrated_gradients", baseline="zero", mean: np.ndarray | None = None,
            steps: int = DEFAULT_STEPS, max_steps: int = DEFAULT_MAX_STEPS, tolerance: float = TOLERANCE,
            loss=None, task: str | None = None, classes=None, feature_names=None,
            image_shape: tuple[int, ...] | None = None, output: int = 0, permutation: bool = True,
            units: bool = True, seed: int = 0, display: np.ndarray | None = None) -> Explanation:
    """Attributions of `samples` rows of (X, y) by `method`, feature and unit importance (see module doc).

    `loss`, `task` and `classes` default to what the model recorded when it was built (`model.meta`);
    `baseline`: "zero", "mean" (of `mean`, the training inputs), a number or an array; `image_shape`
    (C, H, W) draws heat maps (default: the model's input shape when it is an image) over `display`
    (rows of X as they should look, e.g. before standardization; default X itself).
    """
    from workbench.nn.losses import LOSSES

    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; allowed: {', '.join(METHODS)}")
    meta = getattr(model, "meta", {}) or {}
    loss_name = meta.get("loss")
    if loss is None:
        loss = LOSSES[loss_name or "cross_entropy"]()
    loss_name = getattr(loss, "name", loss_name)
    task = task or meta.get("task") or ("classification" if getattr(loss, "task", "") == "classification"
                                        else "regression")
    classes = classes if classes is not None else meta.get("classes")
    X = as_model_input(model, X)
    if y is None:
        y = loss.predict(model.predict(X))  # explain the model's own predictions
    y = np.asarray(y)
    outputs = model.predict(X)
    n_outputs = outputs.shape[-1]
    if task == "classification":
        predicted = loss.predict(outputs)
        order = np.lexsort((np.arange(len(X)), predicted == y))  # misclassified first, then in order
        labels_all = y
    else:
        predicted = outputs[:, output] if outputs.ndim == 2 else outputs.reshape(len(outputs), -1)[:, output]
        order = np.arange(len(X))
        labels_all = y[:, output] if y.ndim == 2 else y
    chosen = order[: samples] if samples is not None else order
    Xs = X[chosen]
    if task == "classification":
        selector = class_selector(model, n_outputs, predicted[chosen], loss_name)
    else:
        selector = np.zeros((len(chosen), n_outputs))
        selector[:, output] = 1.0
    options = dict(baseline=baseline, mean=mean, steps=steps, max_steps=max_steps, tolerance=tolerance) \
        if method == "integrated_gradients" else {}
    attributions = attribute(model, Xs, selector, method, **options)
    warnings = list(attributions.warnings)
    if image_shape is None and model.input_shape is not None and len(model.input_shape) == 3:
        image_shape = tuple(model.input_shape)
    true_attributions = None
    if image_shape is not None and task == "classification":
        true_selector = class_selector(model, n_outputs, y[chosen], loss_name)
        true_attributions = attribute(model, Xs, true_selector, method, **options)
        warnings += [w.replace("integrated gradients:", "integrated gradients (true class):")
                     for w in true_attributions.warnings]
    importance = mean_absolute_attribution(attributions.values)
    names = list(feature_names) if feature_names is not None else [f"x{j}" for j in range(importance.size)]
    if len(names) != importance.size:
        names = [f"x{j}" for j in range(importance.size)]
    perm = None
    if permutation and image_shape is None:
        if importance.size <= MAX_PERMUTED_FEATURES:
            perm = permutation_importance(model, loss, X, y, seed=seed)
        else:
            warnings.append(f"permutation importance skipped: {importance.size} features (more than "
                            f"{MAX_PERMUTED_FEATURES})")
    unit_scores = unit_importance(model, loss, X, y) if units else None
    return Explanation(
        method=method, task=task, indices=chosen, labels=labels_all[chosen], predicted=predicted[chosen],
        attributions=attributions, true_attributions=true_attributions, feature_importance=importance,
        feature_names=names, permutation=perm, units=unit_scores, image_shape=image_shape,
        classes=[str(c) for c in classes] if classes is not None else None,
        baseline=baseline if isinstance(baseline, str) else "array", warnings=warnings, X=Xs,
        display=np.asarray(display)[chosen] if display is not None else None,
    )


def _plain(value):
    value = value.item() if hasattr(value, "item") else value
    return value


def _short(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _finite(value):
    return None if value is None or not math.isfinite(value) else float(value)


def _json_safe(value):
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
