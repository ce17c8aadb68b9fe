"""Input attributions from the model's own backward pass: saliency, gradient x input, integrated gradients.

For a sample x and a chosen output F (the logit of a class, or a regression output):

- saliency: dF/dx (Simonyan, Vedaldi & Zisserman 2014, without the absolute value);
- gradient x input: x * dF/dx (Shrikumar et al. 2016);
- integrated gradients (Sundararajan, Taly & Yan 2017): (x - b) * int_0^1 dF/dx(b + a (x - b)) da for a
  baseline b. They satisfy completeness, sum_j IG_j = F(x) - F(b), when the integral is computed
  well enough. The integral is a trapezoid rule on 1 + `steps` points of the straight path, and
  `steps` doubles (reusing every point computed) for the samples whose relative completeness error
  |sum_j IG_j - (F(x) - F(b))| / |F(x) - F(b)| is above `tolerance` (1%), up to `max_steps`.
  ReLU and max-pool models have kinks along the path, where the integrand jumps: they need more
  steps than smooth ones. Each sample reports the steps it used and its error; a sample still
  above the tolerance at `max_steps` gets a warning with an estimate of the steps it needs (the
  error of the rule falls at least as 1/steps).

The model runs as it predicts (evaluation mode: dropout off, batch-norm running statistics),
see `workbench.explain.gradients`. Interpolation points go through the model in chunks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from workbench.explain.gradients import as_model_input, chunk_rows, evaluation_with_gradients, output_and_gradient

METHODS = ("integrated_gradients", "saliency", "gradient_x_input")
TOLERANCE = 0.01  # completeness: attributions sum to F(x) - F(baseline) within 1%
DEFAULT_STEPS, DEFAULT_MAX_STEPS = 32, 1 << 15
BASELINES = ("zero", "mean")


@dataclass
class Attributions:
    """Per-sample attributions (same shape as the input), what they explain, and for integrated gradients
    how well they add up."""

    method: str
    values: np.ndarray  # (N, *input shape), float64
    selector: np.ndarray  # (N, outputs): which output F each row explains
    f_x: np.ndarray  # (N,) F(x)
    baseline: np.ndarray | None = None  # (N, *input shape) for integrated gradients
    f_baseline: np.ndarray | None = None  # (N,)
    completeness_error: np.ndarray | None = None  # (N,) relative
    steps: np.ndarray | None = None  # (N,) trapezoid intervals used
    tolerance: float = TOLERANCE
    warnings: list[str] = field(default_factory=list)

    @property
    def sums(self) -> np.ndarray:
        return self.values.reshape(len(self.values), -1).sum(axis=1)

    @property
    def complete(self) -> bool:
        """Completeness holds for every sample (always False for methods without it)."""
        return self.completeness_error is not None and bool(np.all(self.completeness_error <= self.tolerance))


def saliency(model, X: np.ndarray, selector: np.ndarray) -> Attributions:
    """dF/dx for each row of X."""
    X = as_model_input(model, X)
    with evaluation_with_gradients(model):
        f_x, grads = output_and_gradient(model, X, selector)
    return Attributions("saliency", grads.astype(np.float64), selector, f_x)


def gradient_x_input(model, X: np.ndarray, selector: np.ndarray) -> Attributions:
    """x * dF/dx for each row of X."""
    result = saliency(model, X, selector)
    result.method = "gradient_x_input"
    result.values = result.values * as_model_input(model, X)
    return result


def resolve_baseline(model, X: np.ndarray, baseline, mean: np.ndarray | None = None) -> np.ndarray:
    """The baseline per row: "zero", "mean" (of `mean`, e.g. the training split), a number or an array."""
    X = as_model_input(model, X)
    if isinstance(baseline, str):
        if baseline == "zero":
            return np.zeros_like(X)
        if baseline == "mean":
            if mean is None:
                raise ValueError('baseline "mean" needs the mean of the training inputs (mean=...)')
            return np.broadcast_to(as_model_input(model, np.asarray(mean).reshape(1, -1)).reshape(X.shape[1:]),
                                   X.shape).copy()
        raise ValueError(f"unknown baseline {baseline!r}; allowed: {', '.join(BASELINES)}, a number or an array")
    b = np.asarray(baseline, dtype=X.dtype)
    if b.ndim == 2 and X.ndim > 2 and b.shape[1] == int(np.prod(X.shape[1:])):
        b = b.reshape(len(b), *X.shape[1:])
    return np.broadcast_to(b, X.shape).copy()


def integrated_gradients(model, X: np.ndarray, selector: np.ndarray, *, baseline="zero",
                         mean: np.ndarray | None = None, steps: int = DEFAULT_STEPS,
                         max_steps: int = DEFAULT_MAX_STEPS, tolerance: float = TOLERANCE) -> Attributions:
    """Integrated gradients with adaptive steps until completeness holds within `tolerance` (see module doc)."""
    if int(steps) < 1 or int(max_steps) < int(steps):
        raise ValueError(f"need 1 <= steps <= max_steps, got steps={steps}, max_steps={max_steps}")
    X = as_model_input(model, X)
    B = resolve_baseline(model, X, baseline, mean)
    n = len(X)
    m = np.full(n, int(steps), dtype=np.int64)
    with evaluation_with_gradients(model):
        f_x, g1 = output_and_gradient(model, X, selector)
        f_b, g0 = output_and_gradient(model, B, selector)
        delta_f = f_x - f_b
        ends = (g0.astype(np.float64) + g1) / 2.0
        interior = np.zeros_like(ends)
        todo = np.arange(n)
        first = True
        while len(todo):
            # new nodes: all interior ones the first time, then the midpoints of the current intervals
            for group in _groups_by_steps(todo, m):
                steps_now = int(m[group[0]])
                alphas = (np.arange(1, steps_now) / steps_now if first
                          else (2 * np.arange(steps_now) + 1) / (2 * steps_now))
                interior[group] += _path_gradient_sum(model, X[group], B[group], selector[group], alphas)
                if not first:
                    m[group] *= 2
            first = False
            values = (X - B) * ((ends + interior) / m.reshape((-1,) + (1,) * (X.ndim - 1)))
            error = _relative_error(values, delta_f, f_x, f_b)
            todo = np.flatnonzero((error > tolerance) & (2 * m <= max_steps))
    result = Attributions("integrated_gradients", values, selector, f_x, baseline=B, f_baseline=f_b,
                          completeness_error=error, steps=m.copy(), tolerance=tolerance)
    failing = np.flatnonzero(error > tolerance)
    if len(failing):
        worst = float(error[failing].max())
        needed = int(2 ** math.ceil(math.log2(max_steps * worst / tolerance)))
        result.warnings.append(
            f"integrated gradients: completeness holds within {tolerance:.0%} for {n - len(failing)} of {n} samples; "
            f"{len(failing)} still miss it at {max_steps} steps (worst error {worst:.2%}): about {needed} steps "
            f"needed (--max-steps {needed})")
    return result


def _groups_by_steps(todo: np.ndarray, m: np.ndarray) -> list[np.ndarray]:
    """The samples to refine, grouped by their current number of steps."""
    return [todo[m[todo] == value] for value in np.unique(m[todo])]


def _path_gradient_sum(model, X: np.ndarray, B: np.ndarray, selector: np.ndarray, alphas: np.ndarray) -> np.ndarray:
    """sum_k dF/dx(b + alpha_k (x - b)) per sample, float64, batching samples x nodes in chunks."""
    out = np.zeros(X.shape, dtype=np.float64)
    if len(alphas) == 0:
        return out
    rows = chunk_rows(model)
    per_chunk = max(1, rows // len(alphas))  # samples per chunk (or nodes, when one sample has more than `rows`)
    node_chunk = min(len(alphas), rows)
    diff = X - B
    for start in range(0, len(X), per_chunk):
        s = slice(start, start + per_chunk)
        for a0 in range(0, len(alphas), node_chunk):
            a = alphas[a0 : a0 + node_chunk].astype(X.dtype)
            k = len(X[s])
            points = (B[s][:, None] + a.reshape(1, -1, *([1] * (X.ndim - 1))) * diff[s][:, None])
            points = points.reshape(k * len(a), *X.shape[1:])
            sel = np.repeat(selector[s], len(a), axis=0)
            _, grads = output_and_gradient(model, points, sel)
            out[s] += grads.reshape(k, len(a), *X.shape[1:]).sum(axis=1, dtype=np.float64)
    return out


def _relative_error(values: np.ndarray, delta_f: np.ndarray, f_x: np.ndarray, f_b: np.ndarray) -> np.ndarray:
    """|sum(IG) - (F(x) - F(b))| / |F(x) - F(b)|, the denominator kept off 0 by the outputs' scale."""
    total = values.reshape(len(values), -1).sum(axis=1)
    scale = np.maximum(np.abs(delta_f), 1e-6 * (np.abs(f_x) + np.abs(f_b)) + 1e-12)
    return np.abs(total - delta_f) / scale


def attribute(model, X: np.ndarray, selector: np.ndarray, method: str = "integrated_gradients", **options) -> Attributions:
    """One of `METHODS` (options: those of `integrated_gradients`; the others take none)."""
    if method == "integrated_gradients":
        return integrated_gradients(model, X, selector, **options)
    if method == "saliency":
        return saliency(model, X, selector)
    if method == "gradient_x_input":
        return gradient_x_input(model, X, selector)
    raise ValueError(f"unknown attribution method {method!r}; allowed: {', '.join(METHODS)}")
