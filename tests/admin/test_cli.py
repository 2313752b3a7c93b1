"""The `emailsvc` admin command line, run against a real embedded store."""
import io
import os
import sqlite3
import sys

from twisted.internet import defer, protocol, reactor
from twisted.trial import unittest

from emailsvc.admin import cli
from emailsvc.cred.passwords import verify_password

DEFAULT_MAILBOXES = {"INBOX", "Sent", "Drafts", "Junk", "Trash", "Archive"}
PASSWORD = "correct horse battery staple"


class FakeStdin(io.StringIO):
    """Standard input that may claim to be a terminal."""

    def __init__(self, text="", tty=False):
        super().__init__(text)
        self.tty = tty

    def isatty(self):
        return self.tty


class FakeGetpass:
    """Answers prompts from a list, remembering the prompts."""

    def __init__(self, *answers):
        self.answers = list(answers)
        self.prompts = []

    def __call__(self, prompt):
        self.prompts.append(prompt)
        return self.answers.pop(0)


class Result:
    def __init__(self, status, stdout, stderr, stdin):
        self.status = status
        self.stdout = stdout
        self.stderr = stderr
        self.stdin = stdin

    @property
    def lines(self):
        return self.stdout.splitlines()

    def __repr__(self):
        return f"Result({self.status!r}, stdout={self.stdout!r}, stderr={self.stderr!r})"


def write_config(root, extra=""):
    """A configuration file keeping every file of the store under `root`."""
    var = os.path.join(root, "var")
    path = os.path.join(root, "emailsvc.toml")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(
            f"[server]\ndata_dir = '{var}'\n"
            f"[store.sqlite]\npath = '{os.path.join(var, 'emailsvc.sqlite3')}'\n"
            f"[store.fs]\npath = '{os.path.join(var, 'blobs')}'\n" + extra
        )
    return path, os.path.join(var, "emailsvc.sqlite3")


class CLITestCase(unittest.TestCase):
    def setUp(self):
        self.root = os.path.abspath(self.mktemp())
        os.makedirs(self.root)
        self.config, self.database = write_config(self.root)

    @defer.inlineCallbacks
    def cli(self, *argv, stdin="", tty=False, getpass=None, environ=None, config=True):
        """Run the command line under trial's reactor. @return: Deferred firing with a Result."""
        streams = cli.CommandIO(
            stdin=FakeStdin(stdin, tty),
            stdout=io.StringIO(),
            stderr=io.StringIO(),
            environ={} if environ is None else environ,
            getpass=getpass or FakeGetpass(),
        )
        if config:
            argv = ("--config", self.config) + argv
        status = yield cli.run(reactor, argv, streams)
        return Result(status, streams.stdout.getvalue(), streams.stderr.getvalue(), streams.stdin)

    def password_file(self, content):
        path = os.path.join(self.root, "password")
        with open(path, "w", encoding="utf-8", newline="") as handle:
            handle.write(content)
        return path

    def query(self, sql, *args):
        """Rows read straight from the SQLite database, as the service would see them."""
        connection = sqlite3.connect(self.database)
        try:
            return connection.execute(sql, args).fetchall()
        finally:
            connection.close()

    def assertOK(self, result):
        self.assertEqual((result.status, result.stderr), (0, ""), result)

    def assertError(self, result, message, status=1):
        self.assertEqual(result.status, status, result)
        self.assertIn(message, result.stderr)
        self.assertNotIn("Traceback", result.stderr)

    @defer.inlineCallbacks
    def add_user(self, address, password=PASSWORD, *options):
        result = yield self.cli("user", "add", address, *options, stdin=password + "\n")
        self.assertOK(result)
        return result


