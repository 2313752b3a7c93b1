"""Worker processes: the mail listeners served on every core.

With `server.workers = N` (N > 0) the main process binds the listening
sockets of the mail protocols (smtp, submission, imap, pop3) itself and
starts N copies of the service (`python -m emailsvc.workers`) that adopt
those sockets and accept on them; the kernel hands each connection to one
of them.  The main process keeps the schema, the queue runner, the garbage
collector, the search indexer and the web and metrics listeners.  All processes open the same
store, and `emailsvc.store.sql.changes` carries changes between them (IMAP
IDLE, the queue runner's wake-up).

A worker reports readiness on a pipe (fd 3) once all its listeners
accept; its log events come over its stdout as JSON and join the main
process's log with the worker as their system.  A worker that dies is
started again (with a growing delay when it keeps dying); a worker whose
main process is gone stops by itself.
"""
from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
import time

from twisted.internet import defer, protocol
from twisted.internet.interfaces import IStreamServerEndpoint
from twisted.internet.task import LoopingCall
from twisted.logger import (
    FilteringLogObserver, LogLevel, Logger, eventFromJSON, globalLogBeginner, globalLogPublisher, jsonFileLogObserver,
)
from twisted.protocols.tls import TLSMemoryBIOFactory
from zope.interface import implementer

from emailsvc.dns import drop_query_port_lines
from emailsvc.service import AsyncService, StartError, describe

POOLED_PROTOCOLS = frozenset({"smtp", "submission", "imap", "pop3"})
_CONTROL_FD = 3
_FIRST_SOCKET_FD = 4
_RESPAWN_DELAY, _RESPAWN_MAX_DELAY, _STABLE_AFTER = 1.0, 30.0, 10.0

log = Logger()


def pooled_listeners(config) -> dict:
    """The listeners the workers serve: none when `server.workers` is 0."""
    if not config.server.workers:
        return {}
    return {name: listener for name, listener in config.listeners.items() if listener.protocol in POOLED_PROTOCOLS}


def _family(address: str) -> int:
    return socket.AF_INET6 if ":" in address else socket.AF_INET


def bind(listener) -> socket.socket:
    """A non-blocking socket listening on the listener's address and port."""
    family = _family(listener.address)
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((listener.address, listener.port))
        sock.listen(1024)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


@implementer(IStreamServerEndpoint)
class AdoptedEndpoint:
    """A server endpoint over a listening socket inherited as `fd`."""

    def __init__(self, reactor, fd: int, address: str, tls_context=None):
        self._reactor = reactor
        self._fd = fd
        self._family = _family(address)
        self._tls_context = tls_context

    def listen(self, factory):
        if self._tls_context is not None:
            factory = TLSMemoryBIOFactory(self._tls_context, False, factory)
        os.set_blocking(self._fd, False)
        try:
            return defer.succeed(self._reactor.adoptStreamPort(self._fd, self._family, factory))
        except Exception:
            return defer.fail()
        finally:
            os.close(self._fd)  # the port holds its own duplicate


class WorkerProcess(protocol.ProcessProtocol):
    """One running worker, seen from the main process."""

    def __init__(self, system: str):
        self.system = system
        self.ready = defer.Deferred()
        self.ended = defer.Deferred()
        self.started_at = time.monotonic()
        self._buffers = {1: b"", 2: b""}

    def childDataReceived(self, fd, data):
        if fd == _CONTROL_FD:
            if not self.ready.called:
                self.ready.callback(self.transport.pid)
            return
        lines = (self._buffers[fd] + data).split(b"\n")
        self._buffers[fd] = lines.pop()
        for line in lines:
            self._relay(fd, line)

    def _relay(self, fd, line: bytes):
        text = line.decode("utf-8", "replace").rstrip("\r")
        if not text.strip():
            return
        event = None
        if fd == 1:
            try:
                event = eventFromJSON(text.lstrip("\x1e"))  # jsonFileLogObserver's record separator
            except ValueError:
                pass
        if event is None:
            event = {"log_format": "{line}", "line": text, "log_level": LogLevel.error if fd == 2 else LogLevel.info,
                     "log_namespace": __name__, "log_time": time.time()}
        event["log_system"] = self.system
        globalLogPublisher(event)

    def processEnded(self, reason):
        for fd in (1, 2):
            if self._buffers[fd]:
                self._relay(fd, self._buffers[fd])
        if not self.ready.called:
            self.ready.errback(RuntimeError(f"{self.system} exited before it was ready: {reason.value}"))
        self.ended.callback(reason.value)


