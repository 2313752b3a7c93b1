"""A process killed between the blob write and the SQL commit loses nothing
that was committed and leaves only an orphan blob, which GC collects."""
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap

from twisted.internet import defer, reactor
from twisted.trial import unittest

from emailsvc.store.fsblobs import FilesystemBlobStore
from emailsvc.store.sql.backend import SQLiteBackend

CHILD = textwrap.dedent("""
    import os, signal, sys
    from twisted.internet import defer, task
    from emailsvc.store.fsblobs import FilesystemBlobStore
    from emailsvc.store.sql.backend import SQLiteBackend
    from emailsvc.store.model import Content

    @defer.inlineCallbacks
    def main(reactor, root, mode):
        backend = SQLiteBackend(os.path.join(root, "meta.sqlite3"), reactor)
        blobs = FilesystemBlobStore(os.path.join(root, "blobs"), reactor)
        yield backend.start()
        yield blobs.start()
        yield backend.mail.provision_user(1)
        inbox = yield backend.mail.get_mailbox(1, "INBOX")
        data = b"Subject: committed\\r\\n\\r\\nkept\\r\\n"
        key = yield blobs.put(data)
        yield backend.mail.deliver([(inbox.id, ())], Content(key, len(data)))
        key = yield blobs.put(b"Subject: doomed\\r\\n\\r\\nlost\\r\\n")
        if mode == "after-blob":
            os.kill(os.getpid(), signal.SIGKILL)

        def insert_then_die(connection):
            connection.execute(
                "INSERT INTO contents (blob_key, size, parsed, created) VALUES (?, 1, '{}', 0)", (key,))
            os.kill(os.getpid(), signal.SIGKILL)

        yield backend.db.write(insert_then_die)

    task.react(main, sys.argv[1:])
""")


class CrashTests(unittest.TestCase):
    def crash(self, mode):
        root = os.path.abspath(self.mktemp())
        os.makedirs(root)
        child = subprocess.run([sys.executable, "-c", CHILD, root, mode], capture_output=True, timeout=60)
        self.assertEqual(child.returncode, -signal.SIGKILL, child.stderr.decode())
        return root

    @defer.inlineCallbacks
    def check_recovery(self, root):
        database = sqlite3.connect(os.path.join(root, "meta.sqlite3"))
        self.assertEqual(database.execute("PRAGMA integrity_check").fetchone()[0], "ok")
        database.close()
        backend = SQLiteBackend(os.path.join(root, "meta.sqlite3"), reactor)
        blobs = FilesystemBlobStore(os.path.join(root, "blobs"), reactor)
        yield backend.start()
        self.addCleanup(backend.stop)
        yield blobs.start()
        inbox = yield backend.mail.get_mailbox(1, "INBOX")
        (record,) = yield backend.mail.list_messages(inbox.id)
        content = yield backend.mail.get_content(record.content_id)
        self.assertEqual((yield blobs.get(content.blob_key)), b"Subject: committed\r\n\r\nkept\r\n")
        self.assertEqual(len((yield blobs.keys_older_than(2 ** 40))), 2)
        removed = yield backend.mail.collect_garbage(blobs, grace=-60)
        self.assertEqual(removed, 1)
        self.assertEqual((yield blobs.keys_older_than(2 ** 40)), [content.blob_key])

    def test_kill_after_blob_write(self):
        return self.check_recovery(self.crash("after-blob"))

    def test_kill_inside_sql_transaction(self):
        return self.check_recovery(self.crash("in-transaction"))
