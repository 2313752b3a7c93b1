"""Lower the CPU priority of the calling thread, for background work."""
from __future__ import annotations

import os
import sys
import threading


def lower_this_thread(increment: int) -> None:
    """Add `increment` to the calling thread's niceness.

    On Linux niceness is per thread (PRIO_PROCESS with a thread id sets it,
    and threads the caller starts later inherit it); elsewhere this does
    nothing.
    """
    if sys.platform.startswith("linux"):
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + increment)
