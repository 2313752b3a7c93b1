"""Submission (587 STARTTLS, 465 implicit TLS) end to end: smtplib and swaks
over loopback into the embedded store, AUTH through twisted.cred, DKIM
signatures verified with dkimpy and with emailsvc's own DKIM check."""
import email
import shutil
import smtplib
import subprocess

import dkim as dkimpy
from twisted.cred.portal import Portal
from twisted.internet import defer, reactor
from twisted.internet.threads import deferToThread
from twisted.trial import unittest

from emailsvc import dns, tls
from emailsvc.checks.dkim import DKIMCheck
from emailsvc.checks.model import SessionState
from emailsvc.checks.plugins import build_pipeline
from emailsvc.config import SMTPConfig, TLSConfig, parse
from emailsvc.cred import passwords
from emailsvc.cred.checker import DirectoryChecker
from emailsvc.cred.realm import MailRealm
from emailsvc.cred.throttle import AuthThrottle
from emailsvc.delivery import dkim_sign
from emailsvc.delivery.mda import MDA
from emailsvc.interfaces import ISubmitter
from emailsvc.service import InFlight
from emailsvc.smtp.server import SMTPServerFactory
from emailsvc.smtp.session import MXSession
from emailsvc.smtp.submission import RateLimiter, SubmissionFactory, SubmissionSession, submitter_factory
from emailsvc.store.sql import directory as sql_directory
from tests.fakedns import DNSTestCase
from tests.store.test_sqlite import open_embedded, stored_messages, stored_raw

HOST = "mail.example.test"
ALICE_PW = "alice-secret-1"
BOB_PW = "bob-secret-2"

MESSAGE = (b"From: Alice <alice@example.test>\r\nTo: bob@example.test\r\nSubject: hello\r\n"
           b"\r\nHi Bob.\r\n")


class SubmissionFixture(DNSTestCase):
    """A store with users, an MX listener and submission listeners on 587
    (STARTTLS) and 465 (implicit TLS) semantics, on loopback ports."""

    max_failures = 3
    per_hour = 0
    save_to_sent = False

    @defer.inlineCallbacks
    def setUp(self):
        super().setUp()
        self.metadata, self.blobs = yield open_embedded(self)
        directory = self.directory = self.metadata.directory
        self.mail = self.metadata.mail
        for domain in ("example.test", "other.test"):
            yield directory.add_domain(domain)
        self.alice = yield directory.add_user("alice@example.test", ALICE_PW)
        self.bob = yield directory.add_user("bob@example.test", BOB_PW)
        yield directory.add_alias("sales@example.test", "alice@example.test")
        yield directory.add_alias("team@example.test", "alice@example.test")
        yield directory.add_alias("team@example.test", "bob@example.test")
        yield directory.add_alias("@other.test", "alice@example.test")
        for user in (self.alice, self.bob):
            yield self.mail.provision_user(user.id)
        self.key_dir = self.mktemp()
        self.signer = dkim_sign.DKIMSigner(self.key_dir, reactor, parse("").dkim.headers, ["from", "subject"])
        for selector, algorithm in (("rsa1", "rsa"), ("ed1", "ed25519")):
            _, record = dkim_sign.write_key(self.key_dir, "example.test", selector,
                                            dkim_sign.generate_key(algorithm))
            self.dns.txt(f"{selector}._domainkey.example.test", record)
        cert, key = tls.ensure_certificate(TLSConfig(), self.mktemp(), HOST)
        context = tls.server_context(cert, key)
        mda = MDA(self.mail, self.blobs)
        self.inflight = InFlight()
        self.throttle = AuthThrottle(reactor, self.max_failures, 600, 900, max_delay=0.2)
        realm = MailRealm({ISubmitter: submitter_factory(directory)})
        checker = DirectoryChecker(directory, self.throttle, reactor)
        self.rate = RateLimiter(reactor, self.per_hour)
        # The relay suite sends many refused commands on one connection.
        limits = SMTPConfig(max_recipients=20, max_errors=1000)

        def session():
            return SubmissionSession(directory=directory, mda=mda, signer=self.signer, hostname=HOST,
                                     clock=reactor, inflight=self.inflight, rate_limiter=self.rate,
                                     save_to_sent=self.save_to_sent)

        def portal_for(address):
            return Portal(realm, [checker.for_client(address)])

        starttls = SubmissionFactory(session, HOST, limits, portal_for, tls_context=context, clock=reactor)
        implicit = SubmissionFactory(session, HOST, limits, portal_for, implicit_tls=True, clock=reactor)
        pipeline = build_pipeline(parse('[checks]\nenabled = []\n'), self.resolver, reactor)
        mx = SMTPServerFactory(
            lambda: MXSession(directory=directory, mail=self.mail, mda=mda, pipeline=pipeline, hostname=HOST,
                              clock=reactor, inflight=self.inflight),
            HOST, limits, tls_context=context, clock=reactor,
        )
        ports = {
            "587": reactor.listenTCP(0, starttls, interface="127.0.0.1"),
            "465": reactor.listenSSL(0, implicit, context, interface="127.0.0.1"),
            "mx": reactor.listenTCP(0, mx, interface="127.0.0.1"),
        }
        for port in ports.values():
            self.addCleanup(port.stopListening)
        self.ports = {name: port.getHost().port for name, port in ports.items()}

    def connect(self, listener="587", tls=True):
        """(In a thread) an smtplib client after EHLO (and STARTTLS on 587)."""
        port = self.ports[listener]
        if listener == "465":
            client = smtplib.SMTP_SSL("127.0.0.1", port, timeout=10)
        else:
            client = smtplib.SMTP("127.0.0.1", port, timeout=10)
        client.ehlo("client.example")
        if tls and listener == "587":
            client.starttls()
            client.ehlo("client.example")
        return client

    def in_thread(self, function, *args, **kwargs):
        return deferToThread(function, *args, **kwargs)

    def submit(self, sender="alice@example.test", recipients=("bob@example.test",), message=MESSAGE,
               listener="587", user="alice@example.test", password=ALICE_PW):
        def run():
            with self.connect(listener) as client:
                client.login(user, password)
                return client.sendmail(sender, list(recipients), message)

        return self.in_thread(run)

    def inbox(self, user, name="INBOX"):
        return stored_raw(self.mail, self.blobs, user.id, name)

    @defer.inlineCallbacks
    def assertNothingDelivered(self):
        for user in (self.alice, self.bob):
            self.assertEqual((yield self.inbox(user)), [], user.address)


