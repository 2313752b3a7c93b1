"""SQLite engine: WAL, one writer thread with group commit, a reader pool.

Write jobs queue to a single writer thread.  Each job runs in its own
SAVEPOINT, and every job that queued while the previous COMMIT was being
synced joins the next transaction, so N concurrent deliveries cost one
fsync rather than N.  A failing job rolls back only its own savepoint.

Reads bounded by a few rows or a page run at once in the calling thread
(`read_now`), on that thread's own connection; reads whose cost grows with
a mailbox (search of a large mailbox, every UID of a mailbox) go to the
reader pool (`read`).

Several processes (server.workers) may write to one file.  Their writer
threads take turns on an exclusive flock(2) of `PATH-writer.lock` around
each transaction: the next writer wakes as soon as the lock is free,
where SQLite's busy handler would sleep and poll.  Other programs (the
admin command) still just wait on SQLite's own lock.

The search index (an FTS5 trigram table, `contents_text`) lives in a file
of its own, `PATH-search`, which readers attach as `search`; only the
indexer (emailsvc.store.sql.indexer) writes it, outside the writer thread.
The writer's connection never attaches it: BEGIN IMMEDIATE takes the write
lock of every attached database, so the writer and the indexer would each
wait for the other's whole transaction.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import queue
import sqlite3
import threading

from twisted.internet import defer
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from emailsvc.store.sql.deltas import apply_deltas
from emailsvc.store.sql.search import fold

_STOP = object()
_MAX_BATCH = 512


class SQLiteDatabase:
    """Runs functions of a `sqlite3.Connection` in threads; returns Deferreds."""

    log = Logger()
    dialect = "sqlite"

    def __init__(self, path: str, reactor, readers: int = 4):
        self.path = path
        self.search_path = path + "-search"
        self._reactor = reactor
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._pool = ThreadPool(minthreads=0, maxthreads=readers, name="sqlite-read")
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()

    def connect(self, search: bool = True) -> sqlite3.Connection:
        """A new connection in autocommit mode, the search file attached as
        `search` unless told otherwise; the caller closes it."""
        connection = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=FULL")
        connection.execute("PRAGMA foreign_keys=ON")
        connection.execute("PRAGMA busy_timeout=10000")
        # Once, here: redefining a function expires every statement the
        # connection has prepared, so each later query is compiled again.
        connection.create_function("imap_fold", 1, fold, deterministic=True)
        if search:
            connection.execute("ATTACH DATABASE ? AS search", (self.search_path,))
            # The indexer deletes pending rows once its commit here is
            # durable: a commit lost after that would miss search results.
            connection.execute("PRAGMA search.synchronous=FULL")
        return connection

    def _connect(self, search: bool = True) -> sqlite3.Connection:
        """`connect()`, closed by `stop()`."""
        connection = self.connect(search)
        with self._lock:
            self._connections.append(connection)
        return connection

    def _create_search(self, connection: sqlite3.Connection):
        """Create the search file unless it exists (under the writer lock,
        before any reader attaches it).  A new search file (the first one,
        or one that was lost) has every content to index: they are logged
        as pending first, so a crash in between only logs them again."""
        search = sqlite3.connect(self.search_path, isolation_level=None)
        try:
            if search.execute("SELECT 1 FROM sqlite_master WHERE name = 'contents_text'").fetchone():
                return
            connection.execute("INSERT INTO search_pending (content_id) SELECT id FROM contents")
            search.execute("PRAGMA journal_mode=WAL")
            search.execute("CREATE VIRTUAL TABLE contents_text USING fts5(text, tokenize = 'trigram')")
        finally:
            search.close()

    def start(self) -> defer.Deferred:
        """Open the database, apply pending schema deltas and create the
        search file if needed. @return: Deferred."""
        ready = defer.Deferred()

        def run():
            lock = None
            try:
                connection = self._connect(search=False)
                lock = os.open(self.path + "-writer.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
                with _exclusive(lock):
                    apply_deltas(connection, self.dialect)
                    self._create_search(connection)
            except BaseException:
                failure = Failure()
                if lock is not None:
                    os.close(lock)
                self._reactor.callFromThread(ready.errback, failure)
                return
            self._reactor.callFromThread(ready.callback, None)
            try:
                self._write_loop(connection, lock)
            finally:
                os.close(lock)

        self._pool.start()
        self._writer = threading.Thread(target=run, name="sqlite-write", daemon=True)
        self._writer.start()
        return ready

    def stop(self) -> defer.Deferred:
        """Finish queued writes, then close every connection. @return: Deferred."""
        if self._writer is None:
            return defer.succeed(None)
        writer, self._writer = self._writer, None

        def finish():
            self._jobs.put(_STOP)
            writer.join()
            self._pool.stop()
            with self._lock:
                for connection in self._connections:
                    connection.close()
                self._connections.clear()

        return deferToThreadPool(self._reactor, self._reactor.getThreadPool(), finish)

    def read(self, function, *args) -> defer.Deferred:
        """Run `function(connection, *args)` in a reader thread, for reads
        whose cost grows with a mailbox or a table (search of a large
        mailbox, every UID of a mailbox, every user). @return: Deferred."""
        return deferToThreadPool(self._reactor, self._pool, self._read, function, args)

    def read_now(self, function, *args) -> defer.Deferred:
        """Run `function(connection, *args)` at once, in the calling thread,
        for reads bounded by a few rows or a page (a user, a mailbox, a page
        of records).  Such a query costs less than the hand-off to a reader
        thread and back: two thread wake-ups, each paid with the GIL held
        (about 0.1 ms on a VM), and a turn of the reactor; under load the
        hand-offs made STORE three times slower. @return: a fired Deferred."""
        return defer.maybeDeferred(self._read, function, args)

    def _read(self, function, args):
        """`function(connection, *args)` in a read transaction on this thread's connection."""
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = self._local.connection = self._connect()
        connection.execute("BEGIN")
        try:
            return function(connection, *args)
        finally:
            connection.execute("COMMIT")

    def write(self, function, *args) -> defer.Deferred:
        """Run `function(connection, *args)` in a committed transaction.

        @return: Deferred firing with its result after COMMIT.
        """
        done = defer.Deferred()
        self._jobs.put((function, args, done))
        return done

    def _write_loop(self, connection: sqlite3.Connection, lock: int):
        while True:
            job = self._jobs.get()
            if job is _STOP:
                return
            batch = [job]
            stop_after = False
            while len(batch) < _MAX_BATCH:
                try:
                    more = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if more is _STOP:
                    stop_after = True
                    break
                batch.append(more)
            with _exclusive(lock):
                self._run_batch(connection, batch)
            if stop_after:
                return

    def _run_batch(self, connection, batch):
        # A job alone needs no savepoint: its failure rolls the transaction
        # back.  (Each statement releases and retakes the GIL, which costs
        # most under load.)
        savepoints = len(batch) > 1
        outcomes = []
        try:
            connection.execute("BEGIN IMMEDIATE")
            for function, args, done in batch:
                if savepoints:
                    connection.execute("SAVEPOINT job")
                try:
                    result = function(connection, *args)
                except BaseException:
                    outcomes.append((done, Failure()))
                    if savepoints:
                        connection.execute("ROLLBACK TO job")
                        connection.execute("RELEASE job")
                else:
                    if savepoints:
                        connection.execute("RELEASE job")
                    outcomes.append((done, result))
            failed_alone = not savepoints and isinstance(outcomes[0][1], Failure)
            connection.execute("ROLLBACK" if failed_alone else "COMMIT")
        except BaseException:
            failure = Failure()
            self.log.failure("SQLite transaction failed", failure)
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            outcomes = [(done, failure) for _, _, done in batch]
        for done, outcome in outcomes:
            self._reactor.callFromThread(_fire, done, outcome)


@contextlib.contextmanager
def _exclusive(fd: int):
    """flock(LOCK_EX) on `fd` for the duration of a `with` block."""
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)


def _fire(done: defer.Deferred, outcome):
    if isinstance(outcome, Failure):
        done.errback(outcome)
    else:
        done.callback(outcome)

