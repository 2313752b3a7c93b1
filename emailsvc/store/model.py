"""Plain records passed across the store interfaces."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple


@dataclass(frozen=True)
class User:
    id: int
    address: str
    quota: int | None = None


@dataclass(frozen=True)
class Alias:
    source: str
    destination: str


@dataclass(frozen=True)
class Resolution:
    """Where mail for one address goes: local users, and whether we serve the domain."""

    users: tuple[User, ...] = ()
    local_domain: bool = False


@dataclass(frozen=True)
class Mailbox:
    id: int
    user_id: int
    name: str
    special_use: str | None
    uidvalidity: int
    uidnext: int
    highestmodseq: int
    subscribed: bool = False
    messages: int = 0
    unseen: int = 0
    size: int = 0


class MessageRecord(NamedTuple):
    """A message in a mailbox (a tuple: a FETCH page builds hundreds, and a
    frozen dataclass costs three times as much to build)."""

    mailbox_id: int
    uid: int
    modseq: int
    flags: frozenset[str]
    internal_date: int
    size: int
    content_id: int


@dataclass(frozen=True)
class Content:
    """One stored message: its blob and what parsing found in it once."""

    blob_key: str
    size: int
    parsed: dict = field(default_factory=dict)
    id: int | None = None
