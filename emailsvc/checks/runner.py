"""The staged check pipeline: run checks, map results to actions, merge.

At each stage the checks registered for it run concurrently (a check with
`requires` waits for those).  Every result is mapped to an action from the
configuration, and the stage's verdict is the strongest: reject >
tempfail > junk > accept.  A check that raises or times out becomes a
temperror result of that check; it never breaks the session.
"""
from __future__ import annotations

import dataclasses
import inspect

from twisted.internet import defer
from twisted.logger import Logger

from emailsvc.checks import authres
from emailsvc.checks.model import ACTIONS, STAGES, CheckResult, Verdict
from emailsvc.config import ActionsConfig
from emailsvc.errors import SMTPReplyError

log = Logger()


def actions_table(actions_config) -> dict[str, dict[str, str]]:
    """check -> outcome -> action from a config.ActionsConfig (plugins' checks included)."""
    table = {
        f.name: dict(getattr(actions_config, f.name)) for f in dataclasses.fields(actions_config) if f.name != "plugins"
    }
    for check, outcomes in actions_config.plugins.items():
        table.setdefault(check, {}).update(outcomes)
    return table


#: Actions for results the configuration does not mention: the defaults of
#: [checks.actions].  Anything not listed (a plugin's outcomes, say) is "tag".
DEFAULT_ACTIONS: dict[str, dict[str, str]] = actions_table(ActionsConfig())

_STRENGTH = {"reject": 0, "tempfail": 1, "junk": 2, "tag": 3, "ignore": 3}
_VERDICT = {"reject": "reject", "tempfail": "tempfail", "junk": "junk", "tag": "accept", "ignore": "accept"}


def merge_actions(configured) -> dict[str, dict[str, str]]:
    """DEFAULT_ACTIONS overridden, key by key, by `configured` (check -> outcome -> action)."""
    merged = {check: dict(outcomes) for check, outcomes in DEFAULT_ACTIONS.items()}
    for check, outcomes in (configured or {}).items():
        for outcome, action in outcomes.items():
            if action not in ACTIONS:
                raise ValueError(f"checks.actions.{check}.{outcome}: unknown action {action!r}")
            merged.setdefault(check, {})[outcome] = action
    return merged


def public_text(text: str, limit: int = 200) -> str:
    """`text` made safe for an SMTP reply: printable ASCII, one line, bounded."""
    cleaned = "".join(ch if " " <= ch <= "~" else " " for ch in text)
    cleaned = " ".join(cleaned.split())
    return cleaned[:limit]


