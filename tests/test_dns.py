"""emailsvc.dns: the resolver factory and lookup helpers, against a fake server."""
import re

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.logger import PredicateResult, globalLogPublisher
from twisted.names import client
from twisted.names import dns as dnsproto
from twisted.names import error
from twisted.trial import unittest

from emailsvc import dns
from emailsvc.config import ConfigError, DNSConfig
from tests.fakedns import DNSTestCase
from tests.polling import until


class NameTests(unittest.TestCase):
    def test_parse_nameserver(self):
        self.assertEqual(dns.parse_nameserver("127.0.0.1:5353"), ("127.0.0.1", 5353))
        self.assertEqual(dns.parse_nameserver("192.0.2.1"), ("192.0.2.1", 53))
        self.assertEqual(dns.parse_nameserver("[::1]:5353"), ("::1", 5353))
        self.assertEqual(dns.parse_nameserver("2001:db8::1"), ("2001:db8::1", 53))
        for bad in ("ns.example.org:53", "127.0.0.1:0", "127.0.0.1:x", "[::1", ""):
            self.assertRaises(ValueError, dns.parse_nameserver, bad)

    def test_make_resolver_reports_bad_nameservers_by_key(self):
        from twisted.internet import reactor

        config = DNSConfig(nameservers=["127.0.0.1:53", "dns.example:53", "1.2.3.4:99999"])
        error = self.assertRaises(ConfigError, dns.make_resolver, config, reactor)
        self.assertEqual([problem.key for problem in error.problems], ["dns.nameservers[1]", "dns.nameservers[2]"])

    def test_make_resolver_uses_configured_servers_and_timeout(self):
        from twisted.internet import reactor

        resolver = dns.make_resolver(DNSConfig(nameservers=["127.0.0.1:5353"], timeout=1.5, attempts=3,
                                               cache_ttl=0), reactor)
        self.assertIsInstance(resolver, client.Resolver)
        self.assertEqual(resolver.servers, [("127.0.0.1", 5353)])
        self.assertEqual(resolver.timeout, (1.5, 1.5, 1.5))
        cached = dns.make_resolver(DNSConfig(nameservers=["127.0.0.1:5353"]), reactor)
        self.assertIsInstance(cached, dns.CachingResolver)
        self.assertIsInstance(cached.upstream, client.Resolver)

    def test_dns_name(self):
        self.assertEqual(dns.dns_name("_dmarc.Example.ORG."), "_dmarc.example.org")
        self.assertEqual(dns.dns_name("sel._domainkey.bücher.de"), "sel._domainkey.xn--bcher-kva.de")
        self.assertIsNone(dns.dns_name("a..b"))
        self.assertIsNone(dns.dns_name(""))
        self.assertIsNone(dns.dns_name("x" * 64 + ".org"))

    def test_valid_hostname(self):
        for good in ("mail.example.org", "_spf.example.org", "xn--bcher-kva.de", "bücher.de", "1.2.3.4"):
            self.assertTrue(dns.valid_hostname(good), good)
        for bad in ("localhost", "[192.0.2.1]", "-bad.example", "bad-.example", "a..b", "sp ace.example", ""):
            self.assertFalse(dns.valid_hostname(bad), bad)

    def test_reversed_ip(self):
        self.assertEqual(dns.reversed_ip("192.0.2.1"), "1.2.0.192")
        self.assertEqual(dns.reversed_ip("::ffff:192.0.2.1"), "1.2.0.192")
        self.assertEqual(
            dns.reversed_ip("2001:db8::1"),
            "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2",
        )


