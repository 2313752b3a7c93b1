"""Password checking, throttling and the realm."""
from twisted.cred import credentials, error
from twisted.cred.checkers import ICredentialsChecker
from twisted.internet import defer, task
from twisted.trial import unittest
from zope.interface import Interface
from zope.interface.verify import verifyObject

from emailsvc.cred.checker import DirectoryChecker
from emailsvc.cred.realm import MailRealm
from emailsvc.cred.throttle import AuthThrottle
from emailsvc.store.model import User


class FakeDirectory:
    def authenticate(self, address, password):
        return defer.succeed(User(7, "alice@example.test") if (address, password) == ("alice@example.test", "pw") else None)


class ThrottleTests(unittest.SynchronousTestCase):
    def setUp(self):
        self.clock = task.Clock()
        self.throttle = AuthThrottle(self.clock, max_failures=3, failure_window=60, lockout=300)

    def test_lockout_after_failures_then_expiry(self):
        self.assertEqual(self.throttle.failed("192.0.2.1", "a"), 0.25)
        self.assertEqual(self.throttle.failed("192.0.2.1", "b"), 0.5)
        self.assertFalse(self.throttle.locked("192.0.2.1", "c"))
        self.throttle.failed("192.0.2.1", "c")
        self.assertTrue(self.throttle.locked("192.0.2.1", "anyone"))
        self.assertFalse(self.throttle.locked("192.0.2.2", "anyone"))
        self.clock.advance(301)
        self.assertFalse(self.throttle.locked("192.0.2.1", "anyone"))

    def test_account_locked_from_many_addresses(self):
        for number in range(3):
            self.throttle.failed(f"192.0.2.{number}", "Alice@example.test")
        self.assertTrue(self.throttle.locked("198.51.100.1", "alice@example.test"))

    def test_window_forgets_old_failures(self):
        self.throttle.failed("192.0.2.1", "a")
        self.throttle.failed("192.0.2.1", "a")
        self.clock.advance(61)
        self.throttle.failed("192.0.2.1", "a")
        self.assertFalse(self.throttle.locked("192.0.2.1", "a"))

    def test_success_clears_account(self):
        self.throttle.failed("192.0.2.1", "a")
        self.throttle.failed("192.0.2.1", "a")
        self.throttle.succeeded("192.0.2.1", "a")
        self.assertEqual(self.throttle.failed("192.0.2.9", "a"), 0.25)


class CheckerTests(unittest.TestCase):
    def setUp(self):
        self.clock = task.Clock()
        throttle = AuthThrottle(self.clock, max_failures=2, failure_window=60, lockout=300)
        self.checker = DirectoryChecker(FakeDirectory(), throttle, self.clock).for_client("192.0.2.1")

    def test_interface(self):
        self.assertTrue(verifyObject(ICredentialsChecker, self.checker))

    def test_good_password(self):
        creds = credentials.UsernamePassword(b"alice@example.test", b"pw")
        self.assertEqual(self.successResultOf(self.checker.requestAvatarId(creds)), 7)

    def test_failures_are_delayed_then_locked_out(self):
        bad = credentials.UsernamePassword(b"alice@example.test", b"nope")
        attempt = self.checker.requestAvatarId(bad)
        self.assertNoResult(attempt)
        self.clock.advance(0.25)
        self.failureResultOf(attempt, error.UnauthorizedLogin)
        self.checker.requestAvatarId(bad).addErrback(lambda f: None)
        self.clock.advance(5)
        good = credentials.UsernamePassword(b"alice@example.test", b"pw")
        failure = self.failureResultOf(self.checker.requestAvatarId(good), error.UnauthorizedLogin)
        self.assertEqual(str(failure.value), "Too many failures, try again later")


class IThing(Interface):
    pass


class RealmTests(unittest.TestCase):
    def test_avatar_for_interface(self):
        realm = MailRealm({IThing: lambda user_id: defer.succeed(("thing", user_id))})
        interface, avatar, logout = self.successResultOf(realm.requestAvatar(7, None, IThing))
        self.assertEqual((interface, avatar), (IThing, ("thing", 7)))
        logout()
        self.failureResultOf(realm.requestAvatar(7, None, Interface), NotImplementedError)
