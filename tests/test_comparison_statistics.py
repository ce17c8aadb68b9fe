"""The comparison's statistics on constructed cases whose answers are known (hand-computed or scipy)."""

from __future__ import annotations

import math

import pytest
from scipy import stats

from workbench.studies.statistics import compare_with_best, holm, mean_interval, welch_p


def test_the_interval_is_the_student_t_interval_over_the_seeds():
    values = [0.90, 0.91, 0.92, 0.93, 0.94]  # mean 0.92, s = 0.01581, t(0.975, 4) = 2.7764
    interval = mean_interval(values)
    half = 2.7764451051977987 * math.sqrt(0.00025) / math.sqrt(5)
    assert interval.mean == pytest.approx(0.92)
    assert (interval.low, interval.high) == (pytest.approx(0.92 - half), pytest.approx(0.92 + half))
    assert interval.half_width == pytest.approx(0.019632, abs=1e-6)
    assert mean_interval([0.5, 0.5, 0.5]).half_width == 0.0
    one = mean_interval([0.7])
    assert one.mean == 0.7 and math.isnan(one.low) and math.isnan(one.high)


@pytest.mark.filterwarnings("ignore:Precision loss:RuntimeWarning")
def test_welch_matches_scipy_and_handles_groups_without_spread():
    a, b = [0.90, 0.92, 0.91, 0.93], [0.88, 0.91, 0.85]
    assert welch_p(a, b) == pytest.approx(stats.ttest_ind(a, b, equal_var=False).pvalue, rel=1e-9)
    assert welch_p([0.1, 0.1, 0.1], [0.1, 0.1]) == 1.0
    assert welch_p([0.1, 0.1, 0.1], [0.2, 0.2, 0.2]) == 0.0
    one_flat = welch_p([0.1, 0.1, 0.1], [0.2, 0.25, 0.3])
    assert one_flat == pytest.approx(stats.ttest_ind([0.1, 0.1, 0.1], [0.2, 0.25, 0.3], equal_var=False).pvalue)
    assert math.isnan(welch_p([0.1], [0.2, 0.3]))


def test_holm_step_down_adjustment():
    # m = 3: sorted 0.01, 0.03, 0.04 -> 3 x 0.01 = 0.03, max(0.03, 2 x 0.03) = 0.06, max(0.06, 1 x 0.04) = 0.06
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1
    adjusted = holm([0.02, math.nan, 0.01])  # NaN is not a comparison: m = 2
    assert adjusted[0] == pytest.approx(0.02) and math.isnan(adjusted[1]) and adjusted[2] == pytest.approx(0.02)


def test_ties_with_the_best_after_holm_correction():
    groups = {
        "clearly-worse": [0.50, 0.52, 0.51, 0.49, 0.50],
        "best": [0.95, 0.96, 0.94, 0.95, 0.96],
        "close": [0.94, 0.96, 0.95, 0.93, 0.95],  # within the seed noise of the best
        "one-seed": [0.99],
        # raw Welch p against the best is below 0.05 but not after Holm over 3 comparisons
        "borderline": [0.93, 0.94, 0.94, 0.95, 0.925],
    }
    raw = welch_p(groups["borderline"], groups["best"])
    assert 0.0125 < raw < 0.05, raw  # the constructed case does what it says
    out = {c.name: c for c in compare_with_best(groups, maximize=True)}
    assert out["one-seed"].best  # the highest mean, although it cannot be tested
    # The best is by mean: with one seed it has no interval, so nobody can be told apart from it.
    assert all(c.verdict == "untested" for name, c in out.items() if name != "one-seed")

    del groups["one-seed"]
    ranked = compare_with_best(groups, maximize=True)
    assert [c.name for c in ranked] == ["best", "close", "borderline", "clearly-worse"]
    out = {c.name: c for c in ranked}
    assert out["best"].verdict == "best"
    assert out["close"].verdict == "tied" and out["close"].p_holm >= 0.05
    assert out["borderline"].p < 0.05 and out["borderline"].p_holm >= 0.05 and out["borderline"].verdict == "tied"
    assert out["clearly-worse"].verdict == "worse" and out["clearly-worse"].p_holm < 1e-6
    assert out["clearly-worse"].interval.high < out["best"].interval.low


def test_minimizing_ranks_the_smallest_mean_first():
    ranked = compare_with_best({"a": [0.3, 0.31, 0.29], "b": [0.1, 0.11, 0.09]}, maximize=False)
    assert [c.name for c in ranked] == ["b", "a"] and ranked[1].verdict == "worse"