class CheckConfigTests(CLITestCase):
    @defer.inlineCallbacks
    def test_file_argument(self):
        result = yield self.cli("check-config", self.config, config=False)
        self.assertOK(result)
        self.assertEqual(result.lines, [f"{self.config}: ok"])

    @defer.inlineCallbacks
    def test_config_option(self):
        result = yield self.cli("check-config")
        self.assertOK(result)
        self.assertEqual(result.lines, [f"{self.config}: ok"])

    @defer.inlineCallbacks
    def test_environment_variable(self):
        result = yield self.cli("check-config", config=False, environ={"EMAILSVC_CONFIG": self.config})
        self.assertOK(result)
        self.assertEqual(result.lines, [f"{self.config}: ok"])

    @defer.inlineCallbacks
    def test_default_path(self):
        """Without --config or EMAILSVC_CONFIG, etc/emailsvc.toml is used."""
        result = yield self.cli("check-config", config=False)
        self.assertError(result, os.path.join("etc", "emailsvc.toml") + ": cannot read the configuration file")

    @defer.inlineCallbacks
    def test_reports_every_problem_with_its_key(self):
        path, _ = write_config(
            self.root, "[smtp]\nmax_recipients = 'many'\nmax_erors = 3\n[auth]\nlockout = -1\n"
        )
        result = yield self.cli("check-config", path, config=False)
        self.assertError(result, f"{path}: smtp.max_recipients: must be an integer")
        self.assertIn(f"{path}: smtp.max_erors: unknown key", result.stderr)
        self.assertIn(f"{path}: auth.lockout: must be at least 0", result.stderr)
        self.assertEqual(result.stdout, "")

    @defer.inlineCallbacks
    def test_not_toml(self):
        path = self.password_file("[server\n")
        result = yield self.cli("check-config", path, config=False)
        self.assertError(result, "not valid TOML")

    @defer.inlineCallbacks
    def test_unknown_backend(self):
        path, _ = write_config(self.root, "[store]\nmetadata = 'nosuchdb'\n")
        result = yield self.cli("check-config", path, config=False)
        self.assertError(result, f"{path}: store.metadata: no emailsvc.stores plugin named 'nosuchdb'")

    @defer.inlineCallbacks
    def test_store_command_with_broken_config(self):
        path, _ = write_config(self.root, "[smtp]\nmax_recipients = 0\n")
        result = yield self.cli("--config", path, "domain", "list", config=False)
        self.assertError(result, f"{path}: ")
        self.assertIn("smtp.max_recipients: must be at least 1", result.stderr)
        self.assertFalse(os.path.exists(self.database))


class DomainTests(CLITestCase):
    @defer.inlineCallbacks
    def test_add_list_remove(self):
        result = yield self.cli("domain", "add", "example.org")
        self.assertOK(result)
        self.assertEqual(result.lines, ["domain example.org added"])
        yield self.cli("domain", "add", "example.com")
        result = yield self.cli("domain", "list")
        self.assertOK(result)
        self.assertEqual(result.lines, ["example.com", "example.org"])
        result = yield self.cli("domain", "remove", "Example.ORG")
        self.assertOK(result)
        self.assertEqual(result.lines, ["domain example.org removed"])
        result = yield self.cli("domain", "list")
        self.assertEqual(result.lines, ["example.com"])

    @defer.inlineCallbacks
    def test_list_empty(self):
        result = yield self.cli("domain", "list")
        self.assertOK(result)
        self.assertEqual(result.stdout, "")

    @defer.inlineCallbacks
    def test_duplicate(self):
        yield self.cli("domain", "add", "example.org")
        result = yield self.cli("domain", "add", "EXAMPLE.org.")
        self.assertError(result, "emailsvc: domain example.org exists already")

    @defer.inlineCallbacks
    def test_remove_unknown(self):
        result = yield self.cli("domain", "remove", "example.org")
        self.assertError(result, "emailsvc: no such domain: example.org")

    @defer.inlineCallbacks
    def test_remove_not_empty(self):
        yield self.cli("domain", "add", "example.org")
        yield self.add_user("ann@example.org")
        result = yield self.cli("domain", "remove", "example.org")
        self.assertError(result, "emailsvc: domain example.org still has 1 users")

    @defer.inlineCallbacks
    def test_invalid(self):
        result = yield self.cli("domain", "add", "exa mple..org")
        self.assertError(result, "emailsvc: invalid domain name")

    @defer.inlineCallbacks
    def test_idn_normalised(self):
        result = yield self.cli("domain", "add", "BÜCHER.example")
        self.assertOK(result)
        self.assertEqual(result.lines, ["domain bücher.example added"])
        result = yield self.cli("domain", "add", "xn--bcher-kva.example")
        self.assertError(result, "emailsvc: domain bücher.example exists already")
        result = yield self.add_user("Max@xn--bcher-kva.EXAMPLE")
        self.assertEqual(result.lines, ["user max@bücher.example added (quota unlimited)"])
        result = yield self.cli("user", "list", "XN--BCHER-KVA.example")
        self.assertEqual(result.lines, ["max@bücher.example  unlimited"])
        result = yield self.cli("domain", "list")
        self.assertEqual(result.lines, ["bücher.example"])


