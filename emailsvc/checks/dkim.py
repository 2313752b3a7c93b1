"""DKIM (RFC 6376) verification of every signature, without blocking.

The key records of all d=/s= pairs are fetched first with twisted.names;
dkimpy then verifies with a `dnsfunc` that answers only from them.  Large
messages are verified in the reactor's thread pool (hashing the body is
the expensive part).
"""
from __future__ import annotations

import dkim as dkimpy
from dkim.util import InvalidTagValueList, parse_tag_value
from twisted.internet import defer, threads
from zope.interface import implementer

from emailsvc import dns
from emailsvc.checks.authres import resinfo
from emailsvc.checks.headers import header_fields
from emailsvc.interfaces import ICheck
from emailsvc.checks.model import CheckResult


def _signatures(message: bytes, limit: int):
    """[(tags or None, problem)] for the first `limit` DKIM-Signature fields."""
    found = []
    for field in header_fields(message):
        if field.name != "dkim-signature":
            continue
        if len(found) == limit:
            break
        try:
            tags = parse_tag_value(field.value)
            dkimpy.validate_signature_fields(tags)
        except (InvalidTagValueList, dkimpy.DKIMException) as problem:
            found.append((None, f"malformed signature: {problem}"))
            continue
        found.append((tags, ""))
    return found


def _key_name(tags) -> str | None:
    try:
        selector = tags[b"s"].decode("ascii")
        domain = tags[b"d"].decode("utf-8")
    except (KeyError, UnicodeDecodeError):
        return None
    return dns.dns_name(f"{selector}._domainkey.{domain}")


def _verify_all(message: bytes, indexes, keys: dict, min_key_bits: int):
    """Verify signatures `indexes` of `message`, keys from `keys` (name -> bytes).

    Runs in a thread for large messages; touches nothing shared.
    @return: {index: (result, reason)}.
    """

    def dnsfunc(name, timeout=5):
        key = keys.get(dns.dns_name(name.decode("ascii", "replace")))
        return key

    verifier = dkimpy.DKIM(message, minkey=min_key_bits)
    outcome = {}
    for index in indexes:
        try:
            ok = verifier.verify(idx=index, dnsfunc=dnsfunc)
        except dkimpy.ValidationError as problem:
            outcome[index] = ("fail", str(problem))
            continue
        except dkimpy.DKIMException as problem:
            outcome[index] = ("permerror", str(problem))
            continue
        outcome[index] = ("pass", "") if ok else ("fail", "signature did not verify")
    return outcome


def _key_problem(name: str, records: list[bytes]):
    """(key bytes, problem): the one usable DKIM key record at `name`."""
    if not records:
        return None, "no key for signature"
    candidates = [record for record in records if record.strip()]
    if len(candidates) != 1:
        return None, "ambiguous key records"
    try:
        dkimpy.evaluate_pk(name, candidates[0])
    except dkimpy.DKIMException as problem:
        return None, f"bad key record: {problem}"
    return candidates[0], ""


@implementer(ICheck)
class DKIMCheck:
    """dkim=... per signature (dkim=none when unsigned), at DATA."""

    name = "dkim"
    stages = ("data",)

    def __init__(self, resolver, reactor, min_key_bits=1024, max_signatures=5, thread_threshold=262144):
        self.resolver = resolver
        self.reactor = reactor
        self.min_key_bits = min_key_bits
        self.max_signatures = max_signatures
        self.thread_threshold = thread_threshold

    @classmethod
    def from_config(cls, config, resolver, reactor):
        settings = config.checks.dkim
        return cls(resolver, reactor, settings.min_key_bits, settings.max_signatures, settings.thread_threshold)

    async def data(self, state):
        message = state.message or b""
        signatures = _signatures(message, self.max_signatures)
        if not signatures:
            return [CheckResult(self.name, "none", reason="message not signed", auth_results="dkim=none", tags=["dkim:none"])]
        names = {_key_name(tags) for tags, _ in signatures if tags is not None} - {None}
        fetched = await defer.gatherResults([self._fetch(name) for name in sorted(names)])
        records = dict(zip(sorted(names), fetched))
        keys, outcomes, to_verify = {}, {}, []
        for index, (tags, problem) in enumerate(signatures):
            if tags is None:
                outcomes[index] = ("permerror", problem)
                continue
            name = _key_name(tags)
            if name is None:
                outcomes[index] = ("permerror", "invalid d= or s=")
                continue
            found = records[name]
            if found is None:
                outcomes[index] = ("temperror", "key lookup failed")
                continue
            key, key_problem = _key_problem(name, found)
            if key is None:
                outcomes[index] = ("permerror", key_problem)
                continue
            keys[name] = key
            to_verify.append(index)
        if to_verify:
            args = (message, to_verify, keys, self.min_key_bits)
            if len(message) >= self.thread_threshold:
                verified = await threads.deferToThreadPool(self.reactor, self.reactor.getThreadPool(), _verify_all, *args)
            else:
                verified = _verify_all(*args)
            outcomes.update(verified)
        return [self._result(tags, *outcomes[index]) for index, (tags, _) in enumerate(signatures)]

    def _fetch(self, name):
        deferred = dns.lookup_txt_bytes(self.resolver, name)
        return deferred.addErrback(lambda failure: failure.trap(dns.DNSTemporaryError) and None)

    def _result(self, tags, result, reason):
        properties = []
        domain = selector = ""
        if tags is not None:
            domain = tags.get(b"d", b"").decode("utf-8", "replace").lower()
            selector = tags.get(b"s", b"").decode("utf-8", "replace")
            signature = b"".join(tags.get(b"b", b"").split()).decode("ascii", "replace")
            properties = [("header.d", domain), ("header.s", selector), ("header.b", signature[:8])]
            if b"i" in tags:
                properties.insert(1, ("header.i", tags[b"i"].decode("utf-8", "replace")))
        return CheckResult(
            check=self.name,
            result=result,
            reason=f"DKIM {result}" + (f" ({domain})" if domain else ""),
            auth_results=resinfo("dkim", result, properties, comment=reason[:80] or None),
            tags=[f"dkim:{result}"],
            enhanced={"fail": "5.7.20", "permerror": "5.7.20", "temperror": "4.7.20"}.get(result),
            data={"domain": domain, "selector": selector, "detail": reason},
        )
