"""The operations of a run's journal, applied to an MLflow store: by the tracking agent while the run trains,
by `workbench sync` after an outage, by the in-process tracker as it goes.

A journal line is one JSON operation; `files` names the folder (inside the journal's) holding its files.

    create_run      experiment (+ note), tags, run name (else "<spec name> <short id>"), params, spec.toml,
                    the dataset input and the first description
    log_batch       metrics as [key, value, timestamp, step], params, tags
    metric_block    keys, steps, values (rows x keys), timestamp: the compact form of per-step statistics
    set_tag, delete_tag, update_run, set_terminated, log_artifacts (files -> artifact_path)
    log_inputs      datasets (`workbench.tracking.datasets.dataset_facts`)
    log_model       weights.npz, spec.toml, example.npy -> the MLflow Model `model/` (`workbench.tracking.pyfunc`)
    log_plots       history.json, gradients.npz, diagnosis.json + the record in folder `record_op` -> `plots/*.png`
    register_model  name, tags -> a new version of a registered model from `model/`

Replaying an operation twice does no harm (MLflow drops duplicate metric rows; tags and artifacts are
overwritten with the same content), so a replay cut short may go on from the last operation it knows done.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
from collections.abc import Iterable
from pathlib import Path

from workbench.tracking.diagnosis import FIGURE_FILE as DIAGNOSIS_FIGURE
from workbench.tracking.offline import operation_values

MAX_BATCH_METRICS, MAX_BATCH_PARAMS = 1000, 100  # MLflow's limits on one log_batch call
# Consecutive metric blocks sent as one log_batch operation: a store's transaction costs about as much as a
# thousand rows (on SQLite, 1,000-row calls log 4,000 values 4 times faster than 20-row calls).
MERGED_METRICS = 5000
RUN_NAME_TAG, NOTE_TAG = "mlflow.runName", "mlflow.note.content"
CREATION_TAG = "workbench.creation_id"  # one per create_run operation: a replay finds the run it made
RECORD_FILE = "record.npz"


class Replayer:
    """Applies journal operations to run `run_id` through `client` (an `MlflowClient`, or a `ResilientClient`)."""

    def __init__(self, client, run_id: str | None, directory: Path | None) -> None:
        self.client, self.run_id, self.directory = client, run_id, Path(directory) if directory else None
        self.registered = None  # the ModelVersion of the last `register_model`

    def files(self, op: dict) -> Path:
        return self.directory / op["files"]

    def apply(self, op: dict) -> None:
        kind = op["op"]
        handler = getattr(self, f"_{kind}", None)
        if handler is None:
            raise ValueError(f"unknown operation {kind!r} in {self.directory}")
        handler(op)

    # -- the run ---------------------------------------------------------------------------------
    def _create_run(self, op: dict) -> None:
        # A replay (an upload after the agent died, `workbench sync`) may find the run made already: the agent
        # can be killed between the store's insert and writing the run's id down. That run is taken (and its
        # setup done again where it was cut short), not a second one made beside it that stays RUNNING.
        found = created_run(self.client, op)
        if found is None:
            self.run_id, _ = create_run(self.client, op)
            return
        self.run_id = found
        with contextlib.suppress(Exception):
            _set_up_run(self.client, found, op)

    def _log_batch(self, op: dict) -> None:
        from mlflow.entities import Metric, Param, RunTag

        metrics = [Metric(k, v, t, s) for k, v, t, s in op.get("metrics", ())]
        params = [Param(k, v) for k, v in op.get("params", ())]
        tags = [RunTag(k, v) for k, v in op.get("tags", ())]
        log_batch(self.client, self.run_id, metrics, params, tags)

    def _metric_block(self, op: dict) -> None:
        self._log_batch(merged_metric_blocks([op]))

    def _set_tag(self, op: dict) -> None:
        self.client.set_tag(self.run_id, op["key"], op["value"])

    def _delete_tag(self, op: dict) -> None:
        from mlflow.exceptions import MlflowException

        try:
            self.client.delete_tag(self.run_id, op["key"])
        except MlflowException as exc:  # already absent: the aim is reached
            if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise

    def _update_run(self, op: dict) -> None:
        self.client.update_run(self.run_id, status=op.get("status"), name=op.get("name"))

    def _set_terminated(self, op: dict) -> None:
        self.client.set_terminated(self.run_id, status=op.get("status"), end_time=op.get("end_time"))

    def _log_artifacts(self, op: dict) -> None:
        self.client.log_artifacts(self.run_id, str(self.files(op)), op.get("artifact_path"))

    def _log_inputs(self, op: dict) -> None:
        from workbench.tracking.datasets import log_datasets

        log_datasets(self.client, self.run_id, op["datasets"])

    # -- what is made from files ---------------------------------------------------------------------
    def _log_model(self, op: dict) -> None:
        log_model_files(self.client, self.run_id, self.files(op))

    def _prepare_model(self, op: dict) -> None:
        prepare_model_files(self.files(op))

    def _log_plots(self, op: dict) -> None:
        with tempfile.TemporaryDirectory(prefix="workbench-plots-") as tmp:
            if draw_plots(Path(tmp), self.files(op), self.directory / op["record_op"]):
                self.client.log_artifacts(self.run_id, tmp, "plots")

    def _register_model(self, op: dict) -> None:
        from workbench.tracking.registry import register_model

        self.registered = register_model(self.client, self.run_id, op["name"], op.get("tags") or {},
                                         op.get("description"))


def metric_rows(op: dict) -> list[list]:
    """A metric block's values as log_batch rows [key, value, timestamp, step]."""
    keys, t = op["keys"], int(op["timestamp"])
    return [[key, value, t, step] for step, row in zip(op["steps"], op["values"]) for key, value in zip(keys, row)]


