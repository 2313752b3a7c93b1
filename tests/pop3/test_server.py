"""The POP3 protocol on a fake transport: states, STLS, AUTH, pipelining,
message transfer, UPDATE, limits."""
import base64
from collections import namedtuple

from twisted.internet import defer, task
from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import ITLSTransport
from twisted.internet.testing import StringTransport
from twisted.mail import pop3
from twisted.trial import unittest
from zope.interface import implementer

from emailsvc.cred import passwords
from emailsvc.cred.checker import DirectoryChecker
from emailsvc.cred.realm import MailRealm
from emailsvc.cred.throttle import AuthThrottle
from emailsvc.errors import BlobNotFound
from emailsvc.config import POP3Config
from emailsvc.pop3.factory import POP3Factory
from emailsvc.pop3.maildrop import Maildrop, MessageGone
from emailsvc.pop3.server import CommandError, is_loopback, parse_number
from emailsvc.pop3.wire import encode, normalize
from emailsvc.store.model import Content, User
from tests.pop3.support import CRLF_MESSAGE, DOT_MESSAGE, LF_MESSAGE

PEER = IPv4Address("TCP", "192.0.2.7", 50000)
LOOPBACK = IPv4Address("TCP", "127.0.0.1", 50000)
MESSAGES = [(10, CRLF_MESSAGE), (11, LF_MESSAGE), (13, DOT_MESSAGE)]
Record = namedtuple("Record", "uid content_id size")
TLS_REQUIRED = b"-ERR [AUTH] Plaintext authentication requires TLS, use STLS first\r\n"
AUTH_FAILED = b"-ERR [AUTH] Authentication failed\r\n"


@implementer(ITLSTransport)
class TLSStringTransport(StringTransport):
    tls_context = None

    def startTLS(self, context, normal=True):
        self.tls_context = context


class FakeDirectory:
    def __init__(self):
        self.fail = None  # an exception to fail logins with
        self.slow = None

    def authenticate(self, address, password):
        if self.slow is not None:
            return self.slow
        if self.fail is not None:
            return defer.fail(self.fail)
        ok = address.lower() == "alice@example.test" and password == "s3cret pw"
        return defer.succeed(User(7, "alice@example.test") if ok else None)


class FakeMail:
    def __init__(self):
        self.calls = []
        self.fail_sync = False

    def get_content(self, content_id):
        data = dict(MESSAGES).get(content_id)
        return defer.succeed(Content(blob_key=str(content_id), size=len(data), id=content_id) if data else None)

    def store_flags(self, mailbox_id, uids, flags, mode, unchanged_since=None):
        self.calls.append(("store_flags", mailbox_id, sorted(uids), list(flags), mode))
        if self.fail_sync:
            return defer.fail(RuntimeError("disk full"))
        return defer.succeed(([], []))

    def expunge(self, mailbox_id, uids=None):
        self.calls.append(("expunge", mailbox_id, sorted(uids)))
        return defer.succeed(sorted(uids))


class FakeBlobs:
    def __init__(self):
        self.reads = []
        self.missing = set()

    def get(self, key, offset=0, length=None):
        self.reads.append((key, offset, length))
        if key in self.missing:
            return defer.fail(BlobNotFound(key))
        data = dict(MESSAGES)[int(key)]
        return defer.succeed(data[offset:] if length is None else data[offset:offset + length])


