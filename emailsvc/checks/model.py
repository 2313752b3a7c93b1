"""The data of the check pipeline: results, per-session state, verdicts.

Checks return `CheckResult`s; they never decide what happens to the mail.
The pipeline maps each result to an action from the configuration and
merges them into a `Verdict` per stage.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from emailsvc.errors import SMTPReplyError

STAGES = ("connect", "helo", "mail", "rcpt", "data")

#: What the configuration may say to do with a result.
ACTIONS = ("reject", "tempfail", "junk", "tag", "ignore")

#: What a stage's verdict may be, strongest first.
VERDICT_ACTIONS = ("reject", "tempfail", "junk", "accept")


@dataclass
class CheckResult:
    """One finding of one check.

    `check` and `outcome` (default: `result`) select the action in the
    configuration (`[checks.actions.<check>] <outcome> = ...`, falling back
    to `<result>`).  `reason` is public: it may become the text of a
    reject reply, so it must not reveal internals.  `auth_results` is the
    resinfo for Authentication-Results ("spf=pass smtp.mailfrom=..."), or
    None.  `headers` are added to the message and `tags` recorded unless
    the action is "ignore".  `enhanced` suggests an enhanced status code
    ("5.7.23"); its class digit is set from the action.  `data` carries
    machine-readable details for other checks (DMARC reads SPF's and
    DKIM's).
    """

    check: str
    result: str
    reason: str = ""
    auth_results: str | None = None
    headers: list[tuple[str, str]] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    outcome: str | None = None
    enhanced: str | None = None
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def action_key(self) -> str:
        return self.outcome or self.result


@dataclass
class SessionState:
    """What the checks know about one SMTP connection and its transaction.

    The MX session fills it as the conversation goes: `helo` before
    `pipeline.helo()`, `sender` ("" for the null sender) before `mail()`,
    appends each accepted recipient to `recipients` after `rcpt()` accepted
    it, sets `message` (CRLF bytes) before `data()`, and calls `reset()`
    on RSET, a new EHLO and after DATA.  The rdns check sets
    `reverse_name` (the forward-confirmed host name) at connect.
    """

    peer_ip: str
    peer_port: int = 0
    tls: bool = False
    helo: str | None = None
    reverse_name: str | None = None
    sender: str | None = None
    recipients: list[str] = field(default_factory=list)
    message: bytes | None = None
    #: Per-check scratch space for the transaction: scratch[check name] -> dict.
    scratch: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Results so far, by stage (rcpt results accumulate over recipients).
    stage_results: dict[str, list[CheckResult]] = field(default_factory=dict)

    def scratch_for(self, check: str) -> dict[str, Any]:
        """The scratch dict of `check`, created on first use."""
        return self.scratch.setdefault(check, {})

    def reset(self) -> None:
        """Forget the transaction (sender, recipients, message and their results)."""
        self.sender = None
        self.recipients = []
        self.message = None
        self.scratch = {}
        for stage in ("mail", "rcpt", "data"):
            self.stage_results.pop(stage, None)

    def all_results(self) -> list[CheckResult]:
        """Every result of the connection and transaction, in stage order."""
        return [result for stage in STAGES for result in self.stage_results.get(stage, ())]

    def results_for(self, check: str) -> list[CheckResult]:
        """The results so far whose `check` is `check`, in stage order."""
        return [result for result in self.all_results() if result.check == check]


@dataclass
class Verdict:
    """The merged outcome of one stage.

    `action` is "accept", "junk", "tempfail" or "reject"; `reply` is the
    SMTPReplyError to send for tempfail and reject (None otherwise).
    `results` are this stage's results.  At the data stage, `headers`
    (name, value) are to be prepended to the message in order (values may
    contain folding, CRLF + tab), and `strip` lists the 0-based positions
    of header fields in the received message to remove first: the
    Authentication-Results fields that claim our authserv-id.  `tags` are
    the tags of the results that were acted on.
    """

    action: Literal["accept", "junk", "tempfail", "reject"]
    reply: SMTPReplyError | None = None
    results: list[CheckResult] = field(default_factory=list)
    headers: list[tuple[str, str]] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    strip: list[int] = field(default_factory=list)
