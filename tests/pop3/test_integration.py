"""POP3 over real loopback sockets into the embedded store, driven by
Python's poplib (STLS and POP3_SSL) and by raw sockets (exact bytes,
pipelining, hostile input)."""
import base64
import poplib
import socket
import time

from twisted.internet import defer, reactor
from twisted.internet.threads import deferToThread
from twisted.trial import unittest

from emailsvc.cred.throttle import AuthThrottle
from emailsvc.config import POP3Config
from emailsvc.pop3.maildrop import Maildrop
from emailsvc.pop3.wire import encode
from tests.pop3.support import CRLF_MESSAGE, DOT_MESSAGE, LF_MESSAGE, PASSWORD, Listener, MailFixture

ALICE = "alice@example.test"
TIMEOUT = 15
# Long enough to span several 256 KiB reads, with dots and line ends at awkward places.
BIG_MESSAGE = b"Subject: big\n\n" + b"".join(
    b".%06d %s\n" % (n, b"x" * (n % 97)) if n % 3 else b"%06d\r\n" % n for n in range(20000)
)


def run(function, *args):
    return deferToThread(function, *args)


class RawClient:
    """A blocking POP3 client that shows the exact bytes (run in a thread)."""

    def __init__(self, address, ssl_context=None):
        self.sock = socket.create_connection(address, timeout=TIMEOUT)
        if ssl_context is not None:
            self.sock = ssl_context.wrap_socket(self.sock, server_hostname="127.0.0.1")
        self.file = self.sock.makefile("rb")
        self.greeting = self.file.readline()

    def send(self, data: bytes):
        self.sock.sendall(data)

    def line(self) -> bytes:
        return self.file.readline()

    def command(self, data: bytes) -> bytes:
        self.send(data + b"\r\n")
        return self.line()

    def multiline(self) -> bytes:
        """Everything up to and including the terminating ".\r\n"."""
        data = []
        while True:
            line = self.file.readline()
            if not line:
                raise EOFError(b"".join(data))
            data.append(line)
            if line == b".\r\n":
                return b"".join(data)

    def start_tls(self, context):
        self.file.close()
        self.sock = context.wrap_socket(self.sock, server_hostname="127.0.0.1")
        self.file = self.sock.makefile("rb")

    def rest(self) -> bytes:
        """Read until the server closes."""
        data = []
        while chunk := self.sock.recv(65536):
            data.append(chunk)
        return b"".join(data)

    def close(self):
        self.file.close()
        self.sock.close()




class IntegrationTestCase(unittest.TestCase):
    tls = "starttls"
    limits = None

    @defer.inlineCallbacks
    def setUp(self):
        self.fixture = yield MailFixture().start(self)
        self.records = []
        for message in (CRLF_MESSAGE, LF_MESSAGE, DOT_MESSAGE, BIG_MESSAGE):
            self.records.append((yield self.fixture.deliver(message)))
        self.served = []
        for record in self.records:
            self.served.append((yield self.fixture.served(record)))
        self.throttle = AuthThrottle(reactor, max_failures=50, failure_window=60, lockout=60)
        self.listener = Listener(self, self.fixture, self.tls, self.limits, self.throttle)
        self.address = self.listener.address

    def poplib_session(self, tls=True):
        """A logged-in poplib client (STLS first)."""
        client = poplib.POP3(*self.address, timeout=TIMEOUT)
        if tls:
            client.stls(self.listener.ssl_context())
        client.user(ALICE)
        client.pass_(PASSWORD)
        return client


