"""The outbound ESMTP client (RFC 5321) used by the queue.

A small client on LineReceiver rather than twisted.mail's ESMTPSender,
whose defects (DESIGN.md section 4) sit deep in its state machine: it
dot-escapes each 16 KiB chunk on its own, so a line starting on a chunk
boundary goes out unescaped (an SMTP smuggling vector), it turns CRLF
input into CRCRLF, and `smtp.sendmail()` cannot do opportunistic TLS.
Here the body goes through `DataEncoder`, which keeps its state across
chunks, STARTTLS (RFC 3207) is used whenever offered, and every RCPT gets
its own reply so the queue can record per-recipient outcomes.
"""
from __future__ import annotations

import base64
import io
import re
from dataclasses import dataclass

from twisted.internet import defer, error
from twisted.protocols.basic import FileSender, LineReceiver

_LINE_END = re.compile(rb"\r\n|\r|\n")
_ENHANCED = re.compile(r"^([245])\.\d{1,3}\.\d{1,3}$")
CHUNK = 16 * 1024


class DataEncoder:
    """Turns message bytes into the DATA stream, chunk by chunk.

    Every line end (CRLF, bare LF or bare CR) becomes CRLF, and a line
    starting with "." gets another "." (RFC 5321 4.5.2), with the state
    (at a line start? a CR held back?) kept between chunks, so where the
    chunks are cut does not matter.
    """

    def __init__(self):
        self._line_start = True
        self._held_cr = False

    def feed(self, chunk: bytes) -> bytes:
        if self._held_cr:
            chunk = b"\r" + chunk
            self._held_cr = False
        if chunk.endswith(b"\r"):
            # Maybe the first half of a CRLF split between chunks.
            chunk = chunk[:-1]
            self._held_cr = True
        if not chunk:
            return b""
        text = _LINE_END.sub(b"\r\n", chunk)
        text = text.replace(b"\r\n.", b"\r\n..")
        if self._line_start and text.startswith(b"."):
            text = b"." + text
        self._line_start = text.endswith(b"\r\n")
        return text

    def finish(self) -> bytes:
        """The end of the stream: a last line end if needed, then ".CRLF"."""
        tail = b"\r\n" if (self._held_cr or not self._line_start) else b""
        self._held_cr, self._line_start = False, True
        return tail + b".\r\n"


def encode_data(message: bytes, chunk: int = CHUNK) -> bytes:
    """The whole DATA stream of `message`, terminator included."""
    encoder = DataEncoder()
    parts = [encoder.feed(message[start:start + chunk]) for start in range(0, len(message), chunk)]
    parts.append(encoder.finish())
    return b"".join(parts)


@dataclass(frozen=True)
class Reply:
    """One (possibly multi-line) server reply."""

    code: int
    lines: tuple[str, ...]

    @property
    def text(self) -> str:
        return " ".join(self.lines)

    @property
    def enhanced(self) -> str:
        first = self.lines[0].split(" ", 1)[0] if self.lines and self.lines[0] else ""
        return first if _ENHANCED.match(first) else ""

    @property
    def positive(self) -> bool:
        return 200 <= self.code < 400

    @property
    def temporary(self) -> bool:
        return 400 <= self.code < 500

    def __str__(self) -> str:
        return f"{self.code} {self.text}".strip()


class SMTPClientError(Exception):
    """The session with one host failed before any recipient got a final
    answer there; `temporary` says whether another host or a later try
    may succeed."""

    def __init__(self, text: str, temporary: bool = True, reply: Reply | None = None):
        super().__init__(text)
        self.text = text
        self.temporary = temporary
        self.reply = reply


