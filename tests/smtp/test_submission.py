"""Unit tests of the submission protocol and policy (emailsvc.smtp.submission),
on StringTransport and task.Clock; tests/integration/test_submission*.py
run it over real sockets."""
import base64
import email.utils

from twisted.cred import error as cred_error
from twisted.internet import defer, task
from twisted.internet.address import IPv4Address
from twisted.trial import unittest
from zope.interface.verify import verifyObject

from emailsvc.config import ConfigError, SMTPConfig, parse
from emailsvc.interfaces import ISMTPSession, ISubmitter
from emailsvc.smtp import submission
from emailsvc.smtp.submission import (
    RateLimiter,
    SubmissionFactory,
    SubmissionServer,
    SubmissionSession,
    Submitter,
    complete_headers,
    from_addresses,
)
from emailsvc.store.model import User
from tests.smtp.test_server import FakeSession, TLSStringTransport

PEER = IPv4Address("TCP", "192.0.2.7", 4321)
ALICE = User(1, "alice@example.test")


class FakeSubmissionSession(FakeSession):
    def authenticated(self, submitter):
        self.calls.append(("authenticated", submitter))


class FakePortal:
    """Accepts alice/right; records every login."""

    def __init__(self):
        self.logins = []

    def login(self, creds, mind, *interfaces):
        self.logins.append((creds.username, creds.password, interfaces))
        if (creds.username, creds.password) == (b"alice", b"right"):
            return defer.succeed((ISubmitter, Submitter(ALICE, None), lambda: None))
        return defer.fail(cred_error.UnauthorizedLogin())


class AuthProtocolTests(unittest.TestCase):
    def setUp(self):
        self.clock = task.Clock()
        self.session = FakeSubmissionSession()
        self.portal = FakePortal()
        self.peers = []

        def portal_for(address):
            self.peers.append(address)
            return self.portal

        factory = SubmissionFactory(lambda: self.session, "mail.example.test", SMTPConfig(), portal_for,
                                    implicit_tls=True, clock=self.clock)
        self.server = factory.buildProtocol(PEER)
        self.transport = TLSStringTransport(peerAddress=PEER)
        self.server.makeConnection(self.transport)
        self.send(b"EHLO client.example\r\n")

    def send(self, data):
        self.transport.clear()
        self.server.dataReceived(data)
        self.clock.advance(0)
        return self.transport.value()

    def test_ehlo_on_implicit_tls_offers_auth(self):
        self.transport.clear()
        out = self.send(b"EHLO client.example\r\n")
        self.assertIn(b"250 AUTH PLAIN LOGIN\r\n", out)
        self.assertNotIn(b"STARTTLS", out)

    def test_plain_initial_response(self):
        creds = base64.b64encode(b"\0alice\0right")
        self.assertEqual(self.send(b"AUTH PLAIN " + creds + b"\r\n"), b"235 2.7.0 Authentication successful\r\n")
        self.assertEqual(self.portal.logins, [(b"alice", b"right", (ISubmitter,))])
        self.assertEqual(self.peers, ["192.0.2.7"])
        self.assertEqual(self.session.calls[-1][0], "authenticated")
        self.assertEqual(self.server.submitter.user, ALICE)

    def test_pipelined_login_exchange(self):
        out = self.send(b"AUTH LOGIN\r\n" + base64.b64encode(b"alice") + b"\r\n"
                        + base64.b64encode(b"right") + b"\r\nNOOP\r\n")
        self.assertEqual(out, b"334 VXNlcm5hbWU6\r\n334 UGFzc3dvcmQ6\r\n235 2.7.0 Authentication successful\r\n"
                              b"250 2.0.0 Ok\r\n")

    def test_wrong_password_and_empty_initial_response(self):
        creds = base64.b64encode(b"\0alice\0wrong")
        self.assertEqual(self.send(b"AUTH PLAIN " + creds + b"\r\n"),
                         b"535 5.7.8 Authentication credentials invalid\r\n")
        self.assertIsNone(self.server.submitter)
        self.assertEqual(self.send(b"AUTH PLAIN =\r\n"), b"501 5.5.2 Malformed PLAIN response\r\n")
        self.assertEqual(self.send(b"AUTH CRAM-MD5\r\n"), b"504 5.5.4 Unrecognized authentication type\r\n")
        self.assertEqual(self.send(b"AUTH\r\n"), b"501 5.5.4 Syntax: AUTH mechanism [initial-response]\r\n")

    def test_overlong_response_line(self):
        self.assertEqual(self.send(b"AUTH PLAIN\r\n"), b"334 \r\n")
        out = self.send(b"A" * (SubmissionServer.max_command_length + 10) + b"\r\nNOOP\r\n")
        self.assertEqual(out, b"500 5.5.6 Authentication exchange line is too long\r\n250 2.0.0 Ok\r\n")
        self.assertEqual(self.portal.logins, [])

    def test_long_initial_response_is_accepted(self):
        # RFC 4954: 12288-octet lines; the MX's 2048 would cut this one.
        password = b"x" * 4000
        out = self.send(b"AUTH PLAIN " + base64.b64encode(b"\0alice\0" + password) + b"\r\n")
        self.assertEqual(out, b"535 5.7.8 Authentication credentials invalid\r\n")
        self.assertEqual(self.portal.logins[0][1], password)

    def test_mail_auth_parameter(self):
        self.send(b"AUTH PLAIN " + base64.b64encode(b"\0alice\0right") + b"\r\n")
        self.assertEqual(self.send(b"MAIL FROM:<alice@example.test> AUTH=<>\r\n"), b"250 2.1.0 Sender OK\r\n")


