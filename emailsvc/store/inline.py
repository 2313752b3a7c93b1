"""Saving messages: small ones inline, committed with their metadata.

A message saved through the blob store is durable only after two syncs in
a row: the blob store's sync pass, then the SQL commit of its rows.  A
message of at most `store.inline_max` bytes instead goes into the metadata
store inside the very transaction that adds its message rows
(`IInlineMailStore.deliver(..., data=...)`): one commit, which group commit
shares among every concurrent delivery, makes bytes and rows durable
together, and no orphan blob can be left behind.  Larger messages, and
mail queued for sending, go to the configured blob store as before.

`InlineBlobStore` is the IBlobStore the services see: it reads keys that
start with `INLINE` from the metadata store and hands every other key to
the configured blob store.
"""
from __future__ import annotations

import uuid

from twisted.internet import defer
from twisted.internet.threads import deferToThreadPool
from zope.interface import implementer

from emailsvc.interfaces import IBlobStore, IInlineMailStore
from emailsvc.store.model import Content
from emailsvc.store.parse import parse_message

INLINE = "inline-"
# Parsing costs ~0.2 ms for typical mail; only large messages go to a thread.
_PARSE_IN_THREAD = 256 * 1024


@implementer(IBlobStore)
class InlineBlobStore:
    """Messages of up to `limit` bytes in `mail`, others in `blobs`; every
    message in `blobs` when `mail` is no IInlineMailStore."""

    def __init__(self, mail, blobs, limit: int, reactor):
        self._mail = mail
        self._blobs = blobs
        self._limit = limit if IInlineMailStore.providedBy(mail) else 0
        self._reactor = reactor

    def start(self):
        return self._blobs.start()

    def stop(self):
        return self._blobs.stop()

    def put(self, data):
        return self._blobs.put(data)

    def get(self, key, offset=0, length=None):
        if key.startswith(INLINE):
            return self._mail.read_inline(key, offset, length)
        return self._blobs.get(key, offset, length)

    def delete(self, key):
        if key.startswith(INLINE):
            return defer.succeed(None)  # the bytes went with their contents row
        return self._blobs.delete(key)

    def keys_older_than(self, timestamp):
        return self._blobs.keys_older_than(timestamp)

    @defer.inlineCallbacks
    def save(self, targets, message: bytes, internal_date=None):
        """Parse `message` once and add it to every (mailbox_id, flags) of
        `targets` in one transaction.

        @return: Deferred firing with the `MessageRecord`s once durable.
        """
        if len(message) > _PARSE_IN_THREAD:
            parsed = yield deferToThreadPool(self._reactor, self._reactor.getThreadPool(), parse_message, message)
        else:
            parsed = parse_message(message)
        if 0 < self._limit and len(message) <= self._limit:
            content = Content(blob_key=INLINE + uuid.uuid4().hex, size=len(message), parsed=parsed)
            records = yield self._mail.deliver(targets, content, internal_date, data=message)
        else:
            key = yield self._blobs.put(message)
            records = yield self._mail.deliver(targets, Content(blob_key=key, size=len(message), parsed=parsed),
                                               internal_date)
        return records
