"""Extensions on the wire: UIDPLUS, UNSELECT, LIST-EXTENDED/STATUS, SPECIAL-USE,
CONDSTORE, QRESYNC, QUOTA, APPENDLIMIT, SORT, WITHIN."""
import re

from twisted.internet import defer

from tests.imap.support import IMAPTestCase

MESSAGE = b"From: bob@remote.example\r\nSubject: %d\r\n\r\nbody %d\r\n"


class ExtensionTests(IMAPTestCase):
    @defer.inlineCallbacks
    def setUp(self):
        yield super().setUp()
        for number in range(1, 4):
            yield self.deliver(MESSAGE % (number, number))
        self.inbox = yield self.mail.get_mailbox(self.user.id, "INBOX")

    def test_capabilities_after_login(self):
        def check(lines):
            caps = set(lines[0].split()[2:])
            for name in [b"IMAP4rev1", b"IDLE", b"NAMESPACE", b"UIDPLUS", b"MOVE", b"UNSELECT", b"CHILDREN",
                         b"SPECIAL-USE", b"LIST-EXTENDED", b"LIST-STATUS", b"CONDSTORE", b"QRESYNC", b"SORT",
                         b"QUOTA", b"LITERAL+", b"ENABLE", b"ID", b"SASL-IR", b"APPENDLIMIT=200000"]:
                self.assertIn(name, caps)
            self.assertNotIn(b"LOGINDISABLED", caps)
            self.assertNotIn(b"STARTTLS", caps)

        return self.raw_session(lambda client: client.command(b"C", b"CAPABILITY")).addCallback(check)

    def test_uidplus_and_unselect_close(self):
        def run(client):
            client.command(b"S", b"SELECT INBOX")
            out = [client.command(b"a", b"STORE 1:3 +FLAGS.SILENT (\\Deleted)"),
                   client.command(b"b", b"UID EXPUNGE 2"),
                   client.command(b"c", b"UID COPY 1:3 Archive"),
                   client.command(b"d", b"UNSELECT"),
                   client.command(b"e", b"STATUS INBOX (MESSAGES)"),
                   client.command(b"f", b"SELECT INBOX"),
                   client.command(b"g", b"CLOSE"),
                   client.command(b"h", b"STATUS INBOX (MESSAGES)"),
                   client.command(b"i", b"FETCH 1 FLAGS")]
            return out

        def check(out):
            self.assertEqual(out[0], [b"a OK STORE completed\r\n"])
            self.assertEqual(out[1], [b"* 2 EXPUNGE\r\n", b"b OK EXPUNGE completed\r\n"])
            self.assertRegex(out[2][0].decode(), r"^c OK \[COPYUID \d+ 1,3 1:2\] COPY completed")
            self.assertEqual(out[3], [b"d OK UNSELECT completed\r\n"])
            self.assertEqual(out[4][0], b"* STATUS INBOX (MESSAGES 2)\r\n")
            self.assertEqual(out[6], [b"g OK CLOSE completed\r\n"])
            self.assertEqual(out[7][0], b"* STATUS INBOX (MESSAGES 0)\r\n")
            self.assertEqual(out[8], [b"i BAD Command not valid in this state\r\n"])

        return self.raw_session(run).addCallback(check)

    def test_list_extended(self):
        def run(client):
            client.command(b"a", b'CREATE "Lists/Work" (USE (\\Flagged))')
            client.command(b"b", b"UNSUBSCRIBE Lists")
            return [
                client.command(b"c", b'LIST (SPECIAL-USE) "" "*"'),
                client.command(b"d", b'LIST "" ("INBOX" "Lists/%") RETURN (SUBSCRIBED STATUS (MESSAGES UNSEEN))'),
                client.command(b"e", b'LIST (SUBSCRIBED RECURSIVEMATCH) "" "%"'),
                client.command(b"f", b'LIST "" ""'),
                client.command(b"g", b'LIST (RECURSIVEMATCH) "" "*"'),
                client.command(b"h", b'CREATE x (USE (\\Bogus))'),
                client.command(b"i", b'STATUS INBOX (HIGHESTMODSEQ APPENDLIMIT SIZE)'),
            ]

        def check(out):
            special = [line for line in out[0] if line.startswith(b"* LIST")]
            self.assertEqual(len(special), 6)
            self.assertIn(b'* LIST (\\HasNoChildren \\Flagged) "/" Lists/Work\r\n', special)
            self.assertEqual(out[1][:4], [
                b'* LIST (\\HasNoChildren \\Subscribed) "/" INBOX\r\n',
                b"* STATUS INBOX (MESSAGES 3 UNSEEN 3)\r\n",
                b'* LIST (\\HasNoChildren \\Flagged \\Subscribed) "/" Lists/Work\r\n',
                b'* STATUS Lists/Work (MESSAGES 0 UNSEEN 0)\r\n'])
            self.assertIn(b'* LIST (\\HasChildren) "/" Lists ("CHILDINFO" ("SUBSCRIBED"))\r\n', out[2])
            self.assertEqual(out[3][0], b'* LIST (\\Noselect) "/" ""\r\n')
            self.assertEqual(out[4], [b"g BAD RECURSIVEMATCH needs another selection option\r\n"])
            self.assertEqual(out[5], [b"h NO [USEATTR] Unsupported special use\r\n"])
            self.assertRegex(out[6][0].decode(), r"^\* STATUS INBOX \(HIGHESTMODSEQ \d+ APPENDLIMIT 200000 SIZE \d+\)")

        return self.raw_session(run).addCallback(check)

    def test_condstore(self):
        def run(client):
            select = client.command(b"S", b"SELECT INBOX (CONDSTORE)")
            highest = int(re.search(rb"HIGHESTMODSEQ (\d+)", b"".join(select)).group(1))
            out = [highest,
                   client.command(b"a", b"STORE 1 +FLAGS (\\Seen)"),
                   client.command(b"b", b"FETCH 1:* (FLAGS) (CHANGEDSINCE %d)" % highest),
                   client.command(b"c", b"STORE 1,2 (UNCHANGEDSINCE %d) +FLAGS (\\Flagged)" % highest),
                   client.command(b"d", b"SEARCH MODSEQ %d" % (highest + 1)),
                   client.command(b"e", b"UID FETCH 2 (MODSEQ)")]
            return out

        def check(out):
            highest = out[0]
            self.assertEqual(out[1], [b"* 1 FETCH (FLAGS (\\Seen) MODSEQ (%d))\r\n" % (highest + 1),
                                      b"a OK STORE completed\r\n"])
            self.assertEqual(out[2], [b"* 1 FETCH (FLAGS (\\Seen) MODSEQ (%d))\r\n" % (highest + 1),
                                      b"b OK FETCH completed\r\n"])
            self.assertEqual(out[3], [b"* 2 FETCH (FLAGS (\\Flagged) MODSEQ (%d))\r\n" % (highest + 2),
                                      b"c OK [MODIFIED 1] Conditional STORE failed\r\n"])
            self.assertEqual(out[4], [b"* SEARCH 1 2 (MODSEQ %d)\r\n" % (highest + 2), b"d OK SEARCH completed\r\n"])
            self.assertEqual(out[5], [b"* 2 FETCH (UID 2 MODSEQ (%d))\r\n" % (highest + 2),
                                      b"e OK FETCH completed\r\n"])

        return self.raw_session(run).addCallback(check)

    def test_qresync(self):
        def run(client):
            enable = client.command(b"E", b"ENABLE QRESYNC")
            select = client.command(b"S", b"SELECT INBOX")
            uidvalidity = int(re.search(rb"UIDVALIDITY (\d+)", b"".join(select)).group(1))
            highest = int(re.search(rb"HIGHESTMODSEQ (\d+)", b"".join(select)).group(1))
            client.command(b"a", b"STORE 2 +FLAGS.SILENT (\\Deleted)")
            expunge = client.command(b"b", b"EXPUNGE")
            client.command(b"c", b"UID STORE 3 +FLAGS.SILENT (\\Answered)")
            resync = client.command(b"d", b"SELECT INBOX (QRESYNC (%d %d 1:10))" % (uidvalidity, highest))
            vanished = client.command(b"f", b"UID FETCH 1:* (FLAGS) (CHANGEDSINCE %d VANISHED)" % highest)
            return enable, expunge, resync, vanished

        def check(result):
            enable, expunge, resync, vanished = result
            self.assertEqual(enable[0], b"* ENABLED QRESYNC\r\n")
            self.assertEqual(expunge[0], b"* VANISHED 2\r\n")
            self.assertTrue(expunge[1].startswith(b"b OK [HIGHESTMODSEQ "))
            self.assertEqual(resync[0], b"* OK [CLOSED] Previous mailbox closed\r\n")
            self.assertIn(b"* VANISHED (EARLIER) 2\r\n", resync)
            self.assertTrue(any(re.fullmatch(rb"\* 2 FETCH \(UID 3 FLAGS \(\\Answered\) MODSEQ \(\d+\)\)\r\n", line)
                                for line in resync), resync)
            self.assertEqual(vanished[0], b"* VANISHED (EARLIER) 2\r\n")
            self.assertRegex(vanished[1].decode(), r"^\* 2 FETCH \(UID 3 FLAGS \(\\Answered\) MODSEQ \(\d+\)\)")

        return self.raw_session(run).addCallback(check)

    @defer.inlineCallbacks
    def test_quota_is_enforced_on_append(self):
        used = self.inbox.size
        yield self.directory.set_quota("alice@example.test", used + 100)
        fits, too_much = b"Subject: fits\r\n\r\n" + b"x" * 60, b"Subject: too much\r\n\r\n" + b"x" * 60

        def run(client):
            return [client.command(b"q", b"GETQUOTAROOT INBOX"),
                    client.command(b"r", b'GETQUOTA ""'),
                    client.command(b"s", b'SETQUOTA "" (STORAGE 1)'),
                    client.command(b"a", b"APPEND INBOX {%d+}\r\n%s" % (len(fits), fits)),
                    client.command(b"b", b"APPEND INBOX {%d+}\r\n%s" % (len(too_much), too_much))]

        out = yield self.raw_session(run)
        self.assertEqual(out[0][0], b'* QUOTAROOT INBOX ""\r\n')
        self.assertEqual(out[0][1], b'* QUOTA "" (STORAGE %d %d)\r\n' % ((used + 1023) // 1024, (used + 100) // 1024))
        self.assertEqual(out[1][0], out[0][1])
        self.assertEqual(out[2], [b"s NO [NOPERM] Quotas are set by the administrator\r\n"])
        self.assertTrue(out[3][0].startswith(b"a OK [APPENDUID "))
        self.assertEqual(out[4], [b"b NO [OVERQUOTA] Quota exceeded\r\n"])

    def test_sort_and_within(self):
        def run(client):
            client.command(b"S", b"SELECT INBOX")
            return [client.command(b"a", b"SORT (REVERSE SUBJECT) UTF-8 ALL"),
                    client.command(b"b", b"UID SORT (SIZE) US-ASCII NOT SUBJECT 2"),
                    client.command(b"c", b"SEARCH YOUNGER 3600"),
                    client.command(b"d", b"SEARCH OLDER 3600"),
                    client.command(b"e", b"SORT (DATE) KOI8-R ALL")]

        def check(out):
            self.assertEqual(out[0][0], b"* SORT 3 2 1\r\n")
            self.assertEqual(out[1][0], b"* SORT 1 3\r\n")
            self.assertEqual(out[2][0], b"* SEARCH 1 2 3\r\n")
            self.assertEqual(out[3][0], b"* SEARCH\r\n")
            self.assertTrue(out[4][0].startswith(b"e NO [BADCHARSET"))

        return self.raw_session(run).addCallback(check)
