"""The IMAP avatar: one user's mailboxes through IMailStore (Twisted IAccount).

Names here are text; the protocol decodes and encodes modified UTF-7.
Every method that touches the store returns a Deferred.
"""
from __future__ import annotations

import re

from twisted.internet import defer
from twisted.mail import imap4
from zope.interface import implementer

from emailsvc.errors import InvalidName, NotFound
from emailsvc.store.model import Mailbox

DELIMITER = "/"
INBOX = "INBOX"


@implementer(imap4.IMailboxInfo)
class MailboxInfo:
    """A LIST entry: the store's `Mailbox` plus its IMAP attributes.

    A name with children but no mailbox of its own (its mailbox was deleted,
    RFC 3501 6.3.4) is listed \\Noselect: `noselect` is true and `mailbox` a
    stand-in with no id, never subscribed.
    """

    def __init__(self, mailbox, has_children: bool, noselect: bool = False):
        self.mailbox = mailbox
        self.has_children = has_children
        self.noselect = noselect

    @property
    def name(self) -> str:
        return self.mailbox.name

    def getFlags(self):
        flags = ["\\Noselect"] if self.noselect else []
        flags.append("\\HasChildren" if self.has_children else "\\HasNoChildren")
        if self.mailbox.special_use:
            flags.append(self.mailbox.special_use)
        return flags

    def getHierarchicalDelimiter(self):
        return DELIMITER


def pattern_regex(pattern: str) -> re.Pattern:
    """A LIST pattern ("*" any text, "%" any text but the delimiter) as a regex."""
    if pattern[:5].upper() == INBOX and (len(pattern) == 5 or pattern[5] in DELIMITER + "*%"):
        pattern = INBOX + pattern[5:]
    out = []
    for char in pattern:
        if char == "*":
            out.append(".*")
        elif char == "%":
            out.append("[^" + re.escape(DELIMITER) + "]*")
        else:
            out.append(re.escape(char))
    return re.compile("".join(out), re.S)


@implementer(imap4.IAccount, imap4.INamespacePresenter)
class Account:
    """A user's view of the mail store for IMAP; `blobs` is the
    InlineBlobStore (emailsvc.store.inline), through which APPEND saves."""

    def __init__(self, user, store, blobs, max_message_size: int):
        self.user = user
        self.user_id = user.id
        self.store = store
        self.blobs = blobs
        self.max_message_size = max_message_size

    # Listing

    @defer.inlineCallbacks
    def mailboxes(self, patterns, subscribed_only=False):
        """`MailboxInfo`s whose names match any of `patterns`, sorted by name."""
        boxes = yield self.store.list_mailboxes(self.user_id)
        parents = {box.name.rsplit(DELIMITER, 1)[0] for box in boxes if DELIMITER in box.name}
        infos = [MailboxInfo(box, box.name in parents) for box in boxes]
        infos.extend(MailboxInfo(Mailbox(None, self.user_id, name, None, 0, 0, 0), True, noselect=True)
                     for name in _levels(parents) - {box.name for box in boxes})
        regexes = [pattern_regex(pattern) for pattern in patterns]
        return sorted((info for info in infos
                       if (info.mailbox.subscribed or not subscribed_only)
                       and any(regex.fullmatch(info.name) for regex in regexes)),
                      key=lambda info: info.name)

    def listMailboxes(self, ref, wildcard):
        return self.mailboxes([_text(ref) + _text(wildcard)]).addCallback(
            lambda infos: [(info.name, info) for info in infos]
        )

    # Life cycle of mailboxes

    def create(self, pathspec):
        name = _text(pathspec).rstrip(DELIMITER)
        return self.store.create_mailbox(self.user_id, name).addCallback(lambda box: True)

    def addMailbox(self, name, mbox=None):
        if mbox is not None:
            return defer.fail(InvalidName("only new, empty mailboxes can be added"))
        return self.create(name)

    @defer.inlineCallbacks
    def delete(self, name):
        """Delete a mailbox and its messages (RFC 3501 6.3.4).  Its children
        stay, and its name is listed \\Noselect while they do; a \\Noselect
        name cannot be deleted (it goes with its last child)."""
        name = _text(name)
        try:
            yield self.store.delete_mailbox(self.user_id, name)
        except NotFound:
            boxes = yield self.store.list_mailboxes(self.user_id)
            if any(box.name.startswith(name + DELIMITER) for box in boxes):
                raise InvalidName("mailbox is \\Noselect and has children, delete them first") from None
            raise
        return True

    def rename(self, oldname, newname):
        return self.store.rename_mailbox(self.user_id, _text(oldname), _text(newname)).addCallback(lambda box: True)

    def get(self, name):
        """@return: Deferred firing with the store's `Mailbox` or None."""
        return self.store.get_mailbox(self.user_id, _text(name))

    # Subscriptions

    def isSubscribed(self, name):
        return self.get(name).addCallback(lambda box: bool(box and box.subscribed))

    def subscribe(self, name):
        return self.store.set_subscribed(self.user_id, _text(name), True)

    def unsubscribe(self, name):
        return self.store.set_subscribed(self.user_id, _text(name), False)

    # Selection

    @defer.inlineCallbacks
    def select(self, name, rw=True):
        from emailsvc.imap.mailbox import MailboxView

        box = yield self.get(name)
        if box is None:
            return None
        view = MailboxView(self, box, readonly=not rw)
        yield view.open()
        return view

    # Quota

    def usage(self):
        """Bytes stored in all of the user's mailboxes. @return: Deferred."""
        return self.store.usage(self.user_id)

    # Namespaces (RFC 2342): one personal namespace, no others.

    def getPersonalNamespaces(self):
        return [["", DELIMITER]]

    def getSharedNamespaces(self):
        return None

    def getUserNamespaces(self):
        return None

    def logout(self):
        """Called by the realm's logout callable; nothing is held per login."""


def _levels(parents) -> set[str]:
    """Every hierarchy level above the given names, and the names."""
    levels = set()
    for name in parents:
        parts = name.split(DELIMITER)
        levels.update(DELIMITER.join(parts[:depth]) for depth in range(1, len(parts) + 1))
    return levels


def _text(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value
