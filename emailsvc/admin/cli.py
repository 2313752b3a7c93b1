"""The `emailsvc` admin command line: configuration check, domains, users,
aliases, DKIM keys and the outbound queue.

Three layers, so that everything but the reactor start is testable:

- `prepare(argv, io)` parses the arguments, loads the configuration,
  validates names and reads a password (blocking, before any reactor runs);
- `execute(reactor, command, io)` opens the store the service uses, runs the
  operation and stops the store; returns a Deferred firing with the exit
  status.  `run(reactor, argv, io)` is both, for tests under trial;
- `main()` is the console script: prepare, then `task.react(execute)`.

Exit status: 0 on success, 1 for an error reported by the store or the
configuration, 2 for a usage error (as argparse does).
"""
from __future__ import annotations

import argparse
import functools
import getpass
import os
import re
import sys
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable

from twisted.internet import defer, task

from emailsvc import plugins
from emailsvc.addresses import normalize_address, normalize_domain
from emailsvc.admin import commands
from emailsvc.admin.password_input import PasswordInputError, read_password
from emailsvc.config import Config, ConfigError, Problem, load
from emailsvc.errors import InvalidName, StoreError
from emailsvc.service import open_store

PROG = "emailsvc"
DEFAULT_CONFIG = os.path.join("etc", "emailsvc.toml")
CONFIG_VARIABLE = "EMAILSVC_CONFIG"


@dataclass
class CommandIO:
    """Where a command reads and writes; tests replace every part."""

    stdin: Any = None
    stdout: Any = None
    stderr: Any = None
    environ: Any = None
    getpass: Callable[[str], str] = getpass.getpass

    @classmethod
    def system(cls, stdin=None, stdout=None, stderr=None, environ=None, getpass=None):
        """The process's own streams and environment where none is given."""
        return cls(
            stdin=sys.stdin if stdin is None else stdin,
            stdout=sys.stdout if stdout is None else stdout,
            stderr=sys.stderr if stderr is None else stderr,
            environ=os.environ if environ is None else environ,
            getpass=getpass or _prompt,
        )

    def error(self, message: str):
        self.stderr.write(f"{PROG}: {message}\n")


def _prompt(prompt: str) -> str:
    return getpass.getpass(prompt)


@dataclass
class Command:
    """A parsed command, ready to run."""

    args: argparse.Namespace
    config: Config | None = None
    # repr=False: a password must not show up in a debugging print.
    password: str | None = field(default=None, repr=False)

    @property
    def needs_store(self) -> bool:
        return self.args.store_operation is not None


class _Exit(Exception):
    """Stop with `status`; the reason was written already."""

    def __init__(self, status: int):
        super().__init__(status)
        self.status = status


# Argument parsing


class _Parser(argparse.ArgumentParser):
    """argparse writing to the command's streams and raising instead of exiting."""

    def __init__(self, *args, io: CommandIO, **kwargs):
        super().__init__(*args, **kwargs)
        self.io = io

    def add_subparsers(self, **kwargs):
        kwargs.setdefault("parser_class", functools.partial(_Parser, io=self.io))
        return super().add_subparsers(**kwargs)

    def _print_message(self, message, file=None):
        if message:
            (self.io.stderr if file is sys.stderr else self.io.stdout).write(message)

    def exit(self, status=0, message=None):
        if message:
            self._print_message(message, sys.stderr)
        raise _Exit(status)


_QUOTA = re.compile(r"(\d+)\s*([kmgt]?)(?:i?b)?", re.IGNORECASE)
_QUOTA_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
_QUOTA_LIMIT = 2**63  # the SQL column is a signed 64-bit integer


def parse_quota(text: str) -> int | None:
    """Bytes (optionally with a K, M, G or T suffix, powers of 1024), or
    "none"/"unlimited" for None."""
    if text.strip().lower() in ("none", "unlimited"):
        return None
    match = _QUOTA.fullmatch(text.strip())
    if not match:
        raise argparse.ArgumentTypeError(
            f"invalid quota {text!r}: give bytes (e.g. 1073741824 or 1G) or 'none'"
        )
    value = int(match.group(1)) * _QUOTA_UNITS[match.group(2).lower()]
    if value >= _QUOTA_LIMIT:
        raise argparse.ArgumentTypeError(f"quota {text!r} is too large")
    return value


