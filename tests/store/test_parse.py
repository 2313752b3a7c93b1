"""Tests for emailsvc.store.parse: the once-per-delivery message parser."""
import base64
import json
import random

from twisted.trial.unittest import SynchronousTestCase

from emailsvc.store.parse import MAX_DEPTH, MAX_PARTS, base_subject, parse_message


def msg(*lines, eol=b"\r\n"):
    """Join str/bytes lines with eol (each line, including the last, is terminated)."""
    return b"".join((l.encode("utf-8") if isinstance(l, str) else l) + eol for l in lines)


class ParsedChecks:
    """Invariants every parse result must satisfy."""

    def check_sane(self, data, result):
        json.dumps(result)   # stored as JSON: must serialise
        self.assertEqual(result["size"], len(data))
        self.assertEqual(len(result["envelope"]), 10)
        for key in ("subject", "sort_subject", "from_addr", "to_addr", "cc_addr",
                    "from_name", "preview", "text"):
            self.assertIsInstance(result[key], str)
            self.assertNotIn("\x00", result[key])
        self.assertLessEqual(len(result["preview"]), 256)
        self.assertLessEqual(len(result["text"].encode("utf-8")), 1 << 20)
        self.assertIsInstance(result["attachments"], int)
        self.assertIsInstance(result["references"], list)
        self.assertIn(result["date"].__class__, (int, type(None)))
        root = result["body"]
        self.assertEqual((root["header_start"], root["end"]), (0, len(data)))
        self.check_part(data, root, 0)

    def check_part(self, data, part, depth):
        self.assertLessEqual(depth, 2 * MAX_DEPTH + 2)
        self.assertTrue(0 <= part["header_start"] <= part["body_start"] <= part["end"] <= len(data))
        self.assertEqual(part["size"], part["end"] - part["body_start"])
        self.assertEqual(part["type"], part["type"].lower())
        self.assertEqual(part["subtype"], part["subtype"].lower())
        if part["type"] == "multipart":
            self.assertTrue(part["parts"])
            for child in part["parts"]:
                self.assertTrue(part["body_start"] <= child["header_start"] <= child["end"] <= part["end"])
                self.check_part(data, child, depth + 1)
        else:
            self.assertNotIn("parts", part)
        if "message" in part:
            self.assertEqual(len(part["message"]["envelope"]), 10)
            inner = part["message"]["body"]
            self.assertEqual((inner["header_start"], inner["end"]), (part["body_start"], part["end"]))
            self.check_part(data, inner, depth + 1)


SIMPLE = msg(
    "Return-Path: <alice@example.org>",
    "Date: Tue, 01 Oct 2002 12:34:56 -0400",
    "From: Alice Example <Alice@Example.ORG>",
    "To: bob@example.net,",
    " Carol <carol@example.net>",
    "Cc: dave@example.com",
    "Subject: Hello",
    "\tthere",
    "Message-ID: <1234@mail.example.org>",
    "In-Reply-To: <0999@mail.example.net>",
    "References: <0001@x> <0999@mail.example.net>",
    "",
    "Hi Bob,",
    "",
    "how   are you?",
)


