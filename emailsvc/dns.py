"""The one DNS resolver of emailsvc, and small lookup helpers over it.

Everything goes through twisted.names with explicit record types (never
ANY) and short timeouts.  The helpers map "no such name" and "no data" to
an empty list, and server failures, refusals and timeouts to
`DNSTemporaryError`, which is what SPF, DKIM and DMARC call temperror.
"""
from __future__ import annotations

import ipaddress
import math
import re
import socket

from twisted.internet import defer
from twisted.logger import PredicateResult
from twisted.names import client, dns, error

from emailsvc.addresses import ascii_domain
from emailsvc.config import ConfigError, Problem

#: How many CNAMEs a helper follows when the server did not chase them.
MAX_CNAME_CHAIN = 8


class DNSTemporaryError(Exception):
    """A lookup failed in a way that may succeed later (SERVFAIL, timeout...)."""


def parse_nameserver(text: str) -> tuple[str, int]:
    """Split "host:port", "[v6]:port", a bare IPv4 or a bare IPv6 address.

    Raises ValueError when it is not an IP address with an optional port.
    """
    text = text.strip()
    host, port = text, 53
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError(f"not an address: {text!r}")
        if rest:
            port = _port(rest[1:], text)
    elif text.count(":") == 1:
        host, _, rest = text.partition(":")
        port = _port(rest, text)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"not an IP address: {text!r}") from None
    return host, port


def _port(text: str, whole: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"bad port in {whole!r}")
    return int(text)


def make_resolver(dns_config, reactor, config_path: str = "configuration"):
    """A twisted.names resolver for `dns_config` (a config.DNSConfig).

    Uses `dns_config.nameservers` when given, else the system's
    /etc/resolv.conf.  Each attempt waits `timeout` seconds; there are
    `attempts` of them, rotating over the servers.  A bad nameserver is a
    ConfigError naming its key.
    """
    servers = []
    problems = []
    for index, text in enumerate(dns_config.nameservers):
        try:
            servers.append(parse_nameserver(text))
        except ValueError as problem:
            problems.append(Problem(f"dns.nameservers[{index}]", str(problem)))
    if problems:
        raise ConfigError(config_path, problems)
    timeouts = (dns_config.timeout,) * dns_config.attempts
    if servers:
        resolver = client.Resolver(servers=servers, timeout=timeouts, reactor=reactor)
    else:
        resolver = client.Resolver(resolv="/etc/resolv.conf", timeout=timeouts, reactor=reactor)
    if dns_config.cache_ttl:
        return CachingResolver(resolver, reactor, dns_config.cache_ttl, dns_config.cache_entries)
    return resolver


class CachingResolver:
    """`query()` answers from memory while an answer's TTL (at most
    `max_ttl`) lasts, else asks `upstream` and keeps what it answered: up to
    `max_entries` answers with records, and as many negative ones apart, so
    a flood of blocklist misses cannot crowd out MX or SPF answers.

    "No such name" and "no data" answers are kept too, for the negative TTL
    of the SOA record the server sent with them (RFC 2308: the lower of the
    record's TTL and its MINIMUM field); one without an SOA is not kept.
    Most DNS blocklist lookups and many _dmarc lookups are negative, and
    each would otherwise go to the network for every message.

    twisted.names.client.createResolver chains a CacheResolver that nothing
    ever fills, so every lookup went to the network.  Entries expire when
    read; a full cache first drops its expired entries, then keeps no more.
    """

    def __init__(self, upstream, clock, max_ttl: float, max_entries: int):
        self.upstream = upstream
        self._clock = clock
        self._max_ttl = max_ttl
        self._max_entries = max_entries
        # query -> (expiry, the (answers, authority, additional), or the
        # dns.Message of a "no such name" answer)
        self._positive = _Entries()
        self._negative = _Entries()

    def query(self, query, timeout=None):
        for entries in (self._positive, self._negative):
            entry = entries.get(query)
            if entry is None:
                continue
            if entry[0] > self._clock.seconds():
                kept = entry[1]
                if isinstance(kept, dns.Message):  # no such name: a new error each time
                    return defer.fail(error.DNSNameError(kept))
                return defer.succeed(kept)
            del entries[query]
        return self.upstream.query(query, timeout).addCallbacks(
            self._keep, self._keep_no_such_name, callbackArgs=(query,), errbackArgs=(query,))

    def _keep(self, result, query):
        answers, authority, _ = result
        if answers:
            self._remember(self._positive, query, result, min(record.ttl for section in result for record in section))
        else:
            self._remember(self._negative, query, result, _negative_ttl(authority))
        return result

    def _keep_no_such_name(self, failure, query):
        if failure.check(error.DNSNameError):
            message = failure.value.args[0] if failure.value.args else None
            if isinstance(message, dns.Message):
                self._remember(self._negative, query, message, _negative_ttl(message.authority))
        return failure

    def _remember(self, entries, query, result, ttl):
        ttl = min(ttl, self._max_ttl)
        if ttl > 0:
            now = self._clock.seconds()
            # A full cache is scanned only once something in it may have
            # expired, not on every answer of a flood.
            if len(entries) >= self._max_entries and now >= entries.soonest:
                for key in [key for key, entry in entries.items() if entry[0] <= now]:
                    del entries[key]
                entries.soonest = min((entry[0] for entry in entries.values()), default=math.inf)
            if len(entries) < self._max_entries:
                entries[query] = (now + ttl, result)
                entries.soonest = min(entries.soonest, now + ttl)


