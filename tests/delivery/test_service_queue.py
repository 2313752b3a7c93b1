"""The composition root wires the queue: a "queue" child after the store,
before the listeners, and submission sessions that enqueue."""
import os

from twisted.internet import defer, reactor
from twisted.trial import unittest

from emailsvc.config import parse
from emailsvc.delivery.queue import OutboundQueue
from emailsvc.service import build


class QueueWiringTests(unittest.TestCase):
    def config(self, extra=""):
        root = os.path.abspath(self.mktemp())
        return parse(
            f'[server]\ndata_dir = "{root}"\n[store.sqlite]\npath = "{root}/db.sqlite3"\n'
            f'[store.fs]\npath = "{root}/blobs"\n'
            '[listeners.submission]\nprotocol = "submission"\nport = 2587\ntls = "starttls"\n' + extra
        )

    def test_queue_child_and_sessions(self):
        root = build(self.config(), reactor)
        names = [child.name for child in root]
        self.assertEqual(names[:2], ["store", "queue"])
        self.assertLess(names.index("queue"), names.index("submission"))
        queue = root.getServiceNamed("queue").queue
        self.assertIsInstance(queue, OutboundQueue)
        session = root.getServiceNamed("submission").factory.session_factory()
        self.assertIs(session._queue, queue)

    def test_disabled(self):
        root = build(self.config("[queue]\nenabled = false\n"), reactor)
        self.assertNotIn("queue", [child.name for child in root])
        session = root.getServiceNamed("submission").factory.session_factory()
        self.assertIsNone(session._queue)

    def test_config_rules(self):
        from emailsvc.config import ConfigError

        error = self.assertRaises(ConfigError, parse, "[queue]\nretry_initial = 600.0\nretry_max = 60.0\n")
        self.assertEqual([str(p) for p in error.problems], ["queue.retry_max: must be at least queue.retry_initial"])
        defaults = parse("").queue
        self.assertEqual((defaults.retry_initial, defaults.retry_max, defaults.expire_after, defaults.remote_port),
                         (300.0, 3600.0, 432000.0, 25))

    def test_save_to_sent(self):
        for value in (False, True):
            root = build(self.config(f"[submission]\nsave_to_sent = {str(value).lower()}\n"), reactor)
            session = root.getServiceNamed("submission").factory.session_factory()
            self.assertIs(session._save_to_sent, value)

    @defer.inlineCallbacks
    def test_runner_id(self):
        root = build(self.config('[queue]\nrunner_id = "box-1"\n'), reactor)
        store, queue = root.getServiceNamed("store"), root.getServiceNamed("queue")
        yield store.start()
        self.addCleanup(store.stop)
        yield queue.start()
        self.addCleanup(queue.stop)
        self.assertEqual(queue.runner.owner, "box-1")