class SimpleMessageTests(SynchronousTestCase, ParsedChecks):
    def setUp(self):
        self.result = parse_message(SIMPLE)

    def test_sane(self):
        self.check_sane(SIMPLE, self.result)
        self.assertIsNone(self.result["error"])

    def test_envelope(self):
        alice = [["Alice Example", None, "Alice", "Example.ORG"]]
        self.assertEqual(self.result["envelope"], [
            "Tue, 01 Oct 2002 12:34:56 -0400",
            "Hello\tthere",
            alice, alice, alice,
            [[None, None, "bob", "example.net"], ["Carol", None, "carol", "example.net"]],
            [[None, None, "dave", "example.com"]],
            None,
            "<0999@mail.example.net>",
            "<1234@mail.example.org>",
        ])

    def test_summary_fields(self):
        r = self.result
        self.assertEqual(r["subject"], "Hello\tthere")
        self.assertEqual(r["sort_subject"], "hello there")
        self.assertEqual((r["from_addr"], r["to_addr"], r["cc_addr"]),
                         ("alice@example.org", "bob@example.net", "dave@example.com"))
        self.assertEqual(r["from_name"], "Alice Example")
        self.assertEqual(r["date"], 1033490096)
        self.assertEqual(r["message_id"], "<1234@mail.example.org>")
        self.assertEqual(r["in_reply_to"], "<0999@mail.example.net>")
        self.assertEqual(r["references"], ["<0001@x>", "<0999@mail.example.net>"])
        self.assertEqual(r["preview"], "Hi Bob, how are you?")
        self.assertIn("how are you?", r["text"])
        self.assertIn("Hello\tthere", r["text"])
        self.assertEqual(r["attachments"], 0)

    def test_headers(self):
        h = self.result["headers"]
        self.assertEqual(h["to"], ["bob@example.net, Carol <carol@example.net>"])
        self.assertEqual(h["subject"], ["Hello\tthere"])
        self.assertNotIn("return-path", h)
        self.assertNotIn("content-type", h)

    def test_body(self):
        body = self.result["body"]
        self.assertEqual((body["type"], body["subtype"], body["params"]),
                         ("text", "plain", [["charset", "us-ascii"]]))
        self.assertEqual(body["encoding"], "7bit")
        self.assertEqual(SIMPLE[body["header_start"]:body["body_start"]],
                         SIMPLE[:SIMPLE.index(b"\r\n\r\n") + 4])
        self.assertEqual(SIMPLE[body["body_start"]:body["end"]], b"Hi Bob,\r\n\r\nhow   are you?\r\n")
        self.assertEqual(body["size"], 27)
        self.assertEqual(body["lines"], 3)
        self.assertIsNone(body["disposition"])


ALTERNATIVE = msg(
    "From: a@example.com",
    "Subject: alt",
    "MIME-Version: 1.0",
    'Content-Type: multipart/alternative; boundary="=_b1"',
    "",
    "This is a MIME message.",
    "--=_b1",
    "Content-Type: text/plain; charset=ISO-8859-1",
    "Content-Transfer-Encoding: Quoted-Printable",
    "",
    "Gr=FC=DFe aus K=F6ln,=",
    " Welt",
    "--=_b1",
    "Content-Type: text/html; charset=utf-8",
    "",
    "<html><head><style>p { color: red }</style><script>var x = '<p>';</script></head>",
    "<body><!-- hidden --><p>Gr&uuml;&szlig;e</p><p>aus&nbsp;K&ouml;ln</p></body></html>",
    "--=_b1--",
    "epilogue",
)


class MultipartAlternativeTests(SynchronousTestCase, ParsedChecks):
    def setUp(self):
        self.result = parse_message(ALTERNATIVE)

    def test_structure(self):
        self.check_sane(ALTERNATIVE, self.result)
        body = self.result["body"]
        self.assertEqual((body["type"], body["subtype"]), ("multipart", "alternative"))
        self.assertEqual(body["params"], [["boundary", "=_b1"]])
        plain, htmlpart = body["parts"]
        self.assertEqual((plain["subtype"], plain["encoding"], plain["params"]),
                         ("plain", "quoted-printable", [["charset", "ISO-8859-1"]]))
        self.assertEqual(htmlpart["subtype"], "html")

    def test_offsets(self):
        plain, htmlpart = self.result["body"]["parts"]
        self.assertEqual(ALTERNATIVE[plain["header_start"]:plain["body_start"]],
                         b"Content-Type: text/plain; charset=ISO-8859-1\r\n"
                         b"Content-Transfer-Encoding: Quoted-Printable\r\n\r\n")
        # The CRLF before a delimiter belongs to the delimiter (RFC 2046).
        self.assertEqual(ALTERNATIVE[plain["body_start"]:plain["end"]],
                         b"Gr=FC=DFe aus K=F6ln,=\r\n Welt")
        self.assertEqual(plain["lines"], 2)
        self.assertTrue(ALTERNATIVE[htmlpart["body_start"]:htmlpart["end"]].endswith(b"</html>"))

    def test_text(self):
        r = self.result
        self.assertEqual(r["preview"], "Grüße aus Köln, Welt")
        self.assertIn("Grüße aus Köln, Welt", r["text"])
        self.assertEqual(r["text"].count("Grüße aus Köln"), 2)   # NBSP collapses too
        for hidden in ("color", "var x", "hidden"):
            self.assertNotIn(hidden, r["text"])

    def test_html_only_preview(self):
        data = msg("Subject: h", "Content-Type: text/html", "",
                   "<style>.x{}</style><b>Big</b> <i>sale</i> &amp; more<script>alert(1)")
        r = parse_message(data)
        self.assertEqual(r["preview"], "Big sale & more")
        # Undeclared 8-bit charset: read as cp1252.
        r = parse_message(msg(b"Content-Type: text/html", b"", b"<p>caf\xe9</p>&nbsp;<br>\x93x\x94"))
        self.assertEqual(r["preview"], "caf\xe9 \u201cx\u201d")


