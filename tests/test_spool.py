"""The spool: message buffers in memory, then in anonymous files."""
import os
import stat

from twisted.trial import unittest

from emailsvc.config import ConfigError, parse
from emailsvc.spool import Spool


class BufferTests(unittest.SynchronousTestCase):
    def test_memory_then_an_anonymous_file(self):
        directory = os.path.abspath(self.mktemp())
        os.mkdir(directory)
        buffer = Spool(10, directory).buffer()
        buffer.write(b"0123456789")
        self.assertFalse(buffer._rolled)
        buffer.write(b"!")
        self.assertTrue(buffer._rolled)
        self.assertEqual(os.listdir(directory), [])
        self.assertTrue(os.readlink(f"/proc/self/fd/{buffer.fileno()}").startswith(directory + "/"))
        buffer.seek(0)
        self.assertEqual(buffer.read(), b"0123456789!")
        buffer.close()


class FromConfigTests(unittest.SynchronousTestCase):
    def test_made_private_under_the_data_directory(self):
        data_dir = self.mktemp()
        config = parse(f"[server]\ndata_dir = {data_dir!r}\n", "test.toml")
        spool = Spool.from_config(config)
        self.assertEqual((spool.threshold, spool.directory), (1024 * 1024, os.path.join(data_dir, "spool")))
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
