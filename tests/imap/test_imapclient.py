"""The server driven by imapclient, as a real mail client would."""
import datetime

from twisted.internet import defer

from tests.imap.support import IMAPTestCase

MESSAGES = [
    b"From: Bob <bob@remote.example>\r\nTo: alice@example.test\r\nSubject: Meeting\r\n"
    b"Date: Tue, 2 Jan 2024 09:00:00 +0000\r\nMessage-ID: <m1@remote.example>\r\n\r\nAt nine?\r\n",
    b"From: Carol <carol@remote.example>\r\nTo: alice@example.test\r\nSubject: Re: Meeting\r\n"
    b"Date: Wed, 3 Jan 2024 09:00:00 +0000\r\nContent-Type: multipart/alternative; boundary=b\r\n\r\n"
    b"--b\r\nContent-Type: text/plain\r\n\r\nNine is fine.\r\n--b\r\nContent-Type: text/html\r\n\r\n"
    b"<p>Nine is fine.</p>\r\n--b--\r\n",
    b"From: dave@remote.example\r\nSubject: Invoice\r\n\r\nPlease pay.\r\n",
]


class IMAPClientTests(IMAPTestCase):
    @defer.inlineCallbacks
    def setUp(self):
        yield super().setUp()
        for message in MESSAGES:
            yield self.deliver(message)

    def session(self, function):
        def run():
            client = self.imapclient_client()
            try:
                return function(client)
            finally:
                client.logout()

        return self.in_thread(run)

    @defer.inlineCallbacks
    def test_read_mail(self):
        def run(client):
            folders = client.list_folders()
            special = client.find_special_folder(b"\\Sent")
            info = client.select_folder("INBOX")
            unseen = client.search(["UNSEEN"])
            meeting = client.search(["SUBJECT", "meeting", "SINCE", datetime.date(2024, 1, 1)])
            envelopes = client.fetch(unseen, ["ENVELOPE", "BODYSTRUCTURE", "RFC822.SIZE"])
            body = client.fetch([2], ["BODY.PEEK[1]", "BODY.PEEK[HEADER.FIELDS (SUBJECT)]"])
            threads = client.sort(["REVERSE", "DATE"])
            return folders, special, info, unseen, meeting, envelopes, body, threads, client.capabilities()

        folders, special, info, unseen, meeting, envelopes, body, threads, capabilities = yield self.session(run)
        self.assertIn(((b"\\HasNoChildren", b"\\Trash"), b"/", "Trash"), folders)
        self.assertEqual(special, "Sent")
        self.assertEqual(info[b"EXISTS"], 3)
        self.assertIn(b"\\Seen", info[b"PERMANENTFLAGS"])
        self.assertEqual(unseen, [1, 2, 3])
        self.assertEqual(meeting, [1, 2])
        envelope = envelopes[1][b"ENVELOPE"]
        self.assertEqual(envelope.subject, b"Meeting")
        self.assertEqual(envelope.from_[0].mailbox, b"bob")
        self.assertEqual(envelope.message_id, b"<m1@remote.example>")
        self.assertTrue(envelopes[2][b"BODYSTRUCTURE"].is_multipart)
        self.assertEqual(body[2][b"BODY[1]"], b"Nine is fine.")
        self.assertEqual(body[2][b"BODY[HEADER.FIELDS (SUBJECT)]"], b"Subject: Re: Meeting\r\n\r\n")
        self.assertEqual(threads, [3, 2, 1])
        self.assertIn(b"UIDPLUS", capabilities)

    @defer.inlineCallbacks
    def test_organise_mail(self):
        def run(client):
            client.create_folder("Projects/Émile")
            client.select_folder("INBOX")
            client.add_flags([1], [b"\\Flagged", b"$Important"])
            flagged = client.get_flags([1, 2])
            moved = client.move([2], "Projects/Émile")
            client.copy([3], "Archive")
            client.set_flags([3], [b"\\Deleted"])
            client.expunge()
            remaining = client.search()
            status = client.folder_status("Projects/Émile", ["MESSAGES", "UIDNEXT"])
            appended = client.append("Projects/Émile", b"Subject: note\r\n\r\ntext\r\n", [b"\\Seen"],
                                     msg_time=datetime.datetime(2023, 5, 6, 7, 8, 9, tzinfo=datetime.timezone.utc))
            client.rename_folder("Projects/Émile", "Projects/Done")
            client.select_folder("Projects/Done", readonly=True)
            dates = client.fetch([1, 2], ["INTERNALDATE", "FLAGS"])
            namespace = client.namespace()
            identity = client.id_({"name": "test-client"})
            return flagged, moved, remaining, status, appended, dates, namespace, identity

        flagged, moved, remaining, status, appended, dates, namespace, identity = yield self.session(run)
        self.assertEqual(set(flagged[1]), {b"\\Flagged", b"$Important"})
        self.assertEqual(flagged[2], ())
        self.assertIsNone(moved)
        self.assertEqual(remaining, [1])
        self.assertEqual(status[b"MESSAGES"], 1)
        self.assertRegex(appended.decode(), r"^\[APPENDUID \d+ 2\] APPEND completed$")
        self.assertEqual(dates[2][b"INTERNALDATE"].replace(tzinfo=None), datetime.datetime(2023, 5, 6, 7, 8, 9))
        self.assertEqual(dates[2][b"FLAGS"], (b"\\Seen",))
        self.assertEqual(namespace.personal, (("", "/"),))
        self.assertEqual(identity, ((b"name", b"emailsvc", b"vendor", b"emailsvc"),))
        boxes = {box.name for box in (yield self.mail.list_mailboxes(self.user.id))}
        self.assertIn("Projects/Done", boxes)
        archive = yield self.mail.get_mailbox(self.user.id, "Archive")
        self.assertEqual(archive.messages, 1)