INNER = msg(
    "From: Inner Sender <inner@example.org>",
    "Subject: inner subject",
    "Content-Type: multipart/mixed; boundary=inner",
    "",
    "--inner",
    "",
    "inner text",
    "--inner",
    "Content-Type: text/plain",
    "Content-Disposition: attachment; filename*=utf-8''na%C3%AFve.txt",
    "",
    "file",
    "--inner--",
)
ATTACHMENT = base64.encodebytes(b"\x89PNG" + bytes(range(256)) * 4).replace(b"\n", b"\r\n")
MIXED = msg(
    "From: a@example.com",
    "To: b@example.com",
    "Subject: mixed",
    "Content-Type: multipart/mixed;",
    '\tboundary="outer"',
    "",
    "--outer",
    "Content-Type: text/plain; charset=us-ascii",
    "",
    "see attached",
    "--outer",
    'Content-Type: image/png; name="pic.png"',
    "Content-Transfer-Encoding: base64",
    "Content-ID: <pic1@example.com>",
    "Content-Description: a picture",
    "Content-Disposition: attachment;",
    '\tfilename="pic.png"; size=1028',
    "Content-Language: en, de",
    "",
    ATTACHMENT.rstrip(b"\r\n"),
    "--outer",
    "Content-Type: message/rfc822",
    "",
    INNER.rstrip(b"\r\n"),
    "--outer--",
)


class MultipartMixedTests(SynchronousTestCase, ParsedChecks):
    def setUp(self):
        self.result = parse_message(MIXED)

    def test_structure(self):
        self.check_sane(MIXED, self.result)
        self.assertIsNone(self.result["error"])
        text, image, message = self.result["body"]["parts"]
        self.assertEqual((image["type"], image["subtype"], image["params"]),
                         ("image", "png", [["name", "pic.png"]]))
        self.assertEqual(image["encoding"], "base64")
        self.assertEqual(image["id"], "<pic1@example.com>")
        self.assertEqual(image["description"], "a picture")
        self.assertEqual(image["disposition"], ["attachment", [["filename", "pic.png"], ["size", "1028"]]])
        self.assertEqual(image["language"], ["en", "de"])
        self.assertIsNone(image["lines"])
        self.assertEqual(image["filename"], "pic.png")
        self.assertEqual(base64.b64decode(MIXED[image["body_start"]:image["end"]]),
                         b"\x89PNG" + bytes(range(256)) * 4)
        self.assertEqual((message["type"], message["subtype"]), ("message", "rfc822"))
        self.assertEqual(MIXED[message["body_start"]:message["end"]], INNER.rstrip(b"\r\n"))
        self.assertEqual(message["lines"], INNER.count(b"\n"))

    def test_mime_header_offsets(self):
        text = self.result["body"]["parts"][0]
        # BODY[1.MIME]
        self.assertEqual(MIXED[text["header_start"]:text["body_start"]],
                         b"Content-Type: text/plain; charset=us-ascii\r\n\r\n")
        self.assertEqual(MIXED[text["body_start"]:text["end"]], b"see attached")

    def test_nested_message(self):
        message = self.result["body"]["parts"][2]["message"]
        env = message["envelope"]
        self.assertEqual(env[1], "inner subject")
        self.assertEqual(env[2], [["Inner Sender", None, "inner", "example.org"]])
        inner = message["body"]
        # BODY[3.HEADER] and BODY[3.TEXT]
        self.assertEqual(MIXED[inner["header_start"]:inner["body_start"]],
                         INNER[:INNER.index(b"\r\n\r\n") + 4])
        self.assertEqual(MIXED[inner["body_start"]:inner["end"]],
                         INNER[INNER.index(b"\r\n\r\n") + 4:].rstrip(b"\r\n"))
        first, second = inner["parts"]
        self.assertEqual((first["type"], first["subtype"], first["header_start"], first["body_start"]),
                         ("text", "plain", first["body_start"] - 2, first["body_start"]))
        self.assertEqual(MIXED[first["body_start"]:first["end"]], b"inner text")
        self.assertEqual(second["disposition"][0], "attachment")
        self.assertEqual(second["filename"], "na\u00efve.txt")

    def test_summary(self):
        r = self.result
        self.assertEqual(r["attachments"], 2)
        self.assertEqual(r["preview"], "see attached")
        self.assertIn("inner text", r["text"])
        self.assertNotIn("iVBOR", r["text"])

    def test_digest_default_type(self):
        data = msg("Content-Type: multipart/digest; boundary=d", "", "--d", "",
                   "Subject: one", "", "first", "--d", "", "Subject: two", "", "second", "--d--")
        r = parse_message(data)
        self.check_sane(data, r)
        parts = r["body"]["parts"]
        self.assertEqual([(p["type"], p["subtype"]) for p in parts], [("message", "rfc822")] * 2)
        self.assertEqual([p["message"]["envelope"][1] for p in parts], ["one", "two"])


