"""The ESMTP server on real loopback sockets, driven by Python's smtplib
and by raw sockets (for pipelining, injection and disconnects).
"""
import datetime
import ipaddress
import os
import re
import smtplib
import socket
import ssl
from dataclasses import replace

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from OpenSSL import SSL
from twisted.internet import defer, reactor, task, threads
from twisted.internet.interfaces import IOpenSSLContextFactory
from twisted.trial import unittest
from zope.interface import implementer

from emailsvc.config import SMTPConfig
from emailsvc.interfaces import ISMTPSession
from emailsvc.smtp.server import SMTPServerFactory
from tests.spoolfiles import KeepingSpool, open_files_in, wait_for_open_file_in

LIMITS = SMTPConfig(max_message_size=20_000, command_timeout=30.0, data_timeout=30.0)
CLIENT_TIMEOUT = 15
REPLY_END = re.compile(rb"^\d{3} ", re.M)


def make_certificate():
    """A throwaway self-signed certificate for 127.0.0.1 and localhost.

    @return: (cryptography private key, certificate, certificate PEM text).
    """
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    pem = certificate.public_bytes(serialization.Encoding.PEM).decode("ascii")
    return key, certificate, pem


@implementer(IOpenSSLContextFactory)
class ServerContext:
    """A minimal server context factory (what emailsvc.tls will provide)."""

    def __init__(self, key, certificate):
        self._context = SSL.Context(SSL.TLS_SERVER_METHOD)
        self._context.set_min_proto_version(SSL.TLS1_2_VERSION)
        self._context.use_certificate(certificate)
        self._context.use_privatekey(key)

    def getContext(self):
        return self._context


@implementer(ISMTPSession)
class RecordingSession:
    """Accepts everything; recipients are checked after a short real delay."""

    def __init__(self):
        self.calls = []
        self.messages = []
        self.lost = defer.Deferred()

    def connected(self, peer_host, peer_port, tls):
        self.calls.append(("connected", peer_host, tls))

    def helo(self, name, extended):
        self.calls.append(("helo", name, extended))

    def tls_started(self):
        self.calls.append(("tls_started",))

    def mail_from(self, sender, parameters):
        self.calls.append(("mail_from", sender, parameters))

    def rcpt_to(self, recipient, parameters):
        self.calls.append(("rcpt_to", recipient))
        return task.deferLater(reactor, 0.02, lambda: None)

    def data(self, message):
        self.calls.append(("data",))
        self.messages.append(message)
        return f"Ok: queued as Q{len(self.messages)}"

    def reset(self):
        self.calls.append(("reset",))

    def disconnected(self):
        self.calls.append(("disconnected",))
        self.lost.callback(None)

    def names(self):
        return [call[0] for call in self.calls]


def read_replies(sock, count):
    """Read until `count` complete replies arrived; return their lines."""
    data = b""
    while len(REPLY_END.findall(data)) < count:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data.decode("utf-8").split("\r\n")[:-1]


class WireTestCase(unittest.TestCase):
    timeout = 60
    tls = False
    implicit_tls = False
    limits = LIMITS
    spool_threshold = 1024 * 1024

    def setUp(self):
        self.sessions = []
        context = None
        if self.tls or self.implicit_tls:
            key, certificate, self.certificate_pem = make_certificate()
            context = ServerContext(key, certificate)
        self.spool_dir = os.path.abspath(self.mktemp())
        os.mkdir(self.spool_dir)
        self.spool = KeepingSpool(self.spool_threshold, self.spool_dir)
        self.factory = SMTPServerFactory(
            self.make_session, "mx.test", self.limits, tls_context=context,
            implicit_tls=self.implicit_tls, clock=reactor, spool=self.spool,
        )
        if self.implicit_tls:
            self.port = reactor.listenSSL(0, self.factory, context, interface="127.0.0.1")
        else:
            self.port = reactor.listenTCP(0, self.factory, interface="127.0.0.1")
        self.addCleanup(self.port.stopListening)
        self.address = ("127.0.0.1", self.port.getHost().port)

    def make_session(self):
        session = RecordingSession()
        self.sessions.append(session)
        return session

    def client_context(self):
        context = ssl.create_default_context(cadata=self.certificate_pem)
        return context

    @defer.inlineCallbacks
    def in_thread(self, function):
        """Run a blocking client in a thread, then wait until the server has
        seen every connection close (so no socket outlives the test).
        """
        result = yield threads.deferToThread(function)
        yield defer.DeferredList([session.lost for session in self.sessions])
        return result

    def raw_socket(self):
        sock = socket.create_connection(self.address, timeout=CLIENT_TIMEOUT)
        self.assertEqual(read_replies(sock, 1), ["220 mx.test ESMTP emailsvc"])
        return sock