class UserTests(CLITestCase):
    def setUp(self):
        super().setUp()
        return self.cli("domain", "add", "example.org")

    def stored_hash(self, address):
        rows = self.query("SELECT password_hash FROM users WHERE address = ?", address)
        self.assertEqual(len(rows), 1)
        return rows[0][0]

    def mailboxes(self, address):
        return {row[0] for row in self.query(
            "SELECT m.name FROM mailboxes m JOIN users u ON u.id = m.user_id WHERE u.address = ?", address
        )}

    def assertSecret(self, result, password=PASSWORD):
        self.assertNotIn(password, result.stdout + result.stderr)

    @defer.inlineCallbacks
    def test_add_password_file(self):
        path = self.password_file(PASSWORD + "\nsecond line\n")
        result = yield self.cli("user", "add", "Ann@Example.org", "--password-file", path)
        self.assertOK(result)
        self.assertEqual(result.lines, ["user ann@example.org added (quota unlimited)"])
        self.assertSecret(result)
        self.assertTrue(verify_password(self.stored_hash("ann@example.org"), PASSWORD))

    @defer.inlineCallbacks
    def test_add_password_file_crlf(self):
        path = self.password_file(PASSWORD + "\r\n")
        yield self.cli("user", "add", "ann@example.org", "--password-file", path)
        self.assertTrue(verify_password(self.stored_hash("ann@example.org"), PASSWORD))

    @defer.inlineCallbacks
    def test_add_password_from_stdin(self):
        result = yield self.cli("user", "add", "ann@example.org", stdin=PASSWORD + "\nignored\n")
        self.assertOK(result)
        self.assertSecret(result)
        self.assertTrue(verify_password(self.stored_hash("ann@example.org"), PASSWORD))

    @defer.inlineCallbacks
    def test_add_password_file_dash_is_stdin(self):
        result = yield self.cli(
            "user", "add", "ann@example.org", "--password-file", "-", stdin=PASSWORD, tty=True
        )
        self.assertOK(result)
        self.assertTrue(verify_password(self.stored_hash("ann@example.org"), PASSWORD))

    @defer.inlineCallbacks
    def test_add_password_prompted_twice(self):
        getpass = FakeGetpass(PASSWORD, PASSWORD)
        result = yield self.cli("user", "add", "ann@example.org", tty=True, getpass=getpass)
        self.assertOK(result)
        self.assertEqual(len(getpass.prompts), 2)
        self.assertIn("ann@example.org", getpass.prompts[0])
        self.assertSecret(result)
        self.assertTrue(verify_password(self.stored_hash("ann@example.org"), PASSWORD))

    @defer.inlineCallbacks
    def test_add_prompted_passwords_differ(self):
        getpass = FakeGetpass(PASSWORD, PASSWORD + "x")
        result = yield self.cli("user", "add", "ann@example.org", tty=True, getpass=getpass)
        self.assertError(result, "emailsvc: the passwords do not match")
        self.assertSecret(result)
        self.assertEqual(self.query("SELECT * FROM users"), [])

    @defer.inlineCallbacks
    def test_add_empty_stdin(self):
        result = yield self.cli("user", "add", "ann@example.org", stdin="")
        self.assertError(result, "emailsvc: no password in standard input")
        result = yield self.cli("user", "add", "ann@example.org", stdin="\n")
        self.assertError(result, "emailsvc: the password from standard input is empty")

    @defer.inlineCallbacks
    def test_add_missing_password_file(self):
        missing = os.path.join(self.root, "missing")
        result = yield self.cli("user", "add", "ann@example.org", "--password-file", missing)
        self.assertError(result, f"emailsvc: cannot read the password file {missing}")

    @defer.inlineCallbacks
    def test_password_never_on_command_line(self):
        result = yield self.cli("user", "add", "ann@example.org", PASSWORD)
        self.assertError(result, "a password is never taken on the command line", status=2)
        self.assertSecret(result)

    @defer.inlineCallbacks
    def test_hash_is_argon2id(self):
        yield self.add_user("ann@example.org")
        self.assertTrue(self.stored_hash("ann@example.org").startswith("$argon2id$"))

    @defer.inlineCallbacks
    def test_add_provisions_mailboxes(self):
        yield self.add_user("ann@example.org")
        self.assertEqual(self.mailboxes("ann@example.org"), DEFAULT_MAILBOXES)

    @defer.inlineCallbacks
    def test_add_duplicate(self):
        yield self.add_user("ann@example.org")
        result = yield self.cli("user", "add", "ANN@example.org", stdin="other\n")
        self.assertError(result, "emailsvc: user ann@example.org exists already")
        self.assertTrue(verify_password(self.stored_hash("ann@example.org"), PASSWORD))

    @defer.inlineCallbacks
    def test_add_unknown_domain(self):
        result = yield self.cli("user", "add", "ann@example.net", stdin=PASSWORD)
        self.assertError(result, "emailsvc: no such domain: example.net")
        self.assertEqual(self.query("SELECT * FROM users"), [])

    @defer.inlineCallbacks
    def test_add_invalid_address(self):
        """A bad address is reported before the password is read."""
        result = yield self.cli("user", "add", "ann..x@example.org", stdin=PASSWORD)
        self.assertError(result, "emailsvc: invalid address: 'ann..x@example.org'")
        self.assertEqual(result.stdin.tell(), 0)
        result = yield self.cli("user", "add", "no-at-sign", stdin=PASSWORD)
        self.assertError(result, "emailsvc: invalid address")

    @defer.inlineCallbacks
    def test_add_with_quota(self):
        result = yield self.add_user("ann@example.org", PASSWORD, "--quota", "1048576")
        self.assertEqual(result.lines, ["user ann@example.org added (quota 1048576)"])
        yield self.add_user("bob@example.org", PASSWORD, "--quota", "2G")
        result = yield self.cli("user", "list")
        self.assertEqual(result.lines, ["ann@example.org  1048576", "bob@example.org  2147483648"])

    @defer.inlineCallbacks
    def test_quota(self):
        yield self.add_user("ann@example.org")
        result = yield self.cli("user", "quota", "ann@example.org", "5000")
        self.assertOK(result)
        self.assertEqual(result.lines, ["quota of ann@example.org set to 5000"])
        self.assertEqual(self.query("SELECT quota FROM users"), [(5000,)])
        result = yield self.cli("user", "quota", "ann@example.org", "none")
        self.assertEqual(result.lines, ["quota of ann@example.org set to unlimited"])
        result = yield self.cli("user", "list")
        self.assertEqual(result.lines, ["ann@example.org  unlimited"])

    @defer.inlineCallbacks
    def test_quota_invalid_is_usage_error(self):
        yield self.add_user("ann@example.org")
        for value in ("lots", "-5", "1.5G", str(2**63)):
            result = yield self.cli("user", "quota", "ann@example.org", value)
            self.assertError(result, "usage: emailsvc user quota", status=2)
        self.assertEqual(self.query("SELECT quota FROM users"), [(None,)])

    @defer.inlineCallbacks
    def test_quota_unknown_user(self):
        result = yield self.cli("user", "quota", "nobody@example.org", "10")
        self.assertError(result, "emailsvc: no such user: nobody@example.org")

    @defer.inlineCallbacks
    def test_passwd(self):
        yield self.add_user("ann@example.org")
        before = self.stored_hash("ann@example.org")
        path = self.password_file("new secret\n")
        result = yield self.cli("user", "passwd", "ann@example.org", "--password-file", path)
        self.assertOK(result)
        self.assertEqual(result.lines, ["password of ann@example.org changed"])
        self.assertSecret(result, "new secret")
        after = self.stored_hash("ann@example.org")
        self.assertNotEqual(before, after)
        self.assertTrue(verify_password(after, "new secret"))
        self.assertFalse(verify_password(after, PASSWORD))

    @defer.inlineCallbacks
    def test_passwd_unknown_user(self):
        result = yield self.cli("user", "passwd", "nobody@example.org", stdin="x\n")
        self.assertError(result, "emailsvc: no such user: nobody@example.org")

    @defer.inlineCallbacks
    def test_list(self):
        yield self.cli("domain", "add", "example.com")
        yield self.add_user("zed@example.org")
        yield self.add_user("ann@example.org")
        yield self.add_user("bob@example.com", PASSWORD, "--quota", "100")
        result = yield self.cli("user", "list")
        self.assertOK(result)
        self.assertEqual(result.lines, [
            "ann@example.org  unlimited", "bob@example.com  100", "zed@example.org  unlimited",
        ])
        result = yield self.cli("user", "list", "example.org")
        self.assertEqual(result.lines, ["ann@example.org  unlimited", "zed@example.org  unlimited"])

    @defer.inlineCallbacks
    def test_list_unknown_domain(self):
        result = yield self.cli("user", "list", "example.net")
        self.assertError(result, "emailsvc: no such domain: example.net")

    @defer.inlineCallbacks
    def test_remove(self):
        yield self.add_user("ann@example.org")
        yield self.cli("alias", "add", "info@example.org", "ann@example.org")
        result = yield self.cli("user", "remove", "Ann@example.org")
        self.assertOK(result)
        self.assertEqual(result.lines, ["user ann@example.org removed"])
        self.assertEqual(self.query("SELECT * FROM users"), [])
        self.assertEqual(self.query("SELECT * FROM mailboxes"), [])
        self.assertEqual(self.query("SELECT * FROM aliases"), [])
        result = yield self.cli("domain", "remove", "example.org")
        self.assertOK(result)

    @defer.inlineCallbacks
    def test_remove_unknown(self):
        result = yield self.cli("user", "remove", "nobody@example.org")
        self.assertError(result, "emailsvc: no such user: nobody@example.org")

    @defer.inlineCallbacks
    def test_persists_across_runs(self):
        """Each call opens and stops the store; a later call sees the user."""
        yield self.add_user("ann@example.org")
        first = yield self.cli("user", "list")
        second = yield self.cli("user", "list")
        self.assertEqual(first.lines, ["ann@example.org  unlimited"])
        self.assertEqual(second.lines, first.lines)
        result = yield self.cli("user", "add", "ann@example.org", stdin="x\n")
        self.assertError(result, "exists already")


