"""The composition root: config in, a tree of named services out.

Children start in order and asynchronously (stores first, then listeners,
then background jobs); the first failure stops the whole start with one
clear log line and a non-zero exit.  Stopping runs in reverse and lets
in-flight work finish, up to `server.shutdown_timeout`.
"""
from __future__ import annotations

import gc
import os
import sys

from twisted.application.service import MultiService, Service
from twisted.internet import defer
from twisted.internet.endpoints import SSL4ServerEndpoint, TCP4ServerEndpoint, TCP6ServerEndpoint
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from emailsvc import plugins, tls
from emailsvc.spool import Spool

log = Logger()


class AsyncService(Service):
    """A named child whose start and stop may take time (Deferreds)."""

    def start(self) -> defer.Deferred:
        return defer.succeed(None)

    def stop(self) -> defer.Deferred:
        return defer.succeed(None)


class InFlight:
    """Counts work (a delivery, say) that a clean shutdown waits for."""

    def __init__(self):
        self._pending: set[defer.Deferred] = set()
        self._waiters: list[defer.Deferred] = []

    def track(self, deferred: defer.Deferred) -> defer.Deferred:
        """Remember `deferred` until it fires; returns it unchanged."""
        self._pending.add(deferred)

        def forget(result):
            self._pending.discard(deferred)
            if not self._pending:
                waiters, self._waiters = self._waiters, []
                for waiter in waiters:
                    if not waiter.called:
                        waiter.callback(None)
            return result

        return deferred.addBoth(forget)

    def __len__(self) -> int:
        return len(self._pending)

    def wait(self, clock, timeout: float) -> defer.Deferred:
        """Fire once nothing is pending, or after `timeout` seconds."""
        if not self._pending:
            return defer.succeed(None)
        waiter = defer.Deferred()
        self._waiters.append(waiter)
        timer = clock.callLater(timeout, lambda: waiter.called or waiter.callback(None))
        return waiter.addBoth(lambda result: (timer.active() and timer.cancel(), result)[1])


class ListenerService(AsyncService):
    """One listening port for one protocol factory."""

    def __init__(self, name: str, endpoint, factory, description: str):
        self.setName(name)
        self.endpoint = endpoint
        self.factory = factory
        self.description = description
        self.port = None

    @defer.inlineCallbacks
    def start(self):
        try:
            self.port = yield self.endpoint.listen(self.factory)
        except Exception as error:
            raise StartError(f"listener {self.name}: cannot listen on {self.description}: {error}") from error
        log.info("listener {name} on {where}", name=self.name, where=self.description)

    def stop(self):
        port, self.port = self.port, None
        return defer.maybeDeferred(port.stopListening) if port else defer.succeed(None)


class PeriodicService(AsyncService):
    """Runs `function()` (which may return a Deferred) every `interval` seconds."""

    def __init__(self, name: str, interval: float, function, clock):
        self.setName(name)
        self._loop = LoopingCall(self._run, function)
        self._loop.clock = clock
        self._interval = interval

    @staticmethod
    def _run(function):
        return defer.maybeDeferred(function).addErrback(
            lambda failure: log.failure("periodic job failed", failure)
        )

    def start(self):
        self._loop.start(self._interval, now=False)
        return defer.succeed(None)

    def stop(self):
        if self._loop.running:
            self._loop.stop()
        return defer.succeed(None)


class StoreService(AsyncService):
    """Starts and stops the metadata backend and blob store."""

    def __init__(self, metadata, blobs):
        self.setName("store")
        self.metadata = metadata
        self.blobs = blobs

    @defer.inlineCallbacks
    def start(self):
        yield self.metadata.start()
        yield self.blobs.start()

    @defer.inlineCallbacks
    def stop(self):
        yield self.blobs.stop()
        yield self.metadata.stop()


class ChecksService(AsyncService):
    """The DNS resolver and the inbound check pipeline built on it."""

    def __init__(self, config, reactor):
        from emailsvc.checks.plugins import build_pipeline
        from emailsvc.dns import make_resolver

        self.setName("checks")
        self.resolver = make_resolver(config.dns, reactor, config.path)
        self.pipeline = build_pipeline(config, self.resolver, reactor)

    def stop(self):
        from emailsvc.dns import close_resolver

        close_resolver(self.resolver)
        return defer.succeed(None)


