"""What a study's workers need, imported once by the fork server that starts them (`workers.worker_context`).

Spawned workers each imported MLflow, Optuna, SQLAlchemy and the workbench afresh: about 3 s of CPU per
worker on 2 cores, paid again for every worker of every launch. The fork server imports them once, while the
main process opens its stores, and forks each worker from that warm state; nothing is opened here (no store,
no thread), so what a worker inherits is imports only.
"""

import signal

# The fork server is the main process's helper: a Ctrl-C in the terminal is the study's to handle (the main
# process and the workers get it), not a reason for a traceback from the imports below.
signal.signal(signal.SIGINT, signal.SIG_IGN)

from workbench.studies.fork_server import prepare_for_workers  # noqa: E402

prepare_for_workers()  # the modules a study adds for its data come as the server's other preloads