class WorkerPool(AsyncService):
    """Binds the pooled listeners, runs `server.workers` workers and restarts them."""

    def __init__(self, reactor, config, listeners: dict):
        self.setName("workers")
        self._reactor = reactor
        self._config = config
        self._listeners = listeners
        self._sockets: dict[str, socket.socket] = {}
        self.workers: dict[int, WorkerProcess] = {}
        self._delays: dict[int, float] = {}
        self._stopping = False

    @defer.inlineCallbacks
    def start(self):
        """Bind, then start every worker; fires when all are ready."""
        for name, listener in self._listeners.items():
            try:
                self._sockets[name] = bind(listener)
            except OSError as error:
                self._close()
                raise StartError(f"listener {name}: cannot listen on {describe(listener)}: {error}") from error
            log.info("listener {name} on {where}, served by the workers", name=name, where=describe(listener))
        readies = [self._spawn(index).ready for index in range(1, self._config.server.workers + 1)]
        try:
            yield defer.gatherResults(readies, consumeErrors=True)
        except defer.FirstError as error:
            raise StartError(str(error.subFailure.value)) from None

    def _spawn(self, index: int) -> WorkerProcess:
        worker = WorkerProcess(f"worker-{index}")
        child_fds = {0: "w", 1: "r", 2: "r", _CONTROL_FD: "r"}
        args = [sys.executable, "-m", "emailsvc.workers", "--config", self._config.path]
        for offset, (name, sock) in enumerate(self._sockets.items()):
            child_fds[_FIRST_SOCKET_FD + offset] = sock.fileno()
            args += ["--listen", f"{name}={_FIRST_SOCKET_FD + offset}"]
        self.workers[index] = worker
        self._reactor.spawnProcess(worker, sys.executable, args, env=os.environ.copy(), childFDs=child_fds)
        worker.ready.addCallback(lambda pid: log.info("{system} running (pid {pid})", system=worker.system, pid=pid))
        worker.ended.addCallback(self._ended, index, worker)
        return worker

    def _ended(self, reason, index: int, worker: WorkerProcess):
        if self._stopping or self.workers.get(index) is not worker:
            return
        stable = time.monotonic() - worker.started_at > _STABLE_AFTER
        delay = _RESPAWN_DELAY if stable else self._delays.get(index, _RESPAWN_DELAY)
        self._delays[index] = min(delay * 2, _RESPAWN_MAX_DELAY)
        log.warn("{system} ended ({reason}); starting it again in {delay:.0f} s",
                 system=worker.system, reason=reason, delay=delay)
        self._reactor.callLater(delay, self._respawn, index)

    def _respawn(self, index: int):
        if not self._stopping:
            # A worker that dies before it is ready is logged by _ended.
            self._spawn(index).ready.addErrback(lambda _: None)

    @defer.inlineCallbacks
    def stop(self):
        """SIGTERM every worker; SIGKILL those still running after the shutdown timeout."""
        self._stopping = True
        running = [worker for worker in self.workers.values() if not worker.ended.called]
        for worker in running:
            _signal(worker, "TERM")
        timer = self._reactor.callLater(self._config.server.shutdown_timeout + 5,
                                        lambda: [_signal(worker, "KILL") for worker in running])
        yield defer.DeferredList([worker.ended for worker in running])
        if timer.active():
            timer.cancel()
        self._close()

    def _close(self):
        for sock in self._sockets.values():
            sock.close()
        self._sockets.clear()


def _signal(worker: WorkerProcess, name: str):
    try:
        worker.transport.signalProcess(name)
    except Exception:  # already gone
        pass


def _parse(argv):
    parser = argparse.ArgumentParser(prog="python -m emailsvc.workers",
                                     description="An emailsvc worker; started by the main process.")
    parser.add_argument("--config", required=True)
    parser.add_argument("--listen", action="append", default=[], metavar="NAME=FD")
    args = parser.parse_args(argv)
    adopted = {}
    for item in args.listen:
        name, _, fd = item.partition("=")
        adopted[name] = int(fd)
    return args.config, adopted


class _Ready(AsyncService):
    """The last child of a worker's service: tells the main process it accepts."""

    def start(self):
        os.write(_CONTROL_FD, b"ready\n")
        return defer.succeed(None)


class _BatchedLog:
    """A text file for the JSON log observer that writes to the main
    process's pipe once per reactor iteration rather than once per event
    (the observer flushes after every event; `flush` here only schedules)."""

    def __init__(self, reactor, fd: int = 1):
        self._reactor = reactor
        self._fd = fd
        self._pending: list[str] = []

    def write(self, text: str):
        if not self._pending:
            self._reactor.callLater(0, self.drain)
        self._pending.append(text)

    def flush(self):
        pass

    def drain(self):
        data, self._pending = "".join(self._pending).encode("utf-8"), []
        while data:
            data = data[os.write(self._fd, data):]


def relay_observer(out):
    """The log observer of a worker: each event as JSON to `out` (for the
    main process to log), but for DNS query port chatter."""
    return FilteringLogObserver(jsonFileLogObserver(out), [drop_query_port_lines])


def main(argv=None):
    """Serve the adopted listeners until SIGTERM or until the main process is gone."""
    from twisted.internet import reactor

    from emailsvc.config import load
    from emailsvc.service import build, freeze_startup_objects

    path, adopted = _parse(argv)
    out = _BatchedLog(reactor)
    globalLogBeginner.beginLoggingTo([relay_observer(out)], redirectStandardIO=False)
    root = build(load(path), reactor, adopted=adopted)
    _Ready().setServiceParent(root)
    freeze_startup_objects()
    parent = os.getppid()

    def stop():
        if watch.running:
            watch.stop()
            reactor.stop()

    # SIGINT from a terminal reaches the whole process group: the main
    # process relays it as SIGTERM, so a worker heeds SIGTERM alone.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda *_: reactor.callFromThread(stop))
    watch = LoopingCall(lambda: os.getppid() == parent or stop())
    watch.start(0.5, now=False)
    reactor.callWhenRunning(root.startService)
    reactor.addSystemEventTrigger("before", "shutdown", root.stopService)
    reactor.run(installSignalHandlers=False)
    out.drain()


if __name__ == "__main__":
    main()
