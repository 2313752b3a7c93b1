"""DKIM verification with a key made in the test and served by the fake DNS."""
import base64

import dkim as dkimpy
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from twisted.internet import defer
from twisted.trial import unittest
from zope.interface.verify import verifyObject

from emailsvc.checks.dkim import DKIMCheck
from emailsvc.interfaces import ICheck
from tests.checks.support import make_message, session
from tests.fakedns import DNSTestCase


def make_key(bits=1024):
    """(private PEM, public TXT record) of a fresh RSA key."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, "v=DKIM1; k=rsa; p=" + base64.b64encode(public).decode("ascii")


def sign(message, private, domain="example.org", selector="sel"):
    header = dkimpy.sign(
        message, selector.encode(), domain.encode(), private, include_headers=[b"from", b"to", b"subject"]
    )
    return header + message


MESSAGE = make_message(
    [("From", "Alice <alice@example.org>"), ("To", "bob@example.net"), ("Subject", "signed")],
    body="Hello Bob,\r\n\r\nthis is signed.\r\n",
)


_KEYS = []


def shared_key():
    """One key for the module (generating RSA keys takes a while)."""
    if not _KEYS:
        _KEYS.append(make_key())
    return _KEYS[0]


class DKIMTests(DNSTestCase, unittest.TestCase):
    def setUp(self):
        super().setUp()
        self.private, self.public = shared_key()
        self.patch(dkimpy, "get_txt", lambda *args, **kwargs: self.fail("dkimpy did its own DNS lookup"))
        self.check = DKIMCheck(self.resolver, self.reactor)
        self.dns.txt("sel._domainkey.example.org", self.public)

    def verify(self, message):
        return defer.ensureDeferred(self.check.data(session(message=message)))

    def test_provides_icheck(self):
        verifyObject(ICheck, self.check)

    @defer.inlineCallbacks
    def test_pass(self):
        signed = sign(MESSAGE, self.private)
        (result,) = yield self.verify(signed)
        self.assertEqual(result.result, "pass")
        self.assertRegex(
            result.auth_results, r'^dkim=pass header\.d=example\.org header\.i=@example\.org header\.s=sel header\.b="?[A-Za-z0-9+/]{8}"?$'
        )
        self.assertEqual(result.data["domain"], "example.org")
        self.assertTrue(self.dns.asked("sel._domainkey.example.org", "TXT"))

    @defer.inlineCallbacks
    def test_fail_when_body_altered(self):
        signed = sign(MESSAGE, self.private).replace(b"this is signed", b"this is forged")
        (result,) = yield self.verify(signed)
        self.assertEqual(result.result, "fail")
        self.assertIn("body hash", result.data["detail"])

    @defer.inlineCallbacks
    def test_fail_when_signed_header_altered(self):
        signed = sign(MESSAGE, self.private).replace(b"Subject: signed", b"Subject: changed")
        (result,) = yield self.verify(signed)
        self.assertEqual(result.result, "fail")

    @defer.inlineCallbacks
    def test_none_when_unsigned(self):
        (result,) = yield self.verify(MESSAGE)
        self.assertEqual((result.result, result.auth_results), ("none", "dkim=none"))
        self.assertEqual(self.dns.queries, [])

    @defer.inlineCallbacks
    def test_permerror_without_key(self):
        (result,) = yield self.verify(sign(MESSAGE, self.private, selector="gone"))
        self.assertEqual(result.result, "permerror")
        self.assertTrue(self.dns.asked("gone._domainkey.example.org", "TXT"))

    @defer.inlineCallbacks
    def test_permerror_for_malformed_signature(self):
        broken = b"DKIM-Signature: v=1; a=rsa-sha256; d=example.org\r\n" + MESSAGE
        (result,) = yield self.verify(broken)
        self.assertEqual(result.result, "permerror")

    @defer.inlineCallbacks
    def test_temperror_when_key_lookup_fails(self):
        self.dns.servfail("sel._domainkey.broken.example")
        (result,) = yield self.verify(sign(MESSAGE, self.private, domain="broken.example"))
        self.assertEqual(result.result, "temperror")

    @defer.inlineCallbacks
    def test_every_signature_is_reported(self):
        other_private, other_public = make_key()
        self.dns.txt("k2._domainkey.example.net", other_public)
        signed = sign(sign(MESSAGE, self.private), other_private, domain="example.net", selector="k2")
        results = yield self.verify(signed)
        self.assertEqual([(r.result, r.data["domain"]) for r in results], [("pass", "example.net"), ("pass", "example.org")])
        wrong_key = sign(MESSAGE, other_private)  # example.org's selector, another key
        (result,) = yield self.verify(wrong_key)
        self.assertEqual(result.result, "fail")

    @defer.inlineCallbacks
    def test_large_messages_verify_in_a_thread(self):
        import threading

        seen = []
        original = dkimpy.DKIM.verify

        def spy(verifier, *args, **kwargs):
            seen.append(threading.current_thread() is threading.main_thread())
            return original(verifier, *args, **kwargs)

        self.patch(dkimpy.DKIM, "verify", spy)
        self.check.thread_threshold = 1000
        big = make_message([("From", "alice@example.org"), ("Subject", "big")], body="x" * 80 + "\r\n" * 1)
        big = big + (b"y" * 76 + b"\r\n") * 100
        (result,) = yield self.verify(sign(big, self.private))
        self.assertEqual(result.result, "pass")
        (result,) = yield self.verify(sign(MESSAGE, self.private))
        self.assertEqual(result.result, "pass")
        self.assertEqual(seen, [False, True])
