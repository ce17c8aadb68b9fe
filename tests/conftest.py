"""Shared fixtures: tiny data sets and trainers that run in milliseconds."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from hypothesis import settings

# Property tests draw the same examples on every run (a seed derived from each test): a red CI is then
# reproducible, never a roll of the dice. WORKBENCH_HYPOTHESIS=explore draws new ones to hunt for bugs.
settings.register_profile("repeatable", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("WORKBENCH_HYPOTHESIS", "repeatable"))

REPO = Path(__file__).resolve().parents[1]
MNIST_DIR = REPO.parent / "shared" / "data" / "mnist"

os.environ.setdefault("MPLBACKEND", "Agg")

# Set by workbench when it logs over HTTP (`workbench.tracking.offline.bound_http_retries`): restored
# after each test so that no test depends on the order the others ran in.
HTTP_RETRY_VARIABLES = ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR",
                        "MLFLOW_HTTP_REQUEST_TIMEOUT")


@pytest.fixture(autouse=True)
def _restore_http_retry_settings():
    saved = {key: os.environ.get(key) for key in HTTP_RETRY_VARIABLES}
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@dataclass
class ArrayData:
    """A minimal data object with the fields the Trainer reads."""

    X_train: np.ndarray
    y_train: np.ndarray
    X_val: np.ndarray
    y_val: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    task: str = "classification"
    name: str = "blobs"


@pytest.fixture
def blobs() -> ArrayData:
    """Three separable Gaussian blobs in 5 dimensions, float32."""
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((3, 5)) * 3
    y = rng.integers(0, 3, 300)
    X = (centers[y] + rng.standard_normal((300, 5))).astype(np.float32)
    return ArrayData(X[:200], y[:200], X[200:250], y[200:250], X[250:], y[250:])


@pytest.fixture
def repo() -> Path:
    return REPO
