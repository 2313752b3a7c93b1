"""The persistent outbound queue: durable enqueueing, leases (two runners
on one store), grouping by domain, backoff on a fake clock, expiry, DSNs."""
import email

from twisted.internet import defer, reactor
from twisted.internet.task import Clock
from twisted.trial import unittest
from zope.interface.verify import verifyObject

from emailsvc.config import QueueConfig
from emailsvc.delivery.mda import MDA
from emailsvc.delivery.queue import Bouncer, OutboundQueue, QueueRunner, retry_delay
from emailsvc.delivery.remote import DELIVERED, PERMANENT, TEMPORARY, Attempt
from emailsvc.errors import BlobNotFound
from emailsvc.interfaces import IQueue
from emailsvc.store.sql.queue import Outcome, SQLQueueStore
from tests.store.test_sqlite import open_embedded, stored_raw

MESSAGE = b"From: alice@example.test\r\nTo: x@remote.test\r\nSubject: hi\r\n\r\nbody\r\n"
START = 1_800_000_000


class FakeRemote:
    """Answers per recipient from `script` (default: delivered); records calls."""

    def __init__(self, script=None):
        self.script = script or {}
        self.calls = []
        self.hold = None  # a Deferred to wait on before answering

    @defer.inlineCallbacks
    def deliver(self, domain, envelope, message):
        self.calls.append((domain, envelope.sender, envelope.recipients, message))
        if self.hold is not None:
            yield self.hold
        results = {}
        for recipient in envelope.recipients:
            status, reply = self.script.get(recipient, (DELIVERED, "250 2.0.0 Ok"))
            results[recipient] = Attempt(status, reply, f"mx.{domain}")
        return results


class QueueFixture:
    settings = QueueConfig()

    @defer.inlineCallbacks
    def setUp(self):
        self.metadata, self.blobs = yield open_embedded(self)
        self.directory = self.metadata.directory
        self.mail = self.metadata.mail
        yield self.directory.add_domain("example.test")
        self.alice = yield self.directory.add_user("alice@example.test", "pw-alice-1")
        yield self.mail.provision_user(self.alice.id)
        self.clock = Clock()
        self.clock.advance(START)
        self.store = SQLQueueStore(self.metadata.db)
        self.queue = OutboundQueue(self.store, self.blobs, self.clock)
        self.mda = MDA(self.mail, self.blobs)
        self.bouncer = Bouncer(self.directory, self.mda, self.queue, self.blobs, "mail.example.test", self.clock)
        self.remote = FakeRemote()

    def runner(self, owner="runner-1", remote=None, settings=None):
        return QueueRunner(self.store, self.blobs, remote or self.remote, self.bouncer, self.clock,
                           settings or self.settings, owner=owner)

    def inbox(self, user):
        return stored_raw(self.mail, self.blobs, user.id)

    @defer.inlineCallbacks
    def until_drained(self, tries=100):
        """Run due calls and wait (10 ms a try) until the queue holds no recipient."""
        for _ in range(tries):
            self.clock.advance(0)  # a wake may wait for a running pass to end
            if not (yield self.store.recipients()):
                return
            yield deferLater(0.01)
        self.fail(f"the queue still holds {(yield self.store.recipients())} after {tries} tries")

    @defer.inlineCallbacks
    def statuses(self):
        rows = yield self.store.recipients()
        return {row.recipient: (row.status, row.attempts) for row in rows}


class EnqueueTests(QueueFixture, unittest.TestCase):
    def test_interface(self):
        self.assertTrue(verifyObject(IQueue, self.queue))

    @defer.inlineCallbacks
    def test_enqueue_is_durable_before_it_fires(self):
        ident = yield self.queue.enqueue(MESSAGE, "alice@example.test", ["Bob@Remote.Test", "c@other.test"],
                                         {"smtputf8": False})
        rows = yield self.store.recipients(ident)
        self.assertEqual([(row.recipient, row.domain, row.status, row.next_attempt) for row in rows], [
            ("Bob@Remote.Test", "remote.test", "pending", START),
            ("c@other.test", "other.test", "pending", START),
        ])
        self.assertEqual((yield self.blobs.get(rows[0].blob_key)), MESSAGE)
        self.assertEqual(rows[0].sender, "alice@example.test")

    @defer.inlineCallbacks
    def test_garbage_collector_keeps_queued_blobs(self):
        ident = yield self.queue.enqueue(MESSAGE, "alice@example.test", ["b@remote.test"])
        (row,) = yield self.store.recipients(ident)
        yield self.mail.collect_garbage(self.blobs, -10)
        self.assertEqual((yield self.blobs.get(row.blob_key)), MESSAGE)
        yield self.runner().run_once()
        self.assertEqual((yield self.store.recipients()), [])
        yield self.mail.collect_garbage(self.blobs, -10)
        yield self.assertFailure(self.blobs.get(row.blob_key), BlobNotFound)


