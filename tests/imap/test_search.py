"""SEARCH and SORT keys -> store criteria trees (no I/O)."""
from types import SimpleNamespace

from twisted.trial import unittest

from emailsvc.imap.mailbox import MailboxView
from emailsvc.imap.search import SearchParser, check_charset, parse_date, parse_sort_keys
from emailsvc.imap.wire import Bad, No, tokenize

DAY = 86400
FEB_1_1994 = 760060800


def view(uids=(3, 5, 9, 12)):
    mailbox = MailboxView(SimpleNamespace(store=None), SimpleNamespace(id=1), False)
    mailbox.uids = list(uids)
    return mailbox


def parse(text, uids=(3, 5, 9, 12)):
    parser = SearchParser(tokenize(text, []), view(uids), now=1_000_000)
    return parser.parse()


class SearchParserTests(unittest.SynchronousTestCase):
    def test_keys(self):
        cases = {
            b"ALL": ("all",),
            b"seen": ("flag", "\\Seen", True),
            b"UNDELETED": ("flag", "\\Deleted", False),
            b"KEYWORD $Work": ("flag", "$Work", True),
            b"UNKEYWORD foo": ("flag", "foo", False),
            b'SUBJECT "hello world"': ("header", "subject", "hello world"),
            b"FROM alice": ("header", "from", "alice"),
            b"HEADER X-Spam yes": ("header", "x-spam", "yes"),
            b'HEADER "List-Id" ""': ("header", "list-id", ""),
            b"BODY word": ("body", "word"),
            b"TEXT word": ("text", "word"),
            b"BEFORE 1-Feb-1994": ("internal_date", None, FEB_1_1994),
            b'ON "1-Feb-1994"': ("internal_date", FEB_1_1994, FEB_1_1994 + DAY),
            b"SINCE 01-feb-1994": ("internal_date", FEB_1_1994, None),
            b"SENTON 1-Feb-1994": ("sent_date", FEB_1_1994, FEB_1_1994 + DAY),
            b"LARGER 100": ("size", 101, None),
            b"SMALLER 100": ("size", None, 100),
            b"UID 4:10": ("uid", ((4, 10),)),
            b"UID 10:*": ("uid", ((10, 12),)),
            b"2:3": ("uid", ((5, 9),)),
            b"3:*": ("uid", ((9, 12),)),
            b"1,9": ("uid", ((3, 3),)),
            b"NOT SEEN": ("not", ("flag", "\\Seen", True)),
            b"OR SEEN (FLAGGED DRAFT)": ("or", (("flag", "\\Seen", True),
                                                ("and", (("flag", "\\Flagged", True), ("flag", "\\Draft", True))))),
            b"SEEN FLAGGED": ("and", (("flag", "\\Seen", True), ("flag", "\\Flagged", True))),
            b"MODSEQ 5": ("modseq", 5),
            b'MODSEQ "/flags/\\\\draft" all 5': ("modseq", 5),
            b"YOUNGER 100": ("internal_date", 999_900, None),
            b"NEW": ("and", (("flag", "\\Recent", True), ("flag", "\\Seen", False))),
        }
        for text, tree in cases.items():
            self.assertEqual(parse(text), tree, text)

    def test_errors(self):
        for text in [b"", b"BOGUS", b"SUBJECT", b"OR SEEN", b"NOT", b"BEFORE 31-Feb-2020", b"BEFORE yesterday",
                     b"LARGER x", b"KEYWORD \\Bogus", b"HEADER \"a b\" x", b"()", b"UID x", b"1:0"]:
            self.assertRaises(Bad, parse, text)

    def test_nesting_limit(self):
        self.assertEqual(parse(b"NOT " * 20 + b"ALL")[0], "not")
        self.assertRaises(Bad, parse, b"NOT " * 40 + b"ALL")
        self.assertRaises(Bad, parse, b"OR " * 40 + b"ALL " * 41)
        self.assertRaises(Bad, parse, b"(" * 40 + b"ALL" + b")" * 40)

    def test_empty_mailbox(self):
        self.assertEqual(parse(b"1:*", uids=()), ("uid", ()))
        self.assertEqual(parse(b"UID 1:*", uids=()), ("uid", ((0, 1),)))

    def test_charset_dates_sort(self):
        self.assertEqual(check_charset(b"utf-8"), "UTF-8")
        self.assertRaises(No, check_charset, b"KOI8-R")
        self.assertEqual(parse_date(b"1-Feb-1994"), FEB_1_1994)
        self.assertEqual(parse_sort_keys(tokenize(b"(REVERSE DATE subject)", [])[0]),
                         [("date", True), ("subject", False)])
        for bad in [b"()", b"(REVERSE)", b"(COLOUR)", b"(REVERSE REVERSE DATE)"]:
            self.assertRaises(Bad, parse_sort_keys, tokenize(bad, [])[0])
