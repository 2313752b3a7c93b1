"""Unit tests of the ESMTP server protocol (emailsvc.smtp.server) and its
wire syntax (emailsvc.smtp.commands), on StringTransport and task.Clock.
"""
import os
from dataclasses import replace

from twisted.internet import defer, task
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import ITLSTransport
from twisted.internet.testing import StringTransport
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial import unittest
from zope.interface import implementer
from zope.interface.verify import verifyObject

from emailsvc.config import SMTPConfig
from emailsvc.errors import SMTPReplyError
from emailsvc.interfaces import ISMTPSession
from emailsvc.smtp import commands
from emailsvc.smtp.server import ESMTPServer, LineTooLong, SMTPServerFactory
from emailsvc.spool import Spool

HOST = "mx.example.org"
PEER = IPv4Address("TCP", "192.0.2.1", 4321)
LIMITS = SMTPConfig(
    max_message_size=10_000,
    max_recipients=100,
    max_line_length=1000,
    command_timeout=300.0,
    data_timeout=600.0,
    max_connections=10,
    max_connections_per_ip=3,
    max_errors=10,
)

EHLO_REPLY = (
    b"250-mx.example.org\r\n"
    b"250-SIZE 10000\r\n"
    b"250-8BITMIME\r\n"
    b"250-PIPELINING\r\n"
    b"250-ENHANCEDSTATUSCODES\r\n"
    b"250 SMTPUTF8\r\n"
)


@implementer(ISMTPSession)
class FakeSession:
    """Records calls; `behaviour[name]` replaces the default result."""

    def __init__(self):
        self.calls = []
        self.messages = []
        self.behaviour = {}

    def _call(self, name, *args, default=None):
        self.calls.append((name, *args))
        if name in self.behaviour:
            return self.behaviour[name](*args)
        return default

    def connected(self, peer_host, peer_port, tls):
        return self._call("connected", peer_host, peer_port, tls)

    def helo(self, name, extended):
        return self._call("helo", name, extended)

    def tls_started(self):
        return self._call("tls_started")

    def mail_from(self, sender, parameters):
        return self._call("mail_from", sender, parameters)

    def rcpt_to(self, recipient, parameters):
        return self._call("rcpt_to", recipient, parameters)

    def data(self, message):
        self.messages.append(message)
        return self._call("data", message, default=f"Ok: queued as Q{len(self.messages)}")

    def reset(self):
        return self._call("reset")

    def disconnected(self):
        return self._call("disconnected")

    def names(self):
        return [call[0] for call in self.calls]


@implementer(ITLSTransport)
class TLSStringTransport(StringTransport):
    """A StringTransport that can "start TLS" and counts its writes."""

    tls_context = None

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.writes = 0

    def write(self, data):
        self.writes += 1
        super().write(data)

    def writeSequence(self, data):
        self.writes += 1
        super().writeSequence(data)

    def startTLS(self, context, normal=True):
        self.tls_context = context


def raise_reply(code, enhanced, text):
    def behaviour(*args):
        raise SMTPReplyError(code, enhanced, text)

    return behaviour


class ServerTestCase(unittest.TestCase):
    """Connects an ESMTPServer to a fake transport and session."""

    limits = LIMITS
    tls_context = None
    implicit_tls = False
    greet = True

    def setUp(self):
        self.clock = task.Clock()
        self.session = FakeSession()
        self.sessions_made = 0
        self.factory = SMTPServerFactory(
            self.make_session, HOST, self.limits, self.tls_context, self.implicit_tls, self.clock
        )
        if self.greet:
            self.server, self.transport = self.connect()
            self.assertEqual(self.take(), b"220 mx.example.org ESMTP emailsvc\r\n")

    def make_session(self):
        self.sessions_made += 1
        return self.session

    def connect(self, peer=PEER):
        server = self.factory.buildProtocol(peer)
        transport = TLSStringTransport(peerAddress=peer)
        server.makeConnection(transport)
        return server, transport

    def send(self, data, server=None):
        (server or self.server).dataReceived(data)

    def take(self, transport=None):
        transport = transport or self.transport
        value = transport.value()
        transport.clear()
        return value

    def lines(self, data):
        return data.split(b"\r\n")[:-1]

    def ehlo(self):
        self.send(b"EHLO client.example.net\r\n")
        self.assertEqual(self.take(), EHLO_REPLY)

    def start_transaction(self, recipients=1):
        self.ehlo()
        self.send(b"MAIL FROM:<sender@example.net>\r\n")
        for i in range(recipients):
            self.send(b"RCPT TO:<user%d@example.org>\r\n" % i)
        self.assertEqual(
            self.take(), b"250 2.1.0 Sender OK\r\n" + b"250 2.1.5 Recipient OK\r\n" * recipients
        )

    def lose(self, server=None):
        (server or self.server).connectionLost(Failure(ConnectionDone()))


