"""The POP3 server protocol (RFC 1939) with CAPA, PIPELINING and response
codes (RFC 2449, 3206), STLS (RFC 2595) and AUTH PLAIN (RFC 5034).

`POP3Server` subclasses `twisted.mail.pop3.POP3` for its cred plumbing
(portal, logout on disconnect) and timeout machinery, and replaces the
command handling, which in Twisted 26 has no STLS, runs pipelined commands
before a login has finished, doubles the CR of CRLF-stored messages and
misses dot-stuffing at chunk boundaries (DESIGN.md section 4):

- input is read into our own buffer and commands run strictly one after
  another; the next one starts only once the previous reply is written;
- input pipelined behind STLS is discarded (command injection);
- USER/PASS and AUTH PLAIN need TLS (or a loopback client on a listener
  without TLS); before that CAPA lists neither and they are refused with
  `-ERR [AUTH]`;
- messages are streamed from the blob store through `wire.MessageEncoder`
  with write flow control;
- lines longer than `max_line_length`, more than `max_errors` errors or
  `idle_timeout` seconds of silence end the connection.

The maildrop is never locked (as Dovecot by default): each session works
on its own snapshot and deletes by UID, so concurrent sessions are safe and
`[IN-USE]` is never sent.
"""
from __future__ import annotations

import binascii
import ipaddress

from twisted.cred import credentials, error as cred_error
from twisted.internet import defer
from twisted.internet.interfaces import IPushProducer, ISSLTransport, ITLSTransport
from twisted.logger import Logger
from twisted.mail import pop3
from twisted.python.failure import Failure
from zope.interface import implementer

from emailsvc.cred import passwords
from emailsvc.pop3.maildrop import MessageGone
from emailsvc.pop3.wire import CRLF, TERMINATOR, MessageEncoder

AUTHORIZATION, SASL, TRANSACTION, UPDATE, CLOSED = "authorization", "sasl", "transaction", "update", "closed"

AUTH_FAILED = b"[AUTH] Authentication failed"
TLS_REQUIRED = b"[AUTH] Plaintext authentication requires TLS, use STLS first"
SERVER_ERROR = b"[SYS/TEMP] Temporary server error, try again later"


class CommandError(Exception):
    """A `-ERR` reply; `text` (bytes) is public."""

    def __init__(self, text: bytes, count: bool = True):
        super().__init__(text)
        self.text = text
        self.count = count


@implementer(IPushProducer)
class _Pacer:
    """Write flow control while a message is streamed: `wait()` fires when
    the transport wants more data (or is gone)."""

    def __init__(self):
        self._paused = False
        self.stopped = False
        self._waiters: list[defer.Deferred] = []

    def pauseProducing(self):
        self._paused = True

    def resumeProducing(self):
        self._paused = False
        self._release()

    def stopProducing(self):
        self.stopped = True
        self._release()

    def _release(self):
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.callback(None)

    def wait(self) -> defer.Deferred:
        if not self._paused or self.stopped:
            return defer.succeed(None)
        waiter = defer.Deferred()
        self._waiters.append(waiter)
        return waiter


def is_loopback(host: str) -> bool:
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


def parse_number(argument: bytes, limit: int = 10**9) -> int:
    """A non-negative decimal number; raises CommandError."""
    if not argument or len(argument) > 10 or not argument.isdigit():
        raise CommandError(b"Invalid number")
    value = int(argument)
    if value > limit:
        raise CommandError(b"Invalid number")
    return value