class EncodedWordTests(SynchronousTestCase):
    def test_subject_and_name(self):
        data = msg(
            "From: =?UTF-8?B?SsO2cmc=?= =?UTF-8?Q?_M=C3=BCller?= <jm@example.de>",
            "Subject: =?iso-8859-1?q?Caf=E9?=   =?iso-8859-1?q?_cr=E8me?= and",
            " =?utf-8?b?5pel5pys?=",
            "", "x")
        r = parse_message(data)
        self.assertEqual(r["subject"], "Café crème and 日本")
        self.assertEqual(r["headers"]["subject"], ["Café crème and 日本"])
        self.assertEqual(r["from_name"], "Jörg Müller")
        # The envelope keeps the raw (undecoded) form for IMAP.
        self.assertEqual(r["envelope"][1],
                         "=?iso-8859-1?q?Caf=E9?=   =?iso-8859-1?q?_cr=E8me?= and =?utf-8?b?5pel5pys?=")
        self.assertEqual(r["envelope"][2][0][0], "=?UTF-8?B?SsO2cmc=?= =?UTF-8?Q?_M=C3=BCller?=")
        self.assertIn("Jörg Müller <jm@example.de>", r["text"])

    def test_split_multibyte_character(self):
        # One UTF-8 character split across two adjacent encoded-words.
        data = msg("Subject: =?utf-8?q?a=C3?= =?utf-8?q?=A9b?=", "", "")
        self.assertEqual(parse_message(data)["subject"], "aéb")

    def test_quoted_encoded_word_name(self):
        data = msg('From: "=?utf-8?q?Ren=C3=A9?=" <rene@example.fr>', "", "")
        r = parse_message(data)
        self.assertEqual(r["envelope"][2], [["=?utf-8?q?Ren=C3=A9?=", None, "rene", "example.fr"]])
        self.assertEqual(r["from_name"], "René")

    def test_unknown_and_bad_charsets(self):
        data = msg("Subject: =?x-no-such-charset?q?caf=C3=A9?= =?base64?q?zz?= =?utf-8?b?!!!?=",
                   "Content-Type: text/plain; charset=x-unknown", "", b"caf\xc3\xa9 \xff")
        r = parse_message(data)
        self.assertTrue(r["subject"].startswith("café"))
        self.assertEqual(r["preview"], "café \ufffd")   # mostly UTF-8: stray byte replaced

    def test_eight_bit_headers(self):
        data = msg(b"Subject: Gr\xfc\xdfe", b"From: J\xf6rg <j@example.de>", b"", b"body")
        r = parse_message(data)
        self.assertEqual(r["subject"], "Grüße")
        self.assertEqual(r["from_name"], "Jörg")
        self.assertEqual(r["envelope"][1], "Gr\ufffd\ufffde")


