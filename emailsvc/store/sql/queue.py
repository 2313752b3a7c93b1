"""The outbound queue's rows in the metadata SQL database (deltas 0004, 0005).

Every write runs in the engine's writer transaction, so leasing is
atomic: a row is handed to one runner until its lease runs out or the
runner records an outcome.  Outcomes are only recorded for rows the runner
still holds, so a runner that was presumed dead cannot overwrite the work
of the runner that took its rows over.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

from emailsvc.errors import NotFound

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


def _message_ids(connection, queue_ids) -> list[int]:
    """The row ids of the messages `queue_ids`; NotFound names the first unknown one."""
    found = {}
    for start in range(0, len(queue_ids), _CHUNK):
        chunk = queue_ids[start:start + _CHUNK]
        marks = ", ".join("?" * len(chunk))
        found.update(connection.execute(
            f"SELECT queue_id, id FROM queue_messages WHERE queue_id IN ({marks})", chunk).fetchall())
    for queue_id in queue_ids:
        if queue_id not in found:
            raise NotFound(f"no such queued message: {queue_id}")
    return sorted(set(found.values()))


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

    def _lease(self, owner: str, now: int, lease_time: int, candidates: str, parameters):
        """Lease the rows `candidates` (a SELECT of ids over `parameters`).
        @return: Deferred[list[QueuedRecipient]]."""

        def lease(connection):
            ids = [row[0] for row in connection.execute(
                "UPDATE queue_recipients SET lease_owner = ?, lease_until = ?"
                f" WHERE id IN ({candidates}) RETURNING id",
                (owner, now + lease_time, *parameters),
            )]
            return _select_ids(connection, ids)

        return self._db.write(lease)

    def lease_due(self, owner: str, now: int, lease_time: int, limit: int):
        """Lease up to `limit` pending recipients that are due and not held
        by a live lease, round-robin over destination domains so a backlog
        for one domain does not starve the others.

        @return: Deferred[list[QueuedRecipient]].
        """
        return self._lease(owner, now, lease_time,
                           "SELECT id FROM (SELECT id, next_attempt, ROW_NUMBER() OVER"
                           " (PARTITION BY domain ORDER BY next_attempt, id) AS turn FROM queue_recipients"
                           " WHERE status = 'pending' AND next_attempt <= ?"
                           " AND (lease_until IS NULL OR lease_until <= ?))"
                           " ORDER BY turn, next_attempt, id LIMIT ?", (now, now, limit))

    def lease_notifications(self, owner: str, now: int, lease_time: int, limit: int):
        """Lease finished recipients that still owe the sender a DSN.

        @return: Deferred[list[QueuedRecipient]].
        """
        return self._lease(owner, now, lease_time,
                           "SELECT id FROM queue_recipients WHERE dsn_pending = 1"
                           " AND (lease_until IS NULL OR lease_until <= ?) ORDER BY id LIMIT ?", (now, limit))

    def lease_delay_warnings(self, owner: str, now: int, lease_time: int, queued_before: int, limit: int):
        """Lease pending recipients of messages with a sender, queued before
        `queued_before` and not yet warned of the delay.

        @return: Deferred[list[QueuedRecipient]].
        """
        return self._lease(owner, now, lease_time,
                           "SELECT r.id FROM queue_recipients r JOIN queue_messages m ON m.id = r.message_id"
                           " WHERE r.status = 'pending' AND r.delay_warned = 0 AND m.created <= ?"
                           " AND m.sender != '' AND (r.lease_until IS NULL OR r.lease_until <= ?)"
                           " ORDER BY r.id LIMIT ?", (queued_before, now, limit))

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

    def _settle(self, owner: str, ids, now: int, assignment: str):
        """Set `assignment` on rows `ids` that `owner` leases, releasing them."""
        ids = list(ids)

        def settle(connection):
            connection.executemany(
                f"UPDATE queue_recipients SET {assignment}, lease_owner = NULL, lease_until = NULL,"
                " updated = ? WHERE id = ? AND lease_owner = ?",
                [(now, row_id, owner) for row_id in ids],
            )

        return self._db.write(settle)

    def notified(self, owner: str, ids, now: int):
        """The DSN for rows `ids` is durable: clear their debt and lease."""
        return self._settle(owner, ids, now, "dsn_pending = 0")

    def warned(self, owner: str, ids, now: int):
        """The delay DSN for rows `ids` is durable: never warn them again,
        and release them."""
        return self._settle(owner, ids, now, "delay_warned = 1")

    def release_owner(self, owner: str):
        """Release every row `owner` leases: called by a runner starting
        under the id of a previous run that died holding them.
        @return: Deferred[number of rows released]."""

        def release(connection):
            return connection.execute(
                "UPDATE queue_recipients SET lease_owner = NULL, lease_until = NULL WHERE lease_owner = ?",
                (owner,),
            ).rowcount

        return self._db.write(release)

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
        """Every recipient row (of one message when `queue_id` is given),
        pending ones first, soonest due first.
        @return: Deferred[list[QueuedRecipient]]."""

        def query(connection):
            order = " ORDER BY r.status != 'pending', r.next_attempt, r.id"
            if queue_id is None:
                rows = connection.execute(_SELECT + order)
            else:
                rows = connection.execute(f"{_SELECT} WHERE m.queue_id = ?{order}", (queue_id,))
            return [_row(row) for row in rows]

        return self._db.read(query)

    def retry(self, queue_ids, now: int):
        """Make the pending recipients of the messages `queue_ids` (of every
        message when None) due at `now`.  Raises NotFound, changing nothing,
        for an unknown queue id.  @return: Deferred[number of recipients]."""
        queue_ids = None if queue_ids is None else list(queue_ids)

        def retry(connection):
            sql = "UPDATE queue_recipients SET next_attempt = ?, updated = ? WHERE status = 'pending'"
            parameters = [now, now]
            if queue_ids is not None:
                ids = _message_ids(connection, queue_ids)
                sql += f" AND message_id IN ({', '.join('?' * len(ids))})"
                parameters += ids
            return connection.execute(sql, parameters).rowcount

        return self._db.write(retry)

    def delete(self, queue_ids):
        """Drop the messages `queue_ids` and their recipients, without any
        DSN; their blobs become garbage.  Raises NotFound, deleting nothing,
        for an unknown queue id.  @return: Deferred[number of recipients]."""
        queue_ids = list(queue_ids)

        def delete(connection):
            ids = _message_ids(connection, queue_ids)
            marks = ", ".join("?" * len(ids))
            count = connection.execute(
                f"SELECT count(*) FROM queue_recipients WHERE message_id IN ({marks})", ids
            ).fetchone()[0]
            # The recipient rows go with their message (ON DELETE CASCADE).
            connection.execute(f"DELETE FROM queue_messages WHERE id IN ({marks})", ids)
            return count

        return self._db.write(delete)

    def next_due(self):
        """The earliest next_attempt of a pending row, or None.
        @return: Deferred[int | None]."""

        def query(connection):
            return connection.execute(
                "SELECT min(next_attempt) FROM queue_recipients WHERE status = 'pending'"
            ).fetchone()[0]

        return self._db.read(query)
