"""Where a message being received waits until it is complete.

SMTP DATA and IMAP APPEND keep a message in memory while it is at most
`server.spool_threshold` octets; a larger one is written to an anonymous
temporary file in {server.data_dir}/spool (on Linux it never has a name,
elsewhere it is unlinked as soon as it is made, so a crash leaves nothing
behind).  A connection that trickles in a large message, or stops half-way,
then holds a file descriptor rather than the message's size in memory.
"""
from __future__ import annotations

import os
import tempfile

from emailsvc.config import ConfigError, Problem, ServerConfig


class MessageBuffer:
    """One message being received: `write` its pieces, then `take` it once.

    Nothing here raises: a storage failure (a full disk, a missing spool
    directory) is kept in `error`, what was written is let go and later
    writes are ignored.  `close` lets go of it all at any time.
    """

    def __init__(self, threshold: int, directory: str | None):
        self.error: OSError | None = None
        self._file = tempfile.SpooledTemporaryFile(threshold, dir=directory)

    def write(self, data: bytes):
        if self._file is None:
            return
        try:
            self._file.write(data)
        except OSError as error:
            self._fail(error)

    def take(self) -> bytes | None:
        """Everything written, and close(); None once anything failed."""
        if self._file is None:
            return None
        try:
            self._file.seek(0)
            data = self._file.read()
        except OSError as error:
            self._fail(error)
            return None
        self.close()
        return data

    @property
    def closed(self) -> bool:
        return self._file is None

    def close(self):
        file, self._file = self._file, None
        if file is not None:
            try:
                file.close()
            except OSError:
                pass  # flushing what is being thrown away; the descriptor is closed regardless

    def _fail(self, error: OSError):
        self.error = error
        self.close()


class Spool:
    """Makes a `MessageBuffer` per message: in memory up to `threshold`
    octets, else in `directory` (None: the system's temporary directory)."""

    def __init__(self, threshold: int = ServerConfig.spool_threshold, directory: str | None = None):
        self.threshold = threshold
        self.directory = directory

    @classmethod
    def from_config(cls, config) -> Spool:
        """The spool of {server.data_dir}/spool, made (mode 0700) if missing;
        a ConfigError naming server.data_dir when it cannot be."""
        directory = os.path.join(config.server.data_dir, "spool")
        try:
            os.makedirs(directory, mode=0o700, exist_ok=True)
        except OSError as error:
            problem = Problem("server.data_dir", f"cannot make the spool directory {directory!r}: {error.strerror}")
            raise ConfigError(config.path, [problem]) from None
        return cls(config.server.spool_threshold, directory)

    def buffer(self) -> MessageBuffer:
        return MessageBuffer(self.threshold, self.directory)