class AliasTests(CLITestCase):
    @defer.inlineCallbacks
    def setUp(self):
        super().setUp()
        yield self.cli("domain", "add", "example.org")
        yield self.cli("domain", "add", "example.com")
        yield self.add_user("ann@example.org")

    @defer.inlineCallbacks
    def test_add_list_remove(self):
        result = yield self.cli("alias", "add", "Info@Example.org", "ann@example.org")
        self.assertOK(result)
        self.assertEqual(result.lines, ["alias info@example.org -> ann@example.org added"])
        yield self.cli("alias", "add", "info@example.org", "someone@elsewhere.example")
        yield self.cli("alias", "add", "sales@example.com", "ann@example.org")
        result = yield self.cli("alias", "list")
        self.assertOK(result)
        self.assertEqual(result.lines, [
            "info@example.org -> ann@example.org",
            "info@example.org -> someone@elsewhere.example",
            "sales@example.com -> ann@example.org",
        ])
        result = yield self.cli("alias", "list", "example.com")
        self.assertEqual(result.lines, ["sales@example.com -> ann@example.org"])
        result = yield self.cli("alias", "remove", "info@example.org", "someone@elsewhere.example")
        self.assertOK(result)
        self.assertEqual(result.lines, ["alias info@example.org -> someone@elsewhere.example removed"])
        result = yield self.cli("alias", "remove", "sales@example.com")
        self.assertEqual(result.lines, ["alias sales@example.com removed"])
        result = yield self.cli("alias", "list")
        self.assertEqual(result.lines, ["info@example.org -> ann@example.org"])

    @defer.inlineCallbacks
    def test_remove_all_destinations(self):
        yield self.cli("alias", "add", "info@example.org", "ann@example.org")
        yield self.cli("alias", "add", "info@example.org", "bob@elsewhere.example")
        result = yield self.cli("alias", "remove", "info@example.org")
        self.assertOK(result)
        result = yield self.cli("alias", "list")
        self.assertEqual(result.stdout, "")

    @defer.inlineCallbacks
    def test_catch_all(self):
        result = yield self.cli("alias", "add", "@EXAMPLE.com", "ann@example.org")
        self.assertOK(result)
        self.assertEqual(result.lines, ["alias @example.com -> ann@example.org added"])
        result = yield self.cli("alias", "list", "example.com")
        self.assertEqual(result.lines, ["@example.com -> ann@example.org"])
        result = yield self.cli("alias", "remove", "@example.com")
        self.assertEqual(result.lines, ["alias @example.com removed"])

    @defer.inlineCallbacks
    def test_duplicate(self):
        yield self.cli("alias", "add", "info@example.org", "ann@example.org")
        result = yield self.cli("alias", "add", "info@example.org", "ANN@example.org")
        self.assertError(result, "emailsvc: alias info@example.org -> ann@example.org exists already")

    @defer.inlineCallbacks
    def test_source_is_a_user(self):
        result = yield self.cli("alias", "add", "ann@example.org", "bob@elsewhere.example")
        self.assertError(result, "emailsvc: ann@example.org is a user already")

    @defer.inlineCallbacks
    def test_unknown_domain(self):
        result = yield self.cli("alias", "add", "info@example.net", "ann@example.org")
        self.assertError(result, "emailsvc: no such domain: example.net")
        result = yield self.cli("alias", "list", "example.net")
        self.assertError(result, "emailsvc: no such domain: example.net")

    @defer.inlineCallbacks
    def test_invalid_destination(self):
        result = yield self.cli("alias", "add", "info@example.org", "not an address")
        self.assertError(result, "emailsvc: invalid address")

    @defer.inlineCallbacks
    def test_remove_unknown(self):
        result = yield self.cli("alias", "remove", "info@example.org")
        self.assertError(result, "emailsvc: no such alias: info@example.org")


