"""The study workers' fork server, forked from the main process when that is safe, instead of started afresh.

multiprocessing's fork server is a new interpreter that imports what the workers need (`worker_preload`):
about 4 s of CPU on 2 cores, at every launch with two or more workers, for imports the main process makes
anyway. Where nothing has opened a store yet (no MLflow, no SQLAlchemy loaded: a study script's fresh
process) and only one thread runs, the main process imports them first and forks the server from itself:
the server and every worker forked from it start warm, and share no connection, socket or lock with the
main process, which opens its stores only afterwards. The server runs multiprocessing's own fork-server
loop, so workers start, stop and report exactly as with the usual one. Anywhere else (a notebook that
already tracked a run, a second study in one process, another Python version's multiprocessing) the usual
fork server is started instead.
"""

from __future__ import annotations

import importlib
import inspect
import os
import signal
import socket
import sys
import threading

# What a worker needs before its first trial (the fresh fork server imports the same, `worker_preload`).
WORKER_MODULES = (
    "mlflow",
    "mlflow.store.tracking.sqlalchemy_store",  # the SQLite store's module (1 s of it)
    "numpy",
    "optuna",
    "workbench.execute",
    "workbench.studies.workers",
    "workbench.tracking.tracker",
)
# Loaded only once a store may have been opened: a process that has them is not forked.
OPENS_STORES = ("mlflow", "sqlalchemy")
_SERVER_STATE = ("_forkserver_pid", "_forkserver_address", "_forkserver_alive_fd")
_MAIN_PARAMETERS = ["listener_fd", "alive_r", "preload", "main_path", "sys_path"]


def prepare_for_workers(also: tuple[str, ...] = ()) -> None:
    """What a fork server does before it forks its first worker, whichever way it started: import
    `WORKER_MODULES` and `also`, and make MLflow's map of the installed packages, which each worker would
    otherwise make before its first model (0.3 s)."""
    from workbench.tracking.pyfunc import warm_up_requirement_check

    for name in (*WORKER_MODULES, *also):
        importlib.import_module(name)
    warm_up_requirement_check()


def fork_server_from_here(also: tuple[str, ...] = ()) -> bool:
    """Become the parent of this process's fork server, forked from it after `WORKER_MODULES` and `also` (what
    the study's data needs) are imported. False where that is not safe or this Python's multiprocessing differs
    (the caller starts the usual one)."""
    from multiprocessing import connection, forkserver, resource_tracker, util

    server = forkserver._forkserver
    if (any(name in sys.modules for name in OPENS_STORES) or threading.active_count() > 1
            or not all(hasattr(server, name) for name in _SERVER_STATE)
            or list(inspect.signature(forkserver.main).parameters) != _MAIN_PARAMETERS):
        return False
    # Only this thread runs (checked above and again after the imports), so the server's lock is not taken: a
    # lock held while forking would stay held in the server and in every worker forked from it.
    if server._forkserver_pid is not None:
        return False  # one is running already
    prepare_for_workers(also)
    if threading.active_count() > 1:  # an import started a thread: not safe to fork after all
        return False
    resource_tracker.ensure_running()  # shared with the workers, as the usual server's is
    with socket.socket(socket.AF_UNIX) as listener:
        address = connection.arbitrary_address("AF_UNIX")
        listener.bind(address)
        if not util.is_abstract_socket_namespace(address):
            os.chmod(address, 0o600)
        listener.listen()
        alive_r, alive_w = os.pipe()  # the server exits when this process (the write end) is gone
        sys.stdout.flush()  # else the workers would print what is still buffered here again
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the server: multiprocessing's loop, nothing else of this process
            # Deaf to the terminal's Ctrl-C from its first instruction, as the usual server is (each worker
            # sets its own disposition, `workers._worker_entry`).
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            os.close(alive_w)
            try:
                forkserver.main(listener.fileno(), alive_r, [])
            finally:
                os._exit(0)
        os.close(alive_r)
    server._forkserver_address = address
    server._forkserver_alive_fd = alive_w
    server._forkserver_pid = pid
    return True
