"""Lower the CPU priority of the calling thread, for background work."""
from __future__ import annotations

import os
import sys


def lower_this_thread(increment: int) -> None:
    """Add `increment` to the calling thread's niceness.

    On Linux nice(2) changes the calling thread only, and threads the caller
    starts later inherit it; elsewhere it would change the whole process, so
    this does nothing.
    """
    if sys.platform.startswith("linux"):
        os.nice(increment)