class QueueService(AsyncService):
    """The outbound queue (built at once, so submission can enqueue) and
    its runner (started after the store)."""

    def __init__(self, config, reactor, store):
        from emailsvc.delivery.queue import OutboundQueue
        from emailsvc.store.sql.queue import SQLQueueStore

        self.setName("queue")
        self._config = config
        self._reactor = reactor
        self._store = store
        self.queue = OutboundQueue(SQLQueueStore(store.metadata.db), store.blobs, reactor)
        self.runner = None
        self.resolver = None

    def start(self):
        from emailsvc.delivery.mda import MDA
        from emailsvc.delivery.queue import Bouncer, QueueRunner
        from emailsvc.delivery.remote import RemoteDelivery
        from emailsvc.dns import make_resolver

        config = self._config
        hostname = config.server.hostname
        self.resolver = make_resolver(config.dns, self._reactor, config.path)
        remote = RemoteDelivery(self.resolver, self._reactor, config.queue, config.queue.helo_name or hostname)
        mda = MDA(self._store.metadata.mail, self._store.blobs)
        bouncer = Bouncer(self._store.metadata.directory, mda, self.queue, self._store.blobs, hostname,
                          self._reactor)
        self.runner = QueueRunner(self.queue.store, self._store.blobs, remote, bouncer, self._reactor,
                                  config.queue)
        self.queue.listeners.append(self.runner.wake)
        return self.runner.start()

    @defer.inlineCallbacks
    def stop(self):
        from emailsvc.dns import close_resolver

        if self.runner is not None:
            self.queue.listeners.remove(self.runner.wake)
            # Deliveries still running after the shutdown timeout keep their
            # leases, which run out: the rows are retried after a restart.
            finished = self.runner.stop()
            timer = self._reactor.callLater(self._config.server.shutdown_timeout,
                                            lambda: finished.called or finished.callback(None))
            yield finished
            if timer.active():
                timer.cancel()
            self.runner = None
        if self.resolver is not None:
            close_resolver(self.resolver)
            self.resolver = None


class StartError(Exception):
    """A child service could not start; the message is for the operator."""


def open_store(config, reactor) -> StoreService:
    """The configured metadata backend and blob store, not yet started;
    small messages go inline into the metadata store."""
    from emailsvc.store.inline import InlineBlobStore

    metadata = plugins.load("emailsvc.stores", config.store.metadata).from_config(config, reactor)
    blobs = plugins.load("emailsvc.blobstores", config.store.blobs).from_config(config, reactor)
    return StoreService(metadata, InlineBlobStore(metadata.mail, blobs, config.store.inline_max, reactor))


def endpoint_for(reactor, listener, tls_context):
    """The server endpoint of one listener (implicit TLS when configured)."""
    address, port = listener.address, listener.port
    if listener.tls == "implicit":
        return SSL4ServerEndpoint(reactor, port, tls_context, interface=address)
    if ":" in address:
        return TCP6ServerEndpoint(reactor, port, interface=address)
    return TCP4ServerEndpoint(reactor, port, interface=address)


class EmailService(MultiService):
    """The root service: named children started in order."""

    def __init__(self, reactor, shutdown_timeout: float):
        super().__init__()
        self._reactor = reactor
        self._shutdown_timeout = shutdown_timeout
        self.inflight = InFlight()
        self.started: defer.Deferred | None = None
        self._running_children: list[AsyncService] = []

    def startService(self):
        Service.startService(self)
        self.started = self._start_children()
        self.started.addErrback(self._failed)

    @defer.inlineCallbacks
    def _start_children(self):
        for child in self:
            yield child.start()
            child.running = True
            self._running_children.append(child)
        log.info("emailsvc started")

    def _failed(self, failure):
        reason = failure.value if failure.check(StartError) else failure.getTraceback()
        log.critical("emailsvc failed to start: {reason}", reason=reason)
        self._reactor.addSystemEventTrigger("after", "shutdown", _exit_failure)
        self._reactor.stop()

    @defer.inlineCallbacks
    def stopService(self):
        Service.stopService(self)
        if self.started is not None and not self.started.called:
            self.started.cancel()
        for child in reversed(self._running_children):
            if isinstance(child, ListenerService):
                yield child.stop()
                child.running = False
        if len(self.inflight):
            log.info("waiting for {n} transactions in flight", n=len(self.inflight))
        yield self.inflight.wait(self._reactor, self._shutdown_timeout)
        for child in reversed(self._running_children):
            if child.running:
                yield child.stop()
                child.running = False
        self._running_children.clear()
        log.info("emailsvc stopped")


