"""Checkpoints and `workbench run --resume`: a resumed run ends exactly as an uninterrupted one."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from support import DEADLINE_S, sqlite_store

from workbench.checkpoint import CHECKPOINT_FILE, RECORD_FILE, Checkpoint, restore, save_checkpoint
from workbench.errors import UserError
from workbench.execute import execute
from workbench.runner import build_run
from workbench.spec import load_spec
from workbench.training import Hook

REPO = Path(__file__).resolve().parents[1]
SPEC = REPO / "experiments" / "digits_mlp.toml"
# adam, dropout 0.2, early stopping with restored best weights (from the spec), small and quick
SMALL = ["model.hidden=[32, 16]", "data.limit=600", "training.epochs=8", "early_stopping.patience=3",
         "monitor.log_every=5"]


class InterruptAt(Hook):
    """Ctrl-C at the end of epoch `epoch` (after the checkpoint of that epoch is written)."""

    priority = 100

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_epoch_end(self, trainer, logs) -> None:
        if trainer.epoch == self.epoch:
            raise KeyboardInterrupt


class InterruptMidEpoch(Hook):
    """Ctrl-C in the middle of epoch `epoch` (the last checkpoint is of the epoch before)."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_after_update(self, trainer) -> None:
        if trainer.epoch == self.epoch and trainer.batch_index == 3:
            raise KeyboardInterrupt


def assert_same_record(a, b) -> None:
    assert a.layers == b.layers and a.every == b.every
    assert np.array_equal(a.steps, b.steps) and np.array_equal(a.epochs, b.epochs)
    assert a.global_stats() == b.global_stats() and a.layer_stats() == b.layer_stats()
    for name in a.global_stats():
        assert np.array_equal(a.global_(name), b.global_(name), equal_nan=True), name
    for name in a.layer_stats():
        assert np.array_equal(a.layer(name), b.layer(name), equal_nan=True), name


def interrupted_then_resumed(spec, stopper: Hook, directory: Path):
    first = build_run(spec, hooks=(stopper,))
    first.trainer.register(Checkpoint(first, directory))
    with pytest.raises(KeyboardInterrupt):
        first.trainer.fit()
    second = build_run(spec)
    restore(second, directory)
    return second, second.trainer.fit()


@pytest.mark.parametrize(
    "overrides, stopper",
    [
        ([], InterruptAt(2)),
        (["clipping.mode=global_norm", "clipping.max_norm=0.5", "optimizer.schedule=cosine"], InterruptMidEpoch(3)),
        (["training.epochs=40", "early_stopping.patience=2", "optimizer.lr=0.01", "monitor.max_records=100"], InterruptAt(4)),
    ],
    ids=["epoch-end", "mid-epoch-clipping-schedule", "early-stop-and-compaction"],
)
def test_resumed_run_is_bit_identical(tmp_path, overrides, stopper):
    spec = load_spec(SPEC, [*SMALL, *overrides])
    whole = build_run(spec)
    expected = whole.trainer.fit()
    resumed, result = interrupted_then_resumed(spec, stopper, tmp_path)
    assert (result.status, result.reason, result.epochs_run, result.steps) == (
        expected.status, expected.reason, expected.epochs_run, expected.steps)
    assert result.metrics == expected.metrics and result.history == expected.history
    assert_same_record(resumed.record, whole.record)
    final, reference = resumed.model.state_dict(), whole.model.state_dict()
    assert all(np.array_equal(final[k], reference[k]) for k in reference)


def test_early_stopping_fires_after_resume_as_it_would_have(tmp_path):
    spec = load_spec(SPEC, [*SMALL, "training.epochs=40", "early_stopping.patience=2", "optimizer.lr=0.01"])
    expected = build_run(spec).trainer.fit()
    assert expected.reason and expected.reason.startswith("early stopping")  # the case this test is about
    _, result = interrupted_then_resumed(spec, InterruptAt(expected.epochs_run - 3), tmp_path)
    assert result.reason == expected.reason and result.metrics == expected.metrics


def test_checkpoint_file_is_plain_arrays_and_written_atomically(tmp_path):
    spec = load_spec(SPEC, [*SMALL, "training.epochs=1"])
    run = build_run(spec)
    run.trainer.fit()
    save_checkpoint(run, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [CHECKPOINT_FILE, RECORD_FILE]  # no temporary left
    with np.load(tmp_path / CHECKPOINT_FILE, allow_pickle=False) as data:
        keys = set(data.files)
        assert str(data["checkpoint.format"]).startswith("workbench-checkpoint")
        assert json.loads(str(data["trainer.history"]))["train/loss"]
    assert {"trainer.epoch", "trainer.step", "trainer.rng", "optimizer.step", "early_stopping.wait"} <= keys
    assert any(k.startswith("model.dense1.") for k in keys) and any(k.startswith("dropout.") for k in keys)


def test_restore_without_checkpoint_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="no checkpoint"):
        restore(build_run(load_spec(SPEC, SMALL)), tmp_path)


# -- tracked runs and the command line ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    return sqlite_store(tmp_path_factory.mktemp("store"))


@pytest.fixture(scope="module")
def killed(store):
    """A tracked run interrupted at the end of its third epoch."""
    spec = load_spec(SPEC, SMALL)
    with pytest.raises(KeyboardInterrupt):
        execute(spec, tracking_uri=store, hooks=(InterruptAt(2),), tracker_options={"plots": False})
    from mlflow import MlflowClient

    client = MlflowClient(store)
    (run,) = client.search_runs([client.get_experiment_by_name(spec.name).experiment_id])
    return run.info.run_id


