"""Trace fields added at delivery: Received (RFC 5321 4.4) and Return-Path."""
from __future__ import annotations

import base64
import os
from email.utils import formatdate


def queue_id() -> str:
    """A short unique id (80 random bits) that names one message in logs and replies."""
    return base64.b32encode(os.urandom(10)).decode("ascii")


def _clean(text: str) -> str:
    """Client-supplied text made safe inside a header: no CR/LF/controls, no parentheses."""
    return "".join(c for c in text if c.isprintable() and c not in "()\\")[:255]


def received(*, helo: str, peer_ip: str, peer_host: str | None, hostname: str, protocol: str,
             ident: str, recipient: str | None, when: float) -> bytes:
    """A folded `Received:` field with CRLF line ends.

    `protocol` is the RFC 3848 keyword: ESMTP, ESMTPS, ESMTPA, ESMTPSA, UTF8SMTPS...
    """
    literal = f"IPv6:{peer_ip}" if ":" in peer_ip else peer_ip
    client = f"{_clean(peer_host)} [{literal}]" if peer_host else f"[{literal}]"
    lines = [
        f"Received: from {_clean(helo) or 'unknown'} ({client})",
        f"\tby {hostname} (emailsvc) with {protocol} id {ident}",
    ]
    if recipient:
        lines.append(f"\tfor <{_clean(recipient)}>")
    lines[-1] += f"; {formatdate(when, usegmt=True)}"
    return ("\r\n".join(lines) + "\r\n").encode("utf-8")


def return_path(sender: str) -> bytes:
    """`Return-Path: <sender>` (empty for the null sender)."""
    return f"Return-Path: <{_clean(sender)}>\r\n".encode("utf-8")

