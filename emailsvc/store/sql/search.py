"""Search criteria trees compiled to SQL over messages and parsed contents.

A criteria tree is made of tuples, the same for every backend:

    ("all",)                          every message
    ("and", (node, ...))  ("or", (node, ...))  ("not", node)
    ("flag", name, present)           "\\Seen" ... or a keyword, set or not
    ("uid", ((low, high), ...))       inclusive UID ranges; high None: no bound
    ("internal_date", low, high)      low <= internal date < high (seconds; None: open)
    ("sent_date", low, high)          the same on the Date field (internal date if none)
    ("size", low, high)               low <= size < high (None: open)
    ("header", name, value)           a field in INDEXED_HEADERS whose decoded value
                                      contains `value` (case-insensitive); "" = present
    ("text", value)  ("body", value)  the extracted search text contains `value`
    ("modseq", n)                     MODSEQ >= n

Sort keys are (name, reverse) pairs, name one of SORT_KEYS.  Everything is
compiled into one statement with bound parameters; nothing is evaluated in
Python except `imap_fold`, the case folding registered on the connection.

TEXT and BODY needles of 3 or more characters use the FTS5 trigram index
in the search file (`search.contents_text`, see emailsvc.store.sql.sqlite),
which the indexer (emailsvc.store.sql.indexer) fills behind delivery.  A
content whose id is still in `search_pending` (inserted or deleted since
it was last indexed) is not trusted to the index: its text is scanned, as
it is for shorter needles, so results never lag behind delivery.  (Both
fold case, the index one character at a time and the scan with full case
folding: "STRASSE" finds "Straße" only while scanned.)  `begin_search`
orders a reader's snapshots so that no content is missed in between.
"""
from __future__ import annotations

import json

from emailsvc.errors import InvalidName

# The decoded header fields store/parse.py keeps in contents.parsed.
INDEXED_HEADERS = frozenset((
    "from", "to", "cc", "bcc", "reply-to", "sender", "subject", "date",
    "message-id", "in-reply-to", "references", "list-id", "content-type",
))
SORT_KEYS = frozenset(("arrival", "cc", "date", "from", "size", "subject", "to"))
MAX_DEPTH = 64
_SYSTEM = {"\\seen": 1, "\\answered": 2, "\\flagged": 4, "\\deleted": 8, "\\draft": 16}
_FTS_MIN = 3          # the trigram index answers needles of 3 or more characters
_INLINE_RANGES = 16   # more UID ranges than this go in as one JSON parameter
_SENT = "coalesce(json_extract(c.parsed, '$.date'), m.internal_date)"
_SORT_SQL = {
    "arrival": "m.internal_date",
    "date": _SENT,
    "size": "m.size",
    "subject": "coalesce(json_extract(c.parsed, '$.sort_subject'), '') COLLATE NOCASE",
    "from": "coalesce(json_extract(c.parsed, '$.from_addr'), '') COLLATE NOCASE",
    "to": "coalesce(json_extract(c.parsed, '$.to_addr'), '') COLLATE NOCASE",
    "cc": "coalesce(json_extract(c.parsed, '$.cc_addr'), '') COLLATE NOCASE",
}


def fold(text):
    """Case folding for substring matches (registered as imap_fold on every
    connection, by emailsvc.store.sql.sqlite)."""
    return text.casefold() if isinstance(text, str) else text


def begin_search(connection):
    """Ready a reader's connection for a compiled search: the first thing in
    its read transaction, before any statement that reads the search file.

    The indexer commits a batch to the search file, then deletes its rows
    from `search_pending` in the main file.  A reader thus takes its main
    snapshot no later than its search snapshot: a content id no longer
    pending in the first is indexed in the second.  (SQLite happens to open
    a statement's databases main first; reading main in a statement of its
    own does not depend on that.)
    """
    connection.execute("SELECT 1 FROM main.search_pending LIMIT 1").fetchall()