class ConnectionTests(ServerTestCase):
    greet = False

    def test_greeting(self):
        server, transport = self.connect()
        self.assertEqual(transport.value(), b"220 mx.example.org ESMTP emailsvc\r\n")
        self.assertEqual(self.session.calls, [("connected", "192.0.2.1", 4321, False)])

    def test_refused_554_waits_for_quit(self):
        """RFC 5321 3.1: after a 554 greeting, 503 to everything but QUIT."""
        self.session.behaviour["connected"] = raise_reply(554, "5.7.1", "Listed at a blocklist")
        server, transport = self.connect()
        self.assertEqual(self.take(transport), b"554 5.7.1 Listed at a blocklist\r\n")
        self.send(b"EHLO x.example\r\nMAIL FROM:<a@b.example>\r\n", server)
        self.assertEqual(self.take(transport), b"503 5.5.1 Service refused, send QUIT\r\n" * 2)
        self.assertFalse(transport.disconnecting)
        self.send(b"QUIT\r\n", server)
        self.assertEqual(self.take(transport), b"221 2.0.0 mx.example.org closing connection\r\n")
        self.assertTrue(transport.disconnecting)
        self.assertNotIn("helo", self.session.names())

    def test_refused_421_closes(self):
        self.session.behaviour["connected"] = raise_reply(421, "4.7.0", "Try later")
        server, transport = self.connect()
        self.assertEqual(transport.value(), b"421 4.7.0 mx.example.org Try later\r\n")
        self.assertTrue(transport.disconnecting)

    def test_refused_other_temporary_becomes_421(self):
        self.session.behaviour["connected"] = raise_reply(450, "4.7.1", "Greylisted")
        server, transport = self.connect()
        self.assertEqual(transport.value(), b"421 4.7.1 mx.example.org Greylisted\r\n")
        self.assertTrue(transport.disconnecting)

    def test_connected_internal_error(self):
        def broken(*args):
            raise RuntimeError("database password is hunter2")

        self.session.behaviour["connected"] = broken
        server, transport = self.connect()
        self.assertEqual(
            transport.value(), b"421 4.3.0 mx.example.org Internal error, try again later\r\n"
        )
        self.assertTrue(transport.disconnecting)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_session_factory_fails(self):
        def broken():
            raise RuntimeError("no")

        self.factory.session_factory = broken
        server, transport = self.connect()
        self.assertEqual(
            transport.value(), b"421 4.3.0 mx.example.org Internal error, try again later\r\n"
        )
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.lose(server)
        self.assertEqual(self.factory.connections, 0)

    def test_input_before_greeting_waits(self):
        """A slow connected() delays the greeting; early input waits for it."""
        pending = defer.Deferred()
        self.session.behaviour["connected"] = lambda *args: pending
        server, transport = self.connect()
        self.send(b"EHLO early.example\r\n", server)
        self.assertEqual(transport.value(), b"")
        pending.callback(None)
        self.assertEqual(transport.value(), b"220 mx.example.org ESMTP emailsvc\r\n" + EHLO_REPLY)

    def test_disconnected_once(self):
        server, transport = self.connect()
        self.lose(server)
        self.lose(server)
        self.assertEqual(self.session.names(), ["connected", "disconnected"])
        self.assertEqual(self.factory.connections, 0)
        self.assertEqual(self.factory.connections_per_peer, {})

    def test_too_many_connections(self):
        self.factory.limits = replace(LIMITS, max_connections=2, max_connections_per_ip=5)
        others = [IPv4Address("TCP", f"198.51.100.{i}", 1000 + i) for i in range(3)]
        first, _ = self.connect(others[0])
        self.connect(others[1])
        server, transport = self.connect(others[2])
        self.assertEqual(
            transport.value(), b"421 4.3.2 mx.example.org Too many connections, try again later\r\n"
        )
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.sessions_made, 2)
        self.lose(server)  # a refused connection releases nothing
        self.assertEqual(self.factory.connections, 2)
        self.lose(first)
        _, transport = self.connect(others[2])
        self.assertEqual(transport.value(), b"220 mx.example.org ESMTP emailsvc\r\n")

    def test_too_many_connections_per_ip(self):
        for i in range(3):
            self.connect()
        server, transport = self.connect()
        self.assertEqual(
            transport.value(), b"421 4.7.0 mx.example.org Too many connections from your address\r\n"
        )
        self.assertTrue(transport.disconnecting)
        _, transport = self.connect(IPv4Address("TCP", "192.0.2.2", 1))
        self.assertEqual(transport.value(), b"220 mx.example.org ESMTP emailsvc\r\n")

    def test_verify_fake_session(self):
        self.assertTrue(verifyObject(ISMTPSession, self.session))


class GreetingCommandTests(ServerTestCase):
    def test_ehlo(self):
        self.ehlo()
        self.assertEqual(self.session.calls[-1], ("helo", "client.example.net", True))

    def test_ehlo_lower_case(self):
        self.send(b"ehlo client.example.net\r\n")
        self.assertEqual(self.take(), EHLO_REPLY)

    def test_helo(self):
        self.send(b"HELO client.example.net\r\n")
        self.assertEqual(self.take(), b"250 mx.example.org\r\n")
        self.assertEqual(self.session.calls[-1], ("helo", "client.example.net", False))

    def test_helo_then_parameters_refused(self):
        self.send(b"HELO client.example.net\r\nMAIL FROM:<a@example.net> SIZE=10\r\n")
        self.assertEqual(self.lines(self.take())[-1], b"555 5.5.4 Parameters require EHLO")

    def test_ehlo_without_name(self):
        self.send(b"EHLO\r\nHELO \r\n")
        self.assertEqual(self.take(), b"501 5.5.4 Syntax: EHLO hostname\r\n501 5.5.4 Syntax: HELO hostname\r\n")

    def test_helo_refused_by_session(self):
        self.session.behaviour["helo"] = raise_reply(550, "5.7.1", "Bad HELO")
        self.send(b"EHLO localhost\r\nMAIL FROM:<a@example.net>\r\n")
        self.assertEqual(self.take(), b"550 5.7.1 Bad HELO\r\n503 5.5.1 Send HELO/EHLO first\r\n")

    def test_ehlo_resets_transaction(self):
        self.start_transaction()
        self.send(b"EHLO again.example\r\nMAIL FROM:<b@example.net>\r\n")
        self.assertEqual(self.lines(self.take())[-1], b"250 2.1.0 Sender OK")
        self.assertEqual(self.session.names()[-3:], ["reset", "helo", "mail_from"])

    def test_no_chunking_no_auth(self):
        self.send(b"EHLO x.example\r\n")
        reply = self.take()
        self.assertNotIn(b"CHUNKING", reply)
        self.assertNotIn(b"AUTH", reply)
        self.assertNotIn(b"STARTTLS", reply)