class LeaseTests(QueueFixture, unittest.TestCase):
    @defer.inlineCallbacks
    def test_leases_are_exclusive_and_expire(self):
        yield self.queue.enqueue(MESSAGE, "alice@example.test", [f"r{i}@remote.test" for i in range(6)])
        first, second = yield defer.gatherResults([
            self.store.lease_due("a", START, 60, 4), self.store.lease_due("b", START, 60, 4)])
        self.assertEqual(len(first) + len(second), 6)
        self.assertFalse({row.id for row in first} & {row.id for row in second})
        self.assertEqual((yield self.store.lease_due("c", START + 59, 60, 10)), [])
        # "a" died: after its lease "c" takes its rows; "a" can no longer record.
        taken = yield self.store.lease_due("c", START + 60, 60, 10)
        self.assertEqual(len(taken), 6)
        stale = [Outcome(row.id, "delivered", 1, START, "250 ok") for row in first]
        self.assertEqual((yield self.store.record("a", stale, START + 61)), [])
        self.assertEqual(set((yield self.statuses()).values()), {("pending", 0)})

    @defer.inlineCallbacks
    def test_two_runners_never_send_a_recipient_twice(self):
        hold = defer.Deferred()
        remotes = [FakeRemote(), FakeRemote()]
        for remote in remotes:
            remote.hold = hold
        for n in range(5):
            yield self.queue.enqueue(MESSAGE, "alice@example.test", [f"a{n}@one.test", f"b{n}@two.test"])
        settings = QueueConfig(batch_size=4)
        one, two = (self.runner(name, remote, settings) for name, remote in zip(("one", "two"), remotes))
        passes = [one.run_once(), two.run_once()]
        # Both runners are inside a delivery at once, on disjoint leases.
        for _ in range(200):
            if all(remote.calls for remote in remotes):
                break
            yield deferLater(0.01)
        self.assertTrue(all(remote.calls for remote in remotes))
        hold.callback(None)
        yield defer.gatherResults(passes)
        for _ in range(10):  # at most a pass per recipient
            if not (yield self.store.recipients()):
                break
            yield defer.gatherResults([one.run_once(), two.run_once()])
        sent = [recipient for remote in remotes for _, _, recipients, _ in remote.calls for recipient in recipients]
        expected = [f"{p}{n}@{d}.test" for n in range(5) for p, d in (("a", "one"), ("b", "two"))]
        self.assertEqual(sorted(sent), sorted(expected))

    @defer.inlineCallbacks
    def test_fair_share_between_domains(self):
        yield self.queue.enqueue(MESSAGE, "alice@example.test", [f"r{i}@big.test" for i in range(20)])
        yield self.queue.enqueue(MESSAGE, "alice@example.test", ["one@small.test"])
        rows = yield self.store.lease_due("a", START, 60, 4)
        self.assertIn("small.test", {row.domain for row in rows})


