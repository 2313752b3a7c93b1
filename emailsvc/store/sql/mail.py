"""Mailboxes and messages in SQL (IMailStore).

UIDs and MODSEQs come from counters on the mailbox row, advanced in the
same transaction that uses them, so a UID is never handed out twice even
after the message is expunged or the transaction is rolled back.
"""
from __future__ import annotations

import functools
import json
from array import array

from twisted.internet import defer
from zope.interface import implementer

from emailsvc.errors import AlreadyExists, BlobNotFound, InvalidName, NotFound
from emailsvc.interfaces import IInlineMailStore
from emailsvc.store.model import Content, Mailbox, MessageRecord
from emailsvc.store.notify import Notifier
from emailsvc.store.sql.search import INDEXED_HEADERS, begin_search, compile_search

DELIMITER = "/"
INBOX = "INBOX"
DEFAULT_MAILBOXES = (
    (INBOX, None),
    ("Sent", "\\Sent"),
    ("Drafts", "\\Drafts"),
    ("Junk", "\\Junk"),
    ("Trash", "\\Trash"),
    ("Archive", "\\Archive"),
)
SPECIAL_USES = {use for _, use in DEFAULT_MAILBOXES if use} | {"\\All", "\\Flagged"}
SYSTEM_FLAGS = {"\\seen": 1, "\\answered": 2, "\\flagged": 4, "\\deleted": 8, "\\draft": 16}
_FLAG_NAMES = {bit: "\\" + name[1:].capitalize() for name, bit in SYSTEM_FLAGS.items()}
_DELETED = SYSTEM_FLAGS["\\deleted"]
_MAX_NAME = 512
_CHUNK = 500
_IN_THREAD = object()
_MESSAGE_COLUMNS = "mailbox_id, uid, modseq, flags, keywords, internal_date, size, content_id"
# The counts are kept on the row by triggers (delta 0006).
_MAILBOX_COLUMNS = (
    "id, user_id, name, special_use, uidvalidity, uidnext, highestmodseq, subscribed,"
    " message_count, unseen_count, total_size"
)
_READ_NOW_KEYS = _CHUNK  # a page of IMAP FETCH: reads of no more run in the calling thread


def normalize_mailbox_name(name: str) -> str:
    """Validate a mailbox name; INBOX is case-insensitive. Raises InvalidName."""
    if not name or len(name) > _MAX_NAME:
        raise InvalidName("mailbox name must have 1 to 512 characters")
    if any(ord(c) < 32 or c in "*%\x7f" for c in name):
        raise InvalidName("mailbox name contains a forbidden character")
    parts = name.split(DELIMITER)
    if any(not part or part != part.strip() for part in parts):
        raise InvalidName("mailbox name has an empty or padded level")
    if parts[0].upper() == INBOX:
        parts[0] = INBOX
    return DELIMITER.join(parts)


def split_flags(flags) -> tuple[int, list[str]]:
    """(system flag bits, keywords) from flag names; keywords keep their case."""
    bits, keywords, seen = 0, [], set()
    for flag in flags:
        lower = flag.lower()
        if lower in SYSTEM_FLAGS:
            bits |= SYSTEM_FLAGS[lower]
        elif flag.startswith("\\") or not flag or any(c in flag for c in ' (){%*"\\]') or any(
            ord(c) < 33 or ord(c) > 126 for c in flag
        ):
            raise InvalidName(f"invalid flag: {flag!r}")
        elif lower not in seen:
            seen.add(lower)
            keywords.append(flag)
    return bits, keywords


@functools.lru_cache(maxsize=4096)
def _flag_set(bits: int, keywords: str) -> frozenset[str]:
    """The flag names of a message row (cached: a mailbox has few distinct sets)."""
    names = {name for bit, name in _FLAG_NAMES.items() if bits & bit}
    return frozenset(names | set(keywords.split()))


def _record(row) -> MessageRecord:
    return MessageRecord(row[0], row[1], row[2], _flag_set(row[3], row[4]), row[5], row[6], row[7])


def _mailbox(row) -> Mailbox | None:
    if row is None:
        return None
    return Mailbox(
        id=row[0], user_id=row[1], name=row[2], special_use=row[3], uidvalidity=row[4],
        uidnext=row[5], highestmodseq=row[6], subscribed=bool(row[7]),
        messages=row[8], unseen=row[9], size=row[10],
    )


