"""DMARC over real SPF and DKIM results, against the fake DNS server."""
from twisted.internet import defer
from twisted.trial import unittest
from zope.interface.verify import verifyObject

from emailsvc.checks import dmarc
from emailsvc.checks.dkim import DKIMCheck
from emailsvc.checks.dmarc import DMARCCheck, Policy, aligned, organizational_domain, parse_record
from emailsvc.interfaces import ICheck
from emailsvc.checks.runner import CheckPipeline
from emailsvc.checks.spf import SPFCheck
from tests.checks.support import make_message, session
from tests.checks.test_dkim import sign, shared_key
from tests.fakedns import DNSTestCase


class RecordTests(unittest.TestCase):
    def test_parse(self):
        self.assertEqual(parse_record("v=DMARC1; p=reject"), Policy("reject"))
        self.assertEqual(
            parse_record("v=DMARC1;p=Quarantine;sp=none;adkim=s;aspf=s;pct=25;rua=mailto:d@example.org"),
            Policy("quarantine", "none", "s", "s", 25),
        )
        self.assertEqual(parse_record("v=DMARC1; p=bogus; rua=mailto:d@example.org"), Policy("none"))
        self.assertIsNone(parse_record("v=DMARC1; p=bogus"))
        self.assertIsNone(parse_record("p=reject; v=DMARC1"))
        self.assertIsNone(parse_record("v=spf1 -all"))
        self.assertEqual(parse_record("v=DMARC1; p=none; pct=250; adkim=x").pct, 100)

    def test_organizational_domain(self):
        self.assertEqual(organizational_domain("a.b.example.org"), "example.org")
        self.assertEqual(organizational_domain("mail.example.co.uk"), "example.co.uk")
        self.assertEqual(organizational_domain("co.uk"), "co.uk")

    def test_alignment(self):
        self.assertTrue(aligned("bounce.example.org", "example.org", "r"))
        self.assertFalse(aligned("bounce.example.org", "example.org", "s"))
        self.assertTrue(aligned("Example.org", "example.org", "s"))
        self.assertFalse(aligned("example.net", "example.org", "r"))
        self.assertFalse(aligned("", "example.org", "r"))


