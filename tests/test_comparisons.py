"""Comparison studies on real storages (journal file, SQLite MLflow store): exact budgets per arm (one and two
workers, resumed, interrupted), confirmation on fresh seeds scored on the test split, arms that do not train,
and the report's intervals and ties on constructed trials.

Tiny specs (moons, hidden [8], 1 epoch): a run takes a fraction of a second of training.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
from collections import Counter

import optuna
import pytest

from workbench.errors import UserError
from workbench.studies import Comparison, Float, Quick
from workbench.studies.comparison import CONFIRM_SEED_OFFSET, ComparisonPlan, arm_study_name, confirmation_study_name

TINY = {"data": {"source": "moons", "n_samples": 120}, "model": {"hidden": [8]},
        "training": {"epochs": 1, "batch_size": 32}, "monitor": {"every": 5}}


def tiny_comparison(name: str = "cmp", **kwargs) -> Comparison:
    settings = dict(name=name, base=TINY, compare={"optimizer.name": ["sgd", "adam"]},
                    tune={"optimizer.lr": Float(1e-3, 0.3, log=True)}, seeds=1, trials_per_arm=2, confirm_seeds=2,
                    pruner="none")
    settings.update(kwargs)
    return Comparison(**settings)


@pytest.fixture
def stores(tmp_path, monkeypatch):
    """A journal file and a fresh MLflow SQLite store (copied from a made template) in a fresh folder."""
    from support import sqlite_store

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return {"storage": str(tmp_path / "optuna.journal"), "tracking_uri": sqlite_store(tmp_path), "quiet": True,
            "plots": False}  # the reports' figures: only where a test asks for them


def journal(storage: str):
    return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(storage))


def stored_trials(storage: str, name: str):
    return optuna.load_study(study_name=name, storage=journal(storage)).get_trials(deepcopy=False)


def arm_budgets(storage: str, comparison: Comparison, study_name: str | None = None) -> dict[str, Counter]:
    """Per arm: its trials by state, lost-and-retried ones left out (a retry takes the lost one's place)."""
    from workbench.studies.workers import budget_used

    out = {}
    for arm in comparison.arms():
        trials = stored_trials(storage, arm_study_name(study_name or comparison.name, arm))
        retried = {n for t in trials for n in t.system_attrs.get("retry_history", ())}
        out[arm.label] = Counter(t.state.name for t in trials if t.number not in retried)
        assert budget_used(trials) == sum(out[arm.label].values())
    return out


def report_json(tracking_uri: str, run_id: str) -> dict:
    """The report's summary.json as logged on the parent run."""
    import mlflow.artifacts

    path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="report/summary.json",
                                               tracking_uri=tracking_uri)
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def children(tracking_uri: str, name: str, role: str):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name(name)
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    return [r for r in runs if r.data.tags.get("workbench.role") == role]


# -- declaration errors, before anything is created -------------------------------------------------------
def test_a_key_both_compared_and_tuned_and_a_test_metric_for_tuning_are_user_errors(stores, tmp_path):
    with pytest.raises(UserError, match="either compared or tuned"):
        tiny_comparison(compare={"optimizer.lr": [0.1, 0.01]}).run(**stores)
    with pytest.raises(UserError, match="tuning must not read the test split"):
        tiny_comparison(metric="test/accuracy").run(**stores)
    with pytest.raises(UserError, match=r"compared factor model.init: .*kaiming"):
        tiny_comparison(compare={"model.init": ["he_normal", "kaiming"]}).run(**stores)
    assert not (tmp_path / "optuna.journal").exists() and not (tmp_path / "mlruns").exists()


def test_quick_settings_change_trials_per_arm_seeds_and_confirmation_seeds(stores):
    comparison = tiny_comparison(quick=Quick(n_trials=1, seeds=1, confirm_seeds=3, overrides={"training.epochs": 1}))
    quick = comparison.settings(quick=True, tracking_uri=stores["tracking_uri"])
    assert (quick.study_name, quick.n_trials, quick.confirm_seeds, quick.base.training.epochs) == ("cmp-quick", 1, 3, 1)
    full = comparison.settings(n_trials=5, confirm_seeds=4, tracking_uri=stores["tracking_uri"])
    assert (full.n_trials, full.confirm_seeds) == (5, 4)
    assert [arm.label for arm in comparison.arms()] == ["sgd", "adam"]


