"""APPEND: the date-time argument, and storing a message like the MDA does."""
from __future__ import annotations

import calendar
import datetime
import re

from emailsvc.imap.wire import Bad

_DATE_TIME = re.compile(
    rb"([ 0-9][0-9])-([A-Za-z]{3})-([0-9]{4}) ([0-9]{2}):([0-9]{2}):([0-9]{2}) ([+-])([0-9]{2})([0-9]{2})"
)
_MONTHS = [b"JAN", b"FEB", b"MAR", b"APR", b"MAY", b"JUN", b"JUL", b"AUG", b"SEP", b"OCT", b"NOV", b"DEC"]


def parse_date_time(raw: bytes) -> int:
    """'17-Jul-1996 02:44:25 -0700' -> seconds since the epoch."""
    match = _DATE_TIME.fullmatch(raw)
    if match is None or match.group(2).upper() not in _MONTHS:
        raise Bad("Bad date-time")
    day, year = int(match.group(1)), int(match.group(3))
    month = _MONTHS.index(match.group(2).upper()) + 1
    hour, minute, second = int(match.group(4)), int(match.group(5)), int(match.group(6))
    try:
        datetime.datetime(year, month, day, hour, minute, second)
    except ValueError:
        raise Bad("Bad date-time") from None
    offset = (int(match.group(8)) * 60 + int(match.group(9))) * 60
    if match.group(7) == b"-":
        offset = -offset
    return calendar.timegm((year, month, day, hour, minute, second, 0, 1, 0)) - offset


def store_message(account, mailbox_id: int, data: bytes, flags=(), internal_date=None):
    """Save the message like the MDA does. @return: Deferred of the MessageRecord."""
    records = account.blobs.save([(mailbox_id, flags)], data, internal_date)
    return records.addCallback(lambda saved: saved[0])
