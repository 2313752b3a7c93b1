"""The search index behind delivery: content ids logged in search_pending
are scanned until the indexer has put their text in the search file, so
SEARCH TEXT/BODY gives the same answer before and after indexing."""
import json
import os
import sqlite3

from twisted.internet import defer, reactor
from twisted.trial import unittest

from emailsvc.config import parse
from emailsvc.service import build
from emailsvc.store.parse import parse_message
from emailsvc.store.sql import deltas as deltas_module
from emailsvc.store.sql import indexer as indexer_module
from emailsvc.store.sql import mail as mail_module
from emailsvc.store.sql.backend import SQLiteBackend
from emailsvc.store.sql.indexer import BATCH, SearchIndexer

from tests.store.test_sqlite import open_embedded

USER = 1
MESSAGES = [
    b"Subject: lunch\r\nFrom: bob@example.test\r\n\r\nSandwiches at noon, then the quarterly review.\r\n",
    b"Subject: report\r\nFrom: carol@example.test\r\n\r\nThe Quarterly numbers are attached.\r\n",
    b"Subject: misc\r\nFrom: dave@example.test\r\n\r\nNothing to see here.\r\n",
]
# needle -> UIDs of MESSAGES that contain it (case-insensitive substrings)
EXPECTED = {
    "quarterly": [1, 2],
    "ndwic": [1],            # the middle of a word
    "UARTERL": [1, 2],
    "at noon, then": [1],
    "hing to s": [3],
    "absent": [],
}


