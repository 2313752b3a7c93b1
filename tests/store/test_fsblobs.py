"""The filesystem blob store: batched sync, failures, both sync modes."""
import os
from unittest import mock
from twisted.internet import defer, reactor
from twisted.trial import unittest
from emailsvc.errors import BlobNotFound
from emailsvc.store import fsblobs
from emailsvc.store.fsblobs import FilesystemBlobStore
from tests.store.test_sqlite import EmbeddedConformanceTests, open_embedded


class FsyncConformance(EmbeddedConformanceTests):
    """The suite with every message in blob files, synced one by one."""

    def make_store(self):
        return open_embedded(self, inline_max=0, sync="fsync")


class Batching(unittest.TestCase):
    def store(self, sync="auto"):
        root = self.mktemp()
        blobs = FilesystemBlobStore(root, reactor, sync=sync)
        blobs.start()
        return blobs

    @defer.inlineCallbacks
    def test_many_concurrent(self):
        for sync in ("auto", "fsync"):
            blobs = self.store(sync)
            datas = [os.urandom(100 + i) for i in range(300)]
            keys = yield defer.gatherResults([blobs.put(d) for d in datas])
            self.assertEqual(len(set(keys)), 300)
            for k, d in zip(keys, datas):
                self.assertEqual((yield blobs.get(k)), d)
            self.assertEqual(os.listdir(blobs._tmp), [])
            yield blobs.stop()

    @defer.inlineCallbacks
    def test_one_syncfs_serves_a_batch(self):
        blobs = self.store()
        calls = []
        with mock.patch.object(blobs, "_can_syncfs", lambda device: True), \
             mock.patch.object(fsblobs, "_syncfs", calls.append), \
             mock.patch.object(os, "fsync", side_effect=AssertionError("no fsync expected")):
            keys = yield defer.gatherResults([blobs.put(b"x%d" % i) for i in range(50)])
        self.assertTrue(1 <= len(calls) < 50, calls)
        self.assertEqual((yield blobs.get(keys[7])), b"x7")

    @defer.inlineCallbacks
    def test_fsync_mode_syncs_files_and_dirs(self):
        blobs = self.store("fsync")
        synced = []
        real = os.fsync
        with mock.patch.object(os, "fsync", lambda fd: (synced.append(fd), real(fd))[1]):
            key = yield blobs.put(b"data")
        # file, leaf dir, first-level dir (created), root (created)
        self.assertEqual(len(synced), 4)
        self.assertEqual((yield blobs.get(key)), b"data")

    @defer.inlineCallbacks
    def test_sync_failure_fails_batch_and_removes_files(self):
        blobs = self.store()
        def boom(fd):
            raise OSError(5, "EIO")
        with mock.patch.object(fsblobs, "_syncfs", boom), mock.patch.object(os, "fsync", boom):
            results = yield defer.DeferredList([blobs.put(b"a"), blobs.put(b"b"), blobs.put(b"c")], consumeErrors=True)
        self.assertTrue(all(not ok for ok, _ in results))
        self.assertEqual((yield blobs.keys_older_than(2 ** 40)), [])
        key = yield blobs.put(b"after")
        self.assertEqual((yield blobs.get(key)), b"after")

    @defer.inlineCallbacks
    def test_write_failure_fails_one(self):
        blobs = self.store()
        real = os.write
        def write(fd, data):
            if bytes(data[:3]) == b"bad":
                raise OSError(28, "ENOSPC")
            return real(fd, data)
        with mock.patch.object(os, "write", write):
            results = yield defer.DeferredList([blobs.put(b"good1"), blobs.put(b"bad"), blobs.put(b"good2")], consumeErrors=True)
        self.assertEqual([ok for ok, _ in results], [True, False, True])
        self.assertEqual(os.listdir(blobs._tmp), [])

    @defer.inlineCallbacks
    def test_stop_waits(self):
        blobs = self.store()
        d = blobs.put(b"x" * 100000)
        stopped = blobs.stop()
        self.assertFalse(d.called)
        yield stopped
        self.assertTrue(d.called)


class Reading(unittest.TestCase):
    @defer.inlineCallbacks
    def test_small_ranges_are_read_at_once_large_ones_in_a_thread(self):
        blobs = FilesystemBlobStore(self.mktemp(), reactor)
        yield blobs.start()
        data = os.urandom(fsblobs._READ_NOW_BYTES + 10)
        key = yield blobs.put(data)
        self.assertEqual(self.successResultOf(blobs.get(key, 5, 100)), data[5:105])
        self.failureResultOf(blobs.get("0" * 32, 0, 10), BlobNotFound)
        whole = blobs.get(key)
        self.assertNoResult(whole)
        self.assertEqual((yield whole), data)
        self.assertEqual((yield blobs.get(key, 0, len(data))), data)
