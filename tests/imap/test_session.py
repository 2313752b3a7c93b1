"""Everyday IMAP sessions with Python's imaplib over implicit TLS."""
import email
import imaplib
import re

from twisted.internet import defer

from tests.imap.support import MAX_SIZE, IMAPTestCase

MESSAGE = (b"From: Bob <bob@remote.example>\r\nTo: alice@example.test\r\nSubject: hello there\r\n"
           b"Date: Mon, 1 Jan 2024 10:00:00 +0000\r\nX-Tracking: abc123\r\n\r\nHi Alice, the numbers are in.\r\n")
OTHER = (b"From: carol@remote.example\r\nTo: alice@example.test\r\nSubject: lunch\r\n\r\n"
         b"Sandwiches? \xc3\x9cberraschung!\r\n")


def fetch_map(data):
    """imaplib FETCH data -> {seq: raw response bytes}."""
    out = {}
    for item in data:
        if isinstance(item, tuple):
            seq = int(item[0].split()[0])
            out[seq] = out.get(seq, b"") + item[0] + item[1]
        elif isinstance(item, bytes) and item not in (b")",):
            out[int(item.split()[0])] = out.get(int(item.split()[0]), b"") + item
    return out


def bad_create(client):
    try:
        client.create("&AGE-")
    except imaplib.IMAP4.error as error:
        return str(error)


