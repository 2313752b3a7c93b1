"""The persistent outbound queue and its runner.

`OutboundQueue.enqueue` writes the blob (synced), then the message and
recipient rows in one SQL transaction, and only then fires, so the 250
the submission client gets means the message survives a crash.

`QueueRunner` leases due recipient rows, makes one connection per
(message, destination domain) carrying all of that domain's recipients,
and records each recipient's outcome: delivered, retried later with
exponential backoff, failed (5xx) or expired.  Failed and expired
recipients owe the sender a DSN, which `Bouncer` delivers through the MDA
(local sender) or the queue (remote sender); so do recipients still
pending `delay_warning` seconds after queuing, once, with a "delayed" DSN.
Leases run out, so the rows of a runner that crashed are taken over by
another runner after `lease_time`, or at once by the same runner (same
owner id) when it starts again; a delivery may then repeat, the SMTP
at-least-once norm.
"""
from __future__ import annotations

import socket
from collections import defaultdict

from twisted.internet import defer
from twisted.internet.defer import DeferredSemaphore
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from zope.interface import implementer

from emailsvc.addresses import normalize_domain
from emailsvc.delivery.client import Envelope
from emailsvc.delivery.dsn import RecipientStatus, build_dsn
from emailsvc.delivery.remote import DELIVERED, PERMANENT, TEMPORARY, Attempt
from emailsvc.errors import BlobNotFound, InvalidName
from emailsvc.interfaces import IQueue
from emailsvc.smtp.trace import queue_id as new_queue_id
from emailsvc.store.sql.queue import DELIVERED as ROW_DELIVERED, EXPIRED, FAILED, PENDING, Outcome


def retry_delay(attempts: int, initial: float, maximum: float) -> float:
    """Seconds to wait after the `attempts`-th failed attempt: `initial`,
    doubling each time, never more than `maximum` (Postfix-like)."""
    return min(initial * 2 ** max(attempts - 1, 0), maximum)


def recipient_domain(address: str) -> str:
    """The normalised domain of `address` (raises InvalidName)."""
    local, at, domain = address.rpartition("@")
    if not at or not local:
        raise InvalidName(f"invalid address: {address!r}")
    return normalize_domain(domain)


@implementer(IQueue)
class OutboundQueue:
    """Durable enqueueing over an SQLQueueStore and a blob store."""

    log = Logger()

    def __init__(self, store, blobs, clock):
        self.store = store
        self._blobs = blobs
        self._clock = clock
        #: Called without arguments after each enqueue (the runner's wake).
        self.listeners: list = []

    @defer.inlineCallbacks
    def enqueue(self, message, sender, recipients, envelope=None):
        pairs = [(recipient, recipient_domain(recipient)) for recipient in dict.fromkeys(recipients)]
        if not pairs:
            raise ValueError("no recipients")
        ident = new_queue_id()
        key = yield self._blobs.put(message)
        yield self.store.add(ident, key, len(message), sender, pairs, dict(envelope or {}),
                             int(self._clock.seconds()))
        self.log.info("{id}: queued from <{sender}> for {count} remote recipient(s)", id=ident,
                      sender=sender, count=len(pairs))
        for listener in list(self.listeners):
            listener()
        return ident


class Bouncer:
    """Sends DSNs to senders: into their mailbox when local, else queued."""

    log = Logger()

    def __init__(self, directory, mda, queue, blobs, hostname: str, clock):
        self._directory = directory
        self._mda = mda
        self._queue = queue
        self._blobs = blobs
        self._hostname = hostname
        self._clock = clock

    def notify(self, rows, expire_after: float):
        """Send one DSN for `rows` (failed recipients of one message).
        @return: Deferred firing once it is durable (or deliberately dropped)."""
        now = self._clock.seconds()
        statuses = []
        for row in rows:
            reply = row.last_reply or "No reply"
            if row.status == EXPIRED:
                reply = f"Gave up after {expire_after / 86400:g} days in the queue; last error: {reply}"
            statuses.append(RecipientStatus(row.recipient, "failed", reply, row.remote_host, now))
        return self._send(rows, statuses, now)

    def warn(self, rows, expire_after: float):
        """Send one delay DSN for `rows` (recipients of one message still
        being retried).  @return: Deferred as for `notify`."""
        statuses = [RecipientStatus(row.recipient, "delayed", row.last_reply or "Not attempted yet",
                                    row.remote_host, will_retry_until=row.created + expire_after)
                    for row in rows]
        return self._send(rows, statuses, self._clock.seconds())

    @defer.inlineCallbacks
    def _send(self, rows, statuses, now):
        first = rows[0]
        sender = first.sender
        if not sender:
            # Never bounce a bounce (RFC 5321 6.1): it could loop.
            return
        try:
            original = yield self._blobs.get(first.blob_key)
        except BlobNotFound:
            original = b""
        dsn = build_dsn(hostname=self._hostname, sender=sender, queue_id=first.queue_id,
                        arrival=first.created, now=now, statuses=statuses, message=original)
        resolution = yield self._directory.resolve(sender)
        if resolution.local_domain:
            if resolution.users:
                yield self._mda.deliver(dsn, [user.id for user in resolution.users], "")
            else:
                self.log.warn("{id}: DSN for <{sender}> dropped: no such local user", id=first.queue_id,
                              sender=sender)
                return
        else:
            yield self._queue.enqueue(dsn, "", [sender])
        self.log.info("{id}: DSN ({action}) sent to <{sender}> for {count} recipient(s)", id=first.queue_id,
                      action=statuses[0].action, sender=sender, count=len(rows))