class SimpleCommandTests(ServerTestCase):
    def test_noop(self):
        self.send(b"NOOP\r\nnoop with arguments\r\n")
        self.assertEqual(self.take(), b"250 2.0.0 Ok\r\n" * 2)

    def test_rset(self):
        self.start_transaction()
        self.send(b"RSET\r\nRCPT TO:<a@example.org>\r\n")
        self.assertEqual(self.take(), b"250 2.0.0 Ok\r\n503 5.5.1 Need MAIL command\r\n")
        self.assertIn("reset", self.session.names())

    def test_rset_with_argument(self):
        self.send(b"RSET now\r\n")
        self.assertEqual(self.take(), b"501 5.5.4 Syntax: RSET\r\n")

    def test_vrfy_never_reveals(self):
        self.send(b"VRFY root\r\nVRFY\r\n")
        self.assertEqual(
            self.take(),
            b"252 2.5.0 Cannot VRFY user, but will accept message and attempt delivery\r\n"
            b"501 5.5.4 Syntax: VRFY address\r\n",
        )
        self.assertEqual(self.session.names(), ["connected"])

    def test_expn_not_implemented(self):
        self.send(b"EXPN staff\r\nBDAT 10 LAST\r\n")
        self.assertEqual(self.take(), b"502 5.5.1 Command not implemented\r\n" * 2)

    def test_help(self):
        self.send(b"HELP\r\n")
        self.assertEqual(
            self.take(), b"214 2.0.0 Commands: DATA EHLO HELO HELP MAIL NOOP QUIT RCPT RSET VRFY\r\n"
        )

    def test_quit(self):
        self.send(b"QUIT\r\nNOOP\r\n")
        self.assertEqual(self.take(), b"221 2.0.0 mx.example.org closing connection\r\n")
        self.assertTrue(self.transport.disconnecting)

    def test_unknown_command(self):
        self.send(b"FROB\r\nX" * 1 + b"\r\n")
        self.assertEqual(self.take(), b"500 5.5.1 Command unrecognized\r\n" * 2)

    def test_http_request_closes(self):
        self.send(b"POST / HTTP/1.1\r\nHost: mx\r\n")
        self.assertEqual(self.take(), b"221 2.7.0 Not an SMTP client, closing connection\r\n")
        self.assertTrue(self.transport.disconnecting)

    def test_out_of_order(self):
        self.send(b"MAIL FROM:<a@example.net>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n")
        self.assertEqual(
            self.take(),
            b"503 5.5.1 Send HELO/EHLO first\r\n"
            b"503 5.5.1 Need MAIL command\r\n"
            b"503 5.5.1 Need MAIL command\r\n",
        )
        self.ehlo()
        self.send(b"MAIL FROM:<a@example.net>\r\nDATA\r\nMAIL FROM:<c@example.net>\r\n")
        self.assertEqual(
            self.take(),
            b"250 2.1.0 Sender OK\r\n503 5.5.1 Need RCPT command\r\n503 5.5.1 Nested MAIL command\r\n",
        )

    def test_data_after_refused_recipients(self):
        """RFC 2920: DATA after only refused recipients is 554."""
        self.session.behaviour["rcpt_to"] = raise_reply(550, "5.1.1", "No such user")
        self.ehlo()
        self.send(b"MAIL FROM:<a@example.net>\r\nRCPT TO:<nobody@example.org>\r\nDATA\r\n")
        self.assertEqual(
            self.take(),
            b"250 2.1.0 Sender OK\r\n550 5.1.1 No such user\r\n554 5.5.1 No valid recipients\r\n",
        )

    def test_too_many_errors(self):
        self.server.limits = replace(LIMITS, max_errors=3)
        self.send(b"FROB\r\n" * 3)
        self.assertEqual(self.take(), b"500 5.5.1 Command unrecognized\r\n" * 3)
        self.assertFalse(self.transport.disconnecting)
        self.send(b"FROB\r\nNOOP\r\n")
        self.assertEqual(self.take(), b"421 4.7.0 mx.example.org Too many errors\r\n")
        self.assertTrue(self.transport.disconnecting)

    def test_errors_forgiven_after_delivery(self):
        self.server.limits = replace(LIMITS, max_errors=3)
        self.send(b"FROB\r\n" * 3)
        self.take()
        self.start_transaction()
        self.send(b"DATA\r\nhi\r\n.\r\n")
        self.take()
        self.send(b"FROB\r\n" * 3)
        self.assertEqual(self.take(), b"500 5.5.1 Command unrecognized\r\n" * 3)
        self.assertFalse(self.transport.disconnecting)


class HostileInputTests(ServerTestCase):
    limits = replace(LIMITS, max_errors=1000)

    def test_garbage_bytes(self):
        self.send(b"\xff\xfe\xfd\x80garbage\r\n\x1b[31m\r\n")
        self.assertEqual(
            self.take(),
            b"500 5.5.1 Command unrecognized\r\n500 5.5.2 Invalid character in command line\r\n",
        )
        self.send(b"NOOP\r\n")
        self.assertEqual(self.take(), b"250 2.0.0 Ok\r\n")

    def test_nul(self):
        self.send(b"NO\x00OP\r\nNOOP\x00\r\n")
        self.assertEqual(self.take(), b"500 5.5.2 Invalid character in command line\r\n" * 2)

    def test_empty_and_blank_lines(self):
        self.send(b"\r\n   \r\n")
        self.assertEqual(self.take(), b"500 5.5.2 Syntax error\r\n" * 2)

    def test_bare_lf_in_command(self):
        self.ehlo()
        self.send(b"NOOP\nMAIL FROM:<evil@example.net>\r\n")
        self.assertEqual(self.take(), b"500 5.5.2 Bare CR or LF in command line is not allowed\r\n")
        self.assertNotIn("mail_from", self.session.names())

    def test_long_command_line(self):
        self.send(b"NOOP " + b"a" * 10_000 + b"\r\nNOOP\r\n")
        self.assertEqual(self.take(), b"500 5.5.2 Line too long\r\n250 2.0.0 Ok\r\n")

    def test_long_command_line_in_pieces(self):
        """One reply for the whole line, and the buffer stays bounded."""
        self.send(b"MAIL FROM:<")
        for i in range(20):
            self.send(b"a" * 1000)
            self.assertLessEqual(len(self.server._buffer), ESMTPServer.max_command_length + 1000)
        self.send(b"@example.net>\r")
        self.assertEqual(self.take(), b"500 5.5.2 Line too long\r\n")
        self.send(b"\nNOOP\r\n")
        self.assertEqual(self.take(), b"250 2.0.0 Ok\r\n")

    def test_mail_unterminated(self):
        self.ehlo()
        self.send(b"MAIL FROM:<\r\nMAIL FROM:<a@example.net\r\nMAIL FROM:<<a@example.net>>\r\n")
        self.assertEqual(self.take(), b"501 5.1.7 Bad sender address syntax\r\n" * 3)

    def test_mail_syntax(self):
        self.ehlo()
        self.send(b"MAIL\r\nMAIL TO:<a@example.net>\r\nMAIL FROM:\r\nMAIL FROM:a@example.net\r\n")
        self.assertEqual(
            self.take(),
            b"501 5.5.4 Syntax: MAIL FROM:<address>\r\n" * 3 + b"501 5.1.7 Bad sender address syntax\r\n",
        )

    def test_many_spaces(self):
        self.ehlo()
        self.send(b"   MAIL     FROM:   <a@example.net>     SIZE=10      BODY=8BITMIME    \r\n")
        self.assertEqual(self.take(), b"250 2.1.0 Sender OK\r\n")
        self.assertEqual(
            self.session.calls[-1], ("mail_from", "a@example.net", {"SIZE": "10", "BODY": "8BITMIME"})
        )

    def test_tabs(self):
        self.ehlo()
        self.send(b"MAIL\tFROM:<a@example.net>\tSIZE=10\r\n")
        self.assertEqual(self.take(), b"250 2.1.0 Sender OK\r\n")

    def test_parameters_without_values(self):
        self.ehlo()
        for line, expected in [
            (b"SIZE", b"501 5.5.4 Invalid SIZE value"),
            (b"SIZE=", b"501 5.5.4 Invalid parameter syntax"),
            (b"SIZE=abc", b"501 5.5.4 Invalid SIZE value"),
            (b"SIZE=\xc2\xb2", b"501 5.5.4 Invalid SIZE value"),  # a Unicode digit
            (b"SIZE=1=2", b"501 5.5.4 Invalid parameter syntax"),
            (b"BODY", b"501 5.5.4 Invalid BODY value"),
            (b"BODY=BINARYMIME", b"501 5.5.4 Invalid BODY value"),
            (b"SMTPUTF8=yes", b"501 5.5.4 Parameter takes no value"),
            (b"=x", b"501 5.5.4 Invalid parameter syntax"),
            (b"-X=1", b"501 5.5.4 Invalid parameter syntax"),
            (b"SIZE=1 SIZE=2", b"501 5.5.4 Duplicate parameter"),
            (b"FOO", b"555 5.5.4 Unsupported parameter"),
            (b"AUTH=<>", b"555 5.5.4 Unsupported parameter"),
            (b"X\xff=1", b"501 5.5.4 Invalid parameter syntax"),
        ]:
            self.send(b"MAIL FROM:<a@example.net> " + line + b"\r\n")
            self.assertEqual(self.take(), expected + b"\r\n", line)
        self.assertNotIn("mail_from", self.session.names())

    def test_rcpt_parameters_refused(self):
        self.start_transaction()
        self.send(b"RCPT TO:<b@example.org> NOTIFY=NEVER\r\n")
        self.assertEqual(self.take(), b"555 5.5.4 Unsupported parameter\r\n")

    def test_non_ascii_without_smtputf8(self):
        self.ehlo()
        self.send("MAIL FROM:<jösé@exämple.net>\r\n".encode())
        self.assertEqual(self.take(), b"553 5.6.7 Non-ASCII address requires SMTPUTF8\r\n")
        self.send(b"MAIL FROM:<a@example.net>\r\n" + "RCPT TO:<ü@example.org>\r\n".encode())
        self.assertEqual(
            self.take(), b"250 2.1.0 Sender OK\r\n553 5.6.7 Non-ASCII address requires SMTPUTF8\r\n"
        )

    def test_smtputf8(self):
        self.ehlo()
        self.send("MAIL FROM:<jösé@exämple.net> SMTPUTF8\r\nRCPT TO:<ü@例え.jp>\r\n".encode())
        self.assertEqual(self.take(), b"250 2.1.0 Sender OK\r\n250 2.1.5 Recipient OK\r\n")
        self.assertEqual(self.session.calls[-2], ("mail_from", "jösé@exämple.net", {"SMTPUTF8": None}))
        self.assertEqual(self.session.calls[-1], ("rcpt_to", "ü@例え.jp", {}))

    def test_invalid_utf8_address(self):
        self.ehlo()
        self.send(b"MAIL FROM:<j\xf6s\xe9@example.net> SMTPUTF8\r\n")
        self.assertEqual(self.take(), b"501 5.1.7 Bad sender address syntax\r\n")

    def test_thousand_recipients(self):
        self.ehlo()
        self.send(b"MAIL FROM:<a@example.net>\r\n" + b"RCPT TO:<u@example.org>\r\n" * 1000)
        replies = self.lines(self.take())
        self.assertEqual(replies[0], b"250 2.1.0 Sender OK")
        self.assertEqual(replies[1:101], [b"250 2.1.5 Recipient OK"] * 100)
        # 452 is flow control, not a client error: no 421 however many.
        self.assertEqual(replies[101:], [b"452 4.5.3 Too many recipients"] * 900)
        self.assertFalse(self.transport.disconnecting)
        self.assertEqual(self.session.names().count("rcpt_to"), 100)

    def test_rset_inside_data_is_data(self):
        self.start_transaction()
        self.send(b"DATA\r\nRSET\r\nQUIT\r\nMAIL FROM:<x@example.net>\r\n.\r\n")
        self.assertEqual(
            self.take(),
            b"354 End data with <CR><LF>.<CR><LF>\r\n250 2.0.0 Ok: queued as Q1\r\n",
        )
        self.assertEqual(self.session.messages, [b"RSET\r\nQUIT\r\nMAIL FROM:<x@example.net>\r\n"])
        self.assertFalse(self.transport.disconnecting)

    def test_session_reply_is_sanitized(self):
        self.ehlo()
        self.session.behaviour["mail_from"] = raise_reply(550, "4.1.1", "bad\r\n250 2.0.0 fake")
        self.send(b"MAIL FROM:<a@example.net>\r\n")
        self.assertEqual(self.take(), b"550-5.0.0 bad\r\n550 5.0.0 250 2.0.0 fake\r\n")
        self.session.behaviour["mail_from"] = raise_reply(250, "2.0.0", "not an error")
        self.send(b"MAIL FROM:<a@example.net>\r\n")
        self.assertEqual(self.take(), b"451 4.3.0 Internal error, try again later\r\n")