class UsageTests(CLITestCase):
    @defer.inlineCallbacks
    def test_no_command(self):
        result = yield self.cli()
        self.assertError(result, "usage: emailsvc", status=2)

    @defer.inlineCallbacks
    def test_unknown_command(self):
        result = yield self.cli("mailbox", "list")
        self.assertError(result, "invalid choice", status=2)

    @defer.inlineCallbacks
    def test_missing_action(self):
        result = yield self.cli("domain")
        self.assertError(result, "usage: emailsvc domain", status=2)

    @defer.inlineCallbacks
    def test_missing_argument(self):
        result = yield self.cli("alias", "add", "info@example.org")
        self.assertError(result, "DESTINATION", status=2)

    @defer.inlineCallbacks
    def test_help(self):
        result = yield self.cli("user", "add", "--help")
        self.assertOK(result)
        self.assertIn("--password-file", result.stdout)

    @defer.inlineCallbacks
    def test_store_cannot_open(self):
        """A store that cannot be opened is one line on stderr, not a traceback."""
        blocker = os.path.join(self.root, "file")
        open(blocker, "w").close()
        path, _ = write_config(self.root)
        with open(path, "w") as handle:
            handle.write(f"[store.sqlite]\npath = '{os.path.join(blocker, 'db.sqlite3')}'\n"
                         f"[store.fs]\npath = '{os.path.join(self.root, 'blobs')}'\n")
        result = yield self.cli("--config", path, "domain", "list", config=False)
        self.assertError(result, "emailsvc: cannot open the store:")


