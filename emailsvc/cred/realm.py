"""The realm: one avatar per protocol interface for an authenticated user."""
from __future__ import annotations

from twisted.cred.portal import IRealm
from twisted.internet import defer
from zope.interface import implementer


@implementer(IRealm)
class MailRealm:
    """Builds avatars with `factories[interface](user_id)` (may return a Deferred).

    Each protocol registers the factory for its interface (IMAP: IAccount,
    POP3: IMailbox, SMTP submission: ISMTPSession).
    """

    def __init__(self, factories: dict):
        self._factories = factories

    @defer.inlineCallbacks
    def requestAvatar(self, avatarId, mind, *interfaces):
        for interface in interfaces:
            factory = self._factories.get(interface)
            if factory is not None:
                avatar = yield factory(avatarId)
                logout = getattr(avatar, "logout", lambda: None)
                return interface, avatar, logout
        raise NotImplementedError("no avatar for " + ", ".join(i.__name__ for i in interfaces))
