"""The ESMTP server protocol (RFC 5321) and its factory.

`ESMTPServer` subclasses `twisted.mail.smtp.ESMTP` for its timeout
machinery, host handling and EHLO extension listing, and replaces the
rest, which is unsafe or incomplete in Twisted 26 (see DESIGN.md section 4):

- input is queued while a command's reply is pending, so pipelined commands
  run strictly in order and a DATA body is never run as commands;
- input pipelined behind STARTTLS is discarded (command injection);
- MAIL/RCPT are parsed strictly, with SIZE, BODY and SMTPUTF8;
- DATA ends only on CRLF "." CRLF; bare CR/LF, overlong lines and oversize
  messages are refused at the end of the message;
- every reply carries an enhanced status code (RFC 2034/3463).

Policy and delivery belong to an `ISMTPSession`, one per connection; this
module only speaks the protocol.  The submission listener extends the
protocol through `extensions()`, `mail_parameters()`, `rcpt_parameters()`,
`smtp_<VERB>` methods and `read_line()`.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from twisted.internet import defer, error, protocol
from twisted.internet.interfaces import ITLSTransport
from twisted.logger import Logger
from twisted.mail import smtp
from twisted.python.failure import Failure

from emailsvc.config import SMTPConfig
from emailsvc.spool import Spool
from emailsvc.errors import SMTPReplyError
from emailsvc.smtp.commands import (
    CRLF,
    FORBIDDEN_COMMANDS,
    INTERNAL_ERROR,
    NOT_IMPLEMENTED,
    DataReader,
    check_body,
    check_no_value,
    check_size,
    format_reply,
    parse_mail,
    parse_rcpt,
    public_reply,
    reply,
    split_command,
)

COMMAND, DATA, CLOSED = "command", "data", "closed"
# Refusals that are not the client's fault (see ESMTPServer.reply).
_NOT_CLIENT_ERRORS = frozenset({(452, "4.5.3"), (452, "4.3.1"), (454, "4.7.0")})


class LineTooLong(Exception):
    """A line read with `read_line()` was longer than `max_command_length`."""


@dataclass
class Transaction:
    """The mail transaction in progress (after an accepted MAIL)."""

    sender: str
    parameters: dict
    utf8: bool
    recipients: list[str] = field(default_factory=list)
    attempts: int = 0
    """RCPT commands given, accepted or not."""


class ESMTPServer(smtp.ESMTP):
    """One ESMTP server connection talking to one ISMTPSession.

    Built by `SMTPServerFactory`, from which it takes its configuration when
    the connection is made.
    """

    max_command_length = 2048
    """Longest command line accepted (octets, without CRLF).  RFC 5321 asks
    for 512; extensions lengthen lines.  The submission listener may raise
    it for AUTH (RFC 4954 suggests 12288)."""

    max_buffered_input = 256 * 1024
    """Input kept while a reply is pending before reading is paused."""

    _log = Logger()

    def __init__(self):
        smtp.ESMTP.__init__(self)
        self.session = None
        self.hostname = ""
        self.limits = SMTPConfig()
        self.tls_context = None
        self.clock = None
        self.tls_active = False
        self.helo_name: str | None = None
        self.extended = False
        self.transaction: Transaction | None = None
        self.peer_host = ""
        self.peer_port = 0
        self._mode = COMMAND
        self._buffer = b""
        self._pos = 0
        self._discarding = False
        self._pending = False
        self._line_waiter: defer.Deferred | None = None
        self._processing = False
        self._out: list[bytes] = []
        self._errors = 0
        self._refused = False
        self._admitted = False
        self._lost = False
        self._paused = False
        self._data_reader: DataReader | None = None

    # Connection life cycle

    @property
    def peer(self) -> str:
        """The client's address, for logs."""
        return f"[{self.peer_host}]:{self.peer_port}"

    def connectionMade(self):
        factory = self.factory
        self.hostname = factory.hostname
        self.limits = factory.limits
        self.clock = factory.clock
        self.tls_context = factory.tls_context
        self.tls_active = factory.implicit_tls
        peer = self.transport.getPeer()
        self.peer_host = str(getattr(peer, "host", peer))
        self.peer_port = getattr(peer, "port", 0)
        refusal = factory.connection_opened(self)
        if refusal is not None:
            self._log.info("Refused {peer}: {reason}", peer=self.peer, reason=refusal[2])
            self._close_with(*refusal)
            return
        self._admitted = True
        self.setTimeout(self.limits.command_timeout)
        try:
            self.session = factory.session_factory()
        except Exception:
            self._log.failure("Cannot make an SMTP session for {peer}", peer=self.peer)
            self._close_with(421, "4.3.0", "Internal error, try again later")
            return
        # Input that arrives before the greeting waits for it.
        d = self._session_call("connected", self.peer_host, self.peer_port, self.tls_active)
        d.addCallbacks(self._greet, self._refuse_connection)
        self._await(d)

    def _greet(self, ignored):
        self.reply(220, None, f"{self.hostname} ESMTP emailsvc")

    def _refuse_connection(self, failure):
        code, enhanced, text = public_reply(failure.value)
        if code < 500:
            # RFC 5321 3.1 allows only 421 (and close) or 554 instead of 220.
            self._close_with(421, enhanced, text)
        else:
            self._refused = True
            self.reply(554, enhanced, text, count_error=False)

    def connectionLost(self, reason=None):
        if self._lost:
            return
        self._lost = True
        in_data = self._mode is DATA
        self._mode = CLOSED
        self._drop_data_reader()
        self._buffer, self._pos = b"", 0
        self.setTimeout(None)
        if self._line_waiter is not None:
            waiter, self._line_waiter = self._line_waiter, None
            waiter.errback(Failure(error.ConnectionLost("connection lost while reading a line")))
        if self._admitted:
            self.factory.connection_closed(self)
        if in_data:
            self._log.info("{peer} disconnected during DATA; message discarded", peer=self.peer)
        if self.session is not None:
            d = defer.maybeDeferred(self.session.disconnected)
            d.addErrback(lambda f: self._log.failure("Session disconnected() failed for {peer}", f, peer=self.peer))

    def callLater(self, period, func):
        # TimeoutMixin uses the global reactor; we use the injected clock.
        return self.clock.callLater(period, func)

    def timeoutConnection(self):
        self._log.info("Timeout ({mode}) for {peer}", mode=self._mode, peer=self.peer)
        self._close_with(421, "4.4.2", "Timeout")

    # Input

    def dataReceived(self, data):
        if self._mode is CLOSED:
            return
        self.resetTimeout()
        self._buffer += data
        self._process()

    def _process(self):
        """Run the input buffered so far, in order, until a reply is pending.

        Re-entrant calls (a Deferred firing while a command runs) return at
        once: the outer loop goes on.
        """
        if self._processing:
            return
        self._processing = True
        try:
            while self._mode is not CLOSED:
                if self._mode is DATA:
                    if not self._feed_data():
                        break
                    continue
                if self._pending and self._line_waiter is None:
                    break
                end = self._buffer.find(CRLF, self._pos)
                if end < 0:
                    self._check_partial_line()
                    break
                line = self._buffer[self._pos:end]
                self._pos = end + 2
                if self._discarding:
                    self._discarding = False  # the end of a line refused already
                elif len(line) > self.max_command_length:
                    self._line_too_long()
                elif self._line_waiter is not None:
                    waiter, self._line_waiter = self._line_waiter, None
                    waiter.callback(line)
                    if self._pending and self._line_waiter is None:
                        self.setTimeout(None)
                else:
                    self._command(line)
        finally:
            self._processing = False
            if self._pos:
                self._buffer, self._pos = self._buffer[self._pos:], 0
        self._flush()
        self._flow_control()

    def _feed_data(self) -> bool:
        """Give buffered input to the DATA reader; False when it needs more."""
        if self._pos >= len(self._buffer):
            return False
        reader = self._data_reader
        self._buffer, self._pos = reader.feed(self._buffer[self._pos:]), 0
        if reader.done:
            self._end_of_data()
            return True
        return False

    def _check_partial_line(self):
        unfinished = len(self._buffer) - self._pos
        # One more octet may be the CR of the CRLF to come.
        if unfinished > self.max_command_length + 1:
            self._buffer = b"\r" if self._buffer.endswith(b"\r") else b""
            self._pos = 0
            if not self._discarding:
                self._discarding = True
                self._line_too_long()

    def _line_too_long(self):
        if self._line_waiter is not None:
            waiter, self._line_waiter = self._line_waiter, None
            waiter.errback(Failure(LineTooLong()))
        else:
            self.reply(500, "5.5.2", "Line too long")

    def _flow_control(self):
        if self._mode is CLOSED:
            return
        waiting = len(self._buffer)
        if not self._paused and waiting > self.max_buffered_input:
            self._paused = True
            self.transport.pauseProducing()
        elif self._paused and waiting <= self.max_buffered_input // 2:
            self._paused = False
            self.transport.resumeProducing()

    def read_line(self) -> defer.Deferred:
        """The next input line (bytes without CRLF), for commands that read
        continuation lines (AUTH).  Call it from a command whose Deferred is
        still pending.

        @return: Deferred firing with the line; fails with LineTooLong (no
            reply sent yet) or ConnectionLost.
        """
        if self._line_waiter is not None:
            raise RuntimeError("read_line() is already waiting")
        self._line_waiter = defer.Deferred()
        self.setTimeout(self.limits.command_timeout)
        if not self._processing and CRLF in self._buffer:
            # A line is there already: hand it over once the caller has
            # added its callbacks.
            self.clock.callLater(0, self._process)
        return self._line_waiter

    # Commands

    def _command(self, line: bytes):
        try:
            verb, args = split_command(line)
            if verb in FORBIDDEN_COMMANDS:
                self._log.info("Non-SMTP command {verb} from {peer}", verb=verb, peer=self.peer)
                self.reply(221, "2.7.0", "Not an SMTP client, closing connection", count_error=False)
                self._close()
                return
            if self._refused and verb != "QUIT":
                raise reply(503, "5.5.1", "Service refused, send QUIT")
            if verb in NOT_IMPLEMENTED:
                raise reply(502, "5.5.1", "Command not implemented")
            handler = getattr(self, "smtp_" + verb, None)
            if handler is None:
                raise reply(500, "5.5.1", "Command unrecognized")
            result = handler(args)
        except SMTPReplyError as err:
            self.reply_error(err)
            return
        except Exception:
            self._log.failure("SMTP command failed for {peer}", peer=self.peer)
            self.reply(*INTERNAL_ERROR)
            return
        if isinstance(result, defer.Deferred):
            self._await(result)

    def _await(self, d: defer.Deferred):
        """Hold further input until `d` (a command's reply) has fired."""
        d.addErrback(self._unexpected)
        # d.called is no proof: a Deferred waiting on an inner one has
        # "called" set but no result yet.
        fired = []
        d.addBoth(fired.append)
        if fired:
            return
        self._pending = True
        self.setTimeout(None)  # the client waits for us, not the reverse
        d.addBoth(self._resume)

    def _resume(self, ignored):
        self._pending = False
        if self._mode is CLOSED:
            return
        self.setTimeout(self._idle_timeout())
        self._process()

    def _idle_timeout(self) -> float:
        return self.limits.data_timeout if self._mode is DATA else self.limits.command_timeout

    def _unexpected(self, failure):
        if self._mode is CLOSED and failure.check(error.ConnectionLost):
            return None
        self._log.failure("SMTP reply failed for {peer}", failure, peer=self.peer)
        self.reply(*INTERNAL_ERROR)

    def _session_call(self, method: str, *args) -> defer.Deferred:
        """Call `session.<method>(*args)`.

        @return: Deferred firing with its result, or failing with an
            SMTPReplyError only: other errors are logged and become 451.
        """
        d = defer.maybeDeferred(getattr(self.session, method), *args)
        d.addErrback(self._translate_failure, method)
        return d

    def _translate_failure(self, failure, method):
        if failure.check(SMTPReplyError):
            return failure
        self._log.failure(
            "Session {method}() failed for {peer} (helo={helo})",
            failure, method=method, peer=self.peer, helo=self.helo_name,
        )
        return Failure(SMTPReplyError(*INTERNAL_ERROR))

    def _reply_failure(self, failure):
        failure.trap(SMTPReplyError)
        self.reply_error(failure.value)

    def smtp_EHLO(self, args):
        return self._hello(args, extended=True)

    def smtp_HELO(self, args):
        return self._hello(args, extended=False)

    def _hello(self, args: bytes, extended: bool):
        verb = "EHLO" if extended else "HELO"
        try:
            name = args.decode("utf-8")
        except UnicodeDecodeError:
            name = ""
        if not name:
            raise reply(501, "5.5.4", f"Syntax: {verb} hostname")
        self.helo_name, self.extended = None, False
        d = self._abandon_transaction()
        d.addCallback(lambda ignored: self._session_call("helo", name, extended))

        def accepted(ignored):
            self.helo_name, self.extended = name, extended
            if extended:
                self.reply(250, None, "\n".join([self.hostname, *self._extension_lines()]))
            else:
                self.reply(250, None, self.hostname)

        d.addCallbacks(accepted, self._reply_failure)
        return d

    def _abandon_transaction(self) -> defer.Deferred:
        if self.transaction is None:
            return defer.succeed(None)
        self.transaction = None
        return self._session_call("reset")

    def extensions(self):
        """The EHLO keywords: bytes -> list of bytes parameters, or None.

        A subclass adds its own (AUTH) to the dict this returns; a keyword
        with an empty list is not advertised.
        """
        ext = {
            b"SIZE": [str(self.limits.max_message_size).encode("ascii")],
            b"8BITMIME": None,
            b"PIPELINING": None,
            b"ENHANCEDSTATUSCODES": None,
            b"SMTPUTF8": None,
        }
        if self.can_start_tls():
            ext[b"STARTTLS"] = None
        return ext

    def _extension_lines(self) -> list[str]:
        listed = self.listExtensions()
        return listed.decode("ascii").split("\n") if listed else []

    def can_start_tls(self) -> bool:
        """Whether STARTTLS is offered now."""
        return (
            self.tls_context is not None
            and not self.tls_active
            and ITLSTransport.providedBy(self.transport)
        )

    def smtp_STARTTLS(self, args):
        if self.tls_active:
            raise reply(503, "5.5.1", "TLS already active")
        if self.tls_context is None:
            raise reply(502, "5.5.1", "Command not implemented")
        if args:
            raise reply(501, "5.5.4", "Syntax: STARTTLS")
        if not self.extended:
            raise reply(503, "5.5.1", "Send EHLO first")
        if self.transaction is not None:
            raise reply(503, "5.5.1", "Mail transaction in progress")
        if not self.can_start_tls():
            raise reply(454, "4.7.0", "TLS not available")
        self.reply(220, "2.0.0", "Ready to start TLS")
        self._flush()
        # Whatever followed STARTTLS came in clear text: running it after
        # the handshake would let an attacker inject commands into the TLS
        # session (CVE-2011-0411 and Twisted's ESMTP).
        self._buffer, self._pos, self._discarding = b"", 0, False
        self.transport.startTLS(self.tls_context)
        self.tls_active = True
        self.helo_name, self.extended = None, False
        d = self._session_call("tls_started")
        d.addErrback(self._tls_refused)
        return d

    def _tls_refused(self, failure):
        failure.trap(SMTPReplyError)
        code, enhanced, text = public_reply(failure.value)
        self._close_with(421, enhanced if code < 500 else "4.7.0", text)

    def smtp_MAIL(self, args):
        if self.helo_name is None:
            raise reply(503, "5.5.1", "Send HELO/EHLO first")
        if self.transaction is not None:
            raise reply(503, "5.5.1", "Nested MAIL command")
        command = parse_mail(args)
        parameters = command.parameters
        if parameters and not self.extended:
            raise reply(555, "5.5.4", "Parameters require EHLO")
        self._check_parameters(self.mail_parameters(), parameters)
        utf8 = "SMTPUTF8" in parameters
        if not utf8 and not command.is_ascii:
            raise reply(553, "5.6.7", "Non-ASCII address requires SMTPUTF8")
        d = self._session_call("mail_from", command.address, parameters)

        def accepted(ignored):
            self.transaction = Transaction(command.address, parameters, utf8)
            self.reply(250, "2.1.0", "Sender OK")

        d.addCallbacks(accepted, self._reply_failure)
        return d

    def smtp_RCPT(self, args):
        transaction = self.transaction
        if transaction is None:
            raise reply(503, "5.5.1", "Need MAIL command")
        command = parse_rcpt(args)
        self._check_parameters(self.rcpt_parameters(), command.parameters)
        if not transaction.utf8 and not command.is_ascii:
            raise reply(553, "5.6.7", "Non-ASCII address requires SMTPUTF8")
        if len(transaction.recipients) >= self.limits.max_recipients:
            raise reply(452, "4.5.3", "Too many recipients")
        transaction.attempts += 1
        d = self._session_call("rcpt_to", command.address, command.parameters)

        def accepted(ignored):
            transaction.recipients.append(command.address)
            self.reply(250, "2.1.5", "Recipient OK")

        d.addCallbacks(accepted, self._reply_failure)
        return d

    def mail_parameters(self) -> dict:
        """MAIL parameter keyword -> checker(value) raising SMTPReplyError.

        A subclass adds keywords it advertises (AUTH=, RFC 4954).
        """
        size = self.limits.max_message_size
        return {"SIZE": lambda value: check_size(value, size), "BODY": check_body, "SMTPUTF8": check_no_value}

    def rcpt_parameters(self) -> dict:
        """RCPT parameter keyword -> checker, as `mail_parameters` (none: no DSN)."""
        return {}

    def _check_parameters(self, checkers: dict, parameters: dict):
        for keyword, value in parameters.items():
            checker = checkers.get(keyword)
            if checker is None:
                raise reply(555, "5.5.4", "Unsupported parameter")
            checker(value)

    def smtp_DATA(self, args):
        transaction = self.transaction
        if transaction is None:
            raise reply(503, "5.5.1", "Need MAIL command")
        if not transaction.recipients:
            if transaction.attempts:
                raise reply(554, "5.5.1", "No valid recipients")
            raise reply(503, "5.5.1", "Need RCPT command")
        if args:
            raise reply(501, "5.5.4", "Syntax: DATA")
        self.reply(354, None, "End data with <CR><LF>.<CR><LF>")
        self._mode = DATA
        self._data_reader = DataReader(self.limits.max_message_size, self.limits.max_line_length,
                                       self.factory.spool.buffer())
        self.setTimeout(self.limits.data_timeout)

    def _drop_data_reader(self):
        reader, self._data_reader = self._data_reader, None
        if reader is not None:
            reader.close()

    def _end_of_data(self):
        reader, self._data_reader = self._data_reader, None
        transaction, self.transaction = self.transaction, None
        self._mode = COMMAND
        self.setTimeout(self.limits.command_timeout)
        message = reader.take()
        if reader.storage_error is not None:
            self._log.error("Cannot keep a message from {peer} while it is received: {error}",
                            peer=self.peer, error=reader.storage_error)
        if message is None:
            d = defer.succeed(public_reply(reader.error))
        else:
            d = self._session_call("data", message)
            d.addCallbacks(self._delivered, self._not_delivered)

        def reset(result):
            d = self._session_call("reset")
            d.addErrback(lambda f: None)  # logged already; the DATA reply stands
            d.addCallback(lambda ignored: result)
            return d

        def answer(result):
            code, enhanced, text = result
            self._log.info(
                "Transaction from {peer} helo={helo} sender=<{sender}> recipients={count} "
                "size={size} result={code} {enhanced} {text}",
                peer=self.peer, helo=self.helo_name, sender=transaction.sender,
                count=len(transaction.recipients), size=reader.size,
                code=code, enhanced=enhanced, text=text,
            )
            if code == 250:
                self._errors = 0  # errors count until mail is delivered
            self.reply(code, enhanced, text)

        d.addCallback(reset)
        d.addCallback(answer)
        self._await(d)

    def _delivered(self, text):
        if isinstance(text, bytes):
            text = text.decode("utf-8", "replace")
        return 250, "2.0.0", str(text) if text is not None else "Ok"

    def _not_delivered(self, failure):
        failure.trap(SMTPReplyError)
        return public_reply(failure.value)

    def smtp_RSET(self, args):
        if args:
            raise reply(501, "5.5.4", "Syntax: RSET")
        self.transaction = None
        d = self._session_call("reset")
        d.addCallbacks(lambda ignored: self.reply(250, "2.0.0", "Ok"), self._reply_failure)
        return d

    def smtp_NOOP(self, args):
        self.reply(250, "2.0.0", "Ok")

    def smtp_VRFY(self, args):
        if not args:
            raise reply(501, "5.5.4", "Syntax: VRFY address")
        # Never reveal whether a user exists (RFC 5321 3.5.3).
        self.reply(252, "2.5.0", "Cannot VRFY user, but will accept message and attempt delivery")

    def smtp_HELP(self, args):
        verbs = sorted(name[5:] for name in dir(self) if name.startswith("smtp_"))
        if not self.can_start_tls() and "STARTTLS" in verbs:
            verbs.remove("STARTTLS")
        self.reply(214, "2.0.0", "Commands: " + " ".join(verbs))

    def smtp_QUIT(self, args):
        self.reply(221, "2.0.0", f"{self.hostname} closing connection")
        self._close()

    # Output

    def reply(self, code: int, enhanced: str | None, text: str, count_error: bool = True):
        """Send one reply (batched with the other replies of this input).

        A 4xx/5xx reply counts as a client error, except 452 4.5.3 (the
        client is told to send the rest later), 452 4.3.1 and 454 4.7.0
        (this server's storage or authentication failed for now) and 421; past
        `limits.max_errors` errors the client gets 421 and is dropped.
        421 always closes the connection.
        """
        if self._mode is CLOSED:
            return
        if code >= 400 and count_error and code != 421 and (code, enhanced) not in _NOT_CLIENT_ERRORS:
            self._errors += 1
            if self._errors > self.limits.max_errors:
                self._log.info("Too many errors from {peer}", peer=self.peer)
                code, enhanced, text = 421, "4.7.0", "Too many errors"
        if code == 421 and not text.startswith(self.hostname + " "):
            text = f"{self.hostname} {text}"  # RFC 5321: 421 <domain> ...
        self._out.append(format_reply(code, enhanced, text))
        if code == 421:
            self._close()
        elif not self._processing:
            self._flush()

    def reply_error(self, err: SMTPReplyError):
        """Send an SMTPReplyError as the reply (sanitized by public_reply)."""
        self.reply(*public_reply(err))

    def _flush(self):
        if self._out:
            data, self._out = b"".join(self._out), []
            self.transport.write(data)

    def _close_with(self, code: int, enhanced: str, text: str):
        self.reply(code, enhanced, text, count_error=False)
        self._close()

    def _close(self):
        if self._mode is CLOSED:
            return
        self._flush()
        self._mode = CLOSED
        self._buffer, self._pos = b"", 0
        self._drop_data_reader()
        self.setTimeout(None)
        self.transport.loseConnection()


