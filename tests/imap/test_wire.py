"""Modified UTF-7, the command tokenizer and response formatting."""
from twisted.trial import unittest

from emailsvc.imap import utf7
from emailsvc.imap.wire import (
    Args, Atom, Bad, String, decode_mailbox, format_pairs_set, format_set, parse_sequence_set, render, string,
    tokenize, valid_tag,
)


class UTF7Tests(unittest.SynchronousTestCase):
    def test_round_trips(self):
        for name, wire in [("INBOX", b"INBOX"), ("a&b", b"a&-b"), ("Entwürfe", b"Entw&APw-rfe"),
                           ("日本語", b"&ZeVnLIqe-"), ("~peter/mail/台北/日本語", b"~peter/mail/&U,BTFw-/&ZeVnLIqe-"),
                           ("😀 x", b"&2D3eAA- x"), ("", b"")]:
            self.assertEqual(utf7.encode(name), wire, name)
            self.assertEqual(utf7.decode(wire), name, wire)

    def test_invalid(self):
        for wire in [b"&", b"&Jjo", b"&AGE-", b"&ZeVnLIqe-&ZeVnLIqe-", b"&2D0-", b"caf\xc3\xa9", b"a\x00b",
                     b"&AOR-", b"&Z-", b"&Ze!-"]:
            self.assertRaises(ValueError, utf7.decode, wire)

    def test_mailbox_names(self):
        self.assertEqual(decode_mailbox(b"inbox"), "INBOX")
        self.assertEqual(decode_mailbox(b"iNbOx/Sub"), "INBOX/Sub")
        self.assertEqual(decode_mailbox(b"Inboxes"), "Inboxes")
        self.assertRaises(Bad, decode_mailbox, b"&AGE-")


class TokenizerTests(unittest.SynchronousTestCase):
    def test_atoms_strings_lists_literals(self):
        tokens = tokenize(b'a1 FETCH 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (From "To")]<0.10>) "q \\"x\\" \\\\" \x00',
                          [b"lit\r\neral"])
        self.assertEqual(tokens, [b"a1", b"FETCH", b"1:*", [b"FLAGS", b'BODY.PEEK[HEADER.FIELDS (From "To")]<0.10>'],
                                  b'q "x" \\', b"lit\r\neral"])
        self.assertIsInstance(tokens[0], Atom)
        self.assertIsInstance(tokens[4], String)
        self.assertIsInstance(tokens[5], String)

    def test_errors(self):
        for text in [b"a (", b"a )", b'a "open', b'a "bad \\x"', b"a BODY[", b"a \x01", b"a " + b"(" * 40 + b")" * 40,
                     b"a \x00"]:
            self.assertRaises(Bad, tokenize, text, [])

    def test_tags(self):
        for tag in [b"a1", b"A.2", b"x]"]:
            self.assertTrue(valid_tag(Atom(tag)), tag)
        for tag in [b"a+", b"*", b"a{", b"", b"x" * 65]:
            self.assertFalse(valid_tag(Atom(tag)), tag)
        self.assertFalse(valid_tag(String(b"a")))

    def test_sequence_sets(self):
        self.assertEqual(parse_sequence_set(b"1,3:5,7:*,*"), [(1, 1), (3, 5), (7, None), (None, None)])
        for bad in [b"0", b"1:0", b"a", b"1,,2", b"", b"4294967296", b"$", b"1:2:3"]:
            self.assertRaises(Bad, parse_sequence_set, bad)
        self.assertEqual(format_set([5, 1, 2, 3, 9, 2]), b"1:3,5,9")
        self.assertEqual(format_pairs_set([7, 8, 9, 3]), b"7:9,3")

    def test_args(self):
        args = Args(tokenize(b'x "INBOX" 12 (a)', []))
        self.assertEqual(args.atom(), b"x")
        self.assertEqual(args.mailbox(), "INBOX")
        self.assertEqual(args.number(), 12)
        self.assertEqual(args.list(), [b"a"])
        args.end()
        self.assertRaises(Bad, args.next)
        self.assertRaises(Bad, Args([Atom(b"x")]).end)
        self.assertRaises(Bad, Args([String(b"x")]).atom)
        self.assertRaises(Bad, Args([Atom(b"99999999999")]).number)


class FormattingTests(unittest.SynchronousTestCase):
    def test_strings(self):
        self.assertEqual(string("plain"), b'"plain"')
        self.assertEqual(string('a "b" \\c'), b'"a \\"b\\" \\\\c"')
        self.assertEqual(string("Grüße"), b"{7}\r\nGr\xc3\xbc\xc3\x9fe")
        self.assertEqual(string(b"two\r\nlines"), b"{10}\r\ntwo\r\nlines")
        # Text and bytes take different paths to the same answer.
        for value in ["tab\there", "del\x7f", "x" * 1023, "x" * 1024, 'q"\\' * 400, ""]:
            self.assertEqual(string(value), string(value.encode()), value)
        self.assertEqual(string("tab\there"), b"{8}\r\ntab\there")
        self.assertEqual(string("x" * 1024), b"{1024}\r\n" + b"x" * 1024)
        self.assertEqual(render([None, 3, "x", ["y"]]), b'(NIL 3 "x" ("y"))')