class RunnerTests(QueueFixture, unittest.TestCase):
    @defer.inlineCallbacks
    def test_one_connection_per_domain_per_message(self):
        yield self.queue.enqueue(MESSAGE, "alice@example.test",
                                 ["a@one.test", "b@two.test", "c@one.test", "d@ONE.test"])
        yield self.runner().run_once()
        calls = sorted((domain, recipients) for domain, _, recipients, _ in self.remote.calls)
        self.assertEqual(calls, [("one.test", ("a@one.test", "c@one.test", "d@ONE.test")),
                                 ("two.test", ("b@two.test",))])
        self.assertEqual(self.remote.calls[0][3], MESSAGE)
        # All delivered: the message left the queue.
        self.assertEqual((yield self.store.recipients()), [])

    @defer.inlineCallbacks
    def test_backoff_schedule_then_expiry_and_dsn(self):
        self.assertEqual([retry_delay(n, 300, 3600) for n in range(1, 7)], [300, 600, 1200, 2400, 3600, 3600])
        self.remote.script = {"x@down.test": (TEMPORARY, "451 4.4.1 Connection refused")}
        yield self.queue.enqueue(MESSAGE, "alice@example.test", ["x@down.test"])
        runner = self.runner(settings=QueueConfig(delay_warning=0))  # no delay DSN: a single DSN below
        times = []
        # Scan every minute of fake time for a little over five days.
        for _ in range(5 * 1440 + 10):
            before = len(self.remote.calls)
            yield runner.run_once()
            if len(self.remote.calls) > before:
                times.append(int(self.clock.seconds()) - START)
            rows = yield self.store.recipients()
            if not rows or rows[0].status != "pending":
                break
            self.clock.advance(60)
        self.assertEqual(times[:6], [0, 300, 900, 2100, 4500, 8100])
        self.assertTrue(all(b - a <= 3600 + 60 for a, b in zip(times, times[1:])))
        self.assertEqual(times[-1], 5 * 86400)
        # Expired, DSN delivered to Alice's INBOX, message gone.
        self.assertEqual(rows, [])
        (dsn,) = yield self.inbox(self.alice)
        report = email.message_from_bytes(dsn)
        self.assertEqual(report["Return-Path"], "<>")
        self.assertEqual(report.get_content_type(), "multipart/report")
        self.assertEqual(report.get_param("report-type"), "delivery-status")
        text, status, headers = report.get_payload()
        self.assertEqual(status.get_content_type(), "message/delivery-status")
        blocks = status.get_payload()
        self.assertEqual(blocks[0]["Reporting-MTA"], "dns; mail.example.test")
        self.assertEqual(blocks[1]["Final-Recipient"], "rfc822; x@down.test")
        self.assertEqual(blocks[1]["Action"], "failed")
        self.assertEqual(blocks[1]["Status"], "5.4.7")
        self.assertIn("451 4.4.1 Connection refused", blocks[1]["Diagnostic-Code"])
        self.assertEqual(headers.get_content_type(), "text/rfc822-headers")
        self.assertIn(b"Subject: hi", headers.get_payload(decode=True))
        self.assertIn("Gave up after 5 days", text.get_payload())

    @defer.inlineCallbacks
    def test_permanent_failure_bounces_at_once_and_others_continue(self):
        self.remote.script = {"bad@remote.test": (PERMANENT, "550 5.1.1 No such user"),
                              "later@remote.test": (TEMPORARY, "450 4.2.1 Busy")}
        yield self.queue.enqueue(MESSAGE, "alice@example.test",
                                 ["ok@remote.test", "bad@remote.test", "later@remote.test"])
        yield self.runner().run_once()
        self.assertEqual((yield self.statuses()), {"ok@remote.test": ("delivered", 1),
                                                   "bad@remote.test": ("failed", 1),
                                                   "later@remote.test": ("pending", 1)})
        (dsn,) = yield self.inbox(self.alice)
        report = email.message_from_bytes(dsn)
        blocks = report.get_payload()[1].get_payload()
        self.assertEqual([block["Final-Recipient"] for block in blocks[1:]], ["rfc822; bad@remote.test"])
        self.assertEqual(blocks[1]["Status"], "5.1.1")
        self.assertEqual(blocks[1]["Remote-MTA"], "dns; mx.remote.test")
        # The retry delivers the last one; no second DSN.
        self.remote.script = {}
        self.clock.advance(300)
        yield self.runner().run_once()
        self.assertEqual((yield self.store.recipients()), [])
        self.assertEqual(len((yield self.inbox(self.alice))), 1)

    @defer.inlineCallbacks
    def test_never_bounce_a_bounce(self):
        self.remote.script = {"gone@remote.test": (PERMANENT, "550 5.1.1 No such user")}
        yield self.queue.enqueue(b"Subject: a DSN\r\n\r\nx\r\n", "", ["gone@remote.test"])
        yield self.runner().run_once()
        self.assertEqual((yield self.store.recipients()), [])
        self.assertEqual((yield self.inbox(self.alice)), [])
        self.assertEqual(len(self.remote.calls), 1)

    @defer.inlineCallbacks
    def test_remote_sender_gets_queued_dsn(self):
        self.remote.script = {"gone@remote.test": (PERMANENT, "550 5.1.1 No such user")}
        yield self.queue.enqueue(MESSAGE, "someone@far.test", ["gone@remote.test"])
        yield self.runner().run_once()
        rows = yield self.store.recipients()
        self.assertEqual([(row.recipient, row.sender) for row in rows], [("someone@far.test", "")])
        dsn = yield self.blobs.get(rows[0].blob_key)
        self.assertIn(b"report-type=delivery-status", dsn)

    @defer.inlineCallbacks
    def test_local_error_is_temporary(self):
        class Broken:
            def deliver(self, domain, envelope, message):
                raise RuntimeError("bug")

        yield self.queue.enqueue(MESSAGE, "alice@example.test", ["x@remote.test"])
        yield self.runner(remote=Broken()).run_once()
        self.assertEqual((yield self.statuses()), {"x@remote.test": ("pending", 1)})
        self.flushLoggedErrors(RuntimeError)

    @defer.inlineCallbacks
    def test_wake_and_periodic_scan(self):
        runner = self.runner()
        self.queue.listeners.append(runner.wake)
        yield runner.start()
        self.addCleanup(runner.stop)
        yield self.queue.enqueue(MESSAGE, "alice@example.test", ["x@remote.test"])
        yield self.until_drained()
        self.assertEqual(len(self.remote.calls), 1)

    @defer.inlineCallbacks
    def test_a_backlog_larger_than_a_batch_drains_without_waiting_for_a_scan(self):
        for n in range(7):
            yield self.queue.enqueue(MESSAGE, "alice@example.test", [f"r{n}@remote{n}.test"])
        runner = self.runner(settings=QueueConfig(batch_size=3))
        yield runner.start()
        self.addCleanup(runner.stop)
        # One scan at start and no wake: the clock never reaches the next scan.
        yield self.until_drained()
        self.assertEqual(len(self.remote.calls), 7)