class MainTests(unittest.TestCase):
    """main() itself, on the paths that finish before the reactor would run."""

    def main(self, *argv):
        stdout, stderr = io.StringIO(), io.StringIO()
        status = cli.main(list(argv), stdin=FakeStdin(), stdout=stdout, stderr=stderr)
        return status, stdout.getvalue(), stderr.getvalue()

    def test_usage_error(self):
        status, stdout, stderr = self.main("bogus")
        self.assertEqual(status, 2)
        self.assertIn("usage: emailsvc", stderr)

    def test_check_config(self):
        root = os.path.abspath(self.mktemp())
        os.makedirs(root)
        path, _ = write_config(root)
        self.assertEqual(self.main("check-config", path), (0, f"{path}: ok\n", ""))

    def test_config_error(self):
        path = os.path.abspath(self.mktemp())
        status, stdout, stderr = self.main("--config", path, "domain", "list")
        self.assertEqual(status, 1)
        self.assertIn(f"{path}: cannot read the configuration file", stderr)


class _Collect(protocol.ProcessProtocol):
    def __init__(self, stdin: bytes):
        self.stdin = stdin
        self.out, self.err = [], []
        self.ended = defer.Deferred()

    def connectionMade(self):
        self.transport.write(self.stdin)
        self.transport.closeStdin()

    def outReceived(self, data):
        self.out.append(data)

    def errReceived(self, data):
        self.err.append(data)

    def processEnded(self, reason):
        self.ended.callback((reason.value.exitCode, b"".join(self.out).decode(), b"".join(self.err).decode()))


