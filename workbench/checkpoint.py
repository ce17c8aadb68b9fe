"""Checkpoints: everything a run needs to continue exactly where it stopped.

    hook = Checkpoint(run, "ckpt/")        # ckpt/checkpoint.npz + ckpt/record.npz at epoch ends (<= 1 per 10 s)
    run.trainer.register(hook)
    ...
    fresh = build_run(spec)                 # the same spec
    restore(fresh, "ckpt/")                 # weights, optimizer, RNGs, early stopping, record, epoch/step/history
    fresh.trainer.fit()                     # the remaining epochs; ends as the uninterrupted run would

`checkpoint.npz` (read with allow_pickle=False; JSON as numpy unicode scalars) holds
`model.*` (model.state_dict()), `optimizer.*` (optimizer.state_dict()), `trainer.*`
(Trainer.state_dict(), with `trainer.epoch` the NEXT epoch to run), `checkpoint.logs`
(the last epoch's logs), `early_stopping.*`, `clipping.*` (step counters) and
`dropout.<layer>` (each Dropout layer's RNG state). The statistics record is saved beside
it as `record.npz` (`StatsRecord.save`). Both files are written to temporary names and
moved into place with `os.replace`, so an interrupt never leaves a half-written checkpoint.

This module imports neither mlflow nor optuna.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import numpy as np

from workbench.errors import UserError
from workbench.signals import interrupts_deferred
from workbench.training import Hook
from workbench.training.hooks import hook_priority

FORMAT = "workbench-checkpoint-1"
CHECKPOINT_INTERVAL_S = 10.0  # at most one checkpoint per this many seconds between the first and the last
CHECKPOINT_FILE, RECORD_FILE = "checkpoint.npz", "record.npz"


def _dropout_layers(model) -> list:
    from workbench.nn.dropout import Dropout

    return [layer for layer, _ in model.walk() if isinstance(layer, Dropout)]


def _hook_of(run, cls):
    return next((hook for hook in run.hooks if isinstance(hook, cls)), None)


def _json(value) -> np.ndarray:
    return np.array(json.dumps(value))


def checkpoint_state(run) -> dict[str, np.ndarray]:
    """The arrays of `checkpoint.npz` for `run` as it stands at the end of an epoch."""
    from workbench.monitor import EarlyStopping, GradientClipping

    trainer = run.trainer
    state: dict[str, np.ndarray] = {"checkpoint.format": np.array(FORMAT)}
    state.update({f"model.{k}": v for k, v in run.model.state_dict().items()})
    state.update({f"optimizer.{k}": v for k, v in trainer.optimizer.state_dict().items()})
    state.update(trainer.state_dict())
    # written in on_epoch_end, before the trainer moves on: the next epoch to run is this one + 1
    state["trainer.epoch"] = np.array(trainer.epoch + 1)
    state["checkpoint.logs"] = _json(trainer.logs)
    es = _hook_of(run, EarlyStopping)
    if es is not None:
        state.update(es.state_dict())
    clipping = _hook_of(run, GradientClipping)
    if clipping is not None:
        state["clipping.steps"] = np.array(clipping.steps, np.int64)
        state["clipping.clipped_steps"] = np.array(clipping.clipped_steps, np.int64)
    for layer in _dropout_layers(run.model):
        state[f"dropout.{layer.name}"] = _json(layer.rng.bit_generator.state)
    record = run.record
    state["checkpoint.record_rows"] = np.array(-1 if record is None else len(record), np.int64)
    return state


def save_checkpoint(run, directory: str | Path) -> Path:
    """Write `checkpoint.npz` (and `record.npz`) for `run` into `directory`, atomically; returns the npz path."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = checkpoint_state(run)
    target = directory / CHECKPOINT_FILE
    tmp = directory / f".{CHECKPOINT_FILE}.tmp"
    with open(tmp, "wb") as f:
        np.savez(f, **state)
    record = run.record
    record_tmp = directory / f".{RECORD_FILE}.tmp"
    if record is not None:
        record.save(record_tmp)
    with interrupts_deferred():  # both files are replaced, or neither: an interrupt waits for the second
        if record is not None:
            os.replace(record_tmp, directory / RECORD_FILE)
        os.replace(tmp, target)
    return target


