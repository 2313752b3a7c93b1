"""The store conformance suite: every metadata and blob backend runs it.

A backend's test case mixes `StoreConformance` into a trial TestCase and
implements `make_store()`, returning a started (metadata backend, blob
store) pair on fresh, empty storage.
"""
from twisted.internet import defer
from zope.interface.verify import verifyObject

from emailsvc.errors import AlreadyExists, BlobNotFound, InvalidName, NotEmpty, NotFound
from emailsvc.interfaces import IBlobStore, IDirectory, IMailStore, IMetadataBackend
from emailsvc.store.model import Content

USER = 7
OTHER_USER = 8


class StoreConformance:
    """Tests of IDirectory, IMailStore and IBlobStore through their interfaces."""

    def make_store(self):
        raise NotImplementedError

    @defer.inlineCallbacks
    def setUp(self):
        self.metadata, self.blobs = yield self.make_store()
        self.directory = self.metadata.directory
        self.mail = self.metadata.mail

    @defer.inlineCallbacks
    def message(self, text=b"Subject: hi\r\n\r\nbody\r\n"):
        key = yield self.blobs.put(text)
        return Content(blob_key=key, size=len(text), parsed={"subject": "hi"})

    @defer.inlineCallbacks
    def mailbox(self, name, user=USER):
        box = yield self.mail.get_mailbox(user, name)
        if box is None:
            box = yield self.mail.create_mailbox(user, name)
        return box

    @defer.inlineCallbacks
    def append(self, box, flags=(), count=1):
        records = []
        for _ in range(count):
            content = yield self.message()
            records.extend((yield self.mail.deliver([(box.id, flags)], content)))
        return records

    def test_interfaces(self):
        self.assertTrue(verifyObject(IMetadataBackend, self.metadata))
        self.assertTrue(verifyObject(IDirectory, self.directory))
        self.assertTrue(verifyObject(IMailStore, self.mail))
        self.assertTrue(verifyObject(IBlobStore, self.blobs))

    # Directory

    @defer.inlineCallbacks
    def test_domains(self):
        name = yield self.directory.add_domain("Example.TEST")
        self.assertEqual(name, "example.test")
        yield self.directory.add_domain("bücher.example")
        yield self.assertFailure(self.directory.add_domain("example.test"), AlreadyExists)
        self.assertEqual((yield self.directory.list_domains()), ["bücher.example", "example.test"])
        yield self.directory.remove_domain("xn--bcher-kva.example")
        self.assertEqual((yield self.directory.list_domains()), ["example.test"])
        yield self.assertFailure(self.directory.remove_domain("nope.test"), NotFound)

    @defer.inlineCallbacks
    def test_users(self):
        yield self.directory.add_domain("example.test")
        user = yield self.directory.add_user("Alice@Example.test", "secret one")
        self.assertEqual(user.address, "alice@example.test")
        yield self.assertFailure(self.directory.add_user("alice@example.test", "x"), AlreadyExists)
        yield self.assertFailure(self.directory.add_user("bob@unknown.test", "x"), NotFound)
        yield self.assertFailure(self.directory.add_user("not an address", "x"), InvalidName)
        self.assertEqual((yield self.directory.authenticate("ALICE@example.test", "secret one")), user)
        self.assertIsNone((yield self.directory.authenticate("alice@example.test", "wrong")))
        self.assertIsNone((yield self.directory.authenticate("nobody@example.test", "secret one")))
        yield self.directory.set_password("alice@example.test", "secret two")
        self.assertIsNone((yield self.directory.authenticate("alice@example.test", "secret one")))
        self.assertEqual((yield self.directory.authenticate("alice@example.test", "secret two")), user)
        yield self.directory.set_quota("alice@example.test", 1000)
        self.assertEqual((yield self.directory.get_user("alice@example.test")).quota, 1000)
        self.assertEqual((yield self.directory.get_user_by_id(user.id)).address, user.address)
        yield self.assertFailure(self.directory.remove_domain("example.test"), NotEmpty)
        removed = yield self.directory.remove_user("alice@example.test")
        self.assertEqual(removed.id, user.id)
        self.assertEqual((yield self.directory.list_users()), [])
        self.assertIsNone((yield self.directory.get_user("alice@example.test")))

    @defer.inlineCallbacks
    def test_aliases_and_catch_all(self):
        yield self.directory.add_domain("example.test")
        alice = yield self.directory.add_user("alice@example.test", "pw")
        bob = yield self.directory.add_user("bob@example.test", "pw")
        yield self.directory.add_alias("team@example.test", "alice@example.test")
        yield self.directory.add_alias("team@example.test", "bob@example.test")
        yield self.directory.add_alias("list@example.test", "team@example.test")
        yield self.assertFailure(self.directory.add_alias("alice@example.test", "bob@example.test"), AlreadyExists)
        team = yield self.directory.resolve("Team@example.test")
        self.assertEqual({u.id for u in team.users}, {alice.id, bob.id})
        nested = yield self.directory.resolve("list@example.test")
        self.assertEqual({u.id for u in nested.users}, {alice.id, bob.id})
        unknown = yield self.directory.resolve("carol@example.test")
        self.assertEqual((unknown.users, unknown.local_domain), ((), True))
        foreign = yield self.directory.resolve("carol@elsewhere.test")
        self.assertFalse(foreign.local_domain)
        yield self.directory.add_alias("@example.test", "bob@example.test")
        caught = yield self.directory.resolve("carol@example.test")
        self.assertEqual([u.id for u in caught.users], [bob.id])
        direct = yield self.directory.resolve("alice@example.test")
        self.assertEqual([u.id for u in direct.users], [alice.id])
        aliases = yield self.directory.list_aliases("example.test")
        self.assertEqual(len(aliases), 4)
        yield self.directory.remove_alias("team@example.test", "bob@example.test")
        team = yield self.directory.resolve("team@example.test")
        self.assertEqual([u.id for u in team.users], [alice.id])
        yield self.directory.remove_alias("@example.test")
        yield self.assertFailure(self.directory.remove_alias("@example.test"), NotFound)

    @defer.inlineCallbacks
    def test_alias_loop_terminates(self):
        yield self.directory.add_domain("example.test")
        yield self.directory.add_alias("a@example.test", "b@example.test")
        yield self.directory.add_alias("b@example.test", "a@example.test")
        resolution = yield self.directory.resolve("a@example.test")
        self.assertEqual(resolution.users, ())

    # Mailboxes

    @defer.inlineCallbacks
    def test_provision_creates_special_use(self):
        yield self.mail.provision_user(USER)
        yield self.mail.provision_user(USER)
        boxes = yield self.mail.list_mailboxes(USER)
        self.assertEqual(
            {(b.name, b.special_use) for b in boxes},
            {("INBOX", None), ("Sent", "\\Sent"), ("Drafts", "\\Drafts"), ("Junk", "\\Junk"),
             ("Trash", "\\Trash"), ("Archive", "\\Archive")},
        )
        junk = yield self.mail.get_special_mailbox(USER, "\\Junk")
        self.assertEqual(junk.name, "Junk")
        self.assertEqual((yield self.mail.delivery_mailbox(USER, "\\Junk")), junk.id)
        inbox = yield self.mail.get_mailbox(USER, "INBOX")
        self.assertEqual((yield self.mail.delivery_mailbox(USER)), inbox.id)
        self.assertEqual((yield self.mail.delivery_mailbox(USER, "\\All")), inbox.id)
        self.assertIsNone((yield self.mail.delivery_mailbox(OTHER_USER)))
        self.assertEqual((yield self.mail.list_mailboxes(OTHER_USER)), [])

    @defer.inlineCallbacks
    def test_create_with_parents_and_uidvalidity(self):
        box = yield self.mail.create_mailbox(USER, "a/b/c")
        names = [b.name for b in (yield self.mail.list_mailboxes(USER))]
        self.assertEqual(names, ["a", "a/b", "a/b/c"])
        self.assertEqual((box.uidnext, box.messages), (1, 0))
        yield self.assertFailure(self.mail.create_mailbox(USER, "a/b"), AlreadyExists)
        self.assertIsNone((yield self.mail.get_mailbox(OTHER_USER, "a")))
        yield self.mail.delete_mailbox(USER, "a/b/c")
        again = yield self.mail.create_mailbox(USER, "a/b/c")
        self.assertGreater(again.uidvalidity, box.uidvalidity)

    @defer.inlineCallbacks
    def test_invalid_names(self):
        for name in ["", "a//b", "/a", "a/", "a*", "a%", "x\x00", " a", "a" * 600]:
            yield self.assertFailure(self.mail.create_mailbox(USER, name), InvalidName)

    @defer.inlineCallbacks
    def test_inbox_is_case_insensitive(self):
        yield self.mail.provision_user(USER)
        box = yield self.mail.get_mailbox(USER, "inbox")
        self.assertEqual(box.name, "INBOX")
        yield self.assertFailure(self.mail.create_mailbox(USER, "Inbox"), AlreadyExists)
        yield self.assertFailure(self.mail.delete_mailbox(USER, "InBox"), InvalidName)

    @defer.inlineCallbacks
    def test_rename_with_children(self):
        yield self.mail.create_mailbox(USER, "work/2025/q1")
        yield self.mail.create_mailbox(USER, "workshop")
        work = yield self.mail.get_mailbox(USER, "work")
        yield self.append(work)
        renamed = yield self.mail.rename_mailbox(USER, "work", "archive/old")
        self.assertEqual((renamed.id, renamed.uidvalidity, renamed.messages), (work.id, work.uidvalidity, 1))
        names = [b.name for b in (yield self.mail.list_mailboxes(USER))]
        self.assertEqual(names, ["archive", "archive/old", "archive/old/2025", "archive/old/2025/q1", "workshop"])
        yield self.assertFailure(self.mail.rename_mailbox(USER, "nope", "x"), NotFound)
        yield self.assertFailure(self.mail.rename_mailbox(USER, "workshop", "archive"), AlreadyExists)
        yield self.assertFailure(self.mail.rename_mailbox(USER, "archive", "archive/inside"), InvalidName)

    @defer.inlineCallbacks
    def test_rename_inbox_moves_messages(self):
        yield self.mail.provision_user(USER)
        inbox = yield self.mail.get_mailbox(USER, "INBOX")
        yield self.append(inbox, count=3)
        old = yield self.mail.rename_mailbox(USER, "INBOX", "Old mail")
        self.assertEqual(old.messages, 3)
        inbox = yield self.mail.get_mailbox(USER, "INBOX")
        self.assertEqual((inbox.messages, inbox.uidnext), (0, 4))

    @defer.inlineCallbacks
    def test_delete_keeps_children(self):
        yield self.mail.create_mailbox(USER, "p/c1")
        yield self.mail.create_mailbox(USER, "p/c2/g")
        yield self.mail.create_mailbox(USER, "pp")
        doomed = yield self.mail.get_mailbox(USER, "p")
        (record,) = yield self.append(doomed)
        yield self.append((yield self.mail.get_mailbox(USER, "p/c1")))
        yield self.mail.delete_mailbox(USER, "p")
        self.assertEqual([b.name for b in (yield self.mail.list_mailboxes(USER))], ["p/c1", "p/c2", "p/c2/g", "pp"])
        self.assertEqual((yield self.mail.get_mailbox(USER, "p/c1")).messages, 1)
        self.assertEqual((yield self.mail.list_messages(doomed.id)), [])
        yield self.assertFailure(self.mail.delete_mailbox(USER, "p"), NotFound)
        again = yield self.mail.create_mailbox(USER, "p")
        self.assertEqual(again.messages, 0)
        self.assertGreater(again.uidvalidity, doomed.uidvalidity)

    @defer.inlineCallbacks
    def test_subscriptions(self):
        yield self.mail.create_mailbox(USER, "news")
        yield self.mail.set_subscribed(USER, "news", False)
        self.assertFalse((yield self.mail.get_mailbox(USER, "news")).subscribed)
        yield self.assertFailure(self.mail.set_subscribed(USER, "none", True), NotFound)

    # Messages

    @defer.inlineCallbacks
    def test_append_allocates_uid_and_modseq(self):
        box = yield self.mailbox("INBOX")
        first, second = yield self.append(box, flags=["\\Seen", "$Label"], count=2)
        self.assertEqual((first.uid, second.uid), (1, 2))
        self.assertGreater(second.modseq, first.modseq)
        self.assertEqual(first.flags, frozenset({"\\Seen", "$Label"}))
        box = yield self.mail.get_mailbox(USER, "INBOX")
        self.assertEqual((box.uidnext, box.messages, box.unseen), (3, 2, 0))
        self.assertEqual(box.highestmodseq, second.modseq)
        content = yield self.mail.get_content(first.content_id)
        self.assertEqual(content.parsed, {"subject": "hi"})
        self.assertEqual((yield self.blobs.get(content.blob_key)), b"Subject: hi\r\n\r\nbody\r\n")
        self.assertEqual((yield self.blobs.get(content.blob_key, 9, 2)), b"hi")

    @defer.inlineCallbacks
    def test_uids_never_reused(self):
        box = yield self.mailbox("INBOX")
        records = yield self.append(box, flags=["\\Deleted"], count=3)
        yield self.mail.expunge(box.id)
        (fresh,) = yield self.append(box)
        self.assertEqual(fresh.uid, records[-1].uid + 1)

    @defer.inlineCallbacks
    def test_usage(self):
        box = yield self.mailbox("INBOX")
        other = yield self.mailbox("Archive")
        self.assertEqual((yield self.mail.usage(USER)), 0)
        yield self.append(box, count=2)
        yield self.append(other)
        self.assertEqual((yield self.mail.usage(USER)), 3 * len(b"Subject: hi\r\n\r\nbody\r\n"))
        self.assertEqual((yield self.mail.usage(OTHER_USER)), 0)

    @defer.inlineCallbacks
    def test_deliver_shares_one_content(self):
        a = yield self.mailbox("INBOX")
        b = yield self.mailbox("INBOX", OTHER_USER)
        content = yield self.message()
        records = yield self.mail.deliver([(a.id, ()), (b.id, ["\\Flagged"])], content)
        self.assertEqual([r.uid for r in records], [1, 1])
        self.assertEqual(records[0].content_id, records[1].content_id)
        self.assertEqual(records[1].flags, frozenset({"\\Flagged"}))

    @defer.inlineCallbacks
    def test_failed_delivery_is_atomic(self):
        box = yield self.mailbox("INBOX")
        content = yield self.message()
        yield self.assertFailure(self.mail.deliver([(box.id, ()), (999999, ())], content), NotFound)
        self.assertEqual((yield self.mail.list_messages(box.id)), [])
        self.assertEqual((yield self.mail.get_mailbox(USER, "INBOX")).uidnext, 1)

    @defer.inlineCallbacks
    def test_bytes_delivered_with_the_rows(self):
        box = yield self.mailbox("INBOX")
        raw = b"Subject: \xc3\xa9t\xc3\xa9\r\n\r\nbinary \x00\xff body\r\n"
        (record,) = yield self.mail.deliver([(box.id, ())], Content("inline-1", len(raw)), data=raw)
        self.assertEqual((yield self.mail.read_inline("inline-1")), raw)
        self.assertEqual((yield self.mail.read_inline("inline-1", 9, 2)), b"\xc3\xa9")
        self.assertEqual((yield self.mail.read_inline("inline-1", 20)), raw[20:])
        self.assertEqual((yield self.mail.read_inline("inline-1", len(raw) + 5, 3)), b"")
        yield self.assertFailure(self.mail.read_inline("inline-2"), BlobNotFound)
        (empty,) = yield self.mail.deliver([(box.id, ())], Content("inline-3", 0), data=b"")
        self.assertEqual((yield self.mail.read_inline("inline-3")), b"")
        self.assertEqual((yield self.mail.read_inline("inline-3", 0, 5)), b"")
        # The bytes go with their content once no message uses it.
        yield self.mail.store_flags(box.id, [record.uid, empty.uid], ["\\Deleted"], "add")
        yield self.mail.expunge(box.id)
        self.assertEqual((yield self.mail.collect_garbage(self.blobs, grace=-60)), 2)
        yield self.assertFailure(self.mail.read_inline("inline-1"), BlobNotFound)

    @defer.inlineCallbacks
    def test_failed_delivery_keeps_no_bytes(self):
        box = yield self.mailbox("INBOX")
        delivery = self.mail.deliver([(box.id, ()), (999999, ())], Content("inline-1", 3), data=b"abc")
        yield self.assertFailure(delivery, NotFound)
        yield self.assertFailure(self.mail.read_inline("inline-1"), BlobNotFound)

    @defer.inlineCallbacks
    def test_flags(self):
        box = yield self.mailbox("INBOX")
        records = yield self.append(box, count=3)
        changed, refused = yield self.mail.store_flags(box.id, [1, 2], ["\\Seen", "Work"], "add")
        self.assertEqual(([r.uid for r in changed], refused), ([1, 2], []))
        self.assertEqual(changed[0].flags, frozenset({"\\Seen", "Work"}))
        changed, _ = yield self.mail.store_flags(box.id, [1, 2], ["\\SEEN", "work"], "add")
        self.assertEqual(changed, [])
        changed, _ = yield self.mail.store_flags(box.id, [1], ["work"], "remove")
        self.assertEqual(changed[0].flags, frozenset({"\\Seen"}))
        changed, _ = yield self.mail.store_flags(box.id, [3], ["\\Flagged"], "replace")
        self.assertEqual(changed[0].flags, frozenset({"\\Flagged"}))
        changed, refused = yield self.mail.store_flags(box.id, [2, 3], ["\\Draft"], "add", unchanged_since=records[1].modseq)
        self.assertEqual((changed, refused), ([], [2, 3]))
        yield self.assertFailure(self.mail.store_flags(box.id, [1], ["\\Bogus"], "add"), InvalidName)
        yield self.assertFailure(self.mail.store_flags(box.id, [1], ["bad flag"], "add"), InvalidName)
        listed = yield self.mail.list_messages(box.id, [1, 3, 77])
        self.assertEqual([(r.uid, r.flags) for r in listed], [(1, frozenset({"\\Seen"})), (3, frozenset({"\\Flagged"}))])

    @defer.inlineCallbacks
    def test_copy_and_move(self):
        source = yield self.mailbox("INBOX")
        target = yield self.mailbox("Archive")
        yield self.append(source, flags=["\\Seen"], count=3)
        mapping = yield self.mail.copy(source.id, [1, 3, 42], target.id)
        self.assertEqual(mapping, {1: 1, 3: 2})
        copied = yield self.mail.list_messages(target.id)
        self.assertEqual([r.flags for r in copied], [frozenset({"\\Seen"})] * 2)
        before = (yield self.mail.get_mailbox(USER, "INBOX")).highestmodseq
        mapping = yield self.mail.move(source.id, [2], target.id)
        self.assertEqual(mapping, {2: 3})
        self.assertEqual([r.uid for r in (yield self.mail.list_messages(source.id))], [1, 3])
        self.assertEqual((yield self.mail.expunged_since(source.id, before)), [2])

    @defer.inlineCallbacks
    def test_expunge(self):
        box = yield self.mailbox("INBOX")
        yield self.append(box, count=4)
        yield self.mail.store_flags(box.id, [1, 2, 4], ["\\Deleted"], "add")
        before = (yield self.mail.get_mailbox(USER, "INBOX")).highestmodseq
        self.assertEqual((yield self.mail.expunge(box.id, [2, 3, 4])), [2, 4])
        self.assertEqual((yield self.mail.expunge(box.id)), [1])
        self.assertEqual([r.uid for r in (yield self.mail.list_messages(box.id))], [3])
        self.assertEqual((yield self.mail.expunged_since(box.id, before)), [1, 2, 4])
        self.assertEqual((yield self.mail.expunged_since(box.id, 10 ** 9)), [])

    @defer.inlineCallbacks
    def counts(self, name):
        """(messages, unseen, size) of a mailbox, the same from every read that tells them."""
        box = yield self.mail.get_mailbox(USER, name)
        listed = [b for b in (yield self.mail.list_mailboxes(USER)) if b.name == name]
        changed, _, _ = yield self.mail.mailbox_changes(box.id)
        indexed, _, _, _ = yield self.mail.mailbox_index(box.id)
        self.assertEqual(listed, [box])
        self.assertEqual(changed, box)
        self.assertEqual(indexed, box)
        return box.messages, box.unseen, box.size

    @defer.inlineCallbacks
    def test_counts_follow_every_change(self):
        size = len(b"Subject: hi\r\n\r\nbody\r\n")
        inbox = yield self.mailbox("INBOX")
        other = yield self.mailbox("Archive")
        yield self.append(inbox, count=3)
        yield self.append(inbox, flags=["\\Seen"])
        yield self.mail.deliver([(inbox.id, ()), (other.id, ["\\Seen"])], (yield self.message()))
        self.assertEqual((yield self.counts("INBOX")), (5, 4, 5 * size))
        self.assertEqual((yield self.counts("Archive")), (1, 0, size))
        yield self.mail.store_flags(inbox.id, [1, 2], ["\\Seen"], "add")
        self.assertEqual((yield self.counts("INBOX")), (5, 2, 5 * size))
        yield self.mail.store_flags(inbox.id, [4], ["\\Seen"], "remove")
        yield self.mail.store_flags(inbox.id, [1], ["\\Flagged"], "replace")
        yield self.mail.store_flags(inbox.id, [2], ["$Work"], "add")
        self.assertEqual((yield self.counts("INBOX")), (5, 4, 5 * size))   # unseen: 1, 3, 4, 5
        yield self.mail.copy(inbox.id, [1, 2], other.id)
        self.assertEqual((yield self.counts("INBOX")), (5, 4, 5 * size))
        self.assertEqual((yield self.counts("Archive")), (3, 1, 3 * size))
        yield self.mail.move(inbox.id, [3], other.id)
        self.assertEqual((yield self.counts("INBOX")), (4, 3, 4 * size))
        self.assertEqual((yield self.counts("Archive")), (4, 2, 4 * size))
        yield self.mail.store_flags(inbox.id, [4, 5], ["\\Deleted"], "add")
        yield self.mail.expunge(inbox.id)
        self.assertEqual((yield self.counts("INBOX")), (2, 1, 2 * size))
        yield self.mail.delete_mailbox(USER, "Archive")
        self.assertEqual((yield self.mail.usage(USER)), 2 * size)
        yield self.mail.rename_mailbox(USER, "INBOX", "Old")
        self.assertEqual((yield self.counts("Old")), (2, 1, 2 * size))
        self.assertEqual((yield self.counts("INBOX")), (0, 0, 0))
        archive = yield self.mail.create_mailbox(USER, "Archive")
        self.assertEqual((archive.messages, archive.unseen, archive.size), (0, 0, 0))

    # Garbage

    @defer.inlineCallbacks
    def test_garbage_collection(self):
        box = yield self.mailbox("INBOX")
        kept, dropped = yield self.append(box, count=2)
        kept_key = (yield self.mail.get_content(kept.content_id)).blob_key
        dropped_key = (yield self.mail.get_content(dropped.content_id)).blob_key
        orphan = yield self.blobs.put(b"written, then the process died before the SQL commit")
        yield self.mail.store_flags(box.id, [dropped.uid], ["\\Deleted"], "add")
        yield self.mail.expunge(box.id)
        removed = yield self.mail.collect_garbage(self.blobs, grace=-60)
        self.assertEqual(removed, 2)
        self.assertEqual((yield self.blobs.get(kept_key)), b"Subject: hi\r\n\r\nbody\r\n")
        for key in (orphan, dropped_key):
            yield self.assertFailure(self.blobs.get(key), BlobNotFound)
        self.assertEqual((yield self.mail.collect_garbage(self.blobs, grace=3600)), 0)

    @defer.inlineCallbacks
    def test_grace_protects_fresh_blobs(self):
        fresh = yield self.blobs.put(b"a delivery in progress")
        self.assertEqual((yield self.mail.collect_garbage(self.blobs, grace=3600)), 0)
        self.assertEqual((yield self.blobs.get(fresh)), b"a delivery in progress")

    # Change notifications, snapshots, search, feedback

    @defer.inlineCallbacks
    def parsed_message(self, raw, box, flags=(), internal_date=None):
        from emailsvc.store.parse import parse_message

        key = yield self.blobs.put(raw)
        content = Content(blob_key=key, size=len(raw), parsed=parse_message(raw))
        (record,) = yield self.mail.deliver([(box.id, flags)], content, internal_date)
        return record

    @defer.inlineCallbacks
    def test_notifier_publishes_after_commit(self):
        inbox = yield self.mailbox("INBOX")
        other = yield self.mailbox("Other")
        seen = []
        subscription = self.mail.notifier.subscribe(inbox.id, seen.append)
        self.mail.notifier.subscribe(other.id, lambda i: seen.append(-i))
        yield self.append(inbox, count=2)
        self.assertEqual(seen, [inbox.id, inbox.id])
        yield self.mail.store_flags(inbox.id, [1], ["\\Deleted"], "add")
        yield self.mail.expunge(inbox.id)
        yield self.mail.move(inbox.id, [2], other.id)
        self.assertEqual(seen, [inbox.id] * 5 + [-other.id])
        subscription.cancel()
        subscription.cancel()
        yield self.append(inbox)
        self.assertEqual(len(seen), 6)
        yield self.mail.delete_mailbox(USER, "Other")
        self.assertEqual(seen[-1], -other.id)
        self.assertEqual(self.mail.notifier.subscribers(inbox.id), 0)

    @defer.inlineCallbacks
    def test_failed_write_publishes_nothing(self):
        box = yield self.mailbox("INBOX")
        seen = []
        self.mail.notifier.subscribe(box.id, seen.append)
        content = yield self.message()
        yield self.assertFailure(self.mail.deliver([(box.id, ()), (999999, ())], content), NotFound)
        self.assertEqual(seen, [])

    @defer.inlineCallbacks
    def test_mailbox_changes(self):
        box = yield self.mailbox("INBOX")
        yield self.append(box, count=3)
        info, records, expunged = yield self.mail.mailbox_changes(box.id)
        self.assertEqual(([r.uid for r in records], expunged, info.messages), ([1, 2, 3], [], 3))
        mark = info.highestmodseq
        yield self.mail.store_flags(box.id, [2], ["\\Deleted"], "add")
        yield self.mail.store_flags(box.id, [3], ["\\Seen"], "add")
        yield self.mail.expunge(box.id)
        yield self.append(box)
        info, records, expunged = yield self.mail.mailbox_changes(box.id, mark)
        self.assertEqual([(r.uid, r.flags) for r in records], [(3, frozenset({"\\Seen"})), (4, frozenset())])
        self.assertEqual(expunged, [2])
        self.assertEqual(info.highestmodseq, max(r.modseq for r in records) + 0)
        yield self.assertFailure(self.mail.mailbox_changes(999999), NotFound)

    @defer.inlineCallbacks
    def test_get_parsed(self):
        box = yield self.mailbox("INBOX")
        record = yield self.parsed_message(b"Subject: hello\r\nFrom: a@b.example\r\n\r\nbody\r\n", box)
        found = yield self.mail.get_parsed([record.content_id, 424242], ["subject", "envelope", "nothing"])
        key, fields = found[record.content_id]
        self.assertEqual(list(found), [record.content_id])
        self.assertEqual((yield self.blobs.get(key, 0, 8)), b"Subject:")
        self.assertEqual(fields["subject"], "hello")
        self.assertEqual(fields["envelope"][2], [[None, None, "a", "b.example"]])
        self.assertIsNone(fields["nothing"])
        self.assertRaises(ValueError, self.mail.get_parsed, [1], ["x'); DROP TABLE contents; --"])

    @defer.inlineCallbacks
    def test_search(self):
        box = yield self.mailbox("INBOX")
        day = 86400 * 20000
        yield self.parsed_message(b"Subject: Quarterly report\r\nFrom: Alice <alice@example.test>\r\n"
                                  b"Date: Mon, 1 Jan 2024 10:00:00 +0000\r\n\r\nThe numbers are in.\r\n",
                                  box, ["\\Seen", "$Work"], day)
        yield self.parsed_message(b"Subject: lunch?\r\nFrom: bob@example.test\r\nX-Custom: yes\r\n\r\n"
                                  b"Sandwiches at noon. \xc3\x9cber gut.\r\n", box, ["\\Flagged"], day + 86400)
        yield self.parsed_message(b"Subject: Re: Quarterly report\r\nFrom: carol@example.test\r\n\r\n"
                                  + b"x" * 5000 + b"\r\n", box, (), day + 2 * 86400)

        def uids(criteria, sort=None):
            return self.mail.search(box.id, criteria, sort).addCallback(lambda rows: [uid for uid, _ in rows])

        cases = [
            (("all",), [1, 2, 3]),
            (("flag", "\\seen", True), [1]),
            (("flag", "\\Seen", False), [2, 3]),
            (("flag", "$work", True), [1]),
            (("flag", "$Other", False), [1, 2, 3]),
            (("flag", "\\Recent", True), []),
            (("uid", ((2, None),)), [2, 3]),
            (("uid", tuple((n, n) for n in range(1, 40, 2))), [1, 3]),
            (("internal_date", day + 86400, None), [2, 3]),
            (("internal_date", None, day + 86400), [1]),
            (("sent_date", 1704067200, 1704153600), [1]),
            (("size", 1000, None), [3]),
            (("size", None, 1000), [1, 2]),
            (("header", "subject", "QUARTERLY"), [1, 3]),
            (("header", "from", "alice@"), [1]),
            (("header", "cc", ""), []),
            (("header", "subject", ""), [1, 2, 3]),
            (("text", "numbers"), [1]),
            (("text", "über"), [2]),
            (("body", "at"), [2]),
            (("text", 'quote"d'), []),
            (("not", ("header", "subject", "report")), [2]),
            (("or", (("flag", "\\Flagged", True), ("size", 1000, None))), [2, 3]),
            (("and", (("header", "subject", "report"), ("not", ("flag", "\\Seen", True)))), [3]),
            (("modseq", 4), [3]),
        ]
        for criteria, expected in cases:
            self.assertEqual((yield uids(criteria)), expected, criteria)
        self.assertEqual((yield uids(("all",), [("size", True)])), [3, 1, 2])
        self.assertEqual((yield uids(("all",), [("subject", False), ("arrival", True)])), [2, 3, 1])
        self.assertEqual((yield uids(("all",), [("from", False)])), [1, 2, 3])
        deep = ("all",)
        for _ in range(100):
            deep = ("not", deep)
        for bad in [("bogus",), ("header", "x-custom", "yes"), deep, "all"]:
            yield self.assertFailure(self.mail.search(box.id, bad), InvalidName)
        yield self.assertFailure(self.mail.search(box.id, ("all",), [("colour", False)]), InvalidName)
        self.assertIn("subject", self.mail.indexed_headers)

    @defer.inlineCallbacks
    def test_search_folds_case_beyond_ascii(self):
        box = yield self.mailbox("INBOX")
        yield self.parsed_message("Subject: Grüße aus der Straße\r\n\r\nFuß\r\n".encode(), box, (), 0)
        yield self.parsed_message(b"Subject: STRASSE 5\r\n\r\nfuss\r\n", box, (), 0)
        cases = [
            (("header", "subject", "strasse"), [1, 2]),
            (("header", "subject", "GRÜSSE"), [1]),
            (("header", "subject", "5"), [2]),
            (("text", "ß"), [1, 2]),
            (("text", "SS"), [1, 2]),
        ]
        for criteria, expected in cases:
            self.assertEqual([uid for uid, _ in (yield self.mail.search(box.id, criteria))], expected, criteria)

    @defer.inlineCallbacks
    def test_feedback(self):
        yield self.mail.record_feedback(USER, [3, 4], "spam")
        yield self.mail.record_feedback(USER, [3], "ham")
        rows = yield self.mail.list_feedback(USER)
        self.assertEqual([row[:2] for row in rows], [(3, "spam"), (4, "spam"), (3, "ham")])
        self.assertEqual((yield self.mail.list_feedback(OTHER_USER)), [])
        self.assertRaises(ValueError, self.mail.record_feedback, USER, [3], "maybe")
