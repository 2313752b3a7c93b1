"""The real `twistd -n emailsvc --config FILE` process."""
import os
import imaplib
import poplib
import signal
import smtplib
import sqlite3
import ssl
import time
import urllib.request

from twisted.trial import unittest

from tests.integration.twistd import TwistdFixture, can_bind


class TwistdTests(TwistdFixture, unittest.TestCase):
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

    def test_newcomer_delivers_mail_that_survives_restart(self):
        config = self.write_config()
        self.add_alice(config, b"correct horse")
        process = self.start(config)
        self.wait_for_log(process, "emailsvc started")
        insecure = ssl._create_unverified_context()
        with smtplib.SMTP("127.0.0.1", self.smtp, timeout=10) as client:
            client.starttls(context=insecure)
            client.sendmail("bob@remote.example", ["alice@example.test"], b"Subject: persisted\r\n\r\nhi\r\n")
        with imaplib.IMAP4("127.0.0.1", self.imap, timeout=10) as imap:
            imap.starttls(ssl_context=insecure)
            imap.login("alice@example.test", "correct horse")
            imap.select("INBOX")
            _, data = imap.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
            self.assertEqual(data[0][1].strip(), b"Subject: persisted")
        pop = poplib.POP3("127.0.0.1", self.pop3, timeout=10)
        pop.stls(context=insecure)
        pop.user("alice@example.test")
        pop.pass_("correct horse")
        self.assertTrue(pop.retr(1)[1][-1] == b"hi")
        pop.quit()
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
        output = self.start_with_port_taken(self.metrics, self.write_config())
        self.assertIn(f"emailsvc failed to start: listener metrics: cannot listen on 127.0.0.1:{self.metrics}", output)
        self.assertTrue(can_bind(self.https))
