"""Remote delivery over loopback: fake SMTP servers on 127.0.0.x (one port
shared, as MX hosts share port 25) found through the fake DNS server."""
from twisted.internet import defer, error, reactor
from twisted.trial import unittest

from emailsvc import tls
from emailsvc.config import QueueConfig, TLSConfig
from emailsvc.delivery.client import Envelope
from emailsvc.delivery.remote import DELIVERED, PERMANENT, TEMPORARY, RemoteDelivery
from tests.delivery.fakesmtp import FakeSMTPServer, Script
from tests.fakedns import DNSTestCase

MESSAGE = b"From: alice@example.test\r\nSubject: hi\r\n\r\n.leading dot\r\nbody\r\n"


def start_fleet(testcase, count, tls_context=None):
    """`count` fake servers on 127.0.0.1, .2, ... all on one port."""
    for _ in range(20):
        servers = [FakeSMTPServer(reactor, tls_context, Script())]
        port = servers[0].start()
        try:
            for index in range(2, count + 1):
                server = FakeSMTPServer(reactor, tls_context, Script(), interface=f"127.0.0.{index}", port=port)
                server.start()
                servers.append(server)
        except error.CannotListenError:
            for server in servers:
                server.stop()
            continue
        for server in servers:
            testcase.addCleanup(server.stop)
        return port, servers
    raise RuntimeError("no common free port")


