"""Authentication-Results (RFC 8601): building ours, finding forged ones.

A message may arrive with Authentication-Results fields that claim to come
from us; RFC 8601 section 5 says to remove them before adding ours, or a
sender could forge "dkim=pass" in our name.
"""
from __future__ import annotations

import re

from emailsvc.checks.headers import header_fields, prepend, remove_fields

HEADER = "Authentication-Results"

# RFC 2045 token: printable ASCII except SPACE and tspecials.
_TOKEN = re.compile(r"[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+")
_ADDRESS = re.compile(r"(?:[!#$%&'*+\-/=?^_`{|}~0-9A-Za-z.]*@)?[0-9A-Za-z._-]+")


def quote_value(value: str) -> str:
    """`value` as an RFC 2045 value: a token when possible, else a quoted-string."""
    if _TOKEN.fullmatch(value):
        return value
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def _pvalue(value: str) -> str:
    if _TOKEN.fullmatch(value) or _ADDRESS.fullmatch(value):
        return value
    return quote_value(value)


def _comment(text: str) -> str:
    cleaned = "".join(ch if ch.isprintable() else " " for ch in text)
    cleaned = cleaned.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
    return f"({cleaned})"


def resinfo(method: str, result: str, properties=(), reason: str | None = None, comment: str | None = None) -> str:
    """One resinfo, e.g. resinfo("spf", "pass", [("smtp.mailfrom", "a@example.org")]).

    `properties` are (ptype.property, value) pairs; `reason` is quoted as
    needed; `comment` goes in parentheses after the result.
    """
    parts = [f"{method}={result}"]
    if comment:
        parts.append(_comment(comment))
    if reason:
        parts.append(f"reason={quote_value(reason)}")
    parts.extend(f"{name}={_pvalue(value)}" for name, value in properties if value)
    return " ".join(parts)


def build(authserv_id: str, resinfos) -> tuple[str, str]:
    """The (name, value) of our Authentication-Results field, folded one
    resinfo per line; "authserv-id; none" when there is nothing to report."""
    resinfos = [info for info in resinfos if info]
    if not resinfos:
        return HEADER, f"{authserv_id}; none"
    return HEADER, f"{authserv_id};" + ";".join(f"\r\n\t{info}" for info in resinfos)


def _skip_cfws(text: str, position: int) -> int:
    while position < len(text):
        char = text[position]
        if char in " \t\r\n":
            position += 1
        elif char == "(":
            depth = 0
            while position < len(text):
                char = text[position]
                if char == "\\":
                    position += 2
                    continue
                if char == "(":
                    depth += 1
                elif char == ")":
                    depth -= 1
                    if depth == 0:
                        position += 1
                        break
                position += 1
        else:
            break
    return position


def parse_authserv_id(value: str) -> str | None:
    """The authserv-id at the start of an Authentication-Results value, or None."""
    position = _skip_cfws(value, 0)
    if position >= len(value):
        return None
    if value[position] == '"':
        out = []
        position += 1
        while position < len(value):
            char = value[position]
            if char == "\\" and position + 1 < len(value):
                out.append(value[position + 1])
                position += 2
                continue
            if char == '"':
                return "".join(out)
            out.append(char)
            position += 1
        return None
    match = _TOKEN.match(value, position)
    return match.group(0) if match else None


def own_fields(message: bytes, authserv_id: str) -> list[int]:
    """0-based positions of the Authentication-Results header fields of
    `message` whose authserv-id is `authserv_id` (compared case-insensitively)."""
    ours = authserv_id.lower()
    found = []
    for index, field in enumerate(header_fields(message)):
        if field.name == HEADER.lower():
            claimed = parse_authserv_id(field.text())
            if claimed is not None and claimed.lower() == ours:
                found.append(index)
    return found


def apply(message: bytes, verdict) -> bytes:
    """`message` with `verdict.strip` fields removed and `verdict.headers` prepended."""
    return prepend(remove_fields(message, verdict.strip), verdict.headers)
