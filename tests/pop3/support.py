"""Shared fixtures for the POP3 tests: an embedded store with users and mail."""
import os

from twisted.internet import defer, reactor

from emailsvc.delivery.mda import MDA
from tests.store.test_sqlite import open_embedded

PASSWORD = "correct horse"

CRLF_MESSAGE = b"From: bob@remote.example\r\nSubject: crlf\r\n\r\nHello.\r\n.starts with a dot\r\n.\r\nbye\r\n"
LF_MESSAGE = b"From: bob@remote.example\nSubject: lf only\n\nline 1\n.hidden dot\n..two dots\nline 4\n"
DOT_MESSAGE = b"From: bob@remote.example\r\nSubject: dots\r\n\r\n.\r\n..\r\n.\r\n. \r\nno final line end"


def expected_served(stored: bytes) -> bytes:
    """What POP3 must serve for `stored`, computed independently of
    emailsvc.pop3.wire (valid for messages without bare CRs)."""
    served = stored.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    if served and not served.endswith(b"\r\n"):
        served += b"\r\n"
    return served


class MailFixture:
    """A started embedded store with alice and bob, and an MDA to fill their INBOX."""

    @defer.inlineCallbacks
    def start(self, testcase, users=("alice@example.test", "bob@example.test")):
        self.metadata, self.blobs = yield open_embedded(testcase)
        self.directory, self.mail = self.metadata.directory, self.metadata.mail
        yield self.directory.add_domain("example.test")
        self.users = {}
        for address in users:
            user = yield self.directory.add_user(address, PASSWORD)
            yield self.mail.provision_user(user.id)
            self.users[address.split("@")[0]] = user
        self.mda = MDA(self.mail, self.blobs)
        return self

    def deliver(self, message: bytes, user="alice"):
        """Deliver through the MDA. @return: Deferred firing with the MessageRecord."""
        d = self.mda.deliver(message, [self.users[user].id], "bob@remote.example")
        return d.addCallback(lambda records: records[0])

    @defer.inlineCallbacks
    def inbox(self, user="alice"):
        box = yield self.mail.get_mailbox(self.users[user].id, "INBOX")
        records = yield self.mail.list_messages(box.id)
        return box, records

    @defer.inlineCallbacks
    def stored(self, record) -> bytes:
        content = yield self.mail.get_content(record.content_id)
        data = yield self.blobs.get(content.blob_key)
        return data

    @defer.inlineCallbacks
    def served(self, record) -> bytes:
        """The message as POP3 must serve it (CRLF line ends)."""
        data = yield self.stored(record)
        return expected_served(data)


class CountingBlobs:
    """An IBlobStore proxy counting reads."""

    def __init__(self, blobs):
        self._blobs = blobs
        self.reads = []

    def get(self, key, offset=0, length=None):
        self.reads.append((key, offset, length))
        return self._blobs.get(key, offset, length)

    def __getattr__(self, name):
        return getattr(self._blobs, name)


class Listener:
    """A POP3 listener on 127.0.0.1 port 0, built by `build_factory` as service.py will."""

    def __init__(self, testcase, fixture, tls="starttls", limits=None, throttle=None):
        from types import SimpleNamespace

        from emailsvc import tls as tlsmodule
        from emailsvc.config import ListenerConfig, TLSConfig, parse
        from emailsvc.cred.throttle import AuthThrottle
        from emailsvc.pop3.factory import build_factory

        data_dir = os.path.abspath(testcase.mktemp())
        self.certificate, key = tlsmodule.ensure_certificate(TLSConfig(), data_dir, "pop.example.test")
        tls_context = tlsmodule.server_context(self.certificate, key)
        config = parse('[server]\nhostname = "pop.example.test"\n')
        if limits is not None:
            config = SimpleNamespace(server=config.server, pop3=limits)
        context = SimpleNamespace(
            config=config, reactor=reactor, tls_context=tls_context,
            store=SimpleNamespace(metadata=fixture.metadata, blobs=fixture.blobs),
            throttle=throttle or AuthThrottle(reactor, max_failures=50, failure_window=60, lockout=60),
        )
        self.factory = build_factory(context, ListenerConfig(port=0, tls=tls))
        self.connections = []
        build = self.factory.buildProtocol

        def build_and_track(address):
            server = build(address)
            server.lost = defer.Deferred()
            lost = server.connectionLost
            server.connectionLost = lambda reason: (lost(reason), server.lost.callback(None))
            self.connections.append(server)
            return server

        self.factory.buildProtocol = build_and_track
        if tls == "implicit":
            self.port = reactor.listenSSL(0, self.factory, tls_context, interface="127.0.0.1")
        else:
            self.port = reactor.listenTCP(0, self.factory, interface="127.0.0.1")
        testcase.addCleanup(self.port.stopListening)
        testcase.addCleanup(self.all_closed)
        self.address = ("127.0.0.1", self.port.getHost().port)

    @defer.inlineCallbacks
    def all_closed(self, timeout=5.0):
        """Wait until the server side of every connection is gone (a clean
        reactor for trial); abort what is still open after `timeout`."""
        from twisted.internet import task

        deadline = reactor.seconds() + timeout
        while any(not server.lost.called for server in self.connections) and reactor.seconds() < deadline:
            yield task.deferLater(reactor, 0.01, lambda: None)
        for server in self.connections:
            if not server.lost.called:
                server.transport.abortConnection()
                yield server.lost

    def ssl_context(self):
        """A client context trusting the listener's self-signed certificate."""
        import ssl

        context = ssl.create_default_context(cafile=self.certificate)
        return context