class AddressTests(SynchronousTestCase):
    def envelope(self, *headers):
        return parse_message(msg(*headers, "", "body"))["envelope"]

    def test_groups(self):
        env = self.envelope("From: a@example.com",
                            "To: Team: one@example.com, Two <two@example.com>;, solo@example.com,"
                            " undisclosed-recipients:;")
        self.assertEqual(env[5], [
            [None, None, "Team", None],
            [None, None, "one", "example.com"],
            ["Two", None, "two", "example.com"],
            [None, None, None, None],
            [None, None, "solo", "example.com"],
            [None, None, "undisclosed-recipients", None],
            [None, None, None, None],
        ])

    def test_unterminated_group(self):
        env = self.envelope("To: friends: x@example.com")
        self.assertEqual(env[5], [[None, None, "friends", None], [None, None, "x", "example.com"],
                                  [None, None, None, None]])

    def test_sender_reply_to_default_to_from(self):
        env = self.envelope("From: Ann <ann@example.com>")
        self.assertEqual(env[3], [["Ann", None, "ann", "example.com"]])
        self.assertEqual(env[4], env[2])
        env = self.envelope("From: Ann <ann@example.com>", "Sender: list@example.com",
                            "Reply-To: list@example.com")
        self.assertEqual(env[3], [[None, None, "list", "example.com"]])
        self.assertEqual(env[4], [[None, None, "list", "example.com"]])

    def test_no_from(self):
        env = self.envelope("Subject: x")
        self.assertEqual(env[2:8], [None] * 6)

    def test_odd_addresses(self):
        env = self.envelope(
            'To: "Doe, John" <john@example.com>, jane@example.com (Jane Roe),'
            ' <@relay.example,@r2.example:route@example.com>, "odd local"@example.com,'
            " nodomain, John Q. Public <jqp@[192.0.2.1]>, <>")
        self.assertEqual(env[5], [
            ["Doe, John", None, "john", "example.com"],
            ["Jane Roe", None, "jane", "example.com"],
            [None, "@relay.example,@r2.example", "route", "example.com"],
            [None, None, '"odd local"', "example.com"],
            [None, None, "nodomain", "MISSING_DOMAIN"],
            ["John Q. Public", None, "jqp", "[192.0.2.1]"],
            [None, None, "MISSING_MAILBOX", "MISSING_DOMAIN"],
        ])

    def test_first_addresses_lower_cased(self):
        r = parse_message(msg("From: <Big@EXAMPLE.com>", "To: g:;, X <Y@Z.example>", "", ""))
        self.assertEqual((r["from_addr"], r["to_addr"], r["from_name"]),
                         ("big@example.com", "y@z.example", ""))


