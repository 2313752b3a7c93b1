"""The IMAP listener's server factory, built from the service's BuildContext."""
from __future__ import annotations

from twisted.cred.portal import Portal
from twisted.internet import defer, protocol
from twisted.mail import imap4

from emailsvc.cred.checker import DirectoryChecker
from emailsvc.cred.realm import MailRealm
from emailsvc.imap.account import Account
from emailsvc.imap.server import IMAPServer
from emailsvc.spool import Spool

DEFAULT_MAX_MESSAGE_SIZE = 50 * 1024 * 1024


class IMAPFactory(protocol.ServerFactory):
    """Builds `IMAPServer` connections and enforces connection limits.

    @param portal_for: peer address -> a twisted.cred Portal whose checker
        throttles failures for that address.
    @param tls_context: offered with STARTTLS when given.
    @param implicit_tls: the endpoint wraps connections in TLS already.
    @param spool: the `emailsvc.spool.Spool` where a literal (an APPENDed
        message) waits while it is received.
    """

    protocol = IMAPServer

    def __init__(self, portal_for, clock, tls_context=None, implicit_tls=False,
                 max_message_size=DEFAULT_MAX_MESSAGE_SIZE, max_connections=1000, max_connections_per_ip=20,
                 spool=None):
        self.portal_for = portal_for
        self.spool = spool or Spool()
        self.clock = clock
        self.tls_context = tls_context
        self.implicit_tls = implicit_tls
        self.max_message_size = max_message_size
        self.max_connections = max_connections
        self.max_connections_per_ip = max_connections_per_ip
        self.connections = 0
        self.connections_per_ip: dict[str, int] = {}

    def connection_opened(self, server) -> bool:
        """Admit a connection (False when over a limit)."""
        host = server.peer_host
        if self.connections >= self.max_connections or \
                self.connections_per_ip.get(host, 0) >= self.max_connections_per_ip:
            return False
        self.connections += 1
        self.connections_per_ip[host] = self.connections_per_ip.get(host, 0) + 1
        return True

    def connection_closed(self, server):
        host = server.peer_host
        self.connections -= 1
        left = self.connections_per_ip.get(host, 1) - 1
        if left:
            self.connections_per_ip[host] = left
        else:
            self.connections_per_ip.pop(host, None)


def account_factory(directory, mail, blobs, max_message_size):
    """The realm's IAccount factory: user id -> Deferred `Account`."""

    @defer.inlineCallbacks
    def make(user_id):
        user = yield directory.get_user_by_id(user_id)
        if user is None:
            from twisted.cred.error import UnauthorizedLogin

            raise UnauthorizedLogin("Authentication failed")
        return Account(user, mail, blobs, max_message_size)

    return make


def make_factory(directory, mail, blobs, throttle, clock, tls_context=None, implicit_tls=False,
                 max_message_size=DEFAULT_MAX_MESSAGE_SIZE, spool=None) -> IMAPFactory:
    """An IMAPFactory over explicit parts (tests use this directly)."""
    realm = MailRealm({imap4.IAccount: account_factory(directory, mail, blobs, max_message_size)})
    checker = DirectoryChecker(directory, throttle, clock)

    def portal_for(address):
        return Portal(realm, [checker.for_client(address)])

    return IMAPFactory(portal_for, clock, tls_context, implicit_tls, max_message_size, spool=spool)


def build_factory(context, listener) -> IMAPFactory:
    """The IMAP factory for one listener (`context` is service.BuildContext,
    `listener` a config.ListenerConfig)."""
    smtp = getattr(context.config, "smtp", None)
    max_message_size = getattr(smtp, "max_message_size", None) or DEFAULT_MAX_MESSAGE_SIZE
    return make_factory(
        context.store.metadata.directory, context.store.metadata.mail, context.store.blobs, context.throttle,
        context.reactor,
        tls_context=context.tls_context if listener.tls == "starttls" else None,
        implicit_tls=listener.tls == "implicit",
        max_message_size=max_message_size,
        spool=context.spool,
    )
