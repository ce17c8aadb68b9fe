"""The study workers' fork server is forked from a fresh main process (warm: no imports of its own), and is
the usual multiprocessing one anywhere a store may be open (workbench/studies/fork_server.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from support import DEADLINE_S, sqlite_store

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fork servers and /proc: Linux")

# A worker target that proves it ran in a forked, warm process: its exit code says whether Optuna and the
# module asked for beside the workers' own (`wave`, which nothing else imports: as a study asks for its data's)
# were already imported when it started (by the server's parent, never by the worker), and MLflow's map of the
# installed packages made (for the first model a worker saves). It starts a fork server of its own first: no
# lock of multiprocessing's is left held in a forked server's workers.
CHECK = """
import multiprocessing, sys
from multiprocessing import forkserver
from workbench.studies.fork_server import fork_server_from_here

def target():
    forkserver.ensure_running()
    from mlflow.utils import requirements_utils  # MLflow's map of installed packages, made before the fork
    mapped = getattr(requirements_utils, "_MODULES_TO_PACKAGES", "renamed") is not None
    sys.exit(7 if "optuna" in sys.modules and "wave" in sys.modules and mapped else 3)

if __name__ == "__main__":
    {before}
    print(fork_server_from_here(("wave",)))
    process = multiprocessing.get_context("forkserver").Process(target=target)
    process.start()
    process.join({deadline})
    print(process.exitcode)
"""


def run_check(tmp_path: Path, before: str) -> list[str]:
    script = tmp_path / "check.py"
    script.write_text(textwrap.dedent(CHECK.format(before=before, deadline=DEADLINE_S)))
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True,
                          timeout=DEADLINE_S)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.split()


@pytest.mark.slow
def test_a_fresh_process_forks_a_warm_server_whose_workers_start_and_report_their_exit_code(tmp_path):
    assert run_check(tmp_path, "pass") == ["True", "7"]


@pytest.mark.parametrize("before", ["import sqlalchemy",  # as MLflow's or Optuna's SQL store would have
                                    "import threading, time; threading.Thread(target=time.sleep, args=(30,), "
                                    "daemon=True).start()"],
                         ids=["sqlalchemy loaded", "another thread"])
def test_a_process_that_may_hold_a_store_or_runs_threads_starts_the_usual_server(tmp_path, before):
    assert run_check(tmp_path, before) == ["False", "3"]  # the usual server did not import optuna


STUDY = """
import os
from pathlib import Path

from workbench.studies import Float, Study
from workbench.training import Hook


class ParentOfWorker(Hook):
    def on_train_begin(self, trainer):
        parent = os.getppid()
        command = Path(f"/proc/{parent}/cmdline").read_bytes().replace(b"\\0", b" ").decode()
        (Path(os.environ["PARENTS"]) / str(os.getpid())).write_text(command)


study = Study(
    name="warm", seeds=1, n_trials=2, pruner="none", sampler="random", trial_plots=False,
    trial_hooks=(ParentOfWorker,),
    base={"data": {"source": "moons", "n_samples": 100}, "model": {"hidden": [4]}, "training": {"epochs": 1}},
    space={"optimizer.lr": Float(1e-3, 1e-1, log=True)},
)
if __name__ == "__main__":
    study.main()
"""


@pytest.mark.slow
def test_a_study_scripts_workers_come_from_a_server_forked_from_the_script(tmp_path):
    script, parents = tmp_path / "study_script.py", tmp_path / "parents"
    script.write_text(textwrap.dedent(STUDY))
    parents.mkdir()
    command = [sys.executable, str(script), "--storage", str(tmp_path / "optuna.journal"),
               "--tracking-uri", sqlite_store(tmp_path), "--workers", "2", "--no-plots"]
    env = {**os.environ, "PARENTS": str(parents)}
    env.pop("MLFLOW_TRACKING_URI", None)
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=DEADLINE_S, env=env)
    assert done.returncode == 0, done.stderr[-5000:]
    seen = {p.read_text() for p in parents.iterdir()}  # one per worker that ran a trial
    assert seen and all("study_script.py" in command and "multiprocessing.forkserver" not in command
                        for command in seen), seen


def test_a_study_asks_its_workers_server_for_what_its_data_needs():
    """scikit-learn costs each worker 2 s to import: the server imports it once for the sets only it reads; the
    toy shapes and the digits need nothing; a tuned source counts with each of its choices."""
    from workbench.studies import Categorical, Study

    def study(source: str, space: dict) -> Study:
        return Study(name="s", base={"data": {"source": source}}, space=space)

    assert study("iris", {}).data_imports() == ("sklearn.datasets",)
    assert study("moons", {}).data_imports() == ()
    assert study("digits", {}).data_imports() == ()  # read from scikit-learn's file without importing it
    assert study("moons", {"data.source": Categorical(["moons", "wine"])}).data_imports() == ("sklearn.datasets",)
