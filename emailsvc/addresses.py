"""Normalising mail addresses and domain names (IDN-aware)."""
import functools

import idna

from emailsvc.errors import InvalidName

_LOCAL_FORBIDDEN = set(' \t\r\n"(),:;<>@[\\]') | {chr(c) for c in range(32)} | {"\x7f"}


@functools.lru_cache(maxsize=4096)
def normalize_domain(domain: str) -> str:
    """Lower-case Unicode (U-label) form of a domain; raises InvalidName."""
    candidate = domain.strip().rstrip(".")
    try:
        ascii_form = idna.encode(candidate, uts46=True).decode("ascii")
        return idna.decode(ascii_form).lower()
    except (idna.IDNAError, UnicodeError, ValueError):
        raise InvalidName(f"invalid domain name: {domain!r}") from None


def ascii_domain(domain: str) -> str:
    """The A-label (punycode) form of a normalised domain, for DNS."""
    return idna.encode(domain, uts46=True).decode("ascii")


def split_address(address: str) -> tuple[str, str]:
    """Split and normalise `local@domain` into (local, domain); raises InvalidName.

    Local parts are compared case-insensitively, as every major server does.
    """
    local, at, domain = address.strip().rpartition("@")
    if not at or not local or len(local) > 64 or set(local) & _LOCAL_FORBIDDEN:
        raise InvalidName(f"invalid address: {address!r}")
    if local.startswith(".") or local.endswith(".") or ".." in local:
        raise InvalidName(f"invalid address: {address!r}")
    return local.lower(), normalize_domain(domain)


def normalize_address(address: str) -> str:
    """`local@domain` in canonical form; raises InvalidName."""
    local, domain = split_address(address)
    return f"{local}@{domain}"
