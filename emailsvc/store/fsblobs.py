"""Blobs as files: written to a temporary file, fsynced, renamed, directory fsynced."""
from __future__ import annotations

import os
import uuid

from twisted.internet import defer
from twisted.internet.threads import deferToThreadPool
from zope.interface import implementer

from emailsvc.errors import BlobNotFound
from emailsvc.interfaces import IBlobStore


@implementer(IBlobStore)
class FilesystemBlobStore:
    """Blobs under `root/ab/cd/<key>`; content is never rewritten."""

    def __init__(self, root: str, reactor):
        self.root = os.path.abspath(root)
        self._reactor = reactor
        self._tmp = os.path.join(self.root, "tmp")

    @classmethod
    def from_config(cls, config, reactor):
        return cls(config.store.fs.path, reactor)

    def start(self):
        os.makedirs(self._tmp, exist_ok=True)
        return defer.succeed(None)

    def stop(self):
        return defer.succeed(None)

    def _path(self, key: str) -> str:
        if len(key) != 32 or not all(c in "0123456789abcdef" for c in key):
            raise BlobNotFound(f"invalid blob key: {key!r}")
        return os.path.join(self.root, key[:2], key[2:4], key)

    def _run(self, function, *args):
        return deferToThreadPool(self._reactor, self._reactor.getThreadPool(), function, *args)

    def put(self, data):
        return self._run(self._put, bytes(data))

    def _put(self, data: bytes) -> str:
        key = uuid.uuid4().hex
        final = self._path(key)
        temporary = os.path.join(self._tmp, key)
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(descriptor, view):]
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        directory = os.path.dirname(final)
        created = not os.path.isdir(directory)
        os.makedirs(directory, exist_ok=True)
        os.rename(temporary, final)
        _fsync_directory(directory)
        if created:
            _fsync_directory(os.path.dirname(directory))
            _fsync_directory(self.root)
        return key

    def get(self, key, offset=0, length=None):
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


def _fsync_directory(path: str):
    descriptor = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