def _smtp(context, listener):
    from emailsvc.delivery.mda import MDA
    from emailsvc.smtp.server import SMTPServerFactory
    from emailsvc.smtp.session import MXSession

    directory = context.store.metadata.directory
    mda = MDA(context.store.metadata.mail, context.store.blobs)
    hostname = context.config.server.hostname

    def session():
        return MXSession(directory=directory, mail=context.store.metadata.mail, mda=mda,
                         pipeline=context.checks.pipeline,
                         hostname=hostname, clock=context.reactor, inflight=context.inflight)

    return SMTPServerFactory(
        session, hostname, context.config.smtp,
        tls_context=context.tls_context if listener.tls == "starttls" else None,
        implicit_tls=listener.tls == "implicit", clock=context.reactor, spool=context.spool,
    )


def _submission(context, listener):
    from twisted.cred.portal import Portal

    from emailsvc.cred.checker import DirectoryChecker
    from emailsvc.cred.realm import MailRealm
    from emailsvc.delivery.dkim_sign import DKIMSigner
    from emailsvc.delivery.mda import MDA
    from emailsvc.interfaces import ISubmitter
    from emailsvc.smtp.submission import SubmissionFactory, SubmissionSession, submitter_factory

    directory = context.store.metadata.directory
    mda = MDA(context.store.metadata.mail, context.store.blobs)
    hostname = context.config.server.hostname
    signer = DKIMSigner.from_config(context.config, context.reactor)
    realm = MailRealm({ISubmitter: submitter_factory(directory)})
    checker = DirectoryChecker(directory, context.throttle, context.reactor)
    rate = context.submission_rate
    queue = context.queue.queue if context.queue is not None else None

    def session():
        return SubmissionSession(directory=directory, mda=mda, signer=signer, hostname=hostname,
                                 clock=context.reactor, inflight=context.inflight, rate_limiter=rate,
                                 queue=queue, save_to_sent=context.config.submission.save_to_sent)

    return SubmissionFactory(
        session, hostname, context.config.smtp,
        portal_for=lambda address: Portal(realm, [checker.for_client(address)]),
        tls_context=context.tls_context if listener.tls == "starttls" else None,
        implicit_tls=listener.tls == "implicit", clock=context.reactor, spool=context.spool,
    )


def _imap(context, listener):
    from emailsvc.imap.factory import build_factory

    return build_factory(context, listener)


def _pop3(context, listener):
    from emailsvc.pop3.factory import build_factory

    return build_factory(context, listener)


def _https(context, listener):
    from emailsvc.web.health import web_site

    return web_site(context.reactor)


def _metrics(context, listener):
    from emailsvc.web.metrics import metrics_site

    return metrics_site(reactor=context.reactor)


# Protocol name (listeners.*.protocol) -> builder of its server factory.
PROTOCOLS = {
    "smtp": _smtp, "submission": _submission, "imap": _imap, "pop3": _pop3, "https": _https, "metrics": _metrics,
}