class ConsoleScriptTests(CLITestCase):
    """The installed `emailsvc` script, as an operator runs it."""

    def spawn(self, *argv, stdin=b""):
        script = os.path.join(os.path.dirname(sys.executable), "emailsvc")
        if not os.path.exists(script):
            self.fail(f"the console script is not installed next to {sys.executable}")
        collect = _Collect(stdin)
        environment = dict(os.environ, EMAILSVC_CONFIG=self.config, PYTHONIOENCODING="utf-8")
        reactor.spawnProcess(collect, script, [script, *argv], env=environment, path=self.root)
        return collect.ended

    @defer.inlineCallbacks
    def test_add_domain_and_user_then_list(self):
        self.assertEqual((yield self.spawn("domain", "add", "example.org")),
                         (0, "domain example.org added\n", ""))
        result = yield self.spawn("user", "add", "ann@example.org", "--quota", "1M",
                                  stdin=PASSWORD.encode() + b"\n")
        self.assertEqual(result, (0, "user ann@example.org added (quota 1048576)\n", ""))
        self.assertEqual((yield self.spawn("user", "list")), (0, "ann@example.org  1048576\n", ""))
        self.assertEqual((yield self.spawn("domain", "list")), (0, "example.org\n", ""))
        self.assertTrue(self.query("SELECT password_hash FROM users")[0][0].startswith("$argon2id$"))


