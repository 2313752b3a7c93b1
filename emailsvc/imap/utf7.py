"""Modified UTF-7 for IMAP mailbox names (RFC 3501 section 5.1.3).

Printable US-ASCII stands for itself ("&" is written "&-"); anything else
is "&", UTF-16BE in base64 with "," for "/" and no padding, then "-".
Decoding is strict: a name a conforming client could not have produced
(8-bit bytes, printable ASCII inside a shift, unterminated or adjacent
shifts, non-zero padding bits, lone surrogates) raises ValueError.
"""
from __future__ import annotations

import base64
import binascii

_B64 = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,")


def encode(name: str) -> bytes:
    """A mailbox name as modified UTF-7 bytes."""
    out = bytearray()
    pending: list[str] = []

    def flush():
        if pending:
            raw = "".join(pending).encode("utf-16-be", "surrogatepass")
            out.extend(b"&" + base64.b64encode(raw).rstrip(b"=").replace(b"/", b",") + b"-")
            pending.clear()

    for char in name:
        if 0x20 <= ord(char) <= 0x7E:
            flush()
            out.extend(b"&-" if char == "&" else char.encode("ascii"))
        else:
            pending.append(char)
    flush()
    return bytes(out)


def decode(raw: bytes | str) -> str:
    """A modified UTF-7 name (bytes or str) as text; ValueError when invalid."""
    if isinstance(raw, str):
        try:
            raw = raw.encode("ascii")
        except UnicodeEncodeError:
            raise ValueError("mailbox name is not 7-bit modified UTF-7") from None
    out: list[str] = []
    position = 0
    length = len(raw)
    last_shift_end = -1
    while position < length:
        byte = raw[position]
        if byte < 0x20 or byte > 0x7E:
            raise ValueError("mailbox name has a byte outside printable US-ASCII")
        if byte != 0x26:  # "&"
            out.append(chr(byte))
            position += 1
            continue
        end = raw.find(b"-", position + 1)
        if end < 0:
            raise ValueError("unterminated &-shift in mailbox name")
        chunk = raw[position + 1:end]
        if not chunk:
            out.append("&")
        else:
            if last_shift_end == position:
                raise ValueError("adjacent &-shifts in mailbox name")
            out.append(_decode_chunk(chunk))
            last_shift_end = end + 1
        position = end + 1
    return "".join(out)


def _decode_chunk(chunk: bytes) -> str:
    if any(byte not in _B64 for byte in chunk):
        raise ValueError("bad base64 in mailbox name")
    bits = len(chunk) * 6
    if len(chunk) % 4 == 1 or bits % 16 >= 6:
        raise ValueError("bad base64 length in mailbox name")
    padded = chunk.replace(b",", b"/") + b"=" * (-len(chunk) % 4)
    try:
        data = base64.b64decode(padded, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("bad base64 in mailbox name") from None
    # Re-encoding must give the same text: this rejects non-zero padding bits.
    if base64.b64encode(data).rstrip(b"=").replace(b"/", b",") != chunk:
        raise ValueError("non-canonical base64 in mailbox name")
    if len(data) % 2:
        raise ValueError("odd UTF-16 length in mailbox name")
    try:
        text = data.decode("utf-16-be")
    except UnicodeDecodeError:
        raise ValueError("bad UTF-16 in mailbox name") from None
    if any(0x20 <= ord(char) <= 0x7E for char in text):
        raise ValueError("printable ASCII encoded in an &-shift")
    return text
