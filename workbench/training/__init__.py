"""The training loop and its hook API (imports neither mlflow nor optuna)."""

from workbench.training.hooks import HOOK_POINTS, Hook, RemovableHandle
from workbench.training.trainer import FAILED, FINISHED, KILLED, Trainer, TrainResult

__all__ = ["HOOK_POINTS", "Hook", "RemovableHandle", "Trainer", "TrainResult", "FINISHED", "FAILED", "KILLED"]
