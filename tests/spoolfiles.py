"""Which spool files this process holds open (the spool's files are
anonymous: /proc/self/fd is where they show)."""
import os
import time


def open_files_in(directory: str) -> list[str]:
    """Targets of this process's file descriptors inside `directory`."""
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
    """Poll (from a client thread, never the reactor's) until a file in
    `directory` is open, up to `seconds`; whether one was."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if open_files_in(directory):
            return True
        time.sleep(0.01)
    return False
