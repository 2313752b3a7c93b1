"""A big mailbox, filled straight into SQLite, and a probe of what commands on it cost.

Shared by tests/imap/test_big_mailbox.py (20,000 messages, memory bounds)
and benchmarks/imap_bigmailbox.py (100,000 messages, the figures in
benchmarks/README.rst).  All messages share one content row and one blob,
so filling takes seconds; every tenth message is \\Seen, every hundredth
\\Flagged.

`probe()` runs in a client thread against a server in the reactor thread of
the same process and measures, per command, the wall time and the peak of
Python allocations (tracemalloc, every thread: server, SQLite readers and
the client, which keeps no more than a small tail of what it reads).
"""
from __future__ import annotations

import json
import socket
import ssl
import time
import tracemalloc

from emailsvc.store.parse import parse_message

MESSAGE = (b"From: Bob <bob@remote.example>\r\nTo: alice@example.test\r\nSubject: bulk message\r\n"
           b"Date: Tue, 2 Jan 2024 09:00:00 +0000\r\nMessage-ID: <bulk@remote.example>\r\n\r\n"
           + b"A line of the body of a bulk message.\r\n" * 50)
COMMANDS = (
    ("SELECT", b"SELECT INBOX"),
    ("UID FETCH 1:* (UID FLAGS)", b"UID FETCH 1:* (UID FLAGS)"),
    ("UID SEARCH UNSEEN", b"UID SEARCH UNSEEN"),
    ("UID SEARCH FLAGGED", b"UID SEARCH FLAGGED"),
    ("FETCH n BODY[]", None),   # n: the middle message
)


def fill(database, blobs, mailbox_id: int, count: int):
    """Add `count` messages to a mailbox in one transaction. @return: Deferred."""
    parsed = parse_message(MESSAGE)

    def insert(connection, blob_key):
        content_id = connection.execute(
            "INSERT INTO contents (blob_key, size, parsed, created) VALUES (?, ?, ?, 0) RETURNING id",
            (blob_key, len(MESSAGE), json.dumps(parsed)),
        ).fetchone()[0]
        first = connection.execute("SELECT uidnext FROM mailboxes WHERE id = ?", (mailbox_id,)).fetchone()[0]
        connection.executemany(
            "INSERT INTO messages (mailbox_id, uid, modseq, flags, keywords, internal_date, size, content_id)"
            " VALUES (?, ?, ?, ?, '', ?, ?, ?)",
            ((mailbox_id, uid, 2, (1 if uid % 10 == 0 else 0) | (4 if uid % 100 == 0 else 0),
              1704186000 + uid, len(MESSAGE), content_id) for uid in range(first, first + count)),
        )
        connection.execute("UPDATE mailboxes SET uidnext = ?, highestmodseq = max(highestmodseq, 2) WHERE id = ?",
                           (first + count, mailbox_id))

    d = blobs.put(MESSAGE)
    d.addCallback(lambda key: database.write(insert, key))
    return d


class Reader:
    """An IMAP client over TLS that keeps only counts and a tail of what it reads."""

    def __init__(self, address):
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        self.sock = context.wrap_socket(socket.create_connection(address, timeout=120))
        self.number = 0
        self.command(None)   # the greeting

    def command(self, text: bytes | None) -> tuple[int, int, bytes]:
        """Send a command, read its answer: (octets, untagged lines, tagged line)."""
        if text is None:
            end = b"\r\n"
        else:
            self.number += 1
            tag = b"T%d" % self.number
            self.sock.sendall(tag + b" " + text + b"\r\n")
            end = b"\r\n" + tag + b" "
        octets = lines = 0
        tail = b"\r\n" if text is not None else b""
        while True:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("closed")
            octets += len(data)
            lines += (tail[-3:] + data).count(b"\r\n* ")
            tail = (tail + data)[-4096:]
            found = tail.rfind(end)
            if found >= 0 and tail.endswith(b"\r\n") and (text is None or tail.find(b"\r\n", found + 2) == len(tail) - 2):
                return octets, lines, tail[found + 2 if text is not None else 0:].strip()

    def close(self):
        self.sock.close()


def probe(address, user: str, password: str, count: int, traced: bool = True) -> list[dict]:
    """Log in and run COMMANDS; per command: name, seconds, peak bytes (or None), octets, status."""
    reader = Reader(address)
    results = []
    try:
        reader.command(b'LOGIN "%s" "%s"' % (user.encode(), password.encode()))
        for name, text in COMMANDS:
            text = text or b"FETCH %d BODY[]" % (count // 2 or 1)
            if traced:
                tracemalloc.start()
                base = tracemalloc.get_traced_memory()[0]
            started = time.perf_counter()
            octets, lines, status = reader.command(text)
            elapsed = time.perf_counter() - started
            peak = None
            if traced:
                peak = tracemalloc.get_traced_memory()[1] - base
                tracemalloc.stop()
            results.append({"name": name, "seconds": elapsed, "peak": peak, "octets": octets,
                            "lines": lines, "status": status.decode("ascii", "replace")})
        reader.command(b"LOGOUT")
    finally:
        reader.close()
    return results
