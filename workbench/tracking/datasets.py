"""The run's data set as an MLflow dataset input: the runs table's Dataset column and the run's Inputs.

    facts = dataset_facts(run.data, source="digits", path=None)   # numpy only: name, digest, sizes, schema
    log_datasets(client, run_id, [facts])                          # the MLflow entity, built where MLflow is

The facts are computed from the arrays where they live (the training process) and are small (no
array is copied): the digest hashes the shapes and an evenly spaced sample of rows of every split,
the profile holds the split sizes, the schema the tensor specs MLflow's own numpy datasets have.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np

CONTEXT_TAG, CONTEXT = "mlflow.data.context", "training"
DIGEST_ROWS = 2000  # rows hashed per split, evenly spaced


def dataset_facts(data, *, source: str | None = None, path: str | None = None) -> dict:
    """Name, digest, source, schema and profile of a `workbench.data.Dataset` (plain JSON-able values)."""
    splits = {"train": (data.X_train, data.y_train), "validation": (data.X_val, data.y_val),
              "test": (data.X_test, data.y_test)}
    digest = hashlib.md5(str(data.name).encode())
    for X, y in splits.values():
        for array in (X, y):
            array = np.asarray(array)
            digest.update(f"{array.shape}{array.dtype}".encode())
            if len(array):
                rows = np.unique(np.linspace(0, len(array) - 1, min(DIGEST_ROWS, len(array))).astype(int))
                digest.update(np.ascontiguousarray(array[rows]).tobytes())
    profile = {f"{split}_rows": int(len(y)) for split, (_, y) in splits.items()}
    profile["features_shape"] = [int(s) for s in np.asarray(data.X_train).shape[1:]]
    if data.task == "classification":
        profile["classes"] = int(data.n_classes)
    else:
        profile["targets"] = int(data.n_outputs)
    if path:
        source_type, source_json = "local", {"uri": str(path)}
    else:
        source_type, source_json = "code", {"tags": {"workbench.data.source": str(source or data.name)}}
    schema = {"mlflow_tensorspec": {"features": _tensor_schema(data.X_train), "targets": _tensor_schema(data.y_train)}}
    return {"name": str(data.name), "digest": digest.hexdigest()[:8], "source_type": source_type,
            "source": json.dumps(source_json), "schema": json.dumps(schema), "profile": json.dumps(profile)}


def _tensor_schema(array) -> str:
    array = np.asarray(array)
    spec = {"type": "tensor", "tensor-spec": {"dtype": str(array.dtype), "shape": [-1, *array.shape[1:]]}}
    return json.dumps([spec])


def dataset_input(facts: dict):
    """The `DatasetInput` MLflow logs with `log_inputs`, tagged as the training data."""
    from mlflow.entities import Dataset, DatasetInput, InputTag

    dataset = Dataset(name=facts["name"], digest=facts["digest"], source_type=facts["source_type"],
                      source=facts["source"], schema=facts.get("schema"), profile=facts.get("profile"))
    return DatasetInput(dataset=dataset, tags=[InputTag(key=CONTEXT_TAG, value=CONTEXT)])


def log_datasets(client, run_id: str, facts: list[dict]) -> None:
    """Log the datasets as inputs of the run. Two runs (a study's workers) logging one dataset at the
    same moment both insert it, and the store refuses the second row (a unique key): the loser's
    second try finds the row and links its run to it."""
    inputs = [dataset_input(f) for f in facts]
    try:
        client.log_inputs(run_id, datasets=inputs)
    except Exception as exc:
        if not is_insert_race(exc):
            raise
        client.log_inputs(run_id, datasets=inputs)


# How each database words a unique-key violation (SQLite names the exception class; PostgreSQL's
# driver names its own class, and the server's message says "duplicate key"; MySQL "Duplicate entry").
UNIQUE_VIOLATION_WORDS = ("IntegrityError", "UniqueViolation", "duplicate key value", "UNIQUE constraint failed",
                          "Duplicate entry")


def is_insert_race(exc: BaseException) -> bool:
    """A unique-key violation, raised by SQLAlchemy or wrapped by MLflow (in process: the cause is
    chained; over HTTP from an `mlflow server`: only the message tells, in the database's words)."""
    seen: BaseException | None = exc
    while seen is not None:
        head = str(seen)[:500]
        if type(seen).__name__ == "IntegrityError" or any(words in head for words in UNIQUE_VIOLATION_WORDS):
            return True
        seen = seen.__cause__ or seen.__context__
    return False