class CheckPipeline:
    """Runs `checks` (ICheck providers) stage by stage.

    `actions` is check -> outcome -> action (merged over DEFAULT_ACTIONS);
    `authserv_id` names us in Authentication-Results.  `clock` and
    `timeout` bound each check's run (no bound without a clock).
    """

    def __init__(self, checks, actions, authserv_id: str, *, clock=None, timeout: float = 30.0):
        self.checks = list(checks)
        self.actions = merge_actions(actions)
        self.authserv_id = authserv_id
        self.clock = clock
        self.timeout = timeout
        names = [check.name for check in self.checks]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"checks enabled twice: {', '.join(duplicates)}")
        self._by_stage = {}
        for stage in STAGES:
            chosen = [check for check in self.checks if stage in tuple(check.stages)]
            self._by_stage[stage] = chosen
            self._check_order(stage, chosen)
        for check in self.checks:
            unknown = [stage for stage in check.stages if stage not in STAGES]
            if unknown:
                raise ValueError(f"check {check.name!r} has unknown stages {unknown}")

    @staticmethod
    def _check_order(stage, checks):
        by_name = {check.name: check for check in checks}
        visiting, done = set(), set()

        def visit(name):
            if name in done:
                return
            if name in visiting:
                raise ValueError(f"checks require each other in a cycle at stage {stage}: {name}")
            visiting.add(name)
            for required in getattr(by_name[name], "requires", ()):
                if required in by_name:
                    visit(required)
            visiting.discard(name)
            done.add(name)

        for name in by_name:
            visit(name)

    def stage_checks(self, stage: str) -> list:
        """The checks that run at `stage`, in configuration order."""
        return list(self._by_stage[stage])

    def action_for(self, result: CheckResult) -> str:
        """The configured action for `result`: by outcome, then result, else "tag"."""
        table = self.actions.get(result.check, {})
        return table.get(result.action_key) or table.get(result.result) or "tag"

    # The stages.  Each returns a Deferred firing with a Verdict; none fails.

    def connect(self, state):
        """A client connected (state.peer_ip, state.tls). @return: Deferred[Verdict]."""
        return self._stage("connect", state, ())

    def helo(self, state):
        """HELO/EHLO (state.helo). @return: Deferred[Verdict]."""
        return self._stage("helo", state, ())

    def mail(self, state):
        """MAIL FROM (state.sender). @return: Deferred[Verdict]."""
        return self._stage("mail", state, ())

    def rcpt(self, state, recipient: str):
        """RCPT TO `recipient`; only that recipient is refused by a reject. @return: Deferred[Verdict]."""
        return self._stage("rcpt", state, (recipient,))

    def data(self, state):
        """The message (state.message); the verdict carries our headers. @return: Deferred[Verdict]."""
        return self._stage("data", state, ())

    def _stage(self, stage, state, args):
        checks = self._by_stage[stage]
        if not checks and stage != "data":
            # Nothing runs here: skip the Deferred machinery on the hot path.
            if stage != "rcpt":
                state.stage_results[stage] = []
            return defer.succeed(Verdict(action="accept", reply=None, results=[]))
        earlier = list(state.stage_results.get(stage, ())) if stage == "rcpt" else []
        state.stage_results[stage] = list(earlier)
        collected: dict[str, list[CheckResult]] = {}
        by_name = {check.name: check for check in checks}
        running: dict[str, defer.Deferred] = {}

        def start(check):
            if check.name in running:
                return running[check.name]
            needed = [start(by_name[name]) for name in getattr(check, "requires", ()) if name in by_name]
            ready = defer.gatherResults(needed) if needed else defer.succeed(None)
            finished = ready.addCallback(lambda _: self._invoke(check, stage, state, args))

            def record(results):
                collected[check.name] = results
                state.stage_results[stage].extend(results)

            finished.addCallback(record)
            running[check.name] = finished
            return finished

        everything = defer.gatherResults([start(check) for check in checks])

        def finish(_):
            ordered = [result for check in checks for result in collected.get(check.name, ())]
            state.stage_results[stage] = earlier + ordered
            return self._verdict(stage, state, ordered)

        return everything.addCallback(finish)

    def _invoke(self, check, stage, state, args):
        try:
            outcome = getattr(check, stage)(state, *args)
        except Exception:
            running = defer.fail()
        else:
            if isinstance(outcome, defer.Deferred):
                running = outcome
            elif inspect.isawaitable(outcome):
                running = defer.ensureDeferred(outcome)
            else:
                running = defer.succeed(outcome)
        if self.clock is not None and self.timeout:
            running.addTimeout(self.timeout, self.clock)
        running.addCallback(self._normalise, check)
        running.addErrback(self._crashed, check, stage)
        return running

    @staticmethod
    def _normalise(outcome, check):
        if outcome is None:
            return []
        if isinstance(outcome, CheckResult):
            return [outcome]
        results = list(outcome)
        for result in results:
            if not isinstance(result, CheckResult):
                raise TypeError(f"check {check.name!r} returned {result!r}, not a CheckResult")
        return results

    def _crashed(self, failure, check, stage):
        if failure.check(defer.TimeoutError, defer.CancelledError):
            log.warn("check {check} timed out at stage {stage}", check=check.name, stage=stage)
            reason = "check timed out"
        else:
            log.failure("check {check} failed at stage {stage}", failure, check=check.name, stage=stage)
            reason = "internal error"
        return [CheckResult(check.name, "temperror", reason=reason, enhanced="4.3.0")]

    def _verdict(self, stage, state, results) -> Verdict:
        acted = [(result, self.action_for(result)) for result in results]
        strongest = min((action for _, action in acted), key=_STRENGTH.__getitem__, default="tag")
        action = _VERDICT[strongest]
        reply = None
        if action in ("reject", "tempfail"):
            cause = next(result for result, chosen in acted if chosen == strongest)
            reply = self._reply(stage, action, cause)
        verdict = Verdict(action=action, reply=reply, results=list(results))
        if stage != "data":
            verdict.tags = _tags(acted)
            return verdict
        everything = [(result, self.action_for(result)) for result in state.all_results()]
        if action == "accept" and any(chosen == "junk" for _, chosen in everything):
            verdict.action = "junk"
        verdict.tags = _tags(everything)
        verdict.headers = [authres.build(self.authserv_id, [result.auth_results for result, _ in everything])]
        for result, chosen in everything:
            if chosen != "ignore":
                verdict.headers.extend(result.headers)
        verdict.strip = authres.own_fields(state.message or b"", self.authserv_id)
        return verdict

    @staticmethod
    def _reply(stage, action, cause: CheckResult) -> SMTPReplyError:
        klass = "5" if action == "reject" else "4"
        if action == "reject":
            code = 554 if stage == "connect" else 550
        else:
            code = 421 if stage == "connect" else 451
        enhanced = cause.enhanced or "5.7.1"
        enhanced = klass + enhanced[1:]
        text = public_text(cause.reason)
        if not text:
            text = "Rejected by policy" if action == "reject" else "Temporary failure, try again later"
        return SMTPReplyError(code, enhanced, text)


def _tags(acted) -> list[str]:
    tags = []
    for result, action in acted:
        if action != "ignore":
            for tag in result.tags:
                if tag not in tags:
                    tags.append(tag)
    return tags
