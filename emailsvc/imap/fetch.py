"""FETCH: attribute parsing and the rendering of one message's data items.

ENVELOPE and BODYSTRUCTURE come from the parsed summary in SQL; body
sections are ranged blob reads at the offsets found at delivery, so a
`BODY[1.2]<0.100>` reads 100 bytes, not the message.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from twisted.internet import defer

from emailsvc.imap.message import HEADER_CAP, filter_fields, internal_date
from emailsvc.imap.wire import Atom, Bad, Raw, String, flag_list, nstring, parse_number, render, string, tokenize

MACROS = {
    "ALL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"),
    "FAST": ("FLAGS", "INTERNALDATE", "RFC822.SIZE"),
    "FULL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY"),
}
SIMPLE = frozenset(("FLAGS", "UID", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODYSTRUCTURE", "BODY",
                    "RFC822", "RFC822.HEADER", "RFC822.TEXT", "MODSEQ"))
_BODY_ITEM = re.compile(rb"(BODY|BODY\.PEEK)\[([^\]]*)\](?:<([0-9]{1,10})\.([0-9]{1,10})>)?", re.I)
_KINDS = ("", "HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT", "TEXT", "MIME")


@dataclass(frozen=True)
class Section:
    path: tuple[int, ...] = ()
    kind: str = ""
    fields: tuple[bytes, ...] = ()


@dataclass(frozen=True)
class Item:
    """One requested data item; `label` is its name in the response."""

    name: str
    label: bytes
    section: Section | None = None
    partial: tuple[int, int] | None = None
    peek: bool = True

    @property
    def sets_seen(self) -> bool:
        return not self.peek

    @property
    def needs(self) -> set[str]:
        """Parsed summary fields this item needs ("blob" for the message bytes)."""
        if self.name == "ENVELOPE":
            return {"envelope"}
        if self.name in ("BODYSTRUCTURE", "BODY"):
            return {"body"}
        if self.section is not None or self.name.startswith("RFC822") and self.name != "RFC822.SIZE":
            return {"body", "blob"}
        return set()


def parse_items(token) -> list[Item]:
    """The fetch attribute argument (a macro, one item or a list) -> Items."""
    if isinstance(token, list):
        if not token:
            raise Bad("Empty fetch attribute list")
        atoms = token
    elif isinstance(token, Atom):
        upper = bytes(token).upper().decode("ascii", "replace")
        if upper in MACROS:
            return [parse_item(Atom(name.encode())) for name in MACROS[upper]]
        atoms = [token]
    else:
        raise Bad("Bad fetch attribute")
    items = [parse_item(atom) for atom in atoms]
    if len(items) > 200:
        raise Bad("Too many fetch attributes")
    return items


def parse_item(token) -> Item:
    if not isinstance(token, Atom):
        raise Bad("Bad fetch attribute")
    upper = bytes(token).upper()
    name = upper.decode("ascii", "replace")
    if name in SIMPLE:
        if name == "RFC822":
            return Item("RFC822", b"RFC822", Section(), peek=False)
        if name == "RFC822.HEADER":
            return Item("RFC822.HEADER", b"RFC822.HEADER", Section(kind="HEADER"))
        if name == "RFC822.TEXT":
            return Item("RFC822.TEXT", b"RFC822.TEXT", Section(kind="TEXT"), peek=False)
        return Item(name, upper)
    match = _BODY_ITEM.fullmatch(bytes(token))
    if match is None:
        raise Bad("Unknown fetch attribute")
    section, label = parse_section(match.group(2))
    partial = None
    if match.group(3) is not None:
        start = parse_number(match.group(3), "partial offset")
        length = parse_number(match.group(4), "partial length")
        if length == 0:
            raise Bad("Partial length must not be zero")
        partial = (start, length)
        label += b"<%d>" % start
    peek = match.group(1).upper() == b"BODY.PEEK"
    return Item("BODY[]", b"BODY[" + label, section, partial, peek)


def parse_section(spec: bytes) -> tuple[Section, bytes]:
    """'1.2.HEADER.FIELDS (From To)' -> (Section, 'canonical spec]')."""
    head, _, tail = spec.partition(b" ")
    parts = head.split(b".") if head else []
    path = []
    while parts and parts[0].isdigit():
        number = parse_number(parts.pop(0), "section part")
        if number == 0:
            raise Bad("Section parts start at 1")
        path.append(number)
    kind = b".".join(parts).upper().decode("ascii", "replace")
    if kind not in _KINDS or (kind == "MIME" and not path):
        raise Bad("Bad section")
    fields: tuple[bytes, ...] = ()
    if kind.startswith("HEADER.FIELDS"):
        tokens = tokenize(tail, [])
        if len(tokens) != 1 or not isinstance(tokens[0], list) or not tokens[0]:
            raise Bad("HEADER.FIELDS needs a list of field names")
        if any(not isinstance(name, (Atom, String)) or not name for name in tokens[0]):
            raise Bad("Bad header field name")
        fields = tuple(bytes(name).upper() for name in tokens[0])
    elif tail:
        raise Bad("Bad section")
    label = ".".join([str(n) for n in path] + ([kind] if kind else [])).encode()
    if fields:
        label += b" (" + b" ".join(fields) + b")"
    return Section(tuple(path), kind, fields), label + b"]"


# -- structure ---------------------------------------------------------------

def _params(params, text_default=False):
    if not params:
        return [Raw(b'"charset"'), Raw(b'"us-ascii"')] if text_default else None
    out = []
    for name, value in params:
        out.extend((name, value))
    return out


def _language(value):
    if not value:
        return None
    return value[0] if len(value) == 1 else list(value)


def _disposition(value):
    if not value:
        return None
    return [value[0], _params(value[1])]


def envelope(env) -> bytes:
    if not env or len(env) != 10:
        env = [None] * 10
    date, subject, *addresses, in_reply_to, message_id = env
    fields = [nstring(date), nstring(subject)]
    fields += [_address_list(value) for value in addresses]
    fields += [nstring(in_reply_to), nstring(message_id)]
    return b"(" + b" ".join(fields) + b")"


def _address_list(addresses) -> bytes:
    if not addresses:
        return b"NIL"
    rendered = [b"(" + b" ".join([nstring(part) for part in address]) + b")" for address in addresses]
    return b"(" + b"".join(rendered) + b")"


def structure(part: dict, extended: bool) -> bytes:
    """BODYSTRUCTURE (extended) or BODY of a parsed part."""
    if "parts" in part:
        out = b"".join(structure(child, extended) for child in part["parts"])
        out += b" " + string(part["subtype"])
        if extended:
            out += b" " + b" ".join(render(value) for value in (
                _params(part["params"]), _disposition(part["disposition"]),
                _language(part["language"]), part["location"]))
        return b"(" + out + b")"
    is_text = part["type"] == "text"
    values = [part["type"], part["subtype"], _params(part["params"], is_text), part["id"],
              part["description"], part["encoding"].upper(), part["end"] - part["body_start"]]
    out = b" ".join(render(value) for value in values)
    if is_text:
        out += b" %d" % (part.get("lines") or 0)
    elif "message" in part:
        inner = part["message"]
        out += b" " + envelope(inner["envelope"]) + b" " + structure(inner["body"], extended)
        out += b" %d" % (part.get("lines") or 0)
    if extended:
        out += b" " + b" ".join(render(value) for value in (
            part["md5"], _disposition(part["disposition"]), _language(part["language"]), part["location"]))
    return b"(" + out + b")"


# -- sections ------------------------------------------------------------------

def find_part(body: dict, path) -> dict | None:
    """The part a section path names, or None when there is no such part."""
    node = body
    for index, number in enumerate(path):
        if index and "message" in node:
            node = node["message"]["body"]
        if "parts" in node:
            if number > len(node["parts"]):
                return None
            node = node["parts"][number - 1]
        elif number != 1:
            return None
    return node


def section_range(body: dict, section: Section, size: int):
    """(start, end) of a section in the raw message, or None when it does not exist."""
    if not section.path:
        target = body
        if section.kind == "":
            return 0, size
    else:
        part = find_part(body, section.path)
        if part is None:
            return None
        if section.kind == "":
            return part["body_start"], part["end"]
        if section.kind == "MIME":
            return part["header_start"], part["body_start"]
        if "message" not in part:
            return None
        target = part["message"]["body"]
    if section.kind == "TEXT":
        return target["body_start"], target["end"]
    return target["header_start"], target["body_start"]


async def read_sections(message, items) -> dict:
    """{item: its bytes or None} for the items that are body sections (blob reads)."""
    return {item: await section_data(message, item) for item in items if item.section is not None}


@defer.inlineCallbacks
def section_data(message, item: Item):
    """The bytes of a body section (partial applied), or None for NIL."""
    section = item.section
    body = message.parsed.get("body")
    if body is None:
        body = {"header_start": 0, "body_start": 0, "end": message.record.size}
    found = section_range(body, section, message.record.size)
    if found is None:
        return None
    start, end = found
    if section.kind.startswith("HEADER.FIELDS"):
        block = yield message.read(start, min(end, start + HEADER_CAP))
        data = filter_fields(block, section.fields, section.kind.endswith(".NOT"))
        if item.partial is not None:
            data = data[item.partial[0]:item.partial[0] + item.partial[1]]
        return data
    if item.partial is not None:
        start, end = min(end, start + item.partial[0]), min(end, start + item.partial[0] + item.partial[1])
    if end <= start:
        return b""
    data = yield message.read(start, end)
    return data


class Renderer:
    """The `* n FETCH (...)` responses of one FETCH command.

    What is the same for every message is worked out once, not per message:
    the items the command adds to those requested (UID first for UID FETCH,
    MODSEQ with CONDSTORE), whether FLAGS is requested already (else it is
    added for a message the fetch set \\Seen) and whether the responses
    carry literals, that is, read message bytes.
    """

    def __init__(self, items, *, uid_first: bool, modseq: bool):
        names = {item.name for item in items}
        self.items = items
        self.uid_first = uid_first and "UID" not in names
        self.modseq = modseq and "MODSEQ" not in names
        self.flags_listed = "FLAGS" in names
        self.literals = any(item.section is not None for item in items)

    def line(self, record, parsed: dict, seq: int, *, flags_changed=False, sections=None) -> bytes:
        """One message's response, CRLF included.

        Synchronous: body sections come read already, in `sections` (see `read_sections`).
        """
        fields = [b"UID %d" % record.uid] if self.uid_first else []
        fields += [_field(item, record, parsed, sections) for item in self.items]
        if flags_changed and not self.flags_listed:
            fields.append(b"FLAGS " + flag_list(record.flags))
        if self.modseq:
            fields.append(b"MODSEQ (%d)" % record.modseq)
        return _response(seq, fields) if self.literals else b"* %d FETCH (%b)\r\n" % (seq, b" ".join(fields))

    def expunged_line(self, seq: int, uid: int) -> bytes:
        """The response for a message another session expunged and this one
        has not been told of yet (RFC 2180 4.1.3): the UID it knows, \\Deleted,
        NIL for what was in the message."""
        fields = [b"UID %d" % uid] if self.uid_first else []
        fields += [_expunged_field(item, uid) for item in self.items]
        return b"* %d FETCH (%b)\r\n" % (seq, b" ".join(fields))


def _field(item: Item, record, parsed: dict, sections):
    """One data item of a message: bytes, or a literal as (prefix, data)."""
    name = item.name
    if name == "FLAGS":
        return b"FLAGS " + flag_list(record.flags)
    if name == "UID":
        return b"UID %d" % record.uid
    if name == "INTERNALDATE":
        return b'INTERNALDATE "' + internal_date(record.internal_date).encode() + b'"'
    if name == "RFC822.SIZE":
        return b"RFC822.SIZE %d" % record.size
    if name == "MODSEQ":
        return b"MODSEQ (%d)" % record.modseq
    if name == "ENVELOPE":
        return b"ENVELOPE " + envelope(parsed.get("envelope"))
    if name in ("BODYSTRUCTURE", "BODY"):
        body = parsed.get("body")
        if body is None:
            body = {"type": "text", "subtype": "plain", "params": [], "id": None, "description": None,
                    "encoding": "7bit", "header_start": 0, "body_start": 0, "end": record.size,
                    "lines": 0, "md5": None, "disposition": None, "language": None, "location": None}
        return item.label + b" " + structure(body, name == "BODYSTRUCTURE")
    data = sections[item]
    if data is None:
        return item.label + b" NIL"
    return item.label + b" {%d}\r\n" % len(data), data


def _expunged_field(item: Item, uid: int) -> bytes:
    name = item.name
    if name == "FLAGS":
        return b"FLAGS (\\Deleted)"
    if name == "UID":
        return b"UID %d" % uid
    if name == "INTERNALDATE":
        return b'INTERNALDATE "01-Jan-1970 00:00:00 +0000"'
    if name == "RFC822.SIZE":
        return b"RFC822.SIZE 0"
    if name == "MODSEQ":
        return b"MODSEQ (1)"
    if name == "ENVELOPE":
        return b"ENVELOPE " + envelope(None)
    if name in ("BODYSTRUCTURE", "BODY"):
        return item.label + b' ("text" "plain" NIL NIL NIL "7bit" 0 0)'
    return item.label + b" NIL"


def _response(seq: int, fields) -> bytes:
    """`* seq FETCH (fields)` and CRLF, joined in one piece: the data of a
    literal field (a message can be megabytes) is copied once, not once per
    concatenation."""
    parts = [b"* %d FETCH (" % seq]
    for field in fields:
        if isinstance(field, tuple):
            parts += field
        else:
            parts.append(field)
        parts.append(b" ")
    parts[-1] = b")\r\n"
    return b"".join(parts)
