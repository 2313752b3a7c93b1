"""APPEND of a message larger than the spool threshold: the literal waits in
an anonymous spool file while it is received, over real loopback TLS."""
import os

from twisted.internet import defer

from emailsvc.spool import Spool
from tests.imap.support import IMAPTestCase
from tests.polling import until
from tests.spoolfiles import KeepingSpool, open_files_in, wait_for_open_file_in

MESSAGE = b"Subject: big\r\n\r\n" + b"".join(b"line %d of a long message\r\n" % i for i in range(5000))


class SpoolTests(IMAPTestCase):
    @defer.inlineCallbacks
    def setUp(self):
        yield super().setUp()
        self.spool_dir = os.path.abspath(self.mktemp())
        os.mkdir(self.spool_dir)
        self.spool = self.tls_factory.spool = KeepingSpool(4096, self.spool_dir)

    def start_append(self, client, sent=len(MESSAGE) // 2):
        client.send(b"A APPEND INBOX {%d}\r\n" % len(MESSAGE))
        self.assertTrue(client.line().startswith(b"+ "))
        client.send(MESSAGE[:sent])

    @defer.inlineCallbacks
    def test_large_append_goes_through_the_spool(self):
        def session(client):
            self.start_append(client)
            spooled = wait_for_open_file_in(self.spool_dir)
            listed = os.listdir(self.spool_dir)
            client.send(MESSAGE[len(MESSAGE) // 2:] + b"\r\n")
            appended = client.until(b"A")
            client.command(b"S", b"SELECT INBOX")
            return spooled, listed, appended, client.command(b"F", b"FETCH 1 BODY.PEEK[]")

        spooled, listed, appended, fetched = yield self.raw_session(session)
        self.assertTrue(spooled)
        self.assertEqual(listed, [])  # anonymous: no name to leak after a crash
        self.assertTrue(appended[-1].startswith(b"A OK [APPENDUID "), appended)
        self.assertEqual(fetched[0], b"* 1 FETCH (BODY[] {%d}\r\n" % len(MESSAGE) + MESSAGE + b")\r\n")
        self.assertEqual([buffer.closed for buffer in self.spool.buffers], [True])
        self.assertEqual(open_files_in(self.spool_dir), [])

    @defer.inlineCallbacks
    def test_disconnect_mid_literal_frees_the_spool(self):
        def session(client):
            self.start_append(client)
            return wait_for_open_file_in(self.spool_dir)

        self.assertTrue((yield self.raw_session(session)))
        yield until(lambda: not open_files_in(self.spool_dir))  # the server sees the close a little later
        self.assertEqual([buffer.closed for buffer in self.spool.buffers], [True])
        self.assertEqual(open_files_in(self.spool_dir), [])
        inbox = yield self.mail.get_mailbox(self.user.id, "INBOX")
        self.assertEqual(inbox.messages, 0)

    @defer.inlineCallbacks
    def test_spool_failure_is_a_temporary_refusal(self):
        self.tls_factory.spool = Spool(4096, os.path.join(self.spool_dir, "missing"))

        def session(client):
            self.start_append(client, sent=len(MESSAGE))
            client.send(b"\r\n")
            return client.until(b"A"), client.command(b"N", b"NOOP")

        appended, noop = yield self.raw_session(session)
        self.assertEqual(appended[-1], b"A NO [UNAVAILABLE] Cannot keep the data now, try again later\r\n")
        self.assertEqual(noop[-1], b"N OK NOOP completed\r\n")
        inbox = yield self.mail.get_mailbox(self.user.id, "INBOX")
        self.assertEqual(inbox.messages, 0)

    @defer.inlineCallbacks
    def test_a_refused_command_keeps_none_of_its_literals(self):
        def session(client):
            client.send(b"A APPEND INBOX\x00 {%d+}\r\n" % len(MESSAGE) + MESSAGE + b"\r\n")
            sent = client.until(b"A")
            client.send(b"B APPEND INBOX\x00 {%d}\r\n" % len(MESSAGE))
            return sent, client.until(b"B")  # refused at once: no "+" to send it

        sent, asked = yield self.raw_session(session)
        self.assertEqual(sent, [b"A BAD NUL in command\r\n"])
        self.assertEqual(asked, [b"B BAD NUL in command\r\n"])
        self.assertEqual(self.spool.buffers, [])

    @defer.inlineCallbacks
    def test_before_login_an_append_literal_is_an_ordinary_one(self):
        def session(client):
            client.send(b"A APPEND INBOX {%d}\r\n" % len(MESSAGE))
            return client.until(b"A")

        refused = yield self.raw_session(session, login=False)
        self.assertEqual(refused[-1], b"A BAD Literal too large\r\n")
        self.assertEqual(self.spool.buffers, [])

    @defer.inlineCallbacks
    def test_before_login_a_large_literal_plus_is_read_and_refused(self):
        def session(client):
            client.send(b"A APPEND INBOX {%d+}\r\n" % len(MESSAGE) + MESSAGE + b"\r\n")
            return client.until(b"A"), client.command(b"N", b"NOOP")

        refused, noop = yield self.raw_session(session, login=False)
        self.assertEqual(refused, [b"A BAD Literal too large\r\n"])
        self.assertEqual(noop, [b"N OK NOOP completed\r\n"])  # still in step
        self.assertEqual(self.spool.buffers, [])