class AddressTests(ServerTestCase):
    limits = replace(LIMITS, max_errors=1000)

    def mail(self, path):
        self.send(b"MAIL FROM:" + path + b"\r\n")
        return self.take()

    def rcpt(self, path):
        self.send(b"RCPT TO:" + path + b"\r\n")
        return self.take()

    def setUp(self):
        super().setUp()
        self.ehlo()

    def test_null_sender(self):
        self.assertEqual(self.mail(b"<>"), b"250 2.1.0 Sender OK\r\n")
        self.assertEqual(self.session.calls[-1], ("mail_from", "", {}))

    def test_null_recipient_refused(self):
        self.mail(b"<>")
        self.assertEqual(self.rcpt(b"<>"), b"501 5.1.3 Bad recipient address syntax\r\n")

    def test_source_route_dropped(self):
        self.mail(b"<@relay.example,@other.example:a@example.net>")
        self.assertEqual(self.session.calls[-1], ("mail_from", "a@example.net", {}))
        self.assertEqual(self.rcpt(b"<@relay.example:b@example.org>"), b"250 2.1.5 Recipient OK\r\n")
        self.assertEqual(self.session.calls[-1], ("rcpt_to", "b@example.org", {}))

    def test_bad_source_route(self):
        for path in [b"<@relay.example>", b"<@:a@example.net>", b"<@a,b:a@example.net>", b"<@-x-:a@example.net>"]:
            self.assertEqual(self.mail(path), b"501 5.1.7 Bad sender address syntax\r\n", path)

    def test_postmaster(self):
        self.mail(b"<>")
        self.assertEqual(self.rcpt(b"<Postmaster>"), b"250 2.1.5 Recipient OK\r\n")
        self.assertEqual(self.session.calls[-1], ("rcpt_to", "Postmaster", {}))
        self.assertEqual(self.rcpt(b"<webmaster>"), b"501 5.1.3 Bad recipient address syntax\r\n")

    def test_valid_addresses(self):
        for path, address in [
            (b'<"john doe"@example.net>', '"john doe"@example.net'),
            (b'<"a>b"@example.net>', '"a>b"@example.net'),
            (b'<"q\\"x"@example.net>', '"q\\"x"@example.net'),
            (b"<user+tag@sub.example.net>", "user+tag@sub.example.net"),
            (b"<a@[192.0.2.1]>", "a@[192.0.2.1]"),
            (b"<a@[IPv6:2001:db8::1]>", "a@[IPv6:2001:db8::1]"),
            (b"<A.B-c_d@EXAMPLE.net>", "A.B-c_d@EXAMPLE.net"),
        ]:
            self.send(b"RSET\r\n")
            self.take()
            self.assertEqual(self.mail(path), b"250 2.1.0 Sender OK\r\n", path)
            self.assertEqual(self.session.calls[-1], ("mail_from", address, {}))

    def test_invalid_addresses(self):
        for path in [
            b"<user>",
            b"<@example.net>",
            b"<user@>",
            b"<a..b@example.net>",
            b"<.a@example.net>",
            b"<a@-example.net>",
            b"<a@example-.net>",
            b"<a@example..net>",
            b"<a@example.net.>",
            b"<a b@example.net>",
            b'<"unterminated@example.net>',
            b'<"esc\\"@example.net>',
            b"<a@[192.0.2.999]>",
            b"<a@[IPv6:fe80::1%eth0]>",
            b"<a@[not a literal]>",
            b"<a@" + b"x" * 64 + b".example>",
            b"<a@" + b"abc." * 70 + b"net>",
            b"<a@example.net>junk",
            b"<a@exa<mple.net>",
        ]:
            self.assertEqual(self.mail(path), b"501 5.1.7 Bad sender address syntax\r\n", path)
        self.assertNotIn("mail_from", self.session.names())


