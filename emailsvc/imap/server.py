"""The IMAP4rev1 server protocol.

`IMAPServer` subclasses `twisted.mail.imap4.IMAP4Server` for its place in
Twisted (state names, timeout machinery, IAccount avatars through cred)
and replaces its input handling and command implementations, which are
unsafe or broken in Twisted 26 (DESIGN.md section 4):

- commands run strictly one after another; input is framed here (lines,
  synchronizing and LITERAL+ literals, with size caps) and anything
  pipelined behind STARTTLS is discarded (command injection);
- login (LOGIN, AUTHENTICATE PLAIN with SASL-IR) only over TLS, failures
  throttled by the checker and answered alike, `NO [AUTHENTICATIONFAILED]`;
- SEARCH runs in SQL; FETCH serves partial and section reads from the blob
  store and sets \\Seen; APPEND works without flags and is size-capped;
  NAMESPACE is correct; CAPABILITY lists what is implemented.

Commands live in mixins: `auth.AuthCommands` (STARTTLS, LOGIN,
AUTHENTICATE), `mailboxes.MailboxCommands` (authenticated state) and
`selected.SelectedCommands` (selected state, updates).
"""
from __future__ import annotations

import re

from twisted.internet import defer
from twisted.internet.interfaces import IPushProducer, ITLSTransport
from twisted.logger import Logger
from twisted.mail import imap4
from zope.interface import implementer

from emailsvc.errors import AlreadyExists, BlobNotFound, InvalidName, NotFound, StoreError
from emailsvc.imap.auth import AuthCommands
from emailsvc.imap.mailboxes import MailboxCommands
from emailsvc.imap.selected import SelectedCommands
from emailsvc.imap.wire import (
    LITERAL_MARK, AlreadyAnswered, Args, Atom, Bad, IMAPError, No, String, render, tokenize, valid_tag,
)

CRLF = b"\r\n"
_LITERAL = re.compile(rb"(~?)\{([0-9]{1,20})(\+?)\}\Z")
_FIRST_WORDS = re.compile(rb"\S+ +(\S+)")
ANY, UNAUTH, AUTH, SELECTED = "any", "unauth", "auth", "select"
# Command -> states it is valid in (selected includes authenticated).
COMMANDS = {
    "CAPABILITY": ANY, "NOOP": ANY, "LOGOUT": ANY, "ID": ANY,
    "STARTTLS": UNAUTH, "LOGIN": UNAUTH, "AUTHENTICATE": UNAUTH,
    "ENABLE": AUTH, "NAMESPACE": AUTH, "SELECT": AUTH, "EXAMINE": AUTH, "CREATE": AUTH, "DELETE": AUTH,
    "RENAME": AUTH, "SUBSCRIBE": AUTH, "UNSUBSCRIBE": AUTH, "LIST": AUTH, "LSUB": AUTH, "STATUS": AUTH,
    "APPEND": AUTH, "IDLE": AUTH, "GETQUOTA": AUTH, "GETQUOTAROOT": AUTH, "SETQUOTA": AUTH,
    "CHECK": SELECTED, "CLOSE": SELECTED, "UNSELECT": SELECTED, "EXPUNGE": SELECTED, "SEARCH": SELECTED,
    "FETCH": SELECTED, "STORE": SELECTED, "COPY": SELECTED, "MOVE": SELECTED, "SORT": SELECTED,
}
UID_COMMANDS = frozenset(("FETCH", "STORE", "COPY", "MOVE", "SEARCH", "SORT", "EXPUNGE"))
# RFC 3501 7.4.1: no EXPUNGE while answering these (their UID forms are fine).
NO_EXPUNGE = frozenset(("FETCH", "STORE", "SEARCH", "SORT"))
CAPABILITIES = ("IMAP4rev1", "LITERAL+", "SASL-IR", "ID", "ENABLE", "IDLE")
AUTHENTICATED_CAPABILITIES = (
    "NAMESPACE", "UNSELECT", "UIDPLUS", "MOVE", "CHILDREN", "SPECIAL-USE", "CREATE-SPECIAL-USE",
    "LIST-EXTENDED", "LIST-STATUS",
    "CONDSTORE", "QRESYNC", "SORT", "WITHIN", "QUOTA", "QUOTA=RES-STORAGE", "STATUS=SIZE",
)