class PoplibTests(IntegrationTestCase):
    def test_stls_session(self):
        def session():
            client = poplib.POP3(*self.address, timeout=TIMEOUT)
            before = client.capa()
            self.assertNotIn("USER", before)
            self.assertNotIn("SASL", before)
            self.assertIn("STLS", before)
            self.assertRaises(poplib.error_proto, client.user, ALICE)
            client.stls(self.listener.ssl_context())
            after = client.capa()
            self.assertEqual(after["SASL"], ["PLAIN"])
            self.assertIn("USER", after)
            self.assertNotIn("STLS", after)
            self.assertEqual(after["IMPLEMENTATION"], ["emailsvc"])
            client.user(ALICE)
            client.pass_(PASSWORD)
            self.assertEqual(client.stat(), (4, sum(map(len, self.served))))
            _, listing, _ = client.list()
            self.assertEqual(listing, [b"%d %d" % (n, len(m)) for n, m in enumerate(self.served, 1)])
            for number, expected in enumerate(self.served, 1):
                response, lines, octets = client.retr(number)
                self.assertEqual(response, b"+OK %d octets" % len(expected))
                self.assertEqual(b"".join(line + b"\r\n" for line in lines), expected, number)
            _, lines, _ = client.top(2, 1)
            header, body = self.served[1].split(b"\r\n\r\n", 1)
            self.assertEqual(lines, header.split(b"\r\n") + [b"", body.split(b"\r\n")[0]])
            self.assertTrue(client.quit().startswith(b"+OK"))

        return run(session)

    @defer.inlineCallbacks
    def test_uidl_and_list_stable_across_sessions(self):
        def listing():
            client = self.poplib_session()
            try:
                return client.uidl()[1], client.list()[1]
            finally:
                client.quit()

        first = yield run(listing)
        self.assertEqual(first, (yield run(listing)))
        yield self.fixture.deliver(b"Subject: new\r\n\r\nnew\r\n")
        uidls, sizes = yield run(listing)
        self.assertEqual((uidls[:4], sizes[:4]), first)
        self.assertEqual(len(set(uid.split()[1] for uid in uidls)), 5)

    @defer.inlineCallbacks
    def test_dele_applied_only_at_quit(self):
        def dele_then(ending):
            client = self.poplib_session()
            client.dele(1)
            client.dele(4)
            if ending == "rset":
                client.rset()
            if ending == "drop":
                client.sock.close()
                return None
            return client.quit()

        def count():
            client = self.poplib_session()
            try:
                return client.stat()[0]
            finally:
                client.quit()

        for ending in ("drop", "rset"):
            yield run(dele_then, ending)
            yield run(time.sleep, 0.2)  # let the server see the disconnect
            self.assertEqual((yield run(count)), 4, ending)
        reply = yield run(dele_then, "quit")
        self.assertIn(b"(2 messages deleted)", reply)
        self.assertEqual((yield run(count)), 2)
        _, records = yield self.fixture.inbox()
        self.assertEqual([r.uid for r in records], [self.records[1].uid, self.records[2].uid])

    def test_pipelined_commands(self):
        def session():
            client = RawClient(self.address)
            self.assertEqual(client.command(b"STLS"), b"+OK Begin TLS negotiation\r\n")
            client.start_tls(self.listener.ssl_context())
            client.send(b"USER %s\r\nPASS %s\r\nSTAT\r\nRETR 3\r\nTOP 1 0\r\nQUIT\r\n"
                        % (ALICE.encode(), PASSWORD.encode()))
            self.assertEqual(client.line(), b"+OK Send PASS\r\n")
            self.assertEqual(client.line(), b"+OK Logged in, 4 messages\r\n")
            self.assertEqual(client.line(), b"+OK 4 %d\r\n" % sum(map(len, self.served)))
            self.assertEqual(client.line(), b"+OK %d octets\r\n" % len(self.served[2]))
            self.assertEqual(client.multiline(), encode(self.served[2]))
            self.assertEqual(client.line(), b"+OK Top of message follows\r\n")
            self.assertEqual(client.multiline(), encode(self.served[0], 0))
            self.assertTrue(client.line().startswith(b"+OK pop.example.test POP3 server signing off"))
            self.assertEqual(client.rest(), b"")

        return run(session)

    def test_retr_byte_exact(self):
        # Small reads put chunk boundaries inside CRLFs and before dots.
        self.patch(Maildrop, "read_chunk", 4093)

        def session():
            client = RawClient(self.address)
            client.command(b"STLS")
            client.start_tls(self.listener.ssl_context())
            client.command(b"USER " + ALICE.encode())
            self.assertEqual(client.command(b"PASS " + PASSWORD.encode()), b"+OK Logged in, 4 messages\r\n")
            for number, expected in enumerate(self.served, 1):
                self.assertEqual(client.command(b"RETR %d" % number), b"+OK %d octets\r\n" % len(expected))
                wire = client.multiline()
                self.assertEqual(wire, encode(expected))
                self.assertNotIn(b"\r\r\n", wire)
                lines = wire[:-3].split(b"\r\n")
                self.assertEqual(b"\r\n".join(l[1:] if l[:1] == b"." else l for l in lines), expected)
            client.command(b"QUIT")

        return run(session)


    def test_auth_plain(self):
        def session():
            client = RawClient(self.address)
            client.command(b"STLS")
            client.start_tls(self.listener.ssl_context())
            response = base64.b64encode(b"\0%s\0%s" % (ALICE.encode(), PASSWORD.encode()))
            self.assertEqual(client.command(b"AUTH PLAIN"), b"+ \r\n")
            self.assertEqual(client.command(response), b"+OK Logged in, 4 messages\r\n")
            self.assertEqual(client.command(b"DELE 2"), b"+OK Message 2 deleted\r\n")
            self.assertEqual(client.command(b"QUIT"),
                             b"+OK pop.example.test POP3 server signing off (1 message deleted)\r\n")
            client.close()

            client = RawClient(self.address)
            client.command(b"STLS")
            client.start_tls(self.listener.ssl_context())
            self.assertEqual(client.command(b"AUTH PLAIN " + response), b"+OK Logged in, 3 messages\r\n")
            client.command(b"QUIT")
            client.close()

        return run(session)


    @defer.inlineCallbacks
    def test_failures_do_not_reveal_users(self):
        def attempt(user, password):
            client = poplib.POP3(*self.address, timeout=TIMEOUT)
            client.stls(self.listener.ssl_context())
            client.user(user)
            try:
                client.pass_(password)
            except poplib.error_proto as error:
                return error.args[0]
            finally:
                client.close()

        wrong_password = yield run(attempt, ALICE, "wrong")
        no_user = yield run(attempt, "nobody@example.test", PASSWORD)
        self.assertEqual(wrong_password, b"-ERR [AUTH] Authentication failed")
        self.assertEqual(no_user, wrong_password)
        self.assertTrue(self.throttle.failed("127.0.0.1", "x") > 0.25)  # both were counted


