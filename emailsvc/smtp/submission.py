"""Message submission (RFC 6409) on 587 (STARTTLS) and 465 (implicit TLS, RFC 8314).

`SubmissionServer` is the ESMTP protocol plus SMTP AUTH (RFC 4954) with the
PLAIN (RFC 4616) and LOGIN mechanisms, offered and accepted only once TLS
is active; logins go through twisted.cred (the shared directory checker,
throttled per client address and per account).  `SubmissionSession` is the
policy: nothing without AUTH, the envelope sender and the From: field must
be addresses the user owns, Date and Message-ID are added when missing,
the message is DKIM-signed and local recipients get it at once through the
MDA; with `save_to_sent` a copy of it as sent is filed in the user's \\Sent
mailbox too (best effort: a failure there is logged, never refused).  Remote
recipients go into the outbound queue (an IQueue), durably
before the 250; a session built without a queue refuses them with a
temporary reply (REMOTE_UNAVAILABLE) rather than accepting and dropping
them.
"""
from __future__ import annotations

import base64
import binascii
import os
from collections import deque
from email.utils import formatdate, getaddresses

from twisted.cred import credentials, error as cred_error
from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import implementer

from emailsvc.addresses import normalize_address, normalize_domain, split_address
from emailsvc.cred import passwords
from emailsvc.checks.headers import header_fields
from emailsvc.errors import InvalidName, SMTPReplyError
from emailsvc.interfaces import ISMTPSession, ISubmitter
from emailsvc.smtp.commands import reply
from emailsvc.smtp.server import CLOSED, ESMTPServer, LineTooLong, SMTPServerFactory
from emailsvc.smtp.trace import queue_id, received

MECHANISMS = (b"PLAIN", b"LOGIN")

AUTH_REQUIRED = (530, "5.7.0", "Authentication required")
BAD_CREDENTIALS = (535, "5.7.8", "Authentication credentials invalid")
TEMPORARY_FAILURE = (454, "4.7.0", "Temporary authentication failure")
NOT_OWNER = (553, "5.7.1", "Sender address not owned by the authenticated user")
FROM_NOT_OWNER = (553, "5.7.1", "From: address not owned by the authenticated user")
# A temporary reply: the recipient is fine and the message may be sent once
# the outbound queue runs; a 5xx would make clients give up on it for good.
REMOTE_UNAVAILABLE = (451, "4.3.0", "Delivery to remote domains is not available yet, try again later")
SENT = "\\Sent"


@implementer(ISubmitter)
class Submitter:
    """A user authenticated for submission, over the directory."""

    def __init__(self, user, directory):
        self.user = user
        self._directory = directory

    @defer.inlineCallbacks
    def owns(self, address):
        try:
            address = normalize_address(address)
        except InvalidName:
            return False
        if address == self.user.address:
            return True
        # Only an alias of this very address counts: resolve() would also
        # follow the domain's catch-all, which would let its owner send as
        # anyone in the domain.
        aliases = yield self._directory.list_aliases(address.rpartition("@")[2])
        if not any(alias.source == address for alias in aliases):
            return False
        resolution = yield self._directory.resolve(address)
        return any(user.id == self.user.id for user in resolution.users)


def submitter_factory(directory):
    """The realm factory for ISubmitter: user id -> Deferred Submitter."""

    def make(user_id):
        d = directory.get_user_by_id(user_id)

        def found(user):
            if user is None:  # removed between the password check and now
                raise cred_error.UnauthorizedLogin("no such user")
            return Submitter(user, directory)

        return d.addCallback(found)

    return make


class AuthenticationAborted(Exception):
    """The client sent "*" or an undecodable response; carries the reply."""