class BuildContext:
    """What a protocol builder may use: config, reactor, store, checks, TLS,
    the in-flight tracker, the outbound queue (or None), and what listeners
    share: the login throttle of all protocols, the hourly limit of all
    submission listeners (587 and 465 count together), the spool where
    messages being received wait."""

    def __init__(self, config, reactor, store, checks, tls_context, inflight, queue):
        from emailsvc.cred.throttle import AuthThrottle
        from emailsvc.smtp.submission import RateLimiter

        self.config = config
        self.queue = queue
        self.submission_rate = RateLimiter(reactor, config.submission.max_messages_per_hour)
        self.checks = checks
        self.throttle = AuthThrottle(reactor, config.auth.max_failures, config.auth.failure_window,
                                     config.auth.lockout)
        self.reactor = reactor
        self.store = store
        self.tls_context = tls_context
        self.inflight = inflight
        self.spool = Spool.from_config(config)


def freeze_startup_objects():
    """Take every object alive now out of the cyclic garbage collector's walks.

    What a process builds before it serves (modules, configuration, services)
    lives until it exits, yet every full collection walked all of it: under
    IMAP load a worker paused 35 to 65 ms for each, stalling all its
    sessions, and about 13 ms once they are frozen (gc.freeze).  Call it
    once, in a process's entry point, after building the service.
    """
    gc.collect()
    gc.freeze()


def describe(listener) -> str:
    """`address:port (protocol, tls mode)` for log lines and errors."""
    where = f"[{listener.address}]:{listener.port}" if ":" in listener.address else f"{listener.address}:{listener.port}"
    return f"{where} ({listener.protocol}, tls {listener.tls})"


def build(config, reactor, adopted: dict[str, int] | None = None) -> EmailService:
    """The root service for `config`; nothing binds until it starts.

    In a worker process (see emailsvc.workers) `adopted` maps the names of
    the listeners it serves to the listening sockets it inherited; a worker
    runs no queue runner, no garbage collector and no search indexer.
    """
    from emailsvc.workers import AdoptedEndpoint, WorkerPool, pooled_listeners

    worker = adopted is not None
    pooled = pooled_listeners(config)
    served = {name: listener for name, listener in config.listeners.items()
              if (name in adopted if worker else name not in pooled)}
    root = EmailService(reactor, config.server.shutdown_timeout)
    store = open_store(config, reactor)
    store.setServiceParent(root)
    tls_context = None
    if any(listener.tls != "none" for listener in config.listeners.values()):
        cert, key = tls.ensure_certificate(config.tls, config.server.data_dir, config.server.hostname, config.path)
        tls_context = tls.server_context(cert, key, config.tls.min_version)
    checks = None
    if any(listener.protocol == "smtp" for listener in served.values()):
        checks = ChecksService(config, reactor)
        checks.setServiceParent(root)
    queue = None
    if config.queue.enabled and hasattr(store.metadata, "db"):
        queue = QueueService(config, reactor, store)
        if not worker:  # workers only enqueue; the main process runs the queue
            queue.setServiceParent(root)
    context = BuildContext(config, reactor, store, checks, tls_context, root.inflight, queue)
    for name, listener in served.items():
        factory = PROTOCOLS[listener.protocol](context, listener)
        if worker:
            implicit = tls_context if listener.tls == "implicit" else None
            endpoint = AdoptedEndpoint(reactor, adopted[name], listener.address, implicit)
        else:
            endpoint = endpoint_for(reactor, listener, tls_context)
        ListenerService(name, endpoint, factory, describe(listener)).setServiceParent(root)
    if pooled and not worker:
        WorkerPool(reactor, config, pooled).setServiceParent(root)
    db = getattr(store.metadata, "db", None)
    sqlite = getattr(db, "dialect", None) == "sqlite"
    if not worker:
        PeriodicService(
            "garbage-collector",
            config.store.gc_interval,
            lambda: store.metadata.mail.collect_garbage(store.blobs, config.store.orphan_grace),
            reactor,
        ).setServiceParent(root)
        if sqlite:
            from emailsvc.store.sql.indexer import SearchIndexer

            SearchIndexer(db, reactor).setServiceParent(root)
    if config.server.workers and sqlite:
        from emailsvc.store.sql.changes import POLL_INTERVAL, ChangeFeed

        feed = ChangeFeed(db, store.metadata.mail.notifier,
                          queue.queue.listeners if queue else ())
        PeriodicService("change-feed", POLL_INTERVAL, feed.poll, reactor).setServiceParent(root)
    return root


def _exit_failure():
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(1)
