"""FETCH attribute parsing, structure rendering and section offsets (no I/O)."""
from twisted.internet import defer
from twisted.trial import unittest

from emailsvc.imap.fetch import (
    Renderer, Section, envelope, parse_items, read_sections, section_range, structure,
)
from emailsvc.imap.message import Message, filter_fields
from emailsvc.imap.wire import Atom, Bad, tokenize
from emailsvc.store.model import MessageRecord
from emailsvc.store.parse import parse_message

NESTED = (
    b"From: Alice <alice@example.test>\r\nTo: bob@example.test\r\nSubject: nested\r\n"
    b"Date: Tue, 2 Jan 2024 03:04:05 +0100\r\nMessage-ID: <1@example.test>\r\n"
    b"Content-Type: multipart/mixed; boundary=outer\r\n\r\n"
    b"preamble\r\n--outer\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nfirst part\r\n"
    b"--outer\r\nContent-Type: message/rfc822\r\n\r\n"
    b"Subject: inner\r\nFrom: carol@example.test\r\nContent-Type: multipart/alternative; boundary=in\r\n\r\n"
    b"--in\r\nContent-Type: text/plain\r\n\r\ninner plain\r\n--in\r\nContent-Type: text/html\r\n\r\n<p>inner</p>\r\n--in--\r\n"
    b"\r\n--outer\r\nContent-Type: application/pdf; name=x.pdf\r\nContent-Disposition: attachment; filename=x.pdf\r\n"
    b"Content-Transfer-Encoding: base64\r\n\r\nJVBERi0=\r\n--outer--\r\n"
)


class FakeBlobs:
    def __init__(self, data):
        self.data = data
        self.reads = []

    def get(self, key, offset=0, length=None):
        self.reads.append((offset, length))
        return defer.succeed(self.data[offset:None if length is None else offset + length])


def record(size, flags=frozenset({"\\Seen"})):
    return MessageRecord(mailbox_id=1, uid=7, modseq=9, flags=flags, internal_date=0, size=size, content_id=3)


class ItemParsingTests(unittest.SynchronousTestCase):
    def items(self, text):
        return parse_items(tokenize(text, [])[0])

    def test_macros_and_items(self):
        self.assertEqual([i.name for i in self.items(b"FAST")], ["FLAGS", "INTERNALDATE", "RFC822.SIZE"])
        self.assertEqual(len(self.items(b"FULL")), 5)
        items = self.items(b"(UID body.peek[1.2.header.fields (from X-Y)]<5.10> BODY[] RFC822.TEXT)")
        self.assertEqual(items[1].label, b"BODY[1.2.HEADER.FIELDS (FROM X-Y)]<5>")
        self.assertEqual(items[1].section, Section((1, 2), "HEADER.FIELDS", (b"FROM", b"X-Y")))
        self.assertEqual((items[1].partial, items[1].peek), ((5, 10), True))
        self.assertTrue(items[2].sets_seen)
        self.assertTrue(items[3].sets_seen)
        self.assertEqual(items[3].section, Section((), "TEXT"))

    def test_bad_items(self):
        for text in [b"()", b"BODY[0]", b"BODY[1.MIMEX]", b"BODY[MIME]", b"BODY[]<1>", b"BODY[]<0.0>",
                     b"BODY[HEADER.FIELDS]", b"BODY[TEXT (x)]", b"NOPE", b"BINARY[1]", b'"FLAGS"']:
            self.assertRaises(Bad, self.items, text)
        self.assertRaises(Bad, parse_items, [Atom(b"FLAGS")] * 201)


class StructureTests(unittest.SynchronousTestCase):
    def setUp(self):
        self.parsed = parse_message(NESTED)
        self.body = self.parsed["body"]

    def range(self, path, kind=""):
        found = section_range(self.body, Section(path, kind), len(NESTED))
        return None if found is None else NESTED[found[0]:found[1]]

    def test_sections(self):
        self.assertEqual(self.range(()), NESTED)
        self.assertTrue(self.range((), "HEADER").startswith(b"From: Alice"))
        self.assertTrue(self.range((), "HEADER").endswith(b"boundary=outer\r\n\r\n"))
        self.assertTrue(self.range((), "TEXT").startswith(b"preamble"))
        self.assertEqual(self.range((1,)), b"first part")
        self.assertEqual(self.range((1,), "MIME"), b"Content-Type: text/plain; charset=utf-8\r\n\r\n")
        self.assertTrue(self.range((2,)).startswith(b"Subject: inner"))
        self.assertTrue(self.range((2,), "HEADER").endswith(b"boundary=in\r\n\r\n"))
        self.assertTrue(self.range((2,), "TEXT").startswith(b"--in"))
        self.assertEqual(self.range((2, 1)), b"inner plain")
        self.assertEqual(self.range((2, 2)), b"<p>inner</p>")
        self.assertEqual(self.range((3,)), b"JVBERi0=")
        self.assertIsNone(self.range((4,)))
        self.assertIsNone(self.range((1, 2)))
        self.assertIsNone(self.range((1,), "HEADER"))

    def test_single_part_message(self):
        raw = b"Subject: x\r\n\r\nbody\r\n"
        body = parse_message(raw)["body"]
        self.assertEqual(section_range(body, Section((1,)), len(raw)), (14, 20))
        self.assertIsNone(section_range(body, Section((2,)), len(raw)))

    def test_bodystructure(self):
        text = structure(self.body, True)
        self.assertTrue(text.startswith(b'(("text" "plain" ("charset" "utf-8") NIL NIL "7BIT" 10 1 NIL NIL NIL NIL)'))
        self.assertIn(b'("message" "rfc822" NIL NIL NIL "7BIT" ', text)
        self.assertIn(b'"alternative" ("boundary" "in") NIL NIL NIL)', text)
        self.assertIn(b'("application" "pdf" ("name" "x.pdf") NIL NIL "BASE64" 8 NIL ("attachment" ("filename" "x.pdf")) NIL NIL)',
                      text)
        self.assertTrue(text.endswith(b' "mixed" ("boundary" "outer") NIL NIL NIL)'))
        plain = structure(self.body, False)
        self.assertNotIn(b"boundary", plain)
        self.assertEqual(plain.count(b"("), plain.count(b")"))

    def test_envelope(self):
        text = envelope(self.parsed["envelope"])
        self.assertEqual(text, b'("Tue, 2 Jan 2024 03:04:05 +0100" "nested" (("Alice" NIL "alice" "example.test"))'
                               b' (("Alice" NIL "alice" "example.test")) (("Alice" NIL "alice" "example.test"))'
                               b' ((NIL NIL "bob" "example.test")) NIL NIL NIL "<1@example.test>")')
        self.assertEqual(envelope(None), b"(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)")

    def test_filter_fields(self):
        block = b"From: a\r\nX-Long: one\r\n two\r\nTo: b\r\nfrom: again\r\n\r\n"
        self.assertEqual(filter_fields(block, [b"FROM"], False), b"From: a\r\nfrom: again\r\n\r\n")
        self.assertEqual(filter_fields(block, [b"from", b"to"], True), b"X-Long: one\r\n two\r\n\r\n")
        self.assertEqual(filter_fields(block, [b"nothing"], False), b"\r\n")