@implementer(IPushProducer)
class IMAPServer(AuthCommands, MailboxCommands, SelectedCommands, imap4.IMAP4Server):
    """One IMAP connection.  Built by `IMAPFactory`, whose settings it reads."""

    IDENT = b"emailsvc IMAP4rev1 ready"
    max_line = 64 * 1024
    """Longest command line (octets, without CRLF)."""
    max_literal = 64 * 1024
    """Largest literal outside APPEND."""
    max_command = 1024 * 1024
    """Largest command outside APPEND's message, literals included."""
    max_buffered = 1024 * 1024
    """Input buffered behind a running command before reading pauses."""
    max_errors = 10
    """Consecutive BAD replies before the connection is closed."""
    max_auth_failures = 3
    preauth_timeout = 60.0
    postauth_timeout = 31 * 60.0   # RFC 2177: at least 30 minutes, for IDLE
    log = Logger()

    def __init__(self):
        imap4.IMAP4Server.__init__(self, chal={}, contextFactory=None)
        self.tls_active = False
        self.peer_host = ""
        self.account = None
        self.view = None
        self.enabled: set[str] = set()
        self.closed = False
        self._buffer = b""
        self._parts: list[bytes] = []
        self._literals: list[bytes] = []
        self._literal_left = 0
        self._literal_buffer = None  # from the factory's spool, while a literal is read
        self._command_size = 0
        self._command_limit = self.max_literal
        self._appending = False
        self._command_error: IMAPError | None = None
        self._skip_line = False
        self._busy = False
        self._pumping = False
        self._reading_paused = False
        self._line_waiter: defer.Deferred | None = None
        self._errors = 0
        self._auth_failures = 0
        self._close_after_reply = False
        self._write_paused = False
        self._write_waiters: list[defer.Deferred] = []
        self._idle_tag: bytes | None = None
        self._idle_syncing = False
        self._idle_push: defer.Deferred | None = None

    # Connection life cycle

    def connectionMade(self):
        factory = self.factory
        self.clock = factory.clock
        self.ctx = factory.tls_context
        self.tls_active = factory.implicit_tls
        self.peer_host = str(getattr(self.transport.getPeer(), "host", ""))
        if not factory.connection_opened(self):
            self.closed = True
            self.transport.write(b"* BYE Too many connections, try again later" + CRLF)
            self.transport.loseConnection()
            return
        self._admitted = True
        self.setTimeout(self.preauth_timeout)
        self.untagged(b"OK [CAPABILITY " + self.capability_line() + b"] " + self.IDENT)

    def connectionLost(self, reason=None):
        if getattr(self, "_admitted", False):
            self._admitted = False
            self.factory.connection_closed(self)
        self.closed = True
        self.setTimeout(None)
        self._buffer = b""
        self._drop_literal()
        if self._line_waiter is not None:
            waiter, self._line_waiter = self._line_waiter, None
            waiter.errback(ConnectionError("connection lost"))
        self._release_writers()
        if self.view is not None:
            self.view.close()
            self.view = None
        if self._onLogout:
            logout, self._onLogout = self._onLogout, None
            logout()

    def callLater(self, period, func):
        # TimeoutMixin uses the global reactor; we use the factory's clock.
        return self.clock.callLater(period, func)

    def timeoutConnection(self):
        self.close_with(b"BYE Autologout; idle for too long")

    def close_with(self, untagged: bytes):
        if not self.closed:
            self.untagged(untagged)
            self.closed = True
            self.transport.loseConnection()

    # Output

    def write(self, data: bytes):
        if not self.closed:
            self.transport.write(data)

    def untagged(self, text: bytes):
        self.write(b"* " + text + CRLF)

    def tagged(self, tag: bytes, status: bytes, text: str, code: str | None = None):
        code_part = b"[" + code.encode("utf-8", "replace") + b"] " if code else b""
        # Reply text may quote client input (a mailbox name): never let it break the line.
        text = "".join(c if c.isprintable() else " " for c in text[:300])
        self.write(tag + b" " + status + b" " + code_part + text.encode("utf-8", "replace") + CRLF)

    def pauseProducing(self):
        self._write_paused = True

    def resumeProducing(self):
        self._write_paused = False
        self._release_writers()

    def stopProducing(self):
        self.resumeProducing()

    def _release_writers(self):
        waiters, self._write_waiters = self._write_waiters, []
        for waiter in waiters:
            waiter.callback(None)

    def writable(self) -> defer.Deferred:
        """Fires when the transport wants more data (FETCH waits on it)."""
        if not self._write_paused or self.closed:
            return defer.succeed(None)
        waiter = defer.Deferred()
        self._write_waiters.append(waiter)
        return waiter

    # Input framing

    def dataReceived(self, data):
        if self.closed:
            return
        self.resetTimeout()
        self._buffer += data
        self._pump()
        if self._busy and len(self._buffer) > self.max_buffered and not self._reading_paused:
            self._reading_paused = True
            self.transport.pauseProducing()

    def _pump(self):
        if self._pumping:
            return
        self._pumping = True
        try:
            while not self.closed:
                if self._literal_left:
                    if not self._buffer:
                        break
                    chunk = self._buffer[:self._literal_left]
                    self._buffer = self._buffer[len(chunk):]
                    self._literal_left -= len(chunk)
                    self._keep_literal(chunk)
                    if not self._literal_left:
                        self._literals.append(self._take_literal())
                    continue
                if self._busy and self._line_waiter is None:
                    break
                end = self._buffer.find(b"\n")
                if end < 0:
                    if len(self._buffer) > self.max_line:
                        self._buffer = b""
                        self._skip_line = True
                    break
                line, self._buffer = self._buffer[:end], self._buffer[end + 1:]
                if line.endswith(b"\r"):
                    line = line[:-1]
                if self._skip_line:
                    self._skip_line = False
                    self._reset_command()
                    self._bad_line(b"*", "Line too long")
                    continue
                if len(line) > self.max_line:
                    self._reset_command()
                    self._bad_line(b"*", "Line too long")
                    continue
                if self._line_waiter is not None:
                    waiter, self._line_waiter = self._line_waiter, None
                    waiter.callback(line)
                    continue
                self._command_line(line)
        finally:
            self._pumping = False
        if self._reading_paused and not self._busy and len(self._buffer) <= self.max_buffered // 2:
            self._reading_paused = False
            self.transport.resumeProducing()

    def _command_line(self, line: bytes):
        if not self._parts:
            match = _FIRST_WORDS.match(line)
            # Only a logged-in client may send a message-sized literal.
            self._appending = (match is not None and match.group(1).upper() == b"APPEND"
                               and self.state in (AUTH, SELECTED))
            self._command_limit = self.factory.max_message_size if self._appending else self.max_literal
        if LITERAL_MARK in line:
            self._command_error = self._command_error or Bad("NUL in command")
        self._command_size += len(line)
        match = _LITERAL.search(line)
        if match is None:
            self._parts.append(line)
            self._finish_command()
            return
        size, synchronizing = int(match.group(2)), not match.group(3)
        self._parts.append(line[:match.start()] + LITERAL_MARK)
        error = None
        if match.group(1):
            error = Bad("Binary literals are not supported")
        elif size > self._command_limit:
            error = No("Message too large", "TOOBIG") if self._appending else Bad("Literal too large")
        elif self._command_size + size > self.max_command + (self._command_limit if self._appending else 0):
            error = Bad("Command too long")
        elif len(self._literals) >= 1000:
            error = Bad("Too many literals")
        self._command_size += size
        refusal = self._command_error or error
        if refusal is not None and synchronizing:
            # The client sends nothing more of this command.
            tag = self._parts[0].split(b" ", 1)[0]
            self._reset_command()
            self._reply_error(tag if valid_tag(Atom(tag)) else b"*", refusal)
            return
        if error is not None:
            if size > 0xFFFFFFFF:
                self.close_with(b"BYE Literal too large")
                return
            self._command_error = self._command_error or error
        elif synchronizing:
            self.write(b"+ Ready for literal data" + CRLF)
        self._literal_left = size
        if size == 0:
            self._literals.append(b"")
        elif self._command_error is None:
            self._literal_buffer = self.factory.spool.buffer()

    def _keep_literal(self, chunk: bytes):
        buffer = self._literal_buffer
        if buffer is None:
            return  # the command is refused already
        buffer.write(chunk)
        if buffer.error is not None:
            self._spool_failed(buffer.error)

    def _take_literal(self) -> bytes:
        """The literal just read (b"" when the command is refused)."""
        buffer, self._literal_buffer = self._literal_buffer, None
        if buffer is None:
            return b""
        literal = buffer.take()
        if literal is None:
            self._spool_failed(buffer.error)
            return b""
        return literal

    def _spool_failed(self, error: OSError):
        self.log.error("Cannot keep a literal from {peer} while it is received: {error}",
                       peer=self.peer_host, error=error)
        self._drop_literal()
        self._command_error = self._command_error or No("Cannot keep the data now, try again later",
                                                        "UNAVAILABLE")

    def _drop_literal(self):
        buffer, self._literal_buffer = self._literal_buffer, None
        if buffer is not None:
            buffer.close()

    def _reset_command(self):
        self._drop_literal()
        self._parts, self._literals = [], []
        self._literal_left = self._command_size = 0
        self._command_error = None

    def _finish_command(self):
        text, literals, error = b"".join(self._parts), self._literals, self._command_error
        self._reset_command()
        tag = text.split(b" ", 1)[0]
        tag = tag if valid_tag(Atom(tag)) else b"*"
        if error is not None:
            self._reply_error(tag, error)
            return
        try:
            tokens = tokenize(text, literals)
        except IMAPError as failure:
            self._reply_error(tag, failure)
            return
        if not tokens or not valid_tag(tokens[0]):
            self._bad_line(b"*", "Invalid tag")
            return
        if len(tokens) < 2 or not isinstance(tokens[1], Atom):
            self._bad_line(tag, "Missing command")
            return
        self._dispatch(tag, bytes(tokens[1]).upper().decode("ascii", "replace"), tokens[2:])

    def _bad_line(self, tag: bytes, text: str):
        self._reply_error(tag, Bad(text))

    def _reply_error(self, tag: bytes, error: IMAPError):
        self.tagged(tag, error.status, error.text, error.code) if tag != b"*" else self.untagged(
            error.status + b" " + error.text.encode("utf-8", "replace"))
        if error.status == b"BAD":
            self._errors += 1
            if self._errors >= self.max_errors:
                self.close_with(b"BYE Too many invalid commands")
        else:
            self._errors = 0

    def read_line(self) -> defer.Deferred:
        """The next input line, for a running command (AUTHENTICATE, IDLE)."""
        self._line_waiter = defer.Deferred()
        waiter = self._line_waiter
        if not self._pumping:
            self._pump()
        return waiter

    # Dispatch

    def _dispatch(self, tag: bytes, name: str, tokens: list):
        uid = False
        if name == "UID" and self.state == SELECTED:
            if not tokens or not isinstance(tokens[0], Atom):
                self._bad_line(tag, "Missing UID command")
                return
            name, tokens, uid = bytes(tokens[0]).upper().decode("ascii", "replace"), tokens[1:], True
            if name not in UID_COMMANDS:
                self._bad_line(tag, "Unknown UID command")
                return
        elif name == "UID":
            self._bad_line(tag, "No mailbox selected")
            return
        where = COMMANDS.get(name)
        if where is None:
            self._bad_line(tag, "Unknown command")
            return
        if not (where == ANY or where == self.state or (where == AUTH and self.state == SELECTED)):
            self._bad_line(tag, "Command not valid in this state")
            return
        self._busy = True
        handler = getattr(self, "cmd_" + name.lower().replace("-", "_"))
        d = defer.Deferred.fromCoroutine(self._run(tag, name, handler, Args(tokens), uid))
        d.addErrback(lambda failure: self.log.failure("IMAP command crashed", failure))
        d.addBoth(self._command_done)

    async def _run(self, tag, name, handler, args, uid):
        try:
            result = await handler(tag, args, uid)
        except AlreadyAnswered:
            return
        except IMAPError as error:
            if not self.closed:
                await self._sync_safely(name, uid)
                self._reply_error(tag, error)
                if self._close_after_reply:
                    self.close_with(b"BYE Too many authentication failures")
            return
        except StoreError as error:
            if not self.closed:
                await self._sync_safely(name, uid)
                self._reply_error(tag, store_error(error))
            return
        except Exception:
            if self.closed:
                return   # the client went away while the command waited (IDLE, AUTHENTICATE)
            self.log.failure("IMAP {command} failed for {peer}", command=name, peer=self.peer_host)
            self._reply_error(tag, No("Internal error, try again later", "SERVERBUG"))
            return
        if self.closed:
            return
        await self._sync_safely(name, uid)
        code, text = result if isinstance(result, tuple) else (None, result)
        self._errors = 0
        self.tagged(tag, b"OK", text or f"{name} completed", code)

    async def _sync_safely(self, name, uid):
        if self.view is None or self.closed:
            return
        try:
            await self.sync(expunges=uid or name not in NO_EXPUNGE)
        except NotFound:
            self.close_with(b"BYE The selected mailbox was deleted")
        except Exception:
            self.log.failure("IMAP mailbox sync failed for {peer}", peer=self.peer_host)

    def _command_done(self, ignored):
        self._busy = False
        if not self.closed:
            self._pump()

    # Capabilities

    def can_start_tls(self) -> bool:
        return self.ctx is not None and not self.tls_active and ITLSTransport.providedBy(self.transport)

    def capability_line(self) -> bytes:
        caps = list(CAPABILITIES)
        if self.state == UNAUTH:
            if self.tls_active:
                caps.append("AUTH=PLAIN")
            else:
                if self.can_start_tls():
                    caps.append("STARTTLS")
                caps.append("LOGINDISABLED")
        else:
            caps.extend(AUTHENTICATED_CAPABILITIES)
            caps.append(f"APPENDLIMIT={self.factory.max_message_size}")
        return " ".join(caps).encode("ascii")

    # Any state

    async def cmd_capability(self, tag, args, uid):
        args.end()
        self.untagged(b"CAPABILITY " + self.capability_line())

    async def cmd_noop(self, tag, args, uid):
        args.end()
        if self.view is not None:
            self.view.dirty = True

    async def cmd_check(self, tag, args, uid):
        return await self.cmd_noop(tag, args, uid)

    async def cmd_logout(self, tag, args, uid):
        args.end()
        self.untagged(b"BYE Logging out")
        self.tagged(tag, b"OK", "LOGOUT completed")
        self.closed = True
        self.transport.loseConnection()

    async def cmd_id(self, tag, args, uid):
        token = args.next("ID parameters")
        args.end()
        if isinstance(token, list):
            if len(token) % 2 or len(token) > 60 or not all(isinstance(t, (Atom, String)) for t in token):
                raise Bad("Bad ID parameters")
        elif not (isinstance(token, Atom) and token.upper() == b"NIL"):
            raise Bad("Bad ID parameters")
        self.untagged(b"ID " + render(["name", "emailsvc", "vendor", "emailsvc"]))

    # Authenticated state

    async def cmd_enable(self, tag, args, uid):
        names = []
        while args.more():
            names.append(args.keyword("capability"))
        if not names:
            raise Bad("Missing capability")
        newly = []
        for name in names:
            if name in ("CONDSTORE", "QRESYNC") and name not in self.enabled:
                self.enabled.add(name)
                newly.append(name)
        if "QRESYNC" in self.enabled:
            self.enabled.add("CONDSTORE")
        self.untagged(" ".join(["ENABLED"] + newly).encode("ascii"))

    async def cmd_namespace(self, tag, args, uid):
        args.end()
        personal = self.account.getPersonalNamespaces()
        self.untagged(b"NAMESPACE " + render(personal) + b" " + render(self.account.getUserNamespaces())
                      + b" " + render(self.account.getSharedNamespaces()))

    async def cmd_idle(self, tag, args, uid):
        args.end()
        self.write(b"+ idling" + CRLF)
        self._idle_tag = tag
        try:
            if self.view is not None:
                self.view.on_change = self._idle_changed
                await self._sync_safely("IDLE", True)
            while True:
                line = await self.read_line()
                if line.upper() == b"DONE":
                    break
                raise Bad("Expected DONE")
        finally:
            if self._idle_push is not None:
                # Updates being read now are announced before the tagged OK.
                await self._idle_push
            self._idle_tag = None
            if self.view is not None:
                self.view.on_change = None

    def _idle_changed(self):
        if self._idle_tag is None or self._idle_syncing or self.closed:
            return
        self._idle_syncing = True

        async def push():
            try:
                while self.view is not None and self.view.dirty and self._idle_tag is not None:
                    await self._sync_safely("IDLE", True)
            finally:
                self._idle_syncing = False
                self._idle_push = None

        self._idle_push = defer.Deferred.fromCoroutine(push())
        if self._idle_push.called:
            self._idle_push = None


def store_error(error: StoreError) -> IMAPError:
    """A store failure as a tagged NO with a response code (text is public)."""
    if isinstance(error, NotFound):
        return No(str(error) or "No such mailbox", "NONEXISTENT")
    if isinstance(error, AlreadyExists):
        return No(str(error) or "Mailbox exists already", "ALREADYEXISTS")
    if isinstance(error, InvalidName):
        return No(str(error) or "Invalid name", "CANNOT")
    if isinstance(error, BlobNotFound):
        return No("Message data is unavailable", "SERVERBUG")
    return No("Cannot do that", "CANNOT")
