"""The MX session: inbound policy and delivery for one SMTP connection."""
from __future__ import annotations

from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import implementer

from emailsvc.errors import SMTPReplyError
from emailsvc.interfaces import ISMTPSession
from emailsvc.smtp.trace import queue_id, received


@implementer(ISMTPSession)
class MXSession:
    """Accepts mail for local recipients only; never relays."""

    log = Logger()

    def __init__(self, *, directory, mda, hostname: str, clock, inflight):
        self._directory = directory
        self._mda = mda
        self._hostname = hostname
        self._clock = clock
        self._inflight = inflight
        self.peer_host = ""
        self.tls = False
        self.helo_name = ""
        self.extended = False
        self.reset()

    def connected(self, peer_host, peer_port, tls):
        self.peer_host = peer_host
        self.tls = tls

    def helo(self, name, extended):
        self.helo_name = name
        self.extended = extended

    def tls_started(self):
        self.tls = True

    def mail_from(self, sender, parameters):
        self.sender = sender
        self.utf8 = "SMTPUTF8" in parameters

    @defer.inlineCallbacks
    def rcpt_to(self, recipient, parameters):
        resolution = yield self._directory.resolve(recipient)
        if not resolution.local_domain:
            raise SMTPReplyError(550, "5.7.1", "Relaying denied")
        if not resolution.users:
            raise SMTPReplyError(550, "5.1.1", "No such user here")
        self.recipients.append(recipient)
        self.user_ids.extend(user.id for user in resolution.users)

    def data(self, message):
        ident = queue_id()
        trace = received(
            helo=self.helo_name, peer_ip=self.peer_host, peer_host=None, hostname=self._hostname,
            protocol=self._protocol(), ident=ident,
            recipient=self.recipients[0] if len(self.recipients) == 1 else None,
            when=self._clock.seconds(),
        )
        delivered = self._mda.deliver(trace + message, self.user_ids, self.sender)
        self._inflight.track(delivered)
        recipients = len(self.recipients)

        def done(records):
            self.log.info("{id}: delivered from <{sender}> to {n} recipients ({size} bytes)",
                          id=ident, sender=self.sender, n=recipients, size=len(message))
            return f"Ok: queued as {ident}"

        return delivered.addCallback(done)

    def _protocol(self) -> str:
        name = ("UTF8SMTP" if self.utf8 else "ESMTP") if self.extended else "SMTP"
        return name + ("S" if self.tls else "")

    def reset(self):
        self.sender = ""
        self.utf8 = False
        self.recipients: list[str] = []
        self.user_ids: list[int] = []

    def disconnected(self):
        self.reset()
