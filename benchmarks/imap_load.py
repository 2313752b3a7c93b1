"""The IMAP load generator of benchmarks/imap.py: a small client and the session mix.

Each worker thread runs sessions one after another: connect over TLS,
LOGIN, SELECT INBOX, then `--commands` commands drawn from MIX (fetch
flags, envelopes and bodies, store, search, append, expunge, idle, noop),
then LOGOUT.  Every tagged reply must be OK, and its untagged replies must
be what the command asks for; anything else (NO, BAD, a closed
connection, a timeout, a missing SEARCH line) is a protocol error, counted
and kept as an example.  Latency is from sending the command to reading its
tagged reply.
"""
from __future__ import annotations

import random
import re
import socket
import ssl
import threading
import time

MIX = (
    # (name, weight)
    ("FETCH FLAGS", 14),
    ("FETCH ENVELOPE", 12),
    ("FETCH BODY", 16),
    ("STORE", 10),
    ("SEARCH", 10),
    ("APPEND", 6),
    ("EXPUNGE", 4),
    ("IDLE", 4),
    ("NOOP", 4),
)
SUBJECT_WORDS = ("invoice", "meeting", "report", "holiday", "lunch", "release", "budget", "travel")
_LITERAL = re.compile(rb"\{(\d+)\}\r\n$")
_UIDS = re.compile(rb"UID (\d+)")


class ProtocolError(Exception):
    pass


class Client:
    """A minimal IMAP client over TLS: one command at a time, literals read whole."""

    def __init__(self, address, timeout: float = 30.0):
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        raw = socket.create_connection(address, timeout=timeout)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = context.wrap_socket(raw)
        self.file = self.sock.makefile("rb", buffering=65536)
        self.tag = 0
        greeting = self.file.readline()
        if not greeting.startswith(b"* OK"):
            raise ProtocolError(f"greeting {greeting[:80]!r}")

    def line(self) -> bytes:
        line = self.file.readline()
        if not line.endswith(b"\n"):
            raise ProtocolError("connection closed")
        while True:
            match = _LITERAL.search(line)
            if match is None:
                return line
            line += self.file.read(int(match.group(1)))
            more = self.file.readline()
            if not more:
                raise ProtocolError("connection closed in a literal")
            line += more

    def command(self, text: bytes, literal: bytes | None = None) -> list[bytes]:
        """Send one command; return its untagged lines; ProtocolError unless tagged OK."""
        self.tag += 1
        tag = b"c%d" % self.tag
        if literal is None:
            self.sock.sendall(tag + b" " + text + b"\r\n")
        else:
            self.sock.sendall(tag + b" " + text + b" {%d}\r\n" % len(literal))
            reply = self.line()
            if not reply.startswith(b"+"):
                raise ProtocolError(f"{text[:30]!r}: no continuation: {reply[:80]!r}")
            self.sock.sendall(literal + b"\r\n")
        return self.until(tag, text)

    def until(self, tag: bytes, text: bytes = b"") -> list[bytes]:
        lines = []
        while True:
            line = self.line()
            if line.startswith(tag + b" "):
                if line[len(tag) + 1:len(tag) + 3] != b"OK":
                    raise ProtocolError(f"{text[:40]!r}: {line[:120]!r}")
                return lines
            if line.startswith(b"* BAD") or (line.startswith(b"* BYE") and text != b"LOGOUT"):
                raise ProtocolError(f"{text[:40]!r}: {line[:120]!r}")
            lines.append(line)

    def idle(self) -> list[bytes]:
        """IDLE, then DONE at once: what a client does when it leaves IDLE to work."""
        self.tag += 1
        tag = b"c%d" % self.tag
        self.sock.sendall(tag + b" IDLE\r\n")
        lines = []
        while True:
            line = self.line()
            if line.startswith(b"+"):
                break
            if line.startswith(tag + b" ") or line.startswith(b"* BAD") or line.startswith(b"* BYE"):
                raise ProtocolError(f"IDLE: {line[:120]!r}")
            lines.append(line)
        self.sock.sendall(b"DONE\r\n")
        return lines + self.until(tag, b"IDLE")

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def make_message(rng: random.Random, number: int, user: str) -> bytes:
    """A plausible message: text, sometimes with a base64 attachment (2 KB to 60 KB)."""
    subject = f"{rng.choice(SUBJECT_WORDS)} {number}"
    sender = f"sender{rng.randrange(50)}@remote.example"
    paragraph = ("Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor "
                 "incididunt ut labore et dolore magna aliqua.\r\n")
    body = paragraph * rng.randrange(10, 60)
    header = (f"From: Sender {number} <{sender}>\r\nTo: {user}\r\nSubject: {subject}\r\n"
              f"Date: Tue, {1 + number % 28} Jan 2024 09:{number % 60:02d}:00 +0000\r\n"
              f"Message-ID: <{number}.{rng.randrange(10 ** 9)}@remote.example>\r\n")
    if rng.random() < 0.2:
        attachment = "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdef0123456789+/")
                             for _ in range(76)) + "\r\n"
        return (header + "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n"
                "--b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n" + body +
                "--b1\r\nContent-Type: application/pdf; name=\"doc.pdf\"\r\nContent-Transfer-Encoding: base64\r\n"
                "Content-Disposition: attachment; filename=\"doc.pdf\"\r\n\r\n" + attachment * rng.randrange(50, 600)
                + "--b1--\r\n").encode()
    return (header + "Content-Type: text/plain; charset=utf-8\r\n\r\n" + body).encode()


