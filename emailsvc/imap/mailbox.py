"""A selected mailbox as one session sees it (Twisted IMailbox and friends).

IMAP sequence numbers belong to a session: they change only when the
session announces EXISTS or EXPUNGE.  The view keeps the UIDs announced so
far in an array (sequence number = position + 1; 4 bytes a message, so a
100,000-message mailbox costs 400 KB) and reads message records from the
store a page at a time when a command needs them.  It follows the store
through MODSEQs: `refresh()` asks for everything changed since the highest
MODSEQ seen, adds new messages at the end, notes flag changes and keeps
expunged messages in place ("gone") until the protocol may announce them
with `take_expunged()`.  The store's notifier marks the view dirty.
"""
from __future__ import annotations

from array import array
from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field

from twisted.internet import defer
from twisted.mail import imap4
from zope.interface import implementer

from emailsvc.imap.wire import Bad

SYSTEM_FLAGS = ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")
PAGE = 500
"""Message records read from the store at once."""


@dataclass
class Update:
    """What a refresh found: UIDs now gone, new UIDs, UIDs whose flags changed
    (someone else's change; `records` has their new records)."""

    expunged: list[int] = field(default_factory=list)
    new: list[int] = field(default_factory=list)
    flags: list[int] = field(default_factory=list)
    records: dict = field(default_factory=dict)


@implementer(imap4.IMailbox, imap4.ISearchableMailbox, imap4.IMessageCopier, imap4.ICloseableMailbox)
class MailboxView:
    """One session's view of one mailbox of the store."""

    def __init__(self, account, info, readonly: bool):
        self.account = account
        self.mail = account.store
        self.id = info.id
        self.info = info
        self.readonly = readonly
        self.uids = array("I")
        self.gone: set[int] = set()
        self.first_unseen: int | None = None
        self.modseq = 0
        self.dirty = False
        self.on_change = None
        self.listeners: list = []
        self._keywords: dict[str, str] = {}
        self._own_modseqs: set[int] = set()
        self._subscription = None
        self._lock = defer.DeferredLock()

    # Opening, following and closing

    @defer.inlineCallbacks
    def open(self):
        """Load the UIDs; subscribe first so no change is missed. @return: Deferred."""
        self._subscription = self.mail.notifier.subscribe(self.id, self._changed)
        try:
            info, uids, first_unseen, keywords = yield self.mail.mailbox_index(self.id)
        except BaseException:
            self.close()
            raise
        self.info = info
        self.uids = uids
        self.first_unseen = first_unseen
        self._keywords = {keyword.lower(): keyword for keyword in keywords}
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
            if uid not in self.gone and self.seq(uid) is not None:
                self.gone.add(uid)
                update.expunged.append(uid)
        highest = self.uids[-1] if self.uids else 0
        for record in records:
            self.note_keywords(record.flags)
            if record.uid > highest:
                self.uids.append(record.uid)
                update.new.append(record.uid)
                highest = record.uid
            elif (record.modseq not in self._own_modseqs and record.uid not in self.gone
                  and self.seq(record.uid) is not None):
                update.flags.append(record.uid)
                update.records[record.uid] = record
        self._own_modseqs.clear()
        self.modseq = max(self.modseq, info.highestmodseq)
        self.info = info
        return update

    def mark_gone(self, uids):
        """Messages this session expunged or moved away."""
        for uid in uids:
            if self.seq(uid) is not None:
                self.gone.add(uid)

    def take_expunged(self) -> list[tuple[int, int]]:
        """Forget the gone messages; (sequence number, UID) to announce, highest first."""
        out = []
        for uid in sorted(self.gone, reverse=True):
            index = bisect_left(self.uids, uid)
            out.append((index + 1, uid))
            del self.uids[index]
        self.gone.clear()
        return out

    def update_records(self, records):
        """Records this session changed itself (STORE): not announced again by refresh."""
        for record in records:
            self._own_modseqs.add(record.modseq)
            self.note_keywords(record.flags)

    def note_keywords(self, flags):
        for flag in flags:
            if not flag.startswith("\\"):
                self._keywords.setdefault(flag.lower(), flag)

    # Numbers

    @property
    def exists(self) -> int:
        return len(self.uids)

    def seq(self, uid: int) -> int | None:
        index = bisect_left(self.uids, uid)
        if index < len(self.uids) and self.uids[index] == uid:
            return index + 1
        return None

    def spans(self, ranges, uid: bool) -> list[tuple[int, int]]:
        """A sequence or UID set as sorted, disjoint [start, stop) index spans of `uids`.

        UID sets may name UIDs that do not exist; a sequence set naming a
        number above EXISTS (or "*" when empty) is a client error.
        """
        found = []
        if uid:
            top = self.uids[-1] if self.uids else 0
            for low, high in ranges:
                low = top if low is None else low
                high = top if high is None else high
                low, high = min(low, high), max(low, high)
                start, stop = bisect_left(self.uids, low), bisect_right(self.uids, high)
                if start < stop:
                    found.append((start, stop))
        else:
            count = len(self.uids)
            for low, high in ranges:
                low = count if low is None else low
                high = count if high is None else high
                low, high = min(low, high), max(low, high)
                if low < 1 or high > count:
                    raise Bad("Invalid message sequence number")
                found.append((low - 1, high))
        merged: list[tuple[int, int]] = []
        for start, stop in sorted(found):
            if merged and start <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(merged[-1][1], stop))
            else:
                merged.append((start, stop))
        return merged

    def pairs(self, spans, with_gone: bool = False):
        """(sequence number, UID) of index spans, in order (lazily); the gone ones
        (expunged, not announced yet) only `with_gone`."""
        gone, uids = () if with_gone else self.gone, self.uids
        for start, stop in spans:
            for index in range(start, stop):
                uid = uids[index]
                if uid not in gone:
                    yield index + 1, uid

    def resolve(self, ranges, uid: bool) -> list[tuple[int, int]]:
        """(sequence number, UID) pairs of a sequence or UID set, in order (gone ones included)."""
        return [(index + 1, self.uids[index]) for start, stop in self.spans(ranges, uid)
                for index in range(start, stop)]

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
        return sorted(self._keywords.values())

    @defer.inlineCallbacks
    def records(self, uids):
        """{UID: MessageRecord} of some UIDs, read a page at a time. @return: Deferred."""
        uids = list(uids)
        found = {}
        for start in range(0, len(uids), PAGE):
            for record, _, _ in (yield self.mail.message_page(self.id, uids[start:start + PAGE])):
                found[record.uid] = record
        return found

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
        return self.info.unseen

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

    @defer.inlineCallbacks
    def fetch(self, messages, uid):
        """(sequence number, `Message`) pairs for a set, records only. @return: Deferred."""
        from emailsvc.imap.message import Message

        pairs = list(self.pairs(self.spans(messages, uid)))
        records = yield self.records(u for _, u in pairs)
        return [(seq, Message(records[u], self.account.blobs)) for seq, u in pairs if u in records]

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
        return d.addCallback(lambda rows: [u if uid else self.seq(u) for u, _ in rows
                                           if u not in self.gone and self.seq(u) is not None])

    def copy(self, messageObject):
        """Copy one `Message` of another view into this mailbox. @return: Deferred of the new UID."""
        record = messageObject.record
        d = self.mail.copy(record.mailbox_id, [record.uid], self.id)
        return d.addCallback(lambda mapping: mapping.get(record.uid))
