"""IMAP on a 100,000-message mailbox: time and peak memory of SELECT,
`UID FETCH 1:* (UID FLAGS)`, `UID SEARCH` and `FETCH n BODY[]` (issue 4).

The IMAP server runs in this process (the embedded store, an implicit-TLS
listener on loopback, as in tests/imap/support.py) so that tracemalloc can
see every Python allocation, the server's, the SQLite reader threads' and the
client's (which keeps only counts).  The mailbox is filled straight into
SQLite in one transaction, all rows sharing one content row and one blob
file (so FETCH BODY[] reads a file, where a delivery this small is inline).
Each command is run twice: once untraced for its time, once under
tracemalloc for its peak.  Writes the figures into benchmarks/README.rst.

    python benchmarks/imap_bigmailbox.py [--messages 100000] [--no-readme]
"""
from __future__ import annotations

import argparse
import datetime
import os
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

from twisted.internet import defer  # noqa: E402
from twisted.internet.threads import deferToThread  # noqa: E402
from twisted.python.failure import Failure  # noqa: E402

import harness  # noqa: E402
from emailsvc import tls  # noqa: E402
from emailsvc.config import StoreConfig, TLSConfig  # noqa: E402
from emailsvc.cred.throttle import AuthThrottle  # noqa: E402
from emailsvc.imap.factory import make_factory  # noqa: E402
from emailsvc.store.fsblobs import FilesystemBlobStore  # noqa: E402
from emailsvc.store.inline import InlineBlobStore  # noqa: E402
from emailsvc.store.sql.backend import SQLiteBackend  # noqa: E402
from tests.imap.bigmailbox import fill, probe  # noqa: E402


@defer.inlineCallbacks
def run(reactor, options, root):
    metadata = SQLiteBackend(os.path.join(root, "meta.sqlite3"), reactor)
    blobs = InlineBlobStore(metadata.mail, FilesystemBlobStore(os.path.join(root, "blobs"), reactor),
                            StoreConfig.inline_max, reactor)
    yield metadata.start()
    try:
        yield blobs.start()
        yield metadata.directory.add_domain("example.test")
        user = yield metadata.directory.add_user(harness.USER, harness.PASSWORD)
        yield metadata.mail.provision_user(user.id)
        inbox = yield metadata.mail.get_mailbox(user.id, "INBOX")
        started = time.perf_counter()
        yield fill(metadata.db, blobs, inbox.id, options.messages)
        filled = time.perf_counter() - started
        cert, key = tls.ensure_certificate(TLSConfig(), root, "localhost")
        throttle = AuthThrottle(reactor, max_failures=50, failure_window=60, lockout=60, max_delay=0)
        factory = make_factory(metadata.directory, metadata.mail, blobs, throttle, reactor, implicit_tls=True)
        port = reactor.listenSSL(0, factory, tls.server_context(cert, key), interface="127.0.0.1")
        address = ("127.0.0.1", port.getHost().port)
        try:
            timed = yield deferToThread(probe, address, harness.USER, harness.PASSWORD, options.messages, False)
            traced = yield deferToThread(probe, address, harness.USER, harness.PASSWORD, options.messages, True)
        finally:
            yield port.stopListening()
    finally:
        yield metadata.stop()
    return filled, timed, traced


def report(messages, filled, timed, traced) -> str:
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"Measured {when} on {harness.machine()}::", "",
             f"    python benchmarks/imap_bigmailbox.py --messages {messages}", "",
             f"{messages:,} messages in INBOX (filled in {filled:.1f} s); time untraced, peak"
             " = the most Python memory (tracemalloc, all threads) allocated during the command:", ""]
    rows = [(t["name"], f"{t['seconds'] * 1000:,.0f} ms", f"{p['peak'] / 1e6:.2f} MB", f"{t['octets']:,}",
             t["status"].split(" ", 2)[1]) for t, p in zip(timed, traced)]
    header = ("command", "time", "peak memory", "octets sent", "status")
    widths = [max(len(str(row[i])) for row in rows + [header]) for i in range(len(header))]
    rule = "  ".join("=" * width for width in widths)
    lines.append(rule)
    lines.append("  ".join(str(value).ljust(width) for value, width in zip(header, widths)))
    lines.append(rule)
    for row in rows:
        lines.append("  ".join(str(value).ljust(width) for value, width in zip(row, widths)))
    lines.append(rule)
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--no-readme", action="store_true", help="print only")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="imap-big-") as root:
        from twisted.internet import reactor

        outcome = []
        done = run(reactor, options, root)
        done.addBoth(outcome.append)
        done.addBoth(lambda _: reactor.stop())
        reactor.run()
    if not outcome or isinstance(outcome[0], Failure):
        if outcome:
            outcome[0].raiseException()
        sys.exit("imap_bigmailbox: interrupted")
    filled, timed, traced = outcome[0]
    text = report(options.messages, filled, timed, traced)
    print(text)
    if not options.no_readme:
        harness.write_results("imap-bigmailbox", "IMAP on a 100,000-message mailbox", text)


if __name__ == "__main__":
    main()
