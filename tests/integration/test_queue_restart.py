"""SIGKILL of the real service while its outbound queue is delivering, then
a restart on the same data directory: every queued (message, recipient)
reaches the remote server, none of them twice.

The remote domains' MX (through the fake DNS) is a sink in this test's
reactor.  After `ACCEPT_FIRST` messages it stops answering the final dot
and holds every session there, so the queue's pass stalls mid-way: some
recipients delivered and committed, a few sessions waiting for the 250,
the rest leased or due.  The kill comes once nothing but the held sessions
has moved for a second.  Held sessions never got their 250 (the sink
forgets them, as a real server forgets a client that went away), so they
must arrive once after the restart, like everything else.

SMTP delivery is at-least-once: a recipient the remote accepted but whose
outcome the queue had not committed at the kill may legitimately arrive
twice.  The database, read after the kill, says which those are (accepted
at the sink, still pending in the queue); only they are excused from the
no-duplicate rule, and the holding sink keeps that set empty in practice.

Two restarts: under the same runner id (`queue.runner_id`, by default the
host name), which takes its dead predecessor's leases back at once, with
the default 15-minute lease; and under another id, which must wait for
those leases (`queue.lease_time` at its minimum, 10 s) to run out and
must not take a row before.
"""
import os
import signal
import smtplib
import sqlite3
import ssl
import threading
import time
from collections import Counter

from twisted.internet import reactor, threads
from twisted.trial import unittest

from tests.delivery.fakesmtp import FakeSMTP, FakeSMTPServer
from tests.fakedns import FakeDNSServer
from tests.integration.twistd import TwistdFixture, free_port

MESSAGES = 30
ACCEPT_FIRST = 8
CONNECTIONS = 3
SHORT_LEASE = 10  # the configuration's minimum
PASSWORD = "queue-restart-pw"


class HoldingSMTP(FakeSMTP):
    """The fake remote; holds the reply to the final dot while the factory
    says so, forgets held messages whose connection is lost, and notes
    when it accepted each message."""

    def lineReceived(self, line):
        factory = self.factory
        if self._data is not None and line == b".":
            if factory.hold_after is not None and len(factory.received) >= factory.hold_after:
                factory.held.add(self)
                return
            count = len(factory.received)
            super().lineReceived(line)
            factory.accepted_at.extend([time.time()] * (len(factory.received) - count))
            return
        super().lineReceived(line)

    def connectionLost(self, reason):
        self.factory.held.discard(self)
        super().connectionLost(reason)


def plan():
    """{subject: [recipients]}: one, two at one domain, or two at two domains.

    Every recipient address is used once, so an address names one
    (message, recipient) pair at the sink and in the queue's rows."""
    messages = {}
    for number in range(MESSAGES):
        kind = number % 3
        if kind == 0:
            recipients = [f"m{number}@one.example"]
        elif kind == 1:
            recipients = [f"m{number}a@one.example", f"m{number}b@one.example"]
        else:
            recipients = [f"m{number}a@one.example", f"m{number}b@two.example"]
        messages[f"restart-{number}"] = recipients
    return messages


def body(subject, recipients):
    return (f"From: Alice <alice@example.test>\r\nTo: {', '.join(recipients)}\r\n"
            f"Subject: {subject}\r\n\r\n").encode() + f"queued {subject}\r\n".encode() * 50


