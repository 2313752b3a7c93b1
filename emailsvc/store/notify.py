"""In-process change notifications, per mailbox id.

The mail store publishes the id of every mailbox a committed transaction
changed (new, flagged, expunged or deleted messages); protocol sessions
that show that mailbox (IMAP SELECT, IDLE) subscribe and re-read what
changed from the store.  A notification carries no data, so a missed or
coalesced one only delays a session until its next poll.  Changes made by
other processes reach the notifier through a poller
(`emailsvc.store.sql.changes`); a scale-out backend would feed it from
PostgreSQL LISTEN.
"""
from __future__ import annotations

from twisted.logger import Logger


class Subscription:
    """A registered callback; `cancel()` removes it (idempotent)."""

    def __init__(self, notifier: "Notifier", mailbox_id: int, callback):
        self._notifier = notifier
        self.mailbox_id = mailbox_id
        self.callback = callback
        self.active = True

    def cancel(self):
        if self.active:
            self.active = False
            self._notifier._remove(self)


class Notifier:
    """Calls `callback(mailbox_id)` for every publish of a subscribed id."""

    log = Logger()

    def __init__(self):
        self._subscribers: dict[int, list[Subscription]] = {}

    def subscribe(self, mailbox_id: int, callback) -> Subscription:
        subscription = Subscription(self, mailbox_id, callback)
        self._subscribers.setdefault(mailbox_id, []).append(subscription)
        return subscription

    def mailbox_ids(self) -> list[int]:
        """The ids that have at least one subscription."""
        return list(self._subscribers)

    def subscribers(self, mailbox_id: int) -> int:
        """How many subscriptions `mailbox_id` has (for tests and metrics)."""
        return len(self._subscribers.get(mailbox_id, ()))

    def publish(self, *mailbox_ids: int):
        """Tell the subscribers of each id; a failing callback is logged, never raised."""
        for mailbox_id in dict.fromkeys(mailbox_ids):
            for subscription in list(self._subscribers.get(mailbox_id, ())):
                if not subscription.active:
                    continue
                try:
                    subscription.callback(mailbox_id)
                except Exception:
                    self.log.failure("change notification for mailbox {id} failed", id=mailbox_id)

    def _remove(self, subscription: Subscription):
        listeners = self._subscribers.get(subscription.mailbox_id)
        if listeners is None:
            return
        try:
            listeners.remove(subscription)
        except ValueError:
            pass
        if not listeners:
            del self._subscribers[subscription.mailbox_id]
