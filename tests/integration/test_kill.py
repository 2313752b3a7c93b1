"""SIGKILL under load: no acknowledged message is lost, none is stored half."""
import os
import signal
import smtplib
import sqlite3
import threading
import time

from twisted.internet import threads
from twisted.trial import unittest

from tests.integration.twistd import TwistdFixture

SENDERS = 4
ROUNDS = 3


# Every other message is larger than this, so both ways of saving are killed.
INLINE_MAX = 8192


def body(name: str) -> bytes:
    """About 5 KB (kept inline) or 16 KB (a blob file), by the last number in `name`."""
    line = f"message {name} ".encode() * 8 + b"\r\n"
    return f"Subject: {name}\r\n\r\n".encode() + line * (40 if int(name.rsplit("-", 1)[1]) % 2 else 120)


class KillTests(TwistdFixture, unittest.TestCase):
    timeout = 120

    def load(self, round_number, acknowledged, stop):
        """Send from several threads until `stop`; record what got a 250.

        Every attempt has its own subject (a failed one is not resent), so
        a subject stored twice would be a duplicate delivery.
        """

        def sender(index):
            names = (f"m-{round_number}-{index}-{n}" for n in range(2000))
            for name in names:
                if stop.is_set():
                    return
                try:
                    with smtplib.SMTP("127.0.0.1", self.smtp, timeout=5) as client:
                        client.sendmail("load@remote.example", ["alice@example.test"], body(name))
                        acknowledged.add(name)
                        for name in names:
                            if stop.is_set():
                                return
                            client.sendmail("load@remote.example", ["alice@example.test"], body(name))
                            acknowledged.add(name)
                except (OSError, smtplib.SMTPException):
                    time.sleep(0.05)

        workers = [threading.Thread(target=sender, args=(i,)) for i in range(SENDERS)]
        for worker in workers:
            worker.start()
        return workers

    def stored(self):
        database = sqlite3.connect(f"{self.dir}/var/meta.sqlite3")
        try:
            self.assertEqual(database.execute("PRAGMA integrity_check").fetchone()[0], "ok")
            return database.execute(
                "SELECT json_extract(c.parsed, '$.subject'), c.blob_key, d.data FROM messages m"
                " JOIN contents c ON c.id = m.content_id LEFT JOIN content_data d ON d.content_id = c.id"
            ).fetchall()
        finally:
            database.close()

    def blob(self, key):
        with open(os.path.join(self.dir, "var", "blobs", key[:2], key[2:4], key), "rb") as handle:
            return handle.read()

    def run_rounds(self):
        config = self.write_config(f"[store]\ninline_max = {INLINE_MAX}\n")
        self.add_alice(config, b"pw")
        acknowledged = set()
        for round_number in range(ROUNDS):
            process = self.start(config)
            self.wait_for_log(process, "emailsvc started")
            stop = threading.Event()
            workers = self.load(round_number, acknowledged, stop)
            time.sleep(0.7 + 0.3 * round_number)
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=10)
            stop.set()
            for worker in workers:
                worker.join(timeout=30)
        rows = self.stored()
        subjects = [subject for subject, _, _ in rows]
        self.assertGreater(len(acknowledged), 20)
        self.assertEqual(acknowledged - set(subjects), set())
        self.assertEqual(len(subjects), len(set(subjects)))
        for subject, key, inline in rows:
            self.assertEqual(inline is not None, len(body(subject)) < INLINE_MAX, subject)
            self.assertTrue((inline or self.blob(key)).endswith(body(subject)), subject)
        self.assertEqual({inline is None for _, _, inline in rows}, {True, False})

    def test_sigkill_under_load(self):
        return threads.deferToThread(self.run_rounds)
