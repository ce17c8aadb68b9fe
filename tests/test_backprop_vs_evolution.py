"""studies/backprop_vs_evolution.py: the budget it counts, and how its report reads the curves."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest

from workbench.runner import build_run
from workbench.spec import spec_from_dict

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def study():
    spec = importlib.util.spec_from_file_location("backprop_vs_evolution", REPO / "studies" / "backprop_vs_evolution.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name, models", [("adam", 1), ("genetic", 9), ("evolution_strategy", 9)])
def test_forward_passes_count_every_sample_and_model_evaluated(study, name, models):
    meter = study.BudgetMeter()
    run = build_run(spec_from_dict({"data": {"source": "moons", "n_samples": 200}, "model": {"hidden": [8]},
                                    "optimizer": {"name": name, "population": 8}, "training": {"epochs": 2}}),
                    hooks=(meter,))
    result = run.trainer.fit()
    n = len(run.data.X_train)
    assert result.history["budget/forward_passes"] == [n * models, 2 * n * models]
    assert result.history["budget/backward_passes"][-1] == (2 * n if name == "adam" else 0)
    assert 0 < result.history["budget/seconds"][0] <= result.history["budget/seconds"][1]


def test_the_run_stops_when_both_budgets_are_spent(study):
    meter = study.BudgetMeter(forward_budget=300, seconds_budget=0.0)
    run = build_run(spec_from_dict({"data": {"source": "moons", "n_samples": 200}, "model": {"hidden": [8]},
                                    "training": {"epochs": 50}}), hooks=(meter,))
    result = run.trainer.fit()
    n = len(run.data.X_train)
    assert result.epochs_run == math.ceil(300 / n) and result.reason.startswith("budget spent")


def test_reach_and_equal_budget_readings(study):
    accuracy, budget = [0.5, 0.85, 0.92, 0.91], [10, 20, 30, 40]
    assert study.first_reach(accuracy, budget, 0.9) == 30
    assert math.isnan(study.first_reach(accuracy, budget, 0.95))
    assert study.accuracy_at(accuracy, budget, 25) == 0.85 and math.isnan(study.accuracy_at(accuracy, budget, 5))
    curves = {"a": [{"val_accuracy": accuracy, "forward": budget, "seconds": [1, 2, 3, 4], "test_accuracy": 0.9}]}
    summary = study.summarize(curves, (35, 2.5))
    row = summary["methods"]["a"]
    assert row["reach_0.9"] == {"seeds": 1, "forward": 30.0, "seconds": 3.0}
    assert row["val_at_equal_forward"] == 0.92 and row["val_at_equal_seconds"] == 0.85
    assert "| a | 0.920 | 0.850 |" in study.markdown(summary)
