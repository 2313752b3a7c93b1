"""Waiting for a condition from a trial test without blocking the reactor."""
import time

from twisted.internet import defer, reactor, task


@defer.inlineCallbacks
def until(condition, seconds: float = 10.0):
    """Let the reactor turn until `condition()` holds, up to `seconds` and
    1,000 turns; the caller asserts what it needs afterwards."""
    deadline = time.monotonic() + seconds
    for _ in range(1000):
        if condition() or time.monotonic() > deadline:
            return
        yield task.deferLater(reactor, 0.01, lambda: None)
