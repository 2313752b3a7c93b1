"""The spool: message buffers in memory, then in anonymous files."""
import os
import resource
import signal
import stat

from twisted.trial import unittest

from emailsvc.config import ConfigError, parse
from emailsvc.spool import Spool
from tests.spoolfiles import open_files_in


class BufferTests(unittest.SynchronousTestCase):
    def setUp(self):
        self.directory = os.path.abspath(self.mktemp())
        os.mkdir(self.directory)

    def test_memory_then_an_anonymous_file(self):
        buffer = Spool(10, self.directory).buffer()
        self.addCleanup(buffer.close)
        buffer.write(b"0123456789")
        self.assertEqual(open_files_in(self.directory), [])
        buffer.write(b"!")
        self.assertEqual(len(open_files_in(self.directory)), 1)
        self.assertEqual(os.listdir(self.directory), [])
        self.assertEqual(buffer.take(), b"0123456789!")
        self.assertTrue(buffer.closed)
        self.assertEqual(open_files_in(self.directory), [])
        self.assertIsNone(buffer.take())  # taken once

    def test_a_missing_directory_is_an_error_kept_not_raised(self):
        buffer = Spool(10, os.path.join(self.directory, "missing")).buffer()
        buffer.write(b"short")
        buffer.write(b" and past the threshold")
        self.assertIsInstance(buffer.error, FileNotFoundError)
        self.assertTrue(buffer.closed)
        buffer.write(b"more")  # ignored
        self.assertIsNone(buffer.take())

    def test_a_full_file_system_is_an_error_kept_not_raised(self):
        """Writes a buffered file holds back fail at take() or close(): with
        the file size limited (as by a full disk), neither raises."""
        limit = resource.getrlimit(resource.RLIMIT_FSIZE)
        handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        self.addCleanup(signal.signal, signal.SIGXFSZ, handler)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1024, limit[1]))
        try:
            taken = Spool(10, self.directory).buffer()
            taken.write(b"x" * 2000)  # held in the file's write buffer
            closed = Spool(10, self.directory).buffer()
            closed.write(b"x" * 2000)
            self.assertIsNone(taken.take())
            closed.close()
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, limit)
        self.assertIsInstance(taken.error, OSError)
        self.assertTrue(taken.closed and closed.closed)
        self.assertEqual(open_files_in(self.directory), [])


class FromConfigTests(unittest.SynchronousTestCase):
    def test_made_private_under_the_data_directory(self):
        data_dir = self.mktemp()
        config = parse(f"[server]\ndata_dir = {data_dir!r}\nspool_threshold = 4096\n", "test.toml")
        spool = Spool.from_config(config)
        self.assertEqual((spool.threshold, spool.directory), (4096, os.path.join(data_dir, "spool")))
        self.assertEqual(stat.S_IMODE(os.stat(spool.directory).st_mode), 0o700)
        self.assertEqual(Spool.from_config(config).directory, spool.directory)  # again: kept

    def test_unusable_data_directory_names_the_key(self):
        data_dir = self.mktemp()
        with open(data_dir, "w"):
            pass  # a file where the directory should be
        config = parse(f"[server]\ndata_dir = {data_dir!r}\n", "test.toml")
        error = self.assertRaises(ConfigError, Spool.from_config, config)
        self.assertEqual([problem.key for problem in error.problems], ["server.data_dir"])
        self.assertIn("cannot make the spool directory", error.render())
