"""The MX end to end: smtplib and swaks over loopback into the embedded store."""
import email
import shutil
import smtplib
import socket
import subprocess

from twisted.internet import defer, reactor
from twisted.internet.threads import deferToThread
from twisted.trial import unittest

from emailsvc.checks.plugins import build_pipeline
from emailsvc.config import parse
from emailsvc.delivery.mda import MDA
from emailsvc.service import InFlight
from emailsvc.smtp.server import SMTPServerFactory
from emailsvc.smtp.session import MXSession
from tests.fakedns import DNSTestCase
from tests.store.test_sqlite import open_embedded, stored_messages

MESSAGE = b"From: Bob <bob@remote.example>\r\nTo: alice@example.test\r\nSubject: hello\r\n\r\nHi Alice.\r\n"


CONFIG = """
[server]
hostname = "mx.example.test"
[smtp]
max_recipients = 5
[checks]
enabled = ["spf", "dkim", "dmarc"]
"""


class MXTests(DNSTestCase, unittest.TestCase):
    @defer.inlineCallbacks
    def setUp(self):
        super().setUp()
        self.metadata, self.blobs = yield open_embedded(self)
        directory, self.mail = self.metadata.directory, self.metadata.mail
        yield directory.add_domain("example.test")
        self.alice = yield directory.add_user("alice@example.test", "pw")
        self.bob = yield directory.add_user("bob@example.test", "pw")
        self.jorg = yield directory.add_user("jörg@example.test", "pw")
        yield directory.add_alias("team@example.test", "alice@example.test")
        yield directory.add_alias("team@example.test", "bob@example.test")
        for user in (self.alice, self.bob, self.jorg):
            yield self.mail.provision_user(user.id)
        mda = MDA(self.mail, self.blobs)
        self.inflight = InFlight()
        config = parse(CONFIG)
        pipeline = build_pipeline(config, self.resolver, reactor)
        factory = SMTPServerFactory(
            lambda: MXSession(directory=directory, mail=self.mail, mda=mda, pipeline=pipeline, hostname="mx.example.test",
                              clock=reactor, inflight=self.inflight),
            "mx.example.test", config.smtp, clock=reactor,
        )
        self.port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(self.port.stopListening)
        self.address = ("127.0.0.1", self.port.getHost().port)

    def send(self, sender, recipients, message=MESSAGE, **options):
        def run():
            with smtplib.SMTP(*self.address, timeout=10) as client:
                return client.sendmail(sender, recipients, message, **options)

        return deferToThread(run)

    def inbox(self, user, name="INBOX"):
        return stored_messages(self.mail, self.blobs, user.id, name)

    @defer.inlineCallbacks
    def test_delivery_with_trace_fields(self):
        refused = yield self.send("bob@remote.example", ["Alice@Example.test"])
        self.assertEqual(refused, {})
        ((record, content, raw),) = yield self.inbox(self.alice)
        self.assertTrue(raw.endswith(MESSAGE))
        parsed = email.message_from_bytes(raw)
        self.assertEqual(parsed["Return-Path"], "<bob@remote.example>")
        self.assertRegex(parsed["Received"],
                         r"^from \S+ \(\[127\.0\.0\.1\]\)\s+by mx\.example\.test \(emailsvc\) with ESMTP id \w+"
                         r"\s+for <Alice@Example\.test>; .+ GMT$")
        self.assertTrue(raw.startswith(b"Return-Path: <bob@remote.example>\r\nReceived: from "))
        self.assertEqual(" ".join(parsed["Authentication-Results"].split()),
                         "mx.example.test; spf=none smtp.mailfrom=bob@remote.example; dkim=none;"
                         " dmarc=none (no policy) header.from=remote.example")
        self.assertEqual((content.parsed["subject"], record.size), ("hello", len(raw)))

    @defer.inlineCallbacks
    def test_unknown_user_and_relay_are_refused(self):
        failure = yield self.assertFailure(self.send("x@remote.example", ["nobody@example.test"]),
                                           smtplib.SMTPRecipientsRefused)
        self.assertEqual(failure.recipients["nobody@example.test"], (550, b"5.1.1 No such user here"))
        for victim in ["victim@elsewhere.example", "victim%elsewhere.example@example.test",
                       "@example.test:victim@elsewhere.example", "victim@[192.0.2.1]"]:
            failure = yield self.assertFailure(self.send("x@remote.example", [victim]),
                                               smtplib.SMTPRecipientsRefused, smtplib.SMTPResponseException)
            code = failure.recipients[victim][0] if hasattr(failure, "recipients") else failure.smtp_code
            self.assertIn(code, (550, 501, 553), victim)
        self.assertEqual((yield self.inbox(self.alice)), [])

    @defer.inlineCallbacks
    def test_alias_shares_one_blob(self):
        yield self.send("x@remote.example", ["team@example.test", "alice@example.test"])
        ((alice_record, _, _),) = yield self.inbox(self.alice)
        ((bob_record, _, _),) = yield self.inbox(self.bob)
        self.assertEqual(alice_record.content_id, bob_record.content_id)

    @defer.inlineCallbacks
    def test_smtputf8_and_8bit(self):
        message = "From: Jörg <jörg@example.test>\r\nSubject: Grüße\r\n\r\nÄpfel\r\n".encode()
        yield self.send("jörg@remote.example", ["jörg@example.test"], message,
                        mail_options=["SMTPUTF8", "BODY=8BITMIME"])
        ((_, content, raw),) = yield self.inbox(self.jorg)
        self.assertTrue(raw.endswith(message))
        self.assertEqual(content.parsed["subject"], "Grüße")
        self.assertIn(b"with UTF8SMTP id", raw)

    @defer.inlineCallbacks
    def test_too_many_recipients(self):
        recipients = ["alice@example.test"] * 5 + ["bob@example.test"]
        refused = yield self.send("x@remote.example", recipients)
        self.assertEqual(refused, {"bob@example.test": (452, b"4.5.3 Too many recipients")})
        self.assertEqual(len((yield self.inbox(self.alice))), 1)
        self.assertEqual((yield self.inbox(self.bob)), [])

    @defer.inlineCallbacks
    def test_disconnect_mid_data_delivers_nothing(self):
        def run():
            with socket.create_connection(self.address, timeout=10) as raw:
                stream = raw.makefile("rb")
                stream.readline()
                for line in [b"EHLO c\r\n", b"MAIL FROM:<x@remote.example>\r\n",
                             b"RCPT TO:<alice@example.test>\r\n", b"DATA\r\n"]:
                    raw.sendall(line)
                    reply = stream.readline()
                    while reply[3:4] == b"-":
                        reply = stream.readline()
                raw.sendall(b"Subject: half\r\n\r\nthe first half\r\n")

        yield deferToThread(run)
        yield deferToThread(lambda: None)
        self.assertEqual(len(self.inflight), 0)
        self.assertEqual((yield self.inbox(self.alice)), [])

    @defer.inlineCallbacks
    def test_swaks(self):
        swaks = shutil.which("swaks")
        self.assertIsNotNone(swaks, "swaks is not installed (scripts/test installs it)")
        result = yield deferToThread(subprocess.run, [
            swaks, "--server", f"{self.address[0]}:{self.address[1]}", "--to", "alice@example.test",
            "--from", "carol@remote.example", "--header", "Subject: via swaks",
        ], capture_output=True, timeout=30)
        self.assertEqual(result.returncode, 0, result.stdout.decode())
        ((_, content, _),) = yield self.inbox(self.alice)
        self.assertEqual(content.parsed["subject"], "via swaks")

    @defer.inlineCallbacks
    def test_dmarc_quarantine_goes_to_junk_and_forgeries_are_stripped(self):
        self.dns.txt("spoofed.example", "v=spf1 ip4:192.0.2.99 -all")
        self.dns.txt("_dmarc.spoofed.example", "v=DMARC1; p=quarantine")
        message = (b"Authentication-Results: mx.example.test; dmarc=pass header.from=spoofed.example\r\n"
                   b"Authentication-Results: other.example; spf=pass\r\n"
                   b"From: ceo@spoofed.example\r\nSubject: wire money\r\n\r\nnow\r\n")
        yield self.send("ceo@spoofed.example", ["alice@example.test"], message)
        self.assertEqual((yield self.inbox(self.alice)), [])
        ((_, _, raw),) = yield self.inbox(self.alice, "Junk")
        results = email.message_from_bytes(raw).get_all("Authentication-Results")
        self.assertEqual(len(results), 2)
        self.assertIn("spf=fail", results[0])
        self.assertIn("dmarc=fail", results[0])
        self.assertEqual(results[1], "other.example; spf=pass")
        self.assertTrue(self.dns.asked("_dmarc.spoofed.example", "TXT"))

    @defer.inlineCallbacks
    def test_dmarc_reject_is_refused(self):
        self.dns.txt("strict.example", "v=spf1 -all")
        self.dns.txt("_dmarc.strict.example", "v=DMARC1; p=reject")
        failure = yield self.assertFailure(
            self.send("ceo@strict.example", ["alice@example.test"], b"From: ceo@strict.example\r\n\r\nx\r\n"),
            smtplib.SMTPDataError)
        self.assertEqual(failure.smtp_code, 550)
        self.assertEqual((yield self.inbox(self.alice)), [])

    @defer.inlineCallbacks
    def test_quota_is_enforced_at_rcpt(self):
        yield self.metadata.directory.set_quota("bob@example.test", 2000)
        yield self.send("x@remote.example", ["bob@example.test"])
        # smtplib announces SIZE; stored mail plus this message exceeds 2,000 bytes.
        big = MESSAGE + b"x" * 1500 + b"\r\n"
        refused = yield self.send("x@remote.example", ["bob@example.test", "alice@example.test"], big)
        self.assertEqual(refused, {"bob@example.test": (452, b"4.2.2 Mailbox full, try again later")})
        self.assertEqual(len((yield self.inbox(self.bob))), 1)
        self.assertEqual(len((yield self.inbox(self.alice))), 1)
