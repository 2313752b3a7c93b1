"""A real IMAP server on loopback over the embedded store, for integration tests.

`IMAPTestCase.setUp` starts a SQLite store, a user alice@example.test
(password "secret one") with the default mailboxes, and two listeners: one
offering STARTTLS (`self.plain`) and one with implicit TLS (`self.tls`),
both using a self-signed certificate made by emailsvc.tls in a temp dir.
Clients (imaplib, imapclient, raw sockets) run in threads.
"""
from __future__ import annotations

import imaplib
import os
import socket
import ssl

from twisted.internet import defer, reactor
from twisted.internet.threads import deferToThread
from twisted.trial import unittest

from emailsvc import tls
from emailsvc.config import TLSConfig
from emailsvc.cred.throttle import AuthThrottle
from emailsvc.delivery.mda import MDA
from emailsvc.imap.factory import make_factory
from tests.store.test_sqlite import open_embedded

USER, PASSWORD = "alice@example.test", "secret one"
MAX_SIZE = 200_000
TIMEOUT = 15


def client_ssl_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


class IMAPTestCase(unittest.TestCase):
    timeout = 60

    @defer.inlineCallbacks
    def setUp(self):
        self.metadata, self.blobs = yield open_embedded(self)
        self.directory, self.mail = self.metadata.directory, self.metadata.mail
        yield self.directory.add_domain("example.test")
        self.user = yield self.directory.add_user(USER, PASSWORD)
        yield self.mail.provision_user(self.user.id)
        self.mda = MDA(self.mail, self.blobs)
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        cert, key = tls.ensure_certificate(TLSConfig(), directory, "localhost")
        self.certificate = cert
        self.tls_context = tls.server_context(cert, key)
        self.throttle = AuthThrottle(reactor, max_failures=50, failure_window=60, lockout=60, max_delay=0)
        self.factory = make_factory(self.directory, self.mail, self.blobs, self.throttle, reactor,
                                    tls_context=self.tls_context, max_message_size=MAX_SIZE)
        self.tls_factory = make_factory(self.directory, self.mail, self.blobs, self.throttle, reactor,
                                        implicit_tls=True, max_message_size=MAX_SIZE)
        plain = reactor.listenTCP(0, self.factory, interface="127.0.0.1")
        secure = reactor.listenSSL(0, self.tls_factory, self.tls_context, interface="127.0.0.1")
        self.addCleanup(plain.stopListening)
        self.addCleanup(secure.stopListening)
        self.plain = ("127.0.0.1", plain.getHost().port)
        self.tls = ("127.0.0.1", secure.getHost().port)

    def deliver(self, message: bytes, junk=False):
        return self.mda.deliver(message, [self.user.id], "sender@remote.example", junk=junk)

    def in_thread(self, function, *args):
        return deferToThread(function, *args)

    def raw_session(self, function, login=True):
        """`function(client)` on a RawClient over TLS (logged in unless told
        otherwise), in a thread; the client is closed after. @return: Deferred."""
        def run():
            client = RawClient(self.tls)
            try:
                if login:
                    client.login()
                return function(client)
            finally:
                client.close()

        return self.in_thread(run)

    def imaplib_client(self, login=True) -> imaplib.IMAP4_SSL:
        client = imaplib.IMAP4_SSL(*self.tls, ssl_context=client_ssl_context(), timeout=TIMEOUT)
        if login:
            client.login(USER, PASSWORD)
        return client

    def imapclient_client(self, login=True):
        import imapclient

        client = imapclient.IMAPClient(self.tls[0], port=self.tls[1], ssl=True,
                                       ssl_context=client_ssl_context(), timeout=TIMEOUT)
        if login:
            client.login(USER, PASSWORD)
        return client


class RawClient:
    """A line-level client over a TLS socket (or plain, for STARTTLS tests)."""

    def __init__(self, address, secure=True):
        sock = socket.create_connection(address, timeout=TIMEOUT)
        if secure:
            sock = client_ssl_context().wrap_socket(sock)
        self.sock = sock
        self.file = sock.makefile("rb")
        self.greeting = self.file.readline()

    def starttls(self):
        self.sock = client_ssl_context().wrap_socket(self.sock)
        self.file = self.sock.makefile("rb")

    def send(self, data: bytes):
        self.sock.sendall(data)

    def line(self) -> bytes:
        return self.file.readline()

    def read(self, size: int) -> bytes:
        return self.file.read(size)

    def command(self, tag: bytes, text: bytes) -> list[bytes]:
        """Send `tag text`, return every response line up to the tagged one (literals inlined)."""
        self.send(tag + b" " + text + b"\r\n")
        return self.until(tag)

    def until(self, tag: bytes) -> list[bytes]:
        lines = []
        while True:
            line = self.file.readline()
            if not line:
                raise ConnectionError("closed: " + repr(lines))
            while line.rstrip(b"\r\n").endswith(b"}") and b"{" in line:
                size = int(line.rstrip(b"\r\n").rsplit(b"{", 1)[1][:-1])
                line += self.file.read(size) + self.file.readline()
            lines.append(line)
            if line.startswith(tag + b" "):
                return lines

    def login(self):
        return self.command(b"L", b'LOGIN "%s" "%s"' % (USER.encode(), PASSWORD.encode()))

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass
