"""Reverse DNS of the client (iprev, RFC 8601 2.7.3) and HELO sanity.

At connect: the PTR names of the client's IP, each looked up forward (A or
AAAA); the first whose addresses include the IP is the forward-confirmed
name, stored in `state.reverse_name`.  Results: pass, fail (PTR but no
forward match), none (no PTR), temperror.

At HELO (results of check "helo"): fail_forged when the client claims our
own host name, fail_invalid for a bare IP address (not in brackets) or a
name that is not a syntactically valid fully-qualified domain.
"""
from __future__ import annotations

import ipaddress

from twisted.internet import defer
from zope.interface import implementer

from emailsvc import dns
from emailsvc.checks.authres import resinfo
from emailsvc.interfaces import ICheck
from emailsvc.checks.model import CheckResult

#: RFC 7208 and RFC 8601 practice: look at most this many PTR names up.
MAX_PTR = 10


def _ip(text: str):
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _valid_fqdn(name: str) -> bool:
    return dns.valid_hostname(name) and "_" not in name


@implementer(ICheck)
class ReverseDNSCheck:
    """iprev at connect, HELO sanity at helo."""

    name = "rdns"
    stages = ("connect", "helo")

    def __init__(self, resolver, hostname: str):
        self.resolver = resolver
        self.hostname = (dns.dns_name(hostname) or hostname).lower()

    @classmethod
    def from_config(cls, config, resolver, reactor):
        return cls(resolver, config.server.hostname)

    async def connect(self, state):
        ip = _ip(state.peer_ip)
        if ip is None:
            return self._iprev(state, "permerror", "invalid client address")
        if ip.version == 6 and ip.ipv4_mapped:
            ip = ip.ipv4_mapped
        try:
            names = await dns.lookup_ptr(self.resolver, str(ip))
        except dns.DNSTemporaryError:
            return self._iprev(state, "temperror", "PTR lookup failed")
        if not names:
            return self._iprev(state, "none", "no PTR record")
        names = names[:MAX_PTR]
        lookups = [
            defer.maybeDeferred(dns.lookup_addresses, self.resolver, name, ip.version).addErrback(
                lambda failure: failure.trap(dns.DNSTemporaryError) and None
            )
            for name in names
        ]
        forward = await defer.gatherResults(lookups)
        for name, addresses in zip(names, forward):
            if addresses and any(_ip(address) == ip for address in addresses):
                state.reverse_name = name
                return self._iprev(state, "pass", "", name)
        if any(addresses is None for addresses in forward):
            return self._iprev(state, "temperror", "forward lookup failed", names[0])
        return self._iprev(state, "fail", "PTR name does not resolve back to the client", names[0])

    def _iprev(self, state, result, detail, name=None):
        comment = name or detail
        shown = "permerror" if result == "none" else result
        return CheckResult(
            check=self.name,
            result=result,
            reason=f"Client host [{state.peer_ip}] " + ({"pass": "has forward-confirmed reverse DNS"}.get(result) or detail),
            auth_results=resinfo("iprev", shown, [("policy.iprev", state.peer_ip)], comment=comment or None),
            tags=[f"rdns:{result}"],
            enhanced={"fail": "5.7.25", "none": "5.7.25", "temperror": "4.7.25"}.get(result),
            data={"name": name},
        )

    def helo(self, state):
        helo = (state.helo or "").strip()
        if helo.startswith("[") and helo.endswith("]"):
            literal = helo[1:-1]
            if literal.lower().startswith("ipv6:"):
                literal = literal[5:]
            if _ip(literal) is not None:
                return self._helo("pass", helo, "")
            return self._helo("fail", helo, "invalid address literal", "fail_invalid")
        if _ip(helo) is not None:
            return self._helo("fail", helo, "bare IP address in HELO", "fail_invalid")
        if (dns.dns_name(helo) or "").lower() == self.hostname:
            return self._helo("fail", helo, "HELO claims to be this server", "fail_forged")
        if not _valid_fqdn(helo):
            return self._helo("fail", helo, "HELO is not a fully-qualified domain name", "fail_invalid")
        return self._helo("pass", helo, "")

    def _helo(self, result, helo, detail, outcome=None):
        return CheckResult(
            check="helo",
            result=result,
            reason=detail or "HELO accepted",
            tags=[f"helo:{outcome or result}"],
            outcome=outcome,
            enhanced="5.7.1" if result == "fail" else None,
            data={"helo": helo},
        )