def build_parser(io: CommandIO) -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        io=io,
        description="Administer an emailsvc mail server: domains, users, aliases, DKIM keys and "
        "the outbound queue.",
        epilog="Passwords are never taken on the command line: they are read from "
        "--password-file, from standard input when it is not a terminal, "
        "or from a prompt.",
    )
    parser.add_argument(
        "--config",
        metavar="FILE",
        help=f"the configuration file (default: ${CONFIG_VARIABLE}, else {DEFAULT_CONFIG})",
    )
    parser.set_defaults(store_operation=None, local_operation=None, needs_password=False, check=None)
    groups = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    check = groups.add_parser(
        "check-config", help="check a configuration file", description="Check a configuration file "
        "and report every problem in it."
    )
    check.add_argument("file", nargs="?", metavar="FILE", help="the file to check (default: --config)")
    check.set_defaults(local_operation=check_config)

    def actions(name, help):
        group = groups.add_parser(name, help=help, description=help[0].upper() + help[1:] + ".")
        return group.add_subparsers(dest="action", metavar="ACTION", required=True)

    def action(group, name, operation, help, password=False):
        sub = group.add_parser(name, help=help, description=help[0].upper() + help[1:] + ".")
        sub.set_defaults(store_operation=operation, needs_password=password)
        return sub

    domain = actions("domain", "manage the domains served")
    action(domain, "add", commands.domain_add, "serve mail for a domain").add_argument("name", metavar="NAME")
    action(domain, "list", commands.domain_list, "list the domains")
    action(domain, "remove", commands.domain_remove, "stop serving a domain without users or aliases"
           ).add_argument("name", metavar="NAME")

    user = actions("user", "manage users (mail accounts)")
    add = action(user, "add", commands.user_add, "create a user and their mailboxes", password=True)
    add.add_argument("address", metavar="ADDRESS")
    add.add_argument("--quota", type=parse_quota, metavar="BYTES",
                     help="storage quota in bytes, K/M/G/T suffixes allowed (default: unlimited)")
    add.add_argument("--password-file", metavar="FILE", help="read the password from the first line of FILE "
                     "('-' for standard input)")
    passwd = action(user, "passwd", commands.user_passwd, "change a user's password", password=True)
    passwd.add_argument("address", metavar="ADDRESS")
    passwd.add_argument("--password-file", metavar="FILE", help="read the password from the first line of FILE "
                        "('-' for standard input)")
    quota = action(user, "quota", commands.user_quota, "set a user's quota")
    quota.add_argument("address", metavar="ADDRESS")
    quota.add_argument("bytes", type=parse_quota, metavar="BYTES|none",
                       help="bytes, K/M/G/T suffixes allowed, or 'none' for unlimited")
    action(user, "list", commands.user_list, "list users with their quota"
           ).add_argument("domain", nargs="?", metavar="DOMAIN")
    action(user, "remove", commands.user_remove, "delete a user and all their mail"
           ).add_argument("address", metavar="ADDRESS")

    alias = actions("alias", "manage aliases (forwarding)")
    add = action(alias, "add", commands.alias_add, "forward SOURCE (an address, or @domain for a "
                 "catch-all) to DESTINATION")
    add.add_argument("source", metavar="SOURCE")
    add.add_argument("destination", metavar="DESTINATION")
    action(alias, "list", commands.alias_list, "list aliases"
           ).add_argument("domain", nargs="?", metavar="DOMAIN")
    remove = action(alias, "remove", commands.alias_remove, "remove one destination of an alias, or all")
    remove.add_argument("source", metavar="SOURCE")
    remove.add_argument("destination", nargs="?", metavar="DESTINATION")

    queue = actions("queue", "inspect and manage the outbound queue")
    action(queue, "list", commands.queue_list, "list queued recipients, pending ones first: queue id, sender, "
           "recipient, status, attempts, next attempt (UTC), last reply")
    retry = action(queue, "retry", commands.queue_retry, "make the pending recipients of messages due now "
                   "(the runner takes them at its next scan)")
    retry.add_argument("queue_ids", nargs="*", metavar="QUEUE_ID")
    retry.add_argument("--all", action="store_true", help="every queued message")
    retry.set_defaults(check=_ids_or_all(retry))
    action(queue, "delete", commands.queue_delete, "drop messages from the queue without telling their "
           "senders (a delivery already under way may still finish)"
           ).add_argument("queue_ids", nargs="+", metavar="QUEUE_ID")

    dkim = actions("dkim", "manage DKIM signing keys")
    generate = dkim.add_parser(
        "generate", help="create a signing key for a domain and print its DNS record",
        description="Create a DKIM signing key for DOMAIN under the configured key directory "
        "([dkim] key_dir) and print the TXT record to publish.  Every key of a domain signs.",
    )
    generate.add_argument("domain", metavar="DOMAIN")
    generate.add_argument("--selector", metavar="S", help="the selector (default: ALGORITHM-YYYYMMDD)")
    generate.add_argument("--algorithm", choices=("rsa", "ed25519"), default="rsa",
                          help="rsa (rsa-sha256, understood everywhere) or ed25519 (RFC 8463); default rsa")
    generate.add_argument("--bits", type=int, default=2048, help="RSA key size (default 2048)")
    generate.set_defaults(local_operation=commands.dkim_generate)
    return parser


def _ids_or_all(parser):
    """A check that exactly one of QUEUE_ID ... and --all was given."""

    def check(args):
        if bool(args.queue_ids) == args.all:
            parser.error("give QUEUE_ID ... or --all")

    return check


def _alias_source(source: str) -> str:
    source = source.strip()
    if source.startswith("@"):
        return "@" + normalize_domain(source[1:])
    return normalize_address(source)


# Normalising up front reports a bad name before a password is asked for.
_NORMALISERS = {
    "name": normalize_domain,
    "domain": normalize_domain,
    "address": normalize_address,
    "source": _alias_source,
    "destination": normalize_address,
}


