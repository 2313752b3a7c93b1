"""CheckPipeline: concurrency, actions, merging, replies and headers, with fake checks."""
from twisted.internet import defer, task
from twisted.trial import unittest

from emailsvc.checks import authres
from emailsvc.checks.runner import DEFAULT_ACTIONS, CheckPipeline, merge_actions
from tests.checks.support import FakeCheck, make_message, result, session


def pipeline(*checks, actions=None, **kwargs):
    return CheckPipeline(checks, actions or {}, "mx.example.net", **kwargs)


class ActionTests(unittest.TestCase):
    def test_defaults(self):
        p = pipeline()
        self.assertEqual(p.action_for(result("spf", "fail")), "tag")
        self.assertEqual(p.action_for(result("dmarc", "fail", outcome="fail_reject")), "reject")
        self.assertEqual(p.action_for(result("dmarc", "fail", outcome="fail_quarantine")), "junk")
        self.assertEqual(p.action_for(result("dnsbl", "listed", outcome="listed:zen.example")), "reject")
        self.assertEqual(p.action_for(result("thirdparty", "spam")), "tag")

    def test_configuration_overrides_key_by_key(self):
        p = pipeline(actions={"spf": {"fail": "reject"}, "thirdparty": {"spam": "junk"}})
        self.assertEqual(p.action_for(result("spf", "fail")), "reject")
        self.assertEqual(p.action_for(result("spf", "softfail")), DEFAULT_ACTIONS["spf"]["softfail"])
        self.assertEqual(p.action_for(result("thirdparty", "spam")), "junk")

    def test_outcome_before_result(self):
        p = pipeline(actions={"dnsbl": {"listed:soft.example": "junk"}})
        self.assertEqual(p.action_for(result("dnsbl", "listed", outcome="listed:soft.example")), "junk")
        self.assertEqual(p.action_for(result("dnsbl", "listed", outcome="listed:hard.example")), "reject")

    def test_unknown_action_refused(self):
        self.assertRaises(ValueError, merge_actions, {"spf": {"fail": "bounce"}})


class MergeTests(unittest.TestCase):
    def run_stage(self, *results, actions=None, stage="mail"):
        checks = [FakeCheck(f"c{i}", {stage: r}) for i, r in enumerate(results)]
        actions = actions or {}
        p = pipeline(*checks, actions=actions)
        state = session(sender="a@example.org")
        if stage == "rcpt":
            return self.successResultOf(p.rcpt(state, "b@example.net"))
        return self.successResultOf(getattr(p, stage)(state))

    def test_accept_when_nothing_acts(self):
        verdict = self.run_stage(result("c0", "pass"), None)
        self.assertEqual(verdict.action, "accept")
        self.assertIsNone(verdict.reply)
        self.assertEqual([r.result for r in verdict.results], ["pass"])

    def test_reject_beats_tempfail_beats_junk(self):
        actions = {"c0": {"x": "junk"}, "c1": {"x": "tempfail"}, "c2": {"x": "reject"}}
        verdict = self.run_stage(result("c0", "x"), result("c1", "x"), result("c2", "x", reason="go away"), actions=actions)
        self.assertEqual(verdict.action, "reject")
        self.assertEqual((verdict.reply.code, verdict.reply.enhanced, verdict.reply.text), (550, "5.7.1", "go away"))
        verdict = self.run_stage(result("c0", "x"), result("c1", "x"), actions=actions)
        self.assertEqual(verdict.action, "tempfail")
        self.assertEqual((verdict.reply.code, verdict.reply.enhanced), (451, "4.7.1"))
        verdict = self.run_stage(result("c0", "x"), result("c9", "pass"), actions=actions)
        self.assertEqual(verdict.action, "junk")
        self.assertIsNone(verdict.reply)

    def test_reply_codes_follow_stage_and_action(self):
        actions = {"c0": {"bad": "reject", "later": "tempfail"}}
        verdict = self.run_stage(result("c0", "bad", enhanced="4.7.23"), actions=actions, stage="connect")
        self.assertEqual((verdict.reply.code, verdict.reply.enhanced), (554, "5.7.23"))
        verdict = self.run_stage(result("c0", "later", enhanced="5.7.24"), actions=actions, stage="connect")
        self.assertEqual((verdict.reply.code, verdict.reply.enhanced), (421, "4.7.24"))
        verdict = self.run_stage(result("c0", "bad"), actions=actions, stage="rcpt")
        self.assertEqual(verdict.reply.code, 550)

    def test_reply_text_is_made_safe(self):
        actions = {"c0": {"bad": "reject"}}
        verdict = self.run_stage(result("c0", "bad", reason="line\r\n250 injected\x00 " + "x" * 500), actions=actions)
        self.assertNotIn("\r", verdict.reply.text)
        self.assertNotIn("\n", verdict.reply.text)
        self.assertLessEqual(len(verdict.reply.text), 200)
        verdict = self.run_stage(result("c0", "bad"), actions=actions)
        self.assertEqual(verdict.reply.text, "Rejected by policy")

    def test_ignore_drops_tags(self):
        verdict = self.run_stage(
            result("c0", "x", tags=["a"]), result("c1", "y", tags=["b", "a"]), actions={"c1": {"y": "ignore"}}
        )
        self.assertEqual(verdict.tags, ["a"])


