"""A fake authoritative DNS server on loopback (UDP and TCP) for tests.

    server = FakeDNSServer()
    server.start()                   # binds 127.0.0.1, port chosen by the OS
    self.addCleanup(server.stop)
    server.txt("example.org", "v=spf1 ip4:192.0.2.1 -all")
    server.a("mail.example.org", "192.0.2.1")
    server.servfail("broken.example")  # answers SERVFAIL
    resolver = make_resolver(DNSConfig(nameservers=[server.nameserver]), reactor)

Names not present answer NXDOMAIN; names present without the asked type
answer NOERROR with no data.  After `server.soa(ttl, minimum)` both carry
an SOA record in their authority section, as real servers' do (RFC 2308).
`queries` records every (name, type) asked, so tests can prove lookups went
over the wire.  Answers larger than 512 bytes are sent truncated (TC) over
UDP, so clients must retry over TCP.
"""
from __future__ import annotations

import ipaddress

from twisted.internet import defer, error
from twisted.names import dns, server
from twisted.names.common import ResolverBase
from twisted.names.error import DomainError


class _ServerFailure(Exception):
    """Makes the fake answer SERVFAIL."""


class FakeAuthority(ResolverBase):
    """Records by (lower-case name, type); every query is logged."""

    def __init__(self):
        super().__init__()
        self.records: dict[str, list[dns.RRHeader]] = {}
        self.failing: set[str] = set()
        self.silent: set[str] = set()
        self.queries: list[tuple[str, str]] = []
        self.soa: dns.RRHeader | None = None
        self._hanging: list[defer.Deferred] = []

    @property
    def negative_authority(self) -> list[dns.RRHeader]:
        """The authority section of a negative answer."""
        return [self.soa] if self.soa is not None else []

    def add(self, name: str, record, ttl: int = 60):
        key = name.lower().rstrip(".")
        header = dns.RRHeader(name=key, type=record.TYPE, cls=dns.IN, ttl=ttl, payload=record, auth=True)
        self.records.setdefault(key, []).append(header)

    def _lookup(self, name, cls, type, timeout):
        key = name.decode("ascii").lower().rstrip(".") if isinstance(name, bytes) else name.lower().rstrip(".")
        self.queries.append((key, dns.QUERY_TYPES.get(type, str(type))))
        if key in self.failing:
            return defer.fail(_ServerFailure(key))
        if key in self.silent:
            hanging = defer.Deferred()
            self._hanging.append(hanging)
            return hanging
        if key not in self.records and not any(other.endswith("." + key) for other in self.records):
            return defer.fail(DomainError(key))
        answers = [record for record in self.records.get(key, ()) if record.type == type]
        if not answers and type != dns.CNAME:
            aliases = [record for record in self.records.get(key, ()) if record.type == dns.CNAME]
            if aliases:
                answers = list(aliases)
                target = aliases[0].payload.name.name.decode("ascii").lower()
                answers += [record for record in self.records.get(target, ()) if record.type == type]
        return defer.succeed((answers, [] if answers else self.negative_authority, []))


class _Factory(server.DNSServerFactory):
    """Answers SERVFAIL quietly and truncates large UDP answers like real servers."""

    def gotResolverError(self, failure, protocol, message, address):
        if failure.check(_ServerFailure):
            response = self._responseFromMessage(message=message, rCode=dns.ESERVER)
        elif failure.check(DomainError):
            response = self._responseFromMessage(message=message, rCode=dns.ENAME,
                                                 authority=self.fake.negative_authority)
        else:
            return super().gotResolverError(failure, protocol, message, address)
        self.sendReply(protocol, response, address)

    def sendReply(self, protocol, message, address):
        if address is not None and len(message.toStr()) > 512:
            message.answers, message.authority, message.additional = [], [], []
            message.trunc = True
        return super().sendReply(protocol, message, address)

    def connectionLost(self, protocol):
        super().connectionLost(protocol)
        if not self.connections:
            waiters, self.idle = self.idle, []
            for waiter in waiters:
                waiter.callback(None)