class SMTPClientProtocol(LineReceiver):
    """Reads replies and sends commands; the dialogue is `run_session`."""

    delimiter = b"\r\n"
    MAX_LENGTH = 64 * 1024

    def __init__(self, clock, timeout: float = 300.0):
        self._clock = clock
        self.timeout = timeout
        self._lines: list[str] = []
        self._replies: list[Reply] = []
        self._waiting: list[defer.Deferred] = []
        self._lost = None
        self.tls = False

    def lineReceived(self, line: bytes):
        text = line.decode("utf-8", "replace")
        if len(text) < 3 or not text[:3].isdigit():
            self._fail(SMTPClientError(f"malformed reply {text[:80]!r}"))
            return
        self._lines.append(text[4:])
        if text[3:4] == "-":
            if len(self._lines) > 1000:
                self._fail(SMTPClientError("reply has too many lines"))
            return
        reply = Reply(int(text[:3]), tuple(self._lines))
        self._lines = []
        if self._waiting:
            self._waiting.pop(0).callback(reply)
        else:
            self._replies.append(reply)

    def lineLengthExceeded(self, line):
        self._fail(SMTPClientError("reply line too long"))

    def _fail(self, problem: Exception):
        if self._lost is None:
            self._lost = problem
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.errback(problem)
        if self.transport is not None:
            self.transport.abortConnection()

    def connectionLost(self, reason=error.ConnectionDone):
        if self._lost is None:
            message = reason.getErrorMessage() if hasattr(reason, "getErrorMessage") else str(reason)
            self._lost = SMTPClientError(f"connection lost: {message}")
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.errback(self._lost)

    def reply(self, timeout: float | None = None) -> defer.Deferred:
        """@return: Deferred firing with the next Reply (or failing with
        SMTPClientError when the connection breaks or `timeout` passes)."""
        if self._replies:
            return defer.succeed(self._replies.pop(0))
        if self._lost is not None:
            return defer.fail(self._lost)
        d = defer.Deferred()
        self._waiting.append(d)
        limit = self.timeout if timeout is None else timeout
        timer = self._clock.callLater(limit, self._timed_out, d)

        def cancel_timer(result):
            if timer.active():
                timer.cancel()
            return result

        return d.addBoth(cancel_timer)

    def _timed_out(self, d):
        if not d.called:
            self._fail(SMTPClientError("timed out waiting for a reply"))

    def send(self, *lines: bytes):
        """Send command lines (several at once when pipelining)."""
        self.transport.writeSequence([line + b"\r\n" for line in lines])

    def command(self, line: bytes, timeout: float | None = None) -> defer.Deferred:
        self.send(line)
        return self.reply(timeout)

    def send_body(self, message: bytes) -> defer.Deferred:
        """Stream `message` as DATA content with its terminator.
        @return: Deferred firing once it is all handed to the transport."""
        encoder = DataEncoder()
        sent = FileSender().beginFileTransfer(io.BytesIO(message), self.transport, encoder.feed)
        return sent.addCallback(lambda _: self.transport.write(encoder.finish()))

    def start_tls(self, context):
        # Anything the server sent after its 220 would be injected text:
        # drop it, as the server side does.
        self.clearLineBuffer()
        self._replies.clear()
        self.transport.startTLS(context)
        self.tls = True


def parse_ehlo(reply: Reply) -> dict[str, list[str]]:
    """Extension keyword (upper case) -> parameters, from an EHLO reply."""
    extensions = {}
    for line in reply.lines[1:]:
        words = line.split()
        if words:
            extensions[words[0].upper()] = words[1:]
    return extensions


@dataclass(frozen=True)
class Envelope:
    sender: str
    recipients: tuple[str, ...]
    utf8: bool = False


@dataclass
class SessionOptions:
    """How to talk to one host."""

    helo: str
    tls: str = "opportunistic"  # "opportunistic", "required", "none"
    tls_context: object = None  # an IOpenSSLClientConnectionCreator
    username: str = ""
    password: str = ""
    data_timeout: float = 600.0


def _has_8bit(message: bytes) -> bool:
    return not message.isascii()


