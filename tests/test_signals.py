"""Interrupts held back for lines that must run whole (`workbench.signals.interrupts_deferred`)."""

from __future__ import annotations

import os
import signal
import threading

import pytest

from workbench.signals import interrupts_deferred


def test_a_ctrl_c_inside_the_block_is_raised_after_it_once_the_block_has_run_whole():
    done = []
    with pytest.raises(KeyboardInterrupt):
        with interrupts_deferred():
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)  # twice: delivered once
            done.append("first")
            done.append("second")  # still runs: the interrupt waits
    assert done == ["first", "second"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # put back


def test_a_sigterm_goes_to_the_handler_that_was_in_place_and_a_quiet_block_changes_nothing():
    seen = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: seen.append(signum))
    try:
        with interrupts_deferred():
            os.kill(os.getpid(), signal.SIGTERM)
            assert seen == []
        assert seen == [signal.SIGTERM]
        with interrupts_deferred():
            pass
        assert seen == [signal.SIGTERM]
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_outside_the_main_thread_it_is_a_plain_block():
    """Python runs handlers in the main thread only, and only it may set them: nothing to hold there."""
    inside = []

    def work():
        with interrupts_deferred():
            inside.append(signal.getsignal(signal.SIGINT))

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    assert inside == [signal.default_int_handler]
