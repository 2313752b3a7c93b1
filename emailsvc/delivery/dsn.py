"""Delivery status notifications (RFC 3464) for the outbound queue.

A DSN is a multipart/report (RFC 6522) of a human-readable part, a
message/delivery-status part with one block per recipient, and the
original header (text/rfc822-headers).  It is sent with the null reverse
path so that it is never bounced itself (RFC 5321 6.1, RFC 3461 6.2).
"""
from __future__ import annotations

import base64
import os
import re
from dataclasses import dataclass
from email.utils import formatdate

_STATUS = re.compile(r"\b([245]\.\d{1,3}\.\d{1,3})\b")


@dataclass(frozen=True)
class RecipientStatus:
    """One recipient's block in the report."""

    recipient: str
    action: str  # "failed" or "delayed"
    reply: str  # the last reply ("550 5.1.1 No such user") or our own text
    remote_host: str = ""
    last_attempt: float | None = None
    will_retry_until: float | None = None  # for "delayed": when the queue gives up


def status_code(reply: str, action: str) -> str:
    """The RFC 3463 status for the report: the reply's enhanced code when
    it has one of the right class, else one derived from the reply."""
    found = _STATUS.search(reply)
    expected = "4" if action == "delayed" else "5"
    if found and found.group(1)[0] == expected:
        return found.group(1)
    if action == "delayed":
        return "4.0.0"
    # A temporary error that lasted until expiry: "delivery time expired".
    return "5.4.7" if "4" in reply[:1] or "gave up" in reply.lower() else "5.0.0"


def original_headers(message: bytes) -> bytes:
    """The header section of `message` with CRLF ends, without the blank line."""
    text = message.replace(b"\r\n", b"\n")
    end = text.find(b"\n\n")
    head = text if end == -1 else text[:end]
    head = head.rstrip(b"\n")
    return head.replace(b"\n", b"\r\n") + b"\r\n" if head else b""


def _clean(text: str) -> str:
    return "".join(c if c.isprintable() else " " for c in text)[:900]


def _ascii(text: str) -> str:
    return text.encode("ascii", "backslashreplace").decode("ascii")


def build_dsn(*, hostname: str, sender: str, queue_id: str, arrival: float, now: float,
              statuses: list[RecipientStatus], message: bytes) -> bytes:
    """The DSN telling `sender` about `statuses` of `message` (as queued).

    @return: the DSN as bytes with CRLF line ends.
    """
    boundary = "=_" + base64.b32encode(os.urandom(10)).decode("ascii")
    failed = any(status.action == "failed" for status in statuses)
    subject = "Undelivered Mail Returned to Sender" if failed else "Delayed Mail (still being retried)"
    unique = base64.b32encode(os.urandom(15)).decode("ascii").lower()
    lines = [
        f"From: Mail Delivery System <MAILER-DAEMON@{hostname}>",
        f"To: <{_ascii(sender)}>",
        f"Subject: {subject}",
        f"Date: {formatdate(now, usegmt=True)}",
        f"Message-ID: <{unique}@{hostname}>",
        "Auto-Submitted: auto-replied",
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"',
        "",
        "This is a MIME-encapsulated delivery status notification.",
        "",
        f"--{boundary}",
        "Content-Type: text/plain; charset=utf-8",
        "Content-Transfer-Encoding: 8bit",
        "",
        f"This is the mail system at {hostname}.",
        "",
    ]
    if failed:
        lines += ["Your message could not be delivered to one or more recipients.",
                  "Its header is attached below.  The errors were:", ""]
    else:
        until = [status.will_retry_until for status in statuses if status.will_retry_until is not None]
        trying = f" until {formatdate(max(until), usegmt=True)}" if until else ""
        lines += ["Your message has not been delivered yet to the recipients below.",
                  f"The mail system will keep trying{trying}; no action is needed.", ""]
    lines += [f"<{_clean(status.recipient)}>: {_clean(status.reply)}" for status in statuses]
    lines += [
        "",
        f"--{boundary}",
        "Content-Type: message/delivery-status",
        "",
        f"Reporting-MTA: dns; {hostname}",
        f"X-Emailsvc-Queue-ID: {queue_id}",
        f"Arrival-Date: {formatdate(arrival, usegmt=True)}",
    ]
    for status in statuses:
        address_type = "rfc822" if status.recipient.isascii() else "utf-8"
        lines += [
            "",
            f"Final-Recipient: {address_type}; {_ascii(status.recipient)}",
            f"Action: {status.action}",
            f"Status: {status_code(status.reply, status.action)}",
        ]
        if status.remote_host:
            lines.append(f"Remote-MTA: dns; {_ascii(status.remote_host)}")
        kind = "smtp" if status.reply[:3].isdigit() else "X-Emailsvc"
        lines.append(f"Diagnostic-Code: {kind}; {_ascii(_clean(status.reply))}")
        if status.last_attempt is not None:
            lines.append(f"Last-Attempt-Date: {formatdate(status.last_attempt, usegmt=True)}")
        if status.will_retry_until is not None:
            lines.append(f"Will-Retry-Until: {formatdate(status.will_retry_until, usegmt=True)}")
    lines += ["", f"--{boundary}", "Content-Type: text/rfc822-headers", ""]
    head = "\r\n".join(lines).encode("utf-8") + b"\r\n"
    return head + original_headers(message) + f"\r\n--{boundary}--\r\n".encode("ascii")
