"""DNSBL check against the fake DNS server."""
from twisted.internet import defer
from twisted.trial import unittest
from zope.interface.verify import verifyObject

from emailsvc.checks.dnsbl import DNSBLCheck
from emailsvc.interfaces import ICheck
from emailsvc.checks.plugins import actions_from_config
from emailsvc.checks.runner import CheckPipeline
from emailsvc.config import parse
from tests.checks.support import session
from tests.fakedns import DNSTestCase


class DNSBLTests(DNSTestCase, unittest.TestCase):
    def setUp(self):
        super().setUp()
        self.check = DNSBLCheck(self.resolver, ["bl.example", "soft.example."])
        config = parse('[[checks.dnsbl.zones]]\nzone = "bl.example"\n[[checks.dnsbl.zones]]\nzone = "soft.example"\naction = "junk"\n')
        self.pipeline = CheckPipeline([self.check], actions_from_config(config), "mx.example.net")

    def test_provides_icheck(self):
        verifyObject(ICheck, self.check)

    @defer.inlineCallbacks
    def test_hit_rejects(self):
        self.dns.a("1.2.0.192.bl.example", "127.0.0.2")
        verdict = yield self.pipeline.connect(session(peer_ip="192.0.2.1"))
        self.assertEqual([(r.result, r.data["zone"]) for r in verdict.results], [("listed", "bl.example"), ("pass", "soft.example")])
        self.assertEqual(verdict.action, "reject")
        self.assertEqual((verdict.reply.code, verdict.reply.enhanced), (554, "5.7.1"))
        self.assertEqual(verdict.reply.text, "Client host [192.0.2.1] blocked using bl.example")
        self.assertTrue(self.dns.asked("1.2.0.192.soft.example", "A"))

    @defer.inlineCallbacks
    def test_zone_with_its_own_action(self):
        self.dns.a("1.2.0.192.soft.example", "127.0.0.4")
        verdict = yield self.pipeline.connect(session(peer_ip="192.0.2.1"))
        self.assertEqual(verdict.action, "junk")
        self.assertEqual(verdict.tags, ["dnsbl:soft.example"])

    @defer.inlineCallbacks
    def test_miss_accepts(self):
        self.dns.a("2.2.0.192.bl.example", "127.0.0.2")
        verdict = yield self.pipeline.connect(session(peer_ip="192.0.2.1"))
        self.assertEqual([r.result for r in verdict.results], ["pass", "pass"])
        self.assertEqual(verdict.action, "accept")

    @defer.inlineCallbacks
    def test_answers_outside_127_0_0_x_are_not_listings(self):
        self.dns.a("1.2.0.192.bl.example", "127.255.255.254")
        verdict = yield self.pipeline.connect(session(peer_ip="192.0.2.1"))
        self.assertEqual(verdict.action, "accept")

    @defer.inlineCallbacks
    def test_ipv6_nibbles(self):
        name = "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.bl.example"
        self.dns.a(name, "127.0.0.2")
        verdict = yield self.pipeline.connect(session(peer_ip="2001:db8::1"))
        self.assertEqual(verdict.action, "reject")

    @defer.inlineCallbacks
    def test_temperror(self):
        self.dns.servfail("1.2.0.192.bl.example")
        verdict = yield self.pipeline.connect(session(peer_ip="192.0.2.1"))
        self.assertEqual(verdict.results[0].result, "temperror")
        self.assertEqual(verdict.action, "accept")

    def test_needs_zones(self):
        self.assertRaises(ValueError, DNSBLCheck.from_config, parse(""), self.resolver, self.reactor)
        self.assertRaises(ValueError, DNSBLCheck, self.resolver, ["bad..zone"])
