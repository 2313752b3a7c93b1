"""The Twisted IMAP interfaces over the store: Account, MailboxView, Message; the factory."""
from types import SimpleNamespace

from twisted.internet import defer, reactor
from twisted.mail import imap4
from twisted.trial import unittest
from zope.interface.verify import verifyObject

from emailsvc.config import Config, ListenerConfig, SMTPConfig
from emailsvc.cred.throttle import AuthThrottle
from emailsvc.errors import InvalidName, NotFound
from emailsvc.imap.account import Account, MailboxInfo, pattern_regex
from emailsvc.imap.factory import DEFAULT_MAX_MESSAGE_SIZE, IMAPFactory, build_factory
from emailsvc.imap.message import Message
from emailsvc.imap.wire import Bad
from emailsvc.spool import Spool
from emailsvc.store.model import User
from tests.store.test_sqlite import open_embedded

RAW = b"Subject: one\r\nX-Id: 1\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\npart one\r\n--b--\r\n"


class AdapterTests(unittest.TestCase):
    @defer.inlineCallbacks
    def setUp(self):
        self.metadata, self.blobs = yield open_embedded(self)
        self.mail = self.metadata.mail
        yield self.mail.provision_user(1)
        self.account = Account(User(1, "a@example.test"), self.mail, self.blobs, 1000)

    @defer.inlineCallbacks
    def view(self, name="INBOX", rw=True):
        view = yield self.account.select(name, rw)
        self.addCleanup(view.close)
        return view

    @defer.inlineCallbacks
    def test_interfaces(self):
        view = yield self.view()
        yield view.addMessage(RAW, ["\\Seen"])
        yield view.refresh()
        ((_, message),) = yield view.fetch([(1, 1)], False)
        for interface, obj in [(imap4.IAccount, self.account), (imap4.INamespacePresenter, self.account),
                               (imap4.IMailbox, view), (imap4.ISearchableMailbox, view),
                               (imap4.IMessageCopier, view), (imap4.ICloseableMailbox, view),
                               (imap4.IMessage, message)]:
            self.assertTrue(verifyObject(interface, obj), interface)
        box = yield self.mail.get_mailbox(1, "INBOX")
        self.assertTrue(verifyObject(imap4.IMailboxInfo, MailboxInfo(box, False)))

    @defer.inlineCallbacks
    def test_account_listing_and_life_cycle(self):
        yield self.account.create("Work/2024/")
        yield self.account.create("Inbox/Sub")
        names = lambda infos: [info.name for info in infos]  # noqa: E731
        self.assertEqual(names((yield self.account.mailboxes(["%"]))),
                         ["Archive", "Drafts", "INBOX", "Junk", "Sent", "Trash", "Work"])
        self.assertEqual(names((yield self.account.mailboxes(["Work/*"]))), ["Work/2024"])
        self.assertEqual(names((yield self.account.mailboxes(["inbox/%"]))), ["INBOX/Sub"])
        self.assertEqual(names((yield self.account.mailboxes(["W%"]))), ["Work"])
        listed = yield self.account.listMailboxes("", "Work")
        self.assertEqual(listed[0][1].getFlags(), ["\\HasChildren"])
        self.assertTrue((yield self.account.delete("Work")))
        listed = yield self.account.listMailboxes("", "Work")
        self.assertEqual(listed[0][1].getFlags(), ["\\Noselect", "\\HasChildren"])
        yield self.assertFailure(self.account.delete("Work"), InvalidName)
        yield self.assertFailure(self.account.delete("Nope"), NotFound)
        yield self.account.delete("Work/2024")
        self.assertEqual((yield self.account.listMailboxes("", "Work*")), [])
        self.assertTrue((yield self.account.isSubscribed("INBOX")))
        yield self.account.unsubscribe("INBOX")
        self.assertFalse((yield self.account.isSubscribed("INBOX")))
        self.assertIsNone((yield self.account.select("Nope")))
        self.assertEqual(self.account.getPersonalNamespaces(), [["", "/"]])
        self.assertTrue(pattern_regex("a%").fullmatch("ab") and not pattern_regex("a%").fullmatch("a/b"))

    @defer.inlineCallbacks
    def test_view_follows_the_store(self):
        view = yield self.view()
        changes = []
        view.on_change = lambda: changes.append(1)
        for flags in ([], ["\\Deleted"], []):
            yield view.addMessage(RAW, flags)
        self.assertTrue(view.dirty)
        self.assertEqual(len(changes), 3)
        update = yield view.refresh()
        self.assertEqual((update.new, view.exists, view.dirty), ([1, 2, 3], 3, False))
        yield self.mail.store_flags(view.id, [1], ["\\Flagged"], "add")
        yield self.mail.expunge(view.id)
        update = yield view.refresh()
        self.assertEqual((update.flags, update.expunged, view.exists), ([1], [2], 3))
        self.assertEqual(view.resolve([(2, None)], False), [(2, 2), (3, 3)])
        self.assertEqual(view.take_expunged(), [(2, 2)])
        self.assertEqual(list(view.uids), [1, 3])
        self.assertEqual(view.resolve([(2, 3)], True), [(2, 3)])
        self.assertEqual(view.resolve([(5, None)], True), [(2, 3)])
        self.assertRaises(Bad, view.resolve, [(3, 3)], False)
        self.assertEqual(view.uid_ranges([(1, None)], False), ((1, 3),))
        self.assertEqual(view.requestStatus(["MESSAGES", "UNSEEN"]), {"MESSAGES": 2, "UNSEEN": 2})
        changed = yield view.store([(1, 1)], ["\\Seen"], 1, False)
        self.assertEqual(changed, {1: frozenset({"\\Flagged", "\\Seen"})})
        self.assertEqual((yield view.search(("flag", "\\Seen", True), False)), [1])
        self.assertEqual((yield view.search(("all",), True)), [1, 3])
        yield view.close()
        view.dirty = False
        yield self.mail.store_flags(view.id, [3], ["\\Seen"], "add")
        self.assertFalse(view.dirty)

    @defer.inlineCallbacks
    def test_messages_and_copy(self):
        view = yield self.view()
        yield view.addMessage(RAW, ["$Label"], None)
        yield view.refresh()
        ((seq, message),) = yield view.fetch([(1, None)], False)
        found = yield self.mail.get_parsed([message.record.content_id], ["body"])
        key, fields = found[message.record.content_id]
        loaded = yield Message(message.record, self.blobs, key, fields).load()
        self.assertEqual(loaded.getHeaders(False, "subject"), {"subject": "one"})
        self.assertEqual(set(loaded.getHeaders(True, "subject")), {"x-id", "content-type"})
        self.assertTrue(loaded.isMultipart())
        self.assertEqual(loaded.getSubPart(0).getBodyFile().read(), b"part one")
        self.assertEqual(loaded.getSubPart(0).getSize(), 8)
        self.assertEqual(loaded.getFlags(), ["$Label"])
        self.assertRegex(loaded.getInternalDate(), r"^\d\d-\w{3}-\d{4} \d\d:\d\d:\d\d \+0000$")
        self.assertRaises(IndexError, loaded.getSubPart, 5)
        archive = yield self.view("Archive")
        new_uid = yield archive.copy(message)
        self.assertEqual(new_uid, 1)


