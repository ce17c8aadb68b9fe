"""`workbench explain RUN_ID|latest|MODEL.npz`: explain a trained model on its own test split, keep the result.

A tracked run brings everything: its `model/` artifact (weights and spec) and, from the spec, the
data it was trained on, split as it was (same seed). The explanation is logged back to the run as
`explain/` artifacts (attributions.npz, summary.json, the figures), where the MLflow UI shows them.
A model file needs its spec to find its data: `spec.toml` beside it (as in a run's `model/`
folder) or `--spec`; its explanation goes to a folder (`--out`, default `explain/` beside it).

MLflow is reached only through `workbench.tracking`'s helpers (finding a run, its store) and the
client they return; the explanation itself (`workbench.explain.api`) knows nothing of MLflow.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from workbench.errors import UserError
from workbench.explain.api import DEFAULT_SAMPLES, Explanation, explain
from workbench.explain.attributions import BASELINES, DEFAULT_MAX_STEPS, DEFAULT_STEPS, METHODS

ARTIFACT_DIR = "explain"
MODEL_FILE, SPEC_FILE = "model/weights.npz", "model/spec.toml"


@dataclass
class ExplainedRun:
    explanation: Explanation
    run_id: str | None
    files: list[str] = field(default_factory=list)  # where the artifacts went (artifact paths or local files)


def check_options(samples: int, method: str, baseline: str, steps: int, max_steps: int) -> None:
    """Every option mistake as one UserError line naming the fix, before anything is loaded."""
    import difflib

    if method not in METHODS:
        match = difflib.get_close_matches(method, METHODS, n=1)
        hint = f" (did you mean {match[0]}?)" if match else ""
        raise UserError(f"--method {method} is not an attribution method{hint}: use one of {', '.join(METHODS)}")
    if samples < 1:
        raise UserError(f"--samples {samples}: explain at least one sample, e.g. --samples {DEFAULT_SAMPLES}")
    if baseline not in BASELINES:
        raise UserError(f"--baseline {baseline}: use one of {', '.join(BASELINES)}")
    if steps < 1:
        raise UserError(f"--steps {steps}: integrated gradients need at least 1 step, e.g. --steps {DEFAULT_STEPS}")
    if max_steps < steps:
        raise UserError(f"--max-steps {max_steps} is below --steps {steps}: use --max-steps {max(steps, DEFAULT_MAX_STEPS)}")


def explain_run(ref: str, *, tracking_uri: str | None = None, experiment: str | None = None,
                samples: int = DEFAULT_SAMPLES, method: str = "integrated_gradients", baseline: str = "zero",
                steps: int = DEFAULT_STEPS, max_steps: int = DEFAULT_MAX_STEPS, spec_path: str | None = None,
                out: str | None = None, log: bool = True) -> ExplainedRun:
    """Explain the model of run `ref` (an id or "latest") or of the file `ref` (a .npz); see the module doc."""
    check_options(samples, method, baseline, steps, max_steps)
    if ref.endswith(".npz") or Path(ref).is_file():
        return _explain_file(Path(ref), spec_path=spec_path, out=out, samples=samples, method=method,
                             baseline=baseline, steps=steps, max_steps=max_steps)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    from workbench.tracking.diagnosis import find_run, open_store

    client = open_store(tracking_uri)
    run = find_run(client, ref, experiment)
    run_id = run.info.run_id
    with tempfile.TemporaryDirectory(prefix="workbench-explain-") as tmp:
        model, spec = _download_model(client, run_id, Path(tmp))
        explanation = _explain(model, spec, samples=samples, method=method, baseline=baseline, steps=steps,
                               max_steps=max_steps, source={"run_id": run_id})
        folder = Path(tmp) / ARTIFACT_DIR
        written = explanation.save(folder)
        files = []
        if log:
            client.log_artifacts(run_id, str(folder), ARTIFACT_DIR)
            files = [f"{ARTIFACT_DIR}/{path.name}" for path in written]
        if out is not None:
            files += [str(path) for path in explanation.save(out)]
    return ExplainedRun(explanation, run_id, files)


def _download_model(client, run_id: str, tmp: Path):
    from mlflow.exceptions import MlflowException

    from workbench.nn.model import Sequential
    from workbench.spec import load_spec

    try:
        weights = client.download_artifacts(run_id, MODEL_FILE, str(tmp))
        spec_file = client.download_artifacts(run_id, SPEC_FILE, str(tmp))
    except (MlflowException, OSError):
        raise UserError(f"run '{run_id}' has no model ({MODEL_FILE}): explain a run trained by `workbench run` "
                        "that got to its end (a study's parent run, or a run still going, has none); "
                        "`workbench ui` lists the runs") from None
    return Sequential.load(weights), load_spec(spec_file)


def _explain_file(path: Path, *, spec_path, out, **options) -> ExplainedRun:
    from workbench.nn.model import Sequential
    from workbench.spec import load_spec

    if not path.is_file():
        raise UserError(f"no model file {path}: give a run id, `latest`, or the path of a weights .npz saved by workbench")
    beside = path.parent / "spec.toml"
    spec_file = Path(spec_path) if spec_path else beside
    if not spec_file.is_file():
        raise UserError(f"{path} has no spec.toml beside it: pass --spec SPEC.toml (the spec it was trained with) "
                        "so that explain can load its test split")
    model, spec = Sequential.load(path), load_spec(spec_file)
    explanation = _explain(model, spec, source={"model": str(path)}, **options)
    folder = Path(out) if out is not None else path.parent / ARTIFACT_DIR
    return ExplainedRun(explanation, None, [str(p) for p in explanation.save(folder)])


def _explain(model, spec, *, samples, method, baseline, steps, max_steps, source) -> Explanation:
    from workbench.runner import load_data, make_loss

    data = load_data(spec)
    loss = make_loss(spec, data)
    shape = tuple(model.input_shape or ())
    flat_width = int(np.prod(shape)) if shape else data.n_features
    if flat_width != data.n_features:
        raise UserError(f"the model takes {flat_width} input values but {data.name} has {data.n_features} "
                        "features: explain it with the spec it was trained with (--spec)")
    if len(data.X_test) == 0:
        raise UserError(f"{data.name} has an empty test split: raise data.test_fraction in the spec")
    image_shape = tuple(data.sample_shape) if data.sample_shape is not None and len(data.sample_shape) == 3 else None
    display = None
    if image_shape is not None and spec.data.standardize:  # draw the images as they are, not standardized
        display = load_data(spec.with_overrides({"data.standardize": False})).X_test
    explanation = explain(
        model, data.X_test, data.y_test, samples=samples, method=method, baseline=baseline,
        mean=data.X_train.reshape(len(data.X_train), -1).mean(axis=0), steps=steps, max_steps=max_steps, loss=loss,
        task=data.task, classes=data.classes, feature_names=data.feature_names, image_shape=image_shape,
        seed=spec.seed, display=display,
    )
    explanation.source = dict(source)
    return explanation
