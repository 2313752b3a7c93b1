"""The real `twistd -n emailsvc --config FILE` process."""
import os
import signal
import smtplib
import socket
import sqlite3
import ssl
import subprocess
import sys
import time
import urllib.request

from twisted.trial import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def can_bind(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


class TwistdTests(unittest.TestCase):
    def setUp(self):
        self.dir = os.path.abspath(self.mktemp())
        os.makedirs(self.dir)
        self.https, self.metrics, self.smtp = free_port(), free_port(), free_port()

    def write_config(self, extra=""):
        path = os.path.join(self.dir, "emailsvc.toml")
        with open(path, "w") as handle:
            handle.write(f"""
[server]
data_dir = "{self.dir}/var"
[store.sqlite]
path = "{self.dir}/var/meta.sqlite3"
[store.fs]
path = "{self.dir}/var/blobs"
[listeners.web]
protocol = "https"
port = {self.https}
tls = "implicit"
[listeners.metrics]
protocol = "metrics"
port = {self.metrics}
[listeners.mx]
protocol = "smtp"
port = {self.smtp}
tls = "starttls"
{extra}""")
        return path

    def start(self, config):
        process = subprocess.Popen(
            [TWISTD, "-n", "--pidfile=", "--logfile=-", "emailsvc", "--config", config],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": ROOT},
        )
        self.addCleanup(lambda: process.poll() is None and process.kill())
        return process

    def wait_for_log(self, process, text, timeout=10):
        deadline = time.monotonic() + timeout
        seen = b""
        os.set_blocking(process.stdout.fileno(), False)
        while time.monotonic() < deadline:
            chunk = process.stdout.read()
            if chunk:
                seen += chunk
                if text.encode() in seen:
                    return seen.decode()
            elif process.poll() is not None:
                break
            time.sleep(0.05)
        self.fail(f"{text!r} not logged; output so far:\n{seen.decode()}\n{process.stderr.read().decode()}")

    def test_starts_serves_and_stops(self):
        began = time.monotonic()
        process = self.start(self.write_config())
        log = self.wait_for_log(process, "emailsvc started")
        self.assertLess(time.monotonic() - began, 5)
        self.assertIn(f"listener web on 127.0.0.1:{self.https} (https, tls implicit)", log)
        self.assertIn(f"listener metrics on 127.0.0.1:{self.metrics} (metrics, tls none)", log)
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        with urllib.request.urlopen(f"https://127.0.0.1:{self.https}/health", context=context, timeout=5) as reply:
            self.assertEqual(reply.read(), b"ok\n")
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics}/metrics", timeout=5) as reply:
            self.assertIn(b"python_info", reply.read())
        process.send_signal(signal.SIGTERM)
        # twistd re-raises the signal once shut down, as service managers expect.
        self.assertEqual(process.wait(timeout=10), -signal.SIGTERM)
        output = process.stdout.read().decode()
        self.assertIn("emailsvc stopped", output)
        self.assertNotIn("Traceback", output)
        self.assertTrue(can_bind(self.https))

    def admin(self, config, *args, password=None):
        return subprocess.run(
            [os.path.join(os.path.dirname(sys.executable), "emailsvc"), "--config", config, *args],
            input=password, capture_output=True, check=True, timeout=60,
        )

    def test_newcomer_delivers_mail_that_survives_restart(self):
        config = self.write_config()
        self.admin(config, "domain", "add", "example.test")
        self.admin(config, "user", "add", "alice@example.test", password=b"correct horse\n")
        process = self.start(config)
        self.wait_for_log(process, "emailsvc started")
        with smtplib.SMTP("127.0.0.1", self.smtp, timeout=10) as client:
            client.starttls(context=ssl._create_unverified_context())
            client.sendmail("bob@remote.example", ["alice@example.test"], b"Subject: persisted\r\n\r\nhi\r\n")
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=10)
        users = self.admin(config, "user", "list").stdout.decode()
        self.assertIn("alice@example.test", users)
        with sqlite3.connect(f"{self.dir}/var/meta.sqlite3") as database:
            (subject,) = database.execute(
                "SELECT json_extract(c.parsed, '$.subject') FROM messages m"
                " JOIN contents c ON c.id = m.content_id JOIN mailboxes b ON b.id = m.mailbox_id"
                " WHERE b.name = 'INBOX'").fetchone()
            self.assertEqual(subject, "persisted")
            (hashed,) = database.execute("SELECT password_hash FROM users").fetchone()
            self.assertTrue(hashed.startswith("$argon2id$"))

    def test_broken_config_binds_nothing(self):
        config = self.write_config('[smtp]\nmax_recipients = "many"\nfrobnicate = 1\n')
        process = self.start(config)
        self.assertEqual(process.wait(timeout=20), 1)
        errors = process.stderr.read().decode()
        self.assertIn(f"{config}: smtp.frobnicate: unknown key", errors)
        self.assertIn(f"{config}: smtp.max_recipients: must be an integer, not str 'many'", errors)
        self.assertTrue(can_bind(self.https) and can_bind(self.metrics))

    def test_missing_config(self):
        process = self.start(os.path.join(self.dir, "nope.toml"))
        self.assertEqual(process.wait(timeout=20), 1)
        self.assertIn(b"cannot read the configuration file", process.stderr.read())

    def test_port_in_use_stops_the_start(self):
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", self.metrics))
            taken.listen()
            process = self.start(self.write_config())
            self.assertEqual(process.wait(timeout=20), 1)
            output = process.stdout.read().decode()
        self.assertIn(f"emailsvc failed to start: listener metrics: cannot listen on 127.0.0.1:{self.metrics}", output)
        self.assertTrue(can_bind(self.https))
