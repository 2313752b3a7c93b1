"""SEARCH and SORT keys (RFC 3501, 4731-free, 5256, 7162 MODSEQ) -> criteria trees.

The tree is the store's (see emailsvc.store.sql.search): sequence sets are
turned into UID ranges with the session's view, dates into UTC seconds.
HEADER on a field the store does not index is answered here, by reading
the header blocks of the mailbox's messages, and replaced by a UID node.
"""
from __future__ import annotations

import calendar
import datetime
import re

from twisted.internet import defer

from emailsvc.imap.message import HEADER_CAP, split_fields
from emailsvc.imap.wire import Atom, Bad, No, parse_number, parse_sequence_set

MAX_DEPTH = 32
CHARSETS = ("US-ASCII", "UTF-8")
_DATE = re.compile(rb"([0-9]{1,2})-([A-Za-z]{3})-([0-9]{4})")
_MONTHS = {name: index for index, name in enumerate(
    (b"JAN", b"FEB", b"MAR", b"APR", b"MAY", b"JUN", b"JUL", b"AUG", b"SEP", b"OCT", b"NOV", b"DEC"), 1)}
_SEQSET = re.compile(rb"[0-9*:,]+")
_FLAG_KEYS = {
    "ANSWERED": ("\\Answered", True), "DELETED": ("\\Deleted", True), "DRAFT": ("\\Draft", True),
    "FLAGGED": ("\\Flagged", True), "SEEN": ("\\Seen", True), "RECENT": ("\\Recent", True),
    "UNANSWERED": ("\\Answered", False), "UNDELETED": ("\\Deleted", False), "UNDRAFT": ("\\Draft", False),
    "UNFLAGGED": ("\\Flagged", False), "UNSEEN": ("\\Seen", False),
}
_HEADER_KEYS = {"BCC": "bcc", "CC": "cc", "FROM": "from", "SUBJECT": "subject", "TO": "to"}
_DAY = 86400
SORT_KEYS = {"ARRIVAL": "arrival", "CC": "cc", "DATE": "date", "FROM": "from", "SIZE": "size",
             "SUBJECT": "subject", "TO": "to"}


def parse_date(token) -> int:
    """An IMAP date (1-Feb-1994) -> UTC seconds at its midnight."""
    match = _DATE.fullmatch(bytes(token)) if isinstance(token, bytes) else None
    if match is None or match.group(2).upper() not in _MONTHS:
        raise Bad("Bad date")
    day, month, year = int(match.group(1)), _MONTHS[match.group(2).upper()], int(match.group(3))
    try:
        datetime.date(year, month, day)
    except ValueError:
        raise Bad("Bad date") from None
    return calendar.timegm((year, month, day, 0, 0, 0, 0, 1, 0))


class SearchParser:
    """Parses the search keys of one command against one mailbox view."""

    def __init__(self, tokens, view, now: float):
        self.tokens = tokens
        self.view = view
        self.now = now
        self.uses_modseq = False

    def parse(self):
        keys = self._keys(self.tokens, 0)
        if not keys:
            raise Bad("Missing search criteria")
        return keys[0] if len(keys) == 1 else ("and", tuple(keys))

    def _keys(self, tokens, depth):
        out = []
        position = 0
        while position < len(tokens):
            node, position = self._key(tokens, position, depth)
            out.append(node)
        return out

    def _key(self, tokens, position, depth):
        if depth > MAX_DEPTH:
            raise Bad("Search criteria nested too deeply")
        token = tokens[position]
        position += 1
        if isinstance(token, list):
            keys = self._keys(token, depth + 1)
            if not keys:
                raise Bad("Empty search list")
            return (keys[0] if len(keys) == 1 else ("and", tuple(keys))), position
        if not isinstance(token, Atom):
            raise Bad("Expected a search key")
        key = bytes(token).upper().decode("ascii", "replace")

        def argument():
            nonlocal position
            if position >= len(tokens) or isinstance(tokens[position], list):
                raise Bad(f"Missing argument to {key}")
            position += 1
            return bytes(tokens[position - 1])

        def text():
            return argument().decode("utf-8", "replace")

        if key == "ALL":
            return ("all",), position
        if key in _FLAG_KEYS:
            name, present = _FLAG_KEYS[key]
            return ("flag", name, present), position
        if key == "NEW":
            return ("and", (("flag", "\\Recent", True), ("flag", "\\Seen", False))), position
        if key == "OLD":
            return ("not", ("flag", "\\Recent", True)), position
        if key in ("KEYWORD", "UNKEYWORD"):
            flag = argument().decode("ascii", "replace")
            if not flag or flag.startswith("\\") and flag.lower() not in ("\\seen", "\\answered", "\\flagged",
                                                                          "\\deleted", "\\draft"):
                raise Bad("Bad keyword")
            return ("flag", flag, key == "KEYWORD"), position
        if key in _HEADER_KEYS:
            return ("header", _HEADER_KEYS[key], text()), position
        if key == "HEADER":
            name = argument().decode("ascii", "replace").strip().lower()
            if not name or any(ord(c) <= 32 or ord(c) >= 127 or c == ":" for c in name):
                raise Bad("Bad header field name")
            return ("header", name, text()), position
        if key in ("BODY", "TEXT"):
            return (key.lower(), text()), position
        if key in ("BEFORE", "ON", "SINCE", "SENTBEFORE", "SENTON", "SENTSINCE"):
            day = parse_date(argument())
            column = "sent_date" if key.startswith("SENT") else "internal_date"
            low, high = {"BEFORE": (None, day), "ON": (day, day + _DAY), "SINCE": (day, None)}[key.replace("SENT", "")]
            return (column, low, high), position
        if key in ("LARGER", "SMALLER"):
            size = parse_number(argument(), "size", 2 ** 63)
            return (("size", size + 1, None) if key == "LARGER" else ("size", None, size)), position
        if key in ("OLDER", "YOUNGER"):
            seconds = parse_number(argument(), "interval")
            edge = int(self.now) - seconds
            return (("internal_date", None, edge + 1) if key == "OLDER" else ("internal_date", edge, None)), position
        if key == "UID":
            return ("uid", self.view.uid_ranges(parse_sequence_set(argument()), True)), position
        if key == "NOT":
            if position >= len(tokens):
                raise Bad("Missing argument to NOT")
            node, position = self._key(tokens, position, depth + 1)
            return ("not", node), position
        if key == "OR":
            if position + 1 >= len(tokens):
                raise Bad("Missing arguments to OR")
            left, position = self._key(tokens, position, depth + 1)
            if position >= len(tokens):
                raise Bad("Missing arguments to OR")
            right, position = self._key(tokens, position, depth + 1)
            return ("or", (left, right)), position
        if key == "MODSEQ":
            first = argument()
            if first.startswith(b'"') or not first.isdigit():
                argument()   # entry name and type: this store has one MODSEQ per message
                first = argument()
            self.uses_modseq = True
            return ("modseq", parse_number(first, "mod-sequence", 2 ** 63)), position
        if _SEQSET.fullmatch(bytes(token)):
            return ("uid", self.view.uid_ranges(parse_sequence_set(bytes(token)), False)), position
        raise Bad(f"Unknown search key {key[:40]}")