class SearchIndexTests(unittest.TestCase):
    timeout = 30  # an indexer that cannot drain fails here rather than after 120 s

    @defer.inlineCallbacks
    def setUp(self):
        self.metadata, self.blobs = yield open_embedded(self)
        self.db, self.mail = self.metadata.db, self.metadata.mail
        self.path = self.db.path
        yield self.mail.provision_user(USER)
        self.inbox = yield self.mail.get_mailbox(USER, "INBOX")

    @defer.inlineCallbacks
    def open(self):
        """Start a backend on the database file (again)."""
        self.metadata = SQLiteBackend(self.path, reactor)
        yield self.metadata.start()
        self.addCleanup(self.metadata.stop)
        self.db, self.mail = self.metadata.db, self.metadata.mail

    def start_indexer(self):
        indexer = SearchIndexer(self.db, reactor)
        indexer.start()
        self.addCleanup(indexer.stop)
        return indexer

    @defer.inlineCallbacks
    def deliver(self, raw):
        (record,) = yield self.blobs.save([(self.inbox.id, ())], raw)
        return record

    @defer.inlineCallbacks
    def test_small_mailboxes_are_searched_and_indexed_at_once_larger_in_a_thread(self):
        self.patch(mail_module, "_READ_NOW_KEYS", 2)
        for raw in MESSAGES[:2]:
            yield self.deliver(raw)
        small = self.mail.search(self.inbox.id, ("text", "quarterly"))
        self.assertEqual([uid for uid, _ in self.successResultOf(small)], [1, 2])
        self.assertEqual(list(self.successResultOf(self.mail.mailbox_index(self.inbox.id))[1]), [1, 2])
        yield self.deliver(MESSAGES[2])
        index = self.mail.mailbox_index(self.inbox.id)
        self.assertNoResult(index)
        self.assertEqual(list((yield index)[1]), [1, 2, 3])
        large = self.mail.search(self.inbox.id, ("text", "quarterly"))
        self.assertNoResult(large)
        self.assertEqual([uid for uid, _ in (yield large)], [1, 2])
        uids = self.mail.search_uids(self.inbox.id, ("text", "quarterly"))
        self.assertNoResult(uids)
        self.assertEqual(list((yield uids)[0]), [1, 2])

    @defer.inlineCallbacks
    def results(self):
        """{needle: UIDs} for EXPECTED's needles, through TEXT and BODY."""
        found = {}
        for needle in EXPECTED:
            for kind in ("text", "body"):
                rows = yield self.mail.search(self.inbox.id, (kind, needle))
                found.setdefault(needle, [uid for uid, _ in rows])
                self.assertEqual([uid for uid, _ in rows], found[needle], (kind, needle))
        return found

    def pending(self):
        return self.db.read(lambda c: [row[0] for row in c.execute(
            "SELECT content_id FROM search_pending ORDER BY seq")])

    def indexed(self):
        """{rowid: text} of the search file, read through a connection of its own."""
        connection = sqlite3.connect(self.db.search_path)
        try:
            return dict(connection.execute("SELECT rowid, text FROM contents_text"))
        finally:
            connection.close()

    @defer.inlineCallbacks
    def test_same_results_before_and_after_indexing(self):
        records = []
        for raw in MESSAGES:
            records.append((yield self.deliver(raw)))
        ids = [record.content_id for record in records]
        self.assertEqual((yield self.pending()), ids)
        self.assertEqual(self.indexed(), {})
        self.assertEqual((yield self.results()), EXPECTED)

        yield self.start_indexer().drained()
        self.assertEqual((yield self.pending()), [])
        self.assertEqual(sorted(self.indexed()), ids)
        self.assertIn("Sandwiches", self.indexed()[ids[0]])
        self.assertEqual((yield self.results()), EXPECTED)

    @defer.inlineCallbacks
    def test_reused_content_id_does_not_match_the_old_text(self):
        indexer = self.start_indexer()
        old = yield self.deliver(b"Subject: old\r\n\r\nzebra crossing\r\n")
        yield indexer.drained()
        yield indexer.stop()
        yield self.mail.store_flags(self.inbox.id, [old.uid], ["\\Deleted"], "add")
        yield self.mail.expunge(self.inbox.id)
        yield self.mail.collect_garbage(self.blobs, 3600)
        # AUTOINCREMENT never hands out an id twice; rewind it as a restored
        # backup, say, would.
        yield self.db.write(lambda c: c.execute(
            "UPDATE sqlite_sequence SET seq = seq - 1 WHERE name = 'contents'"))
        new = yield self.deliver(b"Subject: new\r\n\r\nyak shaving\r\n")
        self.assertEqual(new.content_id, old.content_id)
        self.assertIn("zebra", self.indexed()[old.content_id])

        for needle, uids in [("zebra", []), ("shaving", [new.uid])]:
            self.assertEqual([u for u, _ in (yield self.mail.search(self.inbox.id, ("text", needle)))], uids)
        yield self.start_indexer().drained()
        self.assertNotIn("zebra", self.indexed()[new.content_id])
        for needle, uids in [("zebra", []), ("shaving", [new.uid])]:
            self.assertEqual([u for u, _ in (yield self.mail.search(self.inbox.id, ("text", needle)))], uids)

    @defer.inlineCallbacks
    def test_collected_mail_leaves_the_search_file(self):
        indexer = self.start_indexer()
        kept = yield self.deliver(b"Subject: kept\r\n\r\nordinary words\r\n")
        doomed = yield self.deliver(b"Subject: doomed\r\n\r\nconfidential merger plans\r\n")
        yield indexer.drained()
        self.assertEqual(sorted(self.indexed()), [kept.content_id, doomed.content_id])
        yield self.mail.store_flags(self.inbox.id, [doomed.uid], ["\\Deleted"], "add")
        yield self.mail.expunge(self.inbox.id)
        yield self.mail.collect_garbage(self.blobs, 3600)
        self.assertEqual((yield self.pending()), [doomed.content_id])
        yield indexer.drained()
        self.assertEqual(list(self.indexed()), [kept.content_id])
        connection = sqlite3.connect(self.db.search_path)
        self.addCleanup(connection.close)
        self.assertEqual(connection.execute(
            "SELECT count(*) FROM contents_text WHERE contents_text MATCH 'merger'").fetchone()[0], 0)

    @defer.inlineCallbacks
    def test_backlog_of_several_batches(self):
        count = 2 * BATCH + 5
        raws = [b"Subject: bulk %d\r\n\r\nitem-%05d of the backlog\r\n" % (n, n) for n in range(count)]
        yield defer.gatherResults([self.deliver(raw) for raw in raws])
        batches = []
        forget = indexer_module._forget

        def counted(connection, last):
            batches.append(last)
            forget(connection, last)

        self.patch(indexer_module, "_forget", counted)
        yield self.start_indexer().drained()
        self.assertEqual(len(batches), 3)
        self.assertEqual((yield self.pending()), [])
        self.assertEqual(len(self.indexed()), count)
        rows = yield self.mail.search(self.inbox.id, ("text", "ITEM-00131"))
        self.assertEqual(len(rows), 1)

    @defer.inlineCallbacks
    def test_restart_with_rows_indexed_but_still_pending(self):
        for raw in MESSAGES:
            yield self.deliver(raw)
        indexer = self.start_indexer()
        yield indexer.drained()
        yield indexer.stop()
        # A crash after the search file's commit, before the pending rows
        # were deleted: the rows are there again, the index has the text.
        yield self.db.write(lambda c: c.execute("INSERT INTO search_pending (content_id) SELECT id FROM contents"))
        indexed = self.indexed()
        yield self.metadata.stop()
        yield self.open()
        self.assertEqual(len((yield self.pending())), len(MESSAGES))
        self.assertEqual((yield self.results()), EXPECTED)
        yield self.start_indexer().drained()
        self.assertEqual((yield self.pending()), [])
        self.assertEqual(self.indexed(), indexed)
        self.assertEqual((yield self.results()), EXPECTED)

    @defer.inlineCallbacks
    def test_lost_search_file_is_rebuilt(self):
        for raw in MESSAGES:
            yield self.deliver(raw)
        yield self.start_indexer().drained()
        indexed = self.indexed()
        yield self.metadata.stop()
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(self.db.search_path + suffix):
                os.remove(self.db.search_path + suffix)
        yield self.open()
        self.assertEqual(len((yield self.pending())), len(MESSAGES))
        self.assertEqual((yield self.results()), EXPECTED)
        yield self.start_indexer().drained()
        self.assertEqual(self.indexed(), indexed)