class POP3Server(pop3.POP3):
    """One POP3 connection; built by `factory.POP3Factory`."""

    _log = Logger()

    def __init__(self):
        self.state = AUTHORIZATION
        self.tls_active = False
        self.peer_host = ""
        self.limits = None
        self.clock = None
        self.tls_context = None
        self._buffer = bytearray()
        self._busy = False
        self._processing = False
        self._paused = False
        self._errors = 0
        self._user: bytes | None = None
        self._pacer: _Pacer | None = None
        self._hostname = b""

    # Connection life cycle

    def connectionMade(self):
        factory = self.factory
        self.limits = factory.limits
        self.clock = factory.clock
        self.tls_context = factory.tls_context
        self.timeOut = self.limits.idle_timeout
        self.peer_host = getattr(self.transport.getPeer(), "host", "")
        self.tls_active = factory.implicit_tls or ISSLTransport.providedBy(self.transport)
        self.portal = factory.portal_for(self.peer_host)
        self._hostname = factory.hostname.encode("utf-8")
        self._send(b"+OK " + self._hostname + b" POP3 server ready")
        self.setTimeout(self.timeOut)

    def callLater(self, period, function):
        return self.clock.callLater(period, function)

    def connectionLost(self, reason):
        self.state = CLOSED
        self._buffer.clear()
        if self._pacer is not None:
            self._pacer.stopProducing()  # ends a transfer waiting for the client
        pop3.POP3.connectionLost(self, reason)  # logs the avatar out, stops the timer

    def timeoutConnection(self):
        if self.state is CLOSED:
            return
        self._log.info("POP3 idle timeout for {peer}", peer=self.peer_host)
        if self._pacer is not None:
            # The client stopped reading: what is queued will never drain.
            self.state = CLOSED
            self.transport.abortConnection()
            return
        self._send(b"-ERR Disconnected for inactivity")
        self._close()

    def _close(self):
        if self.state is CLOSED:
            return
        self.state = CLOSED
        self._buffer.clear()
        self.setTimeout(None)
        self.transport.loseConnection()

    # Input

    def dataReceived(self, data):
        if self.state is CLOSED:
            return
        self._buffer += data
        self._process()

    def _line_limit(self) -> int:
        return self.limits.max_auth_line_length if self.state is SASL else self.limits.max_line_length

    def _process(self):
        if self._processing:
            return
        self._processing = True
        try:
            while not self._busy and self.state is not CLOSED:
                newline = self._buffer.find(b"\n")
                limit = self._line_limit()
                if newline < 0 or newline > limit + 1:
                    if len(self._buffer) > limit + 1:
                        self._send(b"-ERR Line too long")
                        self._close()
                    break
                line = bytes(self._buffer[:newline])
                del self._buffer[:newline + 1]
                if line.endswith(b"\r"):
                    line = line[:-1]
                self._dispatch(line)
        finally:
            self._processing = False
        self._flow_control()

    def _flow_control(self):
        """Stop reading while a reply is pending and much input waits."""
        if self.state is CLOSED:
            return
        wanted = self._busy and len(self._buffer) > self.limits.max_buffered_input
        if wanted and not self._paused:
            self._paused = True
            self.transport.pauseProducing()
        elif not wanted and self._paused:
            self._paused = False
            self.transport.resumeProducing()

    def _dispatch(self, line: bytes):
        user, self._user = self._user, None  # PASS must follow USER directly
        # The idle timer stops while a command runs: our own slowness (store,
        # login throttle) is not client idleness.  A transfer re-arms it.
        self.setTimeout(None)
        if self.state is SASL:
            self.state = AUTHORIZATION
            result = self._guard(self._sasl_response, line)
        else:
            verb, _, argument = line.partition(b" ")
            handler = self._handler(verb.upper())
            if verb.upper() == b"PASS":
                result = self._guard(handler, argument, user)
            else:
                result = self._guard(handler, argument)
        if isinstance(result, defer.Deferred):
            self._busy = True
            result.addErrback(self._failed)
            result.addBoth(self._resume)
        elif self.state is not CLOSED:
            self.setTimeout(self.limits.idle_timeout)

    def _handler(self, verb: bytes):
        table = self._TRANSACTION if self.state is TRANSACTION else self._AUTHORIZATION
        name = table.get(verb)
        if name is not None:
            return getattr(self, name)
        if verb in self._TRANSACTION or verb in self._AUTHORIZATION:
            text = b"Not logged in" if self.state is AUTHORIZATION else b"Already logged in"
        else:
            text = b"Unknown command"
        return lambda *ignored: self._error(text)

    def _guard(self, handler, *args):
        try:
            return handler(*args)
        except CommandError as problem:
            self._error(problem.text, problem.count)
        return None

    def _failed(self, failure: Failure):
        if failure.check(CommandError):
            self._error(failure.value.text, failure.value.count)
            return None
        if self.state is CLOSED:
            return None
        self._log.failure("POP3 command failed for {peer}", failure, peer=self.peer_host)
        self._error(SERVER_ERROR, count=False)
        return None

    def _resume(self, ignored):
        self._busy = False
        if self.state is not CLOSED:
            self.setTimeout(self.limits.idle_timeout)
            self._process()

    # Output

    def _send(self, line: bytes):
        if self.state is not CLOSED:
            self.transport.write(line + CRLF)

    def _ok(self, text: bytes = b""):
        self._send(b"+OK " + text if text else b"+OK")

    def _error(self, text: bytes, count: bool = True):
        """Send `-ERR text`; past `max_errors` counted errors, close instead."""
        if count:
            self._errors += 1
            if self._errors > self.limits.max_errors:
                self._log.info("POP3: too many errors from {peer}", peer=self.peer_host)
                self._send(b"-ERR Too many errors, closing connection")
                self._close()
                return
        self._send(b"-ERR " + text)

    def _multiline(self, first: bytes, lines):
        self.transport.write(b"".join([b"+OK ", first, CRLF, *(line + CRLF for line in lines), TERMINATOR]))

    # Commands allowed in each state: verb -> method name

    _AUTHORIZATION = {
        b"CAPA": "cmd_CAPA", b"STLS": "cmd_STLS", b"USER": "cmd_USER", b"PASS": "cmd_PASS",
        b"AUTH": "cmd_AUTH", b"APOP": "cmd_APOP", b"QUIT": "cmd_QUIT",
    }
    _TRANSACTION = {
        b"CAPA": "cmd_CAPA", b"STAT": "cmd_STAT", b"LIST": "cmd_LIST", b"RETR": "cmd_RETR",
        b"DELE": "cmd_DELE", b"NOOP": "cmd_NOOP", b"RSET": "cmd_RSET", b"QUIT": "cmd_QUIT",
        b"TOP": "cmd_TOP", b"UIDL": "cmd_UIDL",
    }

    @staticmethod
    def _no_arguments(argument: bytes, verb: bytes):
        if argument.strip():
            raise CommandError(b"Syntax: " + verb)

    # AUTHORIZATION state

    def plaintext_allowed(self) -> bool:
        """USER/PASS and AUTH PLAIN: only inside TLS, or from loopback on a listener without TLS."""
        if self.tls_active:
            return True
        return self.factory.loopback_plaintext and self.tls_context is None and is_loopback(self.peer_host)

    def can_start_tls(self) -> bool:
        return (self.state is AUTHORIZATION and self.tls_context is not None and not self.tls_active
                and ITLSTransport.providedBy(self.transport))

    def listCapabilities(self):
        capabilities = [b"TOP", b"UIDL", b"RESP-CODES", b"AUTH-RESP-CODE", b"PIPELINING"]
        if self.plaintext_allowed():
            capabilities += [b"USER", b"SASL PLAIN"]
        if self.can_start_tls():
            capabilities.append(b"STLS")
        capabilities.append(b"IMPLEMENTATION emailsvc")
        return capabilities

    def cmd_CAPA(self, argument):
        self._no_arguments(argument, b"CAPA")
        self._multiline(b"Capability list follows", self.listCapabilities())

    def cmd_STLS(self, argument):
        self._no_arguments(argument, b"STLS")
        if self.tls_active:
            raise CommandError(b"TLS already active")
        if not self.can_start_tls():
            raise CommandError(b"STLS not available")
        self._ok(b"Begin TLS negotiation")
        # Whatever followed STLS came in clear text: running it inside TLS
        # would let an attacker inject commands (CVE-2011-0411 pattern).
        self._buffer.clear()
        self.transport.startTLS(self.tls_context)
        self.tls_active = True

    def cmd_USER(self, argument):
        if not self.plaintext_allowed():
            raise CommandError(TLS_REQUIRED)
        name = argument.strip()
        if not name:
            raise CommandError(b"Syntax: USER name")
        self._user = name
        # Never tell whether the user exists.
        self._ok(b"Send PASS")

    def cmd_PASS(self, argument, user):
        if not self.plaintext_allowed():
            raise CommandError(TLS_REQUIRED)
        if user is None:
            raise CommandError(b"USER first")
        return self._login(user, argument)

    def cmd_APOP(self, argument):
        raise CommandError(b"APOP not supported")

    def cmd_AUTH(self, argument):
        words = argument.split()
        if not words:
            # The mechanism list some clients ask for (RFC 1734 practice).
            self._multiline(b"Mechanisms follow", [b"PLAIN"] if self.plaintext_allowed() else [])
            return None
        if len(words) > 2:
            raise CommandError(b"Syntax: AUTH mechanism [initial-response]")
        if not self.plaintext_allowed():
            raise CommandError(TLS_REQUIRED)
        if words[0].upper() != b"PLAIN":
            raise CommandError(b"Unsupported authentication mechanism")
        if len(words) == 2:
            return self._plain(b"" if words[1] == b"=" else words[1])
        self.state = SASL
        self._send(b"+ ")
        return None

    def _sasl_response(self, line: bytes):
        if line.strip() == b"*":
            raise CommandError(b"Authentication cancelled")
        return self._plain(line.strip())

    def _plain(self, encoded: bytes):
        """RFC 4616: authzid NUL authcid NUL password, base64-encoded."""
        try:
            message = binascii.a2b_base64(encoded, strict_mode=True) if encoded else b""
        except binascii.Error:
            raise CommandError(b"Invalid base64 data") from None
        parts = message.split(b"\0")
        if len(parts) != 3 or not parts[1]:
            raise CommandError(b"Invalid PLAIN response")
        authzid, authcid, password = parts
        if authzid and authzid != authcid:
            # No proxy logins: acting as another user is not allowed.
            raise CommandError(AUTH_FAILED)
        return self._login(authcid, password)

    def _login(self, username: bytes, password: bytes) -> defer.Deferred:
        d = self.portal.login(credentials.UsernamePassword(username, password), None, pop3.IMailbox)
        d.addCallbacks(self._logged_in, self._login_failed)
        return d

    def _logged_in(self, result):
        interface, avatar, logout = result
        if self.state is CLOSED:
            logout()
            return
        self.mbox = avatar
        self._onLogout = logout
        self.state = TRANSACTION
        self._ok(b"Logged in, %d messages" % len(avatar))

    def _login_failed(self, failure: Failure):
        if failure.check(cred_error.UnauthorizedLogin, cred_error.LoginFailed, cred_error.LoginDenied):
            self._log.info("POP3 login failed from {peer}", peer=self.peer_host)
            raise CommandError(AUTH_FAILED)
        if failure.check(passwords.Busy):
            raise CommandError(SERVER_ERROR, count=False)
        return failure

    def cmd_QUIT(self, argument):
        hostname = self._hostname
        if self.state is not TRANSACTION:
            self._ok(hostname + b" POP3 server signing off")
            self._close()
            return None
        self.state = UPDATE
        self._buffer.clear()
        d = defer.maybeDeferred(self.mbox.sync)

        def done(removed):
            noun = b"message" if removed == 1 else b"messages"
            self._ok(hostname + b" POP3 server signing off (%d %s deleted)" % (removed, noun))

        def failed(failure):
            self._log.failure("POP3 UPDATE failed for {peer}", failure, peer=self.peer_host)
            self._send(b"-ERR [SYS/TEMP] Some deleted messages not removed")

        d.addCallbacks(done, failed)
        d.addBoth(lambda ignored: self._close())
        return d

    # TRANSACTION state

    def _index(self, argument: bytes, allow_deleted: bool = False) -> int:
        """0-based index of the message numbered `argument`; raises CommandError."""
        try:
            number = parse_number(argument)
        except CommandError:
            raise CommandError(b"Invalid message number") from None
        if not 1 <= number <= len(self.mbox):
            raise CommandError(b"No such message")
        if not allow_deleted and self.mbox.is_deleted(number - 1):
            raise CommandError(b"Message %d is deleted" % number)
        return number - 1

    def cmd_STAT(self, argument):
        self._no_arguments(argument, b"STAT")
        mbox = self.mbox

        def reply(ignored):
            live = mbox.live()
            self._ok(b"%d %d" % (len(live), sum(mbox.size(index) for index in live)))

        return mbox.ensure_sizes().addCallback(reply)

    def cmd_LIST(self, argument):
        mbox = self.mbox
        words = argument.split()
        if len(words) > 1:
            raise CommandError(b"Syntax: LIST [message]")
        if words:
            index = self._index(words[0])
            return mbox.ensure_sizes([index]).addCallback(
                lambda ignored: self._ok(b"%d %d" % (index + 1, mbox.size(index))))

        def reply(ignored):
            live = mbox.live()
            total = sum(mbox.size(index) for index in live)
            self._multiline(b"%d messages (%d octets)" % (len(live), total),
                            [b"%d %d" % (index + 1, mbox.size(index)) for index in live])

        return mbox.ensure_sizes().addCallback(reply)

    def cmd_UIDL(self, argument):
        mbox = self.mbox
        words = argument.split()
        if len(words) > 1:
            raise CommandError(b"Syntax: UIDL [message]")
        if words:
            index = self._index(words[0])
            self._ok(b"%d %s" % (index + 1, mbox.getUidl(index)))
            return
        self._multiline(b"Unique-ID listing follows",
                        [b"%d %s" % (index + 1, mbox.getUidl(index)) for index in mbox.live()])

    def cmd_RETR(self, argument):
        words = argument.split()
        if len(words) != 1:
            raise CommandError(b"Syntax: RETR message")
        return self._stream(self._index(words[0]), None)

    def cmd_TOP(self, argument):
        words = argument.split()
        if len(words) != 2:
            raise CommandError(b"Syntax: TOP message lines")
        index = self._index(words[0])
        try:
            lines = parse_number(words[1])
        except CommandError:
            raise CommandError(b"Invalid line count") from None
        return self._stream(index, lines)

    @defer.inlineCallbacks
    def _stream(self, index: int, top_lines: int | None):
        """Send message `index` (whole, or TOP) from the blob store, with flow control."""
        mbox = self.mbox
        if top_lines is None:
            yield mbox.ensure_sizes([index])
        size = mbox.read_chunk
        try:
            chunk = yield mbox.read(index, 0, size)
        except MessageGone:
            raise CommandError(b"Message no longer available") from None
        if self.state is CLOSED:
            return
        if top_lines is None:
            self._ok(b"%d octets" % mbox.size(index))
            mbox.mark_retrieved(index)
        else:
            self._ok(b"Top of message follows")
        stored = mbox.stored_size(index)
        encoder, offset, pacer = MessageEncoder(top_lines), len(chunk), _Pacer()
        self._pacer = pacer
        self.transport.registerProducer(pacer, True)
        self.setTimeout(self.limits.idle_timeout)  # a client that stops reading is idle
        try:
            while True:
                out = encoder.feed(chunk)
                last = encoder.done or len(chunk) < size or offset >= stored
                if last:
                    out += encoder.finish() + TERMINATOR
                self.transport.write(out)
                if last:
                    return
                self.resetTimeout()
                yield pacer.wait()
                if self.state is CLOSED or pacer.stopped:
                    return
                chunk = yield mbox.read(index, offset, size)
                if self.state is CLOSED:
                    return
                offset += len(chunk)
        except Exception:
            # After +OK nothing but the message may follow: drop the connection.
            self._log.failure("POP3 transfer failed for {peer}", peer=self.peer_host)
            self.state = CLOSED
            self.transport.abortConnection()
        finally:
            self._pacer = None
            self.transport.unregisterProducer()

    def cmd_DELE(self, argument):
        words = argument.split()
        if len(words) != 1:
            raise CommandError(b"Syntax: DELE message")
        index = self._index(words[0])
        self.mbox.deleteMessage(index)
        self._ok(b"Message %d deleted" % (index + 1))

    def cmd_NOOP(self, argument):
        self._no_arguments(argument, b"NOOP")
        self._ok()

    def cmd_RSET(self, argument):
        self._no_arguments(argument, b"RSET")
        self.mbox.undeleteMessages()
        self._ok(b"Maildrop has %d messages" % len(self.mbox))
