"""Diagnosis on real runs: every sick run gets its verdict, every normal run is called healthy.

Each run is a small real training (digits, moons, regression) built from a spec in well
under a second, trained once per session and shared by the tests that read it. False alarms
are defects as much as misses, so the healthy runs are as much the test as the sick ones.
"""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path

import numpy as np
import pytest

from workbench.diagnose import HEALTHY, VERDICTS, Diagnoser, Diagnosis, LiveDiagnosis, diagnose_record, thresholds
from workbench.diagnose.context import flat_spec
from workbench.monitor import StatsRecord
from workbench.runner import build_run
from workbench.spec import load_spec, spec_from_dict

NO_STOP = {"early_stopping": {"enabled": False}}
DIGITS = {"data": {"source": "digits"}, **NO_STOP}

SICK = {
    # 10 sigmoid layers with the `standard` init: each layer multiplies the gradient by < 0.25.
    "vanishing_gradients": {**DIGITS, "model": {"hidden": [32] * 10, "activation": "sigmoid", "init": "standard"},
                            "optimizer": {"name": "sgd", "lr": 0.1}, "training": {"epochs": 3}},
    # normal(0.4) init on 64-wide ReLU layers: gain ~2.3 per layer; clipping keeps it from diverging.
    "exploding_gradients": {**DIGITS, "model": {"hidden": [64] * 8, "init": "normal", "init_scale": 0.4},
                            "optimizer": {"name": "sgd", "lr": 0.05},
                            "clipping": {"mode": "global_norm", "max_norm": 1.0}, "training": {"epochs": 3}},
    "divergence": {**DIGITS, "model": {"hidden": [64] * 8, "init": "normal", "init_scale": 0.5},
                   "optimizer": {"name": "sgd", "lr": 0.01}, "training": {"epochs": 3}},
    "dead_units": {**DIGITS, "model": {"hidden": [64, 64]}, "optimizer": {"name": "sgd", "lr": 2.0},
                   "training": {"epochs": 3}},
    "saturated_units": {**DIGITS, "model": {"hidden": [64, 64], "activation": "sigmoid", "init": "normal",
                                            "init_scale": 4.0},
                        "optimizer": {"name": "sgd", "lr": 0.1}, "training": {"epochs": 3}},
    "lr_too_high": {**DIGITS, "model": {"hidden": [64, 64], "activation": "leaky_relu"},
                    "optimizer": {"name": "adam", "lr": 0.1}, "training": {"epochs": 3}},
    "lr_too_low": {**DIGITS, "model": {"hidden": [64, 64]}, "optimizer": {"name": "sgd", "lr": 1e-6},
                   "training": {"epochs": 3}},
    # 30 ReLU layers with Xavier init: the activation std halves in variance at every layer.
    "bad_initialization": {**DIGITS, "model": {"hidden": [32] * 30, "init": "xavier_normal"},
                           "training": {"epochs": 2}},
    # a tanh rnn over 60 steps: the gradient reaching step 1 is ~1e-6 of the one at step 60.
    "vanishing_through_time": {"data": {"source": "adding", "sequence_length": 60, "n_samples": 400},
                               "model": {"layers": [{"type": "rnn", "units": 16}]},
                               "training": {"loss": "mse", "epochs": 3}, **NO_STOP},
    # a relu rnn with U = 1.1 I over 60 steps: the gradient grows ~1.1^59 on its way back (clipped to stay finite).
    "exploding_through_time": {"data": {"source": "adding", "sequence_length": 60, "n_samples": 400},
                               "model": {"layers": [{"type": "rnn", "units": 16, "activation": "relu",
                                                     "recurrent_init": "identity", "recurrent_scale": 1.1}]},
                               "optimizer": {"name": "sgd", "lr": 0.001},
                               "clipping": {"mode": "global_norm", "max_norm": 1.0},
                               "training": {"loss": "mse", "epochs": 3}, **NO_STOP},
}