class SubmissionServer(ESMTPServer):
    """ESMTP with AUTH PLAIN/LOGIN after TLS, for `SubmissionFactory`."""

    # RFC 4954 section 4: a line of 12288 octets must be accepted for AUTH.
    max_command_length = 12288

    def __init__(self):
        super().__init__()
        self.submitter = None
        self._logout = None

    def extensions(self):
        ext = super().extensions()
        if self.tls_active:
            ext[b"AUTH"] = list(MECHANISMS)
        return ext

    def mail_parameters(self):
        parameters = super().mail_parameters()
        parameters["AUTH"] = _check_auth_parameter
        return parameters

    def smtp_AUTH(self, args):
        if not self.tls_active:
            # RFC 8314/3207: no credentials in clear text, not even refused ones.
            raise reply(530, "5.7.0", "Must issue a STARTTLS command first")
        if self.helo_name is None or not self.extended:
            raise reply(503, "5.5.1", "Send EHLO first")
        if self.submitter is not None:
            raise reply(503, "5.5.1", "Already authenticated")
        if self.transaction is not None:
            raise reply(503, "5.5.1", "Mail transaction in progress")
        parts = args.split()
        if not parts or len(parts) > 2:
            raise reply(501, "5.5.4", "Syntax: AUTH mechanism [initial-response]")
        mechanism = parts[0].upper()
        if mechanism not in MECHANISMS:
            raise reply(504, "5.5.4", "Unrecognized authentication type")
        initial = parts[1] if len(parts) == 2 else None
        d = defer.ensureDeferred(self._authenticate(mechanism, initial))
        d.addErrback(self._reply_failure)
        return d

    async def _authenticate(self, mechanism: bytes, initial: bytes | None):
        if mechanism == b"PLAIN":
            authzid, username, password = _parse_plain(await self._response(initial, b""))
            if authzid and authzid != username:
                # Acting for another user is not offered; say no more than for
                # a wrong password.
                raise reply(*BAD_CREDENTIALS)
        else:
            username = await self._response(initial, b"Username:")
            password = await self._response(None, b"Password:")
        try:
            portal = self.factory.portal_for(self.peer_host)
            _, avatar, logout = await portal.login(
                credentials.UsernamePassword(username, password), None, ISubmitter
            )
        except cred_error.UnauthorizedLogin:
            self._log.info("AUTH failed from {peer}", peer=self.peer)
            raise reply(*BAD_CREDENTIALS) from None
        except passwords.Busy:
            raise reply(*TEMPORARY_FAILURE) from None
        except Exception:
            self._log.failure("AUTH could not be checked for {peer}", peer=self.peer)
            raise reply(*TEMPORARY_FAILURE) from None
        if self._mode is CLOSED:
            logout()
            return
        self.submitter, self._logout = avatar, logout
        self.session.authenticated(avatar)
        self._log.info("AUTH {mechanism} as {user} from {peer}", mechanism=mechanism.decode(),
                       user=avatar.user.address, peer=self.peer)
        self.reply(235, "2.7.0", "Authentication successful")

    async def _response(self, initial: bytes | None, challenge: bytes) -> bytes:
        """One decoded client response: `initial` (from the AUTH line), else
        the answer to a 334 `challenge`."""
        if initial is None:
            self.reply(334, None, base64.b64encode(challenge).decode("ascii"))
            try:
                initial = await self.read_line()
            except LineTooLong:
                raise reply(500, "5.5.6", "Authentication exchange line is too long") from None
            if initial.strip() == b"*":
                raise reply(501, "5.0.0", "Authentication aborted")
        elif initial == b"=":
            return b""  # RFC 4954: "=" is an empty initial response
        try:
            return base64.b64decode(initial.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise reply(501, "5.5.2", "Cannot decode response") from None

    def connectionLost(self, reason=None):
        super().connectionLost(reason)
        logout, self._logout = self._logout, None
        if logout is not None:
            logout()


def _parse_plain(response: bytes) -> tuple[bytes, bytes, bytes]:
    """RFC 4616: [authzid] NUL authcid NUL passwd."""
    parts = response.split(b"\0")
    if len(parts) != 3 or not parts[1] or not parts[2]:
        raise reply(501, "5.5.2", "Malformed PLAIN response")
    return parts[0], parts[1], parts[2]


def _check_auth_parameter(value):
    """MAIL AUTH=<mailbox> or AUTH=<> (RFC 4954 section 5); informative only."""
    if not value:
        raise reply(501, "5.5.4", "Invalid AUTH value")


class SubmissionFactory(SMTPServerFactory):
    """Builds `SubmissionServer` connections.

    @param portal_for: peer address -> the twisted.cred Portal to log in with
        (so throttling knows the client address).
    """

    protocol = SubmissionServer

    def __init__(self, session_factory, hostname, limits, portal_for, **kwargs):
        super().__init__(session_factory, hostname, limits, **kwargs)
        self.portal_for = portal_for


class RateLimiter:
    """Messages per user in a sliding hour, on an injected clock."""

    def __init__(self, clock, per_hour: int):
        self._clock = clock
        self._per_hour = per_hour
        self._sent: dict[int, deque[float]] = {}

    def allowed(self, user_id: int) -> bool:
        if not self._per_hour:
            return True
        times = self._sent.get(user_id)
        if not times:
            return True
        cutoff = self._clock.seconds() - 3600
        while times and times[0] <= cutoff:
            times.popleft()
        return len(times) < self._per_hour

    def sent(self, user_id: int):
        if self._per_hour:
            self._sent.setdefault(user_id, deque()).append(self._clock.seconds())


def complete_headers(message: bytes, hostname: str, when: float) -> bytes:
    """`message` with Date and Message-ID fields added when missing (RFC 6409 8.2, 8.3)."""
    names = {field.name for field in header_fields(message)}
    added = b""
    if "date" not in names:
        added += f"Date: {formatdate(when, localtime=False)}\r\n".encode("ascii")
    if "message-id" not in names:
        unique = base64.b32encode(os.urandom(15)).decode("ascii").lower()
        added += f"Message-ID: <{unique}@{hostname}>\r\n".encode("ascii")
    return added + message


def from_addresses(message: bytes) -> list[str] | None:
    """The addresses of the one From: field, or None when there is not exactly one."""
    fields = [field for field in header_fields(message) if field.name == "from"]
    if len(fields) != 1:
        return None
    pairs = getaddresses([fields[0].text()])
    return [address for _, address in pairs]


@implementer(ISMTPSession)
class SubmissionSession:
    """Policy and delivery for one submission connection."""

    log = Logger()

    def __init__(self, *, directory, mda, signer, hostname: str, clock, inflight, rate_limiter=None, queue=None,
                 save_to_sent: bool = False):
        self._directory = directory
        self._save_to_sent = save_to_sent
        self._queue = queue
        self._mda = mda
        self._signer = signer
        self._hostname = hostname
        self._clock = clock
        self._inflight = inflight
        self._rate = rate_limiter
        self.submitter = None
        self.peer_host = ""
        self.helo_name = ""
        self.tls = False
        self.utf8 = False
        self.sender: str | None = None
        self.recipients: list[str] = []
        self.user_ids: list[int] = []
        self.remote: list[str] = []

    def connected(self, peer_host, peer_port, tls):
        self.peer_host = peer_host
        self.tls = tls

    def helo(self, name, extended):
        self.helo_name = name

    def tls_started(self):
        self.tls = True

    def authenticated(self, submitter):
        """AUTH succeeded: the connection now sends as `submitter` (an ISubmitter)."""
        self.submitter = submitter

    @defer.inlineCallbacks
    def mail_from(self, sender, parameters):
        if self.submitter is None:
            raise SMTPReplyError(*AUTH_REQUIRED)
        # The null sender is for bounces, which the server makes itself.
        if not sender or not (yield self.submitter.owns(sender)):
            raise SMTPReplyError(*NOT_OWNER)
        if self._rate is not None and not self._rate.allowed(self.submitter.user.id):
            raise SMTPReplyError(450, "4.7.0", "Sending rate limit reached, try again later")
        self.sender = sender
        self.utf8 = "SMTPUTF8" in parameters

    @defer.inlineCallbacks
    def rcpt_to(self, recipient, parameters):
        if self.submitter is None:
            raise SMTPReplyError(*AUTH_REQUIRED)
        local, _, domain = recipient.rpartition("@")
        if domain.startswith("["):
            raise SMTPReplyError(550, "5.7.1", "Address literal recipients are not accepted")
        try:
            split_address(recipient)
        except InvalidName:
            # Quoted local parts ("a@b"@x, "a b"@x) and postmaster without a
            # domain: not worth the relay risk.
            raise SMTPReplyError(553, "5.1.3", "Recipient address not accepted") from None
        resolution = yield self._directory.resolve(recipient)
        if not resolution.local_domain:
            if self._queue is None:
                raise SMTPReplyError(*REMOTE_UNAVAILABLE)
            if domain.endswith("."):
                raise SMTPReplyError(553, "5.1.3", "Recipient address not accepted")
            self.recipients.append(recipient)
            self.remote.append(recipient)
            return
        if not resolution.users:
            raise SMTPReplyError(550, "5.1.1", "No such user here")
        self.recipients.append(recipient)
        self.user_ids.extend(user.id for user in resolution.users)

    @defer.inlineCallbacks
    def data(self, message):
        submitter = self.submitter
        addresses = from_addresses(message)
        if not addresses:
            raise SMTPReplyError(550, "5.6.0", "The message needs exactly one From: field")
        for address in addresses:
            if not address or not (yield submitter.owns(address)):
                raise SMTPReplyError(*FROM_NOT_OWNER)
        now = self._clock.seconds()
        message = complete_headers(message, self._hostname, now)
        if self._signer is not None:
            domain = normalize_domain(addresses[0].rpartition("@")[2])
            message = yield self._signer.sign(message, domain)
        ident = queue_id()
        recipients = self.recipients
        trace = received(
            helo=self.helo_name, peer_ip=self.peer_host, peer_host=None, hostname=self._hostname,
            protocol=("UTF8SMTPSA" if self.utf8 else "ESMTPSA"), ident=ident,
            recipient=recipients[0] if len(recipients) == 1 else None, when=now,
        )
        # Both the local delivery and the queue entry are durable before
        # the 250; if one fails the client retries both (at least once).
        work = []
        if self.user_ids:
            work.append(self._mda.deliver(trace + message, self.user_ids, self.sender or ""))
        if self.remote:
            envelope = {"smtputf8": True} if self.utf8 else {}
            work.append(self._queue.enqueue(trace + message, self.sender or "", self.remote, envelope))
        done = defer.gatherResults(work, consumeErrors=True)
        done.addErrback(lambda failure: failure.value.subFailure)
        yield self._inflight.track(done)
        if self._save_to_sent:
            yield self._inflight.track(self._file_sent_copy(message, submitter.user, ident))
        if self._rate is not None:
            self._rate.sent(submitter.user.id)
        self.log.info("{id}: submitted by {user} for {local} local and {remote} remote recipient(s)",
                      id=ident, user=submitter.user.address, local=len(recipients) - len(self.remote),
                      remote=len(self.remote))
        return f"Ok: queued as {ident}"

    @defer.inlineCallbacks
    def _file_sent_copy(self, message, user, ident):
        """File `message` (signed, without our trace field) as seen in the
        user's Sent mailbox; the message is sent already, so a failure here
        is only logged."""
        try:
            record = yield self._mda.file_copy(message, user.id, SENT, ("\\Seen",))
        except Exception:
            self.log.failure("{id}: copy not saved in the Sent mailbox of {user}", id=ident, user=user.address)
            return
        if record is None:
            self.log.warn("{id}: {user} has no Sent mailbox: copy not saved", id=ident, user=user.address)

    def reset(self):
        self.sender = None
        self.utf8 = False
        self.recipients = []
        self.user_ids = []
        self.remote = []

    def disconnected(self):
        self.reset()
        self.submitter = None
