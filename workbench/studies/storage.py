"""Where a study's trials live, and the lock that keeps its trial budget exact.

- Embedded default: an Optuna journal file, `optuna.journal` beside the MLflow store
  (the folder of `mlflow.db`, else the working directory). Optuna recommends it for
  several processes on one machine; SQLite is refused for parallel workers.
- Many machines: an RDB URL (PostgreSQL), with heartbeats: a trial whose worker stops
  beating for `grace_period` seconds is failed and retried (RetryHeartbeatStaleTrialCallback).

`budget_lock` serializes "count the trials, then ask for one" across workers, so that
`n_trials` workers never overshoot: an fcntl lock file beside a journal (one machine),
a PostgreSQL advisory lock for a shared database.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from workbench.errors import UserError

DEFAULT_JOURNAL = "optuna.journal"
TABLE_RACE_RETRIES = 3
RDB_SCHEMES = ("postgresql", "postgres", "mysql", "sqlite", "oracle", "mssql")


@dataclass(frozen=True)
class StorageConfig:
    """A resolved storage: `url` is a journal file path or an RDB URL."""

    url: str
    kind: str  # "journal" | "rdb"
    heartbeat_interval: int = 10
    grace_period: int = 60
    max_retry: int = 2

    @property
    def heartbeat(self) -> bool:
        return self.kind == "rdb" and not self.url.startswith("sqlite")

    def shown(self) -> str:
        return redact(self.url)


def default_journal(tracking_uri: str) -> Path:
    """`optuna.journal` in the folder of the MLflow database (or of a file store), else here."""
    from workbench.tracking.uri import sqlite_path

    db = sqlite_path(tracking_uri)
    if db is not None:
        return db.resolve().parent / DEFAULT_JOURNAL
    parsed = urlparse(tracking_uri)
    if parsed.scheme in ("", "file"):
        return Path(parsed.path or tracking_uri).resolve().parent / DEFAULT_JOURNAL
    return Path.cwd() / DEFAULT_JOURNAL


def resolve_storage(storage: str | None, tracking_uri: str, *, workers: int, heartbeat_interval: int = 10,
                    grace_period: int = 60) -> StorageConfig:
    """A journal path or an RDB URL from `--storage`; one-line UserError for what cannot work."""
    if storage is None:
        return StorageConfig(str(default_journal(tracking_uri)), "journal", heartbeat_interval, grace_period)
    scheme = storage.split("://", 1)[0].split("+", 1)[0].lower() if "://" in storage else ""
    if scheme == "":
        path = Path(storage).expanduser()
        if path.suffix in (".db", ".sqlite", ".sqlite3"):
            raise UserError(f"--storage {storage}: a bare SQLite file is not a study storage; "
                            f"use a journal file (--storage {path.with_suffix('.journal')}) or sqlite:///{path}")
        if path.is_dir():
            path = path / DEFAULT_JOURNAL
        return StorageConfig(str(path.resolve()), "journal", heartbeat_interval, grace_period)
    if scheme not in RDB_SCHEMES:
        raise UserError(f"--storage {redact(storage)}: unknown scheme '{scheme}'; use a journal file path "
                        "(e.g. ./optuna.journal) or an RDB URL such as postgresql://user:password@host/db")
    if scheme == "sqlite" and workers > 1:
        raise UserError(f"--storage {storage}: SQLite is not safe for {workers} parallel workers; "
                        "use a journal file (the default, ./optuna.journal) or PostgreSQL")
    return StorageConfig(storage, "rdb", heartbeat_interval, grace_period)


def open_storage(config: StorageConfig, stale_trial_callback=None):
    """The Optuna storage object for `config` (heartbeats on for a shared RDB)."""
    import optuna
    from optuna.storages.journal import JournalFileBackend

    if config.kind == "journal":
        Path(config.url).parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(JournalFileBackend(config.url))
    kwargs = {}
    if config.heartbeat:
        kwargs = dict(heartbeat_interval=config.heartbeat_interval, grace_period=config.grace_period,
                      heartbeat_stale_trial_callback=stale_trial_callback)
    try:
        for attempt in range(TABLE_RACE_RETRIES + 1):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    return optuna.storages.RDBStorage(config.url, engine_kwargs=_engine_kwargs(config.url), **kwargs)
            except Exception as exc:  # machines starting together on a fresh database race to create its tables
                if "already exists" not in str(exc) or attempt == TABLE_RACE_RETRIES:
                    raise
                time.sleep(1.0)
    except ModuleNotFoundError as exc:
        raise UserError(f"--storage {config.shown()}: the database driver '{exc.name}' is not installed "
                        f"(for PostgreSQL: pip install 'psycopg[binary]')") from None
    except Exception as exc:  # sqlalchemy.exc.OperationalError and friends: say which server
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"cannot open study storage {config.shown()}: {first}") from None


def _engine_kwargs(url: str) -> dict:
    if url.startswith(("postgresql", "postgres", "mysql")):
        return {"pool_pre_ping": True}
    return {}


@contextlib.contextmanager
def budget_lock(config: StorageConfig, study_name: str):
    """Held while a worker counts the trials and asks for the next one."""
    if config.kind == "journal":
        path = Path(config.url + ".workers.lock")
        with open(path, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
        return
    if config.url.startswith(("postgresql", "postgres")):
        with _advisory_lock(config.url, study_name):
            yield
        return
    yield  # other databases: no cross-machine lock; n_trials may be overshot by workers - 1


_ENGINES: dict[str, object] = {}


@contextlib.contextmanager
def _advisory_lock(url: str, study_name: str):
    """A PostgreSQL session advisory lock keyed by the study name (released even if we die: the session ends)."""
    import sqlalchemy

    engine = _ENGINES.get(url)
    if engine is None:
        engine = _ENGINES[url] = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
    key = int.from_bytes(hashlib.sha1(f"workbench.study:{study_name}".encode()).digest()[:8], "big", signed=True)
    with engine.connect() as connection:
        connection.execute(sqlalchemy.text("SELECT pg_advisory_lock(:key)"), {"key": key})
        try:
            yield
        finally:
            connection.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:key)"), {"key": key})
            connection.commit()


def redact(url: str) -> str:
    """The URL with its password replaced by ***, for logs, tags and messages."""
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", url)


def dashboard_command(config: StorageConfig) -> str:
    target = config.shown()
    if config.kind == "journal":
        relative = os.path.relpath(config.url)
        target = config.url if relative.startswith("..") else os.path.join(".", relative)
    return f"optuna-dashboard {target}"