HEALTHY_RUNS = {
    "moons": {"data": {"source": "moons"}, "model": {"hidden": [32, 32]}, "training": {"epochs": 30}, **NO_STOP},
    "regression": {"data": {"source": "regression"}, "model": {"hidden": [64, 32]},
                   "training": {"epochs": 30, "loss": "mse"}, **NO_STOP},
    "diabetes": {"data": {"source": "diabetes"}, "model": {"hidden": [64, 32]},
                 "training": {"epochs": 50, "loss": "mse"}, **NO_STOP},
    "tanh_xavier_6_layers": {**DIGITS, "model": {"hidden": [64] * 6, "activation": "tanh", "init": "xavier_normal"},
                             "training": {"epochs": 10}},
    "sigmoid_xavier": {**DIGITS, "model": {"hidden": [64, 64], "activation": "sigmoid", "init": "xavier_uniform"},
                       "optimizer": {"name": "adam", "lr": 0.003}, "training": {"epochs": 20}},
    "relu_he_10_layers": {**DIGITS, "model": {"hidden": [64] * 10}, "training": {"epochs": 5}},
    "circles_batch_norm": {"data": {"source": "circles"}, "model": {"hidden": [32, 32, 32], "batch_norm": True},
                           "training": {"epochs": 20}, **NO_STOP},
    "sgd_cosine_to_zero": {**DIGITS, "model": {"hidden": [64]},
                           "optimizer": {"name": "sgd", "lr": 0.05, "schedule": "cosine"}, "training": {"epochs": 30}},
    "breast_cancer_sgd_converged": {"data": {"source": "breast_cancer"}, "model": {"hidden": [16]},
                                    "optimizer": {"name": "sgd", "lr": 0.01}, "training": {"epochs": 200}, **NO_STOP},
}


@functools.cache
def trained(kind: str, name: str):
    """(run, diagnosis) of one named spec, trained once per test session."""
    if kind == "default":
        spec = load_spec(Path(__file__).resolve().parents[1] / "experiments/digits_mlp.toml", ["training.epochs=4"])
    else:
        spec = spec_from_dict((SICK if kind == "sick" else HEALTHY_RUNS)[name])
    run = build_run(spec)
    run.trainer.fit()
    return run, diagnose_record(run.record, spec=spec)


# -- sick runs get their verdict -------------------------------------------------------------------

@pytest.mark.parametrize("verdict", list(SICK))
def test_sick_run_gets_its_verdict(verdict):
    run, diagnosis = trained("sick", verdict)
    assert diagnosis.verdict == verdict, diagnosis.report()
    finding = diagnosis.findings[0]
    assert finding.layers and set(finding.layers) <= set(run.record.layers)
    assert finding.first_step in set(run.record.steps.tolist())
    assert finding.evidence and finding.advice and finding.summary
    assert finding.severity == VERDICTS[verdict]


def test_every_verdict_is_tested():
    assert set(SICK) == set(VERDICTS)


# Runs of a second or more of training: in the full suite only (-m "not slow" keeps the small ones).
LONG_RUNS = {"digits_default", "sigmoid_xavier", "tanh_xavier_6_layers", "sgd_cosine_to_zero", "relu_he_10_layers",
             "breast_cancer_sgd_converged"}


def slow_if_long(names):
    return [pytest.param(name, marks=pytest.mark.slow) if name in LONG_RUNS else name for name in names]


@pytest.mark.parametrize("name", slow_if_long(["digits_default", *HEALTHY_RUNS]))
def test_normal_run_is_healthy(name):
    _, diagnosis = trained("default", name) if name == "digits_default" else trained("healthy", name)
    assert diagnosis.verdict == HEALTHY, diagnosis.report()
    assert diagnosis.findings == [] and diagnosis.report().startswith("verdict: healthy")


# -- what each finding says ------------------------------------------------------------------------

