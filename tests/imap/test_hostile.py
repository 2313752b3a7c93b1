"""Hostile and malformed input: every bad command gets BAD or NO, and the
connection stays usable (or is closed on purpose)."""
from twisted.internet import defer

from tests.imap.support import MAX_SIZE, IMAPTestCase

NOOP_OK = [b"N OK NOOP completed\r\n"]


class HostileInputTests(IMAPTestCase):
    @defer.inlineCallbacks
    def setUp(self):
        yield super().setUp()
        yield self.deliver(b"Subject: one\r\n\r\nbody\r\n")

    def test_malformed_commands(self):
        cases = [
            (b"\r\n", b"* BAD Invalid tag\r\n"),
            (b"+tag NOOP\r\n", b"* BAD Invalid tag\r\n"),
            (b"a\r\n", b"a BAD Missing command\r\n"),
            (b"a FROBNICATE\r\n", b"a BAD Unknown command\r\n"),
            (b"a SELECT\r\n", b"a BAD Missing mailbox name\r\n"),
            (b'a LOGIN "unterminated\r\n', b"a BAD Unterminated quoted string\r\n"),
            (b"a NOOP extra\r\n", b"a BAD Too many arguments\r\n"),
            (b"a FETCH 1 (FLAGS\r\n", b"a BAD Unbalanced parenthesis\r\n"),
            (b"a FETCH 1 FLAGS)\r\n", b"a BAD Unbalanced parenthesis\r\n"),
            (b"a NOOP \x01\r\n", b"a BAD Control character in command\r\n"),
            (b"a NOOP \x00\r\n", b"a BAD NUL in command\r\n"),
            (b"a UID NOOP\r\n", b"a BAD No mailbox selected\r\n"),
            (b"a FETCH 1 FLAGS\r\n", b"a BAD Command not valid in this state\r\n"),
            (b"a LOGIN x y\r\n", b"a BAD Command not valid in this state\r\n"),
            (b'a STATUS INBOX (BOGUS)\r\n', b"a BAD Unknown status item\r\n"),
            (b'a LIST "" "*" RETURN (NONSENSE)\r\n', b"a BAD Unknown LIST return option\r\n"),
            (b"a ENABLE\r\n", b"a BAD Missing capability\r\n"),
            (b"a ID (\"odd\")\r\n", b"a BAD Bad ID parameters\r\n"),
        ]

        def run(client):
            out = []
            for line, _ in cases:
                client.send(line)
                out.append(client.line())
                client.command(b"N", b"NOOP")
            return out, client.command(b"N", b"NOOP")

        def check(result):
            out, noop = result
            self.assertEqual(out, [expected for _, expected in cases])
            self.assertEqual(noop, NOOP_OK)

        return self.raw_session(run).addCallback(check)

    def test_selected_state_errors(self):
        def run(client):
            client.command(b"S", b"SELECT INBOX")
            out = []
            for command in [
                b"FETCH 0 FLAGS", b"FETCH 2 FLAGS", b"FETCH 1:4294967296 FLAGS", b"FETCH 1 (FLAGS BODY[0])",
                b"FETCH 1 NOPE", b"STORE 1 +FLAGS (\\Recent)", b"STORE 1 FROB (\\Seen)", b"STORE 1 +FLAGS (a]b)",
                b"COPY 1 &AGE-", b"UID FROB 1", b"SEARCH CHARSET KOI8-R ALL", b"SEARCH RETURN (ALL) ALL",
                b"FETCH 1 (FLAGS) (CHANGEDSINCE x)", b"SORT (DATE) UTF-8", b"NOOP",
            ]:
                out.append(client.command(b"a", command))
                client.command(b"N", b"NOOP")   # below the limit of consecutive errors
            return out

        def check(out):
            self.assertEqual([lines[-1] for lines in out], [
                b"a BAD Invalid sequence set\r\n", b"a BAD Invalid message sequence number\r\n",
                b"a BAD Invalid sequence set\r\n", b"a BAD Section parts start at 1\r\n",
                b"a BAD Unknown fetch attribute\r\n", b"a BAD Unknown system flag \\Recent\r\n",
                b"a BAD Expected FLAGS, +FLAGS or -FLAGS\r\n", b"a BAD Invalid keyword\r\n",
                b"a BAD Invalid mailbox name: printable ASCII encoded in an &-shift\r\n",
                b"a BAD Unknown UID command\r\n", b"a NO [BADCHARSET (US-ASCII UTF-8)] Unsupported charset\r\n",
                b"a BAD ESEARCH is not supported\r\n", b"a BAD Bad mod-sequence\r\n",
                b"a BAD Missing search criteria\r\n", b"a OK NOOP completed\r\n",
            ])

        return self.raw_session(run).addCallback(check)

    def test_sequence_sets_on_an_empty_mailbox(self):
        def run(client):
            client.command(b"S", b"SELECT Trash")
            return [client.command(b"a", command) for command in [
                b"FETCH 1:* FLAGS", b"FETCH * FLAGS", b"STORE 1:* +FLAGS (\\Seen)", b"COPY 1:* INBOX",
                b"UID FETCH 1:* FLAGS", b"SEARCH 1:*", b"UID SEARCH 1:*", b"UID STORE 1:* +FLAGS (\\Seen)",
                b"UID MOVE 1:* INBOX", b"UID EXPUNGE 1:*", b"EXPUNGE", b"NOOP",
            ]]

        def check(out):
            self.assertEqual(out, [
                [b"a BAD Invalid message sequence number\r\n"]] * 4 + [
                [b"a OK FETCH completed\r\n"], [b"* SEARCH\r\n", b"a OK SEARCH completed\r\n"],
                [b"* SEARCH\r\n", b"a OK SEARCH completed\r\n"], [b"a OK STORE completed\r\n"],
                [b"a OK MOVE completed (no messages)\r\n"], [b"a OK EXPUNGE completed\r\n"],
                [b"a OK EXPUNGE completed\r\n"], [b"a OK NOOP completed\r\n"]])

        return self.raw_session(run).addCallback(check)

    def test_invalid_mailbox_names(self):
        def run(client):
            return [client.command(b"a", command)[-1] for command in [
                b"SELECT &AGE-", b"SELECT &Jjo", b'CREATE "caf\xc3\xa9"', b"CREATE &ZeVnLIqe-&ZeVnLIqe-",
                b'CREATE "a//b"', b"CREATE a*", b'RENAME INBOX "&AGE-"', b'LIST "" "&AGE-*"', b"NOOP",
            ]]

        def check(out):
            self.assertEqual([line.split(b" ", 2)[1] for line in out], [b"BAD"] * 4 + [b"NO"] * 2 + [b"BAD"] * 2 + [b"OK"])

        return self.raw_session(run).addCallback(check)

    def test_huge_literals(self):
        def run(client):
            out = []
            # Synchronizing: refused before any data is sent; no continuation.
            client.send(b"a LOGIN {100000}\r\n")
            out.append(client.line())
            out.append(client.command(b"N", b"NOOP"))
            client.send(b"b APPEND INBOX {%d}\r\n" % (MAX_SIZE + 1))
            out.append(client.line())
            # LITERAL+: the data comes anyway; it is read, dropped, and refused.
            client.send(b"c LOGIN {100000+}\r\n" + b"x" * 100000 + b" y\r\n")
            out.append(client.line())
            client.send(b"d APPEND INBOX {%d+}\r\n" % (MAX_SIZE + 1) + b"x" * (MAX_SIZE + 1) + b"\r\n")
            out.append(client.line())
            client.send(b"e SELECT {5+}\r\nINBOX\r\n")
            out.append(client.until(b"e")[-1])
            out.append(client.command(b"N", b"NOOP"))
            # A literal larger than the protocol allows ends the connection.
            client.send(b"f LOGIN {99999999999+}\r\n")
            out.append(client.line())
            out.append(client.line())
            return out

        def check(out):
            self.assertEqual(out[0], b"a BAD Literal too large\r\n")
            self.assertEqual(out[1], NOOP_OK)
            self.assertEqual(out[2], b"b NO [TOOBIG] Message too large\r\n")
            self.assertEqual(out[3], b"c BAD Literal too large\r\n")
            self.assertEqual(out[4], b"d NO [TOOBIG] Message too large\r\n")
            self.assertEqual(out[5], b"e OK [READ-WRITE] SELECT completed\r\n")
            self.assertEqual(out[6], NOOP_OK)
            self.assertEqual(out[7:], [b"* BYE Literal too large\r\n", b""])

        return self.raw_session(run).addCallback(check)

    def test_long_lines_and_too_many_errors(self):
        def run(client):
            client.send(b"a NOOP " + b"x" * 70000 + b"\r\n")
            long_line = client.line()
            noop = client.command(b"N", b"NOOP")
            for _ in range(9):
                client.command(b"b", b"BOGUS")
            client.send(b"b BOGUS\r\n")
            return long_line, noop, client.line(), client.line()

        def check(result):
            long_line, noop, last, bye = result
            self.assertEqual(long_line, b"* BAD Line too long\r\n")
            self.assertEqual(noop, NOOP_OK)
            self.assertEqual(last, b"b BAD Unknown command\r\n")
            self.assertEqual(bye, b"* BYE Too many invalid commands\r\n")

        return self.raw_session(run, login=False).addCallback(check)

    def test_deep_search_nesting(self):
        def run(client):
            client.command(b"S", b"SELECT INBOX")
            return [client.command(b"a", command)[-1] for command in [
                b"SEARCH " + b"NOT " * 100 + b"ALL",
                b"SEARCH " + b"(" * 100 + b"ALL" + b")" * 100,
                b"SEARCH " + b"OR ALL " * 100 + b"ALL",
                b"SEARCH " + b"NOT " * 10 + b"ALL",
                b"SEARCH OR (NOT (SEEN)) (UID 1:* LARGER 1 SMALLER 999999)",
            ]]

        def check(out):
            self.assertEqual(out[:3], [b"a BAD Search criteria nested too deeply\r\n",
                                       b"a BAD Too deeply nested\r\n",
                                       b"a BAD Search criteria nested too deeply\r\n"])
            self.assertEqual(out[3:], [b"a OK SEARCH completed\r\n"] * 2)

        return self.raw_session(run).addCallback(check)

    def test_pipelined_commands_run_in_order(self):
        def run(client):
            client.send(b"1 SELECT INBOX\r\n2 STORE 1 +FLAGS (\\Flagged)\r\n3 FETCH 1 (FLAGS)\r\n"
                        b"4 SEARCH FLAGGED\r\n5 NOOP\r\n")
            return client.until(b"5")

        def check(lines):
            tagged = [line.split(b" ")[0] for line in lines if not line.startswith(b"*")]
            self.assertEqual(tagged, [b"1", b"2", b"3", b"4", b"5"])
            self.assertIn(b"* 1 FETCH (FLAGS (\\Flagged))\r\n", lines)
            self.assertIn(b"* SEARCH 1\r\n", lines)

        return self.raw_session(run).addCallback(check)
