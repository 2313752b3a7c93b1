"""DNS block lists (RFC 5782): the client's IP looked up in each zone at connect.

An A answer in 127.0.0.0/24 means listed.  Other answers (127.255.255.x
is how some lists say "you may not query us") are not a listing.  Each
zone's result has outcome "listed:<zone>", so a zone can have its own
action (`[[checks.dnsbl.zones]] action`), else `[checks.actions.dnsbl] listed`.
"""
from __future__ import annotations

import ipaddress

from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import implementer

from emailsvc import dns
from emailsvc.interfaces import ICheck
from emailsvc.checks.model import CheckResult

log = Logger()
_LISTED = ipaddress.ip_network("127.0.0.0/24")


@implementer(ICheck)
class DNSBLCheck:
    """One result per zone: listed, pass or temperror."""

    name = "dnsbl"
    stages = ("connect",)

    def __init__(self, resolver, zones):
        self.resolver = resolver
        self.zones = [zone.lower().rstrip(".") for zone in zones]
        for zone in self.zones:
            if dns.dns_name(zone) is None:
                raise ValueError(f"invalid DNSBL zone {zone!r}")

    @classmethod
    def from_config(cls, config, resolver, reactor):
        zones = [zone.zone for zone in config.checks.dnsbl.zones]
        if not zones:
            raise ValueError("no zones in [[checks.dnsbl.zones]]")
        return cls(resolver, zones)

    def connect(self, state):
        try:
            reversed_ip = dns.reversed_ip(state.peer_ip)
        except ValueError:
            return None
        return defer.gatherResults([self._query(state.peer_ip, reversed_ip, zone) for zone in self.zones])

    def _query(self, ip, reversed_ip, zone):
        def answered(addresses):
            codes = [address for address in addresses if ipaddress.ip_address(address) in _LISTED]
            if codes:
                return CheckResult(
                    check=self.name,
                    result="listed",
                    reason=f"Client host [{ip}] blocked using {zone}",
                    tags=[f"dnsbl:{zone}"],
                    outcome=f"listed:{zone}",
                    enhanced="5.7.1",
                    data={"zone": zone, "codes": codes},
                )
            if addresses:
                log.warn("DNSBL {zone} answered {addresses} for {ip}: not a listing", zone=zone, addresses=addresses, ip=ip)
            return CheckResult(self.name, "pass", reason=f"not listed in {zone}", data={"zone": zone})

        def failed(failure):
            failure.trap(dns.DNSTemporaryError)
            return CheckResult(self.name, "temperror", reason=f"{zone} did not answer", outcome=f"temperror:{zone}", data={"zone": zone})

        return dns.lookup_a(self.resolver, f"{reversed_ip}.{zone}").addCallbacks(answered, failed)
