"""A run's artifacts: the spec, the full statistics record, the plots and the reloadable model.

    spec.toml              the validated spec (overrides applied): `load_spec` reproduces the run
    stats/record.npz       the full-resolution statistics record (`workbench.monitor.load_record`)
    plots/*.png            the figures of `workbench.plots.save_run_plots`
    model/                 an MLflow Model (`workbench.tracking.pyfunc`): MLmodel, weights.npz (`Sequential.save`),
                           spec.toml, the input example and environment files
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
    """The run's plots, drawn in forked child processes (Linux; the plots split between `CHILDREN`) while
    the caller uploads the rest and diagnoses: drawing takes longer than all of that (1-2 s). `finish`
    waits for the children, draws itself what a failed child did not (or everything, without fork),
    and uploads `plots/`."""

    CHILDREN = 2  # this machine's cores: the parent's diagnosis figure runs beside them
    TIMEOUT_S = 60.0  # then a child is taken as hung (a lock held at fork time) and the parent draws

    def __init__(self, *, record, history, gradients=None) -> None:
        self.inputs = {"record": record, "history": history, "gradients": gradients}
        self.folder = Path(tempfile.mkdtemp(prefix="workbench-plots-"))
        self.processes: list = []  # (process or None, the plot names it draws)
        names = _plot_names()
        shares = [names[i :: self.CHILDREN] for i in range(self.CHILDREN)]
        forking = sys.platform == "linux" and not multiprocessing.current_process().daemon
        for share in shares:
            process = None
            if forking and share:
                try:
                    process = multiprocessing.get_context("fork").Process(
                        target=_draw_in_child, args=(self.folder, self.inputs, share), name="workbench-plots",
                        daemon=True)
                    process.start()
                except Exception:  # noqa: BLE001 - no fork here: drawn in finish()
                    process = None
            self.processes.append((process, share))

    def finish(self, client, run_id: str) -> int:
        """Upload the plots (drawn by the children, or here); returns how many."""
        try:
            for process, share in self.processes:
                drawn = False
                if process is not None:
                    process.join(self.TIMEOUT_S)
                    _stop(process)
                    drawn = process.exitcode == 0
                if not drawn and share:
                    _save_plots(self.folder, self.inputs, share)
            files = sorted(self.folder.glob("*.png"))
            if files:
                client.log_artifacts(run_id, str(self.folder), PLOTS_DIR)
            return len(files)
        finally:
            self.close()

    def close(self) -> None:
        """Stop the children still running and remove the folder (saving abandoned, or done)."""
        for process, _ in self.processes:
            _stop(process)
        shutil.rmtree(self.folder, ignore_errors=True)


def _stop(process) -> None:
    if process is not None and process.is_alive():
        process.kill()
        process.join()


def _plot_names() -> list[str]:
    try:
        from workbench.plots.run_plots import PLOT_FILES
    except ImportError:
        return []
    return list(PLOT_FILES)


def _save_plots(folder: Path, inputs: dict, names) -> bool:
    try:
        from workbench.plots import save_run_plots
    except ImportError:
        return False
    save_run_plots(folder, names=names, **inputs)
    return True


def _draw_in_child(folder: Path, inputs: dict, names) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the parent decides
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not the parent's handler: a SIGTERM ends the child
    _save_plots(folder, inputs, names)


def log_model(client, run_id: str, model, spec, example=None) -> None:
    """`model/` as an MLflow Model (python_function flavor, signature and input example from `example` rows)
    holding `weights.npz` (weights + architecture) and `spec.toml`: what `load_model` reads too."""
    from workbench.tracking.pyfunc import save_model

    with tempfile.TemporaryDirectory(prefix="workbench-model-") as tmp:
        save_model(Path(tmp) / MODEL_DIR, model, spec.to_toml(), example)
        client.log_artifacts(run_id, str(Path(tmp) / MODEL_DIR), MODEL_DIR)


def log_diagnosis(client, run_id: str, diagnosis: dict) -> None:
    client.log_dict(run_id, diagnosis, DIAGNOSIS_FILE)


def log_checkpoint(client, run_id: str, directory) -> None:
    """The files of a checkpoint folder (temporary names excluded) as `checkpoint/`."""
    with tempfile.TemporaryDirectory(prefix="workbench-checkpoint-upload-") as tmp:
        for path in Path(directory).iterdir():
            if path.is_file() and not path.name.startswith("."):
                (Path(tmp) / path.name).write_bytes(path.read_bytes())
        client.log_artifacts(run_id, tmp, CHECKPOINT_DIR)