class SessionReplyTests(ServerTestCase):
    def test_mail_refused(self):
        self.ehlo()
        self.session.behaviour["mail_from"] = raise_reply(550, "5.7.1", "Sender rejected")
        self.send(b"MAIL FROM:<a@example.net>\r\nRCPT TO:<b@example.org>\r\n")
        self.assertEqual(self.take(), b"550 5.7.1 Sender rejected\r\n503 5.5.1 Need MAIL command\r\n")

    def test_internal_error_hidden(self):
        self.ehlo()

        def broken(*args):
            raise KeyError("secret table name")

        self.session.behaviour["mail_from"] = broken
        self.send(b"MAIL FROM:<a@example.net>\r\n")
        self.assertEqual(self.take(), b"451 4.3.0 Internal error, try again later\r\n")
        self.assertEqual(len(self.flushLoggedErrors(KeyError)), 1)

    def test_rcpt_refused_and_accepted(self):
        self.ehlo()
        self.session.behaviour["rcpt_to"] = lambda rcpt, params: (
            defer.fail(SMTPReplyError(550, "5.1.1", "No such user")) if rcpt.startswith("x") else None
        )
        self.send(b"MAIL FROM:<a@example.net>\r\nRCPT TO:<x@example.org>\r\nRCPT TO:<y@example.org>\r\n")
        self.assertEqual(
            self.take(), b"250 2.1.0 Sender OK\r\n550 5.1.1 No such user\r\n250 2.1.5 Recipient OK\r\n"
        )
        self.assertEqual(self.server.transaction.recipients, ["y@example.org"])

    def test_max_recipients(self):
        self.server.limits = replace(LIMITS, max_recipients=2)
        self.start_transaction(recipients=2)
        self.send(b"RCPT TO:<c@example.org>\r\n")
        self.assertEqual(self.take(), b"452 4.5.3 Too many recipients\r\n")
        self.assertEqual(self.session.names().count("rcpt_to"), 2)

    def test_421_from_session_closes(self):
        self.ehlo()
        self.session.behaviour["mail_from"] = raise_reply(421, "4.3.2", "Shutting down")
        self.send(b"MAIL FROM:<a@example.net>\r\nNOOP\r\n")
        self.assertEqual(self.take(), b"421 4.3.2 mx.example.org Shutting down\r\n")
        self.assertTrue(self.transport.disconnecting)