class ServerTestCase(unittest.TestCase):
    tls_context = object()
    implicit_tls = False
    loopback_plaintext = False
    peer = PEER
    limits = POP3Config()

    def setUp(self):
        self.clock = task.Clock()
        self.directory = FakeDirectory()
        self.mail = FakeMail()
        self.blobs = FakeBlobs()
        self.maildrops = []
        throttle = AuthThrottle(self.clock, max_failures=100, failure_window=60, lockout=60)
        checker = DirectoryChecker(self.directory, throttle, self.clock)
        self.factory = POP3Factory(
            MailRealm({pop3.IMailbox: self.make_maildrop}), checker, "pop.example.test", self.limits,
            tls_context=self.tls_context, implicit_tls=self.implicit_tls, clock=self.clock,
            loopback_plaintext=self.loopback_plaintext,
        )
        self.server = self.factory.buildProtocol(self.peer)
        self.transport = TLSStringTransport(peerAddress=self.peer)
        self.server.makeConnection(self.transport)
        self.assertEqual(self.take(), b"+OK pop.example.test POP3 server ready\r\n")

    def make_maildrop(self, user_id):
        maildrop = Maildrop(self.mail, self.blobs, 3, 42, [Record(uid, uid, len(m)) for uid, m in MESSAGES])
        self.maildrops.append(maildrop)
        return maildrop

    def send(self, data):
        self.server.dataReceived(data)

    def take(self):
        value = self.transport.value()
        self.transport.clear()
        return value

    def exchange(self, data):
        self.send(data)
        return self.take()

    def start_tls(self):
        self.assertEqual(self.exchange(b"STLS\r\n"), b"+OK Begin TLS negotiation\r\n")

    def login(self):
        if not self.server.plaintext_allowed():
            self.start_tls()
        self.assertEqual(self.exchange(b"USER alice@example.test\r\nPASS s3cret pw\r\n"),
                         b"+OK Send PASS\r\n+OK Logged in, 3 messages\r\n")


class CapabilityAndTLSTests(ServerTestCase):
    def capabilities(self):
        reply = self.exchange(b"CAPA\r\n").split(b"\r\n")
        self.assertEqual((reply[0], reply[-2:]), (b"+OK Capability list follows", [b".", b""]))
        return reply[1:-2]

    def test_capa_before_and_after_stls(self):
        self.assertEqual(self.capabilities(), [b"TOP", b"UIDL", b"RESP-CODES", b"AUTH-RESP-CODE", b"PIPELINING",
                                               b"STLS", b"IMPLEMENTATION emailsvc"])
        self.start_tls()
        self.assertIs(self.transport.tls_context, self.tls_context)
        self.assertEqual(self.capabilities(), [b"TOP", b"UIDL", b"RESP-CODES", b"AUTH-RESP-CODE", b"PIPELINING",
                                               b"USER", b"SASL PLAIN", b"IMPLEMENTATION emailsvc"])
        self.login()
        self.assertIn(b"SASL PLAIN", self.capabilities())

    def test_twisted_has_no_stls(self):
        self.assertFalse(hasattr(pop3.POP3, "do_STLS"))

    def test_no_login_before_tls(self):
        self.assertEqual(self.exchange(b"USER alice@example.test\r\n"), TLS_REQUIRED)
        self.assertEqual(self.exchange(b"PASS s3cret pw\r\n"), TLS_REQUIRED)
        self.assertEqual(self.exchange(b"AUTH PLAIN AGFsaWNlQGV4YW1wbGUudGVzdABzM2NyZXQgcHc=\r\n"), TLS_REQUIRED)
        self.assertEqual(self.exchange(b"AUTH\r\n"), b"+OK Mechanisms follow\r\n.\r\n")
        self.assertEqual(self.maildrops, [])

    def test_stls_injection_discarded(self):
        self.send(b"STLS\r\nUSER alice@example.test\r\nPASS s3cret pw\r\nSTAT\r\n")
        self.assertEqual(self.take(), b"+OK Begin TLS negotiation\r\n")
        self.assertEqual(self.maildrops, [])
        self.assertEqual(self.exchange(b"PASS s3cret pw\r\n"), b"-ERR USER first\r\n")

    def test_stls_refusals(self):
        self.assertEqual(self.exchange(b"STLS now\r\n"), b"-ERR Syntax: STLS\r\n")
        self.start_tls()
        self.assertEqual(self.exchange(b"STLS\r\n"), b"-ERR TLS already active\r\n")

    def test_stls_forgets_user(self):
        self.assertEqual(self.exchange(b"STLS\r\n"), b"+OK Begin TLS negotiation\r\n")
        self.assertEqual(self.exchange(b"PASS s3cret pw\r\n"), b"-ERR USER first\r\n")

    def test_stls_not_after_login(self):
        self.login()
        self.assertEqual(self.exchange(b"STLS\r\n"), b"-ERR Already logged in\r\n")


