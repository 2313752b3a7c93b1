"""The MDA: local delivery of one message into its recipients' mailboxes.

The message is saved once (emailsvc.store.inline), in one SQL transaction
that adds a message row per recipient (after its blob is written and
synced, for a message over store.inline_max); only after that commit does
the caller answer 250.  Either every recipient gets the message or none does,
so a failure is a temporary error that the sending MTA retries, and
nothing is lost.
"""
from __future__ import annotations

from twisted.internet import defer
from twisted.logger import Logger

from emailsvc.smtp.trace import return_path

JUNK = "\\Junk"


class MDA:
    """Delivers messages into mailboxes through an IMailStore (`mail`) and
    the InlineBlobStore (`blobs`, emailsvc.store.inline) that saves them."""

    log = Logger()

    def __init__(self, mail, blobs):
        self._mail = mail
        self._blobs = blobs

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
        records = yield self._blobs.save(targets, message)
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
        (record,) = yield self._blobs.save([(mailbox.id, tuple(flags))], message)
        return record

