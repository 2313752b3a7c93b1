"""A real POP3 client, fetchmail (Debian package `fetchmail`), against the
server over loopback: STLS, UIDL-based "new mail" across runs, byte-exact
delivery of CRLF, LF-only and dot-leading messages, and deletion."""
import os
import shutil
import subprocess
import sys

from twisted.internet import defer
from twisted.internet.threads import deferToThread
from twisted.trial import unittest

from tests.pop3.support import CRLF_MESSAGE, DOT_MESSAGE, LF_MESSAGE, PASSWORD, Listener, MailFixture

SAVE_SCRIPT = """
import os, sys
directory = sys.argv[1]
data = sys.stdin.buffer.read()
number = 0
while True:
    number += 1
    try:
        fd = os.open(os.path.join(directory, "%04d.eml" % number), os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    except FileExistsError:
        continue
    os.write(fd, data)
    os.close(fd)
    break
"""


class FetchmailCase(unittest.TestCase):
    tls = "starttls"

    @defer.inlineCallbacks
    def setUp(self):
        self.fetchmail = shutil.which("fetchmail")
        if self.fetchmail is None:
            self.fail("fetchmail is not installed (apt-get install fetchmail; scripts/test installs it)")
        self.fixture = yield MailFixture().start(self)
        self.listener = Listener(self, self.fixture, self.tls)
        self.home = os.path.abspath(self.mktemp())
        self.out = os.path.join(self.home, "out")
        os.makedirs(self.out)
        self.script = os.path.join(self.home, "save.py")
        with open(self.script, "w") as handle:
            handle.write(SAVE_SCRIPT)
        self.records = []

    def rcfile(self, keep=True, password=PASSWORD):
        path = os.path.join(self.home, "fetchmailrc")
        ssl = "ssl" if self.tls == "implicit" else "sslproto 'TLS1.2+'"
        mda = f"{sys.executable} {self.script} {self.out}"
        with open(path, "w") as handle:
            handle.write(
                # "localhost": fetchmail checks DNS names only, not IP addresses.
                f'poll localhost service {self.listener.address[1]} protocol POP3 uidl auth password\n'
                f'    user "alice@example.test" there with password "{password}" is "nobody" here\n'
                f'    {ssl} sslcertck sslcertfile "{self.listener.certificate}"\n'
                f'    mda "{mda}"\n'
                f'    {"keep" if keep else "no keep"} no rewrite no stripcr no mimedecode\n'
            )
        os.chmod(path, 0o600)
        return path

    def run_fetchmail(self, **options):
        command = [
            self.fetchmail, "--fetchmailrc", self.rcfile(**options), "--idfile", os.path.join(self.home, "ids"),
            "--pidfile", os.path.join(self.home, "pid"), "--nosyslog", "--invisible", "--timeout", "30", "-v",
        ]
        environment = {"HOME": self.home, "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C"}
        return deferToThread(subprocess.run, command, capture_output=True, env=environment, timeout=120)

    def saved(self):
        files = sorted(os.listdir(self.out))
        messages = []
        for name in files:
            with open(os.path.join(self.out, name), "rb") as handle:
                messages.append(handle.read())
        return messages

    @defer.inlineCallbacks
    def deliver(self, *messages):
        served = []
        for message in messages:
            record = yield self.fixture.deliver(message)
            self.records.append(record)
            served.append((yield self.fixture.served(record)))
        return served

    def assertRun(self, result, code=0):
        output = result.stdout.decode("utf-8", "replace") + result.stderr.decode("utf-8", "replace")
        self.assertEqual(result.returncode, code, output)
        self.assertNotIn("certificate verification error", output)
        return output


class FetchmailTests(FetchmailCase):
    @defer.inlineCallbacks
    def test_fetch_over_stls_byte_exact(self):
        expected = yield self.deliver(CRLF_MESSAGE, LF_MESSAGE, DOT_MESSAGE)
        output = self.assertRun((yield self.run_fetchmail()))
        self.assertIn("POP3> STLS", output)
        self.assertNotIn("correct horse", output)
        self.assertEqual(self.saved(), expected)
        self.assertIn(b"\r\n.starts with a dot\r\n", self.saved()[0])
        self.assertIn(b"\r\n.hidden dot\r\n..two dots\r\n", self.saved()[1])

    @defer.inlineCallbacks
    def test_uidl_tracks_new_mail_across_runs(self):
        yield self.deliver(CRLF_MESSAGE, LF_MESSAGE)
        self.assertRun((yield self.run_fetchmail()))
        self.assertEqual(len(self.saved()), 2)
        # Nothing new: fetchmail exits 1 ("no mail") and fetches nothing.
        self.assertRun((yield self.run_fetchmail()), code=1)
        self.assertEqual(len(self.saved()), 2)
        (new,) = yield self.deliver(DOT_MESSAGE)
        self.assertRun((yield self.run_fetchmail()))
        self.assertEqual(self.saved()[2:], [new])
        _, records = yield self.fixture.inbox()
        self.assertEqual(len(records), 3)
        # With "keep" fetchmail reads with TOP, which leaves messages unseen.
        self.assertEqual([r.flags for r in records], [frozenset()] * 3)

    @defer.inlineCallbacks
    def test_no_keep_deletes_at_quit(self):
        expected = yield self.deliver(CRLF_MESSAGE, LF_MESSAGE, DOT_MESSAGE)
        output = self.assertRun((yield self.run_fetchmail(keep=False)))
        self.assertIn("POP3> DELE 3", output)
        for number, message in enumerate(expected, 1):
            # fetchmail's LIST size is what it then reads: exact octets.
            self.assertIn(f"POP3< +OK {number} {len(message)}\n", output)
        self.assertEqual(self.saved(), expected)
        _, records = yield self.fixture.inbox()
        self.assertEqual(records, [])

    @defer.inlineCallbacks
    def test_wrong_password(self):
        yield self.deliver(CRLF_MESSAGE)
        output = self.assertRun((yield self.run_fetchmail(password="wrong")), code=3)
        self.assertIn("-ERR [AUTH] Authentication failed", output)
        self.assertEqual(self.saved(), [])


class FetchmailImplicitTLSTests(FetchmailCase):
    tls = "implicit"

    @defer.inlineCallbacks
    def test_fetch_over_implicit_tls(self):
        expected = yield self.deliver(CRLF_MESSAGE, LF_MESSAGE, DOT_MESSAGE)
        output = self.assertRun((yield self.run_fetchmail()))
        self.assertNotIn("POP3> STLS", output)
        self.assertIn("SSL/TLS: using protocol", output)
        self.assertEqual(self.saved(), expected)
