"""A small scriptable SMTP server on loopback for the delivery tests.

    server = FakeSMTPServer(reactor, tls_context=context)   # STARTTLS offered when given
    port = yield server.start()
    self.addCleanup(server.stop)
    server.rcpt_replies["bad@remote.test"] = b"550 5.1.1 No such user"
    ... server.received  -> [Received(sender, recipients, raw, message, tls, auth)]

`raw` is the DATA stream exactly as it came off the wire (up to and
including the terminating dot line); `message` is it unstuffed.
"""
from __future__ import annotations

import base64
from dataclasses import dataclass, field

from twisted.internet import defer
from twisted.internet.protocol import Factory
from twisted.protocols.basic import LineReceiver


@dataclass
class Received:
    sender: str
    recipients: list[str]
    raw: bytes
    message: bytes
    tls: bool
    auth: str | None
    helo: str = ""
    mail_line: bytes = b""


@dataclass
class Script:
    greeting: bytes = b"220 fake.test ESMTP"
    mail_reply: bytes = b"250 2.1.0 Ok"
    data_reply: bytes = b"250 2.0.0 Ok: queued"
    rcpt_replies: dict = field(default_factory=dict)
    extensions: list = field(default_factory=lambda: [b"PIPELINING", b"SIZE 10000000", b"8BITMIME"])
    auth: dict | None = None  # username -> password: offer AUTH PLAIN LOGIN


class FakeSMTP(LineReceiver):
    delimiter = b"\r\n"
    MAX_LENGTH = 1024 * 1024

    def connectionMade(self):
        self.script = self.factory.script
        self.factory.connections += 1
        self.tls = False
        self.sender = None
        self.recipients = []
        self.auth = None
        self.helo = ""
        self.mail_line = b""
        self._data = None
        self.sendLine(self.script.greeting)
        if not self.script.greeting.startswith(b"2"):
            self.transport.loseConnection()

    def lineReceived(self, line):
        if self._data is not None:
            self._data.append(line)
            if line == b".":
                raw = b"".join(chunk + b"\r\n" for chunk in self._data)
                body = b"".join((chunk[1:] if chunk.startswith(b".") else chunk) + b"\r\n"
                                for chunk in self._data[:-1])
                self._data = None
                reply = self.script.data_reply
                if reply.startswith(b"2"):
                    self.factory.received.append(Received(self.sender, list(self.recipients), raw, body,
                                                          self.tls, self.auth, self.helo, self.mail_line))
                self.sendLine(reply)
                self.sender, self.recipients = None, []
            return
        self.factory.commands.append(line)
        verb, _, rest = line.partition(b" ")
        verb = verb.upper()
        if verb == b"EHLO":
            self.helo = rest.decode()
            extensions = list(self.script.extensions)
            if self.factory.tls_context is not None and not self.tls:
                extensions.append(b"STARTTLS")
            if self.script.auth is not None:
                extensions.append(b"AUTH PLAIN LOGIN")
            lines = [b"fake.test"] + extensions
            for line_ in lines[:-1]:
                self.sendLine(b"250-" + line_)
            self.sendLine(b"250 " + lines[-1])
        elif verb == b"HELO":
            self.sendLine(b"250 fake.test")
        elif verb == b"STARTTLS":
            self.sendLine(b"220 2.0.0 Go ahead")
            self.clearLineBuffer()
            self.transport.startTLS(self.factory.tls_context)
            self.tls = True
        elif verb == b"AUTH":
            parts = rest.split()
            if parts[0].upper() == b"PLAIN" and len(parts) == 2:
                _, user, password = base64.b64decode(parts[1]).split(b"\0")
                if self.script.auth.get(user.decode()) == password.decode():
                    self.auth = user.decode()
                    self.sendLine(b"235 2.7.0 Ok")
                else:
                    self.sendLine(b"535 5.7.8 Bad credentials")
            else:
                self.sendLine(b"504 5.5.4 Not here")
        elif verb == b"MAIL":
            self.mail_line = line
            if self.script.auth is not None and self.auth is None:
                self.sendLine(b"530 5.7.0 Authentication required")
                return
            reply = self.script.mail_reply
            if reply.startswith(b"2"):
                self.sender = rest.split(b"<", 1)[1].split(b">", 1)[0].decode()
            self.sendLine(reply)
        elif verb == b"RCPT":
            if self.sender is None:
                self.sendLine(b"503 5.5.1 MAIL first")
                return
            address = rest.split(b"<", 1)[1].split(b">", 1)[0].decode()
            reply = self.script.rcpt_replies.get(address, b"250 2.1.5 Ok")
            if reply.startswith(b"2"):
                self.recipients.append(address)
            self.sendLine(reply)
        elif verb == b"DATA":
            if not self.recipients:
                self.sendLine(b"554 5.5.1 No valid recipients")
                return
            self._data = []
            self.sendLine(b"354 End data with <CR><LF>.<CR><LF>")
        elif verb == b"RSET":
            self.sender, self.recipients = None, []
            self.sendLine(b"250 2.0.0 Ok")
        elif verb == b"QUIT":
            self.sendLine(b"221 2.0.0 Bye")
            self.transport.loseConnection()
        else:
            self.sendLine(b"502 5.5.2 Unknown command")

    def connectionLost(self, reason):
        self.factory.open.discard(self)


class FakeSMTPFactory(Factory):
    protocol = FakeSMTP
    noisy = False

    def __init__(self, script, tls_context):
        self.script = script
        self.tls_context = tls_context
        self.received: list[Received] = []
        self.commands: list[bytes] = []
        self.connections = 0
        self.open: set = set()

    def buildProtocol(self, addr):
        protocol = super().buildProtocol(addr)
        self.open.add(protocol)
        return protocol


class FakeSMTPServer:
    def __init__(self, reactor, tls_context=None, script: Script | None = None, interface="127.0.0.1", port=0):
        self.reactor = reactor
        self.factory = FakeSMTPFactory(script or Script(), tls_context)
        self.interface = interface
        self.port_number = port
        self.port = None

    @property
    def script(self) -> Script:
        return self.factory.script

    @property
    def received(self):
        return self.factory.received

    def start(self) -> int:
        self.port = self.reactor.listenTCP(self.port_number, self.factory, interface=self.interface)
        self.port_number = self.port.getHost().port
        return self.port_number

    def stop(self):
        waits = []
        for protocol in list(self.factory.open):
            protocol.transport.abortConnection()
        if self.port is not None:
            waits.append(defer.maybeDeferred(self.port.stopListening))
            self.port = None
        return defer.gatherResults(waits)