class _Entries(dict):
    """query -> (expiry, answer), and a time no later than the earliest expiry."""

    soonest = math.inf


def _negative_ttl(authority) -> float:
    """How long a negative answer may be kept: from its SOA record, else 0."""
    return min((min(record.ttl, record.payload.minimum) for record in authority if record.type == dns.SOA),
               default=0)


_QUERY_PORT_LINES = re.compile(
    r"DNSDatagramProtocol starting on \d+|\(UDP Port \d+ Closed\)"
    r"|(?:Starting|Stopping) protocol <twisted\.names\.dns\.DNSDatagramProtocol object at 0x[0-9a-f]+>"
)


def drop_query_port_lines(event) -> PredicateResult:
    """A twisted.logger filter predicate: `no` for the four lines Twisted
    writes about the UDP port of every DNS query (port opened, protocol
    started and stopped, port closed), `maybe` for every other event.  A
    busy MX makes several queries a message, which made its log mostly
    these lines, each costing a worker CPU to relay.  (The Closed line
    does not name its protocol: the resolver's ports are the only UDP
    ports emailsvc opens.)"""
    text = event.get("log_text")
    if isinstance(text, str) and _QUERY_PORT_LINES.fullmatch(text):
        return PredicateResult.no
    return PredicateResult.maybe


def close_resolver(resolver) -> None:
    """Drop a resolver's open TCP connections and its resolv.conf re-read timer."""
    resolver = getattr(resolver, "upstream", resolver)
    for protocol in list(getattr(resolver, "connections", ())):
        protocol.transport.loseConnection()
    call = getattr(resolver, "_parseCall", None)
    if call is not None and call.active():
        call.cancel()


def dns_name(name: str) -> str | None:
    """The lower-case A-label form of `name` for a query, or None if invalid.

    Labels such as `_dmarc` or `_domainkey` are kept as they are; only
    non-ASCII labels go through IDNA.
    """
    name = name.strip().rstrip(".")
    if not name or len(name) > 253:
        return None
    labels = []
    for label in name.split("."):
        if not label.isascii():
            try:
                label = ascii_domain(label)
            except (UnicodeError, ValueError):
                return None
        if not 0 < len(label) < 64:
            return None
        labels.append(label.lower())
    result = ".".join(labels)
    return result if len(result) <= 253 else None


def valid_hostname(name: str) -> bool:
    """Whether `name` is a fully-qualified host name: two or more labels of
    letters, digits, hyphens (not first or last) and underscores."""
    ascii_name = dns_name(name)
    if ascii_name is None or "." not in ascii_name:
        return False
    return all(_HOST_LABEL.fullmatch(label) for label in ascii_name.split("."))


_HOST_LABEL = re.compile(r"(?!-)[a-z0-9_-]{1,63}(?<!-)")


def reverse_name(address: str) -> str:
    """The in-addr.arpa / ip6.arpa name of an IP address (raises ValueError)."""
    ip = ipaddress.ip_address(address)
    if ip.version == 6 and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return ip.reverse_pointer


