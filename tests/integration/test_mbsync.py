"""A real IMAP sync client, mbsync (Debian package `isync`), against the
in-process server over implicit TLS: messages, flags, deletions and folders
travel both ways between the server and a local Maildir.

Every step checks both ends byte for byte, and every mbsync run must exit 0
without complaining on standard error.  mbsync keeps Maildir files with LF
line ends and sends CRLF to the server, and it adds an `X-TUID` field to
every message it copies (to find it again should the target not report the
new UID): the local side is compared in LF, the server side in CRLF, both
without X-TUID fields.
"""
import os
import re
import shutil
import subprocess

from twisted.internet import defer
from twisted.internet.threads import deferToThread

from tests.imap.support import PASSWORD, USER, IMAPTestCase

SERVER_MESSAGE = (b"From: Bob <bob@remote.example>\r\nTo: alice@example.test\r\nSubject: from the server\r\n"
                  b"Message-ID: <server-1@remote.example>\r\nDate: Tue, 2 Jan 2024 09:00:00 +0000\r\n\r\n"
                  b"Delivered by the MX.\r\n")
LOCAL_MESSAGE = (b"From: alice@example.test\r\nTo: bob@remote.example\r\nSubject: written offline\r\n"
                 b"Message-ID: <local-1@example.test>\r\nDate: Wed, 3 Jan 2024 10:00:00 +0000\r\n\r\n"
                 b"Saved in the local Maildir.\r\n")
PROJECT_MESSAGE = (b"From: alice@example.test\r\nSubject: project notes\r\n"
                   b"Message-ID: <local-2@example.test>\r\n\r\nA new folder, made locally.\r\n")
LATER_MESSAGE = (b"From: Carol <carol@remote.example>\r\nSubject: read me, then delete me\r\n"
                 b"Message-ID: <server-2@remote.example>\r\n\r\nShort-lived.\r\n")


_TUID = re.compile(rb"^X-TUID: [^\r\n]*\r?\n", re.M)


def lf(data: bytes) -> bytes:
    return data.replace(b"\r\n", b"\n")


def untagged(data: bytes) -> bytes:
    """The message without mbsync's X-TUID field (in the header only)."""
    blank = re.search(rb"\r?\n\r?\n", data)
    cut = len(data) if blank is None else blank.start() + (2 if data[blank.start()] == 13 else 1)
    return _TUID.sub(b"", data[:cut]) + data[cut:]


def _maildir_flags(name: str) -> str:
    return name.rsplit(":2,", 1)[1] if ":2," in name else ""


