"""The protocol on a StringTransport and a fake clock: timeouts, flow control, limits."""
from twisted.internet import task
from twisted.internet.testing import StringTransport
from twisted.trial import unittest

from emailsvc.imap.factory import IMAPFactory


def connect(factory):
    server = factory.buildProtocol(None)
    transport = StringTransport()
    server.makeConnection(transport)
    return server, transport


class ProtocolTests(unittest.SynchronousTestCase):
    def setUp(self):
        self.clock = task.Clock()
        self.factory = IMAPFactory(portal_for=None, clock=self.clock, max_connections_per_ip=1)

    def test_greeting_and_preauth_timeout(self):
        server, transport = connect(self.factory)
        self.assertEqual(transport.value(), b"* OK [CAPABILITY IMAP4rev1 LITERAL+ SASL-IR ID ENABLE IDLE LOGINDISABLED]"
                                            b" emailsvc IMAP4rev1 ready\r\n")
        transport.clear()
        self.clock.advance(59)
        server.dataReceived(b"a NOOP\r\n")
        self.clock.advance(59)
        self.assertEqual(transport.value(), b"a OK NOOP completed\r\n")
        self.clock.advance(2)
        self.assertEqual(transport.value(), b"a OK NOOP completed\r\n* BYE Autologout; idle for too long\r\n")
        self.assertTrue(transport.disconnecting)

    def test_connection_limit_per_address(self):
        server, transport = connect(self.factory)
        _, refused = connect(self.factory)
        self.assertEqual(refused.value(), b"* BYE Too many connections, try again later\r\n")
        self.assertTrue(refused.disconnecting)
        server.connectionLost(None)
        _, again = connect(self.factory)
        self.assertTrue(again.value().startswith(b"* OK "))

    def test_reading_pauses_behind_a_busy_command(self):
        server, transport = connect(self.factory)
        transport.clear()
        server._busy = True                     # a command that takes long
        server.dataReceived(b"a NOOP\r\n" + b"x" * (1024 * 1024))
        self.assertEqual((transport.producerState, transport.value()), ("paused", b""))
        server._command_done(None)
        self.assertEqual(transport.producerState, "producing")
        server.dataReceived(b"\r\nb NOOP\r\n")
        self.assertEqual(transport.value(), b"a OK NOOP completed\r\n* BAD Line too long\r\nb OK NOOP completed\r\n")

    def test_no_password_in_replies(self):
        server, transport = connect(self.factory)
        server.dataReceived(b'a LOGIN alice "hunter2"\r\n')
        self.assertEqual(transport.value().splitlines()[-1],
                         b"a NO [PRIVACYREQUIRED] Login requires TLS (STARTTLS first)")
