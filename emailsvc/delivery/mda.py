"""The MDA: local delivery of one message into its recipients' mailboxes.

The blob is written (and synced) once, then one SQL transaction adds a
message row per recipient; only after that commit does the caller answer
250.  Either every recipient gets the message or none does, so a failure
is a temporary error that the sending MTA retries, and nothing is lost.
"""
from __future__ import annotations

from twisted.internet import defer
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger

from emailsvc.smtp.trace import return_path
from emailsvc.store.model import Content
from emailsvc.store.parse import parse_message

# Parsing costs ~0.2 ms for typical mail; only large messages go to a thread.
_PARSE_IN_THREAD = 256 * 1024
JUNK = "\\Junk"


class MDA:
    """Delivers messages into mailboxes through IMailStore and IBlobStore."""

    log = Logger()

    def __init__(self, mail, blobs, reactor):
        self._mail = mail
        self._blobs = blobs
        self._reactor = reactor

    @defer.inlineCallbacks
    def deliver(self, message: bytes, user_ids, sender: str, junk: bool = False):
        """Store `message` for every user in `user_ids` (INBOX, or Junk),
        with a Return-Path field for the envelope `sender`.

        @return: Deferred firing with the list of MessageRecords once durable.
        """
        message = return_path(sender) + message
        targets = []
        for user_id in dict.fromkeys(user_ids):
            mailbox_id = yield self._mail.delivery_mailbox(user_id, JUNK if junk else None)
            if mailbox_id is None:
                # A user made without the admin tool has no mailboxes yet.
                yield self._mail.provision_user(user_id)
                mailbox_id = yield self._mail.delivery_mailbox(user_id, JUNK if junk else None)
            targets.append((mailbox_id, ()))
        records = yield self._store(message, targets)
        return records

    @defer.inlineCallbacks
    def file_copy(self, message: bytes, user_id: int, special_use: str, flags=()):
        """Store `message` unchanged in the user's mailbox with `special_use`
        (e.g. "\\Sent"), with `flags`.

        @return: Deferred firing with the MessageRecord once durable, or
            None when the user has no such mailbox.
        """
        mailbox = yield self._mail.get_special_mailbox(user_id, special_use)
        if mailbox is None:
            return None
        (record,) = yield self._store(message, [(mailbox.id, tuple(flags))])
        return record

    @defer.inlineCallbacks
    def _store(self, message: bytes, targets):
        """Parse once, write the blob, then one SQL transaction for all `targets`."""
        if len(message) > _PARSE_IN_THREAD:
            parsed = yield deferToThreadPool(self._reactor, self._reactor.getThreadPool(), parse_message, message)
        else:
            parsed = parse_message(message)
        key = yield self._blobs.put(message)
        records = yield self._mail.deliver(targets, Content(blob_key=key, size=len(message), parsed=parsed))
        return records
