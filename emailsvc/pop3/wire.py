"""Stored message bytes -> the body of a POP3 RETR/TOP response.

A message is served with CRLF line ends (RFC 1939 section 3): a bare LF
becomes CRLF, an existing CRLF is kept as it is (Twisted's POP3 turns it
into CR CR LF), and a last line without a line end gets one.  Sizes in
STAT, LIST and RETR count exactly these octets, before dot-stuffing.

Every stage is incremental, so a message is streamed chunk by chunk and a
CRLF or a line-leading "." split across two chunks is handled the same as
inside one.
"""
from __future__ import annotations

import re

CRLF = b"\r\n"
TERMINATOR = b".\r\n"

_BARE_LF = re.compile(rb"(?<!\r)\n")


class LineEnds:
    """Bare LF -> CRLF across chunks; `finish()` ends an unterminated last line."""

    def __init__(self):
        self._last = b""

    def feed(self, chunk: bytes) -> bytes:
        if not chunk:
            return b""
        if self._last == b"\r" and chunk[:1] == b"\n":
            # The CR ending the previous chunk and this LF are one CRLF.
            out = b"\n" + _BARE_LF.sub(CRLF, chunk[1:])
        else:
            out = _BARE_LF.sub(CRLF, chunk)
        self._last = chunk[-1:]
        return out

    def finish(self) -> bytes:
        if self._last in (b"", b"\n"):
            return b""
        if self._last == b"\r":
            return b"\n"
        return CRLF


class TopFilter:
    """Passes the header, the blank line and then `lines` body lines (TOP).

    Works on CRLF-normalised data, where every LF ends a line and a line of
    exactly two octets is the blank line ending the header.
    """

    def __init__(self, lines: int):
        self._remaining = lines
        self._in_header = True
        self._line_length = 0
        self.done = False

    def feed(self, data: bytes) -> bytes:
        if self.done:
            return b""
        position = 0
        while True:
            newline = data.find(b"\n", position)
            if newline < 0:
                self._line_length += len(data) - position
                return data
            length = self._line_length + newline + 1 - position
            self._line_length = 0
            position = newline + 1
            if self._in_header:
                if length == 2:
                    self._in_header = False
                    if self._remaining <= 0:
                        self.done = True
                        return data[:position]
            else:
                self._remaining -= 1
                if self._remaining <= 0:
                    self.done = True
                    return data[:position]


class DotStuffer:
    """Doubles a "." that starts a line (RFC 1939 section 3), across chunks."""

    def __init__(self):
        self._line_start = True

    def feed(self, data: bytes) -> bytes:
        if not data:
            return b""
        out = data.replace(b"\n.", b"\n..")
        if self._line_start and data[:1] == b".":
            out = b"." + out
        self._line_start = data[-1:] == b"\n"
        return out


class MessageEncoder:
    """Stored bytes in, wire bytes out (without the final "." line).

    With `top_lines` only the header and that many body lines are passed;
    `done` then tells when the rest of the message need not be read.
    """

    def __init__(self, top_lines: int | None = None):
        self._line_ends = LineEnds()
        self._top = TopFilter(top_lines) if top_lines is not None else None
        self._stuffer = DotStuffer()

    @property
    def done(self) -> bool:
        return self._top is not None and self._top.done

    def _pass(self, data: bytes) -> bytes:
        if self._top is not None:
            data = self._top.feed(data)
        return self._stuffer.feed(data)

    def feed(self, chunk: bytes) -> bytes:
        return self._pass(self._line_ends.feed(chunk))

    def finish(self) -> bytes:
        return self._pass(self._line_ends.finish())


def normalize(message: bytes) -> bytes:
    """The message as served (CRLF line ends), not dot-stuffed."""
    line_ends = LineEnds()
    return line_ends.feed(message) + line_ends.finish()


def encode(message: bytes, top_lines: int | None = None) -> bytes:
    """The whole multi-line response body for `message`, terminator included."""
    encoder = MessageEncoder(top_lines)
    return encoder.feed(message) + encoder.finish() + TERMINATOR
