"""Submission through the queue to fake remote servers on loopback, found
through the fake DNS: mixed recipients each get the right outcome."""
import email
import smtplib

from twisted.cred.portal import Portal
from twisted.internet import defer, reactor
from twisted.internet.task import Clock
from twisted.internet.threads import deferToThread
from twisted.trial import unittest

from emailsvc import tls
from emailsvc.config import QueueConfig, SMTPConfig, TLSConfig
from emailsvc.cred.checker import DirectoryChecker
from emailsvc.cred.realm import MailRealm
from emailsvc.cred.throttle import AuthThrottle
from emailsvc.delivery.mda import MDA
from emailsvc.delivery.queue import Bouncer, OutboundQueue, QueueRunner
from emailsvc.delivery.remote import RemoteDelivery
from emailsvc.interfaces import ISubmitter
from emailsvc.service import InFlight
from emailsvc.smtp.submission import SubmissionFactory, SubmissionSession, submitter_factory
from emailsvc.store.sql.queue import SQLQueueStore
from tests.delivery.test_remote import start_fleet
from tests.fakedns import DNSTestCase
from tests.store.test_sqlite import open_embedded, stored_raw

HOST = "mail.example.test"
PASSWORD = "alice-secret-1"
MESSAGE = (b"From: Alice <alice@example.test>\r\nTo: several\r\nSubject: mixed\r\n\r\n"
           b"Hello.\r\n.a line with a dot\r\n")