class NoTLSListenerTests(ServerTestCase):
    tls_context = None
    loopback_plaintext = True

    def test_remote_clients_need_tls(self):
        self.assertEqual(self.exchange(b"STLS\r\n"), b"-ERR STLS not available\r\n")
        self.assertEqual(self.exchange(b"USER alice@example.test\r\n"), TLS_REQUIRED)
        self.assertNotIn(b"USER", self.exchange(b"CAPA\r\n"))


class LoopbackTests(NoTLSListenerTests):
    peer = LOOPBACK

    def test_remote_clients_need_tls(self):
        pass

    def test_loopback_may_log_in_without_tls(self):
        self.assertNotIn(b"STLS", self.exchange(b"CAPA\r\n"))
        self.login()


class ImplicitTLSTests(ServerTestCase):
    tls_context = None
    implicit_tls = True

    def test_login_without_stls(self):
        capabilities = self.exchange(b"CAPA\r\n")
        self.assertIn(b"\r\nUSER\r\n", capabilities)
        self.assertNotIn(b"STLS", capabilities)
        self.login()


class AuthenticationTests(ServerTestCase):
    def setUp(self):
        super().setUp()
        self.start_tls()

    def test_failures_look_the_same(self):
        for user in (b"alice@example.test", b"nobody@example.test"):
            self.send(b"USER " + user + b"\r\nPASS wrong\r\n")
            self.assertEqual(self.take(), b"+OK Send PASS\r\n")
            self.clock.advance(5)  # the throttle's delay
            self.assertEqual(self.take(), AUTH_FAILED)

    def test_password_with_spaces(self):
        self.assertEqual(self.exchange(b"USER alice@example.test\r\nPASS s3cret  pw\r\n"),
                         b"+OK Send PASS\r\n")
        self.clock.advance(5)
        self.assertEqual(self.take(), AUTH_FAILED)
        self.login()

    def test_pass_must_follow_user(self):
        self.assertEqual(self.exchange(b"USER alice@example.test\r\nCAPA\r\n")[:16], b"+OK Send PASS\r\n+")
        self.assertEqual(self.exchange(b"PASS s3cret pw\r\n"), b"-ERR USER first\r\n")

    def plain(self, authzid, authcid, password):
        return base64.b64encode(b"\0".join([authzid, authcid, password]))

    def test_auth_plain_initial_response(self):
        response = self.plain(b"", b"alice@example.test", b"s3cret pw")
        self.assertEqual(self.exchange(b"AUTH PLAIN " + response + b"\r\n"), b"+OK Logged in, 3 messages\r\n")
        self.assertEqual(self.exchange(b"AUTH PLAIN " + response + b"\r\n"), b"-ERR Already logged in\r\n")

    def test_auth_plain_challenge(self):
        self.assertEqual(self.exchange(b"AUTH plain\r\n"), b"+ \r\n")
        response = self.plain(b"alice@example.test", b"alice@example.test", b"s3cret pw")
        self.assertEqual(self.exchange(response + b"\r\n"), b"+OK Logged in, 3 messages\r\n")

    def test_auth_plain_refusals(self):
        self.assertEqual(self.exchange(b"AUTH PLAIN\r\n*\r\n"), b"+ \r\n-ERR Authentication cancelled\r\n")
        self.assertEqual(self.exchange(b"AUTH PLAIN !!!\r\n"), b"-ERR Invalid base64 data\r\n")
        self.assertEqual(self.exchange(b"AUTH PLAIN =\r\n"), b"-ERR Invalid PLAIN response\r\n")
        self.assertEqual(self.exchange(b"AUTH PLAIN " + base64.b64encode(b"no nuls") + b"\r\n"),
                         b"-ERR Invalid PLAIN response\r\n")
        proxy = self.plain(b"bob@example.test", b"alice@example.test", b"s3cret pw")
        self.assertEqual(self.exchange(b"AUTH PLAIN " + proxy + b"\r\n"), AUTH_FAILED)
        self.assertEqual(self.exchange(b"AUTH CRAM-MD5\r\n"), b"-ERR Unsupported authentication mechanism\r\n")
        self.assertEqual(self.exchange(b"AUTH PLAIN a b\r\n"), b"-ERR Syntax: AUTH mechanism [initial-response]\r\n")
        self.assertEqual(self.exchange(b"AUTH\r\n"), b"+OK Mechanisms follow\r\nPLAIN\r\n.\r\n")
        self.assertEqual(self.exchange(b"APOP alice 0123456789abcdef\r\n"), b"-ERR APOP not supported\r\n")
        self.assertEqual(self.maildrops, [])

    def test_directory_failure_is_temporary(self):
        self.directory.fail = RuntimeError("database down")
        self.assertEqual(self.exchange(b"USER alice@example.test\r\nPASS s3cret pw\r\n"),
                         b"+OK Send PASS\r\n-ERR [SYS/TEMP] Temporary server error, try again later\r\n")
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_busy_password_checks_are_temporary_and_not_logged_as_errors(self):
        self.directory.fail = passwords.Busy("busy")
        self.assertEqual(self.exchange(b"USER alice@example.test\r\nPASS s3cret pw\r\n"),
                         b"+OK Send PASS\r\n-ERR [SYS/TEMP] Temporary server error, try again later\r\n")
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_commands_before_login(self):
        for command in (b"STAT", b"LIST", b"RETR 1", b"DELE 1", b"UIDL", b"TOP 1 1", b"NOOP", b"RSET"):
            self.assertEqual(self.exchange(command + b"\r\n"), b"-ERR Not logged in\r\n")
        self.assertEqual(self.exchange(b"LAST\r\n"), b"-ERR Unknown command\r\n")

    def test_pipelined_login_runs_in_order(self):
        # Twisted's POP3 runs STAT before the login has finished.
        self.send(b"USER alice@example.test\r\nPASS s3cret pw\r\nSTAT\r\nUIDL 1\r\nQUIT\r\n")
        size = len(CRLF_MESSAGE) + len(normalize(LF_MESSAGE)) + len(normalize(DOT_MESSAGE))
        self.assertEqual(self.take(), b"+OK Send PASS\r\n+OK Logged in, 3 messages\r\n+OK 3 %d\r\n+OK 1 42.10\r\n"
                                      b"+OK pop.example.test POP3 server signing off (0 messages deleted)\r\n" % size)
        self.assertTrue(self.transport.disconnecting)


