"""The MX session: inbound policy and delivery for one SMTP connection."""
from __future__ import annotations

from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import implementer

from emailsvc.checks import authres
from emailsvc.checks.model import SessionState
from emailsvc.errors import SMTPReplyError
from emailsvc.interfaces import ISMTPSession
from emailsvc.smtp.trace import queue_id, received

_REFUSING = ("reject", "tempfail")


def _enforce(verdict):
    """Turn a refusing verdict into its SMTP reply; pass others through."""
    if verdict.action in _REFUSING:
        raise verdict.reply
    return verdict


@implementer(ISMTPSession)
class MXSession:
    """Accepts mail for local recipients only; never relays."""

    log = Logger()

    def __init__(self, *, directory, mail, mda, pipeline, hostname: str, clock, inflight):
        self._directory = directory
        self._mail = mail
        self._mda = mda
        self._pipeline = pipeline
        self._hostname = hostname
        self._clock = clock
        self._inflight = inflight
        self.state = SessionState(peer_ip="")
        self.extended = False
        self.utf8 = False
        self.size = "0"
        self.user_ids: list[int] = []

    def connected(self, peer_host, peer_port, tls):
        self.state = SessionState(peer_ip=peer_host, peer_port=peer_port, tls=tls)
        return self._pipeline.connect(self.state).addCallback(_enforce)

    def helo(self, name, extended):
        self.state.helo = name
        self.extended = extended
        return self._pipeline.helo(self.state).addCallback(_enforce)

    def tls_started(self):
        self.state.tls = True

    def mail_from(self, sender, parameters):
        self.state.sender = sender
        self.utf8 = "SMTPUTF8" in parameters
        self.size = parameters.get("SIZE") or "0"
        return self._pipeline.mail(self.state).addCallback(_enforce)

    @defer.inlineCallbacks
    def rcpt_to(self, recipient, parameters):
        resolution = yield self._directory.resolve(recipient)
        if not resolution.local_domain:
            raise SMTPReplyError(550, "5.7.1", "Relaying denied")
        if not resolution.users:
            raise SMTPReplyError(550, "5.1.1", "No such user here")
        yield self._check_quota(resolution.users, parameters.get("SIZE") or self.size)
        _enforce((yield self._pipeline.rcpt(self.state, recipient)))
        self.state.recipients.append(recipient)
        self.user_ids.extend(user.id for user in resolution.users)

    @defer.inlineCallbacks
    def _check_quota(self, users, size):
        """452 4.2.2 when a recipient's mailboxes, plus the announced SIZE, exceed the quota."""
        for user in users:
            if user.quota is None:
                continue
            used = yield self._mail.usage(user.id)
            if used + int(size) > user.quota:
                raise SMTPReplyError(452, "4.2.2", "Mailbox full, try again later")

    @defer.inlineCallbacks
    def data(self, message):
        state = self.state
        state.message = message
        verdict = _enforce((yield self._pipeline.data(state)))
        ident = queue_id()
        recipients = list(state.recipients)
        trace = received(
            helo=state.helo or "", peer_ip=state.peer_ip, peer_host=state.reverse_name,
            hostname=self._hostname, protocol=self._protocol(), ident=ident,
            recipient=recipients[0] if len(recipients) == 1 else None, when=self._clock.seconds(),
        )
        junk = verdict.action == "junk"
        delivered = self._mda.deliver(trace + authres.apply(message, verdict), self.user_ids,
                                      state.sender or "", junk=junk)
        yield self._inflight.track(delivered)
        if junk:
            # The protocol logs every transaction with this id; say where it went.
            self.log.info("{id}: delivered to Junk", id=ident)
        return f"Ok: queued as {ident}"

    def _protocol(self) -> str:
        name = ("UTF8SMTP" if self.utf8 else "ESMTP") if self.extended else "SMTP"
        return name + ("S" if self.state.tls else "")

    def reset(self):
        self.state.reset()
        self.utf8 = False
        self.size = "0"
        self.user_ids = []

    def disconnected(self):
        self.reset()
