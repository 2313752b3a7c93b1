"""The root service: ordered async start, failure handling, clean stop."""
import gc
from types import SimpleNamespace

from twisted.internet import defer, task
from twisted.internet.testing import MemoryReactorClock
from twisted.trial import unittest

from emailsvc.config import ListenerConfig, parse
from emailsvc.service import (
    PROTOCOLS, AsyncService, BuildContext, EmailService, InFlight, ListenerService, StartError, freeze_startup_objects,
)


class Recorder(AsyncService):
    def __init__(self, name, events, start_result=None):
        self.setName(name)
        self.events = events
        self.start_result = start_result

    def start(self):
        self.events.append(("start", self.name))
        return self.start_result or defer.succeed(None)

    def stop(self):
        self.events.append(("stop", self.name))
        return defer.succeed(None)


class RootTests(unittest.TestCase):
    def setUp(self):
        self.reactor = MemoryReactorClock()
        self.root = EmailService(self.reactor, shutdown_timeout=5)
        self.events = []

    def test_children_start_in_order_and_stop_in_reverse(self):
        slow = defer.Deferred()
        Recorder("store", self.events, slow).setServiceParent(self.root)
        Recorder("web", self.events).setServiceParent(self.root)
        self.root.startService()
        self.assertEqual(self.events, [("start", "store")])
        slow.callback(None)
        self.assertEqual(self.events, [("start", "store"), ("start", "web")])
        self.successResultOf(self.root.stopService())
        self.assertEqual(self.events[2:], [("stop", "web"), ("stop", "store")])

    def test_failure_stops_the_reactor(self):
        Recorder("store", self.events, defer.fail(StartError("disk on fire"))).setServiceParent(self.root)
        Recorder("web", self.events).setServiceParent(self.root)
        self.reactor.running = True
        stopped = []
        self.reactor.stop = lambda: stopped.append(True)
        self.root.startService()
        self.assertEqual(self.events, [("start", "store")])
        self.assertEqual(stopped, [True])
        self.assertEqual(len(self.reactor.triggers["after"]["shutdown"]), 1)

    def test_stop_waits_for_inflight_work(self):
        Recorder("store", self.events).setServiceParent(self.root)
        self.root.startService()
        work = self.root.inflight.track(defer.Deferred())
        stopping = self.root.stopService()
        self.assertNoResult(stopping)
        self.assertEqual(self.events, [("start", "store")])
        work.callback("done")
        self.successResultOf(stopping)
        self.assertEqual(self.events[-1], ("stop", "store"))


class InFlightTests(unittest.TestCase):
    def test_wait_times_out(self):
        clock = task.Clock()
        inflight = InFlight()
        stuck = inflight.track(defer.Deferred())
        waiting = inflight.wait(clock, 3)
        clock.advance(2.9)
        self.assertNoResult(waiting)
        clock.advance(0.2)
        self.successResultOf(waiting)
        self.assertEqual(len(inflight), 1)
        stuck.callback(None)
        self.assertEqual(len(inflight), 0)

    def test_results_pass_through(self):
        inflight = InFlight()
        self.assertEqual(self.successResultOf(inflight.track(defer.succeed(42))), 42)
        self.successResultOf(inflight.wait(task.Clock(), 1))


class ListenerTests(unittest.TestCase):
    def test_listen_failure_names_the_listener(self):
        class Refusing:
            def listen(self, factory):
                return defer.fail(OSError("Address already in use"))

        listener = ListenerService("mx", Refusing(), object(), "127.0.0.1:25 (smtp, tls starttls)")
        failure = self.failureResultOf(listener.start(), StartError)
        self.assertEqual(str(failure.value),
                         "listener mx: cannot listen on 127.0.0.1:25 (smtp, tls starttls): Address already in use")


class FreezeTests(unittest.SynchronousTestCase):
    def test_objects_alive_at_start_up_leave_the_collector(self):
        self.addCleanup(gc.unfreeze)
        before = len(gc.get_objects())
        freeze_startup_objects()
        self.assertGreater(gc.get_freeze_count(), 0)
        self.assertLess(len(gc.get_objects()), before)


class SpoolWiringTests(unittest.SynchronousTestCase):
    def test_smtp_and_imap_listeners_spool_under_the_data_directory(self):
        config = parse(f"[server]\ndata_dir = {self.mktemp()!r}\n", "test.toml")
        store = SimpleNamespace(metadata=SimpleNamespace(directory=object(), mail=object()), blobs=object())
        context = BuildContext(config, MemoryReactorClock(), store, SimpleNamespace(pipeline=object()), None,
                               InFlight(), None)
        for protocol in ("smtp", "submission", "imap"):
            factory = PROTOCOLS[protocol](context, ListenerConfig(protocol=protocol))
            self.assertIs(factory.spool, context.spool, protocol)
        self.assertEqual(context.spool.directory, config.server.data_dir + "/spool")
