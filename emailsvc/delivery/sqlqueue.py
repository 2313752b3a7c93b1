"""The outbound queue's rows in the metadata SQL database (delta 0004).

Every write runs in the engine's writer transaction, so leasing is
atomic: a row is handed to one runner until its lease runs out or the
runner records an outcome.  Outcomes are only recorded for rows the runner
still holds, so a runner that was presumed dead cannot overwrite the work
of the runner that took its rows over.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

PENDING, DELIVERED, FAILED, EXPIRED = "pending", "delivered", "failed", "expired"
_CHUNK = 500


@dataclass(frozen=True)
class QueuedRecipient:
    """One leased (or listed) recipient row with its message's envelope."""

    id: int
    message_id: int
    queue_id: str
    recipient: str
    domain: str
    status: str
    attempts: int
    next_attempt: int
    last_reply: str
    remote_host: str
    dsn_pending: bool
    blob_key: str
    size: int
    sender: str
    created: int
    envelope: dict = field(default_factory=dict)
    lease_owner: str | None = None


@dataclass(frozen=True)
class Outcome:
    """What to record for one leased row after an attempt."""

    id: int
    status: str
    attempts: int
    next_attempt: int
    reply: str
    remote_host: str = ""
    dsn_pending: bool = False


_SELECT = (
    "SELECT r.id, r.message_id, m.queue_id, r.recipient, r.domain, r.status, r.attempts,"
    " r.next_attempt, r.last_reply, r.remote_host, r.dsn_pending, m.blob_key, m.size, m.sender,"
    " m.created, m.envelope, r.lease_owner"
    " FROM queue_recipients r JOIN queue_messages m ON m.id = r.message_id"
)


def _row(row) -> QueuedRecipient:
    return QueuedRecipient(
        id=row[0], message_id=row[1], queue_id=row[2], recipient=row[3], domain=row[4], status=row[5],
        attempts=row[6], next_attempt=row[7], last_reply=row[8], remote_host=row[9],
        dsn_pending=bool(row[10]), blob_key=row[11], size=row[12], sender=row[13], created=row[14],
        envelope=json.loads(row[15]), lease_owner=row[16],
    )


def _select_ids(connection, ids) -> list[QueuedRecipient]:
    found = []
    ids = list(ids)
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start:start + _CHUNK]
        marks = ", ".join("?" * len(chunk))
        found.extend(_row(row) for row in connection.execute(f"{_SELECT} WHERE r.id IN ({marks})", chunk))
    found.sort(key=lambda item: item.id)
    return found


