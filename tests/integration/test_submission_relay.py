"""The open-relay suite: every classic relay trick, on every SMTP listener
(the MX, and submission on 587 and 465, with and without AUTH).  Nothing is
accepted for a remote recipient; only an authenticated user reaches a
local one."""
import smtplib

from twisted.internet import defer
from twisted.trial import unittest

from tests.integration.test_submission import ALICE_PW, MESSAGE, SubmissionFixture

# Recipients that an open relay would send elsewhere.  None of them is a
# local mailbox: example.test has no catch-all.
TRICKS = [
    "victim@elsewhere.example",                         # plain relaying
    "victim%elsewhere.example@example.test",            # percent hack
    "victim%elsewhere.example@[127.0.0.1]",             # percent hack at our IP literal
    "@example.test:victim@elsewhere.example",           # source route via us
    "@mail.example.test,@example.test:victim@elsewhere.example",
    '"victim@elsewhere.example"@example.test',          # quoted local part with @
    '"victim%elsewhere.example"@example.test',
    '"victim@elsewhere.example"',                       # quoted, no domain
    "elsewhere.example!victim@example.test",            # bang path
    "elsewhere.example!victim",
    "victim@elsewhere.example@example.test",            # @ in the local part
    "victim@elsewhere.example.",                        # trailing dot
    "victim@[192.0.2.1]",                               # IP literals
    "victim@[127.0.0.1]",
    "victim@[IPv6:::1]",
    "victim@example.test.elsewhere.example",            # our name as a prefix
    "victim@elsewhere.example\\@example.test",
]

SENDERS = ["x@remote.example", "", "alice@example.test"]


class OpenRelayTests(SubmissionFixture, unittest.TestCase):
    outcomes = {}

    def probe(self, listener, senders, login=False):
        """(In a thread) {(sender, recipient): (MAIL code, RCPT code)} over one connection."""

        def run():
            outcome = {}
            with self.connect(listener) as client:
                if login:
                    client.login("alice@example.test", ALICE_PW)
                for sender in senders:
                    for recipient in TRICKS:
                        mail = client.docmd("MAIL", f"FROM:<{sender}>")[0]
                        rcpt = client.docmd("RCPT", f"TO:<{recipient}>")[0] if mail == 250 else None
                        if rcpt == 250:
                            # Accepted: see whether it really goes out.
                            data = client.docmd("DATA")[0]
                            if data == 354:
                                client.send(MESSAGE + b".\r\n")
                                rcpt = ("data", client.getreply()[0])
                        client.rset()
                        outcome[(sender, recipient)] = (mail, rcpt)
            self.outcomes[listener, login] = outcome
            return outcome

        return self.in_thread(run)

    def assertRefused(self, outcome, listener):
        for key, (mail, rcpt) in outcome.items():
            # A tuple means RCPT was accepted (and DATA tried): a relay.
            self.assertFalse(isinstance(rcpt, tuple), f"{listener} accepted {key}: {rcpt}")
            self.assertGreaterEqual(mail if rcpt is None else rcpt, 400, (listener, key))

    @defer.inlineCallbacks
    def test_mx_relays_nothing(self):
        outcome = yield self.probe("mx", SENDERS)
        self.assertRefused(outcome, "mx")
        # The MX takes the null sender (bounces) but still relays nothing.
        self.assertEqual(outcome[("", "victim@elsewhere.example")], (250, 550))
        yield self.assertNothingDelivered()

    @defer.inlineCallbacks
    def test_mx_offers_no_auth(self):
        def run():
            with self.connect("mx", tls=False) as client:
                client.starttls()
                client.ehlo("client.example")
                return dict(client.esmtp_features), client.docmd("AUTH", "PLAIN AGFsaWNlAHg=")

        features, auth = yield self.in_thread(run)
        self.assertNotIn("auth", features)
        self.assertEqual(auth[0], 500)

    @defer.inlineCallbacks
    def test_submission_without_auth_relays_nothing(self):
        for listener in ("587", "465"):
            outcome = yield self.probe(listener, SENDERS)
            self.assertRefused(outcome, listener)
            # Without AUTH not even MAIL is accepted.
            self.assertEqual({mail for mail, _ in outcome.values()}, {530}, listener)
        def plain():
            with self.connect("587", tls=False) as client:
                return client.docmd("MAIL", "FROM:<alice@example.test>")[0]

        self.assertEqual((yield self.in_thread(plain)), 530)
        yield self.assertNothingDelivered()

    @defer.inlineCallbacks
    def test_submission_with_auth_relays_nothing(self):
        for listener in ("587", "465"):
            outcome = yield self.probe(listener, SENDERS, login=True)
            self.assertRefused(outcome, listener)
            # Foreign and null senders are refused at MAIL; the user's own
            # address gets each trick refused at RCPT.
            self.assertEqual(outcome[("x@remote.example", TRICKS[0])], (553, None))
            self.assertEqual(outcome[("", TRICKS[0])], (553, None))
            self.assertEqual({mail for (sender, _), (mail, _) in outcome.items() if sender == "alice@example.test"},
                             {250})
        yield self.assertNothingDelivered()

    @defer.inlineCallbacks
    def test_authenticated_user_reaches_local_recipients(self):
        # The positive control: the same connection set-up does deliver.
        refused = yield self.submit(recipients=["bob@example.test", "Team@Example.Test"], listener="465")
        self.assertEqual(refused, {})
        self.assertEqual(len((yield self.inbox(self.bob))), 1)
        self.assertEqual(len((yield self.inbox(self.alice))), 1)
        with self.assertRaises(smtplib.SMTPRecipientsRefused):
            yield self.submit(recipients=["victim%elsewhere.example@example.test"])
