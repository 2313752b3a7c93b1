"""APPEND: the date-time argument, and storing a message like the MDA does."""
from __future__ import annotations

import calendar
import datetime
import re

from twisted.internet import defer
from twisted.internet.threads import deferToThreadPool

from emailsvc.imap.wire import Bad
from emailsvc.store.model import Content
from emailsvc.store.parse import parse_message

_PARSE_IN_THREAD = 256 * 1024
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


@defer.inlineCallbacks
def store_message(account, mailbox_id: int, data: bytes, flags=(), internal_date=None):
    """Parse, write the blob, then add the message row. @return: Deferred of the MessageRecord."""
    clock = account.clock
    if len(data) > _PARSE_IN_THREAD:
        parsed = yield deferToThreadPool(clock, clock.getThreadPool(), parse_message, data)
    else:
        parsed = parse_message(data)
    key = yield account.blobs.put(data)
    record = yield account.store.append(mailbox_id, Content(blob_key=key, size=len(data), parsed=parsed),
                                        flags, internal_date)
    return record