class DataTests(ServerTestCase):
    def test_message(self):
        self.start_transaction()
        body = b"Subject: test\r\n\r\n..leading dot\r\n.\r\n"
        self.send(b"DATA\r\n" + b"Subject: test\r\n\r\n...leading dot\r\n..\r\n.\r\n")
        self.assertEqual(
            self.take(), b"354 End data with <CR><LF>.<CR><LF>\r\n250 2.0.0 Ok: queued as Q1\r\n"
        )
        self.assertEqual(self.session.messages, [body])
        self.assertEqual(self.session.names()[-2:], ["data", "reset"])
        self.assertIsNone(self.server.transaction)

    def test_empty_message(self):
        self.start_transaction()
        self.send(b"DATA\r\n.\r\n")
        self.assertEqual(self.session.messages, [b""])

    def test_blank_line_message(self):
        self.start_transaction()
        self.send(b"DATA\r\n\r\n.\r\n")
        self.assertEqual(self.session.messages, [b"\r\n"])

    def test_byte_by_byte(self):
        self.start_transaction()
        stream = b"DATA\r\nA: b\r\n\r\n..x\r\n.y\r\nz.\r\n\r\n.\r\nNOOP\r\n"
        for i in range(len(stream)):
            self.send(stream[i:i + 1])
        self.assertEqual(
            self.take(),
            b"354 End data with <CR><LF>.<CR><LF>\r\n250 2.0.0 Ok: queued as Q1\r\n250 2.0.0 Ok\r\n",
        )
        self.assertEqual(self.session.messages, [b"A: b\r\n\r\n.x\r\ny\r\nz.\r\n\r\n"])

    def test_data_with_argument(self):
        self.start_transaction()
        self.send(b"DATA now\r\n")
        self.assertEqual(self.take(), b"501 5.5.4 Syntax: DATA\r\n")

    def test_second_transaction(self):
        self.start_transaction()
        self.send(b"DATA\r\none\r\n.\r\n")
        self.take()
        self.send(b"MAIL FROM:<b@example.net>\r\nRCPT TO:<c@example.org>\r\nDATA\r\ntwo\r\n.\r\n")
        self.assertEqual(self.lines(self.take())[-1], b"250 2.0.0 Ok: queued as Q2")
        self.assertEqual(self.session.messages, [b"one\r\n", b"two\r\n"])

    def smuggle(self, separator):
        """Send a message holding `separator` and smuggled commands."""
        self.start_transaction()
        self.send(
            b"DATA\r\nSubject: hi\r\n\r\nbody"
            + separator
            + b"MAIL FROM:<admin@example.org>\r\nRCPT TO:<victim@example.org>\r\nDATA\r\n"
            + b"Subject: smuggled\r\n\r\nevil\r\n.\r\n"
        )

    def test_smuggling_lf_dot_crlf(self):
        self.smuggle(b"\n.\r\n")
        self.assertEqual(
            self.take(),
            b"354 End data with <CR><LF>.<CR><LF>\r\n"
            b"550 5.5.2 Bare CR or LF in message data is not allowed\r\n",
        )
        self.assertEqual(self.session.messages, [])
        self.assertEqual(self.session.names().count("mail_from"), 1)
        self.assertEqual(self.session.names()[-1], "reset")

    def test_smuggling_crlf_dot_lf(self):
        self.smuggle(b"\r\n.\n")
        self.assertEqual(
            self.lines(self.take()), [b"354 End data with <CR><LF>.<CR><LF>",
                                      b"550 5.5.2 Bare CR or LF in message data is not allowed"]
        )
        self.assertEqual(self.session.messages, [])

    def test_smuggling_lf_dot_lf(self):
        self.smuggle(b"\n.\n")
        self.assertEqual(self.lines(self.take())[-1], b"550 5.5.2 Bare CR or LF in message data is not allowed")
        self.assertEqual(self.session.messages, [])

    def test_smuggling_cr_dot_cr(self):
        self.smuggle(b"\r.\r")
        self.assertEqual(self.lines(self.take())[-1], b"550 5.5.2 Bare CR or LF in message data is not allowed")
        self.assertEqual(self.session.messages, [])

    def test_smuggling_cr_dot_crlf(self):
        self.smuggle(b"\r.\r\n")
        self.assertEqual(self.lines(self.take())[-1], b"550 5.5.2 Bare CR or LF in message data is not allowed")
        self.assertEqual(self.session.messages, [])

    def test_smuggling_split_across_packets(self):
        self.start_transaction()
        for piece in [b"DATA\r\nbody", b"\n", b".", b"\r", b"\nMAIL FROM:<x@example.org>\r\n", b".\r\n"]:
            self.send(piece)
        self.assertEqual(self.lines(self.take())[-1], b"550 5.5.2 Bare CR or LF in message data is not allowed")
        self.assertEqual(self.session.names().count("mail_from"), 1)

    def test_too_big(self):
        self.start_transaction()
        self.send(b"DATA\r\n")
        for i in range(30):
            self.send(b"x" * 500 + b"\r\n")
        self.assertTrue(self.server._data_reader._buffer.closed)  # stopped buffering
        self.send(b".\r\nNOOP\r\n")
        self.assertEqual(
            self.take(),
            b"354 End data with <CR><LF>.<CR><LF>\r\n"
            b"552 5.3.4 Message size exceeds fixed maximum message size\r\n"
            b"250 2.0.0 Ok\r\n",
        )
        self.assertEqual(self.session.messages, [])

    def test_exactly_max_size(self):
        self.start_transaction()
        line = b"x" * 998 + b"\r\n"
        self.send(b"DATA\r\n" + line * 10 + b".\r\n")
        self.assertEqual(self.lines(self.take())[-1], b"250 2.0.0 Ok: queued as Q1")
        self.assertEqual(len(self.session.messages[0]), 10_000)

    def test_size_parameter_over_limit(self):
        self.ehlo()
        self.send(b"MAIL FROM:<a@example.net> SIZE=10001\r\nMAIL FROM:<a@example.net> SIZE=10000\r\n")
        self.assertEqual(
            self.take(),
            b"552 5.3.4 Message size exceeds fixed maximum message size\r\n250 2.1.0 Sender OK\r\n",
        )

    def test_long_line(self):
        self.start_transaction()
        self.send(b"DATA\r\nok\r\n" + b"y" * 1001 + b"\r\nafter\r\n.\r\n")
        self.assertEqual(
            self.lines(self.take())[-1], b"554 5.5.2 Message has a line longer than 1000 octets"
        )
        self.assertEqual(self.session.messages, [])

    def test_long_line_in_pieces(self):
        """An overlong line is dropped as it arrives, not buffered."""
        self.start_transaction()
        self.send(b"DATA\r\n")
        for i in range(50):
            self.send(b"z" * 999)
            self.assertLess(len(self.server._buffer), 2000)
        self.send(b"\r\n.\r\n")
        self.assertEqual(
            self.lines(self.take())[-1], b"554 5.5.2 Message has a line longer than 1000 octets"
        )

    def test_longest_line_allowed(self):
        self.start_transaction()
        self.send(b"DATA\r\n" + b"y" * 1000 + b"\r")
        self.send(b"\n.\r\n")
        self.assertEqual(self.lines(self.take())[-1], b"250 2.0.0 Ok: queued as Q1")

    def test_data_refused(self):
        self.start_transaction()
        self.session.behaviour["data"] = raise_reply(554, "5.7.1", "Spam detected")
        self.send(b"DATA\r\nbuy now\r\n.\r\n")
        self.assertEqual(self.lines(self.take())[-1], b"554 5.7.1 Spam detected")
        self.assertEqual(self.session.names()[-1], "reset")

    def test_data_internal_error(self):
        self.start_transaction()
        self.session.behaviour["data"] = lambda message: defer.fail(OSError("disk /var/secret full"))
        self.send(b"DATA\r\nhello\r\n.\r\n")
        self.assertEqual(self.lines(self.take())[-1], b"451 4.3.0 Internal error, try again later")
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)
        self.assertEqual(self.session.names()[-1], "reset")

    def test_disconnect_mid_data(self):
        self.start_transaction()
        self.send(b"DATA\r\nSubject: half\r\n\r\nhalf a mess")
        self.lose()
        self.assertEqual(self.session.messages, [])
        self.assertEqual(self.session.names()[-1], "disconnected")
        self.assertEqual(self.session.names().count("disconnected"), 1)

    def test_disconnect_while_data_pending(self):
        """The 250 that arrives after the client left goes nowhere."""
        pending = defer.Deferred()
        self.session.behaviour["data"] = lambda message: pending
        self.start_transaction()
        self.send(b"DATA\r\nx\r\n.\r\n")
        self.take()
        self.lose()
        pending.callback("late")
        self.assertEqual(self.take(), b"")

    def log_events(self) -> list:
        """Every log event from now until the test ends."""
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        return events

    def test_logging(self):
        events = self.log_events()
        self.start_transaction(recipients=2)
        self.send(b"DATA\r\nSubject: very secret content\r\n\r\nPassword: hunter2\r\n.\r\n")
        [event] = [e for e in events if e.get("log_format", "").startswith("Transaction")]
        self.assertEqual(event["peer"], "[192.0.2.1]:4321")
        self.assertEqual(event["sender"], "sender@example.net")
        self.assertEqual(event["count"], 2)
        self.assertEqual((event["code"], event["text"]), (250, "Ok: queued as Q1"))
        for event in events:
            self.assertNotIn("hunter2", repr(event))

    def test_spool_failure_is_a_temporary_refusal_not_a_client_error(self):
        events = self.log_events()
        self.factory.spool = Spool(16, os.path.join(self.mktemp(), "missing"))
        self.server.limits = replace(LIMITS, max_errors=1)
        for _ in range(3):
            self.start_transaction()
            self.send(b"DATA\r\nSubject: more than sixteen octets\r\n\r\nbody\r\n.\r\nNOOP\r\n")
            self.assertEqual(
                self.take(),
                b"354 End data with <CR><LF>.<CR><LF>\r\n"
                b"452 4.3.1 Insufficient system storage\r\n"
                b"250 2.0.0 Ok\r\n",
            )
        self.assertEqual(self.session.messages, [])
        logged = [e for e in events if e.get("log_format", "").startswith("Cannot keep a message")]
        self.assertEqual([type(event["error"]) for event in logged], [FileNotFoundError] * 3)


