"""Real-world mail through the MX: send corpus messages, check every one landed.

Starts the real service (`twistd -n emailsvc`) on a generated config under a
temporary directory, with its default inbound checks asking a local DNS
stand-in that answers NXDOMAIN (`--no-checks`: none), creates one domain and
one user with the `emailsvc` admin command, sends N messages from ../shared/corpus/{ham,spam} over SMTP
from a few parallel senders, then reads the SQLite file (and the blob file of
a message too large to be kept inline) to check that each message is in INBOX exactly once, byte for byte, with parsed
metadata.  Prints counts, msgs/s and every failure.

    python benchmarks/corpus_mx.py [-n 2000] [--senders 4] [--timeout 600]

Exit status: 0 when every message landed and was parsed, 1 otherwise, 2 when
the corpus is missing.  A parse error the parser noted about a malformed
message (a boundary that never occurs, say) is listed but is not a failure;
a parser crash (its "parse failed" fallback) is.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import smtplib
import sqlite3
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness  # noqa: E402

CORPUS = os.path.normpath(os.path.join(harness.REPO, "..", "shared", "corpus"))
BENCH_HEADER = re.compile(rb"^X-Bench-Id: (\d+)\r\n", re.MULTILINE)
SENDER = "corpus@remote.test"


def _missing(text: str):
    print(f"corpus_mx: {text}; nothing measured", file=sys.stderr)
    sys.exit(2)


def load_corpus(count: int) -> list[tuple[str, bytes]]:
    """(name, CRLF message) pairs: ham and spam interleaved in their proportion."""
    folders = [os.path.join(CORPUS, "ham"), os.path.join(CORPUS, "spam")]
    if not all(os.path.isdir(folder) for folder in folders):
        _missing(f"no corpus at {CORPUS} (expected ham/ and spam/ there)")
    lists = [sorted(os.path.join(folder, name) for name in os.listdir(folder) if name.endswith(".eml"))
             for folder in folders]
    total = sum(len(files) for files in lists)
    if not total:
        _missing(f"the corpus at {CORPUS} holds no .eml files")
    # Merge by position within each list so spam is spread evenly among ham.
    ranked = sorted(((index / len(files), kind, path) for kind, files in enumerate(lists)
                     for index, path in enumerate(files)))
    paths = [path for _, _, path in ranked]
    chosen = [paths[i % len(paths)] for i in range(count)]
    messages = []
    for number, path in enumerate(chosen):
        with open(path, "rb") as handle:
            raw = handle.read()
        # The files use bare LF; on the wire every line ends in CRLF, as an MTA sends it.
        raw = raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        if not raw.endswith(b"\r\n"):
            raw += b"\r\n"
        name = os.path.join(os.path.basename(os.path.dirname(path)), os.path.basename(path))
        messages.append((name, b"X-Bench-Id: %d\r\n" % number + raw))
    return messages


def send_all(port: int, messages, senders: int, deadline: float):
    """Send every message from `senders` threads, one SMTP session each.

    Returns (sent ids, failures as (id, error text)).
    """
    lock = threading.Lock()
    queue = list(enumerate(messages))
    queue.reverse()
    sent, failures = [], []

    def take():
        with lock:
            return queue.pop() if queue else None

    def worker():
        client = None
        while time.monotonic() < deadline:
            item = take()
            if item is None:
                break
            number, (name, data) = item
            try:
                if client is None:
                    client = smtplib.SMTP("127.0.0.1", port, timeout=60)
                    client.ehlo("sender.remote.test")
                refused = client.sendmail(SENDER, [harness.USER], data)
                if refused:
                    raise smtplib.SMTPRecipientsRefused(refused)
            except (smtplib.SMTPException, OSError) as error:
                with lock:
                    failures.append((number, f"{name}: {type(error).__name__}: {error}"))
                if client is not None:
                    try:
                        client.rset()
                    except (smtplib.SMTPException, OSError):
                        _close(client)
                        client = None
                continue
            with lock:
                sent.append(number)
        if client is not None:
            try:
                client.quit()
            except (smtplib.SMTPException, OSError):
                _close(client)

    threads = [threading.Thread(target=worker, name=f"sender-{i}", daemon=True) for i in range(senders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()) + 60)
    with lock:
        unsent = [number for number, _ in queue]
    return sent, failures, unsent


def _close(client):
    try:
        client.close()
    except OSError:
        pass


def check_store(server: harness.Emailsvc, messages):
    """Read every INBOX row of the user: (rows, parse errors, problems by id, seen ids)."""
    connection = sqlite3.connect(f"file:{server.database}?mode=ro", uri=True, timeout=30)
    try:
        rows = connection.execute(
            "SELECT m.uid, m.size, c.blob_key, c.size, c.parsed, d.data FROM messages m"
            " JOIN contents c ON c.id = m.content_id LEFT JOIN content_data d ON d.content_id = c.id"
            " JOIN mailboxes b ON b.id = m.mailbox_id"
            " JOIN users u ON u.id = b.user_id WHERE u.address = ? AND b.name = 'INBOX' ORDER BY m.uid",
            (harness.USER,),
        ).fetchall()
    finally:
        connection.close()
    seen: dict[int, int] = {}
    problems: list[str] = []
    parse_errors: list[str] = []
    for uid, size, key, content_size, parsed_text, blob in rows:
        if blob is None:
            try:
                with open(os.path.join(server.blobs, key[:2], key[2:4], key), "rb") as handle:
                    blob = handle.read()
            except OSError as error:
                problems.append(f"uid {uid}: blob {key} unreadable: {error}")
                continue
        found = BENCH_HEADER.search(blob)
        if not found:
            problems.append(f"uid {uid}: no X-Bench-Id in the stored message")
            continue
        number = int(found.group(1))
        seen[number] = seen.get(number, 0) + 1
        name, data = messages[number] if number < len(messages) else ("?", b"")
        if not blob.endswith(data):
            problems.append(f"#{number} {name}: stored bytes differ from the bytes sent")
        if not blob.startswith(b"Return-Path: <" + SENDER.encode() + b">\r\nReceived: "):
            problems.append(f"#{number} {name}: no Return-Path/Received trace fields")
        if size != len(blob) or content_size != len(blob):
            problems.append(f"#{number} {name}: size {size}/{content_size} but the blob has {len(blob)} bytes")
        try:
            parsed = json.loads(parsed_text)
        except ValueError:
            problems.append(f"#{number} {name}: contents.parsed is not JSON")
            continue
        if not isinstance(parsed, dict) or "envelope" not in parsed or "body" not in parsed:
            problems.append(f"#{number} {name}: contents.parsed lacks envelope/body")
        elif parsed.get("error"):
            # "parse failed: X" is the parser's fallback after an exception;
            # anything else is a defect of the message that it noted.
            parse_errors.append(f"#{number} {name}: {parsed['error']}")
    return rows, parse_errors, problems, seen


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--messages", type=int, default=2000, help="messages to send (default 2000)")
    parser.add_argument("--senders", type=int, default=4, help="parallel SMTP sessions (default 4)")
    parser.add_argument("--timeout", type=float, default=600, help="stop sending after this many seconds")
    parser.add_argument("--no-checks", action="store_true",
                        help="run no inbound checks (default: the service's default checks, DNS answered"
                             " NXDOMAIN by a local stand-in)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args(argv)
    if not 1 <= args.messages <= 100_000:
        parser.error("--messages must be 1..100000")
    if not 1 <= args.senders <= 50:
        parser.error("--senders must be 1..50")
    messages = load_corpus(args.messages)
    workdir = tempfile.mkdtemp(prefix="emailsvc-corpus-")
    try:
        with contextlib.ExitStack() as stack:
            if args.no_checks:
                server = harness.Emailsvc(workdir)
            else:
                dns = stack.enter_context(harness.NXDomainDNS(workdir))
                server = harness.Emailsvc(workdir, checks=None, nameservers=[dns.nameserver])
            stack.enter_context(server)
            print(f"emailsvc on 127.0.0.1:{server.port}, data in {workdir}, "
                  + ("no checks" if args.no_checks else f"default checks, DNS stand-in on {dns.nameserver}"))
            print(f"sending {len(messages)} corpus messages "
                  f"({sum(len(data) for _, data in messages) / 1e6:.1f} MB) from {args.senders} senders")
            started = time.monotonic()
            sent, failures, unsent = send_all(server.port, messages, args.senders, started + args.timeout)
            elapsed = time.monotonic() - started
            rows, parse_errors, problems, seen = check_store(server, messages)
        return report(args, messages, sent, failures, unsent, elapsed, rows, parse_errors, problems, seen)
    finally:
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def report(args, messages, sent, failures, unsent, elapsed, rows, parse_errors, problems, seen) -> int:
    missing = [number for number in sent if number not in seen]
    duplicates = [number for number, times in seen.items() if times > 1]
    print(f"sent:          {len(sent)} accepted, {len(failures)} refused, {len(unsent)} not sent (time limit)")
    print(f"elapsed:       {elapsed:.2f} s, {len(sent) / elapsed if elapsed else 0:.1f} msgs/s")
    print(f"in INBOX:      {len(rows)} rows, {len(seen)} distinct messages")
    crashed = [text for text in parse_errors if ": parse failed" in text]
    print(f"parse errors:  {len(parse_errors)} ({len(crashed)} where the parser failed and stored a fallback;"
          " the others are defects of the message itself, noted by the parser)")
    print(f"missing:       {len(missing)} accepted but not stored; {len(duplicates)} stored twice")
    print(f"problems:      {len(problems)}")
    for title, items in (("refused", [text for _, text in failures]), ("parse errors", parse_errors),
                         ("problems", problems),
                         ("missing", [f"#{n} {messages[n][0]}" for n in missing])):
        for text in items[:20]:
            print(f"  {title}: {text}")
        if len(items) > 20:
            print(f"  ... and {len(items) - 20} more {title}")
    ok = not failures and not unsent and not missing and not duplicates and not problems and not crashed
    ok = ok and len(rows) == len(messages)
    print("OK: every message landed in INBOX with parsed metadata" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
