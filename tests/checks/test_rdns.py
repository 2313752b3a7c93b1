"""Reverse DNS (iprev) and HELO checks against the fake DNS server."""
from twisted.internet import defer
from twisted.trial import unittest
from zope.interface.verify import verifyObject

from emailsvc.interfaces import ICheck
from emailsvc.checks.rdns import ReverseDNSCheck
from tests.checks.support import session
from tests.fakedns import DNSTestCase


class ReverseDNSTests(DNSTestCase, unittest.TestCase):
    def setUp(self):
        super().setUp()
        self.check = ReverseDNSCheck(self.resolver, "mx.example.net")

    def connect(self, ip):
        state = session(peer_ip=ip)
        return defer.ensureDeferred(self.check.connect(state)).addCallback(lambda result: (result, state))

    def test_provides_icheck(self):
        verifyObject(ICheck, self.check)

    @defer.inlineCallbacks
    def test_forward_confirmed(self):
        self.dns.ptr("192.0.2.1", "unrelated.example", "mail.example.org")
        self.dns.a("mail.example.org", "192.0.2.1")
        self.dns.a("unrelated.example", "192.0.2.99")
        result, state = yield self.connect("192.0.2.1")
        self.assertEqual(result.result, "pass")
        self.assertEqual(state.reverse_name, "mail.example.org")
        self.assertEqual(result.auth_results, "iprev=pass (mail.example.org) policy.iprev=192.0.2.1")

    @defer.inlineCallbacks
    def test_ipv6(self):
        self.dns.ptr("2001:db8::25", "mail6.example.org")
        self.dns.aaaa("mail6.example.org", "2001:db8::25")
        result, state = yield self.connect("2001:db8::25")
        self.assertEqual(result.result, "pass")
        self.assertTrue(self.dns.asked("mail6.example.org", "AAAA"))

    @defer.inlineCallbacks
    def test_not_confirmed(self):
        self.dns.ptr("192.0.2.1", "liar.example")
        self.dns.a("liar.example", "198.51.100.1")
        result, state = yield self.connect("192.0.2.1")
        self.assertEqual(result.result, "fail")
        self.assertIsNone(state.reverse_name)

    @defer.inlineCallbacks
    def test_no_ptr(self):
        result, state = yield self.connect("192.0.2.1")
        self.assertEqual(result.result, "none")
        self.assertTrue(result.auth_results.startswith("iprev=permerror"))

    @defer.inlineCallbacks
    def test_temperror(self):
        self.dns.servfail("1.2.0.192.in-addr.arpa")
        result, _ = yield self.connect("192.0.2.1")
        self.assertEqual(result.result, "temperror")

    def test_helo(self):
        cases = {
            "client.example.org": ("pass", None),
            "[192.0.2.1]": ("pass", None),
            "[IPv6:2001:db8::1]": ("pass", None),
            "MX.example.NET": ("fail", "fail_forged"),
            "192.0.2.1": ("fail", "fail_invalid"),
            "localhost": ("fail", "fail_invalid"),
            "bad_name.example": ("fail", "fail_invalid"),
            "[not an ip]": ("fail", "fail_invalid"),
        }
        for helo, expected in cases.items():
            result = self.check.helo(session(helo=helo))
            self.assertEqual((result.check, result.result, result.outcome), ("helo",) + expected, helo)