def prepare(argv, io: CommandIO) -> Command:
    """Parse `argv`, load the configuration, validate names, read a password.

    Blocking (it may prompt).  Raises _Exit with the status after reporting
    why it cannot go on.
    """
    parser = build_parser(io)
    args, extra = parser.parse_known_args(list(argv))
    if extra and args.needs_password:
        # Whatever was typed there may be the password: do not repeat it.
        parser.error("unexpected arguments (not shown); a password is never taken on the command "
                     "line: use --password-file, standard input or the prompt")
    if extra:
        parser.error("unrecognized arguments: " + " ".join(extra))
    if args.check is not None:
        args.check(args)
    if args.config is None:
        args.config = (io.environ or {}).get(CONFIG_VARIABLE) or DEFAULT_CONFIG
    command = Command(args=args)
    if not command.needs_store:
        return command
    try:
        command.config = load(args.config)
    except ConfigError as error:
        io.stderr.write(error.render() + "\n")
        raise _Exit(1) from None
    try:
        for name, normalise in _NORMALISERS.items():
            if getattr(args, name, None) is not None:
                setattr(args, name, normalise(getattr(args, name)))
    except InvalidName as error:
        io.error(str(error))
        raise _Exit(1) from None
    if args.needs_password:
        try:
            command.password = read_password(io, args.password_file, args.address)
        except PasswordInputError as error:
            io.error(str(error))
            raise _Exit(1) from None
    return command


# Running


def check_config(command: Command, io: CommandIO) -> int:
    """`check-config [FILE]`: print "FILE: ok", or every problem and return 1."""
    path = command.args.file or command.args.config
    try:
        config = load(path)
        problems = []
        for group, key, name in (
            ("emailsvc.stores", "store.metadata", config.store.metadata),
            ("emailsvc.blobstores", "store.blobs", config.store.blobs),
        ):
            try:
                plugins.load(group, name)
            except plugins.PluginError as error:
                problems.append(Problem(key, str(error)))
        if problems:
            raise ConfigError(path, problems)
    except ConfigError as error:
        io.stderr.write(error.render() + "\n")
        return 1
    io.stdout.write(f"{path}: ok\n")
    return 0


class _StoreUnavailable(Exception):
    """The store could not be started; the message is for the operator."""


async def _with_store(reactor, command: Command, io: CommandIO) -> int:
    store = open_store(command.config, reactor)
    try:
        await store.start()
    except Exception as error:
        await _quietly(store.stop)
        raise _StoreUnavailable(f"cannot open the store: {error}") from error
    try:
        await command.args.store_operation(store, command, lambda line: io.stdout.write(line + "\n"))
    except BaseException:
        await _quietly(store.stop)
        raise
    await store.stop()
    return 0


async def _quietly(function):
    try:
        await function()
    except Exception:
        pass


async def _execute(reactor, command: Command, io: CommandIO) -> int:
    try:
        if not command.needs_store:
            return command.args.local_operation(command, io)
        return await _with_store(reactor, command, io)
    except (StoreError, plugins.PluginError, _StoreUnavailable) as error:
        io.error(str(error))
        return 1
    except ConfigError as error:
        io.stderr.write(error.render() + "\n")
        return 1
    except Exception:
        io.error("unexpected error (a bug, please report it):\n" + traceback.format_exc().rstrip())
        return 1


def execute(reactor, command: Command, io: CommandIO) -> defer.Deferred:
    """Run a prepared command. @return: Deferred firing with the exit status."""
    return defer.ensureDeferred(_execute(reactor, command, io))


def run(reactor, argv, io: CommandIO | None = None) -> defer.Deferred:
    """Prepare and execute `argv` on a running reactor.

    @return: Deferred firing with the exit status (never failing).
    """
    io = io or CommandIO.system()
    try:
        command = prepare(argv, io)
    except _Exit as stop:
        return defer.succeed(stop.status)
    return execute(reactor, command, io)


def _tolerant(stream):
    """Print names the terminal cannot encode (IDN domains) escaped, not as a traceback."""
    reconfigure = getattr(stream, "reconfigure", None)
    if reconfigure is not None:
        try:
            reconfigure(errors="backslashreplace")
        except (ValueError, TypeError):
            pass


def main(argv=None, stdin=None, stdout=None, stderr=None) -> int:
    """The `emailsvc` console script. @return: the exit status."""
    for given, stream in ((stdout, sys.stdout), (stderr, sys.stderr)):
        if given is None:
            _tolerant(stream)
    io = CommandIO.system(stdin, stdout, stderr)
    try:
        command = prepare(sys.argv[1:] if argv is None else argv, io)
    except _Exit as stop:
        return stop.status
    except KeyboardInterrupt:
        io.stderr.write("\n")
        return 130
    if not command.needs_store:
        return command.args.local_operation(command, io)

    outcome: list[int] = []

    def operate(reactor):
        return execute(reactor, command, io).addCallback(outcome.append)

    try:
        task.react(operate)
    except SystemExit:
        pass
    if not outcome:  # the reactor was stopped from outside (SIGINT, SIGTERM)
        io.error("interrupted")
        return 130
    return outcome[0]
