"""Intervals and comparisons over a few seeds: what a comparison may claim, and how sure it is.

Pure functions on lists of numbers (one value per seed); no Optuna, no MLflow.

- `mean_interval(values, level)`: Student t interval, mean ± t(1 - α/2, n - 1) · s / √n, with s the
  sample standard deviation (ddof 1). With 5 seeds t(0.975, 4) = 2.776: the interval is wide, and
  that is the honest width of 5 seeds.
- `welch_p(a, b)`: two-sided Welch t-test (unequal variances; Welch-Satterthwaite degrees of
  freedom), the test of Schmidt, Schneider & Hennig (2021) and of most optimizer benchmarks.
- `holm(p_values)`: Holm (1979) step-down adjustment for m comparisons: sort p ascending,
  p_adj(i) = max over j <= i of min(1, (m - j + 1) · p(j)). It controls the family-wise error
  like Bonferroni, with more power.
- `compare_with_best(groups, maximize)`: the best group by mean; every other group tested against
  it (Welch), the m = groups - 1 p-values Holm-adjusted; a group is *tied* with the best when its
  adjusted p-value is >= alpha: the data cannot tell them apart at the family-wise level alpha.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

ALPHA = 0.05
LEVEL = 0.95


def t_quantile(probability: float, df: float) -> float:
    """The Student t quantile (scipy.stats.t.ppf)."""
    from scipy import stats

    return float(stats.t.ppf(probability, df))


def _t_two_sided_p(t: float, df: float) -> float:
    from scipy import stats

    return float(min(1.0, 2.0 * stats.t.sf(abs(t), df)))


def mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def sample_std(values: list[float]) -> float:
    """Standard deviation with ddof 1 (NaN for fewer than two values)."""
    if len(values) < 2:
        return math.nan
    if min(values) == max(values):  # exactly no spread (the mean of equal floats may round off them)
        return 0.0
    m = mean(values)
    return math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))


@dataclass(frozen=True)
class Interval:
    mean: float
    low: float
    high: float
    n: int

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2


def mean_interval(values: list[float], level: float = LEVEL) -> Interval:
    """Mean and Student t interval; (mean, NaN, NaN) for one value, all NaN for none."""
    n = len(values)
    m = mean(values)
    if n < 2:
        return Interval(m, math.nan, math.nan, n)
    half = t_quantile(0.5 + level / 2, n - 1) * sample_std(values) / math.sqrt(n)
    return Interval(m, m - half, m + half, n)


def welch_p(a: list[float], b: list[float]) -> float:
    """Two-sided p-value of Welch's t-test; NaN with fewer than two values in a group.

    No spread in either group: 1 if the means are equal, else 0 (the difference is exact).
    """
    if len(a) < 2 or len(b) < 2:
        return math.nan
    va, vb = sample_std(a) ** 2 / len(a), sample_std(b) ** 2 / len(b)
    diff = mean(a) - mean(b)
    if va + vb == 0:  # both constant: compare the values themselves (means of equal floats may round apart)
        return 1.0 if a[0] == b[0] else 0.0
    t = diff / math.sqrt(va + vb)
    df = (va + vb) ** 2 / ((va**2 / (len(a) - 1) if va else 0.0) + (vb**2 / (len(b) - 1) if vb else 0.0))
    return _t_two_sided_p(t, df)


def holm(p_values: list[float]) -> list[float]:
    """Holm-adjusted p-values, in the order given (NaN stays NaN and is not counted in m)."""
    indexed = sorted((p, i) for i, p in enumerate(p_values) if not math.isnan(p))
    m = len(indexed)
    adjusted = [math.nan] * len(p_values)
    running = 0.0
    for rank, (p, i) in enumerate(indexed):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[i] = running
    return adjusted


@dataclass(frozen=True)
class VersusBest:
    """One group against the best: its interval, raw and Holm-adjusted p-values, and the verdict."""

    name: str
    interval: Interval
    best: bool
    p: float  # Welch, against the best (NaN for the best itself or when untestable)
    p_holm: float
    tied: bool | None  # None: untestable (fewer than two values)

    @property
    def verdict(self) -> str:
        if self.best:
            return "best"
        if self.tied is None:
            return "untested"
        return "tied" if self.tied else "worse"


def compare_with_best(groups: dict[str, list[float]], *, maximize: bool, alpha: float = ALPHA,
                      level: float = LEVEL) -> list[VersusBest]:
    """Each group against the best one (highest mean when maximizing), best first, then by mean.

    Ties in the mean go to the smaller spread, then to the order given.
    """
    if not groups:
        return []
    order = list(groups)
    sign = -1.0 if maximize else 1.0

    def key(name: str):
        values = groups[name]
        spread = sample_std(values)
        return (sign * mean(values), 0.0 if math.isnan(spread) else spread, order.index(name))

    ranked = sorted(order, key=key)
    best = ranked[0]
    others = ranked[1:]
    raw = [welch_p(groups[name], groups[best]) for name in others]
    adjusted = holm(raw)
    out = [VersusBest(best, mean_interval(groups[best], level), True, math.nan, math.nan, True)]
    for name, p, p_adj in zip(others, raw, adjusted):
        tied = None if math.isnan(p_adj) else p_adj >= alpha
        out.append(VersusBest(name, mean_interval(groups[name], level), False, p, p_adj, tied))
    return out