class SQLQueueStore:
    """Queue rows over a database engine (SQLiteDatabase); every method
    returns a Deferred."""

    def __init__(self, db):
        self._db = db

    def add(self, queue_id: str, blob_key: str, size: int, sender: str, recipients, envelope: dict, now: int):
        """Queue a message whose blob is durable already, for `recipients`
        ((address, domain) pairs), due at once.  @return: Deferred[message id]."""
        recipients = list(recipients)

        def add(connection):
            message_id = connection.execute(
                "INSERT INTO queue_messages (queue_id, blob_key, size, sender, created, envelope)"
                " VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
                (queue_id, blob_key, size, sender, now, json.dumps(envelope)),
            ).fetchone()[0]
            connection.executemany(
                "INSERT INTO queue_recipients (message_id, recipient, domain, next_attempt, updated)"
                " VALUES (?, ?, ?, ?, ?)",
                [(message_id, address, domain, now, now) for address, domain in recipients],
            )
            return message_id

        return self._db.write(add)

    def lease_due(self, owner: str, now: int, lease_time: int, limit: int):
        """Lease up to `limit` pending recipients that are due and not held
        by a live lease, round-robin over destination domains so a backlog
        for one domain does not starve the others.

        @return: Deferred[list[QueuedRecipient]].
        """

        def lease(connection):
            ids = [row[0] for row in connection.execute(
                "UPDATE queue_recipients SET lease_owner = ?, lease_until = ? WHERE id IN ("
                " SELECT id FROM (SELECT id, next_attempt, ROW_NUMBER() OVER"
                "  (PARTITION BY domain ORDER BY next_attempt, id) AS turn FROM queue_recipients"
                "  WHERE status = 'pending' AND next_attempt <= ?"
                "  AND (lease_until IS NULL OR lease_until <= ?))"
                " ORDER BY turn, next_attempt, id LIMIT ?) RETURNING id",
                (owner, now + lease_time, now, now, limit),
            )]
            return _select_ids(connection, ids)

        return self._db.write(lease)

    def lease_notifications(self, owner: str, now: int, lease_time: int, limit: int):
        """Lease finished recipients that still owe the sender a DSN.

        @return: Deferred[list[QueuedRecipient]].
        """

        def lease(connection):
            ids = [row[0] for row in connection.execute(
                "UPDATE queue_recipients SET lease_owner = ?, lease_until = ? WHERE id IN ("
                " SELECT id FROM queue_recipients WHERE dsn_pending = 1"
                " AND (lease_until IS NULL OR lease_until <= ?) ORDER BY id LIMIT ?) RETURNING id",
                (owner, now + lease_time, now, limit),
            )]
            return _select_ids(connection, ids)

        return self._db.write(lease)

    def record(self, owner: str, outcomes, now: int):
        """Store attempt outcomes for rows `owner` still leases, releasing
        them.  @return: Deferred[list of row ids actually updated]."""
        outcomes = list(outcomes)

        def record(connection):
            updated = []
            for outcome in outcomes:
                row = connection.execute(
                    "UPDATE queue_recipients SET status = ?, attempts = ?, next_attempt = ?, last_reply = ?,"
                    " remote_host = ?, dsn_pending = ?, lease_owner = NULL, lease_until = NULL, updated = ?"
                    " WHERE id = ? AND lease_owner = ? RETURNING id",
                    (outcome.status, outcome.attempts, outcome.next_attempt, outcome.reply[:1000],
                     outcome.remote_host, int(outcome.dsn_pending), now, outcome.id, owner),
                ).fetchone()
                if row is not None:
                    updated.append(row[0])
            return updated

        return self._db.write(record)

    def notified(self, owner: str, ids, now: int):
        """The DSN for rows `ids` is durable: clear their debt and lease."""
        ids = list(ids)

        def done(connection):
            connection.executemany(
                "UPDATE queue_recipients SET dsn_pending = 0, lease_owner = NULL, lease_until = NULL,"
                " updated = ? WHERE id = ? AND lease_owner = ?",
                [(now, row_id, owner) for row_id in ids],
            )

        return self._db.write(done)

    def release(self, owner: str, ids):
        """Give rows back unchanged (a runner stopping mid-way)."""
        ids = list(ids)

        def release(connection):
            connection.executemany(
                "UPDATE queue_recipients SET lease_owner = NULL, lease_until = NULL"
                " WHERE id = ? AND lease_owner = ?",
                [(row_id, owner) for row_id in ids],
            )

        return self._db.write(release)

    def purge_finished(self):
        """Delete messages with no pending recipient and no DSN owed; their
        blobs become garbage.  @return: Deferred[list of blob keys freed]."""

        def purge(connection):
            rows = connection.execute(
                "DELETE FROM queue_messages WHERE NOT EXISTS (SELECT 1 FROM queue_recipients r"
                " WHERE r.message_id = queue_messages.id AND (r.status = 'pending' OR r.dsn_pending = 1))"
                " RETURNING blob_key"
            ).fetchall()
            return [row[0] for row in rows]

        return self._db.write(purge)

    def recipients(self, queue_id: str | None = None):
        """Every recipient row (of one message when `queue_id` is given).
        @return: Deferred[list[QueuedRecipient]]."""

        def query(connection):
            if queue_id is None:
                rows = connection.execute(f"{_SELECT} ORDER BY r.id")
            else:
                rows = connection.execute(f"{_SELECT} WHERE m.queue_id = ? ORDER BY r.id", (queue_id,))
            return [_row(row) for row in rows]

        return self._db.read(query)

    def next_due(self):
        """The earliest next_attempt of a pending row, or None.
        @return: Deferred[int | None]."""

        def query(connection):
            return connection.execute(
                "SELECT min(next_attempt) FROM queue_recipients WHERE status = 'pending'"
            ).fetchone()[0]

        return self._db.read(query)
