"""Changes committed by other processes, fed to this process's notifier.

When worker processes share one SQLite database, a delivery in one process
must still wake the IMAP sessions idling in another, and mail submitted in
a worker must wake the queue runner in the main process.  Each process
polls a few times a second: the highest MODSEQ of every mailbox one of its
sessions watches (every change to a mailbox raises it; a deleted mailbox
has no row), and the last id handed out to a queued message.

A mailbox seen for the first time is published too (its session may have
read the mailbox just before a change the first poll cannot tell from the
baseline), and the first poll wakes the queue listeners (mail may have
been queued before it).  A spurious publish costs one re-read or scan; a
missed one would leave an IDLE client, or a message, waiting.
"""
from __future__ import annotations

import json

POLL_INTERVAL = 0.25
_MAILBOX_VERSIONS = "SELECT id, highestmodseq FROM mailboxes WHERE id IN (SELECT value FROM json_each(?))"
_LAST_QUEUED = "SELECT seq FROM sqlite_sequence WHERE name = 'queue_messages'"


def _snapshot(connection, mailbox_ids):
    versions = dict(connection.execute(_MAILBOX_VERSIONS, (json.dumps(mailbox_ids),)).fetchall())
    row = connection.execute(_LAST_QUEUED).fetchone()
    return versions, row[0] if row else 0


class ChangeFeed:
    """`poll()` publishes what other processes changed since the last poll.

    `queue_listeners` (a live list, such as the outbound queue's) are
    called with no arguments when a message was queued.
    """

    def __init__(self, db, notifier, queue_listeners=()):
        self._db = db
        self._notifier = notifier
        self._versions: dict[int, int | None] = {}
        self._last_queued: int | None = None
        self.queue_listeners = queue_listeners

    def poll(self):
        """Read the database once and publish the differences. @return: Deferred."""
        watched = self._notifier.mailbox_ids()
        return self._db.read(_snapshot, watched).addCallback(self._compare, watched)

    def _compare(self, snapshot, watched):
        versions, last_queued = snapshot
        changed = []
        for mailbox_id in watched:
            version = versions.get(mailbox_id)
            if mailbox_id not in self._versions or self._versions[mailbox_id] != version:
                changed.append(mailbox_id)
            self._versions[mailbox_id] = version
        for gone in self._versions.keys() - set(watched):
            del self._versions[gone]
        if changed:
            self._notifier.publish(*changed)
        if last_queued != self._last_queued:
            for listener in list(self.queue_listeners):
                listener()
        self._last_queued = last_queued