class LineEndingTests(SynchronousTestCase, ParsedChecks):
    def test_lf_only(self):
        data = ALTERNATIVE.replace(b"\r\n", b"\n")
        r = parse_message(data)
        self.check_sane(data, r)
        plain, htmlpart = r["body"]["parts"]
        self.assertEqual(data[plain["header_start"]:plain["body_start"]],
                         b"Content-Type: text/plain; charset=ISO-8859-1\n"
                         b"Content-Transfer-Encoding: Quoted-Printable\n\n")
        self.assertEqual(data[plain["body_start"]:plain["end"]], b"Gr=FC=DFe aus K=F6ln,=\n Welt")
        self.assertEqual(r["preview"], "Grüße aus Köln, Welt")

    def test_lf_only_nested(self):
        data = MIXED.replace(b"\r\n", b"\n")
        r = parse_message(data)
        self.check_sane(data, r)
        inner = r["body"]["parts"][2]["message"]["body"]
        self.assertEqual(data[inner["parts"][0]["body_start"]:inner["parts"][0]["end"]], b"inner text")
        self.assertEqual(r["envelope"][1], "mixed")

    def test_no_body(self):
        data = b"Subject: only headers\r\nFrom: a@example.com"
        r = parse_message(data)
        self.check_sane(data, r)
        self.assertEqual(r["subject"], "only headers")
        self.assertEqual(r["body"]["body_start"], len(data))
        self.assertEqual(r["from_addr"], "a@example.com")

    def test_mixed_line_ends_blank_line(self):
        data = b"Subject: x\n\n\r\nbody"
        r = parse_message(data)
        self.assertEqual(r["body"]["body_start"], data.index(b"\n\n") + 2)

    def test_boundary_used_raw(self):
        data = msg('Content-Type: multipart/mixed; boundary="=?a?q?b?= "', "", "--=?a?q?b?=", "", "one",
                   "--=?a?q?b?=--")
        r = parse_message(data)
        self.assertEqual(len(r["body"]["parts"]), 1)
        self.assertEqual(r["preview"], "one")
        self.assertIsNone(r["error"])

    def test_empty_header(self):
        data = b"\r\njust a body\r\n"
        r = parse_message(data)
        self.check_sane(data, r)
        self.assertEqual(r["body"]["body_start"], 2)
        self.assertEqual(r["preview"], "just a body")


class FieldTests(SynchronousTestCase):
    def test_base_subject(self):
        cases = {
            "Re: hello": "hello",
            "RE: Fwd: [list] Re:  Hello  World (fwd) (FWD)": "hello world",
            "[list] [other] topic": "topic",
            "[only-blob]": "[only-blob]",
            "[Fwd: Re: forwarded]": "forwarded",
            "Fw[x]: foo": "foo",
            "Review: not a prefix": "review: not a prefix",
            "  \t ": "",
            "": "",
        }
        for subject, expected in cases.items():
            self.assertEqual(base_subject(subject), expected, subject)

    def test_dates(self):
        def date(value):
            return parse_message(msg("Date: " + value, "", ""))["date"]
        self.assertEqual(date("Thu, 01 Jan 1970 00:00:00 +0000"), 0)
        self.assertEqual(date("Thu, 1 Jan 1970 01:00:00 +0100"), 0)
        self.assertEqual(date("1 Jan 1970 00:00:10"), 10)   # no zone: UTC
        self.assertEqual(date("Fri, 27 Sep 02 09:03:36 -0400"), 1033131816)
        self.assertIsNone(date("yesterday"))
        self.assertIsNone(date("99 Foo 99999999 99:99:99"))
        self.assertIsNone(parse_message(b"Subject: x\r\n\r\n")["date"])

    def test_message_ids(self):
        r = parse_message(msg("Message-ID: bare@example.com",
                              "In-Reply-To: your message of today <a@b> <c@d>",
                              "References: <1@x>", " <2@", " x> junk <3@x>", "", ""))
        self.assertEqual(r["message_id"], "<bare@example.com>")
        self.assertEqual(r["in_reply_to"], "<a@b>")
        self.assertEqual(r["references"], ["<1@x>", "<2@x>", "<3@x>"])
        r = parse_message(msg("Message-ID:", "", ""))
        self.assertIsNone(r["message_id"])

    def test_headers_subset_and_lists(self):
        r = parse_message(msg("Received: x", "To: a@b", "To: c@d", "List-Id: <l.example.com>",
                              "X-Spam: yes", "", ""))
        self.assertEqual(r["headers"], {"to": ["a@b", "c@d"], "list-id": ["<l.example.com>"]})
        self.assertEqual(r["envelope"][5], [[None, None, "a", "b"]])

    def test_rfc2231_continuations(self):
        r = parse_message(msg(
            "Content-Type: application/pdf",
            "Content-Disposition: attachment; filename*0*=iso-8859-1''r%E9;",
            " filename*1=sum; filename*2=e.pdf",
            "", "x"))
        self.assertEqual(r["body"]["filename"], "résume.pdf")
        self.assertEqual(r["attachments"], 1)

    def test_params_quoting_and_comments(self):
        r = parse_message(msg('Content-Type: Text/HTML (a comment); CHARSET="utf\\"8" ; format = flowed;',
                              "", ""))
        body = r["body"]
        self.assertEqual((body["type"], body["subtype"]), ("text", "html"))
        self.assertEqual(body["params"], [["charset", 'utf"8'], ["format", "flowed"]])

    def test_encoded_message_rfc822_is_opaque(self):
        inner = base64.encodebytes(b"Subject: hidden\r\n\r\nbody\r\n")
        data = msg("Content-Type: message/rfc822", "Content-Transfer-Encoding: base64", "", inner)
        r = parse_message(data)
        self.assertEqual(r["body"]["message"]["envelope"], [None] * 10)
        self.assertEqual(r["body"]["message"]["body"]["body_start"], r["body"]["body_start"])


