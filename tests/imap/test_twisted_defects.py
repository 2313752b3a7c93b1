"""Regression tests, one per IMAP4Server defect listed in DESIGN.md section 4.

(The STARTTLS command injection test is
tests.imap.test_auth.LoginTests.test_starttls_discards_pipelined_commands.)
"""
from twisted.internet import defer

from tests.imap.support import MAX_SIZE, IMAPTestCase

MESSAGE = b"From: bob@remote.example\r\nSubject: Quarterly numbers\r\n\r\nRevenue is up.\r\n"

# Every capability advertised after login, and a command that exercises it.
PROBES = {
    b"IMAP4rev1": b"NOOP", b"LITERAL+": b"STATUS {5+}\r\nINBOX (MESSAGES)", b"SASL-IR": b"NOOP",
    b"ID": b"ID NIL", b"ENABLE": b"ENABLE CONDSTORE", b"IDLE": None, b"NAMESPACE": b"NAMESPACE",
    b"UNSELECT": b"UNSELECT", b"UIDPLUS": b"UID EXPUNGE 1:*", b"MOVE": b"MOVE 1 Archive",
    b"CHILDREN": b'LIST "" "%"', b"SPECIAL-USE": b'LIST "" "*" RETURN (SPECIAL-USE)',
    b"CREATE-SPECIAL-USE": b"CREATE Everything (USE (\\All))",
    b"LIST-EXTENDED": b'LIST (SUBSCRIBED) "" "*"', b"LIST-STATUS": b'LIST "" "*" RETURN (STATUS (MESSAGES))',
    b"CONDSTORE": b"UID FETCH 1:* (MODSEQ)", b"QRESYNC": b"ENABLE QRESYNC", b"SORT": b"SORT (ARRIVAL) UTF-8 ALL",
    b"WITHIN": b"SEARCH YOUNGER 60", b"QUOTA": b"GETQUOTAROOT INBOX", b"QUOTA=RES-STORAGE": b"GETQUOTAROOT INBOX",
    b"STATUS=SIZE": b"STATUS INBOX (SIZE)", b"APPENDLIMIT=%d" % MAX_SIZE: b"STATUS INBOX (APPENDLIMIT)",
}


class TwistedDefectTests(IMAPTestCase):
    @defer.inlineCallbacks
    def setUp(self):
        yield super().setUp()
        yield self.deliver(MESSAGE)

    def session(self, function):
        """`function(client)` in a session that has selected INBOX."""
        def selected(client):
            client.command(b"S", b"SELECT INBOX")
            return function(client)

        return self.raw_session(selected)

    def test_search_runs(self):
        """Twisted's built-in SEARCH fails on Python 3; ours runs in SQL."""
        def run(client):
            return [client.command(b"a", b"SEARCH TEXT revenue"), client.command(b"b", b'SEARCH HEADER Subject "numbers"'),
                    client.command(b"c", b"SEARCH NOT TEXT revenue")]

        def check(out):
            self.assertEqual(out, [[b"* SEARCH 1\r\n", b"a OK SEARCH completed\r\n"],
                                   [b"* SEARCH 1\r\n", b"b OK SEARCH completed\r\n"],
                                   [b"* SEARCH\r\n", b"c OK SEARCH completed\r\n"]])

        return self.session(run).addCallback(check)

    def test_append_without_flags_or_date(self):
        def run(client):
            return client.command(b"a", b"APPEND INBOX {%d+}\r\n%s" % (len(MESSAGE), MESSAGE))

        def check(out):
            self.assertRegex(out[-1].decode(), r"^a OK \[APPENDUID \d+ 2\] APPEND completed\r\n$")
            self.assertIn(b"* 2 EXISTS\r\n", out)

        return self.session(run).addCallback(check)

    def test_partial_fetch_sends_only_the_range(self):
        def run(client):
            return client.command(b"a", b"FETCH 1 BODY.PEEK[]<0.10>")

        return self.session(run).addCallback(lambda out: self.assertEqual(
            out, [b"* 1 FETCH (BODY[]<0> {10}\r\nReturn-Pat)\r\n", b"a OK FETCH completed\r\n"]))

    def test_fetch_body_sets_seen(self):
        def run(client):
            return [client.command(b"a", b"FETCH 1 (BODY.PEEK[TEXT])"), client.command(b"b", b"FETCH 1 (BODY[TEXT])"),
                    client.command(b"c", b"FETCH 1 (FLAGS)")]

        def check(out):
            self.assertEqual(out[0], [b"* 1 FETCH (BODY[TEXT] {16}\r\nRevenue is up.\r\n)\r\n", b"a OK FETCH completed\r\n"])
            self.assertEqual(out[1], [b"* 1 FETCH (BODY[TEXT] {16}\r\nRevenue is up.\r\n FLAGS (\\Seen))\r\n",
                                      b"b OK FETCH completed\r\n"])
            self.assertEqual(out[2], [b"* 1 FETCH (FLAGS (\\Seen))\r\n", b"c OK FETCH completed\r\n"])

        return self.session(run).addCallback(check)

    def test_append_is_size_capped(self):
        def run(client):
            client.send(b"a APPEND INBOX {%d}\r\n" % (MAX_SIZE + 1))
            return client.line(), client.command(b"b", b"NOOP")

        def check(result):
            self.assertEqual(result[0], b"a NO [TOOBIG] Message too large\r\n")
            self.assertEqual(result[1], [b"b OK NOOP completed\r\n"])

        return self.session(run).addCallback(check)

    def test_namespace_reply(self):
        return self.session(lambda client: client.command(b"a", b"NAMESPACE")).addCallback(
            lambda out: self.assertEqual(out, [b'* NAMESPACE (("" "/")) NIL NIL\r\n', b"a OK NAMESPACE completed\r\n"]))

    def test_every_advertised_capability_works(self):
        def run(client):
            caps = client.command(b"C", b"CAPABILITY")[0].split()[2:]
            results = {}
            for cap in caps:
                probe = PROBES.get(cap, b"<no probe>")
                if probe is None or probe == b"<no probe>":
                    results[cap] = probe
                    continue
                client.command(b"S", b"SELECT INBOX")
                results[cap] = client.command(b"P", probe)[-1]
            client.send(b"I IDLE\r\n")
            idle = client.line()
            client.send(b"DONE\r\n")
            return results, idle, client.until(b"I")

        def check(result):
            results, idle, done = result
            for cap, reply in results.items():
                self.assertTrue(reply is None or reply.startswith(b"P OK "), (cap, reply))
            self.assertEqual(set(results), set(PROBES))
            self.assertEqual((idle, done), (b"+ idling\r\n", [b"I OK IDLE completed\r\n"]))

        return self.session(run).addCallback(check)
