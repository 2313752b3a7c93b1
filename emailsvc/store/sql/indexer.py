"""The search indexer: the FTS5 trigram index, filled behind delivery.

Trigram indexing costs a few milliseconds of CPU per message, more than
the rest of a delivery's transaction, so it stays out of the writer
thread.  A delivery (or the garbage collector) only logs the content id in
`search_pending` (delta 0007), and search scans the text of a pending id
(emailsvc.store.sql.search); this indexer, in a thread of its own at a
lower CPU priority, with a connection of its own, takes the oldest pending
rows a batch at a time:

1. in the search file, it deletes each id's row and inserts the current
   text of the ids whose content still exists, and commits;
2. then it deletes those pending rows from the main file, through the
   writer (its own connection never writes the main file).

A crash between the two commits leaves the rows pending, and indexing
them again changes nothing.  A content inserted or deleted meanwhile has
a newer pending row, which the next batch takes.

The indexer works through a backlog batch after batch, then looks again
every POLL_INTERVAL seconds (or at once for `drained()`): deliveries, in
this process or another, wake nothing, so those of a busy second share
one batch, one commit of the search file and one write job.  Only one
process (the main one) runs it.
"""
from __future__ import annotations

import threading

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.threads import blockingCallFromThread, deferToThreadPool
from twisted.logger import Logger

from emailsvc.niceness import lower_this_thread

BATCH = 64
POLL_INTERVAL = 1.0
NICENESS = 10
"""Added to the niceness of the indexer's thread (Linux only)."""

_PENDING = (
    "SELECT p.seq, p.content_id, json_extract(c.parsed, '$.text') FROM search_pending p"
    " LEFT JOIN contents c ON c.id = p.content_id ORDER BY p.seq LIMIT ?"
)


def _forget(connection, last: int):
    """Delete the pending rows up to `last` (a write job)."""
    connection.execute("DELETE FROM search_pending WHERE seq <= ?", (last,))


class SearchIndexer(Service):
    """Keeps the search file of a `SQLiteDatabase` in step with its contents.

    `start()` and `stop()` return Deferreds; `drained()` fires once the
    indexer has found nothing pending.
    """

    log = Logger()

    def __init__(self, db, reactor):
        self.setName("search-indexer")
        self._db = db
        self._reactor = reactor
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._waiters: list[defer.Deferred] = []

    def start(self) -> defer.Deferred:
        """Open a connection and start the thread. @return: Deferred."""
        connection = self._db.connect()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, args=(connection,), name="search-index", daemon=True)
        self._thread.start()
        return defer.succeed(None)

    def stop(self) -> defer.Deferred:
        """Finish the batch in hand and end the thread. @return: Deferred."""
        if self._thread is None:
            return defer.succeed(None)
        thread, self._thread = self._thread, None
        self._stopping = True
        self._wake.set()
        return deferToThreadPool(self._reactor, self._reactor.getThreadPool(), thread.join)

    def drained(self) -> defer.Deferred:
        """A Deferred firing once a look for pending rows, begun after this
        call, found none."""
        waiter = defer.Deferred()
        with self._lock:
            self._waiters.append(waiter)
        self._wake.set()
        return waiter

    def _run(self, connection):
        lower_this_thread(NICENESS)
        try:
            while not self._stopping:
                self._wake.clear()
                with self._lock:
                    waiters, self._waiters = self._waiters, []
                try:
                    found = self._index_batch(connection)
                except Exception:
                    self.log.failure("search indexing failed")
                    found = None
                if found == 0:
                    for waiter in waiters:
                        self._reactor.callFromThread(waiter.callback, None)
                else:
                    with self._lock:
                        self._waiters[:0] = waiters
                if not found:  # nothing pending, or a failure to retry later
                    self._wake.wait(POLL_INTERVAL)
        finally:
            connection.close()

    def _index_batch(self, connection) -> int:
        """Index the oldest pending rows; returns how many there were."""
        rows = connection.execute(_PENDING, (BATCH,)).fetchall()
        if not rows:
            return 0
        # Every row of an id has the same text (one snapshot): index it once.
        texts = {content_id: text for _, content_id, text in rows}
        # BEGIN, not BEGIN IMMEDIATE, which would also lock the main file.
        connection.execute("BEGIN")
        try:
            connection.executemany("DELETE FROM search.contents_text WHERE rowid = ?",
                                   [(content_id,) for content_id in texts])
            connection.executemany("INSERT INTO search.contents_text (rowid, text) VALUES (?, ?)",
                                   [(content_id, text) for content_id, text in texts.items() if text])
            connection.execute("COMMIT")
        finally:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
        blockingCallFromThread(self._reactor, self._db.write, _forget, rows[-1][0])
        return len(rows)