class MbsyncTests(IMAPTestCase):
    timeout = 120

    @defer.inlineCallbacks
    def setUp(self):
        self.mbsync = shutil.which("mbsync")
        if self.mbsync is None:
            self.fail("mbsync is not installed (apt-get install isync; scripts/test installs it)")
        yield super().setUp()
        self.home = os.path.abspath(self.mktemp())
        self.maildir = os.path.join(self.home, "mail")
        os.makedirs(self.maildir)
        self.config = os.path.join(self.home, "mbsyncrc")
        with open(self.config, "w") as handle:
            handle.write(
                # "localhost" is in the certificate's names; mbsync checks the
                # name and trusts the self-signed certificate given here.
                f"IMAPAccount emailsvc\n"
                f"Host localhost\n"
                f"Port {self.tls[1]}\n"
                f"User {USER}\n"
                f'Pass "{PASSWORD}"\n'
                f"SSLType IMAPS\n"
                f"CertificateFile {self.certificate}\n"
                f"PipelineDepth 8\n"
                f"\n"
                f"IMAPStore server\n"
                f"Account emailsvc\n"
                f"\n"
                f"MaildirStore local\n"
                f"Path {self.maildir}/\n"
                f"Inbox {self.maildir}/INBOX\n"
                f"SubFolders Verbatim\n"
                f"\n"
                f"Channel both\n"
                f"Far :server:\n"
                f"Near :local:\n"
                f"Patterns *\n"
                f"Create Both\n"
                f"Remove None\n"
                f"Expunge Both\n"
                f"Sync All\n"
                f"SyncState *\n"
            )
        self.inbox = yield self.mail.get_mailbox(self.user.id, "INBOX")

    # Running mbsync

    def sync(self):
        """One `mbsync both` run; fails the test on a non-zero exit or any complaint."""
        def run():
            return subprocess.run([self.mbsync, "-c", self.config, "both"], capture_output=True,
                                  timeout=60, env={**os.environ, "HOME": self.home})

        def check(result):
            output = (result.stdout + result.stderr).decode("utf-8", "replace")
            self.assertEqual(result.returncode, 0, f"mbsync failed:\n{output}")
            complaints = [line for line in result.stderr.decode("utf-8", "replace").splitlines()
                          if line.strip() and not line.startswith(("Notice:", "C:", "B:", "M:", "S:"))]
            self.assertEqual(complaints, [], f"mbsync complained:\n{output}")
            return output

        return deferToThread(run).addCallback(check)

    # The two ends

    def local(self, folder="INBOX") -> dict[bytes, tuple[str, str]]:
        """The local messages of a folder: content (LF line ends) -> (path, Maildir flags)."""
        found = {}
        for sub in ("new", "cur"):
            directory = os.path.join(self.maildir, folder, sub)
            for name in sorted(os.listdir(directory)) if os.path.isdir(directory) else []:
                path = os.path.join(directory, name)
                with open(path, "rb") as handle:
                    data = untagged(handle.read())
                self.assertNotIn(data, found, f"{folder} holds the same message twice")
                found[data] = (path, _maildir_flags(name))
        return found

    def put_local(self, folder: str, data: bytes, name: str, flags: str = ""):
        for sub in ("cur", "new", "tmp"):
            os.makedirs(os.path.join(self.maildir, folder, sub), exist_ok=True)
        sub = "cur" if flags else "new"
        with open(os.path.join(self.maildir, folder, sub, name + (":2," + flags if flags else "")), "wb") as handle:
            handle.write(lf(data))

    def set_local_flags(self, path: str, flags: str):
        directory, name = os.path.split(path)
        base = name.split(":2,", 1)[0]
        os.rename(path, os.path.join(os.path.dirname(directory), "cur", base + ":2," + "".join(sorted(flags))))

    @defer.inlineCallbacks
    def remote(self, mailbox_id) -> dict:
        """The server's messages of a mailbox: content -> MessageRecord."""
        records = yield self.mail.list_messages(mailbox_id)
        parsed = yield self.mail.get_parsed([record.content_id for record in records])
        found = {}
        for record in records:
            data = untagged((yield self.blobs.get(parsed[record.content_id][0])))
            self.assertNotIn(data, found, "the server holds the same message twice")
            found[data] = record
        return found

    # The test

    @defer.inlineCallbacks
    def test_sync_both_ways(self):
        yield self.deliver(SERVER_MESSAGE)
        delivered = yield self.remote(self.inbox.id)
        (server_copy,) = delivered
        self.assertTrue(server_copy.endswith(SERVER_MESSAGE))

        # 1. Server to Maildir: the message, byte for byte, unseen; every folder is created.
        yield self.sync()
        local = self.local()
        self.assertEqual(list(local), [lf(server_copy)])
        self.assertEqual(local[lf(server_copy)][1], "")
        for folder in ("Sent", "Drafts", "Junk", "Trash", "Archive"):
            self.assertTrue(os.path.isdir(os.path.join(self.maildir, folder, "cur")), folder)

        # 2. Maildir to server: a new message (appended as it is), a new
        #    folder with a message, a local flag change.
        self.put_local("INBOX", LOCAL_MESSAGE, "1704276000.R1.laptop", "S")
        self.put_local("Projects", PROJECT_MESSAGE, "1704276001.R2.laptop")
        self.set_local_flags(local[lf(server_copy)][0], "F")
        yield self.sync()
        remote = yield self.remote(self.inbox.id)
        self.assertEqual(set(remote), {server_copy, LOCAL_MESSAGE})
        self.assertEqual(remote[server_copy].flags, {"\\Flagged"})
        self.assertEqual(remote[LOCAL_MESSAGE].flags, {"\\Seen"})
        projects = yield self.mail.get_mailbox(self.user.id, "Projects")
        self.assertIsNotNone(projects, "the local folder was not created on the server")
        self.assertEqual(set((yield self.remote(projects.id))), {PROJECT_MESSAGE})

        # 3. Server to Maildir: a flag change, an expunge and a new message.
        yield self.mail.store_flags(self.inbox.id, [remote[LOCAL_MESSAGE].uid], ["\\Answered"], "add")
        yield self.mail.store_flags(self.inbox.id, [remote[server_copy].uid], ["\\Deleted"], "add")
        expunged = yield self.mail.expunge(self.inbox.id)
        self.assertEqual(expunged, [remote[server_copy].uid])
        yield self.deliver(LATER_MESSAGE)
        (later,) = set((yield self.remote(self.inbox.id))) - {LOCAL_MESSAGE}
        yield self.sync()
        local = self.local()
        self.assertEqual(set(local), {lf(LOCAL_MESSAGE), lf(later)})
        self.assertEqual(local[lf(LOCAL_MESSAGE)][1], "RS")
        self.assertEqual(local[lf(later)][1], "")

        # 4. Maildir to server: a local deletion expunges the server's copy,
        #    a local \\Seen reaches the server.
        os.unlink(local[lf(LOCAL_MESSAGE)][0])
        self.set_local_flags(local[lf(later)][0], "S")
        yield self.sync()
        remote = yield self.remote(self.inbox.id)
        self.assertEqual(set(remote), {later})
        self.assertEqual(remote[later].flags, {"\\Seen"})
        self.assertEqual(set(self.local()), {lf(later)})

        # 5. Nothing changed: a further run changes nothing on either side.
        yield self.sync()
        self.assertEqual({data: record.uid for data, record in (yield self.remote(self.inbox.id)).items()},
                         {later: remote[later].uid})
        self.assertEqual(set(self.local()), {lf(later)})
