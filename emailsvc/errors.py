"""Errors shared across emailsvc."""
from dataclasses import dataclass


@dataclass
class SMTPReplyError(Exception):
    """An SMTP reply to send instead of success.

    `text` is public: it reaches the client and must not reveal internals.
    """

    code: int
    enhanced: str
    text: str

    @property
    def temporary(self) -> bool:
        return 400 <= self.code < 500

    def __str__(self) -> str:
        return f"{self.code} {self.enhanced} {self.text}"


class StoreError(Exception):
    """Base of the errors a store reports to its callers (message is public)."""


class NotFound(StoreError):
    """The named domain, user, alias, mailbox or message does not exist."""


class AlreadyExists(StoreError):
    """Something with that name exists already."""


class NotEmpty(StoreError):
    """The object still has dependents (a domain with users, say)."""


class InvalidName(StoreError):
    """A mailbox name, address or domain that cannot be used."""


class BlobNotFound(StoreError):
    """The blob store has no blob under that key."""
