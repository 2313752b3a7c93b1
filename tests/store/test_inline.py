"""InlineBlobStore: small messages committed with their rows, the rest as blobs."""
from twisted.internet import defer, reactor
from twisted.trial import unittest
from zope.interface.verify import verifyObject

from emailsvc.errors import BlobNotFound, NotFound
from emailsvc.interfaces import IBlobStore, IInlineMailStore
from emailsvc.store.fsblobs import FilesystemBlobStore
from emailsvc.store.inline import INLINE, InlineBlobStore
from tests.store.test_sqlite import open_embedded

SMALL = b"Subject: small\r\n\r\nshort body\r\n"
LARGE = b"Subject: large\r\n\r\n" + b"x" * 200 + b"\r\n"


class InlineBlobStoreTests(unittest.TestCase):
    @defer.inlineCallbacks
    def open(self, inline_max):
        metadata, self.blobs = yield open_embedded(self, inline_max)
        self.mail = metadata.mail
        yield self.mail.provision_user(1)
        self.inbox = yield self.mail.get_mailbox(1, "INBOX")

    @defer.inlineCallbacks
    def save(self, message, flags=(), internal_date=None):
        (record,) = yield self.blobs.save([(self.inbox.id, flags)], message, internal_date)
        content = yield self.mail.get_content(record.content_id)
        return record, content

    def files(self):
        """The keys in the blob store behind the inline one."""
        return self.blobs.keys_older_than(reactor.seconds() + 60)

    @defer.inlineCallbacks
    def test_interfaces(self):
        yield self.open(inline_max=100)
        self.assertTrue(verifyObject(IInlineMailStore, self.mail))
        self.assertTrue(verifyObject(IBlobStore, self.blobs))
        self.assertTrue(verifyObject(IBlobStore, FilesystemBlobStore(self.mktemp(), reactor)))

    @defer.inlineCallbacks
    def test_a_store_that_cannot_keep_bytes_gets_every_message_as_a_blob(self):
        yield self.open(inline_max=100)
        deliveries = []

        class PlainMailStore:  # an IMailStore, not an IInlineMailStore
            def deliver(self, targets, content, internal_date=None):
                deliveries.append(content.blob_key)
                return defer.succeed([])

        plain = InlineBlobStore(PlainMailStore(), self.blobs, 100, reactor)
        yield plain.save([(self.inbox.id, ())], SMALL)
        self.assertEqual((yield self.files()), deliveries)

    @defer.inlineCallbacks
    def test_small_message_is_kept_with_its_rows(self):
        yield self.open(inline_max=100)
        record, content = yield self.save(SMALL, ["\\Seen"], internal_date=1_000_000)
        self.assertTrue(content.blob_key.startswith(INLINE))
        self.assertEqual((record.flags, record.internal_date, record.size), ({"\\Seen"}, 1_000_000, len(SMALL)))
        self.assertEqual(content.parsed["subject"], "small")
        self.assertEqual((yield self.blobs.get(content.blob_key)), SMALL)
        self.assertEqual((yield self.blobs.get(content.blob_key, 9, 5)), b"small")
        self.assertEqual((yield self.files()), [])

    @defer.inlineCallbacks
    def test_a_message_of_the_limit_is_kept_one_byte_more_is_not(self):
        yield self.open(inline_max=len(SMALL))
        _, kept = yield self.save(SMALL)
        _, blob = yield self.save(SMALL + b"!")
        self.assertTrue(kept.blob_key.startswith(INLINE))
        self.assertEqual((yield self.files()), [blob.blob_key])

    @defer.inlineCallbacks
    def test_a_message_parsed_in_a_thread_is_kept_too(self):
        yield self.open(inline_max=1024 * 1024)
        big = b"Subject: big\r\n\r\n" + (b"z" * 78 + b"\r\n") * 4000
        self.assertGreater(len(big), 256 * 1024)  # emailsvc.store.inline parses it in a thread
        _, content = yield self.save(big)
        self.assertEqual((content.blob_key[:len(INLINE)], content.parsed["subject"]), (INLINE, "big"))
        self.assertEqual((yield self.blobs.get(content.blob_key)), big)
        self.assertEqual((yield self.files()), [])

    @defer.inlineCallbacks
    def test_larger_message_goes_to_the_blob_store(self):
        yield self.open(inline_max=100)
        _, content = yield self.save(LARGE)
        self.assertFalse(content.blob_key.startswith(INLINE))
        self.assertEqual((yield self.files()), [content.blob_key])
        self.assertEqual((yield self.blobs.get(content.blob_key, 9, 5)), b"large")

    @defer.inlineCallbacks
    def test_zero_keeps_every_message_in_the_blob_store(self):
        yield self.open(inline_max=0)
        _, content = yield self.save(SMALL)
        self.assertEqual((yield self.files()), [content.blob_key])

    @defer.inlineCallbacks
    def test_queued_mail_goes_to_the_blob_store(self):
        yield self.open(inline_max=100)
        key = yield self.blobs.put(SMALL)
        self.assertEqual((yield self.files()), [key])
        yield self.blobs.delete(key)
        self.assertEqual((yield self.files()), [])
        yield self.assertFailure(self.blobs.get(key), BlobNotFound)

    @defer.inlineCallbacks
    def test_collected_like_any_message(self):
        yield self.open(inline_max=100)
        small, small_content = yield self.save(SMALL)
        large, large_content = yield self.save(LARGE)
        yield self.mail.store_flags(self.inbox.id, [small.uid, large.uid], ["\\Deleted"], "add")
        yield self.mail.expunge(self.inbox.id)
        self.assertEqual((yield self.mail.collect_garbage(self.blobs, grace=-60)), 2)
        for content in (small_content, large_content):
            yield self.assertFailure(self.blobs.get(content.blob_key), BlobNotFound)
        self.assertEqual((yield self.files()), [])

    @defer.inlineCallbacks
    def test_failed_save_leaves_nothing(self):
        yield self.open(inline_max=100)
        self.inbox = yield self.mail.create_mailbox(1, "Doomed")
        yield self.mail.delete_mailbox(1, "Doomed")
        yield self.assertFailure(self.save(SMALL), NotFound)
        self.assertEqual((yield self.mail.collect_garbage(self.blobs, grace=-60)), 0)