def test_vanishing_names_the_lower_layers_and_the_ratio():
    _, diagnosis = trained("sick", "vanishing_gradients")
    finding = diagnosis.finding("vanishing_gradients")
    assert finding.layers[0] == "dense1" and "dense11" not in finding.layers
    assert finding.evidence["ratio_first_to_output"] < thresholds.VANISHING_RATIO
    assert finding.first_step == 0 and finding.evidence["share_of_steps"] > 0.9
    assert any("relu" in a and "he_normal" in a for a in finding.advice)
    assert any("xavier" in a for a in finding.advice)  # normalized init for sigmoid


def test_exploding_gradients_says_the_init_is_the_cause():
    _, diagnosis = trained("sick", "exploding_gradients")
    finding = diagnosis.finding("exploding_gradients")
    assert finding.evidence["ratio_first_to_output"] > thresholds.EXPLODING_RATIO
    assert finding.layers[0] == "dense1"
    assert any("he_normal" in a and 'now "normal", init_scale 0.4' in a for a in finding.advice)
    assert finding.evidence["clip_fraction"] == 1.0  # clipping is on and cannot help
    assert "bad_initialization" in diagnosis.verdicts


def test_divergence_fires_at_the_first_non_finite_step():
    run, diagnosis = trained("sick", "divergence")
    event = run.record.meta["nan_event"]
    finding = diagnosis.findings[0]
    assert finding.verdict == "divergence" and finding.severity == "critical"
    assert finding.first_step == event["step"] and finding.layers == [event["layer"]]
    assert finding.evidence["origin"]["pass"] == event["pass"]


def test_dead_units_advice_lowers_the_learning_rate():
    _, diagnosis = trained("sick", "dead_units")
    finding = diagnosis.findings[0]
    assert max(finding.evidence["dead_fraction"].values()) >= thresholds.DEAD_FRACTION
    assert not finding.evidence["at_first_step"]  # they died during training
    assert any(a.startswith("lower the learning rate") and "--set optimizer.lr=" in a for a in finding.advice)
    assert any("leaky_relu" in a for a in finding.advice)


def test_lr_too_high_suggests_a_factor_from_the_update_ratio():
    _, diagnosis = trained("sick", "lr_too_high")
    finding = diagnosis.findings[0]
    ratio = finding.evidence["update_ratio_median"]
    assert ratio > thresholds.LR_HIGH_UPDATE_RATIO
    factor = 10 ** round(math.log10(ratio / thresholds.UPDATE_RATIO_TARGET))
    assert f"lower the learning rate {factor}x to optimizer.lr={0.1 / factor:.3g}" in finding.advice[0]


def test_lr_too_low_suggests_raising_it():
    _, diagnosis = trained("sick", "lr_too_low")
    finding = diagnosis.findings[0]
    assert finding.evidence["update_ratio_max_layer"] < thresholds.LR_LOW_UPDATE_RATIO
    assert finding.advice[0].startswith("raise the learning rate")


def test_bad_initialization_measures_the_per_layer_shrink_at_step_0():
    _, diagnosis = trained("sick", "bad_initialization")
    finding = diagnosis.findings[0]
    assert finding.first_step == 0
    assert finding.evidence["ratio_last_to_first"] < thresholds.BAD_INIT_STD_RATIO_LOW
    assert 0.6 < finding.evidence["per_layer_factor"] < 0.8  # Xavier under ReLU: 1/sqrt(2)
    assert "he_normal" in finding.advice[0] and "xavier_normal" in finding.advice[0]


def test_saturation_points_at_the_init_scale():
    _, diagnosis = trained("sick", "saturated_units")
    finding = diagnosis.findings[0]
    assert finding.evidence["at_first_step"]
    assert min(finding.evidence["saturated_fraction"].values()) >= thresholds.SATURATED_FRACTION
    assert "xavier_normal" in finding.advice[0] and "init_scale 4" in finding.advice[0]


# -- output forms ------------------------------------------------------------------------------------

