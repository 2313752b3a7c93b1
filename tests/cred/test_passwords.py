"""Password hashing runs in a pool of its own, at a lower CPU priority."""
import os
import sys
import threading

from twisted.internet import defer, threads
from twisted.logger import globalLogPublisher
from twisted.trial import unittest

from emailsvc.cred import passwords
from tests.polling import until


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

    @defer.inlineCallbacks
    def test_checks_past_the_waiting_limit_fail_at_once(self):
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        release = threading.Event()
        self.addCleanup(release.set)
        self.patch(passwords, "verify_password", lambda hashed, password: release.wait(10))
        self.patch(passwords, "MAX_WAITING", 1)
        held = [passwords.verify_later("hash", "password") for _ in range(passwords.THREADS + 1)]
        for _ in range(3):
            self.failureResultOf(passwords.verify_later("hash", "password"), passwords.Busy)
        warnings = [event for event in events if "password checks are waiting" in event.get("log_format", "")]
        self.assertEqual(len(warnings), 1)
        release.set()
        self.assertEqual((yield defer.gatherResults(held)), [True] * (passwords.THREADS + 1))
        self.assertTrue((yield passwords.verify_later("hash", "password")))  # room again

    @defer.inlineCallbacks
    def test_stopping_lets_running_checks_finish_and_skips_waiting_ones(self):
        release = threading.Event()
        self.addCleanup(release.set)
        started = []

        def blocking(hashed, password):
            started.append(password)
            return release.wait(10)

        self.patch(passwords, "verify_password", blocking)
        running = [passwords.verify_later("hash", "running") for _ in range(passwords.THREADS)]
        waiting = [passwords.verify_later("hash", "waiting") for _ in range(2)]
        yield until(lambda: len(started) == passwords.THREADS)
        stopped = threads.deferToThread(passwords._stop)  # it joins the pool's threads
        yield until(passwords._stopping.is_set)
        release.set()
        yield stopped
        self.assertEqual(started, ["running"] * passwords.THREADS)
        self.assertEqual((yield defer.gatherResults(running)), [True] * passwords.THREADS)
        for check in waiting:
            self.failureResultOf(check, passwords.Busy)
        self.assertTrue((yield passwords.verify_later("hash", "again")))  # a new pool
