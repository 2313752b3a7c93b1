"""The outbound ESMTP client: DATA encoding across chunks (the two
twisted.mail client defects), STARTTLS, pipelining, per-recipient replies."""
import re

from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial import unittest

from emailsvc import tls
from emailsvc.config import TLSConfig
from emailsvc.delivery.client import (
    CHUNK, DataEncoder, Envelope, SessionOptions, SMTPClientError, SMTPClientProtocol, encode_data, quit, run_session,
)
from tests.delivery.fakesmtp import FakeSMTPServer, Script


def reference(message: bytes) -> bytes:
    """The DATA stream by the book, computed on the whole message at once."""
    text = re.sub(rb"\r\n|\r|\n", b"\r\n", message)
    if not text.endswith(b"\r\n"):
        text += b"\r\n"
    lines = text.split(b"\r\n")[:-1]
    return b"".join((b"." + line if line.startswith(b".") else line) + b"\r\n" for line in lines) + b".\r\n"


def unstuff(stream: bytes) -> bytes:
    assert stream.endswith(b"\r\n.\r\n") or stream == b".\r\n"
    lines = stream.split(b"\r\n")[:-2]
    return b"".join((line[1:] if line.startswith(b".") else line) + b"\r\n" for line in lines)


class DataEncoderTests(unittest.SynchronousTestCase):
    def test_dot_line_on_chunk_boundary_is_escaped(self):
        # Regression: twisted.mail's client escapes each 16 KiB chunk on its
        # own, so a line starting exactly at a chunk boundary went out bare.
        # With "\r\n.\r\n" there, that ends DATA early: SMTP smuggling.
        head = b"Subject: x\r\n\r\n"
        filler = b"a" * (CHUNK - len(head) - 2) + b"\r\n"
        message = head + filler + b".\r\nMAIL FROM:<evil@x>\r\n.hidden\r\n"
        self.assertEqual(len(head + filler), CHUNK)
        stream = encode_data(message)
        self.assertEqual(stream, reference(message))
        self.assertIn(b"\r\n..\r\nMAIL FROM", stream)
        self.assertNotIn(b"\r\n.\r\n", stream[:-3])
        self.assertEqual(unstuff(stream), message)

    def test_crlf_is_not_doubled(self):
        # Regression: twisted.mail turned CRLF into CRCRLF.
        message = b"Subject: x\r\n\r\nline one\r\nline two\r\n"
        self.assertEqual(encode_data(message), message + b".\r\n")
        self.assertNotIn(b"\r\r", encode_data(message))

    def test_crlf_split_over_chunks(self):
        message = b"x" * (CHUNK - 1) + b"\r\n.dot\r\n"
        self.assertEqual(message[CHUNK - 1:CHUNK], b"\r")
        stream = encode_data(message)
        self.assertEqual(stream, reference(message))
        self.assertNotIn(b"\r\r", stream)
        self.assertEqual(unstuff(stream), message)

    def test_bare_line_ends_and_missing_final_newline(self):
        self.assertEqual(encode_data(b"a\nb\rc"), b"a\r\nb\r\nc\r\n.\r\n")
        self.assertEqual(encode_data(b".start\n.\n"), b"..start\r\n..\r\n.\r\n")
        self.assertEqual(encode_data(b""), b".\r\n")

    def test_every_chunk_size(self):
        message = b"From: a\r\n\r\n.x\r\n..y\n.\r\nz.\r\n.\r\n" * 7
        for size in range(1, 40):
            encoder = DataEncoder()
            stream = b"".join(encoder.feed(message[i:i + size]) for i in range(0, len(message), size))
            self.assertEqual(stream + encoder.finish(), reference(message), size)


class ProtocolTests(unittest.TestCase):
    def connect(self, clock=None):
        clock = clock or Clock()
        protocol = SMTPClientProtocol(clock, timeout=30)
        transport = StringTransport()
        protocol.makeConnection(transport)
        return protocol, transport, clock

    def test_multiline_reply_and_timeout(self):
        protocol, transport, clock = self.connect()
        got = []
        protocol.reply().addCallback(got.append)
        protocol.dataReceived(b"250-first\r\n250-SIZE 10\r\n250 last\r\n")
        self.assertEqual(got[0].code, 250)
        self.assertEqual(got[0].lines, ("first", "SIZE 10", "last"))
        waiting = protocol.reply()
        clock.advance(31)
        self.failureResultOf(waiting, SMTPClientError)
        self.assertTrue(transport.disconnecting or transport.disconnected)

    def test_body_streams_through_encoder(self):
        protocol, transport, _ = self.connect()
        message = b"a" * (CHUNK - 2) + b"\r\n.evil\r\n"
        d = protocol.send_body(message)
        # FileSender writes as the consumer asks: drive it.
        while not d.called:
            transport.producer.resumeProducing()
        self.assertEqual(transport.value(), reference(message))


