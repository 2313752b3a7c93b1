"""The SMTP wire syntax: parsing what a client sends (command lines, MAIL/RCPT
paths and parameters per RFC 5321 section 4.1 and RFC 6531, the DATA
stream) and formatting replies with enhanced status codes (RFC 2034).

Everything here is pure: bytes in, values or `SMTPReplyError` out (the
DATA reader writes into the `emailsvc.spool.MessageBuffer` it is given).
The input is hostile, so every function bounds its work by the input length
and fails with a reply rather than an unexpected exception.
"""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from emailsvc.errors import SMTPReplyError
from emailsvc.spool import MessageBuffer

CRLF = b"\r\n"

# RFC 5322 atext, the characters of an unquoted local-part atom.
_ATEXT = r"A-Za-z0-9!#$%&'*+/=?^_`{|}~\-"
_NON_ASCII = "\u0080-\U0010ffff"

_ATOM_UTF8 = re.compile(rf"[{_ATEXT}{_NON_ASCII}]+\Z")
# RFC 5321 sub-domain: Let-dig [Ldh-str]; RFC 6531 adds U-labels.
_LABEL_ASCII = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\Z")
_LABEL_UTF8 = re.compile(
    rf"[A-Za-z0-9{_NON_ASCII}](?:[A-Za-z0-9{_NON_ASCII}-]*[A-Za-z0-9{_NON_ASCII}])?\Z"
)
# Quoted-string content: qtextSMTP or a backslash pair (RFC 5321 4.1.2).
_QCONTENT_UTF8 = re.compile(
    rf'(?:[\x20\x21\x23-\x5b\x5d-\x7e{_NON_ASCII}]|\\[\x20-\x7e])*\Z'
)
_GENERAL_LITERAL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?:[\x21-\x5a\x5e-\x7e]+\Z")
_KEYWORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*\Z")
# esmtp-value: any CHAR but "=", SP and controls; RFC 6531 allows UTF-8 too.
_VALUE = re.compile(rf"[\x21-\x3c\x3e-\x7e{_NON_ASCII}]+\Z")
_BLANKS = re.compile(r"[ \t]+")
_VERB = re.compile(rb"[A-Za-z]{1,32}\Z")
# Bytes never allowed in a command line: controls other than TAB, and DEL.
_BAD_COMMAND_BYTE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")

_ENHANCED = re.compile(r"[245]\.[0-9]{1,3}\.[0-9]{1,3}\Z")
_REPLY_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_SIZE_VALUE = re.compile(r"[0-9]{1,20}\Z")

# Commands of other services: the client is not an SMTP client (a browser
# tricked into posting to port 25, say).  Postfix closes on these too.
FORBIDDEN_COMMANDS = frozenset({"CONNECT", "GET", "POST", "PUT", "HEAD"})
# Known SMTP commands this server does not offer: 502 rather than 500.
NOT_IMPLEMENTED = frozenset({"EXPN", "TURN", "ETRN", "ATRN", "BDAT", "SEND", "SOML", "SAML", "VERB"})

INTERNAL_ERROR = (451, "4.3.0", "Internal error, try again later")

MAX_DOMAIN_OCTETS = 255
MAX_LABEL_OCTETS = 63


def reply(code: int, enhanced: str, text: str) -> SMTPReplyError:
    """Shorthand for the SMTPReplyError that carries one reply."""
    return SMTPReplyError(code, enhanced, text)


def public_reply(err: SMTPReplyError) -> tuple[int, str, str]:
    """(code, enhanced, text) of an SMTPReplyError, made safe for the wire:
    a code outside 400-599 becomes an internal error, an enhanced code that
    does not match the reply's class is replaced, and the text loses CR.
    """
    code = err.code
    if not isinstance(code, int) or not 400 <= code <= 599:
        return INTERNAL_ERROR
    enhanced = err.enhanced if isinstance(err.enhanced, str) else ""
    if not _ENHANCED.match(enhanced) or enhanced[0] != str(code)[0]:
        enhanced = f"{code // 100}.0.0"
    text = err.text if isinstance(err.text, str) else ""
    return code, enhanced, text.replace("\r", "")


