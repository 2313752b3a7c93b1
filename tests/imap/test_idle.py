"""IDLE: deliveries and other sessions' changes are pushed within a second."""
import socket
import time

from twisted.internet import defer, reactor
from twisted.internet.task import deferLater
from twisted.internet.threads import blockingCallFromThread

from tests.imap.support import IMAPTestCase, RawClient

MESSAGE = b"From: bob@remote.example\r\nSubject: ping\r\n\r\nhello\r\n"


class IdleTests(IMAPTestCase):
    @defer.inlineCallbacks
    def setUp(self):
        yield super().setUp()
        yield self.deliver(MESSAGE)
        yield self.deliver(MESSAGE)
        self.inbox_id = (yield self.mail.get_mailbox(self.user.id, "INBOX")).id

    def wait_line(self, client, seconds=1.0) -> bytes:
        """The next line, which must come within `seconds`."""
        client.sock.settimeout(seconds)
        try:
            return client.line()
        except socket.timeout:
            return b"<nothing within %.1f s>" % seconds
        finally:
            client.sock.settimeout(15)

    def test_delivery_is_pushed_within_a_second(self):
        def run():
            client = RawClient(self.tls)
            try:
                client.login()
                client.command(b"S", b"SELECT INBOX")
                client.send(b"I IDLE\r\n")
                continuation = client.line()
                blockingCallFromThread(reactor, self.deliver, MESSAGE)
                started = time.monotonic()
                pushed = self.wait_line(client)
                elapsed = time.monotonic() - started
                client.send(b"DONE\r\n")
                done = client.until(b"I")
                return continuation, pushed, elapsed, done
            finally:
                client.close()

        def check(result):
            continuation, pushed, elapsed, done = result
            self.assertEqual(continuation, b"+ idling\r\n")
            self.assertEqual(pushed, b"* 3 EXISTS\r\n")
            self.assertLess(elapsed, 1.0)
            self.assertEqual(done, [b"I OK IDLE completed\r\n"])

        return self.in_thread(run).addCallback(check)

    def test_other_sessions_flags_and_expunges_are_pushed(self):
        def run():
            idler, other = RawClient(self.tls), RawClient(self.tls)
            try:
                for client in (idler, other):
                    client.login()
                    client.command(b"S", b"SELECT INBOX")
                idler.send(b"I IDLE\r\n")
                idler.line()
                other.command(b"A", b"STORE 1 +FLAGS (\\Flagged)")
                flags = self.wait_line(idler)
                other.command(b"B", b"STORE 2 +FLAGS.SILENT (\\Deleted)")
                deleted = self.wait_line(idler)
                other.command(b"C", b"EXPUNGE")
                expunge = self.wait_line(idler)
                idler.send(b"DONE\r\n")
                done = idler.until(b"I")
                return flags, deleted, expunge, done, idler.command(b"F", b"FETCH 1:* (FLAGS)")
            finally:
                idler.close()
                other.close()

        def check(result):
            flags, deleted, expunge, done, fetched = result
            self.assertEqual(flags, b"* 1 FETCH (FLAGS (\\Flagged) UID 1)\r\n")
            self.assertEqual(deleted, b"* 2 FETCH (FLAGS (\\Deleted) UID 2)\r\n")
            self.assertEqual(expunge, b"* 2 EXPUNGE\r\n")
            self.assertEqual(done, [b"I OK IDLE completed\r\n"])
            self.assertEqual(fetched, [b"* 1 FETCH (FLAGS (\\Flagged))\r\n", b"F OK FETCH completed\r\n"])

        return self.in_thread(run).addCallback(check)

    def test_expunge_waits_outside_fetch(self):
        """RFC 3501 7.4.1: no EXPUNGE while answering FETCH; it comes with NOOP."""
        def run():
            reader, other = RawClient(self.tls), RawClient(self.tls)
            try:
                for client in (reader, other):
                    client.login()
                    client.command(b"S", b"SELECT INBOX")
                other.command(b"A", b"STORE 1 +FLAGS.SILENT (\\Deleted)")
                other.command(b"B", b"EXPUNGE")
                time.sleep(0.2)
                body = reader.command(b"E", b"FETCH 1:2 (FLAGS BODY.PEEK[HEADER] RFC822.SIZE)")
                fetch = reader.command(b"F", b"FETCH 1:2 (UID)")
                flags = reader.command(b"H", b"FETCH 1:2 (FLAGS)")
                noop = reader.command(b"N", b"NOOP")
                after = reader.command(b"G", b"FETCH 1:* (UID)")
                return body, fetch, flags, noop, after
            finally:
                reader.close()
                other.close()

        def check(result):
            body, fetch, flags, noop, after = result
            self.assertEqual(body[0], b"* 1 FETCH (FLAGS (\\Deleted) BODY[HEADER] NIL RFC822.SIZE 0)\r\n")
            self.assertTrue(body[1].startswith(b"* 2 FETCH (FLAGS () BODY[HEADER] {"), body)
            # Still numbered as announced (1 is served from what the session
            # knew: its UID; the rest went with it, RFC 2180 4.1.3).
            self.assertEqual(fetch, [b"* 1 FETCH (UID 1)\r\n", b"* 2 FETCH (UID 2)\r\n", b"F OK FETCH completed\r\n"])
            self.assertEqual(flags, [b"* 1 FETCH (FLAGS (\\Deleted))\r\n", b"* 2 FETCH (FLAGS ())\r\n",
                                     b"H OK FETCH completed\r\n"])
            self.assertEqual(noop, [b"* 1 EXPUNGE\r\n", b"N OK NOOP completed\r\n"])
            self.assertEqual(after, [b"* 1 FETCH (UID 2)\r\n", b"G OK FETCH completed\r\n"])

        return self.in_thread(run).addCallback(check)

    def test_imapclient_idle(self):
        def run():
            client = self.imapclient_client()
            try:
                client.select_folder("INBOX")
                client.idle()
                blockingCallFromThread(reactor, self.deliver, MESSAGE)
                responses = client.idle_check(timeout=1)
                client.idle_done()
                return responses
            finally:
                client.logout()

        return self.in_thread(run).addCallback(lambda responses: self.assertIn((3, b"EXISTS"), responses))

    def test_idle_without_mailbox_and_bad_continuation(self):
        def run():
            client = RawClient(self.tls)
            try:
                client.login()
                client.send(b"I IDLE\r\n")
                first = client.line()
                client.send(b"done\r\n")
                done = client.until(b"I")
                client.command(b"S", b"SELECT INBOX")
                client.send(b"J IDLE\r\n")
                client.line()
                client.send(b"J2 NOOP\r\n")
                bad = client.until(b"J")
                return first, done, bad, client.command(b"N", b"NOOP")
            finally:
                client.close()

        def check(result):
            first, done, bad, noop = result
            self.assertEqual((first, done), (b"+ idling\r\n", [b"I OK IDLE completed\r\n"]))
            self.assertEqual(bad, [b"J BAD Expected DONE\r\n"])
            self.assertEqual(noop, [b"N OK NOOP completed\r\n"])

        return self.in_thread(run).addCallback(check)

    @defer.inlineCallbacks
    def test_disconnect_while_idling_is_quiet(self):
        def run():
            client = RawClient(self.tls)
            client.login()
            client.command(b"S", b"SELECT INBOX")
            client.send(b"I IDLE\r\n")
            client.line()
            client.close()

        yield self.in_thread(run)
        yield self.deliver(MESSAGE)
        for _ in range(20):
            if not self.mail.notifier.subscribers(self.inbox_id):
                break
            yield deferLater(reactor, 0.05, lambda: None)
        # The session let go of the mailbox, and nothing was logged as an error.
        self.assertEqual(self.mail.notifier.subscribers(self.inbox_id), 0)
        self.assertEqual(self.tls_factory.connections, 0)
