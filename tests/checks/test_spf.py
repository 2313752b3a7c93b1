"""SPF against the fake DNS server over loopback."""
import spf as pyspf
from twisted.internet import defer
from twisted.trial import unittest
from zope.interface.verify import verifyObject

from emailsvc.interfaces import ICheck
from emailsvc.checks.runner import CheckPipeline
from emailsvc.checks.spf import SPFCheck
from tests.checks.support import session
from tests.fakedns import DNSTestCase


def _no_blocking_lookup(*args, **kwargs):
    raise AssertionError("pyspf tried its own, blocking DNS lookup")


class SPFTests(DNSTestCase, unittest.TestCase):
    def setUp(self):
        super().setUp()
        self.patch(pyspf, "DNSLookup", _no_blocking_lookup)
        self.check = SPFCheck(self.resolver, self.reactor, "mx.example.net")

    def spf(self, ip="192.0.2.1", sender="alice@example.org", helo="client.example.org"):
        state = session(peer_ip=ip, sender=sender, helo=helo)
        return defer.ensureDeferred(self.check.mail(state))

    def test_provides_icheck(self):
        verifyObject(ICheck, self.check)

    @defer.inlineCallbacks
    def test_pass(self):
        self.dns.txt("example.org", "v=spf1 ip4:192.0.2.0/24 -all", "some other text")
        result = yield self.spf()
        self.assertEqual(result.result, "pass")
        self.assertEqual(result.auth_results, "spf=pass smtp.mailfrom=alice@example.org")
        self.assertEqual(result.data, {"domain": "example.org", "identity": "mailfrom"})
        self.assertTrue(self.dns.asked("example.org", "TXT"))

    @defer.inlineCallbacks
    def test_fail_softfail_neutral(self):
        for qualifier, expected in (("-", "fail"), ("~", "softfail"), ("?", "neutral")):
            domain = f"{expected}.example.org"
            self.dns.txt(domain, f"v=spf1 ip4:198.51.100.1 {qualifier}all")
            result = yield self.spf(sender=f"bob@{domain}")
            self.assertEqual(result.result, expected)
            self.assertEqual(result.auth_results, f"spf={expected} smtp.mailfrom=bob@{domain}")
        self.assertEqual(result.enhanced, None)

    @defer.inlineCallbacks
    def test_fail_explanation_and_code(self):
        self.dns.txt("example.org", "v=spf1 -all exp=explain.example.org")
        self.dns.txt("explain.example.org", "%{i} is not one of %{d}'s mail servers")
        result = yield self.spf()
        self.assertEqual(result.result, "fail")
        self.assertEqual(result.reason, "192.0.2.1 is not one of example.org's mail servers")
        self.assertEqual(result.enhanced, "5.7.23")

    @defer.inlineCallbacks
    def test_none_without_record(self):
        self.dns.a("example.org", "192.0.2.1")
        result = yield self.spf()
        self.assertEqual(result.result, "none")
        result = yield self.spf(sender="carol@nxdomain.example")
        self.assertEqual(result.result, "none")
        queries = len(self.dns.queries)
        result = yield self.spf(sender="dave@[192.0.2.1]")
        self.assertEqual(result.result, "none")
        self.assertEqual(len(self.dns.queries), queries)

    @defer.inlineCallbacks
    def test_temperror_on_server_failure(self):
        self.dns.servfail("example.org")
        result = yield self.spf()
        self.assertEqual(result.result, "temperror")
        self.assertEqual(result.enhanced, "4.7.24")

    @defer.inlineCallbacks
    def test_temperror_inside_include(self):
        self.dns.txt("example.org", "v=spf1 include:broken.example -all")
        self.dns.servfail("broken.example")
        result = yield self.spf()
        self.assertEqual(result.result, "temperror")

    @defer.inlineCallbacks
    def test_permerror_on_syntax(self):
        self.dns.txt("example.org", "v=spf1 ip4:192.0.2.1 frobnicate -all")
        result = yield self.spf(ip="198.51.100.9")
        self.assertEqual(result.result, "permerror")
        self.assertEqual(result.enhanced, "5.7.24")

    @defer.inlineCallbacks
    def test_permerror_on_two_records(self):
        self.dns.txt("example.org", "v=spf1 -all", "v=spf1 +all")
        result = yield self.spf()
        self.assertEqual(result.result, "permerror")

    @defer.inlineCallbacks
    def test_mechanisms_resolved_asynchronously(self):
        self.dns.txt("example.org", "v=spf1 a:web.example.org include:_spf.example.net redirect=_spf.example.com")
        self.dns.a("web.example.org", "203.0.113.5")
        self.dns.txt("_spf.example.net", "v=spf1 ip4:203.0.113.6 -all")
        self.dns.txt("_spf.example.com", "v=spf1 mx:example.com exists:%{i}.allow.example.com -all")
        self.dns.mx("example.com", (10, "mx1.example.com"), (20, "mx2.example.com"))
        self.dns.a("mx1.example.com", "203.0.113.7")
        self.dns.a("mx2.example.com", "203.0.113.8")
        self.dns.a("192.0.2.1.allow.example.com", "127.0.0.2")
        result = yield self.spf(ip="203.0.113.8")
        self.assertEqual(result.result, "pass")
        for name, kind in (
            ("web.example.org", "A"),
            ("_spf.example.net", "TXT"),
            ("_spf.example.com", "TXT"),
            ("example.com", "MX"),
            ("mx2.example.com", "A"),
        ):
            self.assertTrue(self.dns.asked(name, kind), (name, kind))
        result = yield self.spf(ip="192.0.2.1")
        self.assertEqual(result.result, "pass")
        self.assertTrue(self.dns.asked("192.0.2.1.allow.example.com", "A"))
        result = yield self.spf(ip="203.0.113.99")
        self.assertEqual(result.result, "fail")

    @defer.inlineCallbacks
    def test_ptr_mechanism(self):
        self.dns.txt("example.org", "v=spf1 ptr -all")
        self.dns.ptr("192.0.2.1", "out.example.org")
        self.dns.a("out.example.org", "192.0.2.1")
        result = yield self.spf()
        self.assertEqual(result.result, "pass")
        self.assertTrue(self.dns.asked("1.2.0.192.in-addr.arpa", "PTR"))

    @defer.inlineCallbacks
    def test_ipv6_client(self):
        self.dns.txt("example.org", "v=spf1 mx -all")
        self.dns.mx("example.org", (10, "mx.example.org"))
        self.dns.aaaa("mx.example.org", "2001:db8::25")
        result = yield self.spf(ip="2001:db8::25")
        self.assertEqual(result.result, "pass")
        self.assertTrue(self.dns.asked("mx.example.org", "AAAA"))
        self.assertFalse(self.dns.asked("mx.example.org", "A"))

    @defer.inlineCallbacks
    def test_dns_mechanism_limit(self):
        # RFC 7208 4.6.4: more than 10 mechanisms that query DNS is a permerror.
        self.dns.txt("example.org", "v=spf1 include:i0.example.org -all")
        for i in range(12):
            self.dns.txt(f"i{i}.example.org", f"v=spf1 include:i{i + 1}.example.org -all")
        result = yield self.spf()
        self.assertEqual(result.result, "permerror")
        self.assertFalse(self.dns.asked("i11.example.org"))

    @defer.inlineCallbacks
    def test_void_lookup_limit(self):
        self.dns.txt("example.org", "v=spf1 a:v1.example.org a:v2.example.org a:v3.example.org -all")
        self.dns.a("example.org", "192.0.2.200")
        result = yield self.spf()
        self.assertEqual(result.result, "permerror")

    @defer.inlineCallbacks
    def test_null_sender_checks_helo(self):
        self.dns.txt("client.example.org", "v=spf1 ip4:192.0.2.1 -all")
        result = yield self.spf(sender="")
        self.assertEqual(result.result, "pass")
        self.assertEqual(result.auth_results, "spf=pass smtp.helo=client.example.org")
        self.assertEqual(result.data, {"domain": "client.example.org", "identity": "helo"})
        result = yield self.spf(sender="", helo="[192.0.2.1]")
        self.assertEqual(result.result, "none")

    @defer.inlineCallbacks
    def test_idn_sender_domain(self):
        self.dns.txt("xn--bcher-kva.de", "v=spf1 ip4:192.0.2.1 -all")
        result = yield self.spf(sender="info@bücher.de")
        self.assertEqual(result.result, "pass")

    @defer.inlineCallbacks
    def test_through_the_pipeline(self):
        self.dns.txt("example.org", "v=spf1 -all")
        pipeline = CheckPipeline([self.check], {"spf": {"fail": "reject"}}, "mx.example.net")
        verdict = yield pipeline.mail(session(sender="alice@example.org", helo="client.example.org"))
        self.assertEqual(verdict.action, "reject")
        self.assertEqual((verdict.reply.code, verdict.reply.enhanced), (550, "5.7.23"))