async def run_session(protocol: SMTPClientProtocol, envelope: Envelope, message: bytes,
                      options: SessionOptions) -> dict[str, Reply]:
    """One SMTP transaction on a connected `protocol`.

    @return: the final Reply for every recipient: its RCPT reply when that
        was negative, else the reply to the end of DATA.
    @raise SMTPClientError: nothing final was learnt at this host (greeting,
        EHLO, TLS, MAIL or the connection failed).
    """
    greeting = await protocol.reply()
    if greeting.code != 220:
        raise SMTPClientError(f"greeting: {greeting}", temporary=True, reply=greeting)
    extensions = await _ehlo(protocol, options.helo)
    if options.tls != "none" and "STARTTLS" in extensions:
        started = await protocol.command(b"STARTTLS")
        if started.code == 220:
            protocol.start_tls(options.tls_context)
            extensions = await _ehlo(protocol, options.helo)
        elif options.tls == "required":
            raise SMTPClientError(f"STARTTLS refused: {started}", reply=started)
    if options.tls == "required" and not protocol.tls:
        raise SMTPClientError("TLS is required but the server does not offer STARTTLS")
    if options.username:
        await _authenticate(protocol, extensions, options)
    if envelope.utf8 and "SMTPUTF8" not in extensions:
        reply = Reply(553, ("5.6.7 The server does not support SMTPUTF8",))
        return {recipient: reply for recipient in envelope.recipients}
    mail = f"MAIL FROM:<{envelope.sender}>".encode("utf-8")
    if "SIZE" in extensions:
        mail += b" SIZE=%d" % len(message)
    if "8BITMIME" in extensions and _has_8bit(message):
        mail += b" BODY=8BITMIME"
    if envelope.utf8:
        mail += b" SMTPUTF8"
    rcpts = [f"RCPT TO:<{recipient}>".encode("utf-8") for recipient in envelope.recipients]
    replies: dict[str, Reply] = {}
    if "PIPELINING" in extensions:
        protocol.send(mail, *rcpts, b"DATA")
        mail_reply = await protocol.reply()
        rcpt_replies = [await protocol.reply() for _ in rcpts]
        data_reply = await protocol.reply(120)
    else:
        mail_reply = await protocol.command(mail)
        rcpt_replies, data_reply = [], None
        if mail_reply.positive:
            for line in rcpts:
                rcpt_replies.append(await protocol.command(line))
            if any(reply.positive for reply in rcpt_replies):
                data_reply = await protocol.command(b"DATA", 120)
    if not mail_reply.positive:
        if data_reply is not None and data_reply.code == 354:
            protocol.send(b".")
            await protocol.reply(options.data_timeout)
        raise SMTPClientError(f"MAIL FROM: {mail_reply}", temporary=mail_reply.code < 500, reply=mail_reply)
    accepted = []
    for recipient, reply in zip(envelope.recipients, rcpt_replies):
        if reply.positive:
            accepted.append(recipient)
        else:
            replies[recipient] = reply
    if data_reply is None:
        return replies
    if data_reply.code != 354:
        for recipient in accepted:
            replies[recipient] = data_reply
        return replies
    if not accepted:
        # A pipelining server that said 354 with no recipient: end it empty.
        protocol.send(b".")
        await protocol.reply(options.data_timeout)
        return replies
    await protocol.send_body(message)
    final = await protocol.reply(options.data_timeout)
    for recipient in accepted:
        replies[recipient] = final
    return replies


async def _ehlo(protocol, helo: str) -> dict[str, list[str]]:
    reply = await protocol.command(b"EHLO " + helo.encode("ascii", "replace"))
    if reply.code == 250:
        return parse_ehlo(reply)
    reply = await protocol.command(b"HELO " + helo.encode("ascii", "replace"))
    if reply.code != 250:
        raise SMTPClientError(f"HELO: {reply}", reply=reply)
    return {}


async def _authenticate(protocol, extensions, options):
    mechanisms = [word.upper() for word in extensions.get("AUTH", [])]
    if not protocol.tls:
        raise SMTPClientError("will not send credentials without TLS")
    user = options.username.encode("utf-8")
    password = options.password.encode("utf-8")
    if "PLAIN" in mechanisms:
        reply = await protocol.command(b"AUTH PLAIN " + base64.b64encode(b"\0" + user + b"\0" + password))
    elif "LOGIN" in mechanisms:
        reply = await protocol.command(b"AUTH LOGIN")
        if reply.code == 334:
            reply = await protocol.command(base64.b64encode(user))
        if reply.code == 334:
            reply = await protocol.command(base64.b64encode(password))
    else:
        raise SMTPClientError("the smarthost offers neither AUTH PLAIN nor LOGIN")
    if reply.code != 235:
        # The server's reply only: never anything that was sent.
        raise SMTPClientError(f"AUTH: {reply}", reply=reply)


async def quit(protocol: SMTPClientProtocol):
    """Say QUIT politely, then close, whatever happens."""
    try:
        protocol.send(b"QUIT")
        await protocol.reply(10)
    except Exception:
        pass
    finally:
        if protocol.transport is not None:
            protocol.transport.loseConnection()