class RenderTests(unittest.TestCase):
    @defer.inlineCallbacks
    def fetch(self, text, raw=NESTED, **options):
        blobs = FakeBlobs(raw)
        parsed = parse_message(raw)
        message = Message(record(len(raw)), blobs, "key", {"body": parsed["body"], "envelope": parsed["envelope"]})
        items = parse_items(tokenize(text, [])[0])
        renderer = Renderer(items, uid_first=options.get("uid_first", False), modseq=options.get("modseq", False))
        sections = yield defer.ensureDeferred(read_sections(message, items))
        line = renderer.line(message.record, message.parsed, 4, sections=sections,
                             flags_changed=options.get("flags_changed", False))
        self.assertTrue(line.endswith(b"\r\n"))
        return line[:-2], blobs.reads

    @defer.inlineCallbacks
    def test_partial_reads_only_the_range(self):
        line, reads = yield self.fetch(b"BODY.PEEK[]<0.10>")
        self.assertEqual(line, b"* 4 FETCH (BODY[]<0> {10}\r\nFrom: Alic)")
        self.assertEqual(reads, [(0, 10)])
        line, reads = yield self.fetch(b"BODY[1]<6.100>")
        self.assertEqual(line, b"* 4 FETCH (BODY[1]<6> {4}\r\npart)")
        line, _ = yield self.fetch(b"BODY[]<99999.10>")
        self.assertEqual(line, b"* 4 FETCH (BODY[]<99999> {0}\r\n)")

    @defer.inlineCallbacks
    def test_metadata_reads_no_blob(self):
        line, reads = yield self.fetch(b"(FLAGS UID ENVELOPE BODYSTRUCTURE BODY RFC822.SIZE INTERNALDATE)")
        self.assertEqual(reads, [])
        self.assertIn(b' BODYSTRUCTURE (("text" "plain"', line)
        self.assertIn(b' BODY (("text" "plain"', line)

    @defer.inlineCallbacks
    def test_items(self):
        line, _ = yield self.fetch(b"(FLAGS BODY[HEADER.FIELDS (SUBJECT)] BODY[9])", uid_first=True, modseq=True)
        self.assertEqual(line, b"* 4 FETCH (UID 7 FLAGS (\\Seen) BODY[HEADER.FIELDS (SUBJECT)] {19}\r\n"
                               b"Subject: nested\r\n\r\n BODY[9] NIL MODSEQ (9))")
        line, _ = yield self.fetch(b"RFC822.SIZE", flags_changed=True)
        self.assertEqual(line, b"* 4 FETCH (RFC822.SIZE %d FLAGS (\\Seen))" % len(NESTED))
        line, _ = yield self.fetch(b"(INTERNALDATE MODSEQ)")
        self.assertEqual(line, b'* 4 FETCH (INTERNALDATE "01-Jan-1970 00:00:00 +0000" MODSEQ (9))')

    def test_expunged_line(self):
        items = parse_items(tokenize(b"(FLAGS INTERNALDATE RFC822.SIZE ENVELOPE BODY BODY.PEEK[1] MODSEQ)", [])[0])
        line = Renderer(items, uid_first=True, modseq=True).expunged_line(3, 12)
        self.assertEqual(line, b'* 3 FETCH (UID 12 FLAGS (\\Deleted) INTERNALDATE "01-Jan-1970 00:00:00 +0000"'
                               b" RFC822.SIZE 0 ENVELOPE (NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)"
                               b' BODY ("text" "plain" NIL NIL NIL "7bit" 0 0) BODY[1] NIL MODSEQ (1))\r\n')
        uid_items = parse_items(tokenize(b"(UID)", [])[0])
        self.assertEqual(Renderer(uid_items, uid_first=True, modseq=True).expunged_line(1, 5),
                         b"* 1 FETCH (UID 5)\r\n")