def _mailbox_row(connection, mailbox_id):
    """The mailbox row with its counts; raises NotFound."""
    row = connection.execute(f"SELECT {_MAILBOX_COLUMNS} FROM mailboxes WHERE id = ?", (mailbox_id,)).fetchone()
    if row is None:
        raise NotFound("no such mailbox")
    return row


def _json_rows(connection, columns: str, source: str, params) -> list[list]:
    """The rows of `SELECT columns FROM source` (JSON fields decoded, in no
    particular order) in one SQLite step.  The sqlite3 module lets go of the
    GIL and takes it back for every row it steps, and under load (the reactor
    and the other readers want it) each take can wait: a page of 500 rows
    paid 500 such waits, one JSON array pays one."""
    (text,) = connection.execute(f"SELECT json_group_array(json_array({columns})) FROM {source}", params).fetchone()
    return json.loads(text)


def _uid_pages(connection, columns: str, sql: str, params):
    """The rows of `sql` (`columns`, uid first) in UID order, a page of
    _CHUNK rows per SQLite step (see _json_rows), so memory stays bounded."""
    paged = (f"SELECT json_group_array(json_array({columns})) FROM (SELECT {columns},"
             f" (row_number() OVER (ORDER BY uid) - 1) / {_CHUNK} AS page FROM ({sql}))"
             f" GROUP BY page ORDER BY page")
    for (text,) in connection.execute(paged, params):
        yield from sorted(json.loads(text))


def _chunks(items):
    items = list(items)
    for start in range(0, len(items), _CHUNK):
        yield items[start:start + _CHUNK]


def _placeholders(items) -> str:
    return ", ".join("?" * len(items))