@pytest.mark.parametrize("verdict", list(SICK))
def test_json_is_strict_and_complete(verdict):
    _, diagnosis = trained("sick", verdict)
    out = json.loads(json.dumps(diagnosis.to_json(), allow_nan=False))
    assert out["verdict"] == verdict and "run_id" in out
    for finding in out["findings"]:
        assert {"verdict", "severity", "layers", "first_step", "evidence", "advice", "summary"} <= set(finding)
    # diagnosis.json reads back as the same Diagnosis (the tracking agent draws its figure from it)
    assert Diagnosis.from_json(out).to_json() == diagnosis.to_json()


def test_report_puts_the_verdict_first():
    _, diagnosis = trained("sick", "exploding_gradients")
    text = diagnosis.report()
    lines = text.splitlines()
    assert lines[0] == "verdict: exploding_gradients" and lines[1] == "also: bad_initialization"
    assert "1. exploding_gradients [error] at dense1-dense3, step 0" in text
    assert "evidence: " in text and "try: --set model.init=he_normal" in text


@pytest.mark.slow
def test_figure_marks_the_findings(tmp_path):
    from matplotlib.patches import Rectangle

    from workbench.diagnose.figure import diagnosis_figure

    run, diagnosis = trained("sick", "bad_initialization")
    fig = diagnosis_figure(run.record, diagnosis)
    flow = fig.axes[0]
    assert sum(isinstance(p, Rectangle) for p in flow.patches) >= len(diagnosis.findings)
    assert {t.get_text() for t in flow.texts} >= set(diagnosis.verdicts)
    fig.savefig(tmp_path / "d.png")
    assert (tmp_path / "d.png").read_bytes()[:4] == b"\x89PNG"


def test_advice_is_the_same_from_mlflow_params():
    run, diagnosis = trained("sick", "dead_units")
    params = {k: (str(v).lower() if isinstance(v, bool) else str(v)) for k, v in run.spec.flatten().items()
              if v is not None and not isinstance(v, (list, tuple))}
    assert flat_spec(params)["optimizer.lr"] == 2.0
    again = diagnose_record(run.record, spec=params)
    assert again.findings[0].advice == diagnosis.findings[0].advice


# -- persistence, on hand-made records -----------------------------------------------------------------

