"""Password hashing runs in a pool of its own, at a lower CPU priority."""
import os
import sys
import threading

from twisted.internet import defer
from twisted.trial import unittest

from emailsvc.cred import passwords


class PasswordPoolTests(unittest.TestCase):
    @defer.inlineCallbacks
    def test_round_trip(self):
        hashed = yield passwords.hash_later("correct horse")
        self.assertTrue((yield passwords.verify_later(hashed, "correct horse")))
        self.assertFalse((yield passwords.verify_later(hashed, "wrong horse")))
        self.assertFalse((yield passwords.verify_later("not a hash", "correct horse")))

    @defer.inlineCallbacks
    def test_verification_leaves_the_database_threads_alone(self):
        where = []

        def record(hashed, password):
            tid = threading.get_native_id()
            where.append((threading.current_thread().name, os.getpriority(os.PRIO_PROCESS, tid)))
            return True

        self.patch(passwords, "verify_password", record)
        self.assertTrue((yield passwords.verify_later("hash", "password")))
        name, niceness = where[0]
        self.assertIn("passwords", name)
        if sys.platform.startswith("linux"):
            self.assertGreaterEqual(niceness, min(19, os.getpriority(os.PRIO_PROCESS, 0) + passwords.NICENESS))
