"""The in-process change notifier."""
from twisted.trial import unittest

from emailsvc.store.notify import Notifier


class NotifierTests(unittest.SynchronousTestCase):
    def test_publish_subscribe_cancel(self):
        notifier = Notifier()
        seen = []
        first = notifier.subscribe(1, lambda box: seen.append(("first", box)))
        notifier.subscribe(1, lambda box: seen.append(("second", box)))
        notifier.subscribe(2, lambda box: seen.append(("other", box)))
        notifier.publish(1, 1, 3)
        self.assertEqual(seen, [("first", 1), ("second", 1)])
        first.cancel()
        first.cancel()
        notifier.publish(1, 2)
        self.assertEqual(seen[2:], [("second", 1), ("other", 2)])
        self.assertEqual((notifier.subscribers(1), notifier.subscribers(3)), (1, 0))

    def test_failing_subscriber_is_logged_not_raised(self):
        notifier = Notifier()
        seen = []
        notifier.subscribe(1, lambda box: 1 / 0)
        notifier.subscribe(1, seen.append)
        notifier.publish(1)
        self.assertEqual(seen, [1])
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    def test_cancel_during_publish(self):
        notifier = Notifier()
        seen = []
        later = None

        def cancel_later(box):
            later.cancel()

        notifier.subscribe(1, cancel_later)
        later = notifier.subscribe(1, seen.append)
        notifier.publish(1)
        self.assertEqual(seen, [])
        self.assertEqual(notifier.subscribers(1), 1)
