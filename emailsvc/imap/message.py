"""Messages and MIME parts (Twisted IMessage, IMessagePart) over the store.

A `Message` is a `MessageRecord` plus, once known, its blob key and the
parsed body tree with byte offsets.  Byte ranges are read from the blob
store on demand; the synchronous Twisted accessors (getHeaders,
getBodyFile) need `load()` first.
"""
from __future__ import annotations

import io
import time

from twisted.internet import defer
from twisted.mail import imap4
from zope.interface import implementer

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
HEADER_CAP = 256 * 1024   # bytes of a header block served to HEADER.FIELDS and SEARCH HEADER


def internal_date(seconds: int) -> str:
    """The IMAP date-time form, in UTC: 17-Jul-1996 02:44:25 +0000."""
    t = time.gmtime(seconds)
    return f"{t.tm_mday:02d}-{_MONTHS[t.tm_mon - 1]}-{t.tm_year:04d} {t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} +0000"


def split_fields(block: bytes) -> list[tuple[bytes, bytes]]:
    """A header block -> [(lower-case name, whole field with its line ends)], folding kept."""
    fields: list[tuple[bytes, bytes]] = []
    for line in block.splitlines(keepends=True):
        if line in (b"\r\n", b"\n"):
            break
        if line[:1] in (b" ", b"\t") and fields:
            name, text = fields[-1]
            fields[-1] = (name, text + line)
            continue
        colon = line.find(b":")
        name = line[:colon].strip().lower() if colon > 0 else b""
        fields.append((name, line))
    return fields


def filter_fields(block: bytes, names, negate: bool) -> bytes:
    """HEADER.FIELDS (names) or HEADER.FIELDS.NOT: the kept fields and a blank line."""
    wanted = {name.lower() for name in names}
    kept = [text for name, text in split_fields(block) if (name in wanted) != negate]
    out = b"".join(line if line.endswith(b"\n") else line + b"\r\n" for line in kept)
    return out + b"\r\n"


@implementer(imap4.IMessagePart)
class MessagePart:
    """One MIME part of a loaded message."""

    def __init__(self, message: "Message", part: dict):
        self.message = message
        self.part = part

    def getHeaders(self, negate, *names):
        block = self.message.raw[self.part["header_start"]:self.part["body_start"]]
        return _headers(block, names, negate)

    def getBodyFile(self):
        return io.BytesIO(self.message.raw[self.part["body_start"]:self.part["end"]])

    def getSize(self):
        return self.part["end"] - self.part["body_start"]

    def isMultipart(self):
        return "parts" in self.part

    def getSubPart(self, part):
        children = self.part.get("parts")
        if children is None or not 0 <= part < len(children):
            raise IndexError(part)
        return MessagePart(self.message, children[part])


@implementer(imap4.IMessage)
class Message:
    """A message of a mailbox: record, and (when fetched) blob key and body tree."""

    def __init__(self, record, blobs, blob_key=None, parsed=None):
        self.record = record
        self.blobs = blobs
        self.blob_key = blob_key
        self.parsed = parsed or {}
        self.raw = None

    @property
    def uid(self) -> int:
        return self.record.uid

    def read(self, start: int = 0, end: int | None = None):
        """Bytes [start, end) of the raw message. @return: Deferred."""
        if self.raw is not None:
            return defer.succeed(self.raw[start:end])
        if end is not None and end <= start:
            return defer.succeed(b"")
        return self.blobs.get(self.blob_key, start, None if end is None else end - start)

    @defer.inlineCallbacks
    def load(self):
        """Read the whole message, for the synchronous accessors. @return: Deferred."""
        if self.raw is None:
            self.raw = yield self.blobs.get(self.blob_key)
        return self

    # IMessage

    def getUID(self):
        return self.record.uid

    def getFlags(self):
        return sorted(self.record.flags)

    def getInternalDate(self):
        return internal_date(self.record.internal_date)

    # IMessagePart, for the whole message

    def _root(self) -> MessagePart:
        body = self.parsed.get("body") or {"header_start": 0, "body_start": 0, "end": len(self.raw or b"")}
        return MessagePart(self, body)

    def getHeaders(self, negate, *names):
        return self._root().getHeaders(negate, *names)

    def getBodyFile(self):
        return self._root().getBodyFile()

    def getSize(self):
        return self.record.size

    def isMultipart(self):
        return self._root().isMultipart()

    def getSubPart(self, part):
        return self._root().getSubPart(part)


def _headers(block: bytes, names, negate) -> dict:
    wanted = {name.lower() if isinstance(name, str) else name.decode("ascii", "replace").lower()
              for name in names}
    out = {}
    for name, text in split_fields(block):
        key = name.decode("ascii", "replace")
        if not names or (key in wanted) != bool(negate):
            value = text.split(b":", 1)[1] if b":" in text else b""
            out.setdefault(key, " ".join(value.decode("utf-8", "replace").split()))
    return out