class SubmissionTests(SubmissionFixture, unittest.TestCase):
    @defer.inlineCallbacks
    def test_auth_only_after_starttls(self):
        def run():
            client = smtplib.SMTP("127.0.0.1", self.ports["587"], timeout=10)
            with client:
                client.ehlo("client.example")
                before = dict(client.esmtp_features)
                refused = client.docmd("AUTH", "PLAIN " + _plain("alice@example.test", ALICE_PW))
                mail = client.docmd("MAIL", "FROM:<alice@example.test>")
                client.starttls()
                client.ehlo("client.example")
                return before, refused, mail, dict(client.esmtp_features)

        before, refused, mail, after = yield self.in_thread(run)
        self.assertNotIn("auth", before)
        self.assertIn("starttls", before)
        self.assertEqual(refused, (530, b"5.7.0 Must issue a STARTTLS command first"))
        self.assertEqual(mail, (530, b"5.7.0 Authentication required"))
        self.assertEqual(after["auth"].split(), ["PLAIN", "LOGIN"])
        self.assertNotIn("starttls", after)

    @defer.inlineCallbacks
    def test_mail_without_auth_after_tls(self):
        def run():
            with self.connect("587") as client:
                return client.docmd("MAIL", "FROM:<alice@example.test>"), client.docmd("RCPT", "TO:<bob@example.test>")

        mail, rcpt = yield self.in_thread(run)
        self.assertEqual(mail, (530, b"5.7.0 Authentication required"))
        self.assertEqual(rcpt[0], 503)
        yield self.assertNothingDelivered()

    @defer.inlineCallbacks
    def test_plain_submission_is_delivered_signed_and_completed(self):
        refused = yield self.submit()
        self.assertEqual(refused, {})
        (raw,) = yield self.inbox(self.bob)
        parsed = email.message_from_bytes(raw)
        self.assertEqual(parsed["Return-Path"], "<alice@example.test>")
        self.assertIn("with ESMTPSA id", parsed["Received"])
        self.assertRegex(parsed["Message-ID"], r"^<[a-z0-9]+@mail\.example\.test>$")
        self.assertIsNotNone(email.utils.parsedate_to_datetime(parsed["Date"]))
        signatures = parsed.get_all("DKIM-Signature")
        self.assertEqual(len(signatures), 2)
        self.assertTrue(raw.endswith(MESSAGE))

    @defer.inlineCallbacks
    def test_no_sent_copy_by_default(self):
        yield self.submit()
        self.assertEqual(len((yield self.inbox(self.bob))), 1)
        self.assertEqual((yield self.inbox(self.alice, "Sent")), [])

    @defer.inlineCallbacks
    def test_existing_date_and_message_id_are_kept(self):
        message = b"Date: Mon, 1 Jan 2024 10:00:00 +0000\r\nMessage-ID: <mine@client.example>\r\n" + MESSAGE
        yield self.submit(message=message)
        (raw,) = yield self.inbox(self.bob)
        parsed = email.message_from_bytes(raw)
        self.assertEqual(parsed.get_all("Message-ID"), ["<mine@client.example>"])
        self.assertEqual(parsed.get_all("Date"), ["Mon, 1 Jan 2024 10:00:00 +0000"])

    @defer.inlineCallbacks
    def test_login_mechanism_with_and_without_initial_response(self):
        def run(initial):
            with self.connect("587") as client:
                client.user, client.password = "alice@example.test", ALICE_PW
                code, text = client.auth("LOGIN", client.auth_login, initial_response_ok=initial)
                client.sendmail("alice@example.test", ["bob@example.test"], MESSAGE)
                return code, text

        self.assertEqual((yield self.in_thread(run, False)), (235, b"2.7.0 Authentication successful"))
        self.assertEqual((yield self.in_thread(run, True)), (235, b"2.7.0 Authentication successful"))
        self.assertEqual(len((yield self.inbox(self.bob))), 2)

    @defer.inlineCallbacks
    def test_plain_with_challenge_abort_and_garbage(self):
        def run():
            with self.connect("587") as client:
                challenge = client.docmd("AUTH", "PLAIN")
                aborted = client.docmd("*")
                garbage = client.docmd("AUTH", "PLAIN !!notbase64!!")
                client.docmd("AUTH", "PLAIN")
                ok = client.docmd(_plain("alice@example.test", ALICE_PW))
                again = client.docmd("AUTH", "PLAIN " + _plain("alice@example.test", ALICE_PW))
                return challenge, aborted, garbage, ok, again

        challenge, aborted, garbage, ok, again = yield self.in_thread(run)
        self.assertEqual(challenge, (334, b""))
        self.assertEqual(aborted, (501, b"5.0.0 Authentication aborted"))
        self.assertEqual(garbage, (501, b"5.5.2 Cannot decode response"))
        self.assertEqual(ok, (235, b"2.7.0 Authentication successful"))
        self.assertEqual(again, (503, b"5.5.1 Already authenticated"))

    @defer.inlineCallbacks
    def test_failures_do_not_reveal_users_and_are_throttled(self):
        def attempt(user, password, authzid=""):
            with self.connect("587") as client:
                return client.docmd("AUTH", "PLAIN " + _plain(user, password, authzid))

        wrong = yield self.in_thread(attempt, "alice@example.test", "wrong")
        unknown = yield self.in_thread(attempt, "nobody@example.test", "wrong")
        proxy = yield self.in_thread(attempt, "bob@example.test", BOB_PW, authzid="alice@example.test")
        self.assertEqual(wrong, (535, b"5.7.8 Authentication credentials invalid"))
        self.assertEqual(unknown, wrong)
        self.assertEqual(proxy, wrong)
        # max_failures = 3 per address: the address is locked now, even
        # for a right password.
        yield self.in_thread(attempt, "alice@example.test", "wrong again")
        locked = yield self.in_thread(attempt, "alice@example.test", ALICE_PW)
        self.assertEqual(locked, wrong)

    @defer.inlineCallbacks
    def test_busy_password_checks_are_a_temporary_failure(self):
        self.patch(sql_directory, "verify_later", lambda hashed, password: defer.fail(passwords.Busy("busy")))

        def attempts():
            with self.connect("587") as client:
                # More than max_errors: the server's trouble is not the client's error.
                tries = [client.docmd("AUTH", "PLAIN " + _plain("alice@example.test", ALICE_PW))
                         for _ in range(SMTPConfig.max_errors + 1)]
                return tries, client.noop()

        tries, noop = yield self.in_thread(attempts)
        self.assertEqual(set(tries), {(454, b"4.7.0 Temporary authentication failure")})
        self.assertEqual(noop[0], 250)

    @defer.inlineCallbacks
    def test_implicit_tls_offers_auth_at_once(self):
        def features():
            with self.connect("465") as client:
                return dict(client.esmtp_features)

        found = yield self.in_thread(features)
        self.assertEqual(found["auth"].split(), ["PLAIN", "LOGIN"])
        self.assertNotIn("starttls", found)
        yield self.submit(listener="465", recipients=["team@example.test"])
        self.assertEqual(len((yield self.inbox(self.alice))), 1)
        self.assertEqual(len((yield self.inbox(self.bob))), 1)

    @defer.inlineCallbacks
    def test_sender_must_be_owned(self):
        def run(sender):
            with self.connect("587") as client:
                client.login("alice@example.test", ALICE_PW)
                return client.docmd("MAIL", f"FROM:<{sender}>")

        for sender in ("alice@example.test", "Alice@EXAMPLE.test", "sales@example.test", "team@example.test"):
            self.assertEqual((yield self.in_thread(run, sender)), (250, b"2.1.0 Sender OK"), sender)
        for sender in ("bob@example.test", "", "anything@other.test", "nobody@example.test", "alice@remote.example"):
            self.assertEqual((yield self.in_thread(run, sender)),
                             (553, b"5.7.1 Sender address not owned by the authenticated user"), sender)

    @defer.inlineCallbacks
    def test_from_header_must_be_owned(self):
        forged = MESSAGE.replace(b"From: Alice <alice@example.test>", b"From: Bob <bob@example.test>")
        failure = yield self.assertFailure(self.submit(message=forged), smtplib.SMTPDataError)
        self.assertEqual((failure.smtp_code, failure.smtp_error),
                         (553, b"5.7.1 From: address not owned by the authenticated user"))
        two = MESSAGE.replace(b"From: Alice <alice@example.test>",
                              b"From: alice@example.test, bob@example.test")
        failure = yield self.assertFailure(self.submit(message=two), smtplib.SMTPDataError)
        self.assertEqual(failure.smtp_code, 553)
        missing = b"To: bob@example.test\r\n\r\nno from\r\n"
        failure = yield self.assertFailure(self.submit(message=missing), smtplib.SMTPDataError)
        self.assertEqual(failure.smtp_code, 550)
        yield self.assertNothingDelivered()
        yield self.submit(sender="sales@example.test",
                          message=MESSAGE.replace(b"alice@example.test", b"sales@example.test"))
        self.assertEqual(len((yield self.inbox(self.bob))), 1)

    @defer.inlineCallbacks
    def test_remote_recipient_is_refused_temporarily(self):
        failure = yield self.assertFailure(self.submit(recipients=["carol@remote.example"]),
                                           smtplib.SMTPRecipientsRefused)
        self.assertEqual(failure.recipients["carol@remote.example"],
                         (451, b"4.3.0 Delivery to remote domains is not available yet, try again later"))
        refused = yield self.submit(recipients=["carol@remote.example", "bob@example.test"])
        self.assertEqual(list(refused), ["carol@remote.example"])
        self.assertEqual(len((yield self.inbox(self.bob))), 1)

    @defer.inlineCallbacks
    def test_dkim_signatures_verify(self):
        yield self.submit()
        (raw,) = yield self.inbox(self.bob)
        names = ["rsa1._domainkey.example.test", "ed1._domainkey.example.test"]
        records = {}
        for name in names:
            (records[name],) = yield dns.lookup_txt_bytes(self.resolver, name)

        def dnsfunc(name, timeout=5):
            return records.get(name.decode("ascii").rstrip("."))

        verifier = dkimpy.DKIM(raw)
        self.assertTrue(verifier.verify(idx=0, dnsfunc=dnsfunc))
        self.assertTrue(verifier.verify(idx=1, dnsfunc=dnsfunc))
        algorithms = sorted(tags.split("a=")[1].split(";")[0] for tags in
                            email.message_from_bytes(raw).get_all("DKIM-Signature"))
        self.assertEqual(algorithms, ["ed25519-sha256", "rsa-sha256"])
        self.assertTrue(all(self.dns.asked(name, "TXT") for name in names))
        # emailsvc's own inbound check agrees, and a changed body fails.
        check = DKIMCheck(self.resolver, reactor)
        results = yield defer.ensureDeferred(check.data(SessionState(peer_ip="127.0.0.1", message=raw)))
        self.assertEqual([r.result for r in results], ["pass", "pass"])
        tampered = raw.replace(b"Hi Bob.", b"Hi Bob!")
        results = yield defer.ensureDeferred(check.data(SessionState(peer_ip="127.0.0.1", message=tampered)))
        self.assertEqual([r.result for r in results], ["fail", "fail"])

    @defer.inlineCallbacks
    def test_alias_domain_without_key_is_not_signed(self):
        yield self.directory.add_user("carol@other.test", "carol-secret")
        message = MESSAGE.replace(b"alice@example.test", b"carol@other.test")
        yield self.submit(sender="carol@other.test", message=message, user="carol@other.test",
                          password="carol-secret")
        (raw,) = yield self.inbox(self.bob)
        self.assertNotIn(b"DKIM-Signature", raw)

    @defer.inlineCallbacks
    def test_swaks(self):
        swaks = shutil.which("swaks")
        self.assertIsNotNone(swaks, "swaks is not installed (scripts/test installs it)")
        result = yield deferToThread(subprocess.run, [
            swaks, "--server", f"127.0.0.1:{self.ports['587']}", "--tls", "--auth", "PLAIN",
            "--auth-user", "alice@example.test", "--auth-password", ALICE_PW,
            "--from", "alice@example.test", "--to", "bob@example.test", "--header", "Subject: via swaks",
        ], capture_output=True, timeout=30)
        self.assertEqual(result.returncode, 0, result.stdout.decode())
        (raw,) = yield self.inbox(self.bob)
        self.assertEqual(email.message_from_bytes(raw)["Subject"], "via swaks")
        self.assertIn(b"DKIM-Signature", raw)


