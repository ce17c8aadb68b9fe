"""Where runs are tracked: the tracking URI and, for a local store, where artifacts live.

    resolve_tracking_uri(None)  ->  $MLFLOW_TRACKING_URI, else sqlite:////abs/cwd/mlflow.db

MLflow's own default is `sqlite:///mlflow.db` in the working directory; we make it
absolute so that every process (runs, studies, `workbench ui`) started in that
directory names the same file. Artifacts of a local SQLite store live in a
`mlruns` folder beside the database file (MLflow's `./mlruns` when the database is
the default one), so that runs, the UI and a copied folder all agree on it.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import unquote, urlparse

DEFAULT_DB = "mlflow.db"
ARTIFACTS_DIR = "mlruns"
TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"


def resolve_tracking_uri(tracking_uri: str | None = None) -> str:
    """The URI runs are logged to: the argument, else $MLFLOW_TRACKING_URI, else ./mlflow.db (absolute)."""
    uri = tracking_uri or os.environ.get(TRACKING_URI_ENV) or f"sqlite:///{DEFAULT_DB}"
    path = sqlite_path(uri)
    if path is not None and not path.is_absolute():
        return f"sqlite:///{path.resolve()}"
    return uri


def is_remote(uri: str) -> bool:
    """True for a tracking server (http, https): artifacts go through it, not the local disk."""
    return urlparse(uri).scheme in ("http", "https")


def sqlite_path(uri: str) -> Path | None:
    """The database file of a `sqlite:///` URI (relative as written), None for other URIs and in-memory."""
    if not uri.startswith("sqlite://"):
        return None
    rest = uri[len("sqlite://") :]
    if not rest.startswith("/") or rest in ("/", "/:memory:"):
        return None
    return Path(unquote(rest[1:].split("?", 1)[0]))


def artifact_root(uri: str) -> Path | None:
    """The folder that holds the artifacts of a local SQLite store (`<db folder>/mlruns`), else None."""
    path = sqlite_path(uri)
    return None if path is None else path.resolve().parent / ARTIFACTS_DIR
