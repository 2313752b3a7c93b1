"""A user's INBOX as a POP3 maildrop (twisted.mail.pop3.IMailbox).

The message list is a snapshot taken at login: numbers, UIDs and sizes do
not change during the session, whatever IMAP or delivery do meanwhile
(RFC 1939 section 5).  DELE and RETR only mark messages; `sync()` (the
UPDATE state, after QUIT) applies the marks through the mail store.  A
session that ends any other way changes nothing.

Sizes are the octets served (CRLF line ends, see `wire`), which differ
from the stored size for messages stored with bare LFs.  Finding them
means reading the message once; contents never change, so the result is
kept per content id in a `SizeCache` shared by all sessions of a store,
and it is computed only when a command needs it (STAT, LIST, RETR).
"""
from __future__ import annotations

import io
from collections import OrderedDict
from dataclasses import dataclass

from twisted.internet import defer
from twisted.logger import Logger
from twisted.mail import pop3
from zope.interface import implementer

from emailsvc.errors import BlobNotFound
from emailsvc.pop3.wire import LineEnds, normalize

INBOX = "INBOX"


class MessageGone(Exception):
    """The message's content is no longer stored (expunged elsewhere, then collected)."""


class SizeCache:
    """Served sizes by content id, least recently used dropped first.

    Content ids are never reused by a store, and a content never changes,
    so an entry never goes stale.  One cache belongs to one mail store.
    """

    def __init__(self, limit: int = 200_000):
        self._limit = limit
        self._sizes: OrderedDict[int, int] = OrderedDict()

    def get(self, content_id: int) -> int | None:
        size = self._sizes.get(content_id)
        if size is not None:
            self._sizes.move_to_end(content_id)
        return size

    def put(self, content_id: int, size: int):
        self._sizes[content_id] = size
        self._sizes.move_to_end(content_id)
        while len(self._sizes) > self._limit:
            self._sizes.popitem(last=False)

    def __len__(self) -> int:
        return len(self._sizes)


@dataclass
class _Message:
    uid: int
    content_id: int
    stored_size: int
    served_size: int | None = None
    blob_key: str | None = None
    deleted: bool = False
    retrieved: bool = False