class ExecutionTests(unittest.TestCase):
    def test_checks_run_concurrently(self):
        first, second = defer.Deferred(), defer.Deferred()
        a = FakeCheck("a", {"mail": first})
        b = FakeCheck("b", {"mail": second})
        running = pipeline(a, b).mail(session())
        self.assertEqual((len(a.calls), len(b.calls)), (1, 1))
        self.assertNoResult(running)
        second.callback(result("b", "pass"))
        self.assertNoResult(running)
        first.callback([result("a", "pass"), result("a", "neutral")])
        verdict = self.successResultOf(running)
        self.assertEqual([(r.check, r.result) for r in verdict.results], [("a", "pass"), ("a", "neutral"), ("b", "pass")])

    def test_coroutines_are_checks_too(self):
        async def coroutine(state):
            await defer.succeed(None)
            return result("co", "pass")

        verdict = self.successResultOf(pipeline(FakeCheck("co", {"helo": coroutine})).helo(session(helo="x.example")))
        self.assertEqual(verdict.results[0].result, "pass")

    def test_raising_check_is_a_temperror(self):
        actions = {"bad": {"temperror": "tempfail"}}
        p = pipeline(FakeCheck("bad", {"mail": ZeroDivisionError("boom")}), FakeCheck("good", {"mail": result("good", "pass")}), actions=actions)
        verdict = self.successResultOf(p.mail(session()))
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        self.assertEqual([(r.check, r.result) for r in verdict.results], [("bad", "temperror"), ("good", "pass")])
        self.assertEqual(verdict.action, "tempfail")
        self.assertNotIn("boom", verdict.reply.text)

    def test_failing_deferred_is_a_temperror(self):
        p = pipeline(FakeCheck("bad", {"data": defer.fail(KeyError("secret"))}))
        verdict = self.successResultOf(p.data(session(message=make_message([("From", "a@example.org")]))))
        self.flushLoggedErrors(KeyError)
        self.assertEqual(verdict.results[0].result, "temperror")
        self.assertEqual(verdict.action, "accept")

    def test_wrong_return_type_is_a_temperror(self):
        verdict = self.successResultOf(pipeline(FakeCheck("odd", {"mail": ["nonsense"]})).mail(session()))
        self.flushLoggedErrors(TypeError)
        self.assertEqual(verdict.results[0].result, "temperror")

    def test_slow_check_times_out(self):
        clock = task.Clock()
        p = pipeline(FakeCheck("slow", {"mail": defer.Deferred()}), clock=clock, timeout=5)
        running = p.mail(session())
        self.assertNoResult(running)
        clock.advance(5)
        verdict = self.successResultOf(running)
        self.assertEqual((verdict.results[0].result, verdict.results[0].reason), ("temperror", "check timed out"))

    def test_requires_waits_for_the_other_check(self):
        dkim_done = defer.Deferred()
        seen = []

        def reads_dkim(state):
            seen.append([r.result for r in state.results_for("dkim")])
            return result("dmarc", "pass")

        dmarc = FakeCheck("dmarc", {"data": reads_dkim}, requires=("dkim", "absent"))
        dkim = FakeCheck("dkim", {"data": dkim_done})
        running = pipeline(dmarc, dkim).data(session(message=b"\r\n"))
        self.assertEqual(dmarc.calls, [])
        dkim_done.callback(result("dkim", "pass"))
        verdict = self.successResultOf(running)
        self.assertEqual(seen, [["pass"]])
        self.assertEqual([r.check for r in verdict.results], ["dmarc", "dkim"])

    def test_cycle_refused(self):
        a = FakeCheck("a", {"data": None}, requires=("b",))
        b = FakeCheck("b", {"data": None}, requires=("a",))
        self.assertRaises(ValueError, pipeline, a, b)

    def test_duplicate_names_refused(self):
        self.assertRaises(ValueError, pipeline, FakeCheck("a", {"data": None}), FakeCheck("a", {"mail": None}))

    def test_only_checks_of_the_stage_run(self):
        a = FakeCheck("a", {"connect": None})
        b = FakeCheck("b", {"rcpt": result("b", "pass")})
        p = pipeline(a, b)
        self.successResultOf(p.rcpt(session(), "x@example.net"))
        self.assertEqual((a.calls, b.calls), ([], [("rcpt", ("x@example.net",))]))