class LookupTests(DNSTestCase, unittest.TestCase):
    @defer.inlineCallbacks
    def test_record_types(self):
        self.dns.txt("example.org", "v=spf1 -all", "hello")
        self.dns.a("mail.example.org", "192.0.2.1", "192.0.2.2")
        self.dns.aaaa("mail.example.org", "2001:db8::1")
        self.dns.mx("example.org", (20, "backup.example.org"), (10, "Mail.Example.org."))
        self.dns.ptr("192.0.2.1", "mail.example.org")
        self.dns.ptr("2001:db8::1", "mail6.example.org")
        self.assertEqual(sorted((yield dns.lookup_txt(self.resolver, "EXAMPLE.org."))), ["hello", "v=spf1 -all"])
        self.assertEqual(sorted((yield dns.lookup_a(self.resolver, "mail.example.org"))), ["192.0.2.1", "192.0.2.2"])
        self.assertEqual((yield dns.lookup_aaaa(self.resolver, "mail.example.org")), ["2001:db8::1"])
        self.assertEqual(
            (yield dns.lookup_mx(self.resolver, "example.org")), [(10, "mail.example.org"), (20, "backup.example.org")]
        )
        self.assertEqual((yield dns.lookup_ptr(self.resolver, "192.0.2.1")), ["mail.example.org"])
        self.assertEqual((yield dns.lookup_ptr(self.resolver, "2001:db8::1")), ["mail6.example.org"])
        kinds = {kind for _, kind in self.dns.queries}
        self.assertEqual(kinds, {"TXT", "A", "AAAA", "MX", "PTR"})
        self.assertNotIn("ALL_RECORDS", kinds)

    @defer.inlineCallbacks
    def test_no_such_name_and_no_data_are_empty(self):
        self.dns.a("example.org", "192.0.2.1")
        self.assertEqual((yield dns.lookup_txt(self.resolver, "missing.example.org")), [])
        self.assertEqual((yield dns.lookup_txt(self.resolver, "example.org")), [])
        self.assertEqual((yield dns.lookup_mx(self.resolver, "example.org")), [])
        self.assertEqual((yield dns.lookup_a(self.resolver, "not..valid")), [])

    @defer.inlineCallbacks
    def test_server_failure_is_temporary(self):
        self.dns.servfail("broken.example")
        with self.assertRaises(dns.DNSTemporaryError):
            yield dns.lookup_txt(self.resolver, "broken.example")

    @defer.inlineCallbacks
    def test_cname_is_followed(self):
        self.dns.cname("www.example.org", "host.example.net")
        self.dns.a("host.example.net", "192.0.2.7")
        self.assertEqual((yield dns.lookup_a(self.resolver, "www.example.org")), ["192.0.2.7"])

    @defer.inlineCallbacks
    def test_large_answer_retried_over_tcp(self):
        self.dns.txt("big.example.org", "k=" + "x" * 900)
        (text,) = yield dns.lookup_txt(self.resolver, "big.example.org")
        self.assertEqual(len(text), 902)
        self.assertEqual(self.dns.queries.count(("big.example.org", "TXT")), 2)

    @defer.inlineCallbacks
    def test_idn_is_queried_as_a_label(self):
        self.dns.a("xn--bcher-kva.de", "192.0.2.9")
        self.assertEqual((yield dns.lookup_a(self.resolver, "Bücher.de")), ["192.0.2.9"])


class QueryPortLineTests(DNSTestCase, unittest.TestCase):
    @defer.inlineCallbacks
    def test_the_four_lines_of_a_query_port_and_nothing_else(self):
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        self.dns.a("mail.example.org", "192.0.2.1")
        self.assertEqual((yield dns.lookup_a(self.resolver, "mail.example.org")), ["192.0.2.1"])
        # The port closes a reactor turn or two after the answer.
        yield until(lambda: any("Closed" in event.get("log_text", "") for event in events))
        dropped = [event["log_text"] for event in events if dns.drop_query_port_lines(event) is PredicateResult.no]
        shapes = sorted(re.sub(r"0x[0-9a-f]+|\d+", "N", text) for text in dropped)
        self.assertEqual(shapes, [
            "(UDP Port N Closed)",
            "DNSDatagramProtocol starting on N",
            "Starting protocol <twisted.names.dns.DNSDatagramProtocol object at N>",
            "Stopping protocol <twisted.names.dns.DNSDatagramProtocol object at N>",
        ])
        for text in ("Transaction from [127.0.0.1]:2525", "(UDP Port 53 Closed) and more", ""):
            self.assertIs(dns.drop_query_port_lines({"log_text": text}), PredicateResult.maybe)
        self.assertIs(dns.drop_query_port_lines({"log_format": "no text"}), PredicateResult.maybe)