class QueueTests(CLITestCase):
    """`queue list|retry|delete` on rows made by the real queue store."""

    START = 1_800_000_000

    @defer.inlineCallbacks
    def with_store(self, operation):
        """Run `operation(store)` on the store the CLI uses, opened and stopped around it."""
        from emailsvc.config import load
        from emailsvc.service import open_store

        store = open_store(load(self.config), reactor)
        yield store.start()
        try:
            return (yield operation(store))
        finally:
            yield store.stop()

    @defer.inlineCallbacks
    def seed(self, store):
        """Three messages: one delivered and one pending recipient, one
        pending recipient, and a bounce that failed.  @return: their queue ids."""
        from twisted.internet.task import Clock

        from emailsvc.delivery.queue import OutboundQueue
        from emailsvc.store.sql.queue import Outcome, SQLQueueStore

        clock = Clock()
        clock.advance(self.START)
        rows = SQLQueueStore(store.metadata.db)
        queue = OutboundQueue(rows, store.blobs, clock)
        ids = []
        for sender, recipients in (("alice@example.org", ["carol@far.test", "bob@remote.test"]),
                                   ("alice@example.org", ["dave@far.test"]), ("", ["gone@remote.test"])):
            ids.append((yield queue.enqueue(f"Subject: {len(ids)}\r\n\r\nx\r\n".encode(), sender, recipients)))
        now = self.START + 60
        leased = {row.recipient: row.id for row in (yield rows.lease_due("r", now, 600, 10))}
        yield rows.record("r", [
            Outcome(leased["carol@far.test"], "delivered", 1, now, "250 2.0.0 Ok"),
            Outcome(leased["bob@remote.test"], "pending", 1, self.START + 900, "451 4.4.1 Connection refused"),
            Outcome(leased["dave@far.test"], "pending", 1, self.START + 300, "450 4.2.1 Busy"),
            Outcome(leased["gone@remote.test"], "failed", 1, now, "550 5.1.1 No such user"),
        ], now)
        return ids

    def due(self):
        return dict(self.query("SELECT recipient, next_attempt FROM queue_recipients WHERE status = 'pending'"))

    @defer.inlineCallbacks
    def test_list_pending_first(self):
        self.assertEqual((yield self.cli("queue", "list")).stdout, "")
        first, second, bounce = yield self.with_store(self.seed)
        result = yield self.cli("queue", "list")
        self.assertOK(result)
        self.assertEqual(result.lines, [
            f"{second}  alice@example.org  dave@far.test  pending  1  2027-01-15T08:05:00Z  450 4.2.1 Busy",
            f"{first}  alice@example.org  bob@remote.test  pending  1  2027-01-15T08:15:00Z"
            "  451 4.4.1 Connection refused",
            f"{first}  alice@example.org  carol@far.test  delivered  1  -  250 2.0.0 Ok",
            f"{bounce}  <>  gone@remote.test  failed  1  -  550 5.1.1 No such user",
        ])

    @defer.inlineCallbacks
    def test_retry(self):
        import time

        first, second, _ = yield self.with_store(self.seed)
        before = int(time.time())
        result = yield self.cli("queue", "retry", first)
        self.assertOK(result)
        self.assertEqual(result.lines, ["1 pending recipient(s) due now"])
        due = self.due()
        self.assertTrue(before <= due["bob@remote.test"] <= time.time())
        self.assertEqual(due["dave@far.test"], self.START + 300)
        result = yield self.cli("queue", "retry", "--all")
        self.assertEqual(result.lines, ["2 pending recipient(s) due now"])
        self.assertTrue(self.due()["dave@far.test"] <= time.time())
        # Finished rows are left alone.
        self.assertEqual(self.query("SELECT next_attempt FROM queue_recipients WHERE status != 'pending'"),
                         [(self.START + 60,), (self.START + 60,)])

    @defer.inlineCallbacks
    def test_retry_needs_ids_or_all(self):
        first, _, _ = yield self.with_store(self.seed)
        for argv in ((), (first, "--all")):
            result = yield self.cli("queue", "retry", *argv)
            self.assertError(result, "give QUEUE_ID ... or --all", status=2)
        before = self.due()
        result = yield self.cli("queue", "retry", first, "NOSUCHID")
        self.assertError(result, "emailsvc: no such queued message: NOSUCHID")
        self.assertEqual(self.due(), before)

    @defer.inlineCallbacks
    def test_delete(self):
        from emailsvc.errors import BlobNotFound

        first, second, bounce = yield self.with_store(self.seed)
        keys = dict(self.query("SELECT queue_id, blob_key FROM queue_messages"))
        result = yield self.cli("queue", "delete", first, "NOSUCHID")
        self.assertError(result, "emailsvc: no such queued message: NOSUCHID")
        self.assertEqual(len(self.query("SELECT * FROM queue_recipients")), 4)
        result = yield self.cli("queue", "delete", first, bounce, first)
        self.assertOK(result)
        self.assertEqual(result.lines, ["2 message(s) deleted with 3 recipient(s), senders not notified"])
        self.assertEqual([line.split()[:3] for line in (yield self.cli("queue", "list")).lines],
                         [[second, "alice@example.org", "dave@far.test"]])
        self.assertEqual(self.query("SELECT queue_id FROM queue_messages"), [(second,)])

        @defer.inlineCallbacks
        def collect(store):
            yield store.metadata.mail.collect_garbage(store.blobs, -10)
            yield self.assertFailure(store.blobs.get(keys[first]), BlobNotFound)
            self.assertEqual((yield store.blobs.get(keys[second])), b"Subject: 1\r\n\r\nx\r\n")

        yield self.with_store(collect)
