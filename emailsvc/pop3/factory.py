"""The POP3 listener: server factory, limits, and `build_factory` for service.py."""
from __future__ import annotations


from twisted.cred.portal import Portal
from twisted.internet import protocol
from twisted.mail import pop3

from emailsvc.config import POP3Config
from emailsvc.cred.checker import DirectoryChecker
from emailsvc.cred.realm import MailRealm
from emailsvc.pop3.maildrop import MaildropFactory
from emailsvc.pop3.server import POP3Server


class POP3Factory(protocol.ServerFactory):
    """Builds `POP3Server` connections.

    @param realm: the IRealm giving pop3.IMailbox avatars.
    @param checker: a `DirectoryChecker`; each connection gets its own
        with `for_client(peer address)` for login throttling.
    @param hostname: the name in the greeting.
    @param tls_context: offered with STLS when given.
    @param implicit_tls: the listener wraps connections in TLS already.
    @param clock: IReactorTime for the idle timeout.
    @param loopback_plaintext: on a listener without TLS, let loopback
        clients log in in clear text (the embedded dev setup); everyone
        else always needs TLS.
    """

    protocol = POP3Server
    noisy = False

    def __init__(self, realm, checker, hostname: str, limits: POP3Config | None = None, tls_context=None,
                 implicit_tls: bool = False, clock=None, loopback_plaintext: bool = False):
        if clock is None:
            from twisted.internet import reactor as clock
        self.realm = realm
        self.checker = checker
        self.hostname = hostname
        self.limits = limits if limits is not None else POP3Config()
        self.tls_context = tls_context
        self.implicit_tls = implicit_tls
        self.clock = clock
        self.loopback_plaintext = loopback_plaintext

    def portal_for(self, address: str) -> Portal:
        """A portal whose checker throttles failures from `address`."""
        return Portal(self.realm, [self.checker.for_client(address)])


def build_factory(context, listener) -> POP3Factory:
    """The POP3 server factory for one listener.

    @param context: a `service.BuildContext` (config, reactor, store,
        tls_context, throttle).
    @param listener: a `config.ListenerConfig`; tls "starttls" offers STLS,
        "implicit" means the endpoint wraps TLS, "none" allows plaintext
        logins from loopback clients only.
    """
    metadata = context.store.metadata
    maildrops = MaildropFactory(metadata.mail, context.store.blobs)
    realm = MailRealm({pop3.IMailbox: maildrops})
    checker = DirectoryChecker(metadata.directory, context.throttle, context.reactor)
    return POP3Factory(
        realm, checker, context.config.server.hostname, context.config.pop3,
        tls_context=context.tls_context if listener.tls == "starttls" else None,
        implicit_tls=listener.tls == "implicit",
        clock=context.reactor,
        loopback_plaintext=listener.tls == "none",
    )