def populate(address, user: str, password: str, count: int, seed: int) -> int:
    """APPEND `count` messages to a user's INBOX (a fifth \\Seen, a tenth \\Flagged); returns octets."""
    rng = random.Random(seed)
    client = Client(address, timeout=120)
    total = 0
    try:
        client.command(b'LOGIN "%s" "%s"' % (user.encode(), password.encode()))
        for number in range(count):
            flags = []
            if number % 5 == 0:
                flags.append(b"\\Seen")
            if number % 10 == 3:
                flags.append(b"\\Flagged")
            data = make_message(rng, number, user)
            total += len(data)
            client.command(b"APPEND INBOX (" + b" ".join(flags) + b")", data)
        client.command(b"LOGOUT")
    finally:
        client.close()
    return total


class Recorder:
    """Latencies per command name and protocol errors, shared by the threads of a process."""

    def __init__(self):
        self.lock = threading.Lock()
        self.latencies: dict[str, list[float]] = {}
        self.errors = 0
        self.examples: list[str] = []

    def add(self, name: str, seconds: float):
        with self.lock:
            self.latencies.setdefault(name, []).append(seconds)

    def error(self, text: str):
        with self.lock:
            self.errors += 1
            if len(self.examples) < 5:
                self.examples.append(text)


def session(address, user, password, rng, recorder, commands, deadline, expect_uids):
    """One IMAP session of the mix. Returns False once the deadline has passed."""
    def timed(name, function, *args):
        started = time.perf_counter()
        result = function(*args)
        recorder.add(name, time.perf_counter() - started)
        return result

    started = time.perf_counter()
    client = Client(address)
    try:
        timed("LOGIN", client.command, b'LOGIN "%s" "%s"' % (user.encode(), password.encode()))
        recorder.add("CONNECT+LOGIN", time.perf_counter() - started)
        lines = timed("SELECT", client.command, b"SELECT INBOX")
        if not any(line.endswith(b" EXISTS\r\n") for line in lines):
            raise ProtocolError(f"SELECT: no EXISTS in {lines[:3]!r}")
        # Other sessions' expunges may be announced after EXISTS, in the same answer.
        exists = _track_exists(0, lines)
        appended = []
        names = [name for name, _ in MIX]
        weights = [weight for _, weight in MIX]
        for _ in range(commands):
            if time.monotonic() > deadline:
                break
            name = rng.choices(names, weights)[0]
            lines = []
            if name == "FETCH FLAGS":
                lines = timed(name, client.command, b"UID FETCH 1:* (UID FLAGS)")
                if len(lines) < expect_uids // 2:
                    raise ProtocolError(f"FETCH FLAGS: {len(lines)} lines")
            elif name == "FETCH ENVELOPE":
                low = max(1, exists - 19)
                lines = timed(name, client.command, b"FETCH %d:%d (UID FLAGS RFC822.SIZE INTERNALDATE ENVELOPE)"
                              % (low, exists))
                if not any(b"ENVELOPE (" in line for line in lines):
                    raise ProtocolError(f"FETCH ENVELOPE: {lines[:1]!r}")
            elif name == "FETCH BODY":
                number = rng.randrange(1, exists + 1)
                lines = timed(name, client.command, b"FETCH %d (BODY.PEEK[] BODYSTRUCTURE)" % number)
                # "BODY[] NIL": expunged by another session meanwhile (RFC 2180 4.1.3).
                if not any(b"BODY[] {" in line or b"BODY[] NIL" in line for line in lines):
                    raise ProtocolError(f"FETCH BODY: {lines[:1]!r}"[:200])
            elif name == "STORE":
                number = rng.randrange(1, exists + 1)
                sign = rng.choice((b"+", b"-"))
                flag = rng.choice((b"\\Flagged", b"\\Seen", b"$Work"))
                lines = timed(name, client.command, b"STORE %d %sFLAGS (%s)" % (number, sign, flag))
            elif name == "SEARCH":
                query = rng.choice((b"UNSEEN", b"FLAGGED",
                                    b'SUBJECT "%s"' % rng.choice(SUBJECT_WORDS).encode(),
                                    b'FROM "sender%d"' % rng.randrange(50),
                                    b"SINCE 10-Jan-2024 NOT DELETED"))
                lines = timed(name, client.command, b"UID SEARCH " + query)
                if not any(line.startswith(b"* SEARCH") for line in lines):
                    raise ProtocolError(f"SEARCH {query!r}: no SEARCH line")
            elif name == "APPEND":
                data = make_message(rng, rng.randrange(10 ** 6), user)
                lines = timed(name, client.command, b"APPEND INBOX (\\Seen)", data)
                appended.append(1)
            elif name == "EXPUNGE":
                # Delete the newest message when this session added one, so the mailbox keeps its size.
                if appended:
                    appended.pop()
                    lines = client.command(b"STORE %d +FLAGS.SILENT (\\Deleted)" % exists)
                    exists = _track_exists(exists, lines)
                lines = timed(name, client.command, b"EXPUNGE")
            elif name == "IDLE":
                lines = timed(name, client.idle)
            else:
                lines = timed(name, client.command, b"NOOP")
            exists = _track_exists(exists, lines)
        timed("LOGOUT", client.command, b"LOGOUT")
    finally:
        client.close()
    return time.monotonic() < deadline


