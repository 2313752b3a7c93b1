"""Issue 5's "done when": swaks submits over STARTTLS with AUTH, the queue
finds a real Postfix on loopback as the recipient domain's MX (through the
fake DNS), delivers over STARTTLS, and dkimpy verifies the signature in
the Maildir copy against the key published in the fake DNS."""
import shutil
import subprocess

import dkim as dkimpy
from twisted.cred.portal import Portal
from twisted.internet import defer, reactor, task
from twisted.internet.threads import deferToThread
from twisted.trial import unittest

from emailsvc import dns, tls
from emailsvc.config import QueueConfig, SMTPConfig, TLSConfig, parse
from emailsvc.cred.checker import DirectoryChecker
from emailsvc.cred.realm import MailRealm
from emailsvc.cred.throttle import AuthThrottle
from emailsvc.delivery import dkim_sign
from emailsvc.delivery.mda import MDA
from emailsvc.delivery.queue import Bouncer, OutboundQueue, QueueRunner
from emailsvc.delivery.remote import RemoteDelivery
from emailsvc.interfaces import ISubmitter
from emailsvc.service import InFlight
from emailsvc.smtp.submission import SubmissionFactory, SubmissionSession, submitter_factory
from emailsvc.store.sql.queue import SQLQueueStore
from tests.delivery import postfix
from tests.fakedns import DNSTestCase
from tests.store.test_sqlite import open_embedded

HOST = "mail.example.test"
PASSWORD = "alice-secret-1"


class PostfixDeliveryTests(DNSTestCase, unittest.TestCase):
    timeout = 180

    @defer.inlineCallbacks
    def setUp(self):
        super().setUp()
        why = postfix.available() or (None if shutil.which("swaks") else "swaks is not installed")
        # scripts/test installs both; a missing peer is a broken set-up, not a skip.
        self.assertIsNone(why, f"{why} (scripts/test installs it)")
        self.metadata, self.blobs = yield open_embedded(self)
        directory, mail = self.metadata.directory, self.metadata.mail
        yield directory.add_domain("example.test")
        alice = yield directory.add_user("alice@example.test", PASSWORD)
        yield mail.provision_user(alice.id)
        key_dir = self.mktemp()
        signer = dkim_sign.DKIMSigner(key_dir, reactor, parse("").dkim.headers, ["from", "subject"])
        _, record = dkim_sign.write_key(key_dir, "example.test", "sel1", dkim_sign.generate_key("rsa"))
        self.dns.txt("sel1._domainkey.example.test", record)
        cert, key = tls.ensure_certificate(TLSConfig(), self.mktemp(), HOST)
        context = tls.server_context(cert, key)
        self.peer = postfix.Postfix("remote.test", ["carol@remote.test"], cert, key)
        yield deferToThread(self.peer.start)
        self.addCleanup(deferToThread, self.peer.stop)
        self.dns.mx("remote.test", (10, "mx.remote.test"))
        self.dns.a("mx.remote.test", "127.0.0.1")
        settings = QueueConfig(remote_port=self.peer.port, connect_timeout=5, command_timeout=30)
        mda = MDA(mail, self.blobs)
        self.store = SQLQueueStore(self.metadata.db)
        queue = OutboundQueue(self.store, self.blobs, reactor)
        remote = RemoteDelivery(self.resolver, reactor, settings, HOST)
        self.runner = QueueRunner(self.store, self.blobs, remote, Bouncer(directory, mda, queue, self.blobs, HOST,
                                                                          reactor), reactor, settings)
        queue.listeners.append(self.runner.wake)
        self.runner.start()
        self.addCleanup(self.runner.stop)
        realm = MailRealm({ISubmitter: submitter_factory(directory)})
        checker = DirectoryChecker(directory, AuthThrottle(reactor, 10, 600, 900), reactor)

        def session():
            return SubmissionSession(directory=directory, mda=mda, signer=signer, hostname=HOST, clock=reactor,
                                     inflight=InFlight(), queue=queue)

        factory = SubmissionFactory(session, HOST, SMTPConfig(),
                                    lambda address: Portal(realm, [checker.for_client(address)]),
                                    tls_context=context, clock=reactor)
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.submission_port = port.getHost().port

    @defer.inlineCallbacks
    def test_swaks_to_postfix_with_valid_dkim(self):
        body = "Hello Carol.\n.a line starting with a dot\nBye."
        result = yield deferToThread(subprocess.run, [
            "swaks", "--server", f"127.0.0.1:{self.submission_port}", "--tls",
            "--auth", "PLAIN", "--auth-user", "alice@example.test", "--auth-password", PASSWORD,
            "--from", "alice@example.test", "--to", "carol@remote.test",
            "--header", "Subject: through the queue", "--body", body, "--helo", "client.example",
        ], capture_output=True, text=True, timeout=60)
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        messages = []
        for _ in range(600):
            messages = self.peer.messages("carol@remote.test")
            if messages:
                break
            yield task.deferLater(reactor, 0.1, lambda: None)
        self.assertEqual(len(messages), 1, self.peer.log_tail())
        (raw,) = messages
        self.assertIn(b"\n.a line starting with a dot", raw)
        self.assertIn(b"with ESMTPS", raw)  # Postfix's Received: the hop used STARTTLS
        (record,) = yield dns.lookup_txt_bytes(self.resolver, "sel1._domainkey.example.test")

        def dnsfunc(name, timeout=5):
            return record if name.decode("ascii").rstrip(".") == "sel1._domainkey.example.test" else None

        self.assertTrue(dkimpy.DKIM(raw).verify(dnsfunc=dnsfunc))
        # Postfix may have delivered before the runner's pass recorded it.
        rows = yield self.store.recipients()
        self.assertIn([(row.status, row.remote_host) for row in rows], ([], [("delivered", "mx.remote.test")]))
