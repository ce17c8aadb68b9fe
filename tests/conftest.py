"""Shared fixtures (tiny data sets that train in milliseconds) and how the suite runs.

- In parallel: pyproject's addopts give `--numprocesses=auto`, one pytest-xdist worker per core this
  process may use; `--dist loadgroup` keeps the tests of an `xdist_group` (a module that shares a server or a
  trained run) on one worker. `-n 0` or `-p no:xdist` runs everything in this process.
- Slow tests start first, so that the last minute is not one long test on one core.
- BLAS threads: the workers share the cores, cores // workers BLAS threads each (1 with `-n auto`), unless
  the environment sets a count. OpenBLAS threads that outnumber the cores spin against each other: two
  workers at 2 threads each on 2 cores trained a small recurrent net 12 times slower than at 1 thread each
  (8 s against 0.65 s), which made the whole suite more than twice as slow.
- `numerics`: the tests of gradients, determinism, optimizers, the monitor and diagnosis, which .ci/run
  runs a second time in one process with BLAS on every core (`-m numerics -n 0`): a result that holds
  for one thread count only shows.
"""

from __future__ import annotations

import functools
import importlib
import os
import pkgutil
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

from workbench.machine import BLAS_THREAD_VARIABLES, cores


def _share_the_cores_between_workers() -> None:
    """In a pytest-xdist worker: cores // workers BLAS threads, for this process (set before numpy loads
    BLAS) and the processes its tests start (the variables), unless the environment chose already."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
    if workers < 1 or any(key in os.environ for key in BLAS_THREAD_VARIABLES):
        return
    threads = str(max(1, cores() // workers))
    for key in BLAS_THREAD_VARIABLES:
        os.environ[key] = threads
    if "numpy" in sys.modules:  # a plugin loaded it (and BLAS) first
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=int(threads), user_api="blas")


_share_the_cores_between_workers()

import numpy as np  # noqa: E402 - after the thread count is set
import pytest  # noqa: E402
from hypothesis import is_hypothesis_test, settings  # noqa: E402

import workbench  # noqa: E402

# Property tests draw the same examples on every run (a seed derived from each test): a red CI is then
# reproducible, never a roll of the dice. WORKBENCH_HYPOTHESIS=explore draws new ones to hunt for bugs.
settings.register_profile("repeatable", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("WORKBENCH_HYPOTHESIS", "repeatable"))

REPO = Path(__file__).resolve().parents[1]
MNIST_DIR = REPO.parent / "shared" / "data" / "mnist"

os.environ.setdefault("MPLBACKEND", "Agg")

# A suite started in the background of a non-interactive shell (`cmd &`, `nohup`, some CI runners) inherits
# SIGINT ignored, and so would every process it starts: the tests that press Ctrl-C on a run or a study
# would wait for an end that never comes. Python handles SIGINT again here (a handler, which exec resets to
# the default in the processes the tests start, where Python installs its own).
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

# Set by workbench when it logs over HTTP (`workbench.tracking.offline.bound_http_retries`): restored
# after each test so that no test depends on the order the others ran in.
HTTP_RETRY_VARIABLES = ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR",
                        "MLFLOW_HTTP_REQUEST_TIMEOUT")


# Test files (tests/test_<name>.py) of gradients, determinism, optimizers, the monitor and diagnosis (and any
# test_*gradients*.py or test_*monitor*.py).
NUMERICS = ("gradients", "determinism", "optim", "monitor", "clipping", "diagnose")
# Modules whose tests share an expensive module fixture (a server, a store with trained runs): one worker each.
SHARED_FIXTURES = ("tracking", "tracking_server", "resume", "determinism", "cli_properties", "diagnose_cli")


def pytest_addoption(parser, pluginmanager):
    """Without pytest-xdist (`-p no:xdist`), addopts' --numprocesses and --dist are accepted: one process."""
    if not pluginmanager.has_plugin("xdist"):
        group = parser.getgroup("xdist", "distributed testing (pytest-xdist is not loaded: one process)")
        group.addoption("--numprocesses", dest="numprocesses", default=None, help="ignored")
        group.addoption("--dist", dest="dist", default="no", help="ignored")


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_auto_num_workers(config):
    """`-n auto`: one worker per core that this process may run on (its CPU affinity)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups
def pytest_collection_modifyitems(config, items):
    for item in items:
        name = item.path.stem.removeprefix("test_")
        if name in NUMERICS or "gradients" in name or "monitor" in name:
            item.add_marker(pytest.mark.numerics)
        if name in SHARED_FIXTURES:
            item.add_marker(pytest.mark.xdist_group(name))
    # Modules with slow tests first (a module's tests stay together: its fixtures are made once).
    slow_modules = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow_modules)


# Hypothesis also draws constants found in the local modules loaded so far (the workbench's and any script of
# this repository; not the tests'), and the set only grows as tests import more. So a property test's examples
# depended on what ran before it in the same process: test_cli_never_crashes trained 3% of its examples as
# whole tracked runs alone and 11% after three other modules (15 s against 70-85 s). Before the first property
# test of a process every workbench module is loaded, and no other module of the repository may be: the pool,
# and with it the examples, are the same alone, in the suite and in any order.
NOT_LOADED = {"workbench.__main__",  # the package's entry point: it runs the CLI
              "workbench.studies.worker_preload"}  # the study fork server's: it makes its process ignore Ctrl-C


@functools.cache  # once per process
def load_every_workbench_module() -> None:
    for module in pkgutil.walk_packages(workbench.__path__, "workbench."):
        if module.name not in NOT_LOADED:
            importlib.import_module(module.name)


def stray_local_modules() -> list[str]:
    """Loaded modules of this repository outside the package, the tests and a virtual environment in it (a
    module whose file is a bare name, as torch.ops's, has no source for Hypothesis to read)."""
    mine = [REPO / "workbench", REPO / "tests", Path(sys.prefix).resolve()]
    return sorted(name for name, module in list(sys.modules.items())
                  if (path := getattr(module, "__file__", None)) and os.path.isabs(path)
                  and (path := Path(path).resolve()).is_relative_to(REPO)
                  and not any(path.is_relative_to(folder) for folder in mine))


def pytest_runtest_setup(item):
    if isinstance(item, pytest.Function) and is_hypothesis_test(item.obj):
        load_every_workbench_module()
        stray = stray_local_modules()
        assert not stray, (f"modules {stray} are loaded: Hypothesis would draw their constants in this process only; "
                           "take them out of sys.modules after use (see tests/test_architecture_experiments.py's `arch`)")


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


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory) -> str:
    """The URL of an `mlflow server` on 127.0.0.1 (SQLite backend, artifacts proxied into a temporary folder),
    shared by the tests that need a healthy server and nothing else of it (`support.SHARED_SERVER`)."""
    from support import start_mlflow_server, stop_group

    proc, url = start_mlflow_server(tmp_path_factory.mktemp("shared-mlflow-server"))
    try:
        yield url
    finally:
        stop_group(proc)
