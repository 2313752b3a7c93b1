"""`server.workers`: the real twistd with worker processes serving the
mail listeners."""
import os
import re
import signal
import smtplib
import ssl
import time

from imapclient import IMAPClient
from twisted.internet import reactor, threads
from twisted.trial import unittest

from tests.delivery.fakesmtp import FakeSMTPServer
from tests.integration.twistd import TwistdFixture, can_bind, free_port

INSECURE = ssl._create_unverified_context()
PASSWORD = "correct horse"


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


class WorkerTests(TwistdFixture, unittest.TestCase):
    def workers_config(self, extra=""):
        config = self.write_config("[checks]\nenabled = []\n" + extra)
        with open(config) as handle:
            text = handle.read()
        self.assertIn("[server]\n", text)
        text = text.replace("[server]\n", "[server]\nworkers = 2\nshutdown_timeout = 5\n", 1)
        with open(config, "w") as handle:
            handle.write(text)
        return config

    def start_with_workers(self, extra=""):
        config = self.workers_config(extra)
        self.add_alice(config, PASSWORD.encode())
        process = self.start(config)
        log = self.wait_for_log(process, "emailsvc started")
        while len(pids := self.worker_pids(log)) < 2:
            log += self.wait_for_log(process, "running (pid")
        self.assertNotIn(process.pid, pids.values())
        return process, pids

    def test_a_pooled_port_in_use_stops_the_start(self):
        output = self.start_with_port_taken(self.imap, self.workers_config())
        self.assertIn(f"emailsvc failed to start: listener imap: cannot listen on 127.0.0.1:{self.imap}"
                      " (imap, tls starttls)", output)
        self.assertNotIn("worker-1", output)
        self.assertTrue(can_bind(self.smtp))

    def worker_pids(self, log: str) -> dict[str, int]:
        return {name: int(pid) for name, pid in re.findall(r"(worker-\d) running \(pid (\d+)\)", log)}

    def send(self, subject: str):
        with smtplib.SMTP("127.0.0.1", self.smtp, timeout=10) as client:
            client.sendmail("bob@remote.example", ["alice@example.test"],
                            f"Subject: {subject}\r\n\r\nhi\r\n".encode())

    def login(self):
        client = IMAPClient("127.0.0.1", port=self.imap, ssl=False, timeout=10)
        client.starttls(INSECURE)
        client.login("alice@example.test", PASSWORD)
        return client

    def test_idle_sessions_on_every_worker_see_a_delivery(self):
        process, pids = self.start_with_workers()
        # Six sessions: the kernel spreads them over both workers, and the
        # delivery lands in one of them; every session must hear of it.
        sessions = [self.login() for _ in range(6)]
        for session in sessions:
            session.select_folder("INBOX")
            session.idle()
        sent = time.monotonic()
        self.send("across workers")
        for session in sessions:
            responses = session.idle_check(timeout=2)
            self.assertIn((1, b"EXISTS"), responses)
            session.idle_done()
        self.assertLess(time.monotonic() - sent, 3)
        for session in sessions:
            self.assertEqual(session.search(["SUBJECT", "across workers"]), [1])
            session.logout()
        process.send_signal(signal.SIGTERM)
        self.assertEqual(process.wait(timeout=20), -signal.SIGTERM)
        output = process.stdout.read().decode()
        self.assertEqual(output.count("emailsvc stopped"), 3)  # the main process and both workers
        self.assertNotIn("Traceback", output)
        for pid in pids.values():
            self.assertFalse(alive(pid))
        self.assertTrue(can_bind(self.smtp))

    def test_a_killed_worker_is_replaced(self):
        process, pids = self.start_with_workers()
        os.kill(pids["worker-1"], signal.SIGKILL)
        log = self.wait_for_log(process, "worker-1 running (pid")
        self.assertIn("worker-1 ended", log)
        replaced = self.worker_pids(log)["worker-1"]
        self.assertNotEqual(replaced, pids["worker-1"])
        for number in range(6):
            self.send(f"after the kill {number}")
        client = self.login()
        self.assertEqual(client.select_folder("INBOX")[b"EXISTS"], 6)
        client.logout()

    def test_workers_stop_when_the_main_process_dies(self):
        process, pids = self.start_with_workers()
        process.kill()
        process.wait(timeout=10)
        self.wait_until(lambda: not any(alive(pid) for pid in pids.values()), "the workers to stop", 5)
        self.assertFalse(any(alive(pid) for pid in pids.values()))
        self.assertTrue(can_bind(self.smtp))

    def test_mail_submitted_in_a_worker_wakes_the_queue_runner(self):
        # The runner lives in the main process and scans every 10 minutes
        # here: only the change feed can make it deliver at once.
        sink = FakeSMTPServer(reactor)
        sink.start()
        self.addCleanup(sink.stop)
        submission = free_port()
        extra = f"""
[queue]
scan_interval = 600.0
smarthost = "127.0.0.1"
smarthost_port = {sink.port_number}
tls = "none"
[listeners.submission]
protocol = "submission"
port = {submission}
tls = "starttls"
"""

        def scenario():
            process, _ = self.start_with_workers(extra)
            with smtplib.SMTP("127.0.0.1", submission, timeout=10) as client:
                client.starttls(context=INSECURE)
                client.login("alice@example.test", PASSWORD)
                client.sendmail("alice@example.test", ["bob@remote.example"],
                                b"From: alice@example.test\r\nSubject: relayed\r\n\r\nhi\r\n")
            sent = time.monotonic()

            def output():
                process.terminate()
                return process.communicate(timeout=20)[0].decode()

            self.wait_until(lambda: threads.blockingCallFromThread(reactor, lambda: len(sink.received)),
                            "the queue runner to deliver the submitted message", 5, output)
            return time.monotonic() - sent

        def delivered(seconds):
            (message,) = sink.received
            self.assertEqual(message.recipients, ["bob@remote.example"])
            self.assertIn(b"Subject: relayed", message.message)
            self.assertLess(seconds, 5)

        return threads.deferToThread(scenario).addCallback(delivered)