class PipeliningTests(ServerTestCase):
    def slow_recipients(self, delay=1.0):
        self.session.behaviour["rcpt_to"] = lambda rcpt, params: task.deferLater(
            self.clock, delay, lambda: None
        )

    def test_body_never_run_as_commands(self):
        """The Twisted defect: slow RCPTs must not let the body run as commands."""
        self.ehlo()
        self.slow_recipients()
        body = b"RSET\r\nMAIL FROM:<evil@example.net>\r\nQUIT\r\n"
        self.send(
            b"MAIL FROM:<a@example.net>\r\n"
            b"RCPT TO:<b1@example.org>\r\nRCPT TO:<b2@example.org>\r\nRCPT TO:<b3@example.org>\r\n"
            b"DATA\r\n" + body + b".\r\nNOOP\r\n"
        )
        self.assertEqual(self.take(), b"250 2.1.0 Sender OK\r\n")
        self.clock.advance(1)
        self.assertEqual(self.take(), b"250 2.1.5 Recipient OK\r\n")
        self.clock.advance(1)
        self.clock.advance(1)
        self.assertEqual(
            self.take(),
            b"250 2.1.5 Recipient OK\r\n" * 2
            + b"354 End data with <CR><LF>.<CR><LF>\r\n250 2.0.0 Ok: queued as Q1\r\n250 2.0.0 Ok\r\n",
        )
        self.assertEqual(self.session.messages, [body])
        self.assertEqual(
            self.session.names(),
            ["connected", "helo", "mail_from", "rcpt_to", "rcpt_to", "rcpt_to", "data", "reset"],
        )
        self.assertFalse(self.transport.disconnecting)

    def test_replies_sent_together(self):
        self.ehlo()
        writes = self.transport.writes
        self.send(b"MAIL FROM:<a@example.net>\r\nRCPT TO:<b@example.org>\r\nRCPT TO:<c@example.org>\r\nNOOP\r\n")
        self.assertEqual(self.transport.writes, writes + 1)
        self.assertEqual(len(self.lines(self.take())), 4)

    def test_slow_data_holds_next_commands(self):
        pending = defer.Deferred()
        self.session.behaviour["data"] = lambda message: pending
        self.start_transaction()
        self.send(b"DATA\r\nhello\r\n.\r\nMAIL FROM:<b@example.net>\r\nQUIT\r\n")
        self.assertEqual(self.take(), b"354 End data with <CR><LF>.<CR><LF>\r\n")
        self.assertEqual(self.session.names()[-1], "data")
        pending.callback("queued as Z")
        self.assertEqual(
            self.take(),
            b"250 2.0.0 queued as Z\r\n250 2.1.0 Sender OK\r\n221 2.0.0 mx.example.org closing connection\r\n",
        )

    def test_reading_paused_while_waiting(self):
        self.ehlo()
        self.slow_recipients()
        self.send(b"MAIL FROM:<a@example.net>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n")
        self.send(b"x" * 100 + b"\r\n" + b"y" * 1000 * 300)
        self.assertEqual(self.transport.producerState, "paused")
        self.clock.advance(1)
        self.assertEqual(self.transport.producerState, "producing")
        self.assertEqual(self.server._buffer, b"")

    def test_no_timeout_while_waiting_for_session(self):
        self.ehlo()
        self.slow_recipients(delay=10_000)
        self.send(b"MAIL FROM:<a@example.net>\r\nRCPT TO:<b@example.org>\r\n")
        self.clock.advance(9_999)
        self.assertFalse(self.transport.disconnecting)
        self.clock.advance(1)
        self.assertEqual(self.take(), b"250 2.1.0 Sender OK\r\n250 2.1.5 Recipient OK\r\n")
        self.clock.advance(300)
        self.assertTrue(self.transport.disconnecting)


class TimeoutTests(ServerTestCase):
    def test_command_timeout(self):
        self.clock.advance(299)
        self.send(b"NOOP\r\n")
        self.take()
        self.clock.advance(299)
        self.assertFalse(self.transport.disconnecting)
        self.clock.advance(1)
        self.assertEqual(self.take(), b"421 4.4.2 mx.example.org Timeout\r\n")
        self.assertTrue(self.transport.disconnecting)

    def test_data_timeout(self):
        self.start_transaction()
        self.send(b"DATA\r\npart")
        self.clock.advance(599)
        self.assertFalse(self.transport.disconnecting)
        self.clock.advance(1)
        self.assertEqual(self.lines(self.take())[-1], b"421 4.4.2 mx.example.org Timeout")
        self.lose()
        self.assertEqual(self.session.messages, [])

    def test_back_to_command_timeout_after_data(self):
        self.start_transaction()
        self.send(b"DATA\r\nx\r\n.\r\n")
        self.clock.advance(300)
        self.assertTrue(self.transport.disconnecting)

    def test_no_global_reactor(self):
        self.assertIs(self.server.clock, self.clock)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)


class STARTTLSTests(ServerTestCase):
    tls_context = object()

    def ehlo(self):
        self.send(b"EHLO client.example.net\r\n")
        self.assertEqual(self.take(), EHLO_REPLY[:-2].replace(b"250 SMTPUTF8", b"250-SMTPUTF8") + b"\r\n250 STARTTLS\r\n")

    def test_injection_discarded(self):
        self.ehlo()
        self.send(b"STARTTLS\r\nRSET\r\nMAIL FROM:<evil@example.net>\r\n")
        self.assertEqual(self.take(), b"220 2.0.0 Ready to start TLS\r\n")
        self.assertIs(self.transport.tls_context, self.tls_context)
        self.assertEqual(self.session.names(), ["connected", "helo", "tls_started"])
        # The state is reset: the client must EHLO again, inside TLS.
        self.send(b"MAIL FROM:<a@example.net>\r\n")
        self.assertEqual(self.take(), b"503 5.5.1 Send HELO/EHLO first\r\n")
        self.send(b"EHLO client.example.net\r\n")
        self.assertEqual(self.take(), EHLO_REPLY)
        self.send(b"STARTTLS\r\n")
        self.assertEqual(self.take(), b"503 5.5.1 TLS already active\r\n")

    def test_starttls_syntax_and_sequence(self):
        self.send(b"STARTTLS\r\n")
        self.assertEqual(self.take(), b"503 5.5.1 Send EHLO first\r\n")
        self.ehlo()
        self.send(b"STARTTLS now\r\nMAIL FROM:<a@example.net>\r\nSTARTTLS\r\n")
        self.assertEqual(
            self.take(),
            b"501 5.5.4 Syntax: STARTTLS\r\n250 2.1.0 Sender OK\r\n503 5.5.1 Mail transaction in progress\r\n",
        )
        self.assertIsNone(self.transport.tls_context)

    def test_help_lists_starttls(self):
        self.send(b"HELP\r\n")
        self.assertIn(b" STARTTLS ", self.take())

    def test_tls_started_refused(self):
        self.ehlo()
        self.session.behaviour["tls_started"] = raise_reply(554, "5.7.0", "Bad certificate")
        self.send(b"STARTTLS\r\n")
        self.assertEqual(
            self.take(), b"220 2.0.0 Ready to start TLS\r\n421 4.7.0 mx.example.org Bad certificate\r\n"
        )
        self.assertTrue(self.transport.disconnecting)