def reversed_ip(address: str) -> str:
    """The IP reversed for a DNS list query: "4.3.2.1" or 32 nibbles for IPv6."""
    name = reverse_name(address)
    return name.rsplit(".", 2)[0]


_TEMPORARY = (
    error.DNSServerError,
    error.DNSQueryRefusedError,
    error.DNSFormatError,
    error.DNSNotImplementedError,
    error.DNSUnknownError,
    defer.TimeoutError,
    error.DNSQueryTimeoutError,
    error.DomainError,
    OSError,
)


@defer.inlineCallbacks
def _lookup(resolver, name: str, rrtype: int):
    """Records of `rrtype` for `name`, following CNAMEs the server left unchased.

    @return: Deferred firing with a list of record payloads.
    """
    query = dns_name(name)
    if query is None:
        return []
    for _ in range(MAX_CNAME_CHAIN + 1):
        try:
            answers, _authority, _additional = yield resolver.query(
                dns.Query(query, rrtype, dns.IN)
            )
        except (error.DNSNameError, error.AuthoritativeDomainError):
            return []
        except _TEMPORARY as failure:
            raise DNSTemporaryError(f"{dns.QUERY_TYPES.get(rrtype, rrtype)} {query}: {failure.__class__.__name__}") from None
        found = [answer.payload for answer in answers if answer.type == rrtype]
        if found:
            return found
        aliases = {
            answer.name.name.decode("ascii", "replace").lower(): answer.payload.name.name.decode("ascii", "replace")
            for answer in answers
            if answer.type == dns.CNAME
        }
        target = query
        while target in aliases:
            target = aliases.pop(target).lower().rstrip(".")
        if target == query:
            return []
        query = target
    raise DNSTemporaryError(f"CNAME chain too long at {name}")


def lookup_txt_bytes(resolver, name: str):
    """TXT records at `name`, each one's strings joined. @return: Deferred[list[bytes]]."""
    return _lookup(resolver, name, dns.TXT).addCallback(lambda records: [b"".join(record.data) for record in records])


def lookup_txt(resolver, name: str):
    """TXT records at `name` as text (UTF-8, bad bytes replaced). @return: Deferred[list[str]]."""
    return lookup_txt_bytes(resolver, name).addCallback(
        lambda records: [record.decode("utf-8", "replace") for record in records]
    )


def lookup_a(resolver, name: str):
    """IPv4 addresses of `name`. @return: Deferred[list[str]]."""
    return _lookup(resolver, name, dns.A).addCallback(lambda records: [record.dottedQuad() for record in records])


def lookup_aaaa(resolver, name: str):
    """IPv6 addresses of `name`. @return: Deferred[list[str]]."""
    return _lookup(resolver, name, dns.AAAA).addCallback(
        lambda records: [str(ipaddress.IPv6Address(socket.inet_ntop(socket.AF_INET6, record.address))) for record in records]
    )


def lookup_mx(resolver, name: str):
    """MX of `name` as (preference, exchange) sorted by preference. @return: Deferred[list]."""
    return _lookup(resolver, name, dns.MX).addCallback(
        lambda records: sorted(
            (record.preference, record.name.name.decode("ascii", "replace").rstrip(".").lower()) for record in records
        )
    )


def lookup_ptr(resolver, address: str):
    """Host names of an IP address (PTR). @return: Deferred[list[str]]."""
    try:
        name = reverse_name(address)
    except ValueError:
        return defer.succeed([])
    return lookup_ptr_name(resolver, name)


def lookup_addresses(resolver, name: str, version: int):
    """A (version 4) or AAAA (version 6) addresses of `name`. @return: Deferred[list[str]]."""
    return lookup_a(resolver, name) if version == 4 else lookup_aaaa(resolver, name)


def lookup_ptr_name(resolver, name: str):
    """PTR targets at the reverse name `name` ("4.3.2.1.in-addr.arpa"). @return: Deferred[list[str]]."""
    return _lookup(resolver, name, dns.PTR).addCallback(
        lambda records: [record.name.name.decode("ascii", "replace").rstrip(".").lower() for record in records]
    )