def metric_block_group(first: dict, following: Iterable[dict | None]) -> list[dict]:
    """`first` and, when it is a metric block, the metric blocks right after it, up to `MERGED_METRICS` values:
    the operations to send as one log_batch. `following` yields the next operations, None where the group must
    end anyway (an operation done already, or one that cannot be read)."""
    group, values = [first], operation_values(first)
    if first["op"] != "metric_block":
        return group
    for op in following:
        if values >= MERGED_METRICS or op is None or op.get("op") != "metric_block":
            break
        group.append(op)
        values += operation_values(op)
    return group


def merged_metric_blocks(blocks: list[dict]) -> dict:
    """Consecutive metric blocks as one log_batch operation (fewer, larger store transactions)."""
    return {"op": "log_batch", "metrics": [row for block in blocks for row in metric_rows(block)]}


def log_batch(client, run_id: str, metrics: list, params: list, tags: list) -> None:
    """One or more `log_batch` calls within MLflow's limits (params and tags go with the first)."""
    first = True
    for i in range(0, max(len(metrics), 1), MAX_BATCH_METRICS):
        chunk = metrics[i : i + MAX_BATCH_METRICS]
        head_params, params = params[:MAX_BATCH_PARAMS], params[MAX_BATCH_PARAMS:]
        if chunk or head_params or (first and tags):
            client.log_batch(run_id, metrics=chunk, params=head_params, tags=tags if first else [],
                             synchronous=True)
        first = False
    while params:
        head_params, params = params[:MAX_BATCH_PARAMS], params[MAX_BATCH_PARAMS:]
        client.log_batch(run_id, params=head_params, synchronous=True)


_EXPERIMENT_IDS: dict[tuple[str, str], str] = {}  # (tracking URI, experiment name) -> id, in this process


