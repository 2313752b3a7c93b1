"""DMARC (RFC 7489) of the RFC5322.From domain, at DATA after DKIM.

The policy record is looked up at `_dmarc.<From domain>`, then at the
organizational domain (public suffix list, shipped offline by
`publicsuffixlist`).  DMARC passes when SPF (of the domain SPF checked at
MAIL FROM) or a DKIM signature passed with an identifier aligned with the
From domain, relaxed or strict as the policy says.  On fail, the outcome
names the disposition after `pct` sampling: fail_reject, fail_quarantine
or fail_none, which the configuration maps to actions.
"""
from __future__ import annotations

import email.utils
import random as _random
from dataclasses import dataclass

from publicsuffixlist import PublicSuffixList
from zope.interface import implementer

from emailsvc import dns
from emailsvc.checks.authres import resinfo
from emailsvc.checks.headers import header_fields
from emailsvc.interfaces import ICheck
from emailsvc.checks.model import CheckResult

_DISPOSITIONS = ("none", "quarantine", "reject")
_WEAKER = {"reject": "quarantine", "quarantine": "none", "none": "none"}
_psl = None


def organizational_domain(domain: str) -> str:
    """The registrable domain of `domain` (A-label): one label below its public suffix."""
    global _psl
    if _psl is None:
        _psl = PublicSuffixList()
    domain = domain.lower().rstrip(".")
    return _psl.privatesuffix(domain) or domain


def aligned(identifier: str, author: str, mode: str) -> bool:
    """Whether `identifier` aligns with `author`: strict (s) equal, relaxed (r) same organizational domain."""
    identifier, author = identifier.lower().rstrip("."), author.lower().rstrip(".")
    if not identifier or not author:
        return False
    if mode == "s":
        return identifier == author
    return organizational_domain(identifier) == organizational_domain(author)


@dataclass(frozen=True)
class Policy:
    """A parsed DMARC record (only what evaluation needs)."""

    p: str
    sp: str | None = None
    adkim: str = "r"
    aspf: str = "r"
    pct: int = 100


def parse_record(text: str) -> Policy | None:
    """The Policy of a TXT record, or None if it is not a usable DMARC record."""
    tags = {}
    for index, part in enumerate(text.split(";")):
        name, equals, value = part.partition("=")
        name, value = name.strip().lower(), value.strip()
        if index == 0 and (name != "v" or value != "DMARC1"):
            return None
        if equals and name and name not in tags:
            tags[name] = value
    p = tags.get("p", "").lower()
    sp = tags.get("sp", "").lower() or None
    if p not in _DISPOSITIONS or (sp is not None and sp not in _DISPOSITIONS):
        # RFC 7489 6.6.3: a record with reporting addresses still asks for p=none.
        if not tags.get("rua"):
            return None
        p, sp = "none", None
    adkim = tags.get("adkim", "r").lower()
    aspf = tags.get("aspf", "r").lower()
    try:
        pct = int(tags.get("pct", "100"))
    except ValueError:
        pct = 100
    return Policy(
        p=p,
        sp=sp,
        adkim=adkim if adkim in ("r", "s") else "r",
        aspf=aspf if aspf in ("r", "s") else "r",
        pct=min(max(pct, 0), 100),
    )


def _is_dmarc(text: str) -> bool:
    name, _, value = text.split(";", 1)[0].partition("=")
    return name.strip().lower() == "v" and value.strip() == "DMARC1"


async def discover(resolver, domain: str):
    """(Policy, domain the record was found at), or (None, "") without one.

    Raises DNSTemporaryError when a lookup fails temporarily.
    """
    candidates = [domain]
    organizational = organizational_domain(domain)
    if organizational != domain:
        candidates.append(organizational)
    for candidate in candidates:
        records = [text for text in await dns.lookup_txt(resolver, f"_dmarc.{candidate}") if _is_dmarc(text)]
        if len(records) > 1:
            return None, ""
        if records:
            policy = parse_record(records[0])
            return (policy, candidate) if policy else (None, "")
    return None, ""


def author_domain(message: bytes):
    """(A-label From domain, "") or (None, problem)."""
    fields = [field for field in header_fields(message) if field.name == "from"]
    if not fields:
        return None, "no From header field"
    if len(fields) > 1:
        return None, "more than one From header field"
    addresses = email.utils.getaddresses([fields[0].text()])
    domains = {address.rpartition("@")[2].strip().lower() for _, address in addresses if "@" in address}
    if len(domains) != 1:
        return None, "no single author domain in From"
    domain = dns.dns_name(domains.pop())
    if domain is None or "." not in domain:
        return None, "invalid author domain in From"
    return domain, ""


@implementer(ICheck)
class DMARCCheck:
    """dmarc=... for Authentication-Results; needs the spf and dkim results."""

    name = "dmarc"
    stages = ("data",)
    requires = ("dkim",)

    def __init__(self, resolver, random=_random.random):
        self.resolver = resolver
        self.random = random

    @classmethod
    def from_config(cls, config, resolver, reactor):
        organizational_domain("example.org")  # load the suffix list now, not in a session
        return cls(resolver)

    async def data(self, state):
        domain, problem = author_domain(state.message or b"")
        if domain is None:
            return CheckResult(self.name, "permerror", reason=problem, auth_results=resinfo("dmarc", "permerror", comment=problem), tags=["dmarc:permerror"])
        try:
            policy, found_at = await discover(self.resolver, domain)
        except dns.DNSTemporaryError:
            return self._result("temperror", domain, None, "", "policy lookup failed")
        if policy is None:
            return self._result("none", domain, None, "", "no policy")
        spf = state.results_for("spf")
        dkim = state.results_for("dkim")
        passed = any(
            result.result == "pass" and aligned(result.data.get("domain", ""), domain, policy.aspf) for result in spf
        ) or any(
            result.result == "pass" and aligned(result.data.get("domain", ""), domain, policy.adkim) for result in dkim
        )
        requested = policy.sp if (found_at != domain and policy.sp) else policy.p
        if passed:
            return self._result("pass", domain, policy, requested, "")
        if any(result.result == "temperror" for result in spf + dkim):
            return self._result("temperror", domain, policy, requested, "authentication temporarily failed")
        disposition = requested
        if disposition != "none" and self.random() * 100 >= policy.pct:
            disposition = _WEAKER[disposition]
        return self._result("fail", domain, policy, disposition, "", requested=requested)

    def _result(self, result, domain, policy, disposition, detail, requested=None):
        comment = detail
        if policy is not None:
            comment = f"p={policy.p} sp={policy.sp or policy.p} dis={disposition if result == 'fail' else 'none'}"
        outcome = f"fail_{disposition}" if result == "fail" else None
        if result == "fail":
            reason = f"Message rejected due to DMARC policy of {domain}" if disposition != "none" else f"DMARC fail for {domain}"
        else:
            reason = f"DMARC {result} for {domain}"
        return CheckResult(
            check=self.name,
            result=result,
            reason=reason,
            auth_results=resinfo("dmarc", result, [("header.from", domain)], comment=comment or None),
            tags=[f"dmarc:{result}"] + ([f"dmarc:{disposition}"] if result == "fail" else []),
            outcome=outcome,
            enhanced="5.7.1" if result == "fail" else None,
            data={"domain": domain, "policy": requested or disposition, "disposition": disposition},
        )