# -- budgets, confirmation, resume (one worker, in process) ---------------------------------------------------
@pytest.mark.slow
def test_every_arm_gets_its_budget_and_is_confirmed_on_fresh_seeds_scored_on_the_test_split(stores):
    comparison = tiny_comparison()
    result = comparison.run(**{**stores, "plots": True})

    assert arm_budgets(stores["storage"], comparison) == {"sgd": Counter(COMPLETE=2), "adam": Counter(COMPLETE=2)}
    for arm in comparison.arms():  # the same sampler: the same learning rates in every arm
        lrs = [t.params["optimizer.lr"] for t in stored_trials(stores["storage"], arm_study_name("cmp", arm))]
        assert lrs == [t.params["optimizer.lr"] for t in stored_trials(stores["storage"], "cmp arm sgd")]
    tuning_seeds = {s for arm in comparison.arms()
                    for t in stored_trials(stores["storage"], arm_study_name("cmp", arm)) for s in t.user_attrs["seeds"]}
    confirmations = stored_trials(stores["storage"], confirmation_study_name("cmp"))
    assert len(confirmations) == 4 and all(t.state.name == "COMPLETE" for t in confirmations)
    assert Counter(t.user_attrs["arm"] for t in confirmations) == {"sgd": 2, "adam": 2}
    confirm_seeds = {t.user_attrs["seed"] for t in confirmations}
    assert confirm_seeds == {CONFIRM_SEED_OFFSET, CONFIRM_SEED_OFFSET + 1}
    assert not confirm_seeds & tuning_seeds

    runs = {r.info.run_id: r for r in children(stores["tracking_uri"], "cmp", "confirmation")}
    assert len(runs) == 4
    for t in confirmations:
        run = runs[t.user_attrs["mlflow_run_id"]]
        assert run.info.status == "FINISHED" and run.data.tags["mlflow.parentRunId"] == result.parent_run_id
        assert run.data.params["seed"] == str(t.user_attrs["seed"])  # trained on the fresh seed
        assert t.value == pytest.approx(run.data.metrics["test/accuracy"])  # scored on the test split
        assert float(run.data.params["optimizer.lr"]) == pytest.approx(t.user_attrs["params"]["optimizer.lr"])
        assert run.data.params["optimizer.name"] == t.user_attrs["arm"]
        assert t.user_attrs["gradient_ratio"] > 0 and t.user_attrs["verdict"]
    assert len(children(stores["tracking_uri"], "cmp", "trial")) == 4

    report = result.report
    assert [r.status for r in report.rows] == ["confirmed", "confirmed"]
    assert report.markdown.count("| 2/0/0 of 2 |") == 2
    assert "test/accuracy mean [95% CI]" in report.markdown and "grad ratio first/last" in report.markdown
    summary = report_json(stores["tracking_uri"], result.parent_run_id)
    assert {a["arm"] for a in summary["arms"]} == {"sgd", "adam"}
    from mlflow import MlflowClient

    files = {f.path for f in MlflowClient(stores["tracking_uri"]).list_artifacts(result.parent_run_id, "report")}
    assert {"report/summary.md", "report/arms.csv", "report/confirmations.csv", "report/confirmed_scores.png",
            "report/lr_sensitivity.png"} <= files
    parent = MlflowClient(stores["tracking_uri"]).get_run(result.parent_run_id)
    assert parent.data.tags["workbench.best_arm"] in ("sgd", "adam")
    assert parent.data.params["compare.optimizer.name"] == "{sgd, adam}"

    # Resumed with a larger budget: each arm gets exactly one more trial; the same command again runs nothing.
    comparison.run(n_trials=3, **stores)
    comparison.run(n_trials=3, **stores)
    assert arm_budgets(stores["storage"], comparison) == {"sgd": Counter(COMPLETE=3), "adam": Counter(COMPLETE=3)}
    confirmations = stored_trials(stores["storage"], confirmation_study_name("cmp"))
    per_best = Counter((t.user_attrs["arm"], t.user_attrs["best_trial"]) for t in confirmations)
    assert set(per_best.values()) == {2}  # two fresh seeds per (arm, best trial), never more