class QueueRestartTests(TwistdFixture, unittest.TestCase):
    timeout = 90

    def setUp(self):
        super().setUp()
        self.submission = free_port()
        self.dns = FakeDNSServer(reactor)
        self.dns.start()
        self.addCleanup(self.dns.stop)
        self.sink = FakeSMTPServer(reactor)
        factory = self.sink.factory
        factory.protocol = HoldingSMTP
        factory.hold_after, factory.held, factory.accepted_at = ACCEPT_FIRST, set(), []
        self.sink.start()
        self.addCleanup(self.sink.stop)
        for domain in ("one.example", "two.example"):
            self.dns.mx(domain, (10, "mx.sink.test"))
        self.dns.a("mx.sink.test", "127.0.0.1")
        self.log_lines = []
        self._last_state, self._since = None, 0.0

    def configure(self, lease_time, runner_id=None):
        runner = "" if runner_id is None else f'runner_id = "{runner_id}"\n'
        return self.write_config(f"""
[dns]
nameservers = ["{self.dns.nameserver}"]
timeout = 1.0
attempts = 1
[queue]
{runner}scan_interval = 1.0
lease_time = {lease_time}.0
retry_initial = 1.0
retry_max = 2.0
max_connections = {CONNECTIONS}
remote_port = {self.sink.port_number}
tls = "none"
connect_timeout = 5.0
command_timeout = 60.0
data_timeout = 60.0
[listeners.submission]
protocol = "submission"
port = {self.submission}
tls = "starttls"
""")

    # The sink, read from the scenario's thread.

    def in_reactor(self, function):
        return threads.blockingCallFromThread(reactor, function)

    def accepted(self):
        """[(subject, recipient, time)] for every 250 the sink gave, in order."""

        def read():
            found = []
            for received, when in zip(self.sink.received, self.sink.factory.accepted_at):
                subject = next(line for line in received.message.split(b"\r\n") if line.startswith(b"Subject: "))
                found.extend((subject[9:].decode(), recipient, when) for recipient in received.recipients)
            return found

        return self.in_reactor(read)

    def pairs(self):
        return [(subject, recipient) for subject, recipient, _ in self.accepted()]

    def held(self):
        return self.in_reactor(lambda: len(self.sink.factory.held))

    def settled(self):
        """Sessions are held and nothing else moved for a second."""
        state = (self.held(), len(self.accepted()))
        if state[0] == 0 or state != self._last_state:
            self._last_state, self._since = state, time.monotonic()
            return False
        return time.monotonic() - self._since >= 1.0

    def stop_holding(self):
        def release():
            self.sink.factory.hold_after = None

        self.in_reactor(release)

    # The service.

    def run_service(self, config):
        process = self.start(config)
        self.wait_for_log(process, "emailsvc started", timeout=20)
        # Keep the pipes drained: the queue logs a line per recipient.
        for stream in (process.stdout, process.stderr):
            os.set_blocking(stream.fileno(), True)
            threading.Thread(target=self._drain, args=(stream,), daemon=True).start()
        return process

    def _drain(self, stream):
        for line in stream:
            self.log_lines.append(line.decode(errors="replace"))

    def output(self):
        return "".join(self.log_lines[-60:])

    def queue_rows(self):
        """{recipient: (status, lease owner, lease until)} of the queue's
        rows (the rows of finished messages are purged)."""
        database = sqlite3.connect(f"{self.dir}/var/meta.sqlite3", timeout=10)
        try:
            return {recipient: rest for recipient, *rest in database.execute(
                "SELECT recipient, status, lease_owner, lease_until FROM queue_recipients")}
        finally:
            database.close()

    def submit(self, messages):
        context = ssl._create_unverified_context()
        with smtplib.SMTP("127.0.0.1", self.submission, timeout=20) as client:
            client.starttls(context=context)
            client.login("alice@example.test", PASSWORD)
            for subject, recipients in messages.items():
                self.assertEqual(client.sendmail("alice@example.test", recipients, body(subject, recipients)), {})

    # The scenario.

    def kill_and_restart(self, lease_time, first_id, second_id, redelivery_within):
        """Submit, kill mid-delivery, restart; check every recipient
        arrived once.  @return: (rows at the kill, [(subject, recipient,
        time)] accepted after the restart began)."""
        messages = plan()
        expected = {(subject, recipient) for subject, recipients in messages.items() for recipient in recipients}
        config = self.configure(lease_time, first_id)
        self.add_alice(config, PASSWORD.encode())

        process = self.run_service(config)
        self.submit(messages)
        # Mid-processing: some delivered, some sessions held before the
        # 250, and nothing else moving.
        self.wait_until(self.settled, "sessions held at the sink and no other progress", 20, output=self.output)
        before = self.pairs()
        self.assertGreaterEqual(len(before), ACCEPT_FIRST)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
        self.wait_until(lambda: self.held() == 0, "the sink to see the held sessions close", 10, output=self.output)
        self.assertEqual(self.pairs(), before)
        rows = self.queue_rows()
        self.assertTrue(any(status == "pending" for status, _, _ in rows.values()),
                        "the queue was not mid-processing")
        # Accepted by the sink but not committed by the queue at the kill:
        # only these may legitimately come twice (at-least-once).
        in_window = {(subject, recipient) for subject, recipient in before
                     if rows.get(recipient, ("",))[0] == "pending"}
        self.assertLessEqual(len(in_window), CONNECTIONS)

        self.stop_holding()
        config = self.configure(lease_time, second_id)
        began = time.monotonic()
        process = self.run_service(config)
        self.wait_until(lambda: expected <= set(self.pairs()), "every recipient at the sink", redelivery_within,
                        output=self.output)
        # Nothing left for the queue to send: no late duplicate can follow.
        self.wait_until(lambda: all(status != "pending" for status, _, _ in self.queue_rows().values()),
                        "an empty queue", 10, output=self.output)
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=20)
        self.assertLess(time.monotonic() - began, redelivery_within + 10)

        accepted = self.accepted()
        counts = Counter((subject, recipient) for subject, recipient, _ in accepted)
        self.assertEqual(expected - set(counts), set(), "missing at the sink")
        self.assertEqual(set(counts) - expected, set(), "unexpected deliveries")
        twice = {pair: count for pair, count in counts.items() if count > 1 and pair not in in_window}
        self.assertEqual(twice, {}, "delivered twice")
        return rows, accepted[len(before):]

    def test_same_runner_takes_its_leases_back_at_once(self):
        # The default lease (900 s) would outlast the test: everything
        # arrives because the restarted runner releases its own rows.
        return threads.deferToThread(self.kill_and_restart, 900, None, None, redelivery_within=15)

    def test_other_runner_takes_over_after_the_lease(self):
        def run():
            rows, after = self.kill_and_restart(SHORT_LEASE, "runner-a", "runner-b",
                                                redelivery_within=SHORT_LEASE + 15)
            leased = {recipient: until for recipient, (status, owner, until) in rows.items()
                      if status == "pending" and owner == "runner-a"}
            self.assertTrue(leased, "the dead runner held no lease")
            # runner-b never took a row while runner-a's lease on it lasted.
            early = {recipient: (when, leased[recipient]) for _, recipient, when in after
                     if recipient in leased and when < leased[recipient]}
            self.assertEqual(early, {})

        return threads.deferToThread(run)
