"""Schema delta 0006: the counters on existing mailbox rows are backfilled,
then kept in step by triggers."""
import sqlite3

from twisted.trial import unittest

from emailsvc.store.sql.deltas import _statements, deltas

COUNTERS = 6


def apply(connection, numbers):
    for number, _, sql in deltas("sqlite"):
        if number in numbers:
            for statement in _statements(sql):
                connection.execute(statement)


class MailboxCounterTests(unittest.SynchronousTestCase):
    def test_existing_messages_are_counted(self):
        connection = sqlite3.connect(":memory:")
        apply(connection, range(1, COUNTERS))
        connection.execute("INSERT INTO contents (id, blob_key, size, parsed, created) VALUES (1, 'k', 10, '{}', 0)")
        for box in (1, 2, 3):
            connection.execute("INSERT INTO mailboxes (id, user_id, name, uidvalidity) VALUES (?, 1, ?, 1)",
                               (box, f"box{box}"))
        connection.executemany(
            "INSERT INTO messages (mailbox_id, uid, modseq, flags, internal_date, size, content_id)"
            " VALUES (?, ?, 1, ?, 0, ?, 1)",
            [(1, 1, 0, 10), (1, 2, 1, 20), (1, 3, 5, 30), (2, 1, 1, 7)])
        apply(connection, {COUNTERS})
        rows = connection.execute(
            "SELECT id, message_count, unseen_count, total_size FROM mailboxes ORDER BY id").fetchall()
        self.assertEqual(rows, [(1, 3, 1, 60), (2, 1, 0, 7), (3, 0, 0, 0)])
        connection.execute("UPDATE messages SET mailbox_id = 3 WHERE mailbox_id = 1 AND uid = 1")
        rows = connection.execute(
            "SELECT id, message_count, unseen_count, total_size FROM mailboxes ORDER BY id").fetchall()
        self.assertEqual(rows, [(1, 2, 0, 50), (2, 1, 0, 7), (3, 1, 1, 10)])
