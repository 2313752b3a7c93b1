"""Blobs as files under `root/ab/cd/<key>`, acknowledged only once durable.

A put writes a temporary file and renames it into place without syncing.
Puts that arrive while a sync pass runs wait for the next one, and each pass
(in a worker thread) writes every pending blob, then makes them all durable
at once: one syncfs(2) of the filesystem on Linux >= 5.8 with a local
journaling filesystem (it flushes the data and commits the journal, renames
included, and reports writeback errors), otherwise an fsync of every file
and of every directory that changed.  A put's Deferred fires only after its
pass, so its bytes and its directory entry are on stable storage; a crash
before that leaves at most a file that no message references, which the
garbage collector removes.  N concurrent deliveries thus share one sync.
"""
from __future__ import annotations

import ctypes
import os
import sys
import uuid
from dataclasses import dataclass, field

from twisted.internet import defer
from twisted.internet.threads import deferToThreadPool
from twisted.python.failure import Failure
from zope.interface import implementer

from emailsvc.errors import BlobNotFound
from emailsvc.interfaces import IBlobStore

# Where syncfs(2) writes back and commits everything fsync would, renames included.
_SYNCFS_FILESYSTEMS = frozenset({"ext4", "ext3", "xfs", "btrfs", "f2fs"})
# Before 5.8, syncfs(2) returned 0 even when writeback failed.
_SYNCFS_MIN_KERNEL = (5, 8)
_READ_NOW_BYTES = 256 * 1024


@dataclass
class _Written:
    """A blob renamed into place in this pass, its descriptor still open."""

    key: str
    descriptor: int
    directory: str
    created: list[str] = field(default_factory=list)