class CacheTests(DNSTestCase, unittest.TestCase):
    def setUp(self):
        super().setUp()
        self.clock = Clock()
        self.cached = dns.CachingResolver(self.resolver.upstream, self.clock, max_ttl=300, max_entries=2)

    def asked(self, name):
        return self.dns.queries.count((name, "A"))

    @defer.inlineCallbacks
    def test_answers_are_kept_for_their_ttl(self):
        self.dns.authority.add("short.example", dnsproto.Record_A("192.0.2.1"), ttl=30)
        for _ in range(3):
            self.assertEqual((yield dns.lookup_a(self.cached, "short.example")), ["192.0.2.1"])
        self.assertEqual(self.asked("short.example"), 1)
        self.clock.advance(31)
        yield dns.lookup_a(self.cached, "short.example")
        self.assertEqual(self.asked("short.example"), 2)

    @defer.inlineCallbacks
    def test_ttl_is_capped_and_misses_are_not_kept(self):
        self.dns.authority.add("long.example", dnsproto.Record_A("192.0.2.2"), ttl=86400)
        yield dns.lookup_a(self.cached, "long.example")
        self.clock.advance(301)
        yield dns.lookup_a(self.cached, "long.example")
        self.assertEqual(self.asked("long.example"), 2)
        for _ in range(2):
            self.assertEqual((yield dns.lookup_a(self.cached, "missing.example")), [])
        self.assertEqual(self.asked("missing.example"), 2)

    @defer.inlineCallbacks
    def test_negative_answers_are_kept_for_their_soa_negative_ttl(self):
        self.dns.soa(ttl=3600, minimum=60)
        self.dns.txt("present.example", "v=spf1 -all")
        for _ in range(3):
            self.assertEqual((yield dns.lookup_a(self.cached, "missing.example")), [])  # no such name
            self.assertEqual((yield dns.lookup_a(self.cached, "present.example")), [])  # no data
        self.assertEqual((self.asked("missing.example"), self.asked("present.example")), (1, 1))
        self.clock.advance(61)
        yield dns.lookup_a(self.cached, "missing.example")
        yield dns.lookup_a(self.cached, "present.example")
        self.assertEqual((self.asked("missing.example"), self.asked("present.example")), (2, 2))

    @defer.inlineCallbacks
    def test_each_hit_on_a_kept_no_such_name_fails_afresh(self):
        self.dns.soa(ttl=3600, minimum=60)
        errors = []
        for _ in range(3):
            query = dnsproto.Query(b"missing.example", dnsproto.A)
            errors.append((yield self.assertFailure(self.cached.query(query), error.DNSNameError)))
        self.assertEqual(self.asked("missing.example"), 1)
        self.assertEqual(len({id(failure) for failure in errors}), 3)
        self.assertTrue(all(failure.args[0].rCode == dnsproto.ENAME for failure in errors))

    @defer.inlineCallbacks
    def test_server_failures_are_not_kept(self):
        self.dns.soa(ttl=3600, minimum=60)
        self.dns.servfail("broken.example")
        for _ in range(2):
            with self.assertRaises(dns.DNSTemporaryError):
                yield dns.lookup_a(self.cached, "broken.example")
        self.assertEqual(self.asked("broken.example"), 2)

    @defer.inlineCallbacks
    def test_negative_ttl_is_the_lower_of_soa_ttl_and_minimum_and_capped(self):
        self.dns.soa(ttl=20, minimum=3600)
        yield dns.lookup_a(self.cached, "missing.example")
        self.clock.advance(19)
        yield dns.lookup_a(self.cached, "missing.example")
        self.clock.advance(2)
        yield dns.lookup_a(self.cached, "missing.example")
        self.assertEqual(self.asked("missing.example"), 2)
        self.dns.soa(ttl=86400, minimum=86400)
        yield dns.lookup_a(self.cached, "gone.example")
        self.clock.advance(299)  # kept, for max_ttl (300) only
        yield dns.lookup_a(self.cached, "gone.example")
        self.assertEqual(self.asked("gone.example"), 1)
        self.clock.advance(2)
        yield dns.lookup_a(self.cached, "gone.example")
        self.assertEqual(self.asked("gone.example"), 2)

    @defer.inlineCallbacks
    def test_negative_answers_do_not_crowd_out_positive_ones(self):
        self.dns.soa(ttl=3600, minimum=60)
        for name in ("one.example", "two.example"):
            self.dns.authority.add(name, dnsproto.Record_A("192.0.2.4"), ttl=100)
        yield dns.lookup_a(self.cached, "one.example")
        for index in range(3):  # more misses than max_entries (2)
            yield dns.lookup_a(self.cached, f"miss{index}.example")
        yield dns.lookup_a(self.cached, "two.example")
        for name in ("one.example", "two.example", "miss0.example", "miss2.example"):
            yield dns.lookup_a(self.cached, name)
        self.assertEqual([self.asked(name) for name in ("one.example", "two.example", "miss0.example",
                                                          "miss2.example")], [1, 1, 1, 2])

    @defer.inlineCallbacks
    def test_a_full_cache_drops_expired_entries_then_keeps_no_more(self):
        for name, ttl in (("one.example", 10), ("two.example", 100), ("three.example", 100)):
            self.dns.authority.add(name, dnsproto.Record_A("192.0.2.3"), ttl=ttl)
        yield dns.lookup_a(self.cached, "one.example")
        yield dns.lookup_a(self.cached, "two.example")
        self.clock.advance(11)
        yield dns.lookup_a(self.cached, "three.example")  # one.example expired: room
        yield dns.lookup_a(self.cached, "one.example")  # full: asked, not kept
        yield dns.lookup_a(self.cached, "one.example")
        yield dns.lookup_a(self.cached, "three.example")
        self.assertEqual([self.asked(name) for name in ("one.example", "two.example", "three.example")], [3, 1, 1])


class TimeoutTests(DNSTestCase, unittest.TestCase):
    dns_timeout = 0.2

    @defer.inlineCallbacks
    def test_timeout_is_temporary(self):
        self.dns.drop("slow.example")
        with self.assertRaises(dns.DNSTemporaryError):
            yield dns.lookup_a(self.resolver, "slow.example")
