"""DKIM signing (emailsvc.delivery.dkim_sign) and `emailsvc dkim generate`."""
import io
import os
import re

import dkim as dkimpy
from twisted.internet import defer, reactor
from twisted.trial import unittest

from emailsvc.admin import cli
from emailsvc.checks.dkim import DKIMCheck
from emailsvc.checks.model import SessionState
from emailsvc.config import load
from emailsvc.delivery import dkim_sign
from tests.fakedns import DNSTestCase

MESSAGE = (b"From: Alice <alice@example.test>\r\nTo: bob@example.org\r\nSubject: hi\r\n"
           b"Received: from somewhere\r\n\r\nbody\r\n")


def _records(*pairs):
    table = {f"{selector}._domainkey.{domain}": record.encode() for selector, domain, record in pairs}

    def dnsfunc(name, timeout=5):
        return table.get(name.decode("ascii").rstrip("."))

    return dnsfunc


class SigningTests(unittest.TestCase):
    def setUp(self):
        self.key_dir = self.mktemp()

    def test_rsa_and_ed25519_both_sign_and_verify(self):
        records = []
        for selector, algorithm in (("a", "rsa"), ("b", "ed25519")):
            _, record = dkim_sign.write_key(self.key_dir, "Example.TEST", selector, dkim_sign.generate_key(algorithm))
            records.append((selector, "example.test", record))
        keys = dkim_sign.load_keys(self.key_dir, "example.test")
        self.assertEqual([(s, a) for s, a, _ in keys], [("a", b"rsa-sha256"), ("b", b"ed25519-sha256")])
        signed = dkim_sign.sign_message(MESSAGE, "example.test", keys, ["from", "subject", "to", "received"], ["from"])
        self.assertTrue(signed.endswith(MESSAGE))
        verifier = dkimpy.DKIM(signed)
        dnsfunc = _records(*records)
        self.assertTrue(verifier.verify(idx=0, dnsfunc=dnsfunc))
        self.assertTrue(verifier.verify(idx=1, dnsfunc=dnsfunc))
        # relaxed/relaxed; From oversigned; Received (RFC 6376 5.4) never signed.
        self.assertIn(b"c=relaxed/relaxed", signed)
        self.assertIn(b"h=from : subject : to : from", signed.replace(b"\r\n", b"").replace(b"\t", b" ").replace(b"  ", b" "))
        # An added From: (oversigned) breaks the signature.
        added = b"From: mallory@evil.example\r\n" + signed
        self.assertFalse(dkimpy.DKIM(added).verify(idx=0, dnsfunc=dnsfunc))
        # Relaxed canonicalization survives refolding of whitespace.
        refolded = signed.replace(b"Subject: hi", b"Subject:   hi")
        self.assertTrue(dkimpy.DKIM(refolded).verify(idx=0, dnsfunc=dnsfunc))

    def test_no_key_no_from(self):
        self.assertEqual(dkim_sign.load_keys(self.key_dir, "example.test"), [])
        dkim_sign.write_key(self.key_dir, "example.test", "a", dkim_sign.generate_key("ed25519"))
        keys = dkim_sign.load_keys(self.key_dir, "example.test")
        without_from = b"Subject: x\r\n\r\nbody\r\n"
        self.assertEqual(dkim_sign.sign_message(without_from, "example.test", keys, ["from"], []), without_from)

    def test_keys_are_private_and_never_replaced(self):
        path, _ = dkim_sign.write_key(self.key_dir, "example.test", "a", dkim_sign.generate_key("ed25519"))
        self.assertEqual(os.stat(path).st_mode & 0o777, 0o600)
        self.assertRaises(dkim_sign.DKIMKeyError, dkim_sign.write_key, self.key_dir, "example.test", "a",
                          dkim_sign.generate_key("ed25519"))
        for bad in ("", "a.b", "../x", "-a", "a" * 64):
            self.assertRaises(dkim_sign.DKIMKeyError, dkim_sign.check_selector, bad)
        self.assertRaises(dkim_sign.DKIMKeyError, dkim_sign.generate_key, "rsa", 512)

    def test_unusable_key_file_is_skipped(self):
        dkim_sign.write_key(self.key_dir, "example.test", "good", dkim_sign.generate_key("ed25519"))
        with open(os.path.join(self.key_dir, "example.test", "bad.key"), "wb") as handle:
            handle.write(b"not a key")
        self.assertEqual([s for s, _, _ in dkim_sign.load_keys(self.key_dir, "example.test")], ["good"])
        self.flushLoggedErrors()

    def test_zone_line_splits_long_records(self):
        record = "v=DKIM1; k=rsa; p=" + "A" * 400
        line = dkim_sign.zone_line("s1", "bücher.example", record)
        self.assertTrue(line.startswith("s1._domainkey.xn--bcher-kva.example. IN TXT ( \""))
        strings = re.findall(r'"([^"]*)"', line)
        self.assertEqual("".join(strings), record)
        self.assertTrue(all(len(s) <= 255 for s in strings))


