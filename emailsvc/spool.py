"""Where a message being received waits until it is complete.

SMTP DATA and IMAP APPEND keep the first `smtp.spool_threshold` octets of
a message in memory and write the rest to an anonymous file (it has no
name, so a crash leaves nothing behind) in {server.data_dir}/spool.  A
connection that trickles in a large message, or stops half-way, then holds
a file descriptor rather than the message's size in memory.
"""
from __future__ import annotations

import os
import tempfile

from emailsvc.config import ConfigError, Problem, SMTPConfig


class Spool:
    """Makes message buffers: `threshold` octets in memory, the rest in an
    anonymous file in `directory` (None: the system's temporary directory)."""

    def __init__(self, threshold: int = SMTPConfig.spool_threshold, directory: str | None = None):
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
        return cls(config.smtp.spool_threshold, directory)

    def buffer(self):
        """A new binary file for one message; closing it deletes it."""
        return tempfile.SpooledTemporaryFile(self.threshold, dir=self.directory)