class QueueRunner:
    """Leases due rows and delivers them; see the module docstring.

    @param remote: has `deliver(domain, Envelope, message)` -> Deferred of
        {recipient: Attempt} (a RemoteDelivery).
    @param bouncer: has `notify(rows, expire_after)` and `warn(rows,
        expire_after)` -> Deferred (a Bouncer).
    @param settings: the [queue] config section.
    """

    log = Logger()

    def __init__(self, store, blobs, remote, bouncer, clock, settings, owner: str | None = None):
        self.store = store
        self._blobs = blobs
        self._remote = remote
        self._bouncer = bouncer
        self._clock = clock
        self._settings = settings
        # Stable across restarts, so a restarted runner can take its own
        # rows back at once (see `start`).
        self.owner = owner or settings.runner_id or socket.gethostname()
        self._connections = DeferredSemaphore(settings.max_connections)
        self._domains: dict[str, DeferredSemaphore] = {}
        self._current: defer.Deferred | None = None
        self._waiters: list[defer.Deferred] = []
        self._again = False
        self._stopping = False
        self._loop: LoopingCall | None = None
        self._wake_call = None

    # Scheduling

    def start(self):
        """Release the rows a previous run under this runner's id still
        leases (it died holding them), then scan now and every
        `scan_interval` seconds.  @return: Deferred firing once scanning began."""
        self._stopping = False
        return self.store.release_owner(self.owner).addCallback(self._scan)

    def _scan(self, released):
        if released:
            self.log.info("runner {owner}: released {count} recipient(s) leased before a restart",
                          owner=self.owner, count=released)
        if self._stopping:
            return
        self._loop = LoopingCall(self.run_once)
        self._loop.clock = self._clock
        self._loop.start(self._settings.scan_interval, now=True)

    def stop(self):
        """Stop scanning. @return: Deferred firing when the current pass ends."""
        self._stopping = True
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        if self._wake_call is not None and self._wake_call.active():
            self._wake_call.cancel()
        if self._current is None:
            return defer.succeed(None)
        waiter = defer.Deferred()
        self._waiters.append(waiter)
        return waiter

    def wake(self):
        """New mail: scan now rather than at the next interval."""
        if self._stopping or self._loop is None:
            return
        if self._current is not None:
            self._again = True
        elif self._wake_call is None or not self._wake_call.active():
            self._wake_call = self._clock.callLater(0, self.run_once)

    def run_once(self):
        """One pass: deliver due rows, send owed DSNs, purge finished
        messages.  @return: Deferred firing when the pass is over."""
        waiter = defer.Deferred()
        self._waiters.append(waiter)
        if self._current is not None:
            self._again = True
            return waiter
        self._current = defer.ensureDeferred(self._pass())
        self._current.addErrback(lambda failure: self.log.failure("queue pass failed", failure))
        self._current.addBoth(self._pass_done)
        return waiter

    def _pass_done(self, _):
        self._current = None
        waiters, self._waiters = self._waiters, []
        again, self._again = self._again, False
        if again and not self._stopping:
            self._wake_call = self._clock.callLater(0, self.run_once)
        for waiter in waiters:
            waiter.callback(None)

    # One pass

    async def _pass(self):
        settings = self._settings
        now = int(self._clock.seconds())
        rows = await self.store.lease_due(self.owner, now, int(settings.lease_time), settings.batch_size)
        if len(rows) >= settings.batch_size:
            self._again = True  # a backlog: the next batch is due now, not at the next scan
        groups = defaultdict(list)
        for row in rows:
            groups[row.message_id, row.domain].append(row)
        if groups:
            await defer.DeferredList(
                [defer.ensureDeferred(self._deliver_group(group)) for group in groups.values()],
                consumeErrors=True,
            )
        await self._notify()
        await self.store.purge_finished()

    def _domain_limit(self, domain: str) -> DeferredSemaphore:
        semaphore = self._domains.get(domain)
        if semaphore is None:
            semaphore = self._domains[domain] = DeferredSemaphore(self._settings.max_per_domain)
        return semaphore

    async def _deliver_group(self, rows):
        domain = rows[0].domain
        limit = self._domain_limit(domain)
        await limit.acquire()
        try:
            await self._connections.acquire()
            try:
                if self._stopping:
                    await self.store.release(self.owner, [row.id for row in rows])
                    return
                await self._attempt(rows)
            finally:
                self._connections.release()
        finally:
            limit.release()
            if not limit.waiting and limit.tokens == limit.limit:
                self._domains.pop(domain, None)

    async def _attempt(self, rows):
        first = rows[0]
        envelope = Envelope(first.sender, tuple(row.recipient for row in rows),
                            bool(first.envelope.get("smtputf8")))
        try:
            message = await self._blobs.get(first.blob_key)
            results = await self._remote.deliver(first.domain, envelope, message)
        except Exception as problem:
            # Unknown errors are temporary (DESIGN.md section 3).
            self.log.failure("{id}: delivery to {domain} failed", id=first.queue_id, domain=first.domain)
            results = {row.recipient: Attempt(TEMPORARY, f"451 4.3.0 Local error ({type(problem).__name__})")
                       for row in rows}
        now = int(self._clock.seconds())
        outcomes = []
        for row in rows:
            attempt = results.get(row.recipient) or Attempt(TEMPORARY, "451 4.3.0 No outcome")
            outcomes.append(self._outcome(row, attempt, now))
            self.log.info("{id}: <{rcpt}> {status} via {host}: {reply}", id=row.queue_id, rcpt=row.recipient,
                          status=attempt.status, host=attempt.host or "-", reply=attempt.reply)
        await self.store.record(self.owner, outcomes, now)

    def _outcome(self, row, attempt: Attempt, now: int) -> Outcome:
        settings = self._settings
        attempts = row.attempts + 1
        owed = bool(row.sender)  # never a DSN for the null sender
        if attempt.status == DELIVERED:
            return Outcome(row.id, ROW_DELIVERED, attempts, now, attempt.reply, attempt.host)
        if attempt.status == PERMANENT:
            return Outcome(row.id, FAILED, attempts, now, attempt.reply, attempt.host, owed)
        expiry = row.created + int(settings.expire_after)
        if now >= expiry:
            return Outcome(row.id, EXPIRED, attempts, now, attempt.reply, attempt.host, owed)
        delay = int(retry_delay(attempts, settings.retry_initial, settings.retry_max))
        # The last try is made at the expiry time itself, not after it.
        return Outcome(row.id, PENDING, attempts, min(now + delay, expiry), attempt.reply, attempt.host)

    async def _notify(self):
        settings = self._settings
        now = int(self._clock.seconds())
        lease_time = int(settings.lease_time)
        if settings.delay_warning:
            rows = await self.store.lease_delay_warnings(self.owner, now, lease_time,
                                                         now - int(settings.delay_warning), settings.batch_size)
            await self._report(rows, self._bouncer.warn, self.store.warned)
        rows = await self.store.lease_notifications(self.owner, now, lease_time, settings.batch_size)
        await self._report(rows, self._bouncer.notify, self.store.notified)

    async def _report(self, rows, send, sent):
        """One DSN per message through `send`, then `sent` marks the rows
        (or they are released, to be tried again next pass)."""
        by_message = defaultdict(list)
        for row in rows:
            by_message[row.message_id].append(row)
        for group in by_message.values():
            ids = [row.id for row in group]
            try:
                await send(group, self._settings.expire_after)
            except Exception:
                self.log.failure("{id}: DSN could not be sent", id=group[0].queue_id)
                await self.store.release(self.owner, ids)
                continue
            await sent(self.owner, ids, int(self._clock.seconds()))