class Checkpoint(Hook):
    """Saves a checkpoint of `run` into `directory` at epoch ends: the first, then at most one per
    `interval_s` seconds, and the last (the final epoch, or the one where a stop was asked).

    A save costs about 10 ms on a small model, as much as a whole epoch of one: at most one per
    interval keeps that cost off short epochs, and bounds the work an interrupt loses to about
    `interval_s` seconds (a resumed run ends the same from any checkpoint). `interval_s=0`: every epoch.
    """

    priority = hook_priority("checkpoint")

    def __init__(self, run, directory: str | Path, interval_s: float = CHECKPOINT_INTERVAL_S) -> None:
        self.run = run
        self.directory = Path(directory)
        self.interval_s = float(interval_s)
        self.saved = 0
        self._last = -math.inf

    def on_epoch_end(self, trainer, logs) -> None:
        now = time.monotonic()
        last_epoch = trainer.epoch + 1 >= trainer.epochs or trainer.stop_requested
        if self.saved and not last_epoch and now - self._last < self.interval_s:
            return
        save_checkpoint(self.run, self.directory)
        self.saved += 1
        self._last = now


def has_checkpoint(directory: str | Path) -> bool:
    return (Path(directory) / CHECKPOINT_FILE).is_file()


def _strip(state: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    return {key[len(prefix):]: value for key, value in state.items() if key.startswith(prefix)}


def restore(run, directory: str | Path) -> dict[str, np.ndarray]:
    """Load the checkpoint in `directory` into `run`, a fresh `build_run` of the same spec, before `fit()`."""
    from workbench.monitor import EarlyStopping, GradientClipping, load_record

    directory = Path(directory)
    path = directory / CHECKPOINT_FILE
    if not path.is_file():
        raise UserError(f"no checkpoint at {path}: it is written at the end of each epoch of a tracked run")
    with np.load(path, allow_pickle=False) as data:
        state = {key: data[key] for key in data.files}
    if str(state.get("checkpoint.format", "")) != FORMAT:
        raise UserError(f"{path} is not a workbench checkpoint (expected format {FORMAT})")
    trainer = run.trainer
    run.model.load_state_dict(_strip(state, "model."))
    trainer.optimizer.load_state_dict(_strip(state, "optimizer."))
    trainer.load_state_dict({k: v for k, v in state.items() if k.startswith("trainer.")})
    trainer.logs = json.loads(str(state["checkpoint.logs"]))
    es = _hook_of(run, EarlyStopping)
    if es is not None and "early_stopping.wait" in state:
        es.load_state_dict({k: v for k, v in state.items() if k.startswith("early_stopping.")})
    clipping = _hook_of(run, GradientClipping)
    if clipping is not None and "clipping.steps" in state:
        clipping.steps = int(state["clipping.steps"])
        clipping.clipped_steps = int(state["clipping.clipped_steps"])
    for layer in _dropout_layers(run.model):
        key = f"dropout.{layer.name}"
        if key not in state:
            raise UserError(f"checkpoint {path} has no RNG state for dropout layer {layer.name}: "
                            "it was made from a different model")
        layer.rng.bit_generator.state = json.loads(str(state[key]))
    rows = int(state["checkpoint.record_rows"])
    if rows >= 0 and run.monitor is not None:
        record = load_record(directory / RECORD_FILE)
        if len(record) != rows:
            raise UserError(f"{directory / RECORD_FILE} has {len(record)} rows, the checkpoint expects {rows}: "
                            "the checkpoint folder is inconsistent")
        run.monitor.record = record
    return state