def format_reply(code: int, enhanced: str | None, text: str) -> bytes:
    """The wire form of a reply; each line of `text` becomes one reply line,
    each carrying the enhanced code (none for the greeting, EHLO and 354).
    """
    lines = text.split("\n")
    out = []
    for index, line in enumerate(lines):
        separator = "-" if index < len(lines) - 1 else " "
        line = _REPLY_CONTROL.sub(" ", line)
        body = f"{enhanced} {line}" if enhanced and line else enhanced or line
        out.append(f"{code:03d}{separator}{body}".encode("utf-8") + CRLF)
    return b"".join(out)


def split_command(line: bytes) -> tuple[str, bytes]:
    """Split a command line (without its CRLF) into an upper-case verb and
    the argument bytes (leading and trailing blanks removed).

    Raises SMTPReplyError for lines that are not a command at all.
    """
    if b"\r" in line or b"\n" in line:
        raise reply(500, "5.5.2", "Bare CR or LF in command line is not allowed")
    if _BAD_COMMAND_BYTE.search(line):
        raise reply(500, "5.5.2", "Invalid character in command line")
    # Only SP and TAB are left as blanks: every other control was refused.
    parts = line.split(None, 1)
    if not parts:
        raise reply(500, "5.5.2", "Syntax error")
    verb = parts[0]
    if not _VERB.match(verb):
        raise reply(500, "5.5.1", "Command unrecognized")
    args = parts[1].strip(b" \t") if len(parts) > 1 else b""
    return verb.decode("ascii").upper(), args


@dataclass(frozen=True)
class PathCommand:
    """A parsed MAIL FROM or RCPT TO argument."""

    address: str
    """The mailbox as written (source route removed; "" for the null path)."""

    parameters: dict[str, str | None]
    """ESMTP parameters: upper-case keyword -> value (None when absent)."""

    @property
    def is_ascii(self) -> bool:
        return self.address.isascii()


def parse_mail(args: bytes) -> PathCommand:
    """Parse the argument of MAIL ("FROM:<path> [parameters]")."""
    return _parse_path_command(args, b"FROM:", sender=True)


def parse_rcpt(args: bytes) -> PathCommand:
    """Parse the argument of RCPT ("TO:<path> [parameters]")."""
    return _parse_path_command(args, b"TO:", sender=False)


def _parse_path_command(args: bytes, prefix: bytes, sender: bool) -> PathCommand:
    if sender:
        usage = reply(501, "5.5.4", "Syntax: MAIL FROM:<address>")
        bad_address = reply(501, "5.1.7", "Bad sender address syntax")
    else:
        usage = reply(501, "5.5.4", "Syntax: RCPT TO:<address>")
        bad_address = reply(501, "5.1.3", "Bad recipient address syntax")
    if args[: len(prefix)].upper() != prefix:
        raise usage
    # RFC 5321 allows no blank after the colon; many clients send one anyway.
    rest = args[len(prefix):].lstrip(b" \t")
    if not rest.startswith(b"<"):
        raise bad_address if rest else usage
    end = _path_end(rest)
    if end < 0:
        raise bad_address
    try:
        path = rest[1:end].decode("utf-8")
    except UnicodeDecodeError:
        raise bad_address from None
    tail = rest[end + 1:]
    if tail and tail[:1] not in (b" ", b"\t"):
        raise bad_address
    address = _check_path(path, sender)
    if address is None:
        raise bad_address
    return PathCommand(address, parse_parameters(tail))


def _path_end(data: bytes) -> int:
    """Index of the ">" closing the path that starts data[0] == "<", or -1.

    Quoted strings may contain ">"; a backslash quotes the next byte there.
    """
    quoted = False
    i, n = 1, len(data)
    while i < n:
        byte = data[i]
        if quoted:
            if byte == 0x5C:  # backslash: skip the quoted byte
                i += 1
            elif byte == 0x22:
                quoted = False
        elif byte == 0x22:
            quoted = True
        elif byte == 0x3E:
            return i
        elif byte == 0x3C:
            return -1
        i += 1
    return -1