class SaveToSentTests(SubmissionFixture, unittest.TestCase):
    save_to_sent = True

    @defer.inlineCallbacks
    def test_signed_copy_filed_as_seen(self):
        yield self.submit(sender="sales@example.test",
                          message=MESSAGE.replace(b"alice@example.test", b"sales@example.test"))
        (received,) = yield self.inbox(self.bob)
        ((record, _, copy),) = yield stored_messages(self.mail, self.blobs, self.alice.id, "Sent")
        self.assertEqual(set(record.flags), {"\\Seen"})
        self.assertEqual(len(email.message_from_bytes(copy).get_all("DKIM-Signature")), 2)
        # Bob's copy is the same message behind the Return-Path and Received fields.
        self.assertTrue(received.endswith(copy))
        self.assertEqual(email.message_from_bytes(received[:-len(copy)]).keys(), ["Return-Path", "Received"])
        self.assertEqual((yield self.inbox(self.alice)), [])

    @defer.inlineCallbacks
    def test_failure_to_file_does_not_fail_the_submission(self):
        from emailsvc.errors import StoreError

        self.patch(self.mail, "get_special_mailbox", lambda *args: defer.fail(StoreError("disk on fire")))
        self.assertEqual((yield self.submit()), {})
        self.assertEqual(len((yield self.inbox(self.bob))), 1)
        self.assertEqual(len(self.flushLoggedErrors(StoreError)), 1)

    @defer.inlineCallbacks
    def test_without_a_sent_mailbox(self):
        yield self.mail.delete_mailbox(self.alice.id, "Sent")
        self.assertEqual((yield self.submit()), {})
        self.assertEqual(len((yield self.inbox(self.bob))), 1)
        self.assertEqual((yield self.inbox(self.alice)), [])  # not filed elsewhere instead


class RateLimitTests(SubmissionFixture, unittest.TestCase):
    per_hour = 2

    @defer.inlineCallbacks
    def test_messages_per_hour(self):
        yield self.submit()
        yield self.submit(listener="465")
        failure = yield self.assertFailure(self.submit(), smtplib.SMTPSenderRefused)
        self.assertEqual((failure.smtp_code, failure.smtp_error),
                         (450, b"4.7.0 Sending rate limit reached, try again later"))
        self.assertEqual(len((yield self.inbox(self.bob))), 2)


def _plain(user, password, authzid=""):
    import base64

    return base64.b64encode(f"{authzid}\0{user}\0{password}".encode()).decode("ascii")
