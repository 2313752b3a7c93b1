"""The aiosmtpd baseline: accept mail for anyone, store it in a Maildir durably.

Each message is written to Maildir/tmp, fsynced, renamed into Maildir/new,
and the directory is fsynced, all before the 250 reply.  The file work runs
in the event loop's default thread pool, so concurrent sessions overlap
their fsyncs instead of queueing behind one another.

    python benchmarks/maildir_aiosmtpd.py --port PORT --maildir DIR

Prints "ready" on standard output once it listens; stops on SIGTERM/SIGINT.
"""
from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import signal
import socket
import time

from aiosmtpd.smtp import SMTP


class MaildirHandler:
    """An aiosmtpd handler: DATA is answered 250 once the message is durable."""

    def __init__(self, maildir: str):
        self.maildir = os.path.abspath(maildir)
        for sub in ("tmp", "new", "cur"):
            os.makedirs(os.path.join(self.maildir, sub), exist_ok=True)
        self._counter = itertools.count()
        self._host = socket.gethostname().replace("/", "_").replace(":", "_")
        self._pid = os.getpid()

    def _unique(self) -> str:
        return f"{int(time.time())}.P{self._pid}Q{next(self._counter)}.{self._host}"

    def _store(self, data: bytes) -> str:
        name = self._unique()
        temporary = os.path.join(self.maildir, "tmp", name)
        final = os.path.join(self.maildir, "new", name)
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(descriptor, view):]
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        os.rename(temporary, final)
        directory = os.open(os.path.join(self.maildir, "new"), os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
        return name

    async def handle_DATA(self, server, session, envelope):
        data = envelope.original_content or envelope.content
        if isinstance(data, str):
            data = data.encode("utf-8", "surrogateescape")
        trace = f"Return-Path: <{envelope.mail_from}>\r\n".encode("utf-8", "replace")
        try:
            await asyncio.get_running_loop().run_in_executor(None, self._store, trace + data)
        except OSError:
            return "451 4.3.0 Cannot store the message"
        return "250 2.0.0 Ok"


async def serve(host: str, port: int, maildir: str):
    handler = MaildirHandler(maildir)
    loop = asyncio.get_running_loop()
    # A fixed hostname: SMTP() would otherwise call getfqdn() for every session.
    server = await loop.create_server(
        lambda: SMTP(handler, hostname="aiosmtpd.bench.test", data_size_limit=50 * 1024 * 1024),
        host=host, port=port,
    )
    stopped = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopped.set)
    print("ready", flush=True)
    await stopped.wait()
    server.close()
    await server.wait_closed()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--maildir", required=True)
    args = parser.parse_args()
    asyncio.run(serve(args.host, args.port, args.maildir))


if __name__ == "__main__":
    main()