@implementer(IInlineMailStore)
class SQLMailStore:
    """IInlineMailStore over a SQLiteDatabase (read_now, the content_data
    table and the search file are SQLite's)."""

    indexed_headers = INDEXED_HEADERS

    def __init__(self, db, now):
        self._db = db
        self._now = now
        self.notifier = Notifier()

    # Mailboxes

    def provision_user(self, user_id):
        def provision(connection):
            for name, use in DEFAULT_MAILBOXES:
                if not self._exists(connection, user_id, name):
                    self._create(connection, user_id, name, use)

        return self._db.write(provision)

    def remove_user(self, user_id):
        def remove(connection):
            connection.execute("DELETE FROM mailboxes WHERE user_id = ?", (user_id,))
            connection.execute("DELETE FROM mail_users WHERE user_id = ?", (user_id,))

        return self._db.write(remove)

    def list_mailboxes(self, user_id):
        def query(connection):
            return [_mailbox(row) for row in connection.execute(
                f"SELECT {_MAILBOX_COLUMNS} FROM mailboxes WHERE user_id = ? ORDER BY name", (user_id,)
            )]

        return self._db.read_now(query)

    def get_mailbox(self, user_id, name):
        try:
            name = normalize_mailbox_name(name)
        except InvalidName:
            return defer.succeed(None)
        return self._db.read_now(self._find, user_id, name)

    def usage(self, user_id):
        def query(connection):
            return connection.execute(
                "SELECT coalesce(sum(total_size), 0) FROM mailboxes WHERE user_id = ?", (user_id,)
            ).fetchone()[0]

        return self._db.read_now(query)

    def delivery_mailbox(self, user_id, special_use=None):
        def query(connection):
            if special_use is not None:
                row = connection.execute(
                    "SELECT id FROM mailboxes WHERE user_id = ? AND special_use = ? ORDER BY id LIMIT 1",
                    (user_id, special_use),
                ).fetchone()
                if row:
                    return row[0]
            row = connection.execute(
                "SELECT id FROM mailboxes WHERE user_id = ? AND name = ?", (user_id, INBOX)
            ).fetchone()
            return row[0] if row else None

        return self._db.read_now(query)

    def get_special_mailbox(self, user_id, special_use):
        def query(connection):
            return _mailbox(connection.execute(
                f"SELECT {_MAILBOX_COLUMNS} FROM mailboxes WHERE user_id = ? AND special_use = ?"
                " ORDER BY id LIMIT 1", (user_id, special_use),
            ).fetchone())

        return self._db.read_now(query)

    def create_mailbox(self, user_id, name, special_use=None):
        def create(connection):
            nonlocal name
            name = normalize_mailbox_name(name)
            if special_use is not None and special_use not in SPECIAL_USES:
                raise InvalidName(f"unknown special use: {special_use}")
            if self._exists(connection, user_id, name):
                raise AlreadyExists(f"mailbox {name} exists already")
            self._create_parents(connection, user_id, name)
            return self._create(connection, user_id, name, special_use)

        return self._db.write(create)

    def rename_mailbox(self, user_id, old, new):
        changed = []

        def rename(connection):
            nonlocal old, new
            old, new = normalize_mailbox_name(old), normalize_mailbox_name(new)
            if new == INBOX:
                raise InvalidName("cannot rename a mailbox to INBOX")
            if old != INBOX and (new + DELIMITER).startswith(old + DELIMITER):
                raise InvalidName("cannot rename a mailbox into itself")
            source = self._find(connection, user_id, old)
            if source is None:
                raise NotFound(f"no such mailbox: {old}")
            if self._exists(connection, user_id, new):
                raise AlreadyExists(f"mailbox {new} exists already")
            self._create_parents(connection, user_id, new)
            if old == INBOX:
                target = self._create(connection, user_id, new, None)
                uids = [row[0] for row in connection.execute(
                    "SELECT uid FROM messages WHERE mailbox_id = ? ORDER BY uid", (source.id,)
                )]
                self._copy(connection, source.id, uids, target.id)
                self._expunge(connection, source.id, uids)
                changed.extend((source.id, target.id))
                return self._find(connection, user_id, new)
            prefix = old + DELIMITER
            children = connection.execute(
                "SELECT id, name FROM mailboxes WHERE user_id = ? AND substr(name, 1, ?) = ?",
                (user_id, len(prefix), prefix),
            ).fetchall()
            connection.execute("UPDATE mailboxes SET name = ? WHERE id = ?", (new, source.id))
            for child_id, child_name in children:
                connection.execute(
                    "UPDATE mailboxes SET name = ? WHERE id = ?",
                    (new + DELIMITER + child_name[len(prefix):], child_id),
                )
            return self._find(connection, user_id, new)

        return self._db.write(rename).addCallback(self._published, changed)

    def delete_mailbox(self, user_id, name):
        changed = []

        def delete(connection):
            nonlocal name
            name = normalize_mailbox_name(name)
            if name == INBOX:
                raise InvalidName("INBOX cannot be deleted")
            row = connection.execute(
                "DELETE FROM mailboxes WHERE user_id = ? AND name = ? RETURNING id", (user_id, name)
            ).fetchone()
            if row is None:
                raise NotFound(f"no such mailbox: {name}")
            changed.append(row[0])

        return self._db.write(delete).addCallback(self._published, changed)

    def set_subscribed(self, user_id, name, subscribed):
        def update(connection):
            nonlocal name
            name = normalize_mailbox_name(name)
            cursor = connection.execute(
                "UPDATE mailboxes SET subscribed = ? WHERE user_id = ? AND name = ?",
                (int(bool(subscribed)), user_id, name),
            )
            if cursor.rowcount != 1:
                raise NotFound(f"no such mailbox: {name}")

        return self._db.write(update)

    @staticmethod
    def _exists(connection, user_id, name) -> bool:
        return connection.execute(
            "SELECT 1 FROM mailboxes WHERE user_id = ? AND name = ?", (user_id, name)
        ).fetchone() is not None

    @staticmethod
    def _find(connection, user_id, name) -> Mailbox | None:
        return _mailbox(connection.execute(
            f"SELECT {_MAILBOX_COLUMNS} FROM mailboxes WHERE user_id = ? AND name = ?", (user_id, name)
        ).fetchone())

    def _create(self, connection, user_id, name, special_use) -> Mailbox:
        # UIDVALIDITY grows for every mailbox a user ever had, so a deleted
        # and re-created name never reuses a (UIDVALIDITY, UID) pair.
        row = connection.execute(
            "SELECT last_uidvalidity FROM mail_users WHERE user_id = ?", (user_id,)
        ).fetchone()
        uidvalidity = max(int(self._now()) & 0x7FFFFFFF, (row[0] if row else 0) + 1)
        if row:
            connection.execute(
                "UPDATE mail_users SET last_uidvalidity = ? WHERE user_id = ?", (uidvalidity, user_id)
            )
        else:
            connection.execute(
                "INSERT INTO mail_users (user_id, last_uidvalidity) VALUES (?, ?)", (user_id, uidvalidity)
            )
        connection.execute(
            "INSERT INTO mailboxes (user_id, name, special_use, uidvalidity) VALUES (?, ?, ?, ?)",
            (user_id, name, special_use, uidvalidity),
        )
        return self._find(connection, user_id, name)

    def _create_parents(self, connection, user_id, name):
        parts = name.split(DELIMITER)
        for depth in range(1, len(parts)):
            parent = DELIMITER.join(parts[:depth])
            if not self._exists(connection, user_id, parent):
                self._create(connection, user_id, parent, None)

    # Messages

    def _reader(self, keys):
        """`read_now` for a page of `keys` at most, else `read` (a thread)."""
        return self._db.read_now if keys is not None and len(keys) <= _READ_NOW_KEYS else self._db.read

    def deliver(self, deliveries, content, internal_date=None, data=None):
        when = int(self._now()) if internal_date is None else int(internal_date)

        def deliver(connection):
            flag_bits = [(mailbox_id, split_flags(flags)) for mailbox_id, flags in deliveries]
            content_id = connection.execute(
                "INSERT INTO contents (blob_key, size, parsed, created) VALUES (?, ?, ?, ?) RETURNING id",
                (content.blob_key, content.size, json.dumps(content.parsed), int(self._now())),
            ).fetchone()[0]
            if data is not None:
                connection.execute("INSERT INTO content_data (content_id, data) VALUES (?, ?)", (content_id, data))
            records = []
            for mailbox_id, (bits, keywords) in flag_bits:
                uid, modseq = self._allocate(connection, mailbox_id, 1)
                connection.execute(
                    f"INSERT INTO messages ({_MESSAGE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (mailbox_id, uid, modseq, bits, " ".join(keywords), when, content.size, content_id),
                )
                records.append(MessageRecord(
                    mailbox_id, uid, modseq, _flag_set(bits, " ".join(keywords)), when,
                    content.size, content_id,
                ))
            return records

        changed = [mailbox_id for mailbox_id, _ in deliveries]
        return self._db.write(deliver).addCallback(self._published, changed)

    @staticmethod
    def _allocate(connection, mailbox_id, count) -> tuple[int, int]:
        """Reserve `count` UIDs and one MODSEQ; returns (first UID, MODSEQ)."""
        row = connection.execute(
            "UPDATE mailboxes SET uidnext = uidnext + ?, highestmodseq = highestmodseq + 1"
            " WHERE id = ? RETURNING uidnext - ?, highestmodseq",
            (count, mailbox_id, count),
        ).fetchone()
        if row is None:
            raise NotFound("no such mailbox")
        return row[0], row[1]

    def list_messages(self, mailbox_id, uids=None):
        def query(connection):
            sql = f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE mailbox_id = ?"
            if uids is None:
                return [_record(row) for row in connection.execute(sql + " ORDER BY uid", (mailbox_id,))]
            records = []
            for chunk in _chunks(sorted(set(uids))):
                records.extend(_record(row) for row in connection.execute(
                    f"{sql} AND uid IN ({_placeholders(chunk)}) ORDER BY uid", (mailbox_id, *chunk)
                ))
            return records

        return self._reader(uids)(query)

    def get_content(self, content_id):
        def query(connection):
            row = connection.execute(
                "SELECT id, blob_key, size, parsed FROM contents WHERE id = ?", (content_id,)
            ).fetchone()
            if row is None:
                return None
            return Content(id=row[0], blob_key=row[1], size=row[2], parsed=json.loads(row[3]))

        return self._db.read_now(query)

    def read_inline(self, blob_key, offset=0, length=None):
        def query(connection):
            source = "FROM contents c JOIN content_data d ON d.content_id = c.id WHERE c.blob_key = ?"
            if length is None:
                row = connection.execute(f"SELECT substr(d.data, ?) {source}", (offset + 1, blob_key)).fetchone()
            else:
                row = connection.execute(f"SELECT substr(d.data, ?, ?) {source}",
                                         (offset + 1, length, blob_key)).fetchone()
            if row is None:
                raise BlobNotFound(f"no inline message {blob_key}")
            return row[0] or b""  # substr() of an empty blob is NULL

        return self._db.read_now(query)

    def store_flags(self, mailbox_id, uids, flags, mode, unchanged_since=None):
        if mode not in ("add", "remove", "replace"):
            raise ValueError(f"unknown flag mode {mode!r}")

        def store(connection):
            bits, keywords = split_flags(flags)
            changed, refused, updates = [], [], []
            for record in self._select(connection, mailbox_id, uids):
                if unchanged_since is not None and record.modseq > unchanged_since:
                    refused.append(record.uid)
                    continue
                new = _apply_flags(record.flags, bits, keywords, mode)
                if new != record.flags:
                    updates.append((record, new))
            if updates:
                _, modseq = self._allocate(connection, mailbox_id, 0)
                for record, new in updates:
                    new_bits, new_keywords = split_flags(new)
                    connection.execute(
                        "UPDATE messages SET flags = ?, keywords = ?, modseq = ? WHERE mailbox_id = ? AND uid = ?",
                        (new_bits, " ".join(new_keywords), modseq, mailbox_id, record.uid),
                    )
                    changed.append(MessageRecord(
                        record.mailbox_id, record.uid, modseq, new, record.internal_date,
                        record.size, record.content_id,
                    ))
            return changed, refused

        return self._db.write(store).addCallback(self._published, [mailbox_id])

    def copy(self, mailbox_id, uids, target_id):
        def copy(connection):
            return self._copy(connection, mailbox_id, uids, target_id)

        return self._db.write(copy).addCallback(self._published, [target_id])

    def move(self, mailbox_id, uids, target_id):
        def move(connection):
            mapping = self._copy(connection, mailbox_id, uids, target_id)
            self._expunge(connection, mailbox_id, list(mapping))
            return mapping

        return self._db.write(move).addCallback(self._published, [mailbox_id, target_id])

    def _copy(self, connection, mailbox_id, uids, target_id) -> dict[int, int]:
        records = self._select(connection, mailbox_id, uids)
        if not records:
            return {}
        first, modseq = self._allocate(connection, target_id, len(records))
        mapping = {}
        for offset, record in enumerate(records):
            bits, keywords = split_flags(record.flags)
            connection.execute(
                f"INSERT INTO messages ({_MESSAGE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (target_id, first + offset, modseq, bits, " ".join(keywords),
                 record.internal_date, record.size, record.content_id),
            )
            mapping[record.uid] = first + offset
        return mapping

    def expunge(self, mailbox_id, uids=None):
        def expunge(connection):
            sql = "SELECT uid FROM messages WHERE mailbox_id = ? AND flags & ? != 0"
            doomed = [row[0] for row in connection.execute(sql + " ORDER BY uid", (mailbox_id, _DELETED))]
            if uids is not None:
                wanted = set(uids)
                doomed = [uid for uid in doomed if uid in wanted]
            self._expunge(connection, mailbox_id, doomed)
            return doomed

        return self._db.write(expunge).addCallback(self._published, [mailbox_id])

    def _expunge(self, connection, mailbox_id, uids):
        if not uids:
            return
        _, modseq = self._allocate(connection, mailbox_id, 0)
        for chunk in _chunks(uids):
            connection.execute(
                f"DELETE FROM messages WHERE mailbox_id = ? AND uid IN ({_placeholders(chunk)})",
                (mailbox_id, *chunk),
            )
        connection.executemany(
            "INSERT INTO expunged (mailbox_id, uid, modseq) VALUES (?, ?, ?)",
            [(mailbox_id, uid, modseq) for uid in uids],
        )

    def expunged_since(self, mailbox_id, modseq):
        def query(connection):
            return [row[0] for row in connection.execute(
                "SELECT uid FROM expunged WHERE mailbox_id = ? AND modseq > ? ORDER BY uid",
                (mailbox_id, modseq),
            )]

        return self._db.read(query)

    @staticmethod
    def _select(connection, mailbox_id, uids) -> list[MessageRecord]:
        records = []
        for chunk in _chunks(sorted(set(uids))):
            records.extend(_record(row) for row in connection.execute(
                f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE mailbox_id = ?"
                f" AND uid IN ({_placeholders(chunk)}) ORDER BY uid",
                (mailbox_id, *chunk),
            ))
        return records

    # Change tracking, search and feedback (IMAP, JMAP)

    def _published(self, result, mailbox_ids):
        """Tell the notifier's subscribers, after the commit, which mailboxes changed."""
        self.notifier.publish(*mailbox_ids)
        return result

    def mailbox_changes(self, mailbox_id, since_modseq=0):
        def query(connection):
            row = _mailbox_row(connection, mailbox_id)
            records = [_record(row) for row in connection.execute(
                f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE mailbox_id = ? AND modseq > ? ORDER BY uid",
                (mailbox_id, since_modseq),
            )]
            expunged = []
            if since_modseq:
                expunged = [row[0] for row in connection.execute(
                    "SELECT uid FROM expunged WHERE mailbox_id = ? AND modseq > ? ORDER BY uid",
                    (mailbox_id, since_modseq),
                )]
            return _mailbox(row), records, expunged

        # Every message of a large mailbox may have changed (STORE 1:*, QRESYNC).
        return self._by_mailbox_size(mailbox_id, query)

    def get_parsed(self, content_ids, fields=()):
        fields = list(fields)
        for name in fields:
            if not name.replace("_", "").isalnum():
                raise ValueError(f"bad parsed field name {name!r}")

        def query(connection):
            columns = "".join(f", parsed -> '$.{name}'" for name in fields)
            found = {}
            for chunk in _chunks(sorted(set(content_ids))):
                for row in connection.execute(
                    f"SELECT id, blob_key{columns} FROM contents WHERE id IN ({_placeholders(chunk)})", chunk
                ):
                    values = {name: None if value is None else json.loads(value)
                              for name, value in zip(fields, row[2:])}
                    found[row[0]] = (row[1], values)
            return found

        return self._reader(content_ids)(query)

    # Compact and paged reads, for mailboxes of any size (IMAP selected state)

    def mailbox_index(self, mailbox_id):
        def query(connection):
            row = _mailbox_row(connection, mailbox_id)
            uids = array("I", (uid for (uid,) in _uid_pages(
                connection, "uid", "SELECT uid FROM messages WHERE mailbox_id = ?", (mailbox_id,)
            )))
            first_unseen = connection.execute(
                "SELECT min(uid) FROM messages WHERE mailbox_id = ? AND flags & 1 = 0", (mailbox_id,)
            ).fetchone()[0]
            keywords = {}
            for (text,) in connection.execute(
                "SELECT DISTINCT keywords FROM messages WHERE mailbox_id = ? AND keywords != ''", (mailbox_id,)
            ):
                for keyword in text.split():
                    keywords.setdefault(keyword.lower(), keyword)
            return _mailbox(row), uids, first_unseen, sorted(keywords.values())

        return self._by_mailbox_size(mailbox_id, query)

    def message_page(self, mailbox_id, uids, fields=None):
        uids = sorted(set(uids))
        if fields is not None:
            fields = list(fields)
            for name in fields:
                if not name.replace("_", "").isalnum():
                    raise ValueError(f"bad parsed field name {name!r}")

        def query(connection):
            columns = ", ".join("m." + name.strip() for name in _MESSAGE_COLUMNS.split(","))
            source = "messages m"
            if fields is not None:
                columns += ", c.blob_key" + "".join(f", c.parsed -> '$.{name}'" for name in fields)
                source += " JOIN contents c ON c.id = m.content_id"
            source += " WHERE m.mailbox_id = ?"
            if not uids:
                return []
            wanted = set(uids)
            if uids[-1] - uids[0] < 2 * len(uids) + 64:
                # Dense (the usual 1:*): one range scan, the holes filtered here.
                rows = _json_rows(connection, columns, source + " AND m.uid BETWEEN ? AND ?",
                                  (mailbox_id, uids[0], uids[-1]))
            else:
                rows = []
                for chunk in _chunks(uids):
                    rows.extend(_json_rows(connection, columns, f"{source} AND m.uid IN ({_placeholders(chunk)})",
                                           (mailbox_id, *chunk)))
            rows.sort(key=lambda row: row[1])
            if fields is None:
                return [(_record(row), None, {}) for row in rows if row[1] in wanted]
            return [(_record(row), row[8], dict(zip(fields, row[9:]))) for row in rows if row[1] in wanted]

        return self._reader(uids)(query)

    def search_uids(self, mailbox_id, criteria):
        try:
            sql, params = compile_search(mailbox_id, criteria)
        except InvalidName:
            return defer.fail()

        def query(connection):
            begin_search(connection)
            uids, modseqs = array("I"), array("Q")
            for uid, modseq in _uid_pages(connection, "uid, modseq", sql, params):
                uids.append(uid)
                modseqs.append(modseq)
            return uids, modseqs

        return self._by_mailbox_size(mailbox_id, query)

    def search(self, mailbox_id, criteria, sort=None):
        try:
            sql, params = compile_search(mailbox_id, criteria, sort)
        except InvalidName:
            return defer.fail()

        def query(connection):
            begin_search(connection)
            return [(row[0], row[1]) for row in connection.execute(sql, params)]

        return self._by_mailbox_size(mailbox_id, query)

    def _by_mailbox_size(self, mailbox_id, query):
        """Run `query` at once for a mailbox of a page of messages at most,
        else in a reader thread."""
        def small(connection):
            row = connection.execute("SELECT message_count FROM mailboxes WHERE id = ?", (mailbox_id,)).fetchone()
            return query(connection) if row and row[0] <= _READ_NOW_KEYS else _IN_THREAD

        return self._db.read_now(small).addCallback(
            lambda result: self._db.read(query) if result is _IN_THREAD else result)

    def record_feedback(self, user_id, content_ids, verdict):
        if verdict not in ("spam", "ham"):
            raise ValueError(f"unknown verdict {verdict!r}")

        def record(connection):
            connection.executemany(
                "INSERT INTO spam_feedback (user_id, content_id, verdict, created) VALUES (?, ?, ?, ?)",
                [(user_id, content_id, verdict, int(self._now())) for content_id in content_ids],
            )

        return self._db.write(record)

    def list_feedback(self, user_id):
        def query(connection):
            return [tuple(row) for row in connection.execute(
                "SELECT content_id, verdict, created FROM spam_feedback WHERE user_id = ? ORDER BY id", (user_id,)
            )]

        return self._db.read(query)

    # Garbage

    @defer.inlineCallbacks
    def collect_garbage(self, blobs, grace):
        def drop_unreferenced(connection):
            rows = connection.execute(
                "DELETE FROM contents WHERE NOT EXISTS"
                " (SELECT 1 FROM messages m WHERE m.content_id = contents.id) RETURNING blob_key"
            ).fetchall()
            # A blob the outbound queue still references stays.
            return [row[0] for row in rows if not connection.execute(
                "SELECT 1 FROM queue_messages WHERE blob_key = ?", (row[0],)
            ).fetchone()]

        doomed = yield self._db.write(drop_unreferenced)
        candidates = yield blobs.keys_older_than(self._now() - grace)

        def unreferenced(connection):
            found = []
            for chunk in _chunks(candidates):
                known = {row[0] for row in connection.execute(
                    f"SELECT blob_key FROM contents WHERE blob_key IN ({_placeholders(chunk)})", chunk
                )}
                known.update(row[0] for row in connection.execute(
                    f"SELECT blob_key FROM queue_messages WHERE blob_key IN ({_placeholders(chunk)})", chunk
                ))
                found.extend(key for key in chunk if key not in known)
            return found

        orphans = yield self._db.read(unreferenced)
        removed = set(doomed) | set(orphans)
        for key in removed:
            yield blobs.delete(key)
        return len(removed)


def _apply_flags(current: frozenset[str], bits: int, keywords: list[str], mode: str) -> frozenset[str]:
    given = {name for bit, name in _FLAG_NAMES.items() if bits & bit} | set(keywords)
    if mode == "replace":
        return frozenset(given)
    lowered = {flag.lower() for flag in given}
    if mode == "add":
        present = {flag.lower() for flag in current}
        return current | {flag for flag in given if flag.lower() not in present}
    return frozenset(flag for flag in current if flag.lower() not in lowered)