@pytest.mark.slow
def test_an_arm_whose_trials_all_diverge_is_reported_as_not_training_with_its_reasons(stores):
    base = {**TINY, "data": {"source": "moons", "n_samples": 200}, "model": {"hidden": [16, 16, 16]},
            "optimizer": {"name": "sgd"}, "training": {"epochs": 2}}
    comparison = tiny_comparison(name="diverge", base=base, compare={"model.init_scale": [1.0, 100.0]},
                                 tune={"optimizer.lr": Float(0.05, 0.2, log=True)})
    result = comparison.run(**stores)

    assert arm_budgets(stores["storage"], comparison) == {"init_scale=1.0": Counter(COMPLETE=2),
                                                         "init_scale=100.0": Counter(FAIL=2)}
    rows = {r.arm.label: r for r in result.report.rows}
    assert rows["init_scale=1.0"].status == "confirmed" and rows["init_scale=100.0"].status == "did not train"
    assert [r.arm.label for r in result.report.rows] == ["init_scale=1.0", "init_scale=100.0"]  # after the ranked
    assert not [t for t in stored_trials(stores["storage"], confirmation_study_name("diverge"))
                if t.user_attrs["arm"] == "init_scale=100.0"]
    text = result.report.markdown
    line = next(line for line in text.splitlines() if line.startswith("| - | 100.0 |"))
    assert "did not train" in line and "0/0/2 of 2" in line
    note = next(line for line in text.splitlines() if line.startswith("- init_scale=100.0 did not train"))
    assert "at any lr tried" in note and "2 of 2 tuning trials failed" in note and "non-finite" in note
    assert "Did not train at any setting tried: init_scale=100.0" in result.report.comparison
    summary = report_json(stores["tracking_uri"], result.parent_run_id)
    failed = next(a for a in summary["arms"] if a["arm"] == "init_scale=100.0")
    assert failed["status"] == "did not train" and any("non-finite" in r for r in failed["failure_reasons"])
    assert result.exit_code == 0


# -- the report on constructed trials: known intervals and ties -------------------------------------------------
def test_the_report_marks_ties_and_intervals_on_a_constructed_case(stores, tmp_path):
    comparison = tiny_comparison(name="constructed", compare={"optimizer.name": ["sgd", "momentum", "adam", "rmsprop"]},
                                 confirm_seeds=5)
    settings = comparison.settings(tracking_uri=stores["tracking_uri"], storage=stores["storage"])
    plan = ComparisonPlan(comparison, settings, optuna.storages.InMemoryStorage(), create=True)
    lr = optuna.distributions.FloatDistribution(1e-3, 0.3, log=True)
    scores = {"sgd": [0.50, 0.52, 0.51, 0.49, 0.50],  # clearly worse
              "momentum": [0.94, 0.96, 0.95, 0.93, 0.95],  # within the noise of the best
              "adam": [0.95, 0.96, 0.94, 0.95, 0.96]}  # the best
    for arm in plan.arms:
        study = plan.arm_studies[arm.label]
        for k in range(2):
            if arm.label == "rmsprop":  # every trial diverged
                study.add_trial(optuna.trial.create_trial(
                    state=optuna.trial.TrialState.FAIL, params={"optimizer.lr": 0.1 * (k + 1)},
                    distributions={"optimizer.lr": lr},
                    user_attrs={"failure_reason": f"seed 0: diverged: train/loss is nan at epoch {k}",
                                "verdicts": ["divergence"]}))
                continue
            study.add_trial(optuna.trial.create_trial(
                state=optuna.trial.TrialState.COMPLETE, value=0.9 + 0.01 * k, params={"optimizer.lr": 0.01 * (k + 1)},
                distributions={"optimizer.lr": lr}, user_attrs={"seeds": [0], "verdicts": ["healthy"]}))
        for j, value in enumerate(scores.get(arm.label, [])):
            plan.confirm_study.add_trial(optuna.trial.create_trial(
                state=optuna.trial.TrialState.COMPLETE, value=value,
                user_attrs={"arm": arm.label, "best_trial": 1, "seed": CONFIRM_SEED_OFFSET + j,
                            "gradient_ratio": 0.5 + j, "verdict": "healthy" if arm.label != "sgd" else "lr_too_low"}))
    from workbench.studies.comparison_report import build_comparison_report

    report = build_comparison_report(plan, comparison, settings, tmp_path / "report")
    rows = {r.arm.label: r for r in report.rows}
    assert [r.arm.label for r in report.rows] == ["adam", "momentum", "sgd", "rmsprop"]
    assert rows["adam"].tested.verdict == "best" and rows["momentum"].tested.verdict == "tied"
    assert rows["sgd"].tested.verdict == "worse" and rows["rmsprop"].status == "did not train"
    half = 2.7764451051977987 * math.sqrt(0.00007) / math.sqrt(5)  # s^2 of adam's scores = 0.00007
    assert rows["adam"].tested.interval.low == pytest.approx(0.952 - half)
    assert rows["adam"].gradient_ratio == pytest.approx(2.5)  # median of 0.5 ... 4.5
    lines = report.markdown.splitlines()
    assert next(line for line in lines if line.startswith("| 1 | adam |")).split(" | ")[2] == \
        f"0.952 [{0.952 - half:.4g}, {0.952 + half:.4g}]"
    assert "tied (p = " in next(line for line in lines if line.startswith("| 2 | momentum |"))
    assert "worse (p < 0.001)" in next(line for line in lines if line.startswith("| 3 | sgd |"))
    assert "lr_too_low x5" in next(line for line in lines if line.startswith("| 3 | sgd |"))
    rmsprop = next(line for line in lines if line.startswith("| - | rmsprop |"))
    assert "did not train" in rmsprop and "0/0/2 of 2" in rmsprop and "tuning: divergence x2" in rmsprop
    note = next(line for line in lines if line.startswith("- rmsprop did not train"))
    assert "'seed 0: diverged: train/loss is nan at epoch 0' (2 alike)" in note and "at any lr tried (0.1 to 0.2)" in note
    assert "Tied with it" in report.comparison and "momentum" in report.comparison
    assert report.extra_tags["workbench.best_arm"] == "adam" and report.extra_tags["workbench.tied_arms"] == "momentum"
    assert report.plots == ["confirmed_scores.png", "lr_sensitivity.png"]