def _check_path(path: str, sender: bool) -> str | None:
    """The mailbox of a path (without "<>"), or None when it is invalid.

    A source route ("@a,@b:") is accepted and dropped, as RFC 5321 section
    4.1.1.3 and appendix C ask.
    """
    if path == "":
        return "" if sender else None
    if path.startswith("@"):
        route, colon, path = path.partition(":")
        if not colon:
            return None
        for hop in route.split(","):
            if not hop.startswith("@") or not is_domain(hop[1:], utf8=True):
                return None
    if not sender and path.lower() == "postmaster":
        return path  # RFC 5321 4.5.1: <Postmaster> without a domain
    if not is_mailbox(path):
        return None
    return path


def is_mailbox(text: str) -> bool:
    """Whether `text` is an RFC 5321 Mailbox (RFC 6531 UTF-8 allowed)."""
    at = text.rfind("@")
    if at <= 0:
        return False
    local, domain = text[:at], text[at + 1:]
    return _is_local_part(local) and (is_domain(domain, utf8=True) or _is_address_literal(domain))


def _is_local_part(local: str) -> bool:
    if local.startswith('"'):
        # The pattern only lets a backslash stand before a character, so
        # '"abc\\"' (closing quote escaped) does not match.
        return len(local) >= 2 and local.endswith('"') and bool(_QCONTENT_UTF8.match(local[1:-1]))
    return all(_ATOM_UTF8.match(atom) for atom in local.split("."))


def is_domain(text: str, utf8: bool = False) -> bool:
    """Whether `text` is an RFC 5321 Domain (with U-labels when `utf8`)."""
    if not text or len(text.encode("utf-8")) > MAX_DOMAIN_OCTETS:
        return False
    label = _LABEL_UTF8 if utf8 else _LABEL_ASCII
    for part in text.split("."):
        if len(part.encode("utf-8")) > MAX_LABEL_OCTETS or not label.match(part):
            return False
    return True


def _is_address_literal(text: str) -> bool:
    if not (text.startswith("[") and text.endswith("]")):
        return False
    inner = text[1:-1]
    if "%" in inner:  # ipaddress accepts IPv6 scope ids; SMTP does not
        return False
    if inner[:5].upper() == "IPV6:":
        try:
            ipaddress.IPv6Address(inner[5:])
        except ValueError:
            return False
        return True
    try:
        ipaddress.IPv4Address(inner)
    except ValueError:
        return bool(_GENERAL_LITERAL.match(inner))
    return True


