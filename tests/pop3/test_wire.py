"""Stored bytes -> POP3 wire format: line ends, dot-stuffing, TOP, chunking."""
from twisted.mail import pop3
from twisted.trial import unittest

from emailsvc.pop3.wire import MessageEncoder, encode, normalize

CRLF_MESSAGE = b"Subject: crlf\r\nFrom: a@example.test\r\n\r\nline one\r\n.dot line\r\n\r\nlast\r\n"
LF_MESSAGE = b"Subject: lf\nFrom: a@example.test\n\nline one\n.dot line\n\nlast\n"


def unstuff(wire: bytes) -> bytes:
    """What a client reads: the terminator dropped, leading dots undone."""
    assert wire.endswith(b".\r\n"), wire
    body = wire[:-3]
    lines = body.split(b"\r\n")
    return b"\r\n".join(line[1:] if line.startswith(b".") else line for line in lines)


def chunked(message: bytes, sizes, top_lines=None) -> bytes:
    encoder = MessageEncoder(top_lines)
    out, position = [], 0
    for size in sizes:
        out.append(encoder.feed(message[position:position + size]))
        position += size
    out.append(encoder.feed(message[position:]))
    return b"".join(out) + encoder.finish() + b".\r\n"


class LineEndTests(unittest.SynchronousTestCase):
    def test_crlf_message_is_served_unchanged(self):
        self.assertEqual(normalize(CRLF_MESSAGE), CRLF_MESSAGE)
        self.assertNotIn(b"\r\r\n", encode(CRLF_MESSAGE))

    def test_twisted_doubles_cr(self):
        # The defect this module exists for (DESIGN.md section 4).
        self.assertIn(b"\r\r\n", pop3.POP3().transformChunk(CRLF_MESSAGE))

    def test_bare_lf_becomes_crlf(self):
        self.assertEqual(normalize(LF_MESSAGE), LF_MESSAGE.replace(b"\n", b"\r\n"))
        self.assertEqual(normalize(b"a\r\nb\nc\r\n"), b"a\r\nb\r\nc\r\n")

    def test_last_line_gets_a_line_end(self):
        self.assertEqual(normalize(b"Subject: x\r\n\r\nno end"), b"Subject: x\r\n\r\nno end\r\n")
        self.assertEqual(normalize(b"ends in cr\r"), b"ends in cr\r\n")
        self.assertEqual(normalize(b""), b"")
        self.assertEqual(encode(b""), b".\r\n")

    def test_bare_cr_inside_a_line_is_kept(self):
        self.assertEqual(normalize(b"a\rb\r\n"), b"a\rb\r\n")


class DotStuffingTests(unittest.SynchronousTestCase):
    def test_leading_dots_doubled(self):
        message = b".first\r\nmiddle\r\n.\r\n..two\r\nnot.leading\r\n"
        self.assertEqual(encode(message), b"..first\r\nmiddle\r\n..\r\n...two\r\nnot.leading\r\n.\r\n")
        self.assertEqual(unstuff(encode(message)), message)

    def test_lone_dot_line_cannot_end_the_response(self):
        wire = encode(b"Subject: x\n\nbefore\n.\nafter\n")
        self.assertEqual(wire.count(b"\r\n.\r\n"), 1)
        self.assertTrue(wire.endswith(b"after\r\n.\r\n"))

    def test_twisted_misses_the_first_line(self):
        self.assertEqual(pop3.POP3().transformChunk(b".x\r\n")[:2], b".x")
        self.assertEqual(encode(b".x\r\n"), b"..x\r\n.\r\n")


class ChunkBoundaryTests(unittest.SynchronousTestCase):
    messages = [
        CRLF_MESSAGE,
        LF_MESSAGE,
        b".a\r\n.\r\n\r\n.\n\n.b\r\r\nc\rd\n.",
        b"x\r",
    ]

    def test_every_split_gives_the_same_bytes(self):
        for message in self.messages:
            whole = encode(message)
            for split in range(len(message) + 1):
                self.assertEqual(chunked(message, [split]), whole, (message, split))

    def test_one_byte_chunks(self):
        for message in self.messages:
            self.assertEqual(chunked(message, [1] * len(message)), encode(message), message)
            for top in (0, 1, 2, 10):
                self.assertEqual(chunked(message, [1] * len(message), top), encode(message, top), (message, top))

    def test_served_bytes_round_trip(self):
        for message in self.messages:
            self.assertEqual(unstuff(encode(message)), normalize(message))


class TopTests(unittest.SynchronousTestCase):
    message = b"Subject: top\r\nX: y\r\n\r\none\r\n.two\r\nthree\r\n"

    def test_header_and_lines(self):
        self.assertEqual(encode(self.message, 0), b"Subject: top\r\nX: y\r\n\r\n.\r\n")
        self.assertEqual(encode(self.message, 1), b"Subject: top\r\nX: y\r\n\r\none\r\n.\r\n")
        self.assertEqual(encode(self.message, 2), b"Subject: top\r\nX: y\r\n\r\none\r\n..two\r\n.\r\n")
        self.assertEqual(encode(self.message, 99), encode(self.message))

    def test_lf_message(self):
        self.assertEqual(encode(b"A: b\n\nbody\nmore\n", 1), b"A: b\r\n\r\nbody\r\n.\r\n")

    def test_header_only_message(self):
        self.assertEqual(encode(b"A: b\r\nC: d", 0), b"A: b\r\nC: d\r\n.\r\n")

    def test_empty_header(self):
        self.assertEqual(encode(b"\r\nbody\r\nmore\r\n", 1), b"\r\nbody\r\n.\r\n")

    def test_done_stops_reading(self):
        encoder = MessageEncoder(0)
        self.assertEqual(encoder.feed(b"A: b\r\n\r"), b"A: b\r\n\r")
        self.assertFalse(encoder.done)
        self.assertEqual(encoder.feed(b"\nbody\r\n"), b"\n")
        self.assertTrue(encoder.done)
        self.assertEqual(encoder.feed(b"more\r\n") + encoder.finish(), b"")