def create_run(client, op: dict) -> tuple[str, str]:
    """The experiment (created with its note when missing), the run, its name, params, tags, spec.toml,
    dataset and first description; returns (run id, experiment id). A run whose setup fails after it
    exists is closed FAILED before the error goes on."""
    from workbench.tracking.experiments import ensure_experiment

    tags = dict(op.get("tags") or {})
    key = (str(getattr(client, "tracking_uri", "")), op["experiment"])
    experiment_id = _EXPERIMENT_IDS.get(key)  # a study's worker creates many runs in one experiment
    try:
        if experiment_id is None:
            experiment_id = ensure_experiment(client, op["experiment"], description=op.get("experiment_note"))
        run = client.create_run(experiment_id, tags=tags, run_name=op.get("run_name"))
    except Exception:
        if key not in _EXPERIMENT_IDS:
            raise
        del _EXPERIMENT_IDS[key]  # deleted or renamed since: look it up again (and say so if it is gone)
        experiment_id = ensure_experiment(client, op["experiment"], description=op.get("experiment_note"))
        run = client.create_run(experiment_id, tags=tags, run_name=op.get("run_name"))
    _EXPERIMENT_IDS[key] = experiment_id
    run_id = run.info.run_id
    try:
        _set_up_run(client, run_id, op)
    except BaseException as exc:
        with contextlib.suppress(Exception):
            client.set_tag(run_id, "workbench.status_reason", f"tracking setup: {type(exc).__name__}: {exc}"[:5000])
            client.set_terminated(run_id, "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
        raise
    return run_id, experiment_id


def created_run(client, op: dict) -> str | None:
    """The id of the run that `op` (a `create_run` with its creation tag) made already, if any."""
    creation = (op.get("tags") or {}).get(CREATION_TAG)
    if not creation:
        return None
    experiment = client.get_experiment_by_name(op["experiment"])
    if experiment is None:
        return None
    runs = client.search_runs([experiment.experiment_id], filter_string=f"tags.`{CREATION_TAG}` = '{creation}'",
                              max_results=1)
    return runs[0].info.run_id if runs else None


def _set_up_run(client, run_id: str, op: dict) -> None:
    """A new run's name, description, params, spec.toml and dataset input (each may be written again)."""
    from mlflow.entities import Param, RunTag

    from workbench.tracking.describe import single_run_name

    extra_tags = []
    if not op.get("run_name"):
        name = single_run_name(op.get("spec_name") or op["experiment"], run_id)
        extra_tags.append(RunTag(RUN_NAME_TAG, name))
    if op.get("note"):
        extra_tags.append(RunTag(NOTE_TAG, op["note"]))
    params = [Param(k, v) for k, v in (op.get("params") or {}).items()]
    log_batch(client, run_id, [], params, extra_tags)
    if op.get("spec_toml") is not None:
        client.log_text(run_id, op["spec_toml"], "spec.toml")
    if op.get("datasets"):
        from workbench.tracking.datasets import log_datasets

        log_datasets(client, run_id, op["datasets"])


def log_model_files(client, run_id: str, folder: Path) -> None:
    """`model/` as an MLflow Model, from the weights, spec and example rows a journal operation holds."""
    from workbench.tracking.pyfunc import save_model

    with tempfile.TemporaryDirectory(prefix="workbench-model-") as tmp:
        save_model(Path(tmp) / "model", *_model_files(folder))
        client.log_artifacts(run_id, str(Path(tmp) / "model"), "model")


def prepare_model_files(folder: Path) -> None:
    """Write the MLflow files of a model of this shape ahead (the untrained model of a `prepare_model`
    operation: same layers, outputs and example rows): the trained model's `log_model` at the end of the
    run then copies them instead of having MLflow write them (0.4 s on 2 cores, after the training)."""
    from workbench.tracking.pyfunc import save_model

    with tempfile.TemporaryDirectory(prefix="workbench-model-") as tmp:
        save_model(Path(tmp) / "model", *_model_files(folder))


def _model_files(folder: Path) -> tuple:
    """(model, spec TOML, example rows or None) from a model operation's files."""
    import numpy as np

    from workbench.nn.model import Sequential
    from workbench.tracking.pyfunc import SPEC_FILE, WEIGHTS_FILE

    folder = Path(folder)
    model = Sequential.load(folder / WEIGHTS_FILE)
    example_path = folder / "example.npy"
    example = np.load(example_path, allow_pickle=False) if example_path.exists() else None
    spec_path = folder / SPEC_FILE
    spec_toml = spec_path.read_text(encoding="utf-8") if spec_path.exists() else ""
    return model, spec_toml, example


def draw_plots(out: Path, inputs: Path, record_folder: Path, names=None) -> list[Path]:
    """The run's figures from a journal operation's files: `workbench.plots.save_run_plots`, and the
    diagnosis figure when the operation carries `diagnosis.json` (of `names`, default all)."""
    try:
        from workbench.plots import save_run_plots
    except ImportError:
        return []
    record, history, gradients = plot_inputs(inputs, record_folder)
    plot_names = None if names is None else [name for name in names if name != DIAGNOSIS_FIGURE]
    written = [] if plot_names == [] else save_run_plots(out, record=record, history=history, gradients=gradients,
                                                         names=plot_names)
    diagnosis = Path(inputs) / "diagnosis.json"
    if record is not None and diagnosis.exists() and (names is None or DIAGNOSIS_FIGURE in names):
        written += _draw_diagnosis(Path(out), record, json.loads(diagnosis.read_text(encoding="utf-8")))
    return written


def _draw_diagnosis(out: Path, record, diagnosis: dict) -> list[Path]:
    import warnings

    try:
        from workbench.diagnose import Diagnosis
        from workbench.diagnose.figure import save_diagnosis_figure

        out.mkdir(parents=True, exist_ok=True)
        save_diagnosis_figure(out / DIAGNOSIS_FIGURE, record, Diagnosis.from_json(diagnosis))
    except Exception as exc:  # noqa: BLE001 - the run keeps its other figures
        warnings.warn(f"plot {DIAGNOSIS_FIGURE} not drawn: {type(exc).__name__}: {exc}", RuntimeWarning, stacklevel=2)
        return []
    return [out / DIAGNOSIS_FIGURE]


def plot_inputs(inputs: Path, record_folder: Path):
    """(record, history, gradients) as `log_plots` stores them."""
    import numpy as np

    from workbench.monitor.record import load_record

    record_path = Path(record_folder) / RECORD_FILE
    record = load_record(record_path) if record_path.exists() else None
    history_path = Path(inputs) / "history.json"
    history = json.loads(history_path.read_text()) if history_path.exists() else {}
    gradients_path = Path(inputs) / "gradients.npz"
    gradients = {}
    if gradients_path.exists():
        with np.load(gradients_path, allow_pickle=False) as data:
            gradients = {key: data[key] for key in data.files}
    return record, history, gradients
