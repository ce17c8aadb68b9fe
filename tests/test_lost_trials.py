"""Whether a trial's worker is gone: a zombie or a process that reuses its pid is not the worker."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from support import wait_until

from workbench.studies.lost_trials import _alive, process_start_ticks

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="needs /proc (Linux)")


def test_a_running_process_is_alive_and_its_start_time_identifies_it():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])
    try:
        started = process_start_ticks(child.pid)
        assert isinstance(started, int) and started > 0
        assert _alive(child.pid) and _alive(child.pid, started)
        assert not _alive(child.pid, started - 1)  # same pid, other start time: a reused pid
    finally:
        child.kill()
        child.wait()


def test_a_zombie_is_not_alive_and_a_reaped_process_is_gone():
    """An orphaned worker killed with its parent stays a zombie where PID 1 does not reap (containers)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])

    def zombie() -> bool:  # exited, not yet waited for
        with open(f"/proc/{child.pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"

    wait_until(zombie, "the child to become a zombie", interval=0.02)
    assert not _alive(child.pid)
    child.wait()
    assert not _alive(child.pid)
    assert process_start_ticks(child.pid) is None
