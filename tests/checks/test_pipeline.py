"""The default pipeline end to end: config -> checks -> verdicts, over the fake DNS."""
from twisted.internet import defer
from twisted.trial import unittest

from emailsvc.checks import authres, plugins
from emailsvc.config import parse
from tests.checks.support import make_message, session
from tests.checks.test_dkim import shared_key, sign
from tests.fakedns import DNSTestCase


class DefaultPipelineTests(DNSTestCase, unittest.TestCase):
    def setUp(self):
        super().setUp()
        private, public = shared_key()
        self.private = private
        self.dns.ptr("192.0.2.1", "out.example.org")
        self.dns.a("out.example.org", "192.0.2.1")
        self.dns.txt("example.org", "v=spf1 a:out.example.org -all")
        self.dns.txt("sel._domainkey.example.org", public)
        self.dns.txt("_dmarc.example.org", "v=DMARC1; p=reject")
        config = parse(
            f'[server]\nhostname = "mx.example.net"\n[dns]\nnameservers = ["{self.dns.nameserver}"]\n'
        )
        self.pipeline = plugins.build_pipeline(config, self.resolver, self.reactor)

    @defer.inlineCallbacks
    def converse(self, ip, message):
        state = session(peer_ip=ip)
        verdicts = [(yield self.pipeline.connect(state))]
        state.helo = "out.example.org"
        verdicts.append((yield self.pipeline.helo(state)))
        state.sender = "alice@example.org"
        verdicts.append((yield self.pipeline.mail(state)))
        verdicts.append((yield self.pipeline.rcpt(state, "bob@example.net")))
        state.recipients.append("bob@example.net")
        state.message = message
        verdicts.append((yield self.pipeline.data(state)))
        return state, verdicts

    @defer.inlineCallbacks
    def test_legitimate_mail(self):
        message = sign(
            make_message(
                [
                    ("Authentication-Results", "mx.example.net; dkim=pass header.d=forged.example"),
                    ("From", "Alice <alice@example.org>"),
                    ("To", "bob@example.net"),
                    ("Subject", "hello"),
                ]
            ),
            self.private,
        )
        state, verdicts = yield self.converse("192.0.2.1", message)
        self.assertEqual([v.action for v in verdicts], ["accept"] * 5)
        self.assertEqual(state.reverse_name, "out.example.org")
        data = verdicts[-1]
        self.assertEqual(data.strip, [1])
        name, value = data.headers[0]
        self.assertEqual(name, "Authentication-Results")
        lines = value.split(";\r\n\t")
        self.assertEqual(lines[0], "mx.example.net")
        self.assertEqual(lines[1], "iprev=pass (out.example.org) policy.iprev=192.0.2.1")
        self.assertEqual(lines[2], "spf=pass smtp.mailfrom=alice@example.org")
        self.assertTrue(lines[3].startswith("dkim=pass header.d=example.org"))
        self.assertEqual(lines[4], "dmarc=pass (p=reject sp=reject dis=none) header.from=example.org")
        delivered = authres.apply(message, data)
        self.assertTrue(delivered.startswith(b"Authentication-Results: mx.example.net;\r\n\tiprev=pass"))
        self.assertNotIn(b"forged.example", delivered)
        for name, kind in (
            ("1.2.0.192.in-addr.arpa", "PTR"),
            ("example.org", "TXT"),
            ("sel._domainkey.example.org", "TXT"),
            ("_dmarc.example.org", "TXT"),
        ):
            self.assertTrue(self.dns.asked(name, kind), (name, kind))

    @defer.inlineCallbacks
    def test_spoofed_mail_is_rejected_at_data(self):
        message = make_message([("From", "Alice <alice@example.org>"), ("Subject", "hello")])
        state, verdicts = yield self.converse("198.51.100.7", message)
        self.assertEqual([v.action for v in verdicts], ["accept", "accept", "accept", "accept", "reject"])
        self.assertEqual([r.result for r in verdicts[0].results], ["none"])
        self.assertEqual([r.result for r in verdicts[2].results], ["fail"])
        self.assertEqual(str(verdicts[-1].reply), "550 5.7.1 Message rejected due to DMARC policy of example.org")
