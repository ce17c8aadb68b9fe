"""The trained model as an MLflow Model (python_function flavor): load, register and serve it with MLflow's tools.

    mlflow.pyfunc.load_model("runs:/RUN_ID/model").predict(X)            # == workbench.load_model(RUN_ID).predict(X)
    mlflow.pyfunc.load_model("models:/NAME/1").predict(X, params={"output": "label"})
    mlflow models serve -m models:/NAME/1 --env-manager local              # POST /invocations

The `model/` artifact of a run is one folder that both readers understand:

    model/MLmodel              the MLflow Model: python_function flavor, signature, input example
    model/weights.npz          weights and layer list (`Sequential.save`, read with allow_pickle=False)
    model/spec.toml            the run's spec
    model/requirements.txt ... MLflow's environment files (numpy, mlflow)

The flavor names a loader module (this one: `_load_pyfunc`), not a pickled object: nothing of
workbench is pickled, and the model loads wherever `workbench` is importable (the environment the
run was made in, or any with `pip install` of this repository). That is also why serving takes
`--env-manager local`: MLflow cannot install workbench from a registry.

`predict(X, params={"output": ...})`: "raw" (default) the network's outputs, exactly what
`workbench.load_model(run_id).predict(X)` returns (logits of a classifier, values of a regressor);
for classifiers "label" (the class index 0..K-1, the index into the `classes` metadata of MLmodel)
and "probability" (softmax, or sigmoid for binary cross-entropy). X is a numpy array or a pandas
DataFrame of features scaled as the run's training data were (`data.standardize`), flat rows or, for
an image model, (N, C, H, W).
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import hashlib
import json
import logging
import shutil
import tempfile
from pathlib import Path

import numpy as np

MODEL_DIR, WEIGHTS_FILE, SPEC_FILE = "model", "weights.npz", "spec.toml"
OUTPUTS = ("raw", "label", "probability")
EXAMPLE_ROWS = 5


class WorkbenchPyfunc:
    """What `mlflow.pyfunc.load_model` wraps: a workbench `Sequential` and the loss that reads its outputs."""

    def __init__(self, model) -> None:
        from workbench.nn.losses import LOSSES

        self.model = model
        meta = dict(model.meta or {})
        self.task = meta.get("task", "regression")
        loss = LOSSES.get(meta.get("loss", ""))
        self.loss = loss() if loss is not None else None
        self.classes = list(meta.get("classes") or [])

    def predict(self, data, params: dict | None = None):
        output = (params or {}).get("output", "raw")
        if output not in OUTPUTS:
            raise ValueError(f"params output = {output!r}: use one of {', '.join(OUTPUTS)}")
        X = as_array(data, self.model.dtype)
        raw = self.model.predict(X)
        if output == "raw":
            return raw
        if self.task != "classification" or self.loss is None:
            raise ValueError(f"params output = {output!r} needs a classifier; this model is a {self.task} model: "
                             "use output = 'raw'")
        if output == "label":
            return np.asarray(self.loss.predict(raw), dtype=np.int64)
        return self.loss.probabilities(raw)


def as_array(data, dtype) -> np.ndarray:
    """A pandas DataFrame (one column per feature), a list or an array as a float array of the model's dtype."""
    if hasattr(data, "to_numpy"):
        data = data.to_numpy()
    return np.asarray(data, dtype=dtype)


def _load_pyfunc(path: str) -> WorkbenchPyfunc:
    """MLflow's entry point (the flavor's `loader_module`): `path` is the model folder (the flavor names no data)."""
    from workbench.nn.model import Sequential

    return WorkbenchPyfunc(Sequential.load(Path(path) / WEIGHTS_FILE))