class GenerateCommandTests(DNSTestCase, unittest.TestCase):
    def setUp(self):
        super().setUp()
        root = os.path.abspath(self.mktemp())
        os.makedirs(root)
        self.data_dir = os.path.join(root, "var")
        self.config = os.path.join(root, "emailsvc.toml")
        with open(self.config, "w") as handle:
            handle.write(f"[server]\ndata_dir = '{self.data_dir}'\n")

    @defer.inlineCallbacks
    def generate(self, *argv):
        out, err = io.StringIO(), io.StringIO()
        streams = cli.CommandIO(stdin=io.StringIO(), stdout=out, stderr=err, environ={})
        status = yield cli.run(reactor, ("--config", self.config, "dkim", "generate") + argv, streams)
        return status, out.getvalue(), err.getvalue()

    @defer.inlineCallbacks
    def test_generate_publish_sign_verify(self):
        for selector, algorithm in (("s1", "rsa"), ("s2", "ed25519")):
            status, out, err = yield self.generate("example.test", "--selector", selector, "--algorithm", algorithm)
            self.assertEqual((status, err), (0, ""))
            self.assertIn(os.path.join(self.data_dir, "dkim", "example.test", f"{selector}.key"), out)
            name, strings = re.search(r"^(\S+)\. IN TXT \( (.*) \)$", out, re.M).groups()
            self.assertEqual(name, f"{selector}._domainkey.example.test")
            record = "".join(re.findall(r'"([^"]*)"', strings))
            self.assertIn(f"k={algorithm}", record)
            self.dns.txt(name, record)
        signer = dkim_sign.DKIMSigner.from_config(load(self.config), reactor)
        signed = yield signer.sign(MESSAGE, "example.test")
        results = yield defer.ensureDeferred(
            DKIMCheck(self.resolver, reactor).data(SessionState(peer_ip="127.0.0.1", message=signed)))
        self.assertEqual([(r.result, r.data["selector"]) for r in results], [("pass", "s1"), ("pass", "s2")])
        self.assertTrue(self.dns.asked("s2._domainkey.example.test", "TXT"))

    @defer.inlineCallbacks
    def test_errors(self):
        status, _, err = yield self.generate("example.test", "--selector", "s1", "--algorithm", "ed25519")
        self.assertEqual(status, 0)
        status, _, err = yield self.generate("example.test", "--selector", "s1")
        self.assertEqual(status, 1)
        self.assertIn("exists already", err)
        status, _, err = yield self.generate("exa mple", "--selector", "s3")
        self.assertEqual(status, 1)
        self.assertIn("invalid domain", err)
        status, _, err = yield self.generate("example.test", "--selector", "a.b")
        self.assertEqual(status, 1)
        self.assertIn("invalid selector", err)
        status, _, err = yield self.generate("example.test", "--algorithm", "dsa")
        self.assertEqual(status, 2)