class DMARCTests(DNSTestCase, unittest.TestCase):
    def setUp(self):
        super().setUp()
        self.private, public = shared_key()
        self.dns.txt("sel._domainkey.example.org", public)
        self.dns.txt("sel._domainkey.example.net", public)
        self.dns.txt("example.org", "v=spf1 ip4:192.0.2.1 -all")
        self.dns.txt("bounce.example.org", "v=spf1 ip4:192.0.2.1 -all")
        self.dns.txt("example.net", "v=spf1 ip4:192.0.2.1 -all")
        self.dmarc = DMARCCheck(self.resolver, random=lambda: 0.5)
        self.pipeline = CheckPipeline(
            [SPFCheck(self.resolver, self.reactor, "mx.example.net"), DKIMCheck(self.resolver, self.reactor), self.dmarc],
            {},
            "mx.example.net",
        )

    @defer.inlineCallbacks
    def deliver(self, sender, author, ip="192.0.2.1", signer=None):
        """Run MAIL and DATA; returns (data verdict, the dmarc result)."""
        state = session(peer_ip=ip, helo="client.example.org")
        state.sender = sender
        yield self.pipeline.mail(state)
        message = make_message([("From", author), ("To", "bob@example.com"), ("Subject", "hi")])
        if signer:
            message = sign(message, self.private, domain=signer)
        state.message = message
        verdict = yield self.pipeline.data(state)
        (result,) = [r for r in verdict.results if r.check == "dmarc"]
        return verdict, result

    def test_provides_icheck(self):
        verifyObject(ICheck, self.dmarc)

    @defer.inlineCallbacks
    def test_pass_through_aligned_spf(self):
        self.dns.txt("_dmarc.example.org", "v=DMARC1; p=reject")
        verdict, result = yield self.deliver("b@bounce.example.org", "Alice <alice@example.org>")
        self.assertEqual(result.result, "pass")
        self.assertEqual(verdict.action, "accept")
        self.assertEqual(result.auth_results, "dmarc=pass (p=reject sp=reject dis=none) header.from=example.org")
        self.assertIn("dmarc=pass", verdict.headers[0][1])
        self.assertIn("spf=pass", verdict.headers[0][1])

    @defer.inlineCallbacks
    def test_pass_through_aligned_dkim(self):
        self.dns.txt("_dmarc.example.org", "v=DMARC1; p=reject")
        verdict, result = yield self.deliver("x@example.net", "alice@example.org", signer="example.org")
        self.assertEqual(result.result, "pass")
        self.assertEqual(verdict.action, "accept")

    @defer.inlineCallbacks
    def test_unaligned_passes_do_not_count(self):
        self.dns.txt("_dmarc.example.org", "v=DMARC1; p=reject")
        verdict, result = yield self.deliver("x@example.net", "alice@example.org", signer="example.net")
        self.assertEqual([r.result for r in verdict.results if r.check == "dkim"], ["pass"])
        self.assertEqual((result.result, result.outcome), ("fail", "fail_reject"))
        self.assertEqual(verdict.action, "reject")
        self.assertEqual((verdict.reply.code, verdict.reply.enhanced), (550, "5.7.1"))
        self.assertEqual(verdict.reply.text, "Message rejected due to DMARC policy of example.org")

    @defer.inlineCallbacks
    def test_fail_with_p_none_is_tagged(self):
        self.dns.txt("_dmarc.example.org", "v=DMARC1; p=none")
        verdict, result = yield self.deliver("x@example.net", "alice@example.org", ip="198.51.100.1")
        self.assertEqual((result.result, result.outcome), ("fail", "fail_none"))
        self.assertEqual(verdict.action, "accept")
        self.assertIn("dmarc:fail", verdict.tags)

    @defer.inlineCallbacks
    def test_fail_with_quarantine_is_junk(self):
        self.dns.txt("_dmarc.example.org", "v=DMARC1; p=quarantine")
        verdict, result = yield self.deliver("alice@example.org", "alice@example.org", ip="198.51.100.1")
        self.assertEqual(result.outcome, "fail_quarantine")
        self.assertEqual(verdict.action, "junk")
        self.assertIsNone(verdict.reply)

    @defer.inlineCallbacks
    def test_fail_with_reject(self):
        self.dns.txt("_dmarc.example.org", "v=DMARC1; p=reject")
        verdict, result = yield self.deliver("alice@example.org", "alice@example.org", ip="198.51.100.1")
        self.assertEqual(result.outcome, "fail_reject")
        self.assertEqual(verdict.action, "reject")
        self.assertIn("dis=reject", result.auth_results)

    @defer.inlineCallbacks
    def test_strict_spf_alignment(self):
        self.dns.txt("_dmarc.example.org", "v=DMARC1; p=reject; aspf=s")
        verdict, result = yield self.deliver("b@bounce.example.org", "alice@example.org")
        self.assertEqual(result.result, "fail")

    @defer.inlineCallbacks
    def test_organizational_domain_fallback_uses_sp(self):
        self.dns.txt("_dmarc.example.org", "v=DMARC1; p=reject; sp=quarantine")
        verdict, result = yield self.deliver("x@example.net", "news@news.example.org")
        self.assertTrue(self.dns.asked("_dmarc.news.example.org", "TXT"))
        self.assertTrue(self.dns.asked("_dmarc.example.org", "TXT"))
        self.assertEqual((result.result, result.outcome), ("fail", "fail_quarantine"))
        self.assertEqual(result.data["domain"], "news.example.org")
        self.assertEqual(verdict.action, "junk")

    @defer.inlineCallbacks
    def test_subdomain_record_wins(self):
        self.dns.txt("_dmarc.example.org", "v=DMARC1; p=reject")
        self.dns.txt("_dmarc.news.example.org", "v=DMARC1; p=none")
        verdict, result = yield self.deliver("x@example.net", "news@news.example.org")
        self.assertEqual(result.outcome, "fail_none")
        self.assertFalse(self.dns.asked("_dmarc.example.org"))

    @defer.inlineCallbacks
    def test_pct_sampling_applies_a_weaker_policy(self):
        self.dns.txt("_dmarc.example.org", "v=DMARC1; p=reject; pct=40")
        verdict, result = yield self.deliver("x@example.net", "alice@example.org")  # random() * 100 = 50 >= 40
        self.assertEqual(result.outcome, "fail_quarantine")
        self.dmarc.random = lambda: 0.1
        verdict, result = yield self.deliver("x@example.net", "alice@example.org")
        self.assertEqual(result.outcome, "fail_reject")

    @defer.inlineCallbacks
    def test_none_without_policy(self):
        verdict, result = yield self.deliver("x@example.net", "alice@example.org")
        self.assertEqual(result.result, "none")
        self.assertEqual(verdict.action, "accept")

    @defer.inlineCallbacks
    def test_temperror_when_policy_lookup_fails(self):
        self.dns.servfail("_dmarc.example.org")
        verdict, result = yield self.deliver("x@example.net", "alice@example.org")
        self.assertEqual(result.result, "temperror")

    @defer.inlineCallbacks
    def test_temperror_when_authentication_failed_temporarily(self):
        self.dns.txt("_dmarc.broken.example", "v=DMARC1; p=reject")
        self.dns.servfail("broken.example")
        verdict, result = yield self.deliver("x@broken.example", "alice@broken.example")
        self.assertEqual(result.result, "temperror")
        self.assertEqual(verdict.action, "accept")

    @defer.inlineCallbacks
    def test_permerror_for_ambiguous_author(self):
        state = session(sender="x@example.net", message=make_message([("From", "a@example.org, b@example.net")]))
        result = yield defer.ensureDeferred(self.dmarc.data(state))
        self.assertEqual(result.result, "permerror")
        state.message = make_message([("From", "a@example.org"), ("From", "a@example.org")])
        result = yield defer.ensureDeferred(self.dmarc.data(state))
        self.assertEqual(result.result, "permerror")


class PublicSuffixTests(unittest.TestCase):
    def test_psl_is_loaded_once(self):
        organizational_domain("example.org")
        first = dmarc._psl
        organizational_domain("example.net")
        self.assertIs(dmarc._psl, first)