class ImaplibSessionTests(IMAPTestCase):
    @defer.inlineCallbacks
    def setUp(self):
        yield super().setUp()
        yield self.deliver(MESSAGE)
        yield self.deliver(OTHER)

    def session(self, function):
        def run():
            client = self.imaplib_client()
            try:
                return function(client)
            finally:
                try:
                    client.logout()
                except (imaplib.IMAP4.abort, OSError):
                    pass

        return self.in_thread(run)

    @defer.inlineCallbacks
    def test_list_select_fetch(self):
        def run(client):
            listing = client.list()
            select = client.select("INBOX")
            flags = client.fetch("1:*", "(UID FLAGS RFC822.SIZE ENVELOPE)")
            peek = client.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
            after_peek = client.fetch("1", "(FLAGS)")
            partial = client.fetch("1", "(BODY[]<0.10>)")
            whole = client.fetch("2", "(RFC822)")
            after = client.fetch("1:2", "(FLAGS)")
            return listing, select, flags, peek, after_peek, partial, whole, after

        listing, select, flags, peek, after_peek, partial, whole, after = yield self.session(run)
        names = [line.decode() for line in listing[1]]
        self.assertIn('(\\HasNoChildren \\Junk) "/" Junk', names)
        self.assertIn('(\\HasNoChildren) "/" INBOX', names)
        self.assertEqual(select, ("OK", [b"2"]))
        first = fetch_map(flags[1])[1]
        self.assertIn(b"UID 1 FLAGS () RFC822.SIZE ", first)
        self.assertIn(b'"hello there" (("Bob" NIL "bob" "remote.example"))', first)
        self.assertEqual(peek[1][0][1], b"Subject: hello there\r\n\r\n")
        self.assertEqual(after_peek[1], [b"1 (FLAGS ())"])
        # Partial fetch: exactly ten octets, and BODY[] sets \Seen.
        self.assertEqual(partial[1][0][0], b"1 (BODY[]<0> {10}")
        self.assertEqual(partial[1][0][1], b"Return-Pat")
        self.assertIn(b"FLAGS (\\Seen)", partial[1][1])
        raw = whole[1][0][1]
        self.assertTrue(raw.endswith(OTHER))
        self.assertEqual(email.message_from_bytes(raw)["Subject"], "lunch")
        self.assertEqual(after[1], [b"1 (FLAGS (\\Seen))", b"2 (FLAGS (\\Seen))"])

    @defer.inlineCallbacks
    def test_store_search_expunge(self):
        def run(client):
            client.select("INBOX")
            out = [client.store("1", "+FLAGS", "(\\Flagged $Work)"),
                   client.search(None, "FLAGGED"),
                   client.search(None, "KEYWORD", "$work"),
                   client.search(None, "UNFLAGGED"),
                   client.search(None, "SUBJECT", '"HELLO"'),
                   client.search(None, "HEADER", "X-Tracking", "abc"),
                   client.search(None, "OR", "FROM", "carol", "TEXT", "numbers"),
                   client.search(None, "NOT", "(FROM bob SINCE 1-Jan-2000)"),
                   client.uid("SEARCH", "ALL"),
                   client.store("2", "-FLAGS.SILENT", "(\\Seen)"),
                   client.store("1", "FLAGS", "(\\Deleted)"),
                   client.expunge(),
                   client.search(None, "ALL")]
            client.literal = "Überraschung".encode()
            out.append(client.search("UTF-8", "TEXT"))
            return out

        out = yield self.session(run)
        self.assertEqual(out[0], ("OK", [b"1 (FLAGS ($Work \\Flagged))"]))
        self.assertEqual([result[1] for result in out[1:9]],
                         [[b"1"], [b"1"], [b"2"], [b"1"], [b"1"], [b"1 2"], [b"2"], [b"1 2"]])
        self.assertEqual(out[9], ("OK", [None]))
        self.assertEqual(out[11], ("OK", [b"1"]))
        self.assertEqual(out[12][1], [b"1"])
        self.assertEqual(out[13][1], [b"1"])

    @defer.inlineCallbacks
    def test_append(self):
        def failing(client, *args):
            try:
                result = client.append(*args)
            except imaplib.IMAP4.error as error:
                return str(error)
            return result if result[0] == "OK" else result[1][0].decode()

        def run_safe(client):
            results = []
            for args in [("INBOX", None, None, b"Subject: plain append\r\n\r\nno flags, no date\r\n"),
                         ("Drafts", "(\\Draft \\Seen)", '"05-Mar-2021 10:11:12 +0100"',
                          b"Subject: draft\r\n\r\nwith flags and date\r\n"),
                         ("Nowhere", None, None, b"Subject: x\r\n\r\ny\r\n"),
                         ("INBOX", None, None, b"x" * (MAX_SIZE + 1)),
                         ("INBOX", "(\\Bogus)", None, b"Subject: x\r\n\r\ny\r\n")]:
                results.append(failing(client, *args))
            client.select("Drafts")
            results.append(client.fetch("1", "(FLAGS INTERNALDATE)"))
            return results

        results = yield self.session(run_safe)
        self.assertEqual(results[0][0], "OK")
        self.assertRegex(results[0][1][0].decode(), r"^\[APPENDUID \d+ 3\] APPEND completed$")
        self.assertRegex(results[1][1][0].decode(), r"^\[APPENDUID \d+ 1\] APPEND completed$")
        self.assertIn("[TRYCREATE]", results[2])
        self.assertIn("[TOOBIG]", results[3])
        self.assertIn("Unknown system flag", results[4])
        self.assertEqual(results[5][1], [b'1 (FLAGS (\\Draft \\Seen) INTERNALDATE "05-Mar-2021 09:11:12 +0000")'])
        inbox = yield self.mail.get_mailbox(self.user.id, "INBOX")
        self.assertEqual(inbox.messages, 3)

    @defer.inlineCallbacks
    def test_copy_move_and_junk_feedback(self):
        def run(client):
            client.select("INBOX")
            copy = client.copy("1", "Archive")
            move = client.uid("MOVE", "2", "Junk")
            moved_lines = list(client.untagged_responses.get("EXPUNGE", []))
            missing = client.copy("1", "Nowhere")
            client.select("Junk")
            back = client._simple_command("MOVE", "1", "INBOX")
            return copy, move, moved_lines, missing, back

        copy, move, expunged, missing, back = yield self.session(run)
        self.assertRegex(copy[1][0].decode(), r"^\[COPYUID \d+ 1 1\] COPY completed$")
        self.assertEqual(move[0], "OK")
        self.assertEqual(expunged, [b"2"])
        self.assertEqual(missing[0], "NO")
        self.assertIn(b"[TRYCREATE]", missing[1][0])
        self.assertEqual(back[0], "OK")
        archive = yield self.mail.get_mailbox(self.user.id, "Archive")
        inbox = yield self.mail.get_mailbox(self.user.id, "INBOX")
        self.assertEqual((archive.messages, inbox.messages), (1, 2))
        feedback = yield self.mail.list_feedback(self.user.id)
        self.assertEqual([verdict for _, verdict, _ in feedback], ["spam", "ham"])

    @defer.inlineCallbacks
    def test_mailbox_management(self):
        def run(client):
            return [
                client.create("Projekte/Entw&APw-rfe"),
                client.list('""', "Projekte/*"),
                client.create("Projekte"),
                client.delete("Nope"),
                client.rename("Projekte", "Work"),
                client.list('""', "%"),
                client.subscribe("Work/Entw&APw-rfe"),
                client.unsubscribe("Work"),
                client.lsub('""', "Work*"),
                client.status("INBOX", "(MESSAGES UNSEEN UIDNEXT SIZE)"),
                client.rename("INBOX", '"Old Inbox"'),
                client.status("INBOX", "(MESSAGES)"),
                client.status('"Old Inbox"', "(MESSAGES)"),
                client.delete("Work/Entw&APw-rfe"),
                client.delete("INBOX"),
                bad_create(client),
                client.noop(),
            ]

        out = yield self.session(run)
        self.assertEqual(out[0][0], "OK")
        self.assertEqual(out[1][1], [b'(\\HasNoChildren) "/" Projekte/Entw&APw-rfe'])
        self.assertEqual(out[2][0], "NO")
        self.assertIn(b"[ALREADYEXISTS]", out[2][1][0])
        self.assertEqual(out[3][0], "NO")
        self.assertIn(b"[NONEXISTENT]", out[3][1][0])
        self.assertEqual(out[4][0], "OK")
        self.assertIn(b'(\\HasChildren) "/" Work', out[5][1])
        self.assertEqual(out[8][1], [b'() "/" Work/Entw&APw-rfe'])
        status = out[9][1][0].decode()
        self.assertRegex(status, r'^INBOX \(MESSAGES 2 UNSEEN 2 UIDNEXT 3 SIZE \d+\)$')
        self.assertEqual(out[10][0], "OK")
        self.assertEqual(out[11][1], [b"INBOX (MESSAGES 0)"])
        self.assertEqual(out[12][1], [b'"Old Inbox" (MESSAGES 2)'])
        self.assertEqual(out[13][0], "OK")
        self.assertEqual(out[14][0], "NO")
        self.assertIn("BAD [b'Invalid mailbox name: printable ASCII encoded in an &-shift']", out[15])
        self.assertEqual(out[16][0], "OK")
        boxes = {box.name for box in (yield self.mail.list_mailboxes(self.user.id))}
        self.assertIn("Work", boxes)
        self.assertNotIn("Work/Entwürfe", boxes)

    @defer.inlineCallbacks
    def test_namespace_id_enable_quota_sort(self):
        yield self.directory.set_quota("alice@example.test", 10 * 1024 * 1024)

        def run(client):
            out = [client.namespace(), client.xatom("ID", '("name" "test")'), client.untagged_responses.pop("ID", None)]
            client.enable("CONDSTORE")
            out.append(client.untagged_responses.pop("ENABLED", None))
            client.user = None
            out.append(client.getquotaroot("INBOX"))
            client.select("INBOX")
            out.append(client.sort("(REVERSE SUBJECT)", "UTF-8", "ALL"))
            out.append(client.sort("(ARRIVAL)", "UTF-8", "ALL"))
            out.append(client.fetch("1", "(FLAGS)"))
            return out

        yield self.directory.get_user("alice@example.test")
        # The quota is read at login: log in after setting it.
        out = yield self.session(run)
        self.assertEqual(out[0], ("OK", [b'(("" "/")) NIL NIL']))
        self.assertEqual(out[2], [b'("name" "emailsvc" "vendor" "emailsvc")'])
        self.assertEqual(out[3], [b"CONDSTORE"])
        quota = out[4][1]
        self.assertEqual(quota[0], [b'INBOX ""'])
        self.assertRegex(quota[1][0].decode(), r'^"" \(STORAGE 1 10240\)$')
        self.assertEqual(out[5][1], [b"2 1"])
        self.assertEqual(out[6][1], [b"1 2"])
        self.assertTrue(re.fullmatch(rb"1 \(FLAGS \(\) MODSEQ \(\d+\)\)", out[7][1][0]), out[7])