class RemoteTests(DNSTestCase, unittest.TestCase):
    def setUp(self):
        super().setUp()
        cert, key = tls.ensure_certificate(TLSConfig(), self.mktemp(), "mx.remote.test")
        self.context = tls.server_context(cert, key)
        self.port, self.servers = start_fleet(self, 3, self.context)
        # A port where nothing listens, on the same addresses: .4 stays unused.
        self.settings = QueueConfig(remote_port=self.port, connect_timeout=2, command_timeout=5)

    def remote(self, **overrides):
        settings = QueueConfig(**{**self.settings.__dict__, **overrides})
        return RemoteDelivery(self.resolver, reactor, settings, "mail.example.test")

    def deliver(self, domain, recipients, remote=None, sender="alice@example.test"):
        return (remote or self.remote()).deliver(domain, Envelope(sender, tuple(recipients)), MESSAGE)

    @defer.inlineCallbacks
    def test_mx_preference_order_and_fallback_to_next_host(self):
        self.dns.mx("remote.test", (20, "mx2.remote.test"), (10, "mx1.remote.test"))
        self.dns.a("mx1.remote.test", "127.0.0.4")  # nothing listens there
        self.dns.a("mx2.remote.test", "127.0.0.2")
        results = yield self.deliver("remote.test", ["a@remote.test", "b@remote.test"])
        self.assertEqual({r: a.status for r, a in results.items()}, {"a@remote.test": DELIVERED,
                                                                     "b@remote.test": DELIVERED})
        self.assertEqual(results["a@remote.test"].host, "mx2.remote.test")
        (got,) = self.servers[1].received
        self.assertEqual(got.recipients, ["a@remote.test", "b@remote.test"])
        self.assertEqual(got.message, MESSAGE)
        self.assertTrue(got.tls)
        self.assertEqual(got.helo, "mail.example.test")
        self.assertTrue(self.dns.asked("remote.test", "MX"))
        self.assertFalse(any(kind == "ALL_RECORDS" for _, kind in self.dns.queries))

    @defer.inlineCallbacks
    def test_preferred_host_is_used_first(self):
        self.dns.mx("remote.test", (20, "mx2.remote.test"), (10, "mx1.remote.test"))
        self.dns.a("mx1.remote.test", "127.0.0.1")
        self.dns.a("mx2.remote.test", "127.0.0.2")
        yield self.deliver("remote.test", ["a@remote.test"])
        self.assertEqual(len(self.servers[0].received), 1)
        self.assertEqual(self.servers[1].received, [])

    @defer.inlineCallbacks
    def test_no_mx_falls_back_to_address_records(self):
        self.dns.a("plain.test", "127.0.0.3")
        results = yield self.deliver("plain.test", ["a@plain.test"])
        self.assertEqual(results["a@plain.test"].status, DELIVERED)
        self.assertEqual(len(self.servers[2].received), 1)

    @defer.inlineCallbacks
    def test_null_mx_is_permanent(self):
        self.dns.mx("nomail.test", (0, b""))  # the root name: null MX
        self.dns.a("nomail.test", "127.0.0.1")
        results = yield self.deliver("nomail.test", ["a@nomail.test"])
        self.assertEqual(results["a@nomail.test"].status, PERMANENT)
        self.assertTrue(results["a@nomail.test"].reply.startswith("556 5.1.10"))
        self.assertEqual(self.servers[0].received, [])

    @defer.inlineCallbacks
    def test_nonexistent_domain_is_permanent_and_servfail_temporary(self):
        results = yield self.deliver("nowhere.test", ["a@nowhere.test"])
        self.assertEqual(results["a@nowhere.test"].status, PERMANENT)
        self.dns.servfail("broken.test")
        results = yield self.deliver("broken.test", ["a@broken.test"])
        self.assertEqual(results["a@broken.test"].status, TEMPORARY)

    @defer.inlineCallbacks
    def test_all_hosts_down_is_temporary(self):
        self.dns.mx("down.test", (10, "mx.down.test"))
        self.dns.a("mx.down.test", "127.0.0.5")
        results = yield self.deliver("down.test", ["a@down.test"])
        self.assertEqual(results["a@down.test"].status, TEMPORARY)
        self.assertTrue(results["a@down.test"].reply.startswith("451 4.4.1"))

    @defer.inlineCallbacks
    def test_per_recipient_outcomes(self):
        self.dns.mx("remote.test", (10, "mx1.remote.test"))
        self.dns.a("mx1.remote.test", "127.0.0.1")
        self.servers[0].script.rcpt_replies.update({"bad@remote.test": b"550 5.1.1 No such user",
                                                    "busy@remote.test": b"452 4.2.2 Mailbox full"})
        results = yield self.deliver("remote.test", ["ok@remote.test", "bad@remote.test", "busy@remote.test"])
        self.assertEqual({r: (a.status, a.reply) for r, a in results.items()}, {
            "ok@remote.test": (DELIVERED, "250 2.0.0 Ok: queued"),
            "bad@remote.test": (PERMANENT, "550 5.1.1 No such user"),
            "busy@remote.test": (TEMPORARY, "452 4.2.2 Mailbox full"),
        })

    @defer.inlineCallbacks
    def test_greeting_refusal_tries_next_host(self):
        self.dns.mx("remote.test", (10, "mx1.remote.test"), (20, "mx2.remote.test"))
        self.dns.a("mx1.remote.test", "127.0.0.1")
        self.dns.a("mx2.remote.test", "127.0.0.2")
        self.servers[0].script.greeting = b"554 5.3.2 Not now"
        results = yield self.deliver("remote.test", ["a@remote.test"])
        self.assertEqual(results["a@remote.test"].status, DELIVERED)
        self.assertEqual(len(self.servers[1].received), 1)

    @defer.inlineCallbacks
    def test_smarthost_with_auth(self):
        self.servers[2].script.auth = {"relay": "relay-pw"}
        remote = self.remote(smarthost="127.0.0.3", smarthost_port=self.port, smarthost_username="relay",
                             smarthost_password="relay-pw", smarthost_verify=False)
        results = yield self.deliver("anywhere.test", ["a@anywhere.test"], remote=remote)
        self.assertEqual(results["a@anywhere.test"].status, DELIVERED)
        (got,) = self.servers[2].received
        self.assertEqual((got.auth, got.tls), ("relay", True))
        self.assertFalse(self.dns.asked("anywhere.test"))
        wrong = self.remote(smarthost="127.0.0.3", smarthost_port=self.port, smarthost_username="relay",
                            smarthost_password="nope", smarthost_verify=False)
        results = yield self.deliver("anywhere.test", ["a@anywhere.test"], remote=wrong)
        self.assertEqual(results["a@anywhere.test"].status, TEMPORARY)
        self.assertNotIn("nope", results["a@anywhere.test"].reply)