MESSAGE = b"Subject: hello\r\nFrom: alice@example.net\r\n\r\n.a line with a dot\r\nbye\r\n"


class PlainTests(WireTestCase):
    @defer.inlineCallbacks
    def test_send(self):
        def client():
            with smtplib.SMTP(*self.address, local_hostname="client.test", timeout=CLIENT_TIMEOUT) as smtp:
                smtp.ehlo()
                features = dict(smtp.esmtp_features)
                refused = smtp.sendmail(
                    "alice@example.net", ["bob@example.org", "carol@example.org"], MESSAGE
                )
                return features, refused

        features, refused = yield self.in_thread(client)
        self.assertEqual(refused, {})
        self.assertEqual(
            features,
            {"size": "20000", "8bitmime": "", "pipelining": "", "enhancedstatuscodes": "", "smtputf8": ""},
        )
        [session] = self.sessions
        self.assertEqual(session.messages, [MESSAGE])
        self.assertEqual(session.calls[0], ("connected", "127.0.0.1", False))
        self.assertIn(("mail_from", "alice@example.net", {"SIZE": str(len(MESSAGE))}), session.calls)
        self.assertEqual(session.names().count("disconnected"), 1)

    @defer.inlineCallbacks
    def test_pipelined(self):
        """MAIL, three slow RCPTs, DATA and the body in one write."""
        body = b"Subject: pipelined\r\n\r\nRSET\r\nQUIT\r\n"

        def client():
            with self.raw_socket() as sock:
                sock.sendall(b"EHLO client.test\r\n")
                read_replies(sock, 1)
                sock.sendall(
                    b"MAIL FROM:<alice@example.net>\r\n"
                    + b"".join(b"RCPT TO:<u%d@example.org>\r\n" % i for i in range(3))
                    + b"DATA\r\n" + body + b".\r\nQUIT\r\n"
                )
                return read_replies(sock, 7)

        replies = yield self.in_thread(client)
        self.assertEqual(
            replies,
            [
                "250 2.1.0 Sender OK",
                "250 2.1.5 Recipient OK",
                "250 2.1.5 Recipient OK",
                "250 2.1.5 Recipient OK",
                "354 End data with <CR><LF>.<CR><LF>",
                "250 2.0.0 Ok: queued as Q1",
                "221 2.0.0 mx.test closing connection",
            ],
        )
        self.assertEqual(self.sessions[0].messages, [body])

    @defer.inlineCallbacks
    def test_oversize(self):
        big = b"Subject: big\r\n\r\n" + (b"x" * 998 + b"\r\n") * 25

        def client():
            results = []
            with smtplib.SMTP(*self.address, timeout=CLIENT_TIMEOUT) as smtp:
                # smtplib declares SIZE: refused at MAIL.
                try:
                    smtp.sendmail("alice@example.net", ["bob@example.org"], big)
                except smtplib.SMTPSenderRefused as err:
                    results.append((err.smtp_code, err.smtp_error))
                # Without SIZE: refused at the end of DATA.
                smtp.mail("alice@example.net")
                smtp.rcpt("bob@example.org")
                results.append(smtp.data(big))
                results.append(smtp.noop())
            return results

        results = yield self.in_thread(client)
        self.assertEqual(
            results,
            [
                (552, b"5.3.4 Message size exceeds fixed maximum message size"),
                (552, b"5.3.4 Message size exceeds fixed maximum message size"),
                (250, b"2.0.0 Ok"),
            ],
        )
        self.assertEqual(self.sessions[0].messages, [])

    @defer.inlineCallbacks
    def test_disconnect_mid_data(self):
        def client():
            with self.raw_socket() as sock:
                sock.sendall(b"EHLO client.test\r\nMAIL FROM:<a@example.net>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n")
                replies = read_replies(sock, 4)
                sock.sendall(b"Subject: cut\r\n\r\nhalf of a mes")
            return replies

        replies = yield self.in_thread(client)
        self.assertEqual(replies[-1], "354 End data with <CR><LF>.<CR><LF>")
        [session] = self.sessions
        self.assertEqual(session.messages, [])
        self.assertEqual(session.names().count("disconnected"), 1)
        self.assertEqual(self.factory.connections, 0)

    @defer.inlineCallbacks
    def test_smuggling(self):
        def client():
            with self.raw_socket() as sock:
                sock.sendall(b"EHLO client.test\r\nMAIL FROM:<a@example.net>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n")
                read_replies(sock, 4)
                sock.sendall(
                    b"Subject: x\r\n\r\nhi\n.\r\nMAIL FROM:<ceo@example.org>\r\nRCPT TO:<b@example.org>\r\n"
                    b"DATA\r\nSubject: smuggled\r\n\r\n.\r\nQUIT\r\n"
                )
                return read_replies(sock, 2)

        replies = yield self.in_thread(client)
        self.assertEqual(
            replies,
            ["550 5.5.2 Bare CR or LF in message data is not allowed", "221 2.0.0 mx.test closing connection"],
        )
        self.assertEqual(self.sessions[0].messages, [])
        self.assertEqual(self.sessions[0].names().count("mail_from"), 1)


