"""Authentication-Results building and parsing (RFC 8601), header helpers."""
from twisted.trial import unittest

from emailsvc.checks import authres
from emailsvc.checks.headers import header_fields, prepend, remove_fields


class ParseTests(unittest.TestCase):
    def test_authserv_id_forms(self):
        cases = {
            "mx.example.net; spf=pass": "mx.example.net",
            "  mx.example.net 1 ; none": "mx.example.net",
            "(our (nested) comment) mx.example.net; dkim=pass": "mx.example.net",
            '"quoted \\"id\\""; none': 'quoted "id"',
            "mx.example.net": "mx.example.net",
            "; spf=pass": None,
            "": None,
            "(only a comment)": None,
        }
        for value, expected in cases.items():
            self.assertEqual(authres.parse_authserv_id(value), expected, value)

    def test_own_fields_handles_folding_and_case(self):
        message = (
            b"Authentication-Results: other.example;\r\n\tspf=pass\r\n"
            b"authentication-results:\r\n MX.Example.Net;\r\n\tdkim=pass\r\n"
            b"Subject: Authentication-Results: mx.example.net\r\n"
            b"\r\n"
            b"Authentication-Results: mx.example.net; body, not a header\r\n"
        )
        self.assertEqual(authres.own_fields(message, "mx.example.net"), [1])


class BuildTests(unittest.TestCase):
    def test_resinfo_quotes_what_needs_it(self):
        self.assertEqual(
            authres.resinfo("spf", "pass", [("smtp.mailfrom", "a.b@example.org")]),
            "spf=pass smtp.mailfrom=a.b@example.org",
        )
        self.assertEqual(
            authres.resinfo("dkim", "fail", [("header.d", "example.org"), ("header.s", "")], reason="bad sig", comment="x (y)"),
            'dkim=fail (x \\(y\\)) reason="bad sig" header.d=example.org',
        )
        self.assertEqual(authres.resinfo("x", "pass", [("header.b", "ab/+cd=")]), 'x=pass header.b="ab/+cd="')

    def test_build(self):
        self.assertEqual(authres.build("mx.example.net", []), ("Authentication-Results", "mx.example.net; none"))
        self.assertEqual(
            authres.build("mx.example.net", ["spf=pass", None, "dkim=none"]),
            ("Authentication-Results", "mx.example.net;\r\n\tspf=pass;\r\n\tdkim=none"),
        )
        # What we write, we parse back as ours.
        _, value = authres.build("mx.example.net", ["spf=pass"])
        self.assertEqual(authres.parse_authserv_id(value), "mx.example.net")


class HeaderTests(unittest.TestCase):
    message = b"A: 1\r\nB: 2\r\n  continued\r\nC: 3\r\n\r\nbody: not a header\r\n"

    def test_fields(self):
        fields = header_fields(self.message)
        self.assertEqual([f.name for f in fields], ["a", "b", "c"])
        self.assertEqual(fields[1].value, b"2  continued")
        self.assertEqual(header_fields(b"A: 1\nB: 2\n\nbody"), header_fields(b"A: 1\nB: 2\n\nbody"))
        self.assertEqual([f.name for f in header_fields(b"A: 1\nB: 2\n\nbody")], ["a", "b"])

    def test_remove_and_prepend(self):
        self.assertEqual(remove_fields(self.message, [1]), b"A: 1\r\nC: 3\r\n\r\nbody: not a header\r\n")
        self.assertEqual(remove_fields(self.message, []), self.message)
        self.assertEqual(prepend(b"A: 1\r\n\r\n", [("X", "y"), ("Z", "w")]), b"X: y\r\nZ: w\r\nA: 1\r\n\r\n")
