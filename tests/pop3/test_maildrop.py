"""The IMailbox adapter over the store: snapshot, UIDL, sizes, marks, UPDATE."""
import io

from twisted.internet import defer
from twisted.mail import pop3
from twisted.trial import unittest
from zope.interface.verify import verifyObject

from emailsvc.pop3.maildrop import Maildrop, MaildropFactory, MessageGone, SizeCache
from tests.pop3.support import CRLF_MESSAGE, DOT_MESSAGE, LF_MESSAGE, CountingBlobs, MailFixture


class MaildropTests(unittest.TestCase):
    @defer.inlineCallbacks
    def setUp(self):
        self.fixture = yield MailFixture().start(self)
        self.records = []
        for message in (CRLF_MESSAGE, LF_MESSAGE, DOT_MESSAGE):
            self.records.append((yield self.fixture.deliver(message)))
        self.blobs = CountingBlobs(self.fixture.blobs)
        self.factory = MaildropFactory(self.fixture.mail, self.blobs)

    def login(self, user="alice"):
        return self.factory(self.fixture.users[user].id)

    @defer.inlineCallbacks
    def test_interface(self):
        maildrop = yield self.login()
        self.assertTrue(verifyObject(pop3.IMailbox, maildrop))

    @defer.inlineCallbacks
    def test_snapshot_ignores_later_deliveries(self):
        maildrop = yield self.login()
        yield self.fixture.deliver(CRLF_MESSAGE)
        self.assertEqual(len(maildrop), 3)
        self.assertEqual(len((yield self.login())), 4)

    @defer.inlineCallbacks
    def test_uidl_stable_across_sessions(self):
        first = yield self.login()
        box, _ = yield self.fixture.inbox()
        uidls = [first.getUidl(index) for index in range(3)]
        self.assertEqual(uidls, [b"%d.%d" % (box.uidvalidity, record.uid) for record in self.records])
        first.deleteMessage(0)
        yield first.sync()
        second = yield self.login()
        self.assertEqual([second.getUidl(index) for index in range(2)], uidls[1:])
        for uidl in uidls:
            self.assertTrue(0 < len(uidl) <= 70 and all(0x21 <= c <= 0x7E for c in uidl))

    @defer.inlineCallbacks
    def test_sizes_are_served_octets(self):
        maildrop = yield self.login()
        sizes = yield maildrop.listMessages()
        expected = []
        for record in self.records:
            expected.append(len((yield self.fixture.served(record))))
        self.assertEqual(sizes, expected)
        self.assertEqual(sizes[0], self.records[0].size)  # CRLF: stored as served
        self.assertEqual(sizes[1], self.records[1].size + LF_MESSAGE.count(b"\n"))
        self.assertEqual(sizes[2], self.records[2].size + 2)  # the added final CRLF
        self.assertEqual((yield maildrop.listMessages(1)), sizes[1])

    @defer.inlineCallbacks
    def test_sizes_measured_once_per_content(self):
        maildrop = yield self.login()
        yield maildrop.listMessages()
        self.assertEqual(len(self.blobs.reads), 3)
        yield (yield self.login()).listMessages()
        self.assertEqual(len(self.blobs.reads), 3)
        self.assertEqual(len(self.factory.sizes), 3)

    @defer.inlineCallbacks
    def test_large_message_measured_in_chunks(self):
        body = b"x" * 100 + b"\n"
        message = b"Subject: big\n\n" + body * 50
        yield self.fixture.deliver(message)
        maildrop = yield self.login()
        maildrop.measure_chunk = 1000
        yield maildrop.ensure_sizes([3])
        self.assertGreater(len(self.blobs.reads), 5)
        _, records = yield self.fixture.inbox()
        self.assertEqual(maildrop.size(3), len((yield self.fixture.served(records[3]))))

    @defer.inlineCallbacks
    def test_get_message_and_read(self):
        maildrop = yield self.login()
        served = yield maildrop.getMessage(1)
        self.assertIsInstance(served, io.BytesIO)
        self.assertEqual(served.read(), (yield self.fixture.served(self.records[1])))
        part = yield maildrop.read(0, 6, 10)
        self.assertEqual(part, (yield self.fixture.stored(self.records[0]))[6:16])

    @defer.inlineCallbacks
    def test_bad_indexes(self):
        maildrop = yield self.login()
        for index in (-1, 3, "0", None):
            self.assertRaises(ValueError, maildrop.getUidl, index)
            self.assertRaises(ValueError, maildrop.deleteMessage, index)
            if index is not None:  # listMessages(None) lists them all
                self.assertRaises(ValueError, maildrop.listMessages, index)

    @defer.inlineCallbacks
    def test_delete_and_undelete(self):
        maildrop = yield self.login()
        maildrop.deleteMessage(1)
        self.assertRaises(ValueError, maildrop.deleteMessage, 1)
        self.assertRaises(ValueError, maildrop.getMessage, 1)
        self.assertEqual(maildrop.live(), [0, 2])
        self.assertEqual((yield maildrop.listMessages(1)), 0)
        self.assertEqual((yield maildrop.listMessages())[1], 0)
        maildrop.undeleteMessages()
        self.assertEqual(maildrop.live(), [0, 1, 2])
        self.assertEqual((yield maildrop.sync()), 0)
        _, records = yield self.fixture.inbox()
        self.assertEqual(len(records), 3)

    @defer.inlineCallbacks
    def test_sync_expunges_deleted_and_marks_retrieved_seen(self):
        box, _ = yield self.fixture.inbox()
        # An IMAP client marked the third \Deleted without expunging: POP3
        # must not expunge what it was not told to delete.
        yield self.fixture.mail.store_flags(box.id, [self.records[2].uid], ["\\Deleted"], "add")
        maildrop = yield self.login()
        maildrop.deleteMessage(0)
        maildrop.mark_retrieved(1)
        removed = yield maildrop.sync()
        self.assertEqual(removed, 1)
        _, records = yield self.fixture.inbox()
        self.assertEqual([r.uid for r in records], [self.records[1].uid, self.records[2].uid])
        self.assertEqual(records[0].flags, frozenset({"\\Seen"}))
        self.assertEqual(records[1].flags, frozenset({"\\Deleted"}))
        self.assertEqual((yield maildrop.sync()), 0)

    @defer.inlineCallbacks
    def test_logout_without_sync_changes_nothing(self):
        maildrop = yield self.login()
        maildrop.deleteMessage(0)
        maildrop.mark_retrieved(1)
        maildrop.logout()
        _, records = yield self.fixture.inbox()
        self.assertEqual(records, [record for record in records if not record.flags])
        self.assertEqual(len(records), 3)

    @defer.inlineCallbacks
    def test_concurrent_sessions_delete_by_uid(self):
        first = yield self.login()
        second = yield self.login()
        first.deleteMessage(0)
        second.deleteMessage(0)
        second.deleteMessage(1)
        self.assertEqual((yield first.sync()), 1)
        self.assertEqual((yield second.sync()), 1)
        _, records = yield self.fixture.inbox()
        self.assertEqual([r.uid for r in records], [self.records[2].uid])

    @defer.inlineCallbacks
    def test_message_gone(self):
        maildrop = yield self.login()
        box, _ = yield self.fixture.inbox()
        yield self.fixture.mail.store_flags(box.id, [self.records[1].uid], ["\\Deleted"], "add")
        yield self.fixture.mail.expunge(box.id)
        yield self.fixture.mail.collect_garbage(self.fixture.blobs, 3600)
        yield self.assertFailure(maildrop.read(1, 0, 100), MessageGone)
        self.assertEqual((yield maildrop.listMessages(1)), self.records[1].size)
        # The fallback is not remembered as the content's size.
        self.assertIsNone(self.factory.sizes.get(self.records[1].content_id))

    @defer.inlineCallbacks
    def test_unprovisioned_user_has_an_empty_maildrop(self):
        user = yield self.fixture.directory.add_user("carol@example.test", "pw")
        maildrop = yield self.factory(user.id)
        self.assertEqual(len(maildrop), 0)
        self.assertEqual((yield maildrop.listMessages()), [])
        self.assertEqual((yield maildrop.sync()), 0)
        self.assertIsNone((yield self.fixture.mail.get_mailbox(user.id, "INBOX")))

    @defer.inlineCallbacks
    def test_stored_without_mda(self):
        # APPEND or import may store bare LFs without a Return-Path.
        box, _ = yield self.fixture.inbox("bob")
        yield self.fixture.blobs.save([(box.id, ())], LF_MESSAGE)
        maildrop = yield self.login("bob")
        self.assertEqual((yield maildrop.getMessage(0)).read(), LF_MESSAGE.replace(b"\n", b"\r\n"))


class SizeCacheTests(unittest.SynchronousTestCase):
    def test_least_recently_used_dropped(self):
        cache = SizeCache(limit=2)
        cache.put(1, 10)
        cache.put(2, 20)
        self.assertEqual(cache.get(1), 10)
        cache.put(3, 30)
        self.assertIsNone(cache.get(2))
        self.assertEqual((cache.get(1), cache.get(3), len(cache)), (10, 30, 2))

    def test_maildrop_uses_shared_cache(self):
        cache = SizeCache()
        cache.put(7, 123)

        class Record:
            uid, content_id, size = 1, 7, 100

        maildrop = Maildrop(None, None, 1, 5, [Record()], cache)
        self.assertTrue(maildrop.ensure_sizes().called)
        self.assertEqual(maildrop.size(0), 123)