class SpoolTests(WireTestCase):
    """A message over the spool threshold waits in an anonymous file of the
    spool directory while it is received, and nowhere once done."""

    limits = replace(LIMITS, max_message_size=4_000_000)
    spool_threshold = 64 * 1024
    body = b"Subject: big\r\n\r\n" + b"".join(b".line %d of a long message\r\n" % i for i in range(60_000))

    def start_data(self, sock):
        sock.sendall(b"EHLO client.test\r\nMAIL FROM:<a@example.net>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n")
        self.assertEqual(read_replies(sock, 4)[-1], "354 End data with <CR><LF>.<CR><LF>")
        sock.sendall(self.body[:len(self.body) // 2])

    @defer.inlineCallbacks
    def test_large_message_goes_through_the_spool(self):
        def client():
            with self.raw_socket() as sock:
                self.start_data(sock)
                spooled = wait_for_open_file_in(self.spool_dir)
                listed = os.listdir(self.spool_dir)
                sock.sendall(self.body[len(self.body) // 2:] + b".\r\nQUIT\r\n")
                return spooled, listed, read_replies(sock, 2)

        spooled, listed, replies = yield self.in_thread(client)
        self.assertTrue(spooled)
        self.assertEqual(listed, [])  # anonymous: no name to leak after a crash
        self.assertEqual(replies, ["250 2.0.0 Ok: queued as Q1", "221 2.0.0 mx.test closing connection"])
        self.assertEqual(self.sessions[0].messages, [self.body.replace(b"\r\n.", b"\r\n")])
        self.assertEqual([buffer.closed for buffer in self.spool.buffers], [True])
        self.assertEqual(open_files_in(self.spool_dir), [])

    @defer.inlineCallbacks
    def test_disconnect_mid_data_frees_the_spool(self):
        def client():
            with self.raw_socket() as sock:
                self.start_data(sock)
                return wait_for_open_file_in(self.spool_dir)

        spooled = yield self.in_thread(client)
        self.assertTrue(spooled)
        self.assertEqual(self.sessions[0].messages, [])
        self.assertEqual([buffer.closed for buffer in self.spool.buffers], [True])
        self.assertEqual(open_files_in(self.spool_dir), [])


class STARTTLSTests(WireTestCase):
    tls = True

    @defer.inlineCallbacks
    def test_send_over_starttls(self):
        def client():
            with smtplib.SMTP(*self.address, local_hostname="client.test", timeout=CLIENT_TIMEOUT) as smtp:
                smtp.ehlo()
                offered = smtp.has_extn("starttls")
                code, _ = smtp.starttls(context=self.client_context())
                smtp.ehlo()
                again = smtp.has_extn("starttls")
                smtp.sendmail("alice@example.net", ["bob@example.org"], MESSAGE)
                return offered, code, again

        offered, code, again = yield self.in_thread(client)
        self.assertEqual((offered, code, again), (True, 220, False))
        [session] = self.sessions
        self.assertEqual(session.messages, [MESSAGE])
        self.assertEqual(
            session.names()[:5], ["connected", "helo", "tls_started", "helo", "mail_from"]
        )

    @defer.inlineCallbacks
    def test_injection_after_starttls(self):
        """Commands sent in clear text behind STARTTLS are never run."""

        def client():
            with self.raw_socket() as sock:
                sock.sendall(b"EHLO client.test\r\n")
                read_replies(sock, 1)
                sock.sendall(b"STARTTLS\r\nRSET\r\nMAIL FROM:<evil@example.net>\r\n")
                first = read_replies(sock, 1)
                with self.client_context().wrap_socket(sock, server_hostname="localhost") as tls:
                    tls.sendall(b"MAIL FROM:<a@example.net>\r\nEHLO client.test\r\nQUIT\r\n")
                    rest = read_replies(tls, 3)
            return first, rest

        first, rest = yield self.in_thread(client)
        self.assertEqual(first, ["220 2.0.0 Ready to start TLS"])
        self.assertEqual(rest[0], "503 5.5.1 Send HELO/EHLO first")
        self.assertNotIn("250-STARTTLS", rest)
        self.assertEqual(rest[-1], "221 2.0.0 mx.test closing connection")
        self.assertNotIn("mail_from", self.sessions[0].names())
        self.assertNotIn("reset", self.sessions[0].names())


class ImplicitTLSTests(WireTestCase):
    implicit_tls = True

    @defer.inlineCallbacks
    def test_send_over_implicit_tls(self):
        def client():
            with smtplib.SMTP_SSL(
                *self.address, context=self.client_context(), timeout=CLIENT_TIMEOUT
            ) as smtp:
                smtp.ehlo()
                offered = smtp.has_extn("starttls")
                smtp.sendmail("alice@example.net", ["bob@example.org"], MESSAGE)
                return offered

        offered = yield self.in_thread(client)
        self.assertFalse(offered)
        [session] = self.sessions
        self.assertEqual(session.calls[0], ("connected", "127.0.0.1", True))
        self.assertEqual(session.messages, [MESSAGE])


class ConnectionLimitTests(WireTestCase):
    def setUp(self):
        super().setUp()
        self.factory.limits = replace(LIMITS, max_connections_per_ip=1)

    @defer.inlineCallbacks
    def test_per_ip_limit(self):
        def client():
            with self.raw_socket() as first:
                second = socket.create_connection(self.address, timeout=CLIENT_TIMEOUT)
                with second:
                    refused = read_replies(second, 1)
                    closed = second.recv(100)
                first.sendall(b"QUIT\r\n")
                read_replies(first, 1)
            return refused, closed

        refused, closed = yield self.in_thread(client)
        self.assertEqual(refused, ["421 4.7.0 mx.test Too many connections from your address"])
        self.assertEqual(closed, b"")
        self.assertEqual(len(self.sessions), 1)