class NoTLSTests(ServerTestCase):
    def test_starttls_unavailable(self):
        self.ehlo()
        self.send(b"STARTTLS\r\n")
        self.assertEqual(self.take(), b"502 5.5.1 Command not implemented\r\n")


class ImplicitTLSTests(ServerTestCase):
    tls_context = object()
    implicit_tls = True

    def test_implicit(self):
        self.assertEqual(self.session.calls[0], ("connected", "192.0.2.1", 4321, True))
        self.ehlo()  # no STARTTLS offered
        self.send(b"STARTTLS\r\n")
        self.assertEqual(self.take(), b"503 5.5.1 TLS already active\r\n")


class SubmissionLikeServer(ESMTPServer):
    """What the submission listener will do: an extension, a MAIL parameter
    and a command reading continuation lines."""

    def extensions(self):
        ext = super().extensions()
        ext[b"AUTH"] = [b"PLAIN"]
        return ext

    def mail_parameters(self):
        params = super().mail_parameters()
        params["AUTH"] = lambda value: None
        return params

    def smtp_AUTH(self, args):
        self.reply(334, None, "")
        d = self.read_line()

        def got(line):
            if line == b"secret":
                self.reply(235, "2.7.0", "Authentication successful")
            else:
                self.reply(535, "5.7.8", "Authentication credentials invalid")

        def too_long(failure):
            failure.trap(LineTooLong)
            self.reply(500, "5.5.6", "Authentication Exchange line is too long")

        d.addCallbacks(got, too_long)
        return d


class ExtensionHookTests(ServerTestCase):
    def setUp(self):
        super().setUp()
        self.factory.protocol = SubmissionLikeServer
        self.server, self.transport = self.connect()
        self.take()

    def test_extension_and_parameter(self):
        self.send(b"EHLO x.example\r\nMAIL FROM:<a@example.net> AUTH=<>\r\n")
        reply = self.take()
        self.assertIn(b"250 AUTH PLAIN\r\n", reply)
        self.assertTrue(reply.endswith(b"250 2.1.0 Sender OK\r\n"))

    def test_read_line_pipelined(self):
        self.send(b"AUTH PLAIN\r\nsecret\r\nNOOP\r\n")
        self.assertEqual(
            self.take(), b"334 \r\n235 2.7.0 Authentication successful\r\n250 2.0.0 Ok\r\n"
        )

    def test_read_line_later(self):
        self.send(b"AUTH PLAIN\r\n")
        self.assertEqual(self.take(), b"334 \r\n")
        self.send(b"wrong\r\n")
        self.assertEqual(self.take(), b"535 5.7.8 Authentication credentials invalid\r\n")

    def test_read_line_too_long(self):
        self.send(b"AUTH PLAIN\r\n" + b"A" * 5000 + b"\r\nNOOP\r\n")
        self.assertEqual(
            self.take(),
            b"334 \r\n500 5.5.6 Authentication Exchange line is too long\r\n250 2.0.0 Ok\r\n",
        )

    def test_read_line_connection_lost(self):
        self.send(b"AUTH PLAIN\r\n")
        self.lose()
        self.assertEqual(self.session.names()[-1], "disconnected")


class CommandParsingTests(unittest.TestCase):
    """The pure functions of emailsvc.smtp.commands."""

    def test_split_command(self):
        self.assertEqual(commands.split_command(b"mail FROM:<a@b>"), ("MAIL", b"FROM:<a@b>"))
        self.assertEqual(commands.split_command(b"  NOOP  "), ("NOOP", b""))
        with self.assertRaises(SMTPReplyError) as caught:
            commands.split_command(b"\xc3\xa9HLO x")
        self.assertEqual(caught.exception.code, 500)

    def test_format_reply(self):
        self.assertEqual(commands.format_reply(250, "2.0.0", "a\nb"), b"250-2.0.0 a\r\n250 2.0.0 b\r\n")
        self.assertEqual(commands.format_reply(354, None, "go"), b"354 go\r\n")
        self.assertEqual(commands.format_reply(550, "5.0.0", "x\x00\x1by"), b"550 5.0.0 x  y\r\n")

    def test_public_reply(self):
        self.assertEqual(
            commands.public_reply(SMTPReplyError(452, "4.2.2", "Mailbox full")), (452, "4.2.2", "Mailbox full")
        )
        self.assertEqual(commands.public_reply(SMTPReplyError(452, "", "x")), (452, "4.0.0", "x"))
        self.assertEqual(commands.public_reply(SMTPReplyError(600, "6.0.0", "x")), commands.INTERNAL_ERROR)

    def test_data_reader_terminator_only_crlf_dot_crlf(self):
        reader = commands.DataReader(10_000, 1000, Spool().buffer())
        rest = reader.feed(b"a\n.\nb\r.\rc\r\n.\r")
        self.assertFalse(reader.done)
        self.assertEqual(rest, b".\r")
        rest = reader.feed(rest + b"\nNEXT")
        self.assertTrue(reader.done)
        self.assertEqual(rest, b"NEXT")
        self.assertEqual(reader.error.code, 550)

    def test_data_reader_unstuffing(self):
        reader = commands.DataReader(10_000, 1000, Spool().buffer())
        self.assertEqual(reader.feed(b"..\r\n...\r\n.x\r\nx.\r\n.\r\n"), b"")
        self.assertEqual(reader.take(), b".\r\n..\r\nx\r\nx.\r\n")
        self.assertIsNone(reader.error)

    def test_data_reader_refuses_when_its_buffer_fails(self):
        missing = os.path.join(self.mktemp(), "spool")
        reader = commands.DataReader(10_000, 1000, Spool(10, missing).buffer())
        self.assertEqual(reader.feed(b"short\r\n"), b"")  # in memory still
        self.assertEqual(reader.feed(b"past the threshold\r\n.\r\n"), b"")
        self.assertTrue(reader.done)
        self.assertIsInstance(reader.storage_error, FileNotFoundError)
        self.assertIsNone(reader.take())
        self.assertEqual(commands.public_reply(reader.error), (452, "4.3.1", "Insufficient system storage"))

    def test_is_domain(self):
        self.assertTrue(commands.is_domain("example.org"))
        self.assertTrue(commands.is_domain("xn--bcher-kva.example"))
        self.assertFalse(commands.is_domain("bücher.example"))
        self.assertTrue(commands.is_domain("bücher.example", utf8=True))
        self.assertFalse(commands.is_domain("a_b.example"))
        self.assertFalse(commands.is_domain(""))