@implementer(IBlobStore)
class FilesystemBlobStore:
    """Blobs under `root/ab/cd/<key>`; content is never rewritten.

    `sync` is "auto" (syncfs where it is safe, else fsync) or "fsync"
    (always an fsync per file and per changed directory).
    """

    def __init__(self, root: str, reactor, sync: str = "auto"):
        if sync not in ("auto", "fsync"):
            raise ValueError(f"sync must be 'auto' or 'fsync', not {sync!r}")
        self.root = os.path.abspath(root)
        self._reactor = reactor
        self._tmp = os.path.join(self.root, "tmp")
        self._sync_mode = sync
        self._syncfs_devices: dict[int, bool] = {}
        self._pending: list[tuple[bytes, defer.Deferred]] = []
        self._syncing = False
        self._unfinished = 0
        self._idle: list[defer.Deferred] = []

    @classmethod
    def from_config(cls, config, reactor):
        return cls(config.store.fs.path, reactor, config.store.fs.sync)

    def start(self):
        os.makedirs(self._tmp, exist_ok=True)
        return defer.succeed(None)

    def stop(self):
        """Fire once every put in progress has finished. @return: Deferred."""
        if not self._unfinished:
            return defer.succeed(None)
        waiter = defer.Deferred()
        self._idle.append(waiter)
        return waiter

    def _path(self, key: str) -> str:
        if len(key) != 32 or not all(c in "0123456789abcdef" for c in key):
            raise BlobNotFound(f"invalid blob key: {key!r}")
        return os.path.join(self.root, key[:2], key[2:4], key)

    def _run(self, function, *args):
        return deferToThreadPool(self._reactor, self._reactor.getThreadPool(), function, *args)

    # Writing: group sync

    def put(self, data):
        done = defer.Deferred()
        self._pending.append((bytes(data), done))
        self._unfinished += 1
        if not self._syncing:
            self._start_pass()
        return done

    def _start_pass(self):
        batch, self._pending = self._pending, []
        self._syncing = True
        self._run(self._write_and_sync, [data for data, _ in batch]).addBoth(self._pass_done, batch)

    def _pass_done(self, outcomes, batch):
        self._syncing = False
        if self._pending:
            self._start_pass()
        if isinstance(outcomes, Failure):
            outcomes = [outcomes] * len(batch)
        for (_, done), outcome in zip(batch, outcomes):
            self._unfinished -= 1
            if isinstance(outcome, Failure):
                done.errback(outcome)
            else:
                done.callback(outcome)
        if not self._unfinished:
            waiters, self._idle = self._idle, []
            for waiter in waiters:
                waiter.callback(None)

    def _write_and_sync(self, blobs: list[bytes]) -> list:
        """In a thread: write every blob, sync them all; a key or a Failure for each."""
        outcomes: list = []
        written: list[tuple[int, _Written]] = []
        try:
            for index, data in enumerate(blobs):
                try:
                    written.append((index, self._write(data)))
                    outcomes.append(None)
                except Exception:
                    outcomes.append(Failure())
            if written:
                try:
                    self._sync([item for _, item in written])
                except Exception:
                    failure = Failure()
                    for index, item in written:
                        outcomes[index] = failure
                        _unlink(self._path(item.key))  # never acknowledged: do not leave it behind
                else:
                    for index, item in written:
                        outcomes[index] = item.key
        finally:
            for _, item in written:
                os.close(item.descriptor)
        return outcomes

    def _write(self, data: bytes) -> _Written:
        key = uuid.uuid4().hex
        final = self._path(key)
        temporary = os.path.join(self._tmp, key)
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(descriptor, view):]
            directory = os.path.dirname(final)
            created = [] if os.path.isdir(directory) else _make_directories(directory)
            os.rename(temporary, final)
        except BaseException:
            os.close(descriptor)
            _unlink(temporary)
            raise
        return _Written(key, descriptor, directory, created)

    def _sync(self, written: list[_Written]):
        """Make the data and directory entries of `written` durable; raises OSError."""
        by_device: dict[int, list[_Written]] = {}
        for item in written:
            by_device.setdefault(os.fstat(item.descriptor).st_dev, []).append(item)
        for device, items in by_device.items():
            if self._can_syncfs(device):
                _syncfs(items[0].descriptor)
                continue
            for item in items:
                os.fsync(item.descriptor)
            directories = {item.directory for item in items}
            for item in items:
                # A new directory's own entry lives in its parent.
                directories.update(os.path.dirname(path) for path in item.created)
            for directory in sorted(directories, key=len, reverse=True):
                _fsync_directory(directory)

    def _can_syncfs(self, device: int) -> bool:
        if self._sync_mode != "auto" or _SYSCALL is None:
            return False
        if device not in self._syncfs_devices:
            self._syncfs_devices[device] = (
                _kernel_version() >= _SYNCFS_MIN_KERNEL and _filesystem_type(device) in _SYNCFS_FILESYSTEMS
            )
        return self._syncfs_devices[device]

    # Reading and collecting

    def get(self, key, offset=0, length=None):
        """Read in a thread, except up to `_READ_NOW_BYTES`, which are read at
        once: from the page cache that costs less than the hand-off to a
        thread and back (an IMAP FETCH of a typical message body)."""
        if length is not None and length <= _READ_NOW_BYTES:
            return defer.maybeDeferred(self._get, key, offset, length)
        return self._run(self._get, key, offset, length)

    def _get(self, key, offset, length) -> bytes:
        try:
            with open(self._path(key), "rb") as handle:
                handle.seek(offset)
                return handle.read() if length is None else handle.read(length)
        except FileNotFoundError:
            raise BlobNotFound(f"no blob {key}") from None

    def delete(self, key):
        return self._run(self._delete, key)

    def _delete(self, key):
        try:
            os.unlink(self._path(key))
        except FileNotFoundError:
            pass

    def keys_older_than(self, timestamp):
        return self._run(self._keys_older_than, timestamp)

    def _keys_older_than(self, timestamp) -> list[str]:
        keys = []
        for directory, subdirectories, files in os.walk(self.root):
            if directory == self._tmp:
                subdirectories[:] = []
                for name in files:
                    path = os.path.join(directory, name)
                    if os.stat(path).st_mtime < timestamp:
                        os.unlink(path)  # a write that died before its rename
                continue
            for name in files:
                if len(name) == 32 and os.stat(os.path.join(directory, name)).st_mtime < timestamp:
                    keys.append(name)
        return keys


def _make_directories(directory: str) -> list[str]:
    """Create `directory` and its parent as needed; the ones created, parent first."""
    created = []
    for path in (os.path.dirname(directory), directory):
        try:
            os.mkdir(path)
        except FileExistsError:
            continue
        created.append(path)
    return created


def _unlink(path: str):
    try:
        os.unlink(path)
    except OSError:
        pass


def _fsync_directory(path: str):
    descriptor = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _load_syncfs():
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int]
    function.restype = ctypes.c_int
    return function


_SYSCALL = _load_syncfs()


def _syncfs(descriptor: int):
    """syncfs(2) of the filesystem holding `descriptor` (the GIL is released)."""
    if _SYSCALL(descriptor) != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"syncfs: {os.strerror(error)}")


def _kernel_version() -> tuple[int, ...]:
    numbers = []
    for part in os.uname().release.split("-")[0].split(".")[:2]:
        digits = "".join(c for c in part if c.isdigit())
        numbers.append(int(digits) if digits else 0)
    return tuple(numbers)


def _filesystem_type(device: int) -> str | None:
    """The type of the filesystem mounted from `device`, from /proc/self/mountinfo."""
    wanted = f"{os.major(device)}:{os.minor(device)}"
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                fields = line.split()
                if len(fields) > 2 and fields[2] == wanted and " - " in line:
                    return line.split(" - ", 1)[1].split()[0]
    except OSError:
        pass
    return None
