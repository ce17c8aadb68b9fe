"""Interrupts held back for a few lines that must run whole: two storage writes that go together, or
the step that hands a block of metrics over and moves the cursor past it.

    with interrupts_deferred():
        write_one(); write_the_other()     # a Ctrl-C or SIGTERM meanwhile is delivered here, after both

Python-level handlers rather than a signal mask: a mask is per thread, and the kernel hands a
process-directed signal to any thread that does not block it (BLAS worker threads, the tracker's
threads), whose C handler then runs the Python handler in the main thread inside the block anyway.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

HELD = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def interrupts_deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM until the block ends, then deliver each that came (once) to the handler
    that was in place. Outside the main thread (no Python handler runs there) it does nothing."""
    previous = {s: signal.getsignal(s) for s in HELD}
    if threading.current_thread() is not threading.main_thread() or None in previous.values():
        yield  # a handler installed outside Python cannot be put back
        return
    pending: list[int] = []
    for s in HELD:
        signal.signal(s, lambda signum, frame: pending.append(signum))
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        for s in dict.fromkeys(pending):
            signal.raise_signal(s)