class PolicyTests(unittest.TestCase):
    def test_interfaces(self):
        session = SubmissionSession(directory=None, mda=None, signer=None, hostname="h", clock=task.Clock(),
                                    inflight=None)
        verifyObject(ISMTPSession, session)
        verifyObject(ISubmitter, Submitter(ALICE, None))

    @defer.inlineCallbacks
    def test_mail_needs_auth(self):
        session = SubmissionSession(directory=None, mda=None, signer=None, hostname="h", clock=task.Clock(),
                                    inflight=None)
        failure = yield self.assertFailure(defer.maybeDeferred(session.mail_from, "alice@example.test", {}),
                                           submission.SMTPReplyError)
        self.assertEqual((failure.code, failure.enhanced, failure.text), submission.AUTH_REQUIRED)

    def test_complete_headers(self):
        done = complete_headers(b"From: a@example.test\r\n\r\nbody\r\n", "mail.example.test", 1_700_000_000)
        parsed = email.message_from_bytes(done)
        self.assertEqual(parsed["Date"], "Tue, 14 Nov 2023 22:13:20 -0000")
        self.assertRegex(parsed["Message-ID"], r"^<[a-z2-7]{24}@mail\.example\.test>$")
        self.assertTrue(done.endswith(b"From: a@example.test\r\n\r\nbody\r\n"))
        complete = b"Date: x\r\nmessage-id: <y@z>\r\nFrom: a@example.test\r\n\r\n"
        self.assertEqual(complete_headers(complete, "h", 0), complete)

    def test_from_addresses(self):
        self.assertEqual(from_addresses(b"From: \"A, B\" <a@x.test>\r\n\r\n"), ["a@x.test"])
        self.assertEqual(from_addresses(b"From: a@x.test, b@x.test\r\n\r\n"), ["a@x.test", "b@x.test"])
        self.assertIsNone(from_addresses(b"From: a@x.test\r\nFrom: b@x.test\r\n\r\n"))
        self.assertIsNone(from_addresses(b"Subject: none\r\n\r\n"))

    def test_rate_limiter(self):
        clock = task.Clock()
        limiter = RateLimiter(clock, 2)
        limiter.sent(1)
        clock.advance(10)
        limiter.sent(1)
        self.assertFalse(limiter.allowed(1))
        self.assertTrue(limiter.allowed(2))
        clock.advance(3591)
        self.assertTrue(limiter.allowed(1))
        unlimited = RateLimiter(clock, 0)
        for _ in range(1000):
            unlimited.sent(1)
        self.assertTrue(unlimited.allowed(1))


class ConfigTests(unittest.TestCase):
    def test_submission_requires_tls(self):
        with self.assertRaises(ConfigError) as caught:
            parse('[listeners.s]\nprotocol = "submission"\nport = 587\n')
        self.assertEqual([str(p) for p in caught.exception.problems],
                         ["listeners.s.tls: must be 'starttls' or 'implicit' for protocol 'submission'"])
        config = parse('[listeners.s]\nprotocol = "submission"\nport = 465\ntls = "implicit"\n'
                       '[submission]\nmax_messages_per_hour = 5\n[dkim]\nkey_dir = "k"\noversign = []\n')
        self.assertEqual((config.submission.max_messages_per_hour, config.dkim.key_dir, config.dkim.oversign),
                         (5, "k", []))
        self.assertIn("from", config.dkim.headers)

    def test_service_builds_submission_listeners(self):
        from emailsvc import service

        root = self.mktemp()
        config = parse(f'[server]\ndata_dir = "{root}"\n[store.sqlite]\npath = "{root}/db"\n'
                       f'[store.fs]\npath = "{root}/blobs"\n'
                       '[listeners.a]\nprotocol = "submission"\nport = 2587\ntls = "starttls"\n'
                       '[listeners.b]\nprotocol = "submission"\nport = 2465\ntls = "implicit"\n')
        root_service = service.build(config, task.Clock())
        a, b = root_service.getServiceNamed("a").factory, root_service.getServiceNamed("b").factory
        self.assertIsInstance(a, SubmissionFactory)
        self.assertEqual((a.tls_context is not None, a.implicit_tls), (True, False))
        self.assertEqual((b.tls_context, b.implicit_tls), (None, True))
        self.assertIs(a.session_factory()._rate, b.session_factory()._rate)
        self.assertIsInstance(a.portal_for("192.0.2.1").checkers, dict)
