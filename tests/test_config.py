"""Config: typed loading, every problem reported with its key path."""
import dataclasses
import os

from twisted.trial import unittest

from emailsvc.config import Config, ConfigError, load, parse

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class SampleFileTests(unittest.SynchronousTestCase):
    def test_embedded_default(self):
        config = load(os.path.join(ROOT, "etc", "emailsvc.toml"))
        self.assertEqual(config.store.metadata, "sqlite")
        self.assertEqual(config.listeners["https"].port, 8443)

    def test_production(self):
        config = load(os.path.join(ROOT, "etc", "emailsvc.production.toml"))
        self.assertEqual((config.store.metadata, config.store.blobs), ("postgresql", "s3"))
        self.assertEqual(config.listeners["https"].address, "::")

    def test_sample_documents_every_key(self):
        """Every key of every section appears in the embedded sample."""
        with open(os.path.join(ROOT, "etc", "emailsvc.toml")) as handle:
            text = handle.read()

        def walk(section, prefix):
            for f in dataclasses.fields(section):
                value = getattr(section, f.name)
                if dataclasses.is_dataclass(value):
                    self.assertIn(f"\n[{prefix}{f.name}]\n", text, f"[{prefix}{f.name}] is not documented")
                    walk(value, f"{prefix}{f.name}.")
                elif prefix:
                    self.assertIn(f"\n{f.name} = ", text, f"{prefix}{f.name} is not documented")

        walk(Config(), "")


class ProblemTests(unittest.SynchronousTestCase):
    def problems(self, text):
        error = self.assertRaises(ConfigError, parse, text, "test.toml")
        return [str(problem) for problem in error.problems]

    def test_all_problems_at_once(self):
        problems = self.problems(
            '[server]\nhostnme = "x"\nshutdown_timeout = "soon"\n'
            '[smtp]\nmax_recipients = 0\n[bogus]\n'
        )
        self.assertEqual(problems, [
            "bogus: unknown key",
            "server.hostnme: unknown key",
            "server.shutdown_timeout: must be a number, not str 'soon'",
            "smtp.max_recipients: must be at least 1, not 0",
        ])

    def test_render_names_file(self):
        error = self.assertRaises(ConfigError, parse, "[tls]\nmin_version = '1.0'\n", "etc/x.toml")
        self.assertEqual(error.render(), "etc/x.toml: tls.min_version: must be one of '1.2', '1.3'")

    def test_types(self):
        self.assertEqual(self.problems("[smtp]\nmax_recipients = true\n"),
                         ["smtp.max_recipients: must be an integer, not bool True"])
        self.assertEqual(self.problems("server = 3\n"), ["server: must be a table"])
        self.assertEqual(parse("[server]\nshutdown_timeout = 5\n").server.shutdown_timeout, 5.0)

    def test_inline_max_bounded(self):
        self.assertEqual(self.problems("[store]\ninline_max = 2097152\n"),
                         ["store.inline_max: must be from 0 to 1048576, not 2097152"])
        self.assertEqual(parse("[store]\ninline_max = 0\n").store.inline_max, 0)

    def test_spool_threshold_bounded(self):
        self.assertEqual(self.problems("[server]\nspool_threshold = 0\n"),
                         ["server.spool_threshold: must be from 1 to 1073741824, not 0"])
        self.assertEqual(self.problems("[server]\nspool_threshold = 1073741825\n"),
                         ["server.spool_threshold: must be from 1 to 1073741824, not 1073741825"])
        self.assertEqual(parse("[server]\nspool_threshold = 1\n").server.spool_threshold, 1)

    def test_listeners(self):
        problems = self.problems(
            '[listeners.a]\nprotocol = "https"\nport = 8443\n'
            '[listeners.b]\nprotocol = "metrics"\nport = 8443\ntls = "implicit"\n'
            '[listeners.c]\nprotocol = "gopher"\nport = 70000\n'
            '[listeners.d]\nprotocol = "https"\n'
        )
        self.assertEqual(problems, [
            "listeners.c.protocol: must be one of 'smtp', 'submission', 'imap', 'pop3', 'https', 'metrics'",
            "listeners.c.port: must be from 0 to 65535, not 70000",
        ])
        problems = self.problems(
            '[listeners.a]\nprotocol = "https"\nport = 8443\n[listeners.b]\nprotocol = "metrics"\nport = 8443\ntls = "implicit"\n'
            '[listeners.d]\nprotocol = "https"\n'
        )
        self.assertEqual(problems, [
            "listeners.b.port: is already used by listeners.a",
            "listeners.b.tls: must be 'none' for protocol 'metrics'",
            "listeners.d.port: is required",
        ])

    def test_backend_requirements(self):
        self.assertEqual(self.problems('[store]\nmetadata = "postgresql"\nblobs = "s3"\n'), [
            "store.postgresql.dsn: is required when store.metadata is 'postgresql'",
            "store.s3.endpoint: is required when store.blobs is 's3'",
            "store.s3.bucket: is required when store.blobs is 's3'",
        ])
        self.assertEqual(self.problems('[tls]\ncertificate = "a.pem"\n'),
                         ["tls: certificate and private_key must be given together"])

    def test_invalid_toml(self):
        (problem,) = self.problems("[server\n")
        self.assertTrue(problem.startswith("not valid TOML: "), problem)

    def test_missing_file(self):
        error = self.assertRaises(ConfigError, load, "/nonexistent/emailsvc.toml")
        self.assertEqual(error.render(),
                         "/nonexistent/emailsvc.toml: cannot read the configuration file: No such file or directory")

    def test_frozen(self):
        config = parse("")
        self.assertRaises(Exception, setattr, config.server, "hostname", "x")
