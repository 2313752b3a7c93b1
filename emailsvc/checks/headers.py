"""Reading the header section of a raw message without parsing the body."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class HeaderField:
    """One header field as received: lower-case name, the raw bytes of all its
    lines (with their line ends), and its byte range in the message."""

    name: str
    raw: bytes
    start: int
    end: int

    @property
    def value(self) -> bytes:
        """The unfolded value, without the name, colon and line ends."""
        _, _, value = self.raw.partition(b":")
        return value.replace(b"\r\n", b"").replace(b"\n", b"").strip()

    def text(self) -> str:
        """The unfolded value as text (UTF-8, bad bytes replaced)."""
        return self.value.decode("utf-8", "replace")


def header_fields(message: bytes) -> list[HeaderField]:
    """The header fields of `message`, in order (CRLF or LF line ends)."""
    fields: list[HeaderField] = []
    position = 0
    start = None
    length = len(message)
    while position < length:
        end = message.find(b"\n", position)
        end = length if end < 0 else end + 1
        line = message[position:end]
        if line in (b"\r\n", b"\n"):
            break
        if line[:1] in (b" ", b"\t") and start is not None:
            position = end
            continue
        if start is not None:
            fields.append(_field(message, start, position))
        start = position
        position = end
    if start is not None:
        fields.append(_field(message, start, position))
    return fields


def _field(message: bytes, start: int, end: int) -> HeaderField:
    raw = message[start:end]
    name, colon, _ = raw.partition(b":")
    name = name.strip().decode("ascii", "replace").lower() if colon else ""
    return HeaderField(name, raw, start, end)


def remove_fields(message: bytes, indexes) -> bytes:
    """`message` without the header fields at the given 0-based positions."""
    drop = set(indexes)
    if not drop:
        return message
    pieces = []
    position = 0
    for index, field in enumerate(header_fields(message)):
        if index in drop:
            pieces.append(message[position:field.start])
            position = field.end
    pieces.append(message[position:])
    return b"".join(pieces)


def prepend(message: bytes, headers) -> bytes:
    """`message` with (name, value) header fields added on top, in order."""
    block = b"".join(f"{name}: {value}\r\n".encode("utf-8") for name, value in headers)
    return block + message