class _Compiler:
    def __init__(self):
        self.params: list = []
        self.content = False

    def compile(self, node, depth=0) -> str:
        if depth > MAX_DEPTH:
            raise InvalidName("search criteria nested too deeply")
        if not isinstance(node, tuple) or not node:
            raise InvalidName(f"bad search criterion: {node!r}")
        kind = node[0]
        method = getattr(self, "_" + kind, None) if isinstance(kind, str) else None
        if method is None:
            raise InvalidName(f"unknown search criterion: {kind!r}")
        return method(depth, *node[1:])

    def _all(self, depth):
        return "1"

    def _and(self, depth, nodes):
        parts = [self.compile(node, depth + 1) for node in nodes]
        return "(" + " AND ".join(parts) + ")" if parts else "1"

    def _or(self, depth, nodes):
        parts = [self.compile(node, depth + 1) for node in nodes]
        return "(" + " OR ".join(parts) + ")" if parts else "0"

    def _not(self, depth, node):
        return f"(NOT {self.compile(node, depth + 1)})"

    def _flag(self, depth, name, present):
        lower = name.lower()
        if lower in _SYSTEM:
            return f"(m.flags & {_SYSTEM[lower]} {'!=' if present else '='} 0)"
        if lower == "\\recent":
            # This store keeps no \Recent: no message ever has it.
            return "0" if present else "1"
        self.params.append(f" {lower} ")
        return f"(instr(' ' || lower(m.keywords) || ' ', ?) {'>' if present else '='} 0)"

    def _uid(self, depth, ranges):
        ranges = [(int(low), None if high is None else int(high)) for low, high in ranges]
        if not ranges:
            return "0"
        if len(ranges) <= _INLINE_RANGES:
            parts = []
            for low, high in ranges:
                if high is None:
                    parts.append("m.uid >= ?")
                    self.params.append(low)
                else:
                    parts.append("m.uid BETWEEN ? AND ?")
                    self.params.extend((low, high))
            return "(" + " OR ".join(parts) + ")"
        self.params.append(json.dumps([[low, 2 ** 62 if high is None else high] for low, high in ranges]))
        return ("EXISTS (SELECT 1 FROM json_each(?) r WHERE m.uid BETWEEN"
                " json_extract(r.value, '$[0]') AND json_extract(r.value, '$[1]'))")

    def _between(self, column, low, high):
        parts = []
        if low is not None:
            parts.append(f"{column} >= ?")
            self.params.append(int(low))
        if high is not None:
            parts.append(f"{column} < ?")
            self.params.append(int(high))
        return "(" + " AND ".join(parts) + ")" if parts else "1"

    def _internal_date(self, depth, low, high):
        return self._between("m.internal_date", low, high)

    def _sent_date(self, depth, low, high):
        self.content = True
        return self._between(_SENT, low, high)

    def _size(self, depth, low, high):
        return self._between("m.size", low, high)

    def _modseq(self, depth, value):
        self.params.append(int(value))
        return "(m.modseq >= ?)"

    def _header(self, depth, name, value):
        name = name.lower()
        if name not in INDEXED_HEADERS:
            raise InvalidName(f"header field not indexed: {name}")
        self.content = True
        path = f'$.headers."{name}"'
        if not value:
            self.params.append(path)
            return "(json_type(c.parsed, ?) IS NOT NULL)"
        self.params.append(path)
        return f"EXISTS (SELECT 1 FROM json_each(c.parsed, ?) h WHERE {self._contains('h.value', value)})"

    def _text(self, depth, value):
        if not value:
            return "1"
        self.content = True
        text = "coalesce(json_extract(c.parsed, '$.text'), '')"
        if len(value) < _FTS_MIN:
            return self._contains(text, value)
        self.params.append('"' + value.replace('"', '""') + '"')
        indexed = "c.id IN (SELECT rowid FROM search.contents_text WHERE contents_text MATCH ?)"
        # Two IN terms on c.id under an OR let SQLite start from the index
        # matches and the pending ids rather than from every message.
        return (f"(({indexed} AND c.id NOT IN (SELECT content_id FROM search_pending))"
                f" OR (c.id IN (SELECT content_id FROM search_pending) AND {self._contains(text, value)}))")

    def _contains(self, text, value) -> str:
        """`text` contains `value`, case-folded.  Printable ASCII text is folded by
        SQLite's lower() (the same as casefold there), so only other text calls
        back into Python (imap_fold), which needs the GIL for every value."""
        needle = fold(value)
        self.params.extend((needle, needle))
        return (f"(CASE WHEN {text} GLOB '*[^ -~]*' THEN instr(imap_fold({text}), ?)"
                f" ELSE instr(lower({text}), ?) END > 0)")

    # The stored text has the body and the main address/subject fields; BODY
    # thus also matches those fields (a superset, never a miss).
    _body = _text


def compile_search(mailbox_id: int, criteria, sort=None) -> tuple[str, list]:
    """(SQL, parameters) selecting `m.uid` of the matching messages of a mailbox."""
    compiler = _Compiler()
    where = compiler.compile(criteria)
    order = []
    for name, reverse in sort or ():
        if name not in SORT_KEYS:
            raise InvalidName(f"unknown sort key: {name}")
        if name not in ("arrival", "size"):
            compiler.content = True
        order.append(_SORT_SQL[name] + (" DESC" if reverse else ""))
    order.append("m.uid")
    join = " JOIN contents c ON c.id = m.content_id" if compiler.content else ""
    sql = f"SELECT m.uid, m.modseq FROM messages m{join} WHERE m.mailbox_id = ? AND {where} ORDER BY {', '.join(order)}"
    return sql, [mailbox_id, *compiler.params]