class DataStageTests(unittest.TestCase):
    def test_authentication_results_from_every_stage(self):
        p = pipeline(
            FakeCheck("iprev", {"connect": result("iprev", "pass", auth_results="iprev=pass policy.iprev=192.0.2.1")}),
            FakeCheck("spf", {"mail": result("spf", "pass", auth_results="spf=pass smtp.mailfrom=a@example.org")}),
            FakeCheck("dkim", {"data": result("dkim", "none", auth_results="dkim=none")}),
        )
        state = session()
        self.successResultOf(p.connect(state))
        state.sender = "a@example.org"
        self.successResultOf(p.mail(state))
        state.message = make_message([("From", "a@example.org")])
        verdict = self.successResultOf(p.data(state))
        self.assertEqual(verdict.action, "accept")
        name, value = verdict.headers[0]
        self.assertEqual(name, "Authentication-Results")
        self.assertEqual(
            value,
            "mx.example.net;\r\n\tiprev=pass policy.iprev=192.0.2.1;\r\n\tspf=pass smtp.mailfrom=a@example.org;\r\n\tdkim=none",
        )

    def test_none_when_nothing_ran(self):
        verdict = self.successResultOf(pipeline().data(session(message=make_message([("Subject", "hi")]))))
        self.assertEqual(verdict.headers, [("Authentication-Results", "mx.example.net; none")])

    def test_forged_results_are_listed_for_removal(self):
        message = make_message(
            [
                ("Received", "from x"),
                ("Authentication-Results", "MX.example.NET; dkim=pass header.d=bank.example"),
                ("Authentication-Results", "other.example; spf=pass"),
                ("Authentication-Results", '(comment) "mx.example.net" 1; dmarc=pass'),
                ("From", "a@example.org"),
            ]
        )
        verdict = self.successResultOf(pipeline().data(session(message=message)))
        self.assertEqual(verdict.strip, [1, 3])
        rewritten = authres.apply(message, verdict)
        self.assertTrue(rewritten.startswith(b"Authentication-Results: mx.example.net; none\r\nReceived: from x\r\n"))
        self.assertIn(b"other.example; spf=pass", rewritten)
        self.assertNotIn(b"bank.example", rewritten)
        self.assertNotIn(b"dmarc=pass", rewritten)

    def test_junk_from_an_earlier_stage_carries_to_data(self):
        p = pipeline(
            FakeCheck("bl", {"connect": result("bl", "listed", tags=["bl"], headers=[("X-Listed", "yes")])}),
            FakeCheck("quiet", {"connect": result("quiet", "odd", tags=["quiet"], headers=[("X-Quiet", "1")])}),
            actions={"bl": {"listed": "junk"}, "quiet": {"odd": "ignore"}},
        )
        state = session()
        self.assertEqual(self.successResultOf(p.connect(state)).action, "junk")
        state.message = make_message([("From", "a@example.org")])
        verdict = self.successResultOf(p.data(state))
        self.assertEqual(verdict.action, "junk")
        self.assertEqual(verdict.tags, ["bl"])
        self.assertIn(("X-Listed", "yes"), verdict.headers)
        self.assertNotIn(("X-Quiet", "1"), verdict.headers)

    def test_reset_forgets_the_transaction_but_not_the_connection(self):
        p = pipeline(
            FakeCheck("c", {"connect": result("c", "pass"), "mail": result("m", "pass")}),
        )
        state = session()
        self.successResultOf(p.connect(state))
        state.sender = "a@example.org"
        state.recipients.append("b@example.net")
        state.scratch_for("m")["x"] = 1
        self.successResultOf(p.mail(state))
        state.reset()
        self.assertEqual((state.sender, state.recipients, state.scratch), (None, [], {}))
        self.assertEqual([r.check for r in state.all_results()], ["c"])

    def test_rcpt_results_accumulate(self):
        p = pipeline(FakeCheck("r", {"rcpt": lambda state, recipient: result("r", "pass", data={"to": recipient})}))
        state = session()
        self.successResultOf(p.rcpt(state, "a@example.net"))
        self.successResultOf(p.rcpt(state, "b@example.net"))
        self.assertEqual([r.data["to"] for r in state.results_for("r")], ["a@example.net", "b@example.net"])
