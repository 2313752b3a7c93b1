"""Password hashing: argon2id through argon2-cffi, never plain text.

One hash or verification costs ~100 ms of CPU on several cores and 64 MiB.
`hash_later` and `verify_later` run them in a small pool of their own, never
in a database reader thread (a login would hold that reader, and every other
session's query would wait behind it).  On Linux the pool's threads run at
the lowest CPU priority, niceness +19 (the lane threads argon2 starts
inherit it): sessions already logged in keep the cores, and a login gets
what CPU they leave.  An idle machine hashes as fast as ever; a saturated
one makes logins wait rather than every logged-in user's commands, and a
flood of password guesses cannot take the CPU from them.  The pool is
process-wide, so it also bounds how many logins hash at once; a
verification asked for while MAX_WAITING others wait fails at once with
`Busy`, which protocols answer as a temporary failure, so a flood of logins
does not queue without end.
"""
from __future__ import annotations

import threading

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from twisted.internet import defer
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from emailsvc.niceness import lower_this_thread

THREADS = 2
NICENESS = 19
"""Added to the niceness of the pool's threads (Linux only; capped at 19).
At +5 a saturated IMAP worker still gave logins about a quarter of its CPU
and commands queued behind them (benchmarks/README.rst, IMAP)."""
MAX_WAITING = 256
"""Verifications that may wait for a thread of the pool, in each process:
about 20 s of hashing on an idle two-core machine, around the time a
client waits for an answer."""

log = Logger()

_hasher = PasswordHasher()
_pool: ThreadPool | None = None
_lowered = threading.local()
_stopping = threading.Event()
_checks = 0  # verifications asked for and not yet done, running or waiting (reactor thread only)
_full = False  # whether refusing has been logged since the queue last drained


class Busy(Exception):
    """Too many password checks are waiting; the client should try later."""


def hash_password(password: str) -> str:
    """An argon2id hash string (blocking: call from a thread, or use `hash_later`)."""
    return _hasher.hash(password)


def verify_password(hashed: str, password: str) -> bool:
    """True when `password` matches `hashed` (blocking; see `verify_later`)."""
    try:
        return _hasher.verify(hashed, password)
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(hashed: str) -> bool:
    """True when the hash uses weaker parameters than the current ones."""
    return _hasher.check_needs_rehash(hashed)


def hash_later(password: str):
    """`hash_password` in the password pool. @return: Deferred firing with the hash."""
    return _in_pool(hash_password, password)


def verify_later(hashed: str, password: str):
    """`verify_password` in the password pool. @return: Deferred firing
    with a bool, or failing with `Busy` at once while MAX_WAITING other
    checks wait (logged once each time the pool fills up)."""
    global _checks, _full
    if _checks >= THREADS + MAX_WAITING:
        if not _full:
            _full = True
            log.warn("{waiting} password checks are waiting: refusing logins for now", waiting=MAX_WAITING)
        return defer.fail(Busy("password checks are busy"))
    _checks += 1
    return _in_pool(verify_password, hashed, password).addBoth(_checked)


def _checked(result):
    global _checks, _full
    _checks -= 1
    if _checks <= THREADS:
        _full = False  # the queue drained: log the next time it fills
    return result


def _in_pool(function, *args):
    from twisted.internet import reactor

    global _pool
    if _pool is None:
        _stopping.clear()
        _pool = ThreadPool(minthreads=0, maxthreads=THREADS, name="passwords")
        # Nothing to finish at exit: a daemon thread may die in a hash.
        _pool.threadFactory = lambda *a, **kw: threading.Thread(*a, daemon=True, **kw)
        _pool.start()
        reactor.addSystemEventTrigger("during", "shutdown", _stop)
    return deferToThreadPool(reactor, _pool, _lower_priority_then, function, *args)


def _stop():
    """Stop the pool: the hashes running finish, the waiting ones are skipped
    (at the lowest priority, up to MAX_WAITING of them could hold up the
    exit for minutes on a busy machine)."""
    global _pool
    pool, _pool = _pool, None
    if pool is not None:
        _stopping.set()
        pool.stop()


def _lower_priority_then(function, *args):
    if _stopping.is_set():
        raise Busy("shutting down")
    if not getattr(_lowered, "done", False):
        lower_this_thread(NICENESS)
        _lowered.done = True
    return function(*args)
