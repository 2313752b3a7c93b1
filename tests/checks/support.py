"""Helpers shared by the check tests."""
from zope.interface import implementer

from emailsvc.interfaces import ICheck
from emailsvc.checks.model import CheckResult, SessionState


@implementer(ICheck)
class FakeCheck:
    """Returns canned results per stage; records its calls.

    `results[stage]` is a CheckResult, a list, a Deferred, an exception
    (raised) or a callable(state, *args) whose return value is used.
    """

    def __init__(self, name, results, requires=()):
        self.name = name
        self.results = results
        self.stages = tuple(results)
        self.requires = tuple(requires)
        self.calls = []

    @classmethod
    def from_config(cls, config, resolver, reactor):
        return cls("fake", {})

    def _run(self, stage, state, *args):
        self.calls.append((stage, args))
        outcome = self.results[stage]
        if isinstance(outcome, Exception):
            raise outcome
        if callable(outcome):
            return outcome(state, *args)
        return outcome

    def connect(self, state):
        return self._run("connect", state)

    def helo(self, state):
        return self._run("helo", state)

    def mail(self, state):
        return self._run("mail", state)

    def rcpt(self, state, recipient):
        return self._run("rcpt", state, recipient)

    def data(self, state):
        return self._run("data", state)


def result(check, value, **kwargs):
    return CheckResult(check, value, **kwargs)


def make_message(headers, body="Hello.\r\n"):
    """A CRLF message from (name, value) pairs."""
    lines = "".join(f"{name}: {value}\r\n" for name, value in headers)
    return (lines + "\r\n" + body).encode("utf-8")


def session(**kwargs):
    kwargs.setdefault("peer_ip", "192.0.2.1")
    return SessionState(**kwargs)
