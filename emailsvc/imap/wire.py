"""IMAP syntax: command tokens in, response strings out.

The protocol frames a command (lines and literals) and hands it here as
one byte string in which every literal is replaced by a NUL byte (never
valid in a command line), plus the list of literal values.  `tokenize()`
turns that into atoms, strings and nested lists; `Args` walks the tokens
for one command with typed accessors that raise `Bad`.
"""
from __future__ import annotations

import functools
import re

from emailsvc.imap import utf7

LITERAL_MARK = b"\x00"
MAX_NESTING = 32
MAX_TOKENS = 100_000
_ATOM_STOP = frozenset(b' ()"\x00')
_QUOTED_SPECIALS = frozenset(b'"\\')
_NOT_TAG = frozenset(b'(){%*"\\+')   # a tag is ASTRING-CHARs except "+"
_NUMBER = re.compile(rb"[0-9]{1,10}")
_SEQ_ITEM = re.compile(rb"(\*|[0-9]{1,10})(?::(\*|[0-9]{1,10}))?")
MAX_NUMBER = 0xFFFFFFFF
_NOT_QUOTABLE = re.compile(rb"[^\x20-\x7e]")


class IMAPError(Exception):
    """A tagged non-OK reply: `status` "NO" or "BAD", optional response `code`."""

    status = b"NO"

    def __init__(self, text: str, code: str | None = None):
        super().__init__(text)
        self.text = text
        self.code = code


class No(IMAPError):
    status = b"NO"


class Bad(IMAPError):
    status = b"BAD"


class AlreadyAnswered(IMAPError):
    """The command wrote its own tagged reply (STARTTLS)."""

    def __init__(self):
        super().__init__("")


class Atom(bytes):
    """An unquoted token (atom, number, sequence set, flag, NIL, BODY[...])."""


class String(bytes):
    """A quoted string or a literal."""


def tokenize(text: bytes, literals: list[bytes]) -> list:
    """Command bytes (literals marked by NUL) -> nested list of Atom/String/list."""
    top: list = []
    stack = [top]
    position = 0
    literal = 0
    count = 0
    length = len(text)
    while position < length:
        byte = text[position]
        count += 1
        if count > MAX_TOKENS:
            raise Bad("Too many tokens")
        if byte == 0x20:
            position += 1
        elif byte == 0x28:  # (
            if len(stack) > MAX_NESTING:
                raise Bad("Too deeply nested")
            nested: list = []
            stack[-1].append(nested)
            stack.append(nested)
            position += 1
        elif byte == 0x29:  # )
            if len(stack) == 1:
                raise Bad("Unbalanced parenthesis")
            stack.pop()
            position += 1
        elif byte == 0x22:  # "
            value, position = _quoted(text, position + 1)
            stack[-1].append(String(value))
        elif byte == 0x00:
            if literal >= len(literals):
                raise Bad("Literal missing")
            stack[-1].append(String(literals[literal]))
            literal += 1
            position += 1
        elif byte < 0x20 or byte == 0x7F:
            raise Bad("Control character in command")
        else:
            start = position
            while position < length and text[position] not in _ATOM_STOP:
                if text[position] == 0x5B:  # [ ... ] may hold spaces and parentheses
                    close = text.find(b"]", position)
                    if close < 0 or LITERAL_MARK in text[position:close]:
                        raise Bad("Unterminated [")
                    position = close
                elif text[position] < 0x20 or text[position] == 0x7F:
                    raise Bad("Control character in command")
                position += 1
            stack[-1].append(Atom(text[start:position]))
    if len(stack) != 1:
        raise Bad("Unbalanced parenthesis")
    return top


def _quoted(text: bytes, position: int) -> tuple[bytes, int]:
    out = bytearray()
    length = len(text)
    while position < length:
        byte = text[position]
        if byte == 0x22:
            return bytes(out), position + 1
        if byte == 0x5C:
            if position + 1 >= length or text[position + 1] not in _QUOTED_SPECIALS:
                raise Bad("Bad escape in quoted string")
            out.append(text[position + 1])
            position += 2
            continue
        if byte in (0x00, 0x0A, 0x0D):
            raise Bad("Bad character in quoted string")
        out.append(byte)
        position += 1
    raise Bad("Unterminated quoted string")


def valid_tag(tag) -> bool:
    return (isinstance(tag, Atom) and 0 < len(tag) <= 64
            and all(0x21 <= byte <= 0x7E and byte not in _NOT_TAG for byte in tag))