def parse_charset(args) -> str | None:
    """An optional CHARSET argument of SEARCH; NO [BADCHARSET] when unsupported."""
    token = args.peek()
    if isinstance(token, Atom) and bytes(token).upper() == b"CHARSET":
        args.next()
        return check_charset(args.astring("charset"))
    return None


def check_charset(raw: bytes) -> str:
    charset = raw.decode("ascii", "replace").upper()
    if charset not in CHARSETS:
        raise No("Unsupported charset", "BADCHARSET (" + " ".join(CHARSETS) + ")")
    return charset


def parse_sort_keys(tokens) -> list[tuple[str, bool]]:
    keys = []
    reverse = False
    if not isinstance(tokens, list) or not tokens:
        raise Bad("Missing sort criteria")
    for token in tokens:
        word = bytes(token).upper().decode("ascii", "replace") if isinstance(token, Atom) else ""
        if word == "REVERSE" and not reverse:
            reverse = True
            continue
        if word not in SORT_KEYS:
            raise Bad("Bad sort criterion")
        keys.append((SORT_KEYS[word], reverse))
        reverse = False
    if reverse:
        raise Bad("REVERSE needs a sort key")
    return keys


@defer.inlineCallbacks
def resolve_headers(node, view, indexed):
    """Replace HEADER nodes on fields the store does not index by UID nodes.

    Reads at most HEADER_CAP bytes of header per message, once per search.
    @return: Deferred firing with the new tree.
    """
    wanted = set()
    _collect(node, indexed, wanted)
    if not wanted:
        return node
    matches = {spec: [] for spec in wanted}
    pairs = view.pairs([(0, len(view.uids))])
    while True:
        # A page of records and body offsets at a time, not the mailbox.
        page = [uid for _, (_, uid) in zip(range(500), pairs)]
        if not page:
            break
        rows = yield view.mail.message_page(view.id, page, ["body"])
        for record, blob_key, fields in rows:
            yield _match_headers(view, record, blob_key, fields, wanted, matches)
    return _replace(node, indexed, matches)


@defer.inlineCallbacks
def _match_headers(view, record, blob_key, fields, wanted, matches):
    """Add the message's UID to the matches of each wanted (field, value) it has."""
    end = (fields.get("body") or {}).get("body_start") or HEADER_CAP
    block = yield view.account.blobs.get(blob_key, 0, min(end, HEADER_CAP))
    parsed = split_fields(block)
    for name, value in wanted:
        for field_name, text in parsed:
            if field_name.decode("ascii", "replace") == name:
                body = text.split(b":", 1)[1].decode("utf-8", "replace") if b":" in text else ""
                if value.casefold() in " ".join(body.split()).casefold():
                    matches[(name, value)].append(record.uid)
                    break


def _collect(node, indexed, wanted):
    kind = node[0]
    if kind == "header" and node[1] not in indexed:
        wanted.add((node[1], node[2]))
    elif kind in ("and", "or"):
        for child in node[1]:
            _collect(child, indexed, wanted)
    elif kind == "not":
        _collect(node[1], indexed, wanted)


def _replace(node, indexed, matches):
    kind = node[0]
    if kind == "header" and node[1] not in indexed:
        return ("uid", tuple((uid, uid) for uid in matches[(node[1], node[2])]))
    if kind in ("and", "or"):
        return (kind, tuple(_replace(child, indexed, matches) for child in node[1]))
    if kind == "not":
        return ("not", _replace(node[1], indexed, matches))
    return node