def save_model(folder: str | Path, model, spec_toml: str, example: np.ndarray | None) -> Path:
    """Write the `model/` folder: MLmodel (signature inferred from `example` rows and the outputs), weights, spec.

    The MLflow files depend only on the signature, the example rows, the metadata and the environment:
    a process that saves many models of one shape (a study's trials) writes them once and copies them,
    with a new model uuid and time, beside each model's own weights.
    """
    from mlflow.models import infer_signature

    from workbench import __version__

    folder = Path(folder)
    signature = input_example = None
    if example is not None and len(example):
        input_example = np.ascontiguousarray(example[:EXAMPLE_ROWS])
        signature = infer_signature(input_example, model.predict(input_example), params={"output": "raw"})
    meta = dict(model.meta or {})
    metadata = {"workbench_version": __version__, "task": meta.get("task"), "loss": meta.get("loss")}
    if meta.get("classes"):
        metadata["classes"] = [str(c) for c in meta["classes"]]
    key = hashlib.sha1(json.dumps([signature.to_dict() if signature is not None else None, metadata,
                                   requirements()], sort_keys=True, default=str).encode())
    if input_example is not None:
        key.update(input_example.tobytes())
    template = _template(key.hexdigest(), signature, input_example, metadata)
    shutil.copytree(template, folder)
    _renew_identity(folder / "MLmodel")
    model.save(folder / WEIGHTS_FILE)
    (folder / SPEC_FILE).write_text(spec_toml, encoding="utf-8")
    return folder


_TEMPLATES: dict[str, Path] = {}  # key of the MLflow files -> a folder holding them
MAX_TEMPLATES = 8


def warm_up_requirement_check() -> None:
    """Map installed packages to their modules now, as MLflow does before it saves a model's first requirements
    (it checks them against this environment: `importlib.metadata.packages_distributions`, 0.3 s of CPU, once
    per process). A process that forks workers (a study's fork server) maps them once for all of them; the agent
    does it while the run trains. MLflow's function is private: where it is missing, the save maps them itself."""
    with contextlib.suppress(Exception):
        from mlflow.utils.requirements_utils import _init_packages_to_modules_map

        _init_packages_to_modules_map()


def _template(key: str, signature, input_example, metadata: dict) -> Path:
    """The MLflow files of a model (MLmodel, environment, input example), written by MLflow once per key."""
    import mlflow.pyfunc

    found = _TEMPLATES.get(key)
    if found is not None and found.is_dir():
        return found
    if len(_TEMPLATES) >= MAX_TEMPLATES:
        shutil.rmtree(_TEMPLATES.pop(next(iter(_TEMPLATES))).parent, ignore_errors=True)
    root = Path(tempfile.mkdtemp(prefix="workbench-pyfunc-"))
    atexit.register(shutil.rmtree, root, True)
    with quiet("mlflow.pyfunc", "mlflow.models"):  # "Validating input example against model signature"
        mlflow.pyfunc.save_model(str(root / "model"), loader_module=__name__, signature=signature,
                                 input_example=input_example, pip_requirements=list(requirements()), metadata=metadata)
    _TEMPLATES[key] = root / "model"
    return root / "model"


def _renew_identity(mlmodel: Path) -> None:
    """A copied MLmodel gets its own model uuid and creation time."""
    import datetime
    import uuid

    lines = mlmodel.read_text(encoding="utf-8").splitlines()
    now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
    for i, line in enumerate(lines):
        if line.startswith("model_uuid:"):
            lines[i] = f"model_uuid: {uuid.uuid4().hex}"
        elif line.startswith("utc_time_created:"):
            lines[i] = f"utc_time_created: '{now}'"
    mlmodel.write_text("\n".join(lines) + "\n", encoding="utf-8")


@contextlib.contextmanager
def quiet(*names: str):
    """MLflow's INFO lines of these loggers held back (warnings still show)."""
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(max(logger.level, logging.WARNING))
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


@functools.lru_cache(maxsize=1)
def requirements() -> tuple[str, ...]:
    """numpy and mlflow at the versions of this environment (workbench itself is not on a package index)."""
    from importlib.metadata import PackageNotFoundError, version

    found = []
    for name in ("mlflow", "numpy"):
        try:
            found.append(f"{name}=={version(name)}")
        except PackageNotFoundError:
            found.append(name)
    return tuple(found)
