"""A run's artifacts: the spec, the full statistics record, the plots and the reloadable model.

    spec.toml              the validated spec (overrides applied): `load_spec` reproduces the run
    stats/record.npz       the full-resolution statistics record (`workbench.monitor.load_record`)
    plots/*.png            the figures of `workbench.plots.save_run_plots`
    model/weights.npz      weights and architecture (`Sequential.save`), with model/spec.toml
    diagnosis.json         written by diagnosis (`RunTracker.set_verdict`)
    checkpoint/            the last epoch end's checkpoint.npz + record.npz (`workbench.checkpoint`)

Each writer stages its files in a temporary folder and uploads the folder in one call.
`PlotJob` draws the plots in a forked process while the run's other artifacts upload.
"""

from __future__ import annotations

import multiprocessing
import shutil
import signal
import sys
import tempfile
from pathlib import Path

SPEC_FILE = "spec.toml"
STATS_DIR, STATS_FILE = "stats", "record.npz"
PLOTS_DIR = "plots"
MODEL_DIR, WEIGHTS_FILE = "model", "weights.npz"
DIAGNOSIS_FILE = "diagnosis.json"
CHECKPOINT_DIR = "checkpoint"


def log_spec(client, run_id: str, spec) -> None:
    client.log_text(run_id, spec.to_toml(), SPEC_FILE)


def log_record(client, run_id: str, record) -> None:
    """The statistics record as `stats/record.npz`."""
    with tempfile.TemporaryDirectory(prefix="workbench-stats-") as tmp:
        record.save(Path(tmp) / STATS_FILE)
        client.log_artifacts(run_id, tmp, STATS_DIR)


class PlotJob:
    """The run's plots, drawn in a forked child process (Linux) while the caller uploads the rest and
    diagnoses: drawing takes about as long as all of that (1-2 s). `finish` waits for the child,
    draws the plots itself if the child failed or fork is not available, and uploads `plots/`."""

    TIMEOUT_S = 60.0  # then the child is taken as hung (a lock held at fork time) and the parent draws

    def __init__(self, *, record, history, gradients=None) -> None:
        self.inputs = {"record": record, "history": history, "gradients": gradients}
        self.folder = Path(tempfile.mkdtemp(prefix="workbench-plots-"))
        self.process = None
        if sys.platform == "linux" and not multiprocessing.current_process().daemon:
            try:
                self.process = multiprocessing.get_context("fork").Process(
                    target=_draw_in_child, args=(self.folder, self.inputs), name="workbench-plots", daemon=True)
                self.process.start()
            except Exception:  # noqa: BLE001 - no fork here: draw in finish()
                self.process = None

    def finish(self, client, run_id: str) -> int:
        """Upload the plots (drawn by the child, or here); returns how many."""
        try:
            drawn = False
            if self.process is not None:
                self.process.join(self.TIMEOUT_S)
                self._stop_child()
                drawn = self.process.exitcode == 0
            if not drawn:
                if not _save_plots(self.folder, self.inputs):
                    return 0
            files = sorted(self.folder.glob("*.png"))
            if files:
                client.log_artifacts(run_id, str(self.folder), PLOTS_DIR)
            return len(files)
        finally:
            self.close()

    def close(self) -> None:
        """Stop the child if it still runs and remove the folder (saving abandoned, or done)."""
        self._stop_child()
        shutil.rmtree(self.folder, ignore_errors=True)

    def _stop_child(self) -> None:
        if self.process is not None and self.process.is_alive():
            self.process.kill()
            self.process.join()


def _save_plots(folder: Path, inputs: dict) -> bool:
    try:
        from workbench.plots import save_run_plots
    except ImportError:
        return False
    save_run_plots(folder, **inputs)
    return True


def _draw_in_child(folder: Path, inputs: dict) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the parent decides
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not the parent's handler: a SIGTERM ends the child
    _save_plots(folder, inputs)


def log_model(client, run_id: str, model, spec) -> None:
    """`model/weights.npz` (weights + architecture) and `model/spec.toml`: what `load_model` reads."""
    with tempfile.TemporaryDirectory(prefix="workbench-model-") as tmp:
        model.save(Path(tmp) / WEIGHTS_FILE)
        (Path(tmp) / SPEC_FILE).write_text(spec.to_toml(), encoding="utf-8")
        client.log_artifacts(run_id, tmp, MODEL_DIR)


def log_diagnosis(client, run_id: str, diagnosis: dict) -> None:
    client.log_dict(run_id, diagnosis, DIAGNOSIS_FILE)


def log_checkpoint(client, run_id: str, directory) -> None:
    """The files of a checkpoint folder (temporary names excluded) as `checkpoint/`."""
    with tempfile.TemporaryDirectory(prefix="workbench-checkpoint-upload-") as tmp:
        for path in Path(directory).iterdir():
            if path.is_file() and not path.name.startswith("."):
                (Path(tmp) / path.name).write_bytes(path.read_bytes())
        client.log_artifacts(run_id, tmp, CHECKPOINT_DIR)
