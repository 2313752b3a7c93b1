"""Login only over TLS, STARTTLS without command injection, SASL PLAIN, failures."""
import base64
import imaplib

from twisted.internet import defer, reactor

from emailsvc.cred import passwords
from emailsvc.cred.throttle import AuthThrottle
from emailsvc.imap.factory import make_factory
from emailsvc.store.sql import directory as sql_directory
from tests.imap.support import PASSWORD, USER, IMAPTestCase, RawClient, client_ssl_context

FAILED = b"NO [AUTHENTICATIONFAILED] Authentication failed\r\n"


def plain(authzid, user, password):
    return base64.b64encode(b"\0".join((authzid, user, password)))


class LoginTests(IMAPTestCase):
    def test_no_login_before_starttls(self):
        def run():
            client = RawClient(self.plain, secure=False)
            try:
                greeting = client.greeting
                login = client.login()
                auth = client.command(b"A", b"AUTHENTICATE PLAIN " + plain(b"", USER.encode(), PASSWORD.encode()))
                starttls = client.command(b"S", b"STARTTLS")
                client.starttls()
                capability = client.command(b"C", b"CAPABILITY")
                after = client.login()
                return greeting, login, auth, starttls, capability, after
            finally:
                client.close()

        def check(result):
            greeting, login, auth, starttls, capability, after = result
            self.assertIn(b" STARTTLS LOGINDISABLED]", greeting)
            self.assertNotIn(b"AUTH=", greeting)
            self.assertEqual(login, [b"L NO [PRIVACYREQUIRED] Login requires TLS (STARTTLS first)\r\n"])
            self.assertEqual(auth, [b"A NO [PRIVACYREQUIRED] Authentication requires TLS\r\n"])
            self.assertEqual(starttls, [b"S OK Begin TLS negotiation now\r\n"])
            self.assertIn(b"AUTH=PLAIN", capability[0])
            self.assertNotIn(b"LOGINDISABLED", capability[0])
            self.assertNotIn(b"STARTTLS", capability[0])
            self.assertTrue(after[-1].startswith(b"L OK [CAPABILITY IMAP4rev1 "), after)
            self.assertIn(b" MOVE ", after[-1])

        return self.in_thread(run).addCallback(check)

    def test_starttls_discards_pipelined_commands(self):
        def run():
            client = RawClient(self.plain, secure=False)
            try:
                # An attacker appends commands behind STARTTLS in the clear.
                client.send(b'S STARTTLS\r\nX LOGIN "%s" "%s"\r\nY CAPABILITY\r\n' % (USER.encode(), PASSWORD.encode()))
                first = client.line()
                client.starttls()
                return first, client.command(b"N", b"NOOP"), client.command(b"C", b"SELECT INBOX")
            finally:
                client.close()

        def check(result):
            first, noop, select = result
            self.assertEqual(first, b"S OK Begin TLS negotiation now\r\n")
            self.assertEqual(noop, [b"N OK NOOP completed\r\n"])
            self.assertEqual(select, [b"C BAD Command not valid in this state\r\n"])

        return self.in_thread(run).addCallback(check)

    def test_imaplib_starttls_and_login(self):
        def run():
            client = imaplib.IMAP4(*self.plain, timeout=15)
            try:
                client.starttls(ssl_context=client_ssl_context())
                status, _ = client.login(USER, PASSWORD)
                return status, client.capabilities
            finally:
                client.logout()

        def check(result):
            self.assertEqual(result[0], "OK")
            self.assertIn("IDLE", result[1])

        return self.in_thread(run).addCallback(check)

    def test_authenticate_plain(self):
        def run():
            client = RawClient(self.tls)
            try:
                replies = [client.command(b"A", b"AUTHENTICATE PLAIN " + plain(b"", USER.encode(), PASSWORD.encode()))]
                client.command(b"Z", b"LOGOUT")
            finally:
                client.close()
            client = RawClient(self.tls)
            try:
                client.send(b"B AUTHENTICATE plain\r\n")
                replies.append([client.line()])
                client.send(plain(USER.encode(), USER.encode(), PASSWORD.encode()) + b"\r\n")
                replies.append(client.until(b"B"))
            finally:
                client.close()
            return replies

        def check(replies):
            self.assertTrue(replies[0][-1].startswith(b"A OK [CAPABILITY "))
            self.assertEqual(replies[1], [b"+ \r\n"])
            self.assertTrue(replies[2][-1].startswith(b"B OK [CAPABILITY "))

        return self.in_thread(run).addCallback(check)

    def test_imaplib_authenticate(self):
        def run():
            client = imaplib.IMAP4_SSL(*self.tls, ssl_context=client_ssl_context(), timeout=15)
            try:
                return client.authenticate("PLAIN", lambda challenge: b"\0" + USER.encode() + b"\0" + PASSWORD.encode())
            finally:
                client.logout()

        return self.in_thread(run).addCallback(lambda result: self.assertEqual(result[0], "OK"))

    def test_bad_sasl(self):
        def run():
            client = RawClient(self.tls)
            try:
                out = [
                    client.command(b"A", b"AUTHENTICATE PLAIN " + plain(b"bob@example.test", USER.encode(),
                                                                         PASSWORD.encode())),
                    client.command(b"B", b"AUTHENTICATE PLAIN !!notbase64"),
                    client.command(b"C", b"AUTHENTICATE PLAIN " + base64.b64encode(b"no nuls")),
                    client.command(b"D", b"AUTHENTICATE CRAM-MD5"),
                ]
                client.send(b"E AUTHENTICATE PLAIN\r\n")
                client.line()
                client.send(b"*\r\n")
                out.append(client.until(b"E"))
                out.append(client.command(b"F", b"NOOP"))
                return out
            finally:
                client.close()

        def check(out):
            self.assertEqual(out[0], [b"A NO [AUTHORIZATIONFAILED] Authorization identity not allowed\r\n"])
            self.assertEqual(out[1], [b"B BAD Invalid base64 in authentication\r\n"])
            self.assertEqual(out[2], [b"C BAD Malformed PLAIN response\r\n"])
            self.assertEqual(out[3], [b"D NO Unsupported authentication mechanism\r\n"])
            self.assertEqual(out[4], [b"E BAD Authentication cancelled\r\n"])
            self.assertEqual(out[5], [b"F OK NOOP completed\r\n"])

        return self.in_thread(run).addCallback(check)

    def test_failures_look_alike_and_close_after_three(self):
        def run():
            client = RawClient(self.tls)
            try:
                wrong = client.command(b"A", b'LOGIN "%s" "wrong"' % USER.encode())
                unknown = client.command(b"B", b'LOGIN "nobody@example.test" "%s"' % PASSWORD.encode())
                plain_unknown = client.command(b"C", b"AUTHENTICATE PLAIN " + plain(b"", b"x@y.test", b"pw"))
                return wrong, unknown, plain_unknown, client.line(), client.line()
            finally:
                client.close()

        def check(result):
            wrong, unknown, plain_unknown, bye, end = result
            self.assertEqual(wrong, [b"A " + FAILED])
            self.assertEqual(unknown, [b"B " + FAILED])
            self.assertEqual(plain_unknown, [b"C " + FAILED])
            self.assertEqual(bye, b"* BYE Too many authentication failures\r\n")
            self.assertEqual(end, b"")

        return self.in_thread(run).addCallback(check)

    @defer.inlineCallbacks
    def test_busy_password_checks_are_a_temporary_failure(self):
        self.patch(sql_directory, "verify_later", lambda hashed, password: defer.fail(passwords.Busy("busy")))

        def session(client):
            return client.login(), client.command(b"N", b"NOOP")

        login, noop = yield self.raw_session(session, login=False)
        self.assertEqual(login, [b"L NO [UNAVAILABLE] Temporary authentication failure\r\n"])
        self.assertEqual(noop, [b"N OK NOOP completed\r\n"])
        self.assertFalse(self.throttle.locked("127.0.0.1", USER))

    @defer.inlineCallbacks
    def test_throttle_locks_out_with_the_same_reply(self):
        throttle = AuthThrottle(reactor, max_failures=2, failure_window=60, lockout=60, max_delay=0)
        factory = make_factory(self.directory, self.mail, self.blobs, throttle, reactor, implicit_tls=True)
        port = reactor.listenSSL(0, factory, self.tls_context, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        address = ("127.0.0.1", port.getHost().port)

        def run():
            client = RawClient(address)
            try:
                first = client.command(b"A", b'LOGIN "%s" "wrong"' % USER.encode())
                second = client.command(b"B", b'LOGIN "%s" "wrong"' % USER.encode())
            finally:
                client.close()
            client = RawClient(address)
            try:
                return first, second, client.login()
            finally:
                client.close()

        first, second, locked = yield self.in_thread(run)
        self.assertEqual([first, second, locked], [[b"A " + FAILED], [b"B " + FAILED], [b"L " + FAILED]])
        self.assertTrue(throttle.locked("127.0.0.1", USER))
