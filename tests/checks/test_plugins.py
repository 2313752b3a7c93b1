"""Loading checks: built-ins and an `emailsvc.checks` plugin, the same way."""
import os
import sys
import textwrap

from twisted.internet import defer
from twisted.trial import unittest
from zope.interface.verify import verifyObject

from emailsvc.checks import plugins
from emailsvc.checks.dkim import DKIMCheck
from emailsvc.checks.dmarc import DMARCCheck
from emailsvc.interfaces import ICheck
from emailsvc.checks.rdns import ReverseDNSCheck
from emailsvc.checks.runner import DEFAULT_ACTIONS
from emailsvc.checks.spf import SPFCheck
from emailsvc.config import ChecksConfig, ConfigError, DNSConfig, load, parse
from tests.checks.support import session

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

PLUGIN = '''
from zope.interface import implementer

from emailsvc.interfaces import ICheck
from emailsvc.checks.model import CheckResult


@implementer(ICheck)
class GreylistCheck:
    name = "greylist"
    stages = ("rcpt",)

    def __init__(self, delay):
        self.delay = delay

    @classmethod
    def from_config(cls, config, resolver, reactor):
        return cls(int(config.checks.options.get("greylist", {}).get("delay", "60")))

    async def rcpt(self, state, recipient):
        return CheckResult("greylist", "unknown", reason=f"Greylisted for {self.delay} seconds", enhanced="4.7.1")


class NotACheck:
    name = "broken"
    stages = ("rcpt",)
'''


class BuiltinTests(unittest.TestCase):
    def setUp(self):
        from twisted.internet import reactor

        self.reactor = reactor
        self.resolver = object()

    def test_default_checks(self):
        checks = plugins.load_checks(parse(""), self.resolver, self.reactor)
        self.assertEqual([type(check) for check in checks], [SPFCheck, DKIMCheck, DMARCCheck, ReverseDNSCheck])
        for check in checks:
            verifyObject(ICheck, check)
            plugins.verify_check_class(type(check))

    def test_every_problem_is_named_by_key(self):
        config = parse('[checks]\nenabled = ["spf", "nosuch", "dnsbl"]\n', "x.toml")
        error = self.assertRaises(ConfigError, plugins.load_checks, config, self.resolver, self.reactor)
        self.assertEqual([p.key for p in error.problems], ["checks.enabled[1]", "checks.enabled[2]"])
        self.assertIn("checks.enabled[1]: no emailsvc.checks plugin named 'nosuch' (installed: ", str(error))
        self.assertIn("no zones", str(error))

    def test_build_pipeline(self):
        config = parse(
            '[server]\nhostname = "mx.example.net"\n'
            '[checks]\nenabled = ["dnsbl"]\ntimeout = 7.0\n'
            '[[checks.dnsbl.zones]]\nzone = "Zen.Example."\naction = "junk"\n'
            '[checks.actions]\nspf = { fail = "reject" }\n'
        )
        pipeline = plugins.build_pipeline(config, self.resolver, self.reactor)
        self.assertEqual(pipeline.authserv_id, "mx.example.net")
        self.assertEqual(pipeline.timeout, 7.0)
        self.assertEqual(pipeline.actions["dnsbl"]["listed:zen.example"], "junk")
        self.assertEqual(pipeline.actions["spf"], {"fail": "reject", "softfail": "tag", "temperror": "tag", "permerror": "tag"})
        config = parse('[server]\nhostname = "mx.example.net"\n[checks]\nauthserv_id = "example.net"\n')
        self.assertEqual(plugins.authserv_id(config), "example.net")

    def test_sample_file_matches_the_defaults(self):
        config = load(os.path.join(ROOT, "etc", "emailsvc.toml"))
        self.assertEqual(config.checks, ChecksConfig())
        self.assertEqual(config.dns, DNSConfig())
        self.assertEqual(plugins.actions_from_config(config), DEFAULT_ACTIONS)


class ThirdPartyTests(unittest.TestCase):
    """A distribution on sys.path registers a check like any installed package."""

    def setUp(self):
        from twisted.internet import reactor

        self.reactor = reactor
        root = self.mktemp()
        os.makedirs(os.path.join(root, "thirdparty_greylist-1.0.dist-info"))
        with open(os.path.join(root, "thirdparty_greylist.py"), "w") as handle:
            handle.write(PLUGIN)
        info = os.path.join(root, "thirdparty_greylist-1.0.dist-info")
        with open(os.path.join(info, "METADATA"), "w") as handle:
            handle.write("Metadata-Version: 2.1\nName: thirdparty-greylist\nVersion: 1.0\n")
        with open(os.path.join(info, "entry_points.txt"), "w") as handle:
            handle.write(
                textwrap.dedent(
                    """\
                    [emailsvc.checks]
                    greylist = thirdparty_greylist:GreylistCheck
                    broken = thirdparty_greylist:NotACheck
                    """
                )
            )
        sys.path.insert(0, root)
        self.addCleanup(sys.path.remove, root)
        self.addCleanup(sys.modules.pop, "thirdparty_greylist", None)

    def test_listed_with_the_builtins(self):
        self.assertTrue({"broken", "dkim", "dmarc", "dnsbl", "greylist", "rdns", "spf"} <= set(plugins.available()))

    @defer.inlineCallbacks
    def test_plugin_loads_and_runs_like_a_builtin(self):
        config = parse(
            '[checks]\nenabled = ["spf", "greylist"]\n'
            '[checks.options.greylist]\ndelay = "300"\n'
            '[checks.actions.plugins.greylist]\nunknown = "tempfail"\n'
        )
        pipeline = plugins.build_pipeline(config, object(), self.reactor)
        self.assertEqual([check.name for check in pipeline.checks], ["spf", "greylist"])
        greylist = pipeline.checks[1]
        verifyObject(ICheck, greylist)
        self.assertEqual(greylist.delay, 300)
        verdict = yield pipeline.rcpt(session(sender="a@example.org"), "b@example.net")
        self.assertEqual(verdict.action, "tempfail")
        self.assertEqual(str(verdict.reply), "451 4.7.1 Greylisted for 300 seconds")

    def test_plugin_without_the_interface_is_refused(self):
        config = parse('[checks]\nenabled = ["broken"]\n')
        error = self.assertRaises(ConfigError, plugins.load_checks, config, object(), self.reactor)
        self.assertIn("does not implement ICheck", str(error))