# -- two workers; an interruption and the same command again (subprocesses, real signals) -----------------------
SCRIPT = """
from workbench.studies import Comparison, Float

comparison = Comparison(
    name="parallel", seeds=1, trials_per_arm=2, confirm_seeds=2, pruner="none", trial_hooks=HOOKS,
    base={"data": {"source": "moons", "n_samples": 200}, "model": {"hidden": [8]}, "training": {"epochs": 2},
          "monitor": {"every": 5}},
    compare={"model.init": ["he_normal", "xavier_normal"], "optimizer.name": ["sgd", "adam"]},
    tune={"optimizer.lr": Float(1e-3, 0.3, log=True)},
)
if __name__ == "__main__":
    comparison.main()
"""


def script(tmp_path, gated: bool) -> tuple[list[str], str, str, Comparison]:
    from support import STUDY_GATE

    text = (STUDY_GATE + "\nHOOKS = (Gate,)\n" if gated else "HOOKS = ()\n") + textwrap.dedent(SCRIPT)
    path = tmp_path / "parallel_study.py"
    path.write_text(text)
    from support import sqlite_store

    storage, tracking = str(tmp_path / "optuna.journal"), sqlite_store(tmp_path)
    namespace: dict = {}
    exec(compile(text.replace('if __name__ == "__main__"', "if False"), str(path), "exec"), namespace)
    return ([sys.executable, str(path), "--storage", storage, "--tracking-uri", tracking, "--workers", "2",
             "--no-plots"], storage, tracking, namespace["comparison"])


def env(gate=None) -> dict:
    out = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    out["MPLBACKEND"] = "Agg"
    if gate is not None:
        out["WORKBENCH_TEST_GATE"] = str(gate)
    return out