class SessionTests(unittest.TestCase):
    @defer.inlineCallbacks
    def session(self, server, recipients, message=b"Subject: t\r\n\r\nhi\r\n", options=None, utf8=False):
        protocol = SMTPClientProtocol(reactor, 10)
        yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", server.port_number), protocol)
        options = options or SessionOptions("client.test", "opportunistic", tls.client_context("fake.test"))
        try:
            replies = yield defer.ensureDeferred(run_session(protocol, Envelope("a@ours.test", tuple(recipients), utf8),
                                                             message, options))
        finally:
            yield defer.ensureDeferred(quit(protocol))
        return replies, protocol

    def server(self, context=None, **script):
        server = FakeSMTPServer(reactor, context, Script(**script))
        server.start()
        self.addCleanup(server.stop)
        return server

    def tls_context(self):
        cert, key = tls.ensure_certificate(TLSConfig(), self.mktemp(), "fake.test")
        return tls.server_context(cert, key)

    @defer.inlineCallbacks
    def test_opportunistic_starttls_and_per_recipient_replies(self):
        server = self.server(self.tls_context(), rcpt_replies={"bad@x.test": b"550 5.1.1 No such user",
                                                                "later@x.test": b"450 4.2.0 Try later"})
        message = b"Subject: t\r\n\r\n" + b"b" * (CHUNK - 16) + b"\r\n.\r\nQUIT\r\n"
        replies, protocol = yield self.session(server, ["ok@x.test", "bad@x.test", "later@x.test"], message)
        self.assertTrue(protocol.tls)
        self.assertEqual({rcpt: str(reply) for rcpt, reply in replies.items()}, {
            "ok@x.test": "250 2.0.0 Ok: queued",
            "bad@x.test": "550 5.1.1 No such user",
            "later@x.test": "450 4.2.0 Try later",
        })
        (got,) = server.received
        self.assertTrue(got.tls)
        self.assertEqual(got.recipients, ["ok@x.test"])
        self.assertEqual(got.message, message)
        self.assertEqual(got.raw, reference(message))
        self.assertIn(b"SIZE=%d" % len(message), got.mail_line)
        # EHLO twice: before and after STARTTLS.
        self.assertEqual([c for c in server.factory.commands if c.startswith(b"EHLO")], [b"EHLO client.test"] * 2)

    @defer.inlineCallbacks
    def test_without_pipelining_and_all_refused(self):
        server = self.server(extensions=[], rcpt_replies={"bad@x.test": b"550 5.1.1 No"})
        replies, _ = yield self.session(server, ["bad@x.test"])
        self.assertEqual(str(replies["bad@x.test"]), "550 5.1.1 No")
        self.assertNotIn(b"DATA", server.factory.commands)
        self.assertEqual(server.received, [])

    @defer.inlineCallbacks
    def test_mail_refused_is_a_host_failure(self):
        server = self.server(mail_reply=b"553 5.7.1 Sender refused")
        failure = yield self.assertFailure(self.session(server, ["a@x.test"]), SMTPClientError)
        self.assertFalse(failure.temporary)
        self.assertEqual(str(failure.reply), "553 5.7.1 Sender refused")

    @defer.inlineCallbacks
    def test_tls_required_but_missing(self):
        server = self.server()
        options = SessionOptions("client.test", "required", tls.client_context("fake.test"))
        failure = yield self.assertFailure(self.session(server, ["a@x.test"], options=options), SMTPClientError)
        self.assertTrue(failure.temporary)
        self.assertEqual(server.received, [])

    @defer.inlineCallbacks
    def test_auth_plain_only_over_tls(self):
        server = self.server(self.tls_context(), auth={"relay-user": "s3cret"})
        options = SessionOptions("client.test", "required", tls.client_context("fake.test"), "relay-user", "s3cret")
        replies, _ = yield self.session(server, ["a@x.test"], options=options)
        self.assertEqual(replies["a@x.test"].code, 250)
        self.assertEqual(server.received[0].auth, "relay-user")
        bad = SessionOptions("client.test", "required", tls.client_context("fake.test"), "relay-user", "wrong")
        failure = yield self.assertFailure(self.session(server, ["a@x.test"], options=bad), SMTPClientError)
        self.assertNotIn("wrong", failure.text)

    @defer.inlineCallbacks
    def test_smtputf8_needs_support(self):
        server = self.server()
        replies, _ = yield self.session(server, ["ü@x.test"], utf8=True)
        self.assertEqual(replies["ü@x.test"].code, 553)
        server.script.extensions.append(b"SMTPUTF8")
        replies, _ = yield self.session(server, ["ü@x.test"], utf8=True)
        self.assertEqual(replies["ü@x.test"].code, 250)
        self.assertTrue(server.received[0].mail_line.endswith(b" SMTPUTF8"))