@implementer(pop3.IMailbox)
class Maildrop:
    """The snapshot of one mailbox for one POP3 session.

    Message indexes are 0-based (as in IMailbox); an index out of range
    raises ValueError.  Methods touching the store return Deferreds.
    """

    read_chunk = 256 * 1024
    """Octets read from the blob store at a time when streaming a message."""

    measure_chunk = 1024 * 1024
    """Octets read at a time when measuring a message's served size."""

    _log = Logger()

    def __init__(self, mail, blobs, mailbox_id, uidvalidity: int, records, sizes: SizeCache | None = None,
                 concurrency: int = 4):
        self._mail = mail
        self._blobs = blobs
        self.mailbox_id = mailbox_id
        self.uidvalidity = uidvalidity
        self._messages = [_Message(r.uid, r.content_id, r.size) for r in records]
        self._sizes = sizes if sizes is not None else SizeCache()
        self._limit = defer.DeferredSemaphore(concurrency)
        self.synced = False

    # Numbers

    def __len__(self) -> int:
        """Messages in the snapshot, deleted ones included."""
        return len(self._messages)

    def _message(self, index) -> _Message:
        if not isinstance(index, int) or not 0 <= index < len(self._messages):
            raise ValueError(f"no message {index!r}")
        return self._messages[index]

    def is_deleted(self, index: int) -> bool:
        return self._message(index).deleted

    def uid(self, index: int) -> int:
        return self._message(index).uid

    def stored_size(self, index: int) -> int:
        return self._message(index).stored_size

    def uidl(self, index: int) -> str:
        """The unique id: stable across sessions, 1-70 printable octets (RFC 1939 section 7)."""
        return f"{self.uidvalidity}.{self._message(index).uid}"

    def live(self) -> list[int]:
        """Indexes of the messages not marked deleted."""
        return [index for index, message in enumerate(self._messages) if not message.deleted]

    def deleted_count(self) -> int:
        return sum(message.deleted for message in self._messages)

    # Sizes

    def size(self, index: int) -> int:
        """The served size of a message measured already (see `ensure_sizes`)."""
        size = self._message(index).served_size
        if size is None:
            raise RuntimeError("size not measured yet")
        return size

    def ensure_sizes(self, indexes=None) -> defer.Deferred:
        """Measure the served sizes of `indexes` (all when None). @return: Deferred."""
        if indexes is None:
            targets = self._messages
        else:
            targets = [self._message(index) for index in indexes]
        missing = []
        for message in targets:
            if message.served_size is None:
                message.served_size = self._sizes.get(message.content_id)
                if message.served_size is None:
                    missing.append(message)
        if not missing:
            return defer.succeed(None)
        measured = [self._limit.run(self._measure, message) for message in missing]
        d = defer.gatherResults(measured, consumeErrors=True)
        d.addErrback(lambda failure: failure.value.subFailure)
        d.addCallback(lambda ignored: None)
        return d

    @defer.inlineCallbacks
    def _measure(self, message: _Message):
        if message.served_size is not None:
            return
        try:
            key = yield self._blob_key(message)
            line_ends, size, offset = LineEnds(), 0, 0
            while True:
                chunk = yield self._blobs.get(key, offset, self.measure_chunk)
                size += len(line_ends.feed(chunk))
                offset += len(chunk)
                if len(chunk) < self.measure_chunk or offset >= message.stored_size:
                    break
            size += len(line_ends.finish())
        except (MessageGone, BlobNotFound):
            # RETR will fail for it; LIST still shows a plausible size.
            self._log.warn("POP3: content {cid} of UID {uid} is gone", cid=message.content_id, uid=message.uid)
            message.served_size = message.stored_size
            return
        message.served_size = size
        self._sizes.put(message.content_id, size)

    # Contents

    @defer.inlineCallbacks
    def _blob_key(self, message: _Message):
        if message.blob_key is None:
            content = yield self._mail.get_content(message.content_id)
            if content is None:
                raise MessageGone(message.uid)
            message.blob_key = content.blob_key
        return message.blob_key

    @defer.inlineCallbacks
    def read(self, index: int, offset: int, length: int):
        """Stored octets `[offset, offset+length)` of a message.

        @return: Deferred firing with bytes; fails with MessageGone.
        """
        message = self._message(index)
        key = yield self._blob_key(message)
        try:
            data = yield self._blobs.get(key, offset, length)
        except BlobNotFound:
            raise MessageGone(message.uid) from None
        return data

    def mark_retrieved(self, index: int):
        """RETR: the message gets \\Seen in the UPDATE state."""
        self._message(index).retrieved = True

    # IMailbox

    def listMessages(self, i=None):
        """Served sizes (0 for deleted messages). @return: Deferred."""
        if i is None:
            d = self.ensure_sizes()
            d.addCallback(lambda ignored: [0 if m.deleted else m.served_size for m in self._messages])
            return d
        message = self._message(i)
        d = self.ensure_sizes([i])
        d.addCallback(lambda ignored: 0 if message.deleted else message.served_size)
        return d

    def getMessage(self, i):
        """The whole message as served. @return: Deferred firing with a binary file."""
        message = self._message(i)
        if message.deleted:
            raise ValueError(f"message {i} is deleted")
        d = self.read(i, 0, message.stored_size)
        d.addCallback(lambda data: io.BytesIO(normalize(data)))
        return d

    def getUidl(self, i):
        return self.uidl(i).encode("ascii")

    def deleteMessage(self, i):
        message = self._message(i)
        if message.deleted:
            raise ValueError(f"message {i} is deleted already")
        message.deleted = True

    def undeleteMessages(self):
        for message in self._messages:
            message.deleted = False

    @defer.inlineCallbacks
    def sync(self):
        """The UPDATE state: retrieved messages get \\Seen, deleted ones are expunged.

        @return: Deferred firing with the number of messages removed.
        """
        if self.synced:
            return 0
        self.synced = True
        if self.mailbox_id is None:
            return 0
        deleted = [m.uid for m in self._messages if m.deleted]
        seen = [m.uid for m in self._messages if m.retrieved and not m.deleted]
        if seen:
            yield self._mail.store_flags(self.mailbox_id, seen, ["\\Seen"], "add")
        if not deleted:
            return 0
        yield self._mail.store_flags(self.mailbox_id, deleted, ["\\Deleted"], "add")
        expunged = yield self._mail.expunge(self.mailbox_id, deleted)
        return len(expunged)

    def logout(self):
        """The session ended (with or without QUIT): forget the snapshot."""
        self._messages = []


class MaildropFactory:
    """The realm's avatar factory for pop3.IMailbox: user id -> Deferred Maildrop."""

    def __init__(self, mail, blobs, sizes: SizeCache | None = None):
        self._mail = mail
        self._blobs = blobs
        self.sizes = sizes if sizes is not None else SizeCache()

    @defer.inlineCallbacks
    def __call__(self, user_id):
        mailbox = yield self._mail.get_mailbox(user_id, INBOX)
        if mailbox is None:
            # Not provisioned yet (no mail ever delivered): an empty maildrop.
            return Maildrop(self._mail, self._blobs, None, 0, [], self.sizes)
        records = yield self._mail.list_messages(mailbox.id)
        return Maildrop(self._mail, self._blobs, mailbox.id, mailbox.uidvalidity, records, self.sizes)
