"""Throttling of failed logins, per client address and per account.

After `max_failures` failures within `failure_window` seconds the address
(or account) is locked out for `lockout` seconds; before that, each failure
adds a growing delay to the reply.  Failures never reveal whether the
account exists: unknown accounts are counted like known ones.
"""
from __future__ import annotations

from collections import deque


class AuthThrottle:
    """Counts failures on an injected clock; all methods are synchronous."""

    def __init__(self, clock, max_failures: int, failure_window: float, lockout: float,
                 max_delay: float = 4.0):
        self._clock = clock
        self._max = max_failures
        self._window = failure_window
        self._lockout = lockout
        self._max_delay = max_delay
        self._failures: dict[str, deque[float]] = {}
        self._locked_until: dict[str, float] = {}

    def _keys(self, address: str, account: str) -> tuple[str, str]:
        return f"ip:{address}", f"account:{account.lower()}"

    def locked(self, address: str, account: str) -> bool:
        """True while the address or the account is locked out."""
        now = self._clock.seconds()
        return any(self._locked_until.get(key, 0) > now for key in self._keys(address, account))

    def failed(self, address: str, account: str) -> float:
        """Record a failure; returns the delay (seconds) to wait before replying."""
        now = self._clock.seconds()
        worst = 0
        for key in self._keys(address, account):
            times = self._failures.setdefault(key, deque())
            times.append(now)
            while times and times[0] <= now - self._window:
                times.popleft()
            if len(times) >= self._max:
                self._locked_until[key] = now + self._lockout
                times.clear()
            worst = max(worst, len(times))
        self._prune(now)
        return min(self._max_delay, 0.25 * worst)

    def succeeded(self, address: str, account: str):
        """A good login clears the account's failures (not the address's)."""
        self._failures.pop(self._keys(address, account)[1], None)

    def _prune(self, now: float):
        if len(self._failures) > 100_000:
            for key in [k for k, times in self._failures.items() if not times or times[-1] <= now - self._window]:
                del self._failures[key]
        for key in [k for k, until in self._locked_until.items() if until <= now]:
            del self._locked_until[key]
