"""A progress line per epoch on stderr, for people watching a run in a terminal."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from workbench.training import Hook
from workbench.training.hooks import hook_priority


class ProgressPrinter(Hook):
    """Prints `epoch 3/100  train/loss 0.1234  val/loss ...  (1.2 s)` after each epoch."""

    priority = hook_priority("progress")

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr

    def on_train_begin(self, trainer) -> None:
        self._start = self._epoch_start = time.perf_counter()

    def on_epoch_begin(self, trainer) -> None:
        self._epoch_start = time.perf_counter()

    def on_epoch_end(self, trainer, logs) -> None:
        values = "  ".join(f"{k} {v:.4f}" for k, v in logs.items() if k != "epoch")
        seconds = time.perf_counter() - self._epoch_start
        print(f"epoch {trainer.epoch + 1}/{trainer.epochs}  {values}  ({seconds:.1f} s)", file=self.stream, flush=True)

    def on_train_end(self, trainer) -> None:
        seconds = time.perf_counter() - self._start
        reason = f": {trainer.stop_reason}" if trainer.stop_reason else ""
        print(f"{trainer.status.lower()} after {trainer.step} steps in {seconds:.1f} s{reason}", file=self.stream, flush=True)
