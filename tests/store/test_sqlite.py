"""The embedded backend (SQLite + files) against the conformance suite."""
import os

from twisted.internet import defer, reactor
from twisted.trial import unittest

from emailsvc.config import StoreConfig
from emailsvc.store.fsblobs import FilesystemBlobStore
from emailsvc.store.inline import InlineBlobStore
from emailsvc.store.sql.backend import SQLiteBackend
from tests.store.conformance import StoreConformance


@defer.inlineCallbacks
def open_embedded(testcase, inline_max=StoreConfig.inline_max, sync="auto"):
    """A started SQLite backend and blob store (messages of up to
    `inline_max` bytes inline, the files synced as `sync` says) in a
    fresh directory."""
    root = testcase.mktemp()
    os.makedirs(root)
    metadata = SQLiteBackend(os.path.join(root, "meta.sqlite3"), reactor)
    files = FilesystemBlobStore(os.path.join(root, "blobs"), reactor, sync)
    blobs = InlineBlobStore(metadata.mail, files, inline_max, reactor)
    yield metadata.start()
    testcase.addCleanup(metadata.stop)
    yield blobs.start()
    return metadata, blobs


@defer.inlineCallbacks
def stored_messages(mail, blobs, user_id, name="INBOX"):
    """(record, content, raw bytes) of every message in a user's mailbox, in UID order."""
    box = yield mail.get_mailbox(user_id, name)
    messages = []
    for record in (yield mail.list_messages(box.id)):
        content = yield mail.get_content(record.content_id)
        messages.append((record, content, (yield blobs.get(content.blob_key))))
    return messages


@defer.inlineCallbacks
def stored_raw(mail, blobs, user_id, name="INBOX"):
    """The raw bytes of every message in a user's mailbox, in UID order."""
    messages = yield stored_messages(mail, blobs, user_id, name)
    return [raw for _, _, raw in messages]


class EmbeddedConformanceTests(StoreConformance, unittest.TestCase):
    def make_store(self):
        return open_embedded(self)
