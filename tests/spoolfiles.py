"""Spool helpers for tests: a spool that keeps every buffer it makes, and
which spool files this process holds open (the spool's files are
anonymous: /proc/self/fd is where they show)."""
import os
import time

from emailsvc.spool import Spool


class KeepingSpool(Spool):
    """A Spool that remembers its buffers, so a test can see each was closed
    (dropping the last reference would close it too, unseen)."""

    def __init__(self, threshold, directory):
        super().__init__(threshold, directory)
        self.buffers = []

    def buffer(self):
        buffer = super().buffer()
        self.buffers.append(buffer)
        return buffer


def open_files_in(directory: str) -> list[str]:
    """Targets of this process's file descriptors inside `directory`."""
    directory = os.path.realpath(directory)
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(directory + "/"):
            found.append(target)
    return found


def wait_for_open_file_in(directory: str, seconds: float = 10.0) -> bool:
    """Poll from a client thread (never the reactor's) until a file in
    `directory` is open, up to `seconds` and 1,000 looks; whether one was."""
    deadline = time.monotonic() + seconds
    for _ in range(1000):
        if open_files_in(directory):
            return True
        if time.monotonic() > deadline:
            break
        time.sleep(0.01)
    return False