class SMTPServerFactory(protocol.ServerFactory):
    """Builds `ESMTPServer` connections, each with a new session from
    `session_factory()`, and enforces the connection limits.

    @param hostname: the name in the greeting and replies.
    @param limits: an `SMTPConfig`.
    @param tls_context: offered with STARTTLS when given (an
        IOpenSSLServerConnectionCreator, e.g. CertificateOptions).
    @param implicit_tls: the listener wraps connections in TLS already (465).
    @param clock: IReactorTime for timeouts (default: the global reactor).
    @param spool: the `emailsvc.spool.Spool` where a message waits while it
        is received (default: one with the default threshold, over the
        system's temporary directory).
    """

    protocol = ESMTPServer

    def __init__(self, session_factory, hostname, limits: SMTPConfig, tls_context=None,
                 implicit_tls=False, clock=None, spool=None):
        if clock is None:
            from twisted.internet import reactor as clock
        self.session_factory = session_factory
        self.spool = spool or Spool()
        self.hostname = hostname
        self.limits = limits
        self.tls_context = tls_context
        self.implicit_tls = implicit_tls
        self.clock = clock
        self.connections = 0
        self.connections_per_peer: dict[str, int] = {}

    def connection_opened(self, server: ESMTPServer):
        """Admit a connection, or return the (code, enhanced, text) refusal."""
        host = server.peer_host
        if self.connections >= self.limits.max_connections:
            return 421, "4.3.2", "Too many connections, try again later"
        if self.connections_per_peer.get(host, 0) >= self.limits.max_connections_per_ip:
            return 421, "4.7.0", "Too many connections from your address"
        self.connections += 1
        self.connections_per_peer[host] = self.connections_per_peer.get(host, 0) + 1
        return None

    def connection_closed(self, server: ESMTPServer):
        """Forget an admitted connection."""
        host = server.peer_host
        self.connections -= 1
        left = self.connections_per_peer.get(host, 1) - 1
        if left:
            self.connections_per_peer[host] = left
        else:
            self.connections_per_peer.pop(host, None)