def record_with(n: int, vanishing_rows=(), nan_row: int | None = None) -> StatsRecord:
    """A 3-layer record whose backprop profile is healthy except at `vanishing_rows` (ratio 1e-5)."""
    record = StatsRecord(["dense1", "dense2", "dense3"], capacity=n)
    for step in range(n):
        record.start_row(step, step // 50)
        record.log("loss", float("nan") if step == nan_row else 1.0 / (1 + step))
        first = 1e-5 if step in set(vanishing_rows) else 0.5
        for layer, value in zip(record.layers, (first, 0.7, 1.0), strict=True):
            record.log_layer("backprop_norm", layer, value)
    return record


def test_verdict_needs_half_of_a_window():
    need = math.ceil(thresholds.PERSISTENCE_FRACTION * thresholds.PERSISTENCE_WINDOW)
    assert diagnose_record(record_with(200, range(50, 50 + need - 1))).verdict == HEALTHY
    every_other = range(60, 60 + 2 * need, 2)  # intermittent, but in half of a window
    diagnosis = diagnose_record(record_with(200, every_other))
    assert diagnosis.verdict == "vanishing_gradients"
    assert diagnosis.findings[0].first_step == 60 and diagnosis.findings[0].layers == ["dense1"]


def test_short_record_needs_half_of_its_rows():
    assert diagnose_record(record_with(9, range(4, 9))).verdict == "vanishing_gradients"
    assert diagnose_record(record_with(9, range(5, 9))).verdict == HEALTHY


def test_divergence_needs_no_persistence():
    diagnosis = diagnose_record(record_with(100, nan_row=42))
    assert diagnosis.verdict == "divergence" and diagnosis.findings[0].first_step == 42


def test_every_threshold_has_a_source():
    constants = {k for k, v in vars(thresholds).items() if k.isupper() and isinstance(v, (int, float))}
    table = {t.name: t for t in thresholds.TABLE}
    assert constants == set(table)
    assert all(t.source and getattr(thresholds, t.name) == t.value for t in table.values())


# -- live diagnosis ------------------------------------------------------------------------------------

def test_live_diagnosis_stops_a_sick_run_with_the_verdict_as_reason():
    seen = []
    live = LiveDiagnosis(every_n_steps=10, stop_on=("exploding_gradients",), on_finding=seen.append)
    run = build_run(spec_from_dict(SICK["exploding_gradients"]), hooks=(live,))
    result = run.trainer.fit()
    assert result.status == "FAILED" and result.reason.startswith("diagnosis: exploding_gradients")
    assert result.steps < 3 * run.trainer.steps_per_epoch
    exploding = [f for f in seen if f.verdict == "exploding_gradients"]
    assert len(exploding) == 1 and live.stopped_by is exploding[0]
    assert seen[0].verdict == "bad_initialization"  # seen at step 0, not a reason to stop here


@pytest.mark.parametrize("verdict", ["vanishing_gradients", "dead_units", "lr_too_low", "saturated_units"])
def test_live_diagnosis_agrees_with_the_offline_one(verdict):
    seen = []
    live = LiveDiagnosis(every_n_steps=7, stop_on=(), on_finding=seen.append, spec=spec_from_dict(SICK[verdict]))
    run = build_run(spec_from_dict(SICK[verdict]), hooks=(live,))
    run.trainer.fit()
    offline = diagnose_record(run.record, spec=run.spec)
    online = live.diagnosis()
    assert online.verdicts == offline.verdicts and online.verdict == verdict
    assert [f.first_step for f in online.findings] == [f.first_step for f in offline.findings]
    assert sorted(f.verdict for f in seen) == sorted(offline.verdicts)
    tracks = live.diagnoser.tracks.values()
    assert all(t.n == len(run.record) for t in tracks)  # every row evaluated exactly once


def test_live_diagnosis_sees_a_nan_guard_stop():
    seen = []
    live = LiveDiagnosis(every_n_steps=50, on_finding=seen.append)
    run = build_run(spec_from_dict(SICK["divergence"]), hooks=(live,))
    run.trainer.fit()
    assert seen and seen[0].verdict == "divergence" and live.diagnosis().verdict == "divergence"


def test_live_diagnosis_survives_record_compaction():
    spec = spec_from_dict({**SICK["saturated_units"], "monitor": {"max_records": 100}})
    live = LiveDiagnosis(every_n_steps=5, stop_on=())
    run = build_run(spec, hooks=(live,))
    run.trainer.fit()
    assert run.record.every > 1  # the record compacted while the hook was reading it
    steps = live.diagnoser.tracks["saturated_units"].steps
    assert np.all(np.diff(steps) > 0) and live.diagnosis().verdict == "saturated_units"


def test_update_without_new_rows_costs_nothing():
    run, _ = trained("sick", "saturated_units")
    diagnoser = Diagnoser()
    diagnoser.update(run.record)
    n = diagnoser.tracks["dead_units"].n
    assert diagnoser.update(run.record) == [] and diagnoser.tracks["dead_units"].n == n == len(run.record)


@pytest.mark.parametrize("name", slow_if_long(["moons", "relu_he_10_layers", "sgd_cosine_to_zero"]))
def test_live_diagnosis_lets_healthy_runs_finish(name):
    live = LiveDiagnosis(every_n_steps=10)  # the default stop_on, as a study uses it
    run = build_run(spec_from_dict(HEALTHY_RUNS[name]), hooks=(live,))
    result = run.trainer.fit()
    assert result.status == "FINISHED" and live.findings == [] and live.stopped_by is None


def test_stop_on_rejects_unknown_verdicts():
    with pytest.raises(ValueError, match="exploding"):
        LiveDiagnosis(stop_on=("explosion",))