class ImplicitTLSTests(IntegrationTestCase):
    tls = "implicit"

    def test_pop3_ssl(self):
        def session():
            client = poplib.POP3_SSL(*self.address, context=self.listener.ssl_context(), timeout=TIMEOUT)
            self.assertNotIn("STLS", client.capa())
            client.user(ALICE)
            client.pass_(PASSWORD)
            _, lines, _ = client.retr(2)
            self.assertEqual(b"".join(line + b"\r\n" for line in lines), self.served[1])
            self.assertEqual(client.uidl(2).split()[0], b"+OK")
            client.quit()

        return run(session)


class HostileInputTests(IntegrationTestCase):
    limits = POP3Config(idle_timeout=1.0, max_errors=5)

    def test_stls_injection(self):
        def session():
            client = RawClient(self.address)
            client.send(b"STLS\r\nUSER %s\r\nPASS %s\r\n" % (ALICE.encode(), PASSWORD.encode()))
            self.assertEqual(client.line(), b"+OK Begin TLS negotiation\r\n")
            client.start_tls(self.listener.ssl_context())
            # Had the injected login run, this would be answered with +OK.
            self.assertEqual(client.command(b"STAT"), b"-ERR Not logged in\r\n")
            self.assertEqual(client.command(b"PASS " + PASSWORD.encode()), b"-ERR USER first\r\n")
            client.close()

        return run(session)

    def test_commands_before_authentication(self):
        def session():
            client = RawClient(self.address)
            self.assertTrue(client.greeting.startswith(b"+OK pop.example.test"))
            self.assertEqual(client.command(b"RETR 1"), b"-ERR Not logged in\r\n")
            self.assertEqual(client.command(b"USER " + ALICE.encode()),
                             b"-ERR [AUTH] Plaintext authentication requires TLS, use STLS first\r\n")
            self.assertEqual(client.command(b"AUTH PLAIN AGFAYgBj"),
                             b"-ERR [AUTH] Plaintext authentication requires TLS, use STLS first\r\n")
            self.assertEqual(client.command(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"), b"-ERR Unknown command\r\n")
            self.assertEqual(client.command(b"\xff\xfe\x00 GARBAGE"), b"-ERR Unknown command\r\n")
            self.assertEqual(client.command(b"STAT"), b"-ERR Too many errors, closing connection\r\n")
            self.assertEqual(client.rest(), b"")

        return run(session)

    def test_overlong_line(self):
        def session():
            client = RawClient(self.address)
            client.send(b"CAPA " + b"A" * 100_000)
            self.assertEqual(client.line(), b"-ERR Line too long\r\n")
            self.assertEqual(client.rest(), b"")

        return run(session)

    def test_idle_timeout(self):
        def session():
            client = RawClient(self.address)
            started = time.monotonic()
            self.assertEqual(client.line(), b"-ERR Disconnected for inactivity\r\n")
            self.assertEqual(client.rest(), b"")
            self.assertLess(time.monotonic() - started, 10)

        return run(session)