def deferLater(seconds):
    from twisted.internet import task

    return task.deferLater(reactor, seconds, lambda: None)


class RestartTests(QueueFixture, unittest.TestCase):
    @defer.inlineCallbacks
    def crash(self, owner):
        """Queue three recipients, lease them all to `owner`, then lose the
        process (the database is closed and opened again)."""
        from emailsvc.store.sql.backend import SQLiteBackend

        yield self.queue.enqueue(MESSAGE, "alice@example.test", ["a@one.test", "b@two.test"])
        yield self.queue.enqueue(MESSAGE, "alice@example.test", ["c@one.test"])
        leased = yield self.store.lease_due(owner, START, int(self.settings.lease_time), 100)
        self.assertEqual(len(leased), 3)
        path = self.metadata.db.path
        yield self.metadata.stop()
        reopened = SQLiteBackend(path, reactor)
        yield reopened.start()
        self.addCleanup(reopened.stop)
        self.store = SQLQueueStore(reopened.db)
        self.queue = OutboundQueue(self.store, self.blobs, self.clock)

    def sent(self):
        return sorted(r for _, _, recipients, _ in self.remote.calls for r in recipients)

    @defer.inlineCallbacks
    def test_queue_survives_a_crash_with_leased_rows(self):
        yield self.crash("dead-runner")
        runner = self.runner("restarted")
        yield runner.start()
        self.addCleanup(runner.stop)
        yield runner.run_once()
        self.assertEqual(self.remote.calls, [])  # another runner's leases still hold
        self.clock.advance(self.settings.lease_time)
        yield runner.run_once()
        self.assertEqual(self.sent(), ["a@one.test", "b@two.test", "c@one.test"])
        self.assertEqual((yield self.store.recipients()), [])
        yield runner.run_once()
        self.assertEqual(len(self.remote.calls), 3)

    @defer.inlineCallbacks
    def test_restarted_runner_takes_its_own_rows_back_at_once(self):
        yield self.crash("mx1")
        # Another, live runner holds a row of its own: it keeps it.
        yield self.queue.enqueue(MESSAGE, "alice@example.test", ["d@two.test"])
        (kept,) = yield self.store.lease_due("mx2", START, int(self.settings.lease_time), 10)
        self.assertEqual(kept.recipient, "d@two.test")
        runner = self.runner(owner=None, settings=QueueConfig(runner_id="mx1"))
        self.assertEqual(runner.owner, "mx1")
        yield runner.start()
        self.addCleanup(runner.stop)
        yield runner.run_once()  # waits for the scan made at start
        self.assertEqual(self.sent(), ["a@one.test", "b@two.test", "c@one.test"])
        (row,) = yield self.store.recipients()
        self.assertEqual((row.recipient, row.status, row.lease_owner), ("d@two.test", "pending", "mx2"))

    def test_default_runner_id_is_the_host_name(self):
        import socket

        self.assertEqual(self.runner(owner=None).owner, socket.gethostname())