class FakeDNSServer:
    """The fake authority served over UDP and TCP on 127.0.0.1."""

    def __init__(self, reactor=None):
        if reactor is None:
            from twisted.internet import reactor
        self.reactor = reactor
        self.authority = FakeAuthority()
        self.factory = _Factory(authorities=[self.authority])
        self.factory.fake = self.authority
        self.factory.noisy = False
        self.factory.idle = []
        self.udp = self.tcp = None
        self.port = 0

    @property
    def queries(self) -> list[tuple[str, str]]:
        return self.authority.queries

    @property
    def nameserver(self) -> str:
        """"127.0.0.1:PORT", for DNSConfig.nameservers."""
        return f"127.0.0.1:{self.port}"

    def start(self) -> str:
        """Bind UDP and TCP on the same free port; returns `nameserver`."""
        for _ in range(20):
            udp = self.reactor.listenUDP(0, dns.DNSDatagramProtocol(self.factory), interface="127.0.0.1")
            port = udp.getHost().port
            try:
                self.tcp = self.reactor.listenTCP(port, self.factory, interface="127.0.0.1")
            except error.CannotListenError:
                udp.stopListening()
                continue
            self.udp, self.port = udp, port
            return self.nameserver
        raise RuntimeError("no free port for the fake DNS server")

    def stop(self) -> defer.Deferred:
        """Close the ports and any TCP connection. @return: Deferred."""
        waits = []
        if self.factory.connections:
            idle = defer.Deferred()
            self.factory.idle.append(idle)
            waits.append(idle)
            for protocol in list(self.factory.connections):
                protocol.transport.loseConnection()
        for port in (self.udp, self.tcp):
            if port is not None:
                waits.append(defer.maybeDeferred(port.stopListening))
        self.udp = self.tcp = None
        return defer.gatherResults(waits)

    # Filling the zone.

    def a(self, name: str, *addresses: str):
        for address in addresses:
            self.authority.add(name, dns.Record_A(address))

    def aaaa(self, name: str, *addresses: str):
        for address in addresses:
            self.authority.add(name, dns.Record_AAAA(address))

    def mx(self, name: str, *exchanges: tuple[int, str]):
        for preference, exchange in exchanges:
            self.authority.add(name, dns.Record_MX(preference, exchange))

    def txt(self, name: str, *texts: str | bytes):
        """One TXT record per text; long texts are split into 255-byte strings."""
        for text in texts:
            data = text.encode("utf-8") if isinstance(text, str) else text
            chunks = [data[i : i + 255] for i in range(0, len(data), 255)] or [b""]
            self.authority.add(name, dns.Record_TXT(*chunks))

    def ptr(self, address: str, *names: str):
        reverse = ipaddress.ip_address(address).reverse_pointer
        for name in names:
            self.authority.add(reverse, dns.Record_PTR(name))

    def cname(self, name: str, target: str):
        self.authority.add(name, dns.Record_CNAME(target))

    def soa(self, ttl: int, minimum: int):
        """Send an SOA record of `ttl` and MINIMUM `minimum` with negative answers."""
        record = dns.Record_SOA(mname="ns.test", rname="hostmaster.test", minimum=minimum)
        self.authority.soa = dns.RRHeader(name="test", type=dns.SOA, cls=dns.IN, ttl=ttl, payload=record, auth=True)

    def servfail(self, name: str):
        """Answer SERVFAIL for every query of `name`."""
        self.authority.failing.add(name.lower().rstrip("."))

    def drop(self, name: str):
        """Never answer queries of `name` (the client times out)."""
        self.authority.silent.add(name.lower().rstrip("."))

    def asked(self, name: str, rrtype: str | None = None) -> bool:
        """Whether `name` (of `rrtype`, if given) was queried."""
        name = name.lower().rstrip(".")
        return any(seen == name and (rrtype is None or kind == rrtype) for seen, kind in self.queries)


class DNSTestCase:
    """Mixin for trial TestCases: `self.dns` (a started FakeDNSServer) and
    `self.resolver` (emailsvc's resolver pointed at it, short timeout)."""

    dns_timeout = 1.0

    def setUp(self):
        from twisted.internet import reactor

        from emailsvc.config import DNSConfig
        from emailsvc.dns import close_resolver, make_resolver

        super().setUp()
        self.reactor = reactor
        self.dns = FakeDNSServer(reactor)
        self.dns.start()
        self.addCleanup(self.dns.stop)
        self.resolver = make_resolver(
            DNSConfig(nameservers=[self.dns.nameserver], timeout=self.dns_timeout, attempts=1), reactor
        )
        self.addCleanup(close_resolver, self.resolver)
