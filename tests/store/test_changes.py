"""ChangeFeed: changes committed through another connection (another
worker process) reach this process's notifier."""
import os

from twisted.internet import defer, reactor
from twisted.trial import unittest

from emailsvc.store.model import Content
from emailsvc.store.sql.backend import SQLiteBackend
from emailsvc.store.sql.changes import ChangeFeed
from emailsvc.store.sql.queue import SQLQueueStore

USER = 1


class ChangeFeedTests(unittest.TestCase):
    @defer.inlineCallbacks
    def setUp(self):
        path = os.path.join(os.path.abspath(self.mktemp()), "meta.sqlite3")
        os.makedirs(os.path.dirname(path))
        # Two backends on one file stand for two processes: nothing in
        # memory is shared between them, only the database.
        self.writer, self.watcher = SQLiteBackend(path, reactor), SQLiteBackend(path, reactor)
        for backend in (self.writer, self.watcher):
            yield backend.start()
            self.addCleanup(backend.stop)
        yield self.writer.mail.provision_user(USER)
        self.inbox = yield self.writer.mail.get_mailbox(USER, "INBOX")
        self.queued = []
        self.feed = ChangeFeed(self.watcher.db, self.watcher.mail.notifier, [lambda: self.queued.append(1)])
        self.published = []
        self.watcher.mail.notifier.subscribe(self.inbox.id, self.published.append)

    def deliver(self):
        content = Content(blob_key="k%d" % len(self.published), size=10, parsed={})
        return self.writer.mail.deliver([(self.inbox.id, ())], content)

    @defer.inlineCallbacks
    def test_publishes_a_watched_mailbox_once_per_change(self):
        yield self.feed.poll()
        self.assertEqual(self.published, [self.inbox.id])  # first sight
        yield self.feed.poll()
        self.assertEqual(self.published, [self.inbox.id])
        yield self.deliver()
        yield self.feed.poll()
        self.assertEqual(self.published, [self.inbox.id] * 2)
        yield self.writer.mail.store_flags(self.inbox.id, [1], {"\\Seen"}, "add")
        yield self.feed.poll()
        yield self.feed.poll()
        self.assertEqual(self.published, [self.inbox.id] * 3)

    @defer.inlineCallbacks
    def test_unwatched_mailboxes_are_not_read(self):
        other = yield self.writer.mail.create_mailbox(USER, "Other")
        seen = []
        subscription = self.watcher.mail.notifier.subscribe(other.id, seen.append)
        yield self.feed.poll()
        subscription.cancel()
        notifier, published = self.watcher.mail.notifier, []
        publish = notifier.publish
        self.patch(notifier, "publish", lambda *ids: (published.extend(ids), publish(*ids)))
        yield self.writer.mail.deliver([(other.id, ())], Content(blob_key="x", size=1, parsed={}))
        yield self.feed.poll()
        self.assertEqual(seen, [other.id])
        self.assertNotIn(other.id, published)

    @defer.inlineCallbacks
    def test_a_deleted_mailbox_is_published(self):
        box = yield self.writer.mail.create_mailbox(USER, "Doomed")
        seen = []
        self.watcher.mail.notifier.subscribe(box.id, seen.append)
        yield self.feed.poll()
        yield self.writer.mail.delete_mailbox(USER, "Doomed")
        yield self.feed.poll()
        self.assertEqual(seen, [box.id, box.id])

    @defer.inlineCallbacks
    def test_queued_mail_wakes_the_queue_listeners(self):
        yield self.feed.poll()
        self.assertEqual(self.queued, [1])  # first sight: mail may be waiting already
        yield self.feed.poll()
        self.assertEqual(self.queued, [1])
        yield SQLQueueStore(self.writer.db).add("ID1", "blob", 10, "a@example.test",
                                                [("b@remote.test", "remote.test")], {}, int(reactor.seconds()))
        yield self.feed.poll()
        self.assertEqual(self.queued, [1, 1])
        yield self.feed.poll()
        self.assertEqual(self.queued, [1, 1])

