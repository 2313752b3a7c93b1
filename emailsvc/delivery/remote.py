"""Remote delivery of one message to the recipients of one domain.

The route is the smarthost when one is configured, else the domain's MX
hosts in preference order (RFC 5321 5.1: equal preferences shuffled; no
MX means the domain's own A/AAAA; a null MX, RFC 7505, means the domain
takes no mail).  Hosts are tried in turn until one of them gives final
answers; only connection-level failures move on to the next host.
"""
from __future__ import annotations

import ipaddress
import random
from dataclasses import dataclass

from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint
from twisted.internet.protocol import Factory
from twisted.internet import defer
from twisted.logger import Logger

from emailsvc import tls
from emailsvc.addresses import ascii_domain
from emailsvc.delivery.client import Envelope, SessionOptions, SMTPClientError, SMTPClientProtocol, quit, run_session
from emailsvc.dns import DNSTemporaryError, lookup_a, lookup_aaaa, lookup_mx

DELIVERED, TEMPORARY, PERMANENT = "delivered", "temporary", "permanent"
#: Addresses tried per attempt, over all hosts (Postfix: smtp_mx_address_limit).
MAX_ADDRESSES = 10


@dataclass(frozen=True)
class Attempt:
    """The outcome of one attempt for one recipient."""

    status: str  # DELIVERED, TEMPORARY or PERMANENT
    reply: str  # "250 2.0.0 Ok", or our own account of a failure
    host: str = ""


class RemoteDelivery:
    """Sends messages to other domains' servers (or the smarthost).

    @param settings: the [queue] config section.
    """

    log = Logger()

    def __init__(self, resolver, reactor, settings, helo: str, random_source=None):
        self._resolver = resolver
        self._reactor = reactor
        self._settings = settings
        self._helo = helo
        self._random = random_source or random.Random()

    def deliver(self, domain: str, envelope: Envelope, message: bytes):
        """@return: Deferred firing with {recipient: Attempt}."""
        return defer.ensureDeferred(self._deliver(domain, envelope, message))

    async def _deliver(self, domain, envelope, message):
        settings = self._settings
        smarthost = bool(settings.smarthost)
        if smarthost:
            routes = [(settings.smarthost, settings.smarthost_port)]
        else:
            try:
                routes = await self._mx_routes(domain)
            except DNSTemporaryError as problem:
                return _all(envelope, Attempt(TEMPORARY, f"451 4.4.3 DNS lookup failed: {problem}"))
            except _NoRoute as problem:
                return _all(envelope, Attempt(PERMANENT, problem.reply))
        last = "451 4.4.1 No answer from any mail exchanger"
        tried = 0
        for host, port in routes:
            try:
                addresses = await self._addresses(host)
            except DNSTemporaryError as problem:
                last = f"451 4.4.3 DNS lookup of {host} failed: {problem}"
                continue
            if not addresses:
                last = f"451 4.4.4 Mail exchanger {host} has no address"
                continue
            for address in addresses:
                if tried >= MAX_ADDRESSES:
                    break
                tried += 1
                try:
                    replies = await self._session(host, address, port, envelope, message, smarthost)
                except SMTPClientError as problem:
                    self.log.info("{host}[{address}]: {problem}", host=host, address=address, problem=problem.text)
                    if not problem.temporary:
                        return _all(envelope, Attempt(PERMANENT, _reply_text(problem), host))
                    last = _reply_text(problem, f"451 4.4.2 {host}[{address}]: {problem.text}")
                    continue
                except Exception as problem:  # refused, unreachable, timed out, TLS failure...
                    self.log.info("{host}[{address}]:{port}: {problem}", host=host, address=address, port=port,
                                  problem=problem)
                    last = f"451 4.4.1 {host}[{address}]: connection failed"
                    continue
                results = {}
                for recipient in envelope.recipients:
                    reply = replies.get(recipient)
                    if reply is None:
                        results[recipient] = Attempt(TEMPORARY, "451 4.4.2 No reply for this recipient", host)
                    elif reply.positive:
                        results[recipient] = Attempt(DELIVERED, str(reply), host)
                    else:
                        results[recipient] = Attempt(TEMPORARY if reply.code < 500 else PERMANENT, str(reply), host)
                return results
        return _all(envelope, Attempt(TEMPORARY, last))

    async def _mx_routes(self, domain: str) -> list[tuple[str, int]]:
        name = ascii_domain(domain)
        records = await lookup_mx(self._resolver, name)
        port = self._settings.remote_port
        if not records:
            # RFC 5321 5.1: the domain itself is the implicit MX.
            addresses = await self._addresses(name)
            if not addresses:
                raise _NoRoute(f"550 5.1.2 Domain {domain} has no mail exchanger")
            return [(name, port)]
        hosts = [(preference, host) for preference, host in records if host]
        if not hosts:
            raise _NoRoute(f"556 5.1.10 Domain {domain} accepts no mail (null MX)")
        shuffled = sorted((preference, self._random.random(), host) for preference, host in hosts)
        return [(host, port) for _, _, host in shuffled]

    async def _addresses(self, host: str) -> list[str]:
        if _is_ip(host):
            return [host]
        found = list(await lookup_a(self._resolver, host))
        try:
            found += await lookup_aaaa(self._resolver, host)
        except DNSTemporaryError:
            if not found:
                raise
        return found

    async def _session(self, host, address, port, envelope, message, smarthost):
        settings = self._settings
        if smarthost:
            mode = "required" if settings.smarthost_username else settings.tls
            context = tls.client_context(host, verify=settings.smarthost_verify)
            options = SessionOptions(self._helo, mode, context, settings.smarthost_username,
                                     settings.smarthost_password, settings.data_timeout)
        else:
            options = SessionOptions(self._helo, settings.tls, tls.client_context(host, verify=False), "", "",
                                     settings.data_timeout)
        endpoint_class = TCP6ClientEndpoint if ":" in address else TCP4ClientEndpoint
        endpoint = endpoint_class(self._reactor, address, port, timeout=settings.connect_timeout)
        protocol = SMTPClientProtocol(self._reactor, settings.command_timeout)
        await endpoint.connect(_OneConnection(protocol))
        try:
            return await run_session(protocol, envelope, message, options)
        finally:
            await quit(protocol)


class _OneConnection(Factory):
    """Hands out one protocol instance, without a log line per connection."""

    noisy = False

    def __init__(self, protocol):
        self._protocol = protocol

    def buildProtocol(self, addr):
        return self._protocol


class _NoRoute(Exception):
    def __init__(self, reply: str):
        super().__init__(reply)
        self.reply = reply


def _all(envelope, attempt):
    return {recipient: attempt for recipient in envelope.recipients}


def _reply_text(problem: SMTPClientError, fallback: str | None = None) -> str:
    if problem.reply is not None:
        return str(problem.reply)
    return fallback or f"451 4.4.2 {problem.text}"


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