def parse_parameters(data: bytes) -> dict[str, str | None]:
    """Parse ESMTP parameters ("KEY[=VALUE] ..."), keys upper-cased."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise reply(501, "5.5.4", "Invalid parameter syntax") from None
    parameters: dict[str, str | None] = {}
    text = text.strip(" \t")
    for item in _BLANKS.split(text) if text else ():
        keyword, equals, value = item.partition("=")
        if not _KEYWORD.match(keyword) or (equals and not _VALUE.match(value)):
            raise reply(501, "5.5.4", "Invalid parameter syntax")
        keyword = keyword.upper()
        if keyword in parameters:
            raise reply(501, "5.5.4", "Duplicate parameter")
        parameters[keyword] = value if equals else None
    return parameters


def check_size(value: str | None, limit: int):
    """MAIL SIZE=value (RFC 1870) against the largest message accepted."""
    if value is None or not _SIZE_VALUE.match(value):
        raise reply(501, "5.5.4", "Invalid SIZE value")
    if int(value) > limit:
        raise reply(552, "5.3.4", "Message size exceeds fixed maximum message size")


def check_body(value: str | None):
    """MAIL BODY=value (RFC 6152); BINARYMIME needs CHUNKING, not offered."""
    if value is None or value.upper() not in ("7BIT", "8BITMIME"):
        raise reply(501, "5.5.4", "Invalid BODY value")


def check_no_value(value: str | None):
    """A parameter that is a bare keyword (SMTPUTF8)."""
    if value is not None:
        raise reply(501, "5.5.4", "Parameter takes no value")


class DataReader:
    """Collects one message from the DATA stream.

    Feed it the bytes that follow the DATA command's CRLF; it removes the
    dot-stuffing and stops at the first CRLF "." CRLF, and nowhere else: a
    bare LF or CR never ends a message (SMTP smuggling).  A message that
    contains one is refused at its end, like one over `max_size` octets or
    with a line over `max_line_length` octets (CRLF not counted); once
    refused, nothing more is kept.

    The message goes into `buffer`.  When it cannot be kept or read back, it is refused with 452 4.3.1 and
    the cause is in `storage_error`.  `close()` lets go of the buffer.
    """

    def __init__(self, max_size: int, max_line_length: int, buffer: MessageBuffer):
        self.max_size = max_size
        self.max_line_length = max_line_length
        self.done = False
        self.error: SMTPReplyError | None = None
        self.size = 0
        self._buffer = buffer
        # Whether the next byte fed starts a line.  False only while the
        # tail of an overlong line is skipped.
        self._line_start = True

    def feed(self, data: bytes) -> bytes:
        """Consume complete lines of `data`; return what was not consumed:
        a partial line to feed again with more bytes, or (when `done`) the
        bytes after the end of the message.
        """
        if self._line_start and data.startswith(b".\r\n"):
            self.done = True
            return data[3:]
        end = data.find(b"\r\n.\r\n")
        if end >= 0:
            self._consume(data[: end + 2])
            self.done = True
            return data[end + 5:]
        last = data.rfind(CRLF)
        if last >= 0:
            self._consume(data[: last + 2])
            self._line_start = True
            data = data[last + 2:]
        # `data` is now one unfinished line; a final CR may begin its CRLF.
        if len(data) > self.max_line_length + 1:
            self._fail_line_length()
            self._line_start = False
            return data[-1:] if data.endswith(b"\r") else b""
        return data

    @property
    def storage_error(self) -> OSError | None:
        return self._buffer.error

    def take(self) -> bytes | None:
        """The message received, dot-unstuffed, with CRLF line ends; None
        (and `error` set) when it was refused or cannot be read back."""
        if self.error is not None:
            return None
        message = self._buffer.take()
        if message is None:
            self._storage_failed()
        return message

    def close(self):
        """Let go of the message (a spool file is deleted as it closes)."""
        self._buffer.close()

    def _consume(self, block: bytes):
        """Take `block`: complete lines, each ending in CRLF."""
        if self.error is not None:
            return
        if not self._line_start:
            # The tail of an overlong line: refused already.
            return
        lines = block.count(CRLF)
        if block.count(b"\r") != lines or block.count(b"\n") != lines:
            self._fail(550, "5.5.2", "Bare CR or LF in message data is not allowed")
            return
        if len(block) - 2 > self.max_line_length and max(
            map(len, block.split(CRLF))
        ) > self.max_line_length:
            self._fail_line_length()
            return
        if block.startswith(b"."):
            block = block[1:]
        block = block.replace(b"\r\n.", CRLF)
        self.size += len(block)
        if self.size > self.max_size:
            self._fail(552, "5.3.4", "Message size exceeds fixed maximum message size")
            return
        self._buffer.write(block)
        if self._buffer.error is not None:
            self._storage_failed()

    def _storage_failed(self):
        self._fail(452, "4.3.1", "Insufficient system storage")

    def _fail_line_length(self):
        if self.error is None:
            self._fail(554, "5.5.2", f"Message has a line longer than {self.max_line_length} octets")

    def _fail(self, code: int, enhanced: str, text: str):
        self.error = reply(code, enhanced, text)
        self.close()
