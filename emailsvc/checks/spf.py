"""SPF (RFC 7208) of the MAIL FROM identity, or of HELO for the null sender.

pyspf looks names up synchronously.  So that the reactor never blocks, its
query runs against answers we already have: a name not yet resolved is a
"miss" that stops the run; the misses are resolved asynchronously with
twisted.names and the evaluation starts again, until it runs without a
miss.  pyspf itself enforces the RFC 7208 limits (10 DNS mechanisms, 2
void lookups, 10 MX or PTR names), so the rounds are bounded.
"""
from __future__ import annotations

import ipaddress

import spf as pyspf
from twisted.internet import defer
from zope.interface import implementer

from emailsvc import dns
from emailsvc.checks.authres import resinfo
from emailsvc.interfaces import ICheck
from emailsvc.checks.model import CheckResult

#: Safety net on evaluation rounds; pyspf's own limits stop well before.
MAX_ROUNDS = 100
#: RFC 7208 4.6.4: at least 20 seconds for the whole evaluation.
TIME_LIMIT = 20.0

_ENHANCED = {"fail": "5.7.23", "softfail": "5.7.23", "temperror": "4.7.24", "permerror": "5.7.24"}
_TEMPORARY = object()


class _Miss(Exception):
    """A name pyspf asked for that has not been resolved yet."""


class _CacheOnlyQuery(pyspf.query):
    """A pyspf query whose DNS answers come only from `answers`.

    Replaces pyspf's `dns()`; keeps its name checks and void-lookup count.
    """

    def __init__(self, answers, misses, **kwargs):
        self._answers = answers
        self._misses = misses
        super().__init__(**kwargs)

    def dns(self, name, qtype, cnames=None, ignore_void=False):
        name = str(name or "").rstrip(".").lower()
        if not name or not all(0 < len(label) < 64 for label in name.split(".")):
            return []
        key = (name, qtype)
        if key not in self._answers:
            self._misses.add(key)
            raise _Miss(key)
        found = self._answers[key]
        if found is _TEMPORARY:
            raise pyspf.TempError(f"DNS error looking up {qtype} {name}")
        if not found and not ignore_void:
            self.void_lookups += 1
            if self.void_lookups > pyspf.MAX_VOID_LOOKUPS:
                raise pyspf.PermError(f"Void lookup limit of {pyspf.MAX_VOID_LOOKUPS} exceeded")
        return list(found)


async def _resolve(resolver, key, answers, family):
    """Fill answers[key] from DNS (pyspf's value shapes); prefetch MX hosts."""
    name, qtype = key
    try:
        if qtype == "TXT":
            found = [(record,) for record in await dns.lookup_txt_bytes(resolver, name)]
        elif qtype == "A":
            found = await dns.lookup_a(resolver, name)
        elif qtype == "AAAA":
            found = await dns.lookup_aaaa(resolver, name)
        elif qtype == "MX":
            found = await dns.lookup_mx(resolver, name)
        elif qtype == "PTR":
            found = await dns.lookup_ptr_name(resolver, name)
        else:  # type SPF (99) is obsolete: treat as no data
            found = []
    except dns.DNSTemporaryError:
        answers[key] = _TEMPORARY
        return
    answers[key] = found
    if qtype == "MX":
        # The mx mechanism asks for every exchange's addresses next.
        wanted = [(host, family) for _, host in found[: pyspf.MAX_MX] if (host, family) not in answers]
        await defer.gatherResults([defer.ensureDeferred(_resolve(resolver, want, answers, family)) for want in wanted])


async def evaluate(resolver, clock, ip: str, sender: str, helo: str, receiver: str):
    """check_host() for (ip, sender, helo) without blocking.

    `sender` is "local@domain" (A-label domain), or "" to check the HELO
    identity.  @return: (result, explanation).
    """
    family = "AAAA" if ipaddress.ip_address(ip).version == 6 and not ipaddress.ip_address(ip).ipv4_mapped else "A"
    answers: dict = {}
    deadline = clock.seconds() + TIME_LIMIT
    for _ in range(MAX_ROUNDS):
        misses: set = set()
        query = _CacheOnlyQuery(answers, misses, i=ip, s=sender, h=helo, receiver=receiver, strict=True)
        try:
            result, _code, explanation = query.check()
        except _Miss:
            result, explanation = None, ""
        if not misses:
            return result, explanation
        if clock.seconds() > deadline:
            return "temperror", "SPF evaluation took too long"
        await defer.gatherResults(
            [defer.ensureDeferred(_resolve(resolver, key, answers, family)) for key in misses]
        )
    return "permerror", "too many DNS lookups"


@implementer(ICheck)
class SPFCheck:
    """spf=... for Authentication-Results, checked at MAIL FROM."""

    name = "spf"
    stages = ("mail",)

    def __init__(self, resolver, clock, receiver: str):
        self.resolver = resolver
        self.clock = clock
        self.receiver = receiver

    @classmethod
    def from_config(cls, config, resolver, reactor):
        return cls(resolver, reactor, config.server.hostname)

    async def mail(self, state):
        sender = state.sender or ""
        helo = (state.helo or "").strip()
        if not _is_ip(state.peer_ip):
            return self._result("none", "no client IP address", "mailfrom", sender, "")
        if sender:
            local, at, domain = sender.rpartition("@")
            domain_ascii = dns.dns_name(domain) if at else None
            identity, checked = ("mailfrom", sender)
            if not local or not dns.valid_hostname(domain):
                return self._result("none", "no valid domain in the envelope sender", identity, checked, domain)
            sender_ascii = f"{local}@{domain_ascii}"
        else:
            domain_ascii = dns.dns_name(helo)
            identity, checked, domain = ("helo", helo, helo)
            if not dns.valid_hostname(helo) or _is_ip(helo):
                return self._result("none", "no domain to check", identity, checked, helo)
            sender_ascii = f"postmaster@{domain_ascii}"
        helo_ascii = dns.dns_name(helo) or helo
        result, explanation = await evaluate(
            self.resolver, self.clock, state.peer_ip, sender_ascii, helo_ascii, self.receiver
        )
        return self._result(result, explanation, identity, checked, domain_ascii or domain)

    def _result(self, result, explanation, identity, checked, domain):
        prop = "smtp.mailfrom" if identity == "mailfrom" else "smtp.helo"
        return CheckResult(
            check=self.name,
            result=result,
            reason=explanation or f"SPF {result}",
            auth_results=resinfo("spf", result, [(prop, checked)]),
            tags=[f"spf:{result}"],
            enhanced=_ENHANCED.get(result),
            data={"domain": (domain or "").lower(), "identity": identity},
        )


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True
