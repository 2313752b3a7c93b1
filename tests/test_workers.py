"""The main process's side of a worker: log relay, readiness, exit."""
import io

from twisted.internet.error import ProcessTerminated
from twisted.logger import LogLevel, Logger, globalLogPublisher, jsonFileLogObserver
from twisted.python.failure import Failure
from twisted.trial import unittest

from emailsvc.config import parse
from emailsvc.workers import WorkerProcess, pooled_listeners, relay_observer


class FakeTransport:
    pid = 4242


class WorkerProcessTests(unittest.TestCase):
    def setUp(self):
        self.events = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)
        self.worker = WorkerProcess("worker-3")
        self.worker.transport = FakeTransport()

    def worker_log_bytes(self, **fields) -> bytes:
        out = io.StringIO()
        Logger(namespace="emailsvc.smtp", observer=jsonFileLogObserver(out)).info(
            "Transaction from {peer}", **fields)
        return out.getvalue().encode()

    def test_json_events_join_the_log_as_the_worker(self):
        data = self.worker_log_bytes(peer="[127.0.0.1]:2525")
        # Split anywhere: a record may arrive in pieces.
        self.worker.childDataReceived(1, data[:10])
        self.assertEqual(self.events, [])
        self.worker.childDataReceived(1, data[10:])
        (event,) = self.events
        self.assertEqual(event["log_system"], "worker-3")
        self.assertEqual(event["log_level"], LogLevel.info)
        self.assertEqual(event["peer"], "[127.0.0.1]:2525")

    def test_other_output_is_logged_line_by_line(self):
        self.worker.childDataReceived(2, b"Traceback (most recent call last):\n  boom")
        self.worker.childDataReceived(1, b"not json\n")
        self.worker.processEnded(Failure(ProcessTerminated(exitCode=1)))
        lines = [(event["line"], event["log_level"]) for event in self.events if "line" in event]
        self.assertEqual(lines, [("Traceback (most recent call last):", LogLevel.error),
                                 ("not json", LogLevel.info), ("  boom", LogLevel.error)])

    def test_a_worker_relays_no_dns_query_port_lines(self):
        out = io.StringIO()
        log = Logger(namespace="twisted.internet.udp", observer=relay_observer(out))
        log.info("{log_text}", log_text="(UDP Port 5353 Closed)")
        log.info("{log_text}", log_text="Transaction from [127.0.0.1]:2525")
        self.worker.childDataReceived(1, out.getvalue().encode())
        self.assertEqual([event["log_text"] for event in self.events], ["Transaction from [127.0.0.1]:2525"])

    def test_ready_fires_with_the_pid(self):
        self.worker.childDataReceived(3, b"ready\n")
        self.assertEqual(self.successResultOf(self.worker.ready), 4242)

    def test_exit_before_ready_fails_the_start(self):
        self.worker.processEnded(Failure(ProcessTerminated(exitCode=1)))
        failure = self.failureResultOf(self.worker.ready, RuntimeError)
        self.assertIn("worker-3 exited before it was ready", str(failure.value))
        self.assertIsInstance(self.successResultOf(self.worker.ended), ProcessTerminated)


class PooledListenerTests(unittest.TestCase):
    CONFIG = """
[listeners.mx]
protocol = "smtp"
port = 25
[listeners.imap]
protocol = "imap"
port = 143
[listeners.web]
protocol = "https"
port = 443
[listeners.metrics]
protocol = "metrics"
port = 9100
"""

    def test_only_mail_protocols_and_only_with_workers(self):
        self.assertEqual(pooled_listeners(parse(self.CONFIG)), {})
        config = parse("[server]\nworkers = 2\n" + self.CONFIG)
        self.assertEqual(sorted(pooled_listeners(config)), ["imap", "mx"])