class FactoryTests(unittest.SynchronousTestCase):
    def context(self, config=None):
        store = SimpleNamespace(metadata=SimpleNamespace(directory=object(), mail=object()), blobs=object())
        return SimpleNamespace(config=config or Config(smtp=SMTPConfig(max_message_size=12345)), reactor=reactor,
                               store=store, tls_context="tls", throttle=AuthThrottle(reactor, 3, 60, 60),
                               spool=Spool(77))

    def test_build_factory(self):
        starttls = build_factory(self.context(), ListenerConfig(protocol="smtp", tls="starttls"))
        self.assertIsInstance(starttls, IMAPFactory)
        self.assertEqual((starttls.tls_context, starttls.implicit_tls, starttls.max_message_size), ("tls", False, 12345))
        self.assertEqual(starttls.spool.threshold, 77)
        implicit = build_factory(self.context(), ListenerConfig(tls="implicit"))
        self.assertEqual((implicit.tls_context, implicit.implicit_tls), (None, True))
        plain = build_factory(self.context(SimpleNamespace()), ListenerConfig(tls="none"))
        self.assertEqual((plain.tls_context, plain.implicit_tls, plain.max_message_size),
                         (None, False, DEFAULT_MAX_MESSAGE_SIZE))
        portal = plain.portal_for("192.0.2.1")
        self.assertEqual(len(portal.checkers), 1)

    def test_connection_limits(self):
        factory = IMAPFactory(None, reactor, max_connections=3, max_connections_per_ip=2)
        a, b, c = (SimpleNamespace(peer_host=host) for host in ("192.0.2.1", "192.0.2.1", "192.0.2.2"))
        self.assertTrue(factory.connection_opened(a))
        self.assertTrue(factory.connection_opened(b))
        self.assertFalse(factory.connection_opened(SimpleNamespace(peer_host="192.0.2.1")))
        self.assertTrue(factory.connection_opened(c))
        self.assertFalse(factory.connection_opened(SimpleNamespace(peer_host="192.0.2.9")))
        factory.connection_closed(a)
        self.assertEqual(factory.connections_per_ip, {"192.0.2.1": 1, "192.0.2.2": 1})