class MigrationTests(unittest.TestCase):
    @defer.inlineCallbacks
    def test_mail_indexed_by_delta_2_moves_to_the_search_file(self):
        path = os.path.join(os.path.abspath(self.mktemp()), "meta.sqlite3")
        os.makedirs(os.path.dirname(path))
        every = deltas_module.deltas
        # The schema as it was before 0007_search_pending.
        patcher = self.patch(deltas_module, "deltas",
                             lambda dialect: [delta for delta in every(dialect) if delta[0] < 7])
        connection = sqlite3.connect(path, isolation_level=None)
        deltas_module.apply_deltas(connection, "sqlite")
        patcher.restore()
        connection.execute("INSERT INTO mailboxes (id, user_id, name, uidvalidity) VALUES (1, 1, 'INBOX', 1)")
        for uid, raw in enumerate(MESSAGES, 1):
            connection.execute("INSERT INTO contents (id, blob_key, size, parsed, created) VALUES (?, ?, 1, ?, 0)",
                               (10 + uid, f"k{uid}", json.dumps(parse_message(raw))))
            connection.execute("INSERT INTO messages (mailbox_id, uid, modseq, internal_date, size, content_id)"
                               " VALUES (1, ?, 1, 0, 1, ?)", (uid, 10 + uid))
        connection.close()

        backend = SQLiteBackend(path, reactor)
        yield backend.start()
        self.addCleanup(backend.stop)
        tables = yield backend.db.read(lambda c: [row[0] for row in c.execute(
            "SELECT name FROM main.sqlite_master WHERE name LIKE 'contents_text%'")])
        self.assertEqual(tables, [])
        pending = yield backend.db.read(lambda c: [row[0] for row in c.execute(
            "SELECT content_id FROM search_pending ORDER BY content_id")])
        self.assertEqual(pending, [11, 12, 13])

        def uids(needle):
            return backend.mail.search(1, ("text", needle)).addCallback(lambda rows: [uid for uid, _ in rows])

        self.assertEqual((yield uids("quarterly")), [1, 2])
        indexer = SearchIndexer(backend.db, reactor)
        indexer.start()
        self.addCleanup(indexer.stop)
        yield indexer.drained()
        self.assertEqual((yield uids("quarterly")), [1, 2])
        indexed = yield backend.db.read(lambda c: [row[0] for row in c.execute(
            "SELECT rowid FROM search.contents_text ORDER BY rowid")])
        self.assertEqual(indexed, [11, 12, 13])


class WiringTests(unittest.TestCase):
    def config(self):
        root = os.path.abspath(self.mktemp())
        return parse(f'[server]\ndata_dir = "{root}"\n[store.sqlite]\npath = "{root}/db.sqlite3"\n'
                     f'[store.fs]\npath = "{root}/blobs"\n')

    def test_only_the_main_process_indexes(self):
        names = [child.name for child in build(self.config(), reactor)]
        self.assertIn("search-indexer", names)
        self.assertLess(names.index("store"), names.index("search-indexer"))
        worker = build(self.config(), reactor, adopted={})
        self.assertNotIn("search-indexer", [child.name for child in worker])