class Args:
    """The arguments of one command, consumed front to back."""

    def __init__(self, tokens: list):
        self.tokens = tokens
        self.index = 0

    def more(self) -> bool:
        return self.index < len(self.tokens)

    def peek(self):
        return self.tokens[self.index] if self.more() else None

    def next(self, what="argument"):
        if not self.more():
            raise Bad(f"Missing {what}")
        token = self.tokens[self.index]
        self.index += 1
        return token

    def end(self):
        if self.more():
            raise Bad("Too many arguments")

    def atom(self, what="argument") -> bytes:
        token = self.next(what)
        if not isinstance(token, Atom):
            raise Bad(f"Expected {what}")
        return bytes(token)

    def keyword(self, what="keyword") -> str:
        return self.atom(what).decode("ascii", "replace").upper()

    def astring(self, what="string") -> bytes:
        token = self.next(what)
        if isinstance(token, list):
            raise Bad(f"Expected {what}")
        return bytes(token)

    def text(self, what="string") -> str:
        return self.astring(what).decode("utf-8", "replace")

    def list(self, what="list") -> list:
        token = self.next(what)
        if not isinstance(token, list):
            raise Bad(f"Expected a parenthesized {what}")
        return token

    def number(self, what="number") -> int:
        return parse_number(self.atom(what), what)

    def mailbox(self) -> str:
        return decode_mailbox(self.astring("mailbox name"))

    def sequence_set(self) -> list[tuple[int | None, int | None]]:
        return parse_sequence_set(self.atom("sequence set"))


def parse_number(raw: bytes, what="number", maximum=MAX_NUMBER) -> int:
    if _NUMBER.fullmatch(raw) is None or int(raw) > maximum:
        raise Bad(f"Bad {what}")
    return int(raw)


def decode_mailbox(raw: bytes) -> str:
    """A mailbox name from the wire (modified UTF-7) as text; INBOX any case."""
    try:
        name = utf7.decode(raw)
    except ValueError as error:
        raise Bad(f"Invalid mailbox name: {error}") from None
    if name.upper() == "INBOX":
        return "INBOX"
    if name[:6].upper() == "INBOX/":
        return "INBOX" + name[5:]
    return name


def parse_sequence_set(raw: bytes) -> list[tuple[int | None, int | None]]:
    """'1,3:5,7:*' -> [(1, 1), (3, 5), (7, None)]; None stands for '*'."""
    ranges = []
    for item in raw.split(b","):
        match = _SEQ_ITEM.fullmatch(item)
        if match is None:
            raise Bad("Invalid sequence set")
        low, high = match.group(1), match.group(2)
        values = []
        for value in (low, high if high is not None else low):
            if value == b"*":
                values.append(None)
            else:
                number = int(value)
                if number == 0 or number > MAX_NUMBER:
                    raise Bad("Invalid sequence set")
                values.append(number)
        ranges.append((values[0], values[1]))
    return ranges


def format_set(numbers) -> bytes:
    """Sorted unique numbers as a compact set: 1:3,7."""
    return format_pairs_set(sorted(set(numbers)))


def format_pairs_set(numbers) -> bytes:
    """Numbers in the given order (for COPYUID): runs of +1 collapse."""
    out = []
    numbers = list(numbers)
    index = 0
    while index < len(numbers):
        start = end = numbers[index]
        while index + 1 < len(numbers) and numbers[index + 1] == end + 1:
            index += 1
            end = numbers[index]
        out.append(b"%d" % start if start == end else b"%d:%d" % (start, end))
        index += 1
    return b",".join(out)


class Raw(bytes):
    """Already formatted response text (an atom, a flag, a number)."""


def string(value) -> bytes:
    """A string for a response: quoted when it is short 7-bit text, else a literal."""
    if isinstance(value, str):
        # For ASCII text, isprintable() is the test below, without encoding first.
        if len(value) < 1024 and value.isascii() and value.isprintable():
            return b'"' + value.replace("\\", "\\\\").replace('"', '\\"').encode("ascii") + b'"'
        value = value.encode("utf-8", "replace")
    if len(value) < 1024 and _NOT_QUOTABLE.search(value) is None:
        return b'"' + value.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
    return b"{%d}\r\n" % len(value) + value


def nstring(value) -> bytes:
    return b"NIL" if value is None else string(value)


def astring(value) -> bytes:
    """An atom when possible (mailbox names, flags), else a string."""
    if isinstance(value, str):
        value = value.encode("utf-8", "replace")
    if value and all(0x21 <= byte <= 0x7E and byte not in b'(){%*"\\]' for byte in value):
        return value
    return string(value)


def mailbox_name(name: str) -> bytes:
    return astring(utf7.encode(name))


def render(value) -> bytes:
    """None -> NIL, int -> number, Raw -> as is, str/bytes -> string, list -> (...)."""
    if value is None:
        return b"NIL"
    if isinstance(value, Raw):
        return bytes(value)
    if isinstance(value, bool):
        raise TypeError("no booleans in IMAP")
    if isinstance(value, int):
        return b"%d" % value
    if isinstance(value, (str, bytes)):
        return string(value)
    return b"(" + b" ".join(render(item) for item in value) + b")"


@functools.lru_cache(maxsize=4096)
def flag_list(flags: frozenset) -> bytes:
    """A flag set as a parenthesized list (cached: messages share few distinct sets)."""
    return b"(" + b" ".join(sorted(flag.encode("ascii", "replace") for flag in flags)) + b")"