class DelayWarningTests(QueueFixture, unittest.TestCase):
    settings = QueueConfig(delay_warning=3600, expire_after=4 * 3600)

    @defer.inlineCallbacks
    def test_one_delayed_dsn_per_recipient_then_the_bounce(self):
        self.remote.script = {"x@down.test": (TEMPORARY, "451 4.4.1 Connection refused"),
                              "y@down.test": (TEMPORARY, "421 4.4.2 Too busy")}
        yield self.queue.enqueue(MESSAGE, "alice@example.test", ["x@down.test", "y@down.test", "ok@up.test"])
        # A bounce that cannot be delivered either is never warned about.
        yield self.queue.enqueue(MESSAGE, "", ["x@down.test"])
        runner = self.runner()
        arrivals = []
        for _ in range(5 * 60):  # minutes: the recipients expire after 4 hours
            if not (yield self.store.recipients()):
                break
            yield runner.run_once()
            count = len((yield self.inbox(self.alice)))
            if count > len(arrivals):
                arrivals.append(int(self.clock.seconds()) - START)
            self.clock.advance(60)
        self.assertEqual((yield self.store.recipients()), [])
        self.assertEqual(arrivals, [3600, 4 * 3600])
        delayed, failed = yield self.inbox(self.alice)
        report = email.message_from_bytes(delayed)
        self.assertEqual(report["Subject"], "Delayed Mail (still being retried)")
        text, status, _ = report.get_payload()
        until = email.utils.formatdate(START + 4 * 3600, usegmt=True)
        self.assertIn(f"will keep trying until {until}", text.get_payload())
        blocks = status.get_payload()[1:]
        self.assertEqual([(b["Final-Recipient"], b["Action"], b["Status"], b["Will-Retry-Until"]) for b in blocks],
                         [("rfc822; x@down.test", "delayed", "4.4.1", until),
                          ("rfc822; y@down.test", "delayed", "4.4.2", until)])
        self.assertEqual(blocks[0]["Diagnostic-Code"], "smtp; 451 4.4.1 Connection refused")
        self.assertEqual(blocks[0]["Remote-MTA"], "dns; mx.down.test")
        blocks = email.message_from_bytes(failed).get_payload()[1].get_payload()[1:]
        self.assertEqual([(b["Final-Recipient"], b["Action"]) for b in blocks],
                         [("rfc822; x@down.test", "failed"), ("rfc822; y@down.test", "failed")])

    @defer.inlineCallbacks
    def test_disabled_with_zero(self):
        self.remote.script = {"x@down.test": (TEMPORARY, "451 4.4.1 Connection refused")}
        yield self.queue.enqueue(MESSAGE, "alice@example.test", ["x@down.test"])
        self.clock.advance(3 * 3600)
        yield self.runner(settings=QueueConfig(delay_warning=0, expire_after=4 * 3600)).run_once()
        self.assertEqual((yield self.inbox(self.alice)), [])
        yield self.runner().run_once()  # the same row, with warnings on
        self.assertEqual(len((yield self.inbox(self.alice))), 1)


class BoundaryTests(unittest.TestCase):
    def test_delivery_code_has_no_sql(self):
        import os
        import re

        import emailsvc.delivery

        sql = re.compile(r"\b(SELECT|INSERT INTO|DELETE FROM|UPDATE \w+ SET)\b")
        folder = os.path.dirname(emailsvc.delivery.__file__)
        names = [name for name in os.listdir(folder) if name.endswith(".py")]
        self.assertIn("queue.py", names)
        self.assertNotIn("sqlqueue.py", names)
        for name in names:
            with open(os.path.join(folder, name), encoding="utf-8") as handle:
                self.assertIsNone(sql.search(handle.read()), name)
