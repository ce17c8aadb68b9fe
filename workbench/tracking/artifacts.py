"""A run's artifacts: the spec, the full statistics record, the plots and the reloadable model.

    spec.toml              the validated spec (overrides applied): `load_spec` reproduces the run
    stats/record.npz       the full-resolution statistics record (`workbench.monitor.load_record`)
    plots/*.png            the figures of `workbench.plots.save_run_plots`
    model/weights.npz      weights and architecture (`Sequential.save`), with model/spec.toml
    diagnosis.json         written by diagnosis (`RunTracker.set_verdict`)
    checkpoint/            the last epoch end's checkpoint.npz + record.npz (`workbench.checkpoint`)

Each writer stages its files in a temporary folder and uploads the folder in one call.
"""

from __future__ import annotations

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


def log_plots(client, run_id: str, *, record, history, gradients=None) -> int:
    """The run's figures under `plots/`; returns how many (0 while `workbench.plots` is absent)."""
    try:
        from workbench.plots import save_run_plots
    except ImportError:
        return 0
    with tempfile.TemporaryDirectory(prefix="workbench-plots-") as tmp:
        written = save_run_plots(tmp, record=record, history=history, gradients=gradients)
        if written:
            client.log_artifacts(run_id, tmp, PLOTS_DIR)
        return len(written)


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
