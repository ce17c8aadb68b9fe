"""`workbench run` from the command line: exit codes, one-line errors, --json."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from support import DEADLINE_S

QUICK = ["--set", "training.epochs=2", "--set", "model.hidden=[16]", "--no-track", "--quiet"]


def workbench(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "workbench", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=DEADLINE_S)


@pytest.mark.slow
def test_run_json_prints_one_object(repo):
    proc = workbench("run", str(repo / "experiments/digits_mlp.toml"), *QUICK, "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["status"] == "FINISHED" and out["run_id"] is None and out["experiment"] == "digits-mlp"
    assert {"train/loss", "val/accuracy", "test/accuracy"} <= set(out["metrics"])


@pytest.mark.slow
def test_run_prints_metrics_for_people(repo):
    proc = workbench("run", str(repo / "experiments/digits_mlp.toml"), *QUICK)
    assert proc.returncode == 0, proc.stderr
    assert "status: FINISHED" in proc.stdout and "test/accuracy" in proc.stdout


@pytest.mark.parametrize(
    "override, culprit",
    [
        ("optimizer.lr=-1", "optimizer.lr"),
        ("optimizer.learning_rate=0.1", "optimizer.lr"),
        ("model.activation=relu6", "relu"),
        ("model.dropout=1", "model.dropout"),
        ("training.loss=mse_loss", "training.loss"),
    ],
)
def test_user_mistakes_exit_2_with_one_line(repo, override, culprit):
    proc = workbench("run", str(repo / "experiments/digits_mlp.toml"), "--set", override, "--no-track")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and culprit in lines[0] and "Traceback" not in proc.stderr


def test_blas_threads_below_one_exits_2(repo):
    proc = workbench("run", str(repo / "experiments/digits_mlp.toml"), "--blas-threads", "0", "--no-track")
    assert proc.returncode == 2 and "--blas-threads: must be an integer >= 1, got 0" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_tracked_run_leaves_a_core_to_its_agent_unless_told(monkeypatch):
    from workbench import machine

    monkeypatch.setattr(machine, "cores", lambda: 2)
    monkeypatch.setattr(machine, "blas_threads_in_use", lambda: 2)
    assert machine.training_blas_threads(tracked=True) == 1
    assert machine.training_blas_threads(tracked=False) is None  # untracked: BLAS as it is
    assert machine.training_blas_threads(tracked=True, asked=2) == 2
    monkeypatch.setattr(machine, "cores", lambda: 1)
    assert machine.training_blas_threads(tracked=True) is None  # one core: nothing to leave
    before = machine.blas_threads_in_use()
    with machine.limit_blas_threads(1):
        pass
    assert machine.blas_threads_in_use() == before


def test_missing_spec_file_exits_2(tmp_path):
    proc = workbench("run", str(tmp_path / "nope.toml"), "--no-track")
    assert proc.returncode == 2 and "nope.toml" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_loss_that_does_not_fit_the_task_exits_2(repo):
    proc = workbench("run", str(repo / "experiments/digits_mlp.toml"), "--set", "data.source=diabetes", "--no-track")
    assert proc.returncode == 2 and "training.loss" in proc.stderr


@pytest.mark.slow
def test_divergence_exits_1(repo):
    proc = workbench("run", str(repo / "experiments/digits_mlp.toml"), *QUICK, "--json",
                     "--set", "optimizer.name=sgd", "--set", "optimizer.lr=10", "--set", "model.init=normal",
                     "--set", "model.init_scale=10", "--set", "model.hidden=[64,64,64]")
    out = json.loads(proc.stdout)
    assert proc.returncode == 1 and out["status"] == "FAILED" and "non-finite" in out["reason"]
