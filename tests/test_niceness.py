"""lower_this_thread: the calling thread's niceness only."""
import os
import sys
import threading

from twisted.trial import unittest

from emailsvc.niceness import lower_this_thread


class LowerThisThreadTests(unittest.SynchronousTestCase):
    def test_raises_the_niceness_of_the_calling_thread_only(self):
        if not sys.platform.startswith("linux"):
            raise unittest.SkipTest("niceness is per thread on Linux only")
        seen = {}

        def lowered():
            tid = threading.get_native_id()
            before = os.getpriority(os.PRIO_PROCESS, tid)
            lower_this_thread(3)
            seen["change"] = os.getpriority(os.PRIO_PROCESS, tid) - before

        thread = threading.Thread(target=lowered)
        before = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        thread.start()
        thread.join()
        self.assertEqual(seen["change"], min(3, 19 - before))
        self.assertEqual(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()), before)
