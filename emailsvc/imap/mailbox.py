"""A selected mailbox as one session sees it (Twisted IMailbox and friends).

IMAP sequence numbers belong to a session: they change only when the
session announces EXISTS or EXPUNGE.  The view keeps the UIDs announced so
far (sequence number = position + 1) with their records, and follows the
store through MODSEQs: `refresh()` asks for everything changed since the
highest MODSEQ seen, adds new messages at the end, notes flag changes and
keeps expunged messages in place ("gone") until the protocol may announce
them with `take_expunged()`.  The store's notifier marks the view dirty.
"""
from __future__ import annotations

from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field

from twisted.internet import defer
from twisted.mail import imap4
from zope.interface import implementer

from emailsvc.imap.wire import Bad

SYSTEM_FLAGS = ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")


@dataclass
class Update:
    """What a refresh found: UIDs now gone, new UIDs, UIDs whose flags changed."""

    expunged: list[int] = field(default_factory=list)
    new: list[int] = field(default_factory=list)
    flags: list[int] = field(default_factory=list)


@implementer(imap4.IMailbox, imap4.ISearchableMailbox, imap4.IMessageCopier, imap4.ICloseableMailbox)
class MailboxView:
    """One session's view of one mailbox of the store."""

    def __init__(self, account, info, readonly: bool):
        self.account = account
        self.mail = account.store
        self.id = info.id
        self.info = info
        self.readonly = readonly
        self.uids: list[int] = []
        self.records: dict = {}
        self.gone: set[int] = set()
        self.modseq = 0
        self.dirty = False
        self.on_change = None
        self.listeners: list = []
        self._subscription = None
        self._lock = defer.DeferredLock()

    # Opening, following and closing

    @defer.inlineCallbacks
    def open(self):
        """Load the messages; subscribe first so no change is missed. @return: Deferred."""
        self._subscription = self.mail.notifier.subscribe(self.id, self._changed)
        try:
            info, records, _ = yield self.mail.mailbox_changes(self.id, 0)
        except BaseException:
            self.close()
            raise
        self.info = info
        self.uids = [record.uid for record in records]
        self.records = {record.uid: record for record in records}
        self.modseq = info.highestmodseq

    def _changed(self, mailbox_id):
        self.dirty = True
        if self.on_change is not None:
            self.on_change()

    def close(self):
        """Stop following the store (ICloseableMailbox)."""
        if self._subscription is not None:
            self._subscription.cancel()
            self._subscription = None
        self.on_change = None
        return defer.succeed(None)

    def refresh(self):
        """Read what changed since the last refresh. @return: Deferred firing with an `Update`."""
        return self._lock.run(self._refresh)

    @defer.inlineCallbacks
    def _refresh(self):
        self.dirty = False
        info, records, expunged = yield self.mail.mailbox_changes(self.id, self.modseq)
        update = Update()
        for uid in expunged:
            if uid in self.records and uid not in self.gone:
                self.gone.add(uid)
                update.expunged.append(uid)
        highest = self.uids[-1] if self.uids else 0
        for record in records:
            old = self.records.get(record.uid)
            if old is not None:
                if record.uid not in self.gone:
                    self.records[record.uid] = record
                    if old.flags != record.flags or old.modseq != record.modseq:
                        update.flags.append(record.uid)
            elif record.uid > highest:
                self.uids.append(record.uid)
                self.records[record.uid] = record
                update.new.append(record.uid)
                highest = record.uid
        self.modseq = max(self.modseq, info.highestmodseq)
        self.info = info
        return update

    def mark_gone(self, uids):
        """Messages this session expunged or moved away."""
        for uid in uids:
            if uid in self.records:
                self.gone.add(uid)

    def take_expunged(self) -> list[tuple[int, int]]:
        """Forget the gone messages; (sequence number, UID) to announce, highest first."""
        out = []
        for uid in sorted(self.gone, reverse=True):
            index = bisect_left(self.uids, uid)
            out.append((index + 1, uid))
            del self.uids[index]
            del self.records[uid]
        self.gone.clear()
        return out

    def update_records(self, records):
        """Records this session changed itself (STORE)."""
        for record in records:
            if record.uid in self.records and record.uid not in self.gone:
                self.records[record.uid] = record

    # Numbers

    @property
    def exists(self) -> int:
        return len(self.uids)

    def seq(self, uid: int) -> int | None:
        index = bisect_left(self.uids, uid)
        if index < len(self.uids) and self.uids[index] == uid:
            return index + 1
        return None

    def resolve(self, ranges, uid: bool) -> list[tuple[int, int]]:
        """(sequence number, UID) pairs of a sequence or UID set, in order.

        UID sets may name UIDs that do not exist; a sequence set naming a
        number above EXISTS (or "*" when empty) is a client error.
        """
        picked: set[int] = set()
        if uid:
            top = self.uids[-1] if self.uids else 0
            for low, high in ranges:
                low = top if low is None else low
                high = top if high is None else high
                low, high = min(low, high), max(low, high)
                picked.update(range(bisect_left(self.uids, low), bisect_right(self.uids, high)))
        else:
            count = len(self.uids)
            for low, high in ranges:
                low = count if low is None else low
                high = count if high is None else high
                low, high = min(low, high), max(low, high)
                if low < 1 or high > count:
                    raise Bad("Invalid message sequence number")
                picked.update(range(low - 1, high))
        return [(index + 1, self.uids[index]) for index in sorted(picked)]

    def uid_ranges(self, ranges, uid: bool) -> tuple:
        """A sequence or UID set as UID ranges for the store (SEARCH keys)."""
        if uid:
            top = self.uids[-1] if self.uids else 0
            out = []
            for low, high in ranges:
                low = top if low is None else low
                high = top if high is None else high
                out.append((min(low, high), max(low, high)))
            return tuple(out)
        count = len(self.uids)
        out = []
        for low, high in ranges:
            low = count if low is None else low
            high = count if high is None else high
            low, high = max(1, min(low, high)), min(count, max(low, high))
            if low <= high:
                out.append((self.uids[low - 1], self.uids[high - 1]))
        return tuple(out)

    def keywords(self) -> list[str]:
        found = {}
        for record in self.records.values():
            for flag in record.flags:
                if not flag.startswith("\\"):
                    found.setdefault(flag.lower(), flag)
        return sorted(found.values())

    # Twisted IMailboxInfo / IMailbox

    def getFlags(self):
        return list(SYSTEM_FLAGS) + self.keywords()

    def getHierarchicalDelimiter(self):
        return "/"

    def getUIDValidity(self):
        return self.info.uidvalidity

    def getUIDNext(self):
        return self.info.uidnext

    def getUID(self, message):
        return self.uids[message - 1]

    def getMessageCount(self):
        return self.exists

    def getRecentCount(self):
        return 0

    def getUnseenCount(self):
        return sum(1 for record in self.records.values() if "\\Seen" not in record.flags)

    def isWriteable(self):
        return not self.readonly

    def destroy(self):
        return self.account.delete(self.info.name)

    def requestStatus(self, names):
        values = {"MESSAGES": self.exists, "RECENT": 0, "UIDNEXT": self.info.uidnext,
                  "UIDVALIDITY": self.info.uidvalidity, "UNSEEN": self.getUnseenCount()}
        return {name: values[name] for name in names if name in values}

    def addListener(self, listener):
        self.listeners.append(listener)

    def removeListener(self, listener):
        self.listeners.remove(listener)

    def addMessage(self, message, flags=(), date=None):
        from emailsvc.imap.append import store_message

        data = message.read() if hasattr(message, "read") else message
        return store_message(self.account, self.id, data, flags, date)

    def expunge(self):
        return self.mail.expunge(self.id)

    def fetch(self, messages, uid):
        """(sequence number, `Message`) pairs for a set, records only. @return: Deferred."""
        from emailsvc.imap.message import Message

        pairs = self.resolve(messages, uid)
        return defer.succeed([(seq, Message(self.records[u], self.account.blobs)) for seq, u in pairs
                              if u not in self.gone])

    def store(self, messages, flags, mode, uid):
        """Set (mode 0), add (1) or remove (-1) flags. @return: Deferred of {seq: flags}."""
        pairs = self.resolve(messages, uid)
        which = {0: "replace", 1: "add", -1: "remove"}[mode]
        d = self.mail.store_flags(self.id, [u for _, u in pairs], flags, which)

        def done(result):
            changed, _ = result
            self.update_records(changed)
            return {self.seq(record.uid): record.flags for record in changed}

        return d.addCallback(done)

    def search(self, query, uid):
        """Run a criteria tree (see emailsvc.imap.search); sequence numbers or UIDs."""
        d = self.mail.search(self.id, query)
        return d.addCallback(lambda rows: [u if uid else self.seq(u) for u, _ in rows if u in self.records])

    def copy(self, messageObject):
        """Copy one `Message` of another view into this mailbox. @return: Deferred of the new UID."""
        record = messageObject.record
        d = self.mail.copy(record.mailbox_id, [record.uid], self.id)
        return d.addCallback(lambda mapping: mapping.get(record.uid))