class HostileInputTests(SynchronousTestCase, ParsedChecks):
    """parse_message must never raise, and must return sane values."""

    def parse(self, data):
        r = parse_message(data)
        self.check_sane(data, r)
        return r

    def test_empty(self):
        r = self.parse(b"")
        self.assertEqual(r["envelope"], [None] * 10)
        self.assertEqual((r["body"]["type"], r["body"]["size"]), ("text", 0))
        self.assertEqual(r["error"], "empty message")

    def test_garbage(self):
        rnd = random.Random(1234)
        for n in (1, 2, 17, 1000, 70000):
            self.parse(bytes(rnd.randrange(256) for _ in range(n)))
        self.parse(b"\r" * 5000)
        self.parse(b"\n" * 5000)
        self.parse(b":" * 5000 + b"\r\n\r\n")
        self.parse(b"=?" * 5000)

    def test_not_bytes(self):
        r = parse_message("Subject: str\r\n\r\n")
        self.assertIsNotNone(r["error"])
        self.assertEqual(r["body"]["type"], "text")
        json.dumps(r)

    def test_nul_bytes(self):
        data = msg(b"Subject: a\x00b", b"From: x\x00y@example.com",
                   b"Content-Type: text/plain\x00; charset=utf\x008",
                   b"", b"bo\x00dy")
        r = self.parse(data)
        self.assertEqual(r["subject"], "ab")
        self.assertNotIn("\x00", json.dumps(r))

    def test_deep_nesting(self):
        depth = 200
        data = b"Subject: deep\r\n"
        for i in range(depth):
            data += b"Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n" % (i, i)
        data += b"Content-Type: text/plain\r\n\r\nbottom\r\n"
        for i in reversed(range(depth)):
            data += b"--b%d--\r\n" % i
        r = self.parse(data)
        self.assertEqual(r["error"], "nesting too deep")
        part, levels = r["body"], 0
        while "parts" in part:
            part, levels = part["parts"][0], levels + 1
        self.assertEqual(levels, MAX_DEPTH)
        self.assertEqual((part["type"], part["subtype"]), ("application", "octet-stream"))

    def test_deep_message_nesting(self):
        data = b"Content-Type: message/rfc822\r\n\r\n" * 500 + b"Subject: bottom\r\n\r\nx"
        r = self.parse(data)
        self.assertEqual(r["error"], "nesting too deep")

    def test_unterminated_multipart(self):
        data = msg("Content-Type: multipart/mixed; boundary=zz", "", "--zz",
                   "Content-Type: text/plain", "", "first", "--zz", "Content-Type: multipart/alternative;"
                   " boundary=yy", "", "--yy", "", "cut off here")
        r = self.parse(data)
        first, second = r["body"]["parts"]
        self.assertEqual(data[first["body_start"]:first["end"]], b"first")
        self.assertEqual(second["end"], len(data))
        last = second["parts"][0]
        self.assertEqual(data[last["body_start"]:last["end"]], b"cut off here\r\n")
        self.assertIn("first", r["text"])

    def test_missing_boundary(self):
        for ctype in ("multipart/mixed", "multipart/mixed; boundary=nothere", 'multipart/mixed; boundary=""'):
            data = msg("Content-Type: " + ctype, "", "text without parts")
            r = self.parse(data)
            self.assertEqual(len(r["body"]["parts"]), 1)
            self.assertIsNotNone(r["error"])
            self.assertEqual(r["preview"], "text without parts")

    def test_boundary_edge_cases(self):
        data = msg("Content-Type: multipart/mixed; boundary=b", "", "--b", "--b", "--bx not a delimiter",
                   "x--b", "--b  ", "", "after padding", "--b--")
        r = self.parse(data)
        empty, second, third = r["body"]["parts"]
        self.assertEqual(empty["size"], 0)
        self.assertEqual(data[second["header_start"]:second["end"]], b"--bx not a delimiter\r\nx--b")
        self.assertEqual(data[third["body_start"]:third["end"]], b"after padding")

    def test_bad_encodings(self):
        data = msg("Content-Type: multipart/mixed; boundary=b", "", "--b",
                   "Content-Type: text/plain; charset=utf-8", "Content-Transfer-Encoding: base64", "",
                   "SGVsbG8gd29ybGQ=!!!=*&QQ", "--b", "Content-Type: text/plain",
                   "Content-Transfer-Encoding: base64", "", "SGVsbG8gd29ybG", "--b",
                   "Content-Type: text/plain", "Content-Transfer-Encoding: quoted-printable", "",
                   "bad =ZZ qp =", "--b", "Content-Type: text/plain; charset=utf-16",
                   "Content-Transfer-Encoding: x-uuencode", "", "odd", "--b",
                   "Content-Type: text/plain; charset=utf-7", "", "+2ADcAA- surrogates", "--b--")
        r = self.parse(data)
        self.assertEqual(r["preview"], "Hello world")
        self.assertIn("Hello worl", r["text"])
        self.assertIn("bad =ZZ qp", r["text"])
        r["text"].encode("utf-8")

    def test_huge_header_line(self):
        for name in (b"Subject", b"To", b"Content-Type", b"X-Junk", b"Message-ID"):
            data = name + b": " + b"a,<b>(c)=?x?q?y?= \"d;" * (2 * 1024 * 1024 // 20) + b"\r\n\r\nbody\r\n"
            r = self.parse(data)
            self.assertEqual(data[r["body"]["body_start"]:], b"body\r\n")
        data = b"X: " + b"y" * (2 * 1024 * 1024)
        self.parse(data)

    def test_many_parts_and_headers(self):
        data = (b"Content-Type: multipart/mixed; boundary=b\r\n\r\n"
                + b"--b\r\n\r\nx\r\n" * 20000 + b"--b--\r\n")
        r = self.parse(data)
        self.assertEqual(len(r["body"]["parts"]), MAX_PARTS - 1)   # the root counts too
        self.assertEqual(r["body"]["parts"][-1]["end"], len(data))
        self.assertEqual(r["error"], "too many MIME parts")
        data = b"A: b\r\n" * 100000 + b"Subject: late\r\n\r\n"
        self.parse(data)

    def test_html_bombs(self):
        data = msg("Content-Type: text/html", "", "<" * 200000 + "<script" * 20000 + "<!--" * 20000)
        self.parse(data)

    def test_large_text_capped(self):
        body = ("word " * 600000).encode()
        data = msg("Subject: big", "", body)
        r = self.parse(data)
        self.assertGreater(len(r["text"]), 1000000)

    def test_random_mutations(self):
        rnd = random.Random(42)
        seeds = [SIMPLE, ALTERNATIVE, MIXED, MIXED.replace(b"\r\n", b"\n")]
        for _ in range(300):
            data = bytearray(rnd.choice(seeds))
            for _ in range(rnd.randrange(1, 8)):
                op = rnd.randrange(3)
                pos = rnd.randrange(len(data) + 1)
                if op == 0:
                    del data[pos:pos + rnd.randrange(1, 50)]
                elif op == 1:
                    data[pos:pos] = bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 10)))
                else:
                    data[pos:pos] = rnd.choice([b"\r\n", b"\n\n", b"--outer", b"--=_b1--", b"=?", b'"', b"(",
                                                b"<", b":", b";", b"boundary=", b"\x00"])
            self.parse(bytes(data))