def assert_complete(storage: str, comparison: Comparison, budget: int, confirm_seeds: int) -> list:
    budgets = arm_budgets(storage, comparison)
    assert all(sum(c.values()) == budget for c in budgets.values()), budgets
    reasons = [(arm.label, t.number, t.user_attrs.get("failure_reason"))
               for arm in comparison.arms() for t in stored_trials(storage, arm_study_name(comparison.name, arm))
               if t.state.name == "FAIL"]
    assert all(c["COMPLETE"] == budget for c in budgets.values()), (budgets, reasons)
    confirmations = [t for t in stored_trials(storage, confirmation_study_name(comparison.name))]
    retried = {n for t in confirmations for n in t.system_attrs.get("retry_history", ())}
    effective = [t for t in confirmations if t.number not in retried]
    assert all(t.state.name == "COMPLETE" for t in effective)
    keys = Counter((t.user_attrs["arm"], t.user_attrs["seed"]) for t in effective)
    assert len(keys) == len(comparison.arms()) * confirm_seeds and set(keys.values()) == {1}  # none twice
    return effective


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_two_workers_give_every_arm_exactly_its_budget_and_its_confirmations(tmp_path):
    command, storage, tracking, comparison = script(tmp_path, gated=False)
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=800, env=env())
    assert done.returncode == 0, done.stderr[-5000:]
    assert "Traceback" not in done.stderr, done.stderr[-5000:]
    assert_complete(storage, comparison, 2, 2)
    workers = {t.user_attrs["worker"] for arm in comparison.arms()
               for t in stored_trials(storage, arm_study_name("parallel", arm))}
    assert len(workers) == 2  # both processes tuned
    assert len(children(tracking, "parallel", "trial")) == 8 and len(children(tracking, "parallel", "confirmation")) == 8
    assert done.stdout.count("| 2/0/0 of 2 |") == 4


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_an_interrupted_comparison_is_completed_by_the_same_command_with_exact_budgets(tmp_path):
    from support import open_gate, parked, wait_until

    gate = tmp_path / "gate"
    gate.mkdir()
    command, storage, tracking, comparison = script(tmp_path, gated=True)
    first = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             start_new_session=True, env=env(gate))
    try:
        wait_until(lambda: len(parked(gate)) >= 2, "two workers mid-trial at the gate", process=first)
        os.killpg(first.pid, signal.SIGINT)  # Ctrl-C: every process of the group
        out, err = first.communicate(timeout=300)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
    assert first.returncode == 130, err[-5000:]
    interrupted = [t for arm in comparison.arms() for t in stored_trials(storage, arm_study_name("parallel", arm))
                   if t.state.name == "FAIL" and t.user_attrs.get("failure_reason") == "interrupted"]
    assert len(interrupted) == 2  # failed as interrupted, each queued again
    assert "tuning (" in out  # the report of the interrupted comparison shows unfinished arms

    open_gate(gate)
    again = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=800, env=env(gate))
    assert again.returncode == 0, again.stderr[-5000:]
    assert "Traceback" not in again.stderr, again.stderr[-5000:]
    assert_complete(storage, comparison, 2, 2)
    for arm in comparison.arms():  # each interrupted trial was redone once, in its own arm
        trials = stored_trials(storage, arm_study_name("parallel", arm))
        lost = [t.number for t in trials if t.state.name == "FAIL" and t.user_attrs.get("failure_reason") == "interrupted"]
        assert sorted(t.user_attrs["retry_of"] for t in trials if t.user_attrs.get("retry_of") is not None) == lost
    assert done_table_rows(again.stdout) == 4


def done_table_rows(stdout: str) -> int:
    return sum(line.startswith("| ") and "| 2/0/0 of 2 |" in line for line in stdout.splitlines())


# -- the sampler every arm shares ------------------------------------------------------------------------------
def test_the_sobol_sampler_gives_every_study_the_same_stratified_points_and_retries_take_none():
    import warnings

    from workbench.studies import Categorical, Int
    from workbench.studies.samplers import SobolSampler
    from workbench.studies.space import suggest

    space = {"optimizer.lr": Float(1e-4, 1.0, log=True), "training.batch_size": Int(8, 64, step=8),
             "model.init": Categorical(["he_normal", "xavier_normal"])}
    drawn = []
    for _ in range(2):  # two arms, or two workers: the same points in the same order
        study = optuna.create_study(sampler=SobolSampler(space, seed=3))
        points = []
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no fallback to independent sampling
            for _ in range(8):
                trial = study.ask()
                points.append(suggest(space, trial))
                study.tell(trial, 0.0)
        drawn.append(points)
    assert drawn[0] == drawn[1]
    decades = sorted(int(math.log10(p["optimizer.lr"]) * 2 + 8) for p in drawn[0])  # eighths of [1e-4, 1]
    assert decades == list(range(8))  # one point in each eighth of the log range
    assert {p["training.batch_size"] for p in drawn[0]} <= set(range(8, 65, 8))
    assert {p["model.init"] for p in drawn[0]} == {"he_normal", "xavier_normal"}

    study = optuna.create_study(sampler=SobolSampler(space, seed=3))
    first = study.ask()
    suggest(space, first)
    study.tell(first, 0.0)
    study.enqueue_trial({"optimizer.lr": 0.5, "training.batch_size": 16, "model.init": "he_normal"})  # a retry
    retry = study.ask()
    assert suggest(space, retry)["optimizer.lr"] == 0.5
    study.tell(retry, 0.0)
    after = study.ask()
    assert suggest(space, after) == drawn[0][1]  # the retry took no point