def workbench(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "workbench", *args], capture_output=True, text=True,
                          timeout=DEADLINE_S)


@pytest.mark.slow
def test_interrupted_run_is_killed_with_a_checkpoint_then_resumes_to_the_same_result(store, killed):
    from mlflow import MlflowClient

    client = MlflowClient(store)
    before = client.get_run(killed)
    assert before.info.status == "KILLED"
    assert {f.path for f in client.list_artifacts(killed, "checkpoint")} == {
        f"checkpoint/{CHECKPOINT_FILE}", f"checkpoint/{RECORD_FILE}"}

    proc = workbench("run", "--resume", killed, "--tracking-uri", store, "--json", "--quiet", "--no-plots")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    expected = execute(load_spec(SPEC, SMALL), track=False)
    assert out["run_id"] == killed and out["status"] == "FINISHED"
    assert out["metrics"] == {k: v for k, v in expected.metrics.items() if k != "epoch"}

    after = client.get_run(killed)
    assert after.info.status == "FINISHED"
    assert "workbench.status_reason" not in after.data.tags  # the "interrupted" of the first attempt is gone
    assert after.data.metrics["test/accuracy"] == expected.metrics["test/accuracy"]
    epochs = [m.value for m in client.get_metric_history(killed, "epoch")]
    assert epochs == [float(e) for e in range(len(expected.run.trainer.history["epoch"]))]  # each epoch logged once
    steps = sorted(m.step for m in client.get_metric_history(killed, "grad_norm/global"))
    every = expected.run.spec.monitor.log_every
    assert steps == [int(s) for s in expected.run.record.steps if s % every == 0]  # each logged once, none lost
    assert len(client.search_runs([after.info.experiment_id])) == 1  # the same run, no new one
    top = {f.path for f in client.list_artifacts(killed)}
    assert {"model", "stats", "diagnosis.json"} <= top and "plots" not in top  # --no-plots: the rest, no figures

    again = workbench("run", "--resume", killed, "--tracking-uri", store)
    assert again.returncode == 2 and "already finished" in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1


def test_resume_of_a_run_without_checkpoint_names_the_run_and_the_fix(store):
    from mlflow import MlflowClient

    spec = load_spec(SPEC, [*SMALL, "training.epochs=1"])
    with pytest.raises(KeyboardInterrupt):
        execute(spec, tracking_uri=store, hooks=(InterruptMidEpoch(0),), tracker_options={"plots": False})
    client = MlflowClient(store)
    run_id = client.search_runs([client.get_experiment_by_name(spec.name).experiment_id],
                                order_by=["attributes.start_time DESC"])[0].info.run_id
    with pytest.raises(UserError, match=f"{run_id}.*no checkpoint.*workbench run SPEC"):
        execute(resume_run_id=run_id, tracking_uri=store)


@pytest.mark.parametrize(
    "args, message",
    [
        (["run"], "give a SPEC"),
        (["run", str(SPEC), "--resume", "abc"], "--resume"),
        (["run", "--resume", "abc", "--set", "training.epochs=3"], "--resume"),
        (["run", "--resume", "abc", "--no-track"], "--no-track"),
    ],
)
def test_resume_argument_mistakes_exit_2(args, message):
    proc = workbench(*args)
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("interval_s, saves", [(0.0, 8), (3600.0, 2)])
def test_checkpoints_at_first_and_last_epoch_and_at_most_one_per_interval_between(tmp_path, interval_s, saves):
    run = build_run(load_spec(SPEC, [*SMALL, "early_stopping.enabled=false"]))
    hook = Checkpoint(run, tmp_path, interval_s=interval_s)
    run.trainer.register(hook)
    run.trainer.fit()
    assert hook.saved == saves
    with np.load(tmp_path / CHECKPOINT_FILE, allow_pickle=False) as data:
        assert int(data["trainer.epoch"]) == 8  # the last epoch's checkpoint, whatever the interval


@pytest.mark.slow
def test_a_resumed_run_logs_the_same_statistics_as_an_uninterrupted_one(store):
    """Clipping fires on some steps only: the running clip/fraction and every logged statistic of the
    resumed run equal the uninterrupted run's, although the first attempt logged past its checkpoint."""
    from mlflow import MlflowClient

    overrides = [*SMALL, "clipping.mode=global_norm", "clipping.max_norm=1.5", "early_stopping.enabled=false"]
    spec = load_spec(SPEC, overrides)
    whole = execute(spec, tracking_uri=store, tracker_options={"plots": False})
    with pytest.raises(KeyboardInterrupt):
        execute(spec, tracking_uri=store, hooks=(InterruptAt(4),), tracker_options={"plots": False})
    client = MlflowClient(store)
    experiment = client.get_experiment_by_name(spec.name).experiment_id
    killed = client.search_runs([experiment], filter_string="attributes.status = 'KILLED'",
                                order_by=["attributes.start_time DESC"])[0].info.run_id
    resumed = execute(resume_run_id=killed, tracking_uri=store, tracker_options={"plots": False})
    assert resumed.status == "FINISHED"

    def history(run_id, key):
        return [(m.step, m.value) for m in sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)]

    fractions = [v for _, v in history(whole.run_id, "clip/fraction")]
    assert 0.0 < fractions[-1] < 1.0  # some steps clipped, not all: a miscount would show
    for key in ("clip/fraction", "grad_norm/global", "update_ratio/dense1", "train/loss", "val/loss", "epoch"):
        assert history(killed, key) == history(whole.run_id, key), key