class TransactionTests(ServerTestCase):
    def setUp(self):
        super().setUp()
        self.login()

    def test_stat_list_uidl(self):
        sizes = [len(normalize(message)) for _, message in MESSAGES]
        self.assertEqual(self.exchange(b"STAT\r\n"), b"+OK 3 %d\r\n" % sum(sizes))
        self.assertEqual(self.exchange(b"LIST\r\n"),
                         b"+OK 3 messages (%d octets)\r\n1 %d\r\n2 %d\r\n3 %d\r\n.\r\n" % (sum(sizes), *sizes))
        self.assertEqual(self.exchange(b"LIST 2\r\n"), b"+OK 2 %d\r\n" % sizes[1])
        self.assertEqual(self.exchange(b"UIDL\r\n"), b"+OK Unique-ID listing follows\r\n1 42.10\r\n2 42.11\r\n"
                                                     b"3 42.13\r\n.\r\n")
        self.assertEqual(self.exchange(b"UIDL 3\r\n"), b"+OK 3 42.13\r\n")

    def test_retr_each_message(self):
        for number, (_, message) in enumerate(MESSAGES, 1):
            reply = self.exchange(b"RETR %d\r\n" % number)
            self.assertEqual(reply, b"+OK %d octets\r\n" % len(normalize(message)) + encode(message))
        self.assertNotIn(b"\r\r\n", encode(CRLF_MESSAGE))

    def test_top(self):
        self.assertEqual(self.exchange(b"TOP 2 1\r\n"),
                         b"+OK Top of message follows\r\nFrom: bob@remote.example\r\nSubject: lf only\r\n\r\n"
                         b"line 1\r\n.\r\n")
        self.assertEqual(self.exchange(b"TOP 1 0\r\n"), b"+OK Top of message follows\r\n" + encode(CRLF_MESSAGE, 0))
        self.assertEqual(self.exchange(b"TOP 1 x\r\n"), b"-ERR Invalid line count\r\n")
        self.assertEqual(self.exchange(b"TOP 1\r\n"), b"-ERR Syntax: TOP message lines\r\n")

    def test_bad_message_numbers(self):
        for argument in (b"0", b"4", b"x", b"-1", b"+1", b"1.0", b"99999999999999999999"):
            reply = self.exchange(b"RETR " + argument + b"\r\n")
            self.assertIn(reply, (b"-ERR No such message\r\n", b"-ERR Invalid message number\r\n"), argument)
        self.assertEqual(self.exchange(b"RETR\r\n"), b"-ERR Syntax: RETR message\r\n")
        self.assertEqual(self.exchange(b"LIST 1 2\r\n"), b"-ERR Syntax: LIST [message]\r\n")

    def test_dele_rset_quit(self):
        self.assertEqual(self.exchange(b"DELE 2\r\n"), b"+OK Message 2 deleted\r\n")
        self.assertEqual(self.exchange(b"DELE 2\r\n"), b"-ERR Message 2 is deleted\r\n")
        self.assertEqual(self.exchange(b"RETR 2\r\n"), b"-ERR Message 2 is deleted\r\n")
        self.assertEqual(self.exchange(b"STAT\r\n"), b"+OK 2 %d\r\n" % (len(CRLF_MESSAGE) + len(normalize(DOT_MESSAGE))))
        self.assertNotIn(b"\r\n2 ", self.exchange(b"LIST\r\n"))
        self.assertEqual(self.exchange(b"RSET\r\n"), b"+OK Maildrop has 3 messages\r\n")
        self.assertTrue(self.exchange(b"DELE 1\r\nDELE 3\r\nRETR 2\r\n").startswith(
            b"+OK Message 1 deleted\r\n+OK Message 3 deleted\r\n+OK "))
        self.assertEqual(self.mail.calls, [])
        self.assertEqual(self.exchange(b"QUIT\r\nNOOP\r\n"),
                         b"+OK pop.example.test POP3 server signing off (2 messages deleted)\r\n")
        self.assertEqual(self.mail.calls, [
            ("store_flags", 3, [11], ["\\Seen"], "add"),
            ("store_flags", 3, [10, 13], ["\\Deleted"], "add"),
            ("expunge", 3, [10, 13]),
        ])
        self.assertTrue(self.transport.disconnecting)

    def test_connection_lost_applies_nothing(self):
        self.exchange(b"DELE 1\r\nRETR 2\r\n")
        self.server.connectionLost(None)
        self.assertEqual(self.mail.calls, [])
        self.assertEqual(len(self.maildrops[0]), 0)  # logged out

    def test_update_failure(self):
        self.mail.fail_sync = True
        self.exchange(b"DELE 1\r\n")
        self.assertEqual(self.exchange(b"QUIT\r\n"), b"-ERR [SYS/TEMP] Some deleted messages not removed\r\n")
        self.assertTrue(self.transport.disconnecting)
        self.flushLoggedErrors(RuntimeError)

    def test_noop_and_syntax(self):
        self.assertEqual(self.exchange(b"NOOP\r\n"), b"+OK\r\n")
        self.assertEqual(self.exchange(b"noop\n"), b"+OK\r\n")
        self.assertEqual(self.exchange(b"NOOP x\r\n"), b"-ERR Syntax: NOOP\r\n")
        self.assertEqual(self.exchange(b"USER bob\r\n"), b"-ERR Already logged in\r\n")

    def test_streamed_in_chunks_with_flow_control(self):
        self.maildrops[0].read_chunk = 16
        write = self.transport.write

        def write_and_pause(data):
            # A client that reads slowly: every write fills the buffer.
            write(data)
            if self.transport.producer is not None:
                self.transport.producer.pauseProducing()

        self.transport.write = write_and_pause
        self.send(b"RETR 2\r\nNOOP\r\n")
        chunks = 1
        while self.transport.producer is not None:
            self.assertEqual(len(self.blobs.reads), 1 + chunks)  # the size, then one read per chunk
            self.assertFalse(self.transport.value().endswith(b"+OK\r\n"))
            self.transport.producer.resumeProducing()
            chunks += 1
        self.assertEqual(chunks, -(-len(LF_MESSAGE) // 16))
        expected = b"+OK %d octets\r\n" % len(normalize(LF_MESSAGE)) + encode(LF_MESSAGE) + b"+OK\r\n"
        self.assertEqual(self.take(), expected)

    def test_stalled_reader_times_out(self):
        self.maildrops[0].read_chunk = 16
        write = self.transport.write
        self.transport.write = lambda data: (write(data), self.transport.producer and self.transport.producer.pauseProducing())
        self.send(b"RETR 1\r\n")
        self.assertIsNotNone(self.transport.producer)
        self.clock.advance(599)
        self.assertFalse(self.transport.disconnecting)
        self.clock.advance(1)
        self.assertTrue(self.transport.disconnected)  # aborted: the queue will never drain
        self.server.connectionLost(None)
        self.assertIsNone(self.transport.producer)

    def test_message_gone_before_transfer(self):
        self.blobs.missing.add("11")
        self.assertEqual(self.exchange(b"TOP 2 0\r\n"), b"-ERR Message no longer available\r\n")

    def test_message_gone_during_transfer(self):
        self.maildrops[0].read_chunk = 16
        reads = []
        original = self.blobs.get

        def get(key, offset=0, length=None):
            reads.append(offset)
            if len(reads) > 2:
                return defer.fail(BlobNotFound(key))
            return original(key, offset, length)

        self.blobs.get = get
        self.send(b"TOP 2 5\r\n")
        self.assertTrue(self.transport.value().startswith(b"+OK Top of message follows\r\n"))
        self.assertFalse(self.transport.value().endswith(b".\r\n"))
        self.assertTrue(self.transport.disconnected)
        self.assertEqual(self.transport.producer, None)
        self.assertEqual(len(self.flushLoggedErrors(MessageGone)), 1)


class LimitTests(ServerTestCase):
    limits = POP3Config(max_line_length=100, max_errors=3, max_buffered_input=1000)

    def test_line_at_the_limit_is_accepted(self):
        self.assertEqual(self.exchange(b"NOOP" + b" " * 96 + b"\r\n"), b"-ERR Not logged in\r\n")
        self.assertFalse(self.transport.disconnecting)

    def test_overlong_line_closes(self):
        self.assertEqual(self.exchange(b"NOOP" + b"x" * 97 + b"\r\nCAPA\r\n"), b"-ERR Line too long\r\n")
        self.assertTrue(self.transport.disconnecting)

    def test_overlong_line_without_end_closes(self):
        self.assertEqual(self.exchange(b"A" * 60), b"")
        self.assertEqual(self.exchange(b"A" * 60), b"-ERR Line too long\r\n")
        self.assertTrue(self.transport.disconnecting)
        self.assertEqual(self.exchange(b"CAPA\r\n"), b"")

    def test_sasl_lines_may_be_longer(self):
        self.start_tls()
        self.assertEqual(self.exchange(b"AUTH PLAIN\r\n"), b"+ \r\n")
        self.assertEqual(self.exchange(b"A" * 400 + b"\r\n"), b"-ERR Invalid PLAIN response\r\n")

    def test_too_many_errors(self):
        self.assertEqual(self.exchange(b"\x00\xff garbage\r\nHELO\r\nSTAT\r\n"),
                         b"-ERR Unknown command\r\n-ERR Unknown command\r\n-ERR Not logged in\r\n")
        self.assertFalse(self.transport.disconnecting)
        self.assertEqual(self.exchange(b"\r\nCAPA\r\n"), b"-ERR Too many errors, closing connection\r\n")
        self.assertTrue(self.transport.disconnecting)

    def test_failed_logins_count(self):
        self.start_tls()
        for attempt in range(3):
            self.send(b"USER alice@example.test\r\nPASS no\r\n")
            self.clock.advance(5)
        self.assertFalse(self.transport.disconnecting)
        self.send(b"USER alice@example.test\r\nPASS no\r\n")
        self.clock.advance(5)
        self.assertTrue(self.take().endswith(b"-ERR Too many errors, closing connection\r\n"))
        self.assertTrue(self.transport.disconnecting)

    def test_idle_timeout(self):
        self.clock.advance(599)
        self.assertEqual(self.exchange(b"CAPA\r\n")[:3], b"+OK")
        self.clock.advance(599)
        self.assertFalse(self.transport.disconnecting)
        self.clock.advance(1)
        self.assertEqual(self.take(), b"-ERR Disconnected for inactivity\r\n")
        self.assertTrue(self.transport.disconnecting)

    def test_no_idle_timeout_while_the_server_works(self):
        self.start_tls()
        self.directory.slow = defer.Deferred()
        self.send(b"USER alice@example.test\r\nPASS s3cret pw\r\n")
        self.clock.advance(3600)
        self.assertFalse(self.transport.disconnecting)
        self.directory.slow.callback(User(7, "alice@example.test"))
        self.assertEqual(self.take(), b"+OK Send PASS\r\n+OK Logged in, 3 messages\r\n")
        self.clock.advance(599)
        self.assertFalse(self.transport.disconnecting)
        self.clock.advance(1)
        self.assertTrue(self.transport.disconnecting)

    def test_idle_timeout_in_transaction_applies_nothing(self):
        self.login()
        self.exchange(b"DELE 1\r\n")
        self.clock.advance(600)
        self.assertTrue(self.transport.disconnecting)
        self.server.connectionLost(None)
        self.assertEqual(self.mail.calls, [])

    def test_reading_paused_while_busy(self):
        self.start_tls()
        self.send(b"USER alice@example.test\r\nPASS wrong\r\n" + b"CAPA\r\n" * 200)
        self.assertEqual(self.transport.producerState, "paused")
        self.assertEqual(self.take(), b"+OK Send PASS\r\n")
        self.clock.advance(5)
        self.assertEqual(self.transport.producerState, "producing")
        self.assertEqual(self.take().count(b"+OK Capability list follows\r\n"), 200)


class HelperTests(unittest.SynchronousTestCase):
    def test_is_loopback(self):
        for host in ("127.0.0.1", "127.8.9.10", "::1", "::ffff:127.0.0.1"):
            self.assertTrue(is_loopback(host), host)
        for host in ("192.0.2.1", "::ffff:192.0.2.1", "2001:db8::1", "localhost", ""):
            self.assertFalse(is_loopback(host), host)

    def test_parse_number(self):
        self.assertEqual(parse_number(b"0"), 0)
        self.assertEqual(parse_number(b"99999999"), 99999999)  # fetchmail's TOP n 99999999
        for bad in (b"", b"-1", b"+1", b"1 ", b"\xd9\xa1", b"1" * 11, b"2000000000"):
            self.assertRaises(CommandError, parse_number, bad)