def _track_exists(exists, lines) -> int:
    """Follow EXISTS and EXPUNGE replies so sequence numbers stay valid."""
    for line in lines:
        if line.startswith(b"* ") and line.endswith(b" EXISTS\r\n"):
            exists = int(line.split()[1])
        elif line.startswith(b"* ") and line.endswith(b" EXPUNGE\r\n"):
            exists -= 1
    return max(exists, 1)


def worker(address, users, password, seed, commands, deadline, max_sessions, expect_uids, recorder):
    rng = random.Random(seed)
    sessions = 0
    while time.monotonic() < deadline and sessions < max_sessions:
        user = rng.choice(users)
        sessions += 1
        try:
            if not session(address, user, password, rng, recorder, commands, deadline, expect_uids):
                break
        except (ProtocolError, OSError) as error:
            recorder.error(f"{type(error).__name__}: {error}"[:300])
            time.sleep(0.05)


def run_process(address, users, password, seed, threads, commands, seconds, max_sessions, expect_uids):
    """Run `threads` workers for `seconds`; returns (latencies per name, errors, examples)."""
    recorder = Recorder()
    deadline = time.monotonic() + seconds
    workers = [threading.Thread(target=worker, args=(
        tuple(address), users, password, seed * 1000 + index, commands, deadline, max_sessions, expect_uids,
        recorder), daemon=True) for index in range(threads)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join(seconds + 120)
    return recorder.latencies, recorder.errors, recorder.examples