class EndToEndTests(DNSTestCase, unittest.TestCase):
    @defer.inlineCallbacks
    def setUp(self):
        super().setUp()
        self.metadata, self.blobs = yield open_embedded(self)
        directory, self.mail = self.metadata.directory, self.metadata.mail
        yield directory.add_domain("example.test")
        self.alice = yield directory.add_user("alice@example.test", PASSWORD)
        self.bob = yield directory.add_user("bob@example.test", "bob-secret-2")
        for user in (self.alice, self.bob):
            yield self.mail.provision_user(user.id)
        cert, key = tls.ensure_certificate(TLSConfig(), self.mktemp(), HOST)
        context = tls.server_context(cert, key)
        self.port, self.servers = start_fleet(self, 2, context)
        self.dns.mx("remote.test", (10, "mx.remote.test"))
        self.dns.a("mx.remote.test", "127.0.0.1")
        self.dns.mx("down.test", (10, "mx.down.test"))
        self.dns.a("mx.down.test", "127.0.0.9")  # nothing listens there
        self.servers[0].script.rcpt_replies["nobody@remote.test"] = b"550 5.1.1 No such user here"
        self.clock = Clock()
        self.clock.advance(reactor.seconds())
        settings = QueueConfig(remote_port=self.port, connect_timeout=2, command_timeout=10)
        mda = MDA(self.mail, self.blobs)
        self.store = SQLQueueStore(self.metadata.db)
        self.queue = OutboundQueue(self.store, self.blobs, self.clock)
        remote = RemoteDelivery(self.resolver, reactor, settings, HOST)
        bouncer = Bouncer(directory, mda, self.queue, self.blobs, HOST, self.clock)
        # The runner's clock is fake (to jump to retries); its network is real.
        self.runner = QueueRunner(self.store, self.blobs, remote, bouncer, self.clock, settings)
        realm = MailRealm({ISubmitter: submitter_factory(directory)})
        checker = DirectoryChecker(directory, AuthThrottle(reactor, 10, 600, 900), reactor)

        def session():
            return SubmissionSession(directory=directory, mda=mda, signer=None, hostname=HOST, clock=reactor,
                                     inflight=InFlight(), queue=self.queue)

        factory = SubmissionFactory(session, HOST, SMTPConfig(max_errors=1000), lambda address: Portal(realm, [checker.for_client(address)]),
                                    tls_context=context, clock=reactor)
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.submission_port = port.getHost().port

    def submit(self, recipients, message=MESSAGE):
        def run():
            with smtplib.SMTP("127.0.0.1", self.submission_port, timeout=10) as client:
                client.starttls()
                client.login("alice@example.test", PASSWORD)
                return client.sendmail("alice@example.test", recipients, message)

        return deferToThread(run)

    def inbox(self, user):
        return stored_raw(self.mail, self.blobs, user.id)

    @defer.inlineCallbacks
    def statuses(self):
        return {row.recipient: row.status for row in (yield self.store.recipients())}

    @defer.inlineCallbacks
    def test_mixed_recipients(self):
        refused = yield self.submit(["bob@example.test", "carol@remote.test", "nobody@remote.test",
                                     "dave@down.test"])
        self.assertEqual(refused, {})
        # Local: in Bob's INBOX at once.  Remote: queued before the 250.
        (local,) = yield self.inbox(self.bob)
        self.assertTrue(local.endswith(MESSAGE))
        self.assertEqual((yield self.statuses()), {"carol@remote.test": "pending", "nobody@remote.test": "pending",
                                                   "dave@down.test": "pending"})
        yield self.runner.run_once()
        self.assertEqual((yield self.statuses()), {"carol@remote.test": "delivered",
                                                   "nobody@remote.test": "failed", "dave@down.test": "pending"})
        (got,) = self.servers[0].received
        self.assertEqual(got.recipients, ["carol@remote.test"])
        self.assertTrue(got.tls)
        self.assertTrue(got.message.endswith(MESSAGE))
        self.assertIn(b"with ESMTPSA id", got.message)
        # nobody@ was refused with 5xx: an immediate DSN to Alice.
        (dsn,) = yield self.inbox(self.alice)
        report = email.message_from_bytes(dsn)
        blocks = report.get_payload()[1].get_payload()
        self.assertEqual([block["Final-Recipient"] for block in blocks[1:]], ["rfc822; nobody@remote.test"])
        self.assertEqual(blocks[1]["Diagnostic-Code"], "smtp; 550 5.1.1 No such user here")
        # down.test is retried on schedule, then expires with a second DSN.
        (row,) = [row for row in (yield self.store.recipients()) if row.status == "pending"]
        self.assertEqual((row.attempts, row.next_attempt - int(self.clock.seconds())), (1, 300))
        self.clock.advance(5 * 86400)
        yield self.runner.run_once()
        self.assertEqual((yield self.store.recipients()), [])
        dsns = yield self.inbox(self.alice)
        self.assertEqual(len(dsns), 2)
        expired = email.message_from_bytes(dsns[1]).get_payload()[1].get_payload()[1]
        self.assertEqual((expired["Final-Recipient"], expired["Status"]), ("rfc822; dave@down.test", "5.4.7"))

    @defer.inlineCallbacks
    def test_relay_tricks_with_a_queue(self):
        """With the queue on, an authenticated user reaches plain remote
        addresses, and every relay trick is still refused."""
        from tests.integration.test_submission_relay import TRICKS

        def run():
            codes = {}
            with smtplib.SMTP("127.0.0.1", self.submission_port, timeout=10) as client:
                client.starttls()
                client.login("alice@example.test", PASSWORD)
                for recipient in TRICKS:
                    client.docmd("MAIL", "FROM:<alice@example.test>")
                    codes[recipient] = client.docmd("RCPT", f"TO:<{recipient}>")[0]
                    client.rset()
            return codes

        codes = yield deferToThread(run)
        accepted = sorted(recipient for recipient, code in codes.items() if code == 250)
        # RFC 5321 4.1.1.3: source routes are accepted and ignored, so those
        # two are plain victim@elsewhere.example, which Alice may mail.
        self.assertEqual(accepted, ["@example.test:victim@elsewhere.example",
                                    "@mail.example.test,@example.test:victim@elsewhere.example",
                                    "victim@elsewhere.example", "victim@example.test.elsewhere.example"])
        self.assertTrue(all(code >= 500 for recipient, code in codes.items() if recipient not in accepted), codes)
        self.assertEqual((yield self.store.recipients()), [])
