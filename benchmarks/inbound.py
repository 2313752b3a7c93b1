"""Inbound SMTP accept rate: emailsvc vs Postfix vs aiosmtpd, same machine, same run.

Postfix's `smtp-source` sends N messages (default 10,000) of ~5 KB over S
parallel SMTP sessions (default 20, one connection per message) to one
recipient.  The clock runs from just before the first connect until every
message is durably in its mailbox:

- emailsvc: the real `twistd -n emailsvc` on the embedded store (SQLite +
  files); it answers 250 only after the SQL transaction that holds the
  message (one of up to store.inline_max bytes, as these are) is committed,
  and the INBOX row count is checked afterwards;
- Postfix: a throwaway instance (own config, queue and data directories under
  a temporary directory) delivering to a virtual Maildir; done when
  Maildir/new holds N files;
- aiosmtpd: benchmarks/maildir_aiosmtpd.py, fsync of the file and of the
  directory before each 250.

Each server runs `--rounds` times, interleaved; the median counts.  Prints
msgs/s and emailsvc's ratios and writes them into benchmarks/README.rst.
Installs its peers when missing (`apt-get install postfix`, `pip install
aiosmtpd`).  Every server listens on 127.0.0.1 on a free high port and is
stopped at the end, also on error.

    python benchmarks/inbound.py [--messages 10000] [--sessions 20] [--size 5120] [--rounds 3]
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib.util
import os
import re
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import harness  # noqa: E402
from tests.delivery.postfix import write_master_cf  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
SMTP_SOURCE = "/usr/sbin/smtp-source"
POSTFIX = "/usr/sbin/postfix"
SENDER = "sender@remote.test"
VMAIL_UID = 65534  # nobody: virtual(8) refuses uids below virtual_minimum_uid (100)
SERVERS = ("emailsvc", "postfix", "aiosmtpd")
# "No configuration": the package must not set up (or start) a system
# instance on port 25; the benchmarks run their own instances.
POSTFIX_SELECTIONS = "postfix postfix/main_mailer_type select No configuration\n"


# -- peers -----------------------------------------------------------------------

def ensure_peers() -> None:
    """Install Postfix (for smtp-source and the Postfix baseline) and aiosmtpd if missing."""
    if not (os.path.exists(SMTP_SOURCE) and os.path.exists(POSTFIX)):
        harness.apt_install("inbound", ("postfix",), POSTFIX_SELECTIONS)
        if not os.path.exists(SMTP_SOURCE):
            sys.exit(f"inbound: {SMTP_SOURCE} is missing after installing postfix")
    if importlib.util.find_spec("aiosmtpd") is None:
        subprocess.run([sys.executable, "-m", "pip", "install", "aiosmtpd"], timeout=900, check=True)


# -- the servers -----------------------------------------------------------------

def count_files(directory: str) -> int:
    try:
        with os.scandir(directory) as entries:
            return sum(1 for entry in entries if entry.is_file(follow_symlinks=False))
    except FileNotFoundError:
        return 0


class EmailsvcServer:
    name = "emailsvc"

    def __init__(self, workdir, profile=None, checks=False, workers=0):
        self.root = os.path.join(workdir, "emailsvc")
        self.profile = profile
        self.checks = checks
        self.workers = workers
        self.detail = (f"embedded store (SQLite WAL synchronous=FULL, messages inline), {workers} worker"
                       f" processes (server.workers), no inbound checks")
        self.stack = contextlib.ExitStack()
        self.server = None

    def __enter__(self):
        os.makedirs(self.root, exist_ok=True)
        with self.stack as stack:
            options = {}
            if self.checks:
                # The default checks, asking a DNS stand-in that answers at once.
                dns = stack.enter_context(harness.NXDomainDNS(self.root))
                options = {"checks": None, "nameservers": [dns.nameserver]}
            # smtp-source opens a connection per message, all from 127.0.0.1: a
            # new one may arrive before the server has seen the previous one
            # close.  Postfix exempts $mynetworks from its per-client limits.
            self.server = stack.enter_context(harness.Emailsvc(
                self.root, max_connections_per_ip=1000, profile=self.profile, workers=self.workers, **options))
            self.port = self.server.port
            self.stack = stack.pop_all()
        return self

    def __exit__(self, *exc_info):
        self.stack.close()
        return False

    def count(self) -> int:
        return self.server.inbox_count()

    def log_tail(self) -> str:
        return self.server.log_tail()


class PostfixServer:
    name = "postfix"
    detail = "throwaway instance, virtual(8) delivery to a Maildir"

    def __init__(self, workdir):
        self.root = os.path.join(workdir, "postfix")
        self.etc = os.path.join(self.root, "etc")
        self.queue = os.path.join(self.root, "queue")
        self.data = os.path.join(self.root, "data")
        self.vmail = os.path.join(self.root, "vmail")
        self.new = os.path.join(self.vmail, "example.test", "alice", "new")
        self.log = os.path.join(self.root, "maillog")
        self.port = harness.free_port()

    def _write_config(self):
        for path in (self.etc, self.queue, self.data, self.vmail):
            os.makedirs(path, exist_ok=True)
        # Postfix daemons run as the postfix user and nobody: they need to
        # traverse the temporary directories.
        path = self.root
        while path != "/" and path.startswith(tempfile.gettempdir() + os.sep):
            os.chmod(path, 0o755)
            path = os.path.dirname(path)
        os.chown(self.vmail, VMAIL_UID, VMAIL_UID)
        with open(os.path.join(self.etc, "vmailbox"), "w", encoding="ascii") as handle:
            handle.write(f"{harness.USER} example.test/alice/\n")
        with open(os.path.join(self.etc, "main.cf"), "w", encoding="ascii") as handle:
            handle.write(f"""\
# A throwaway Postfix for benchmarks/inbound.py; everything else is default.
compatibility_level = 3.6
queue_directory = {self.queue}
data_directory = {self.data}
myhostname = postfix.bench.test
mydomain = bench.test
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
alias_maps =
alias_database =
virtual_mailbox_domains = {harness.DOMAIN}
virtual_mailbox_base = {self.vmail}
virtual_mailbox_maps = texthash:{self.etc}/vmailbox
virtual_uid_maps = static:{VMAIL_UID}
virtual_gid_maps = static:{VMAIL_UID}
maillog_file = {self.log}
maillog_file_prefixes = {self.root}
""")
        write_master_cf(os.path.join(self.etc, "master.cf"), self.port)

    def _postfix(self, *command: str, check: bool = True):
        result = subprocess.run([POSTFIX, "-c", self.etc, *command], capture_output=True, text=True,
                                timeout=120, stdin=subprocess.DEVNULL)
        if check and result.returncode:
            raise RuntimeError(f"postfix {' '.join(command)} failed ({result.returncode}): "
                               f"{result.stdout}{result.stderr}\n{harness.tail(self.log)}")
        return result

    def __enter__(self):
        self._write_config()
        self._postfix("set-permissions", check=False)
        try:
            self._postfix("start")
            harness.wait_for_port(self.port, 30)
        except BaseException:
            self.__exit__()
            raise
        return self

    def _master_pid(self) -> int | None:
        try:
            with open(os.path.join(self.queue, "pid", "master.pid"), encoding="ascii") as handle:
                return int(handle.read().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def __exit__(self, *exc_info):
        pid = self._master_pid()
        self._postfix("stop", check=False)
        if pid is not None and not harness.wait_until(lambda: not _alive(pid), 30, 0.1):
            self._postfix("abort", check=False)
            if not harness.wait_until(lambda: not _alive(pid), 10, 0.1):
                os.kill(pid, 9)
        return False

    def count(self) -> int:
        return count_files(self.new)

    def log_tail(self) -> str:
        return harness.tail(self.log)


def _alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie that nobody reaps counts as stopped)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


class AiosmtpdServer(harness.Helper):
    name = "aiosmtpd"
    what = "aiosmtpd"
    detail = "Maildir handler, fsync file + directory in a thread pool before 250"

    def __init__(self, workdir):
        self.root = os.path.join(workdir, "aiosmtpd")
        super().__init__(os.path.join(self.root, "server.log"))
        self.maildir = os.path.join(self.root, "Maildir")
        self.new = os.path.join(self.maildir, "new")
        self.port = harness.free_port()

    def command(self):
        return [sys.executable, os.path.join(HERE, "maildir_aiosmtpd.py"), "--port", str(self.port),
                "--maildir", self.maildir]

    def ready(self):
        return super().ready() and harness.port_open(self.port)

    def count(self) -> int:
        return count_files(self.new)


# -- one run ---------------------------------------------------------------------

def measure(server, args, log_path: str) -> harness.Run:
    """Load `server` (started) with smtp-source and wait until every message is stored."""
    run = harness.Run(server, args.messages)
    before = server.count()
    command = [SMTP_SOURCE, "-l", str(args.size), "-m", str(args.messages), "-s", str(args.sessions),
               "-f", SENDER, "-t", harness.USER]
    if args.reuse:
        command.append("-d")
    command.append(f"127.0.0.1:{server.port}")
    with open(log_path, "wb") as log:
        started = time.monotonic()
        source = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        try:
            status = source.wait(args.timeout)
        except subprocess.TimeoutExpired:
            source.kill()
            source.wait(10)
            status = None
        run.load_seconds = time.monotonic() - started
    if status is None:
        run.errors.append(f"smtp-source did not finish within {args.timeout:.0f} s")
    elif status:
        run.errors.append(f"smtp-source exited with status {status}")
    output = harness.tail(log_path, 2000)
    run.errors.extend(line.strip() for line in output.splitlines()
                      if re.search(r"\b(fatal|error|warning)\b", line, re.I))
    target = before + args.messages
    done = harness.wait_until(lambda: server.count() >= target, args.settle_timeout if status == 0 else 5, 0.02)
    run.seconds = time.monotonic() - started
    run.done = server.count() - before
    if not done:
        run.errors.append(f"only {run.done} of {args.messages} messages stored")
    return run


def start(name: str, workdir: str, profile: str | None = None, checks: bool = False, workers: int = 0):
    if name == "emailsvc":
        return EmailsvcServer(workdir, profile, checks, workers)
    if name == "postfix":
        return PostfixServer(workdir)
    return AiosmtpdServer(workdir)


# -- report ----------------------------------------------------------------------

def figures(args, runs, medians, command: str) -> str:
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"Measured {when} on {harness.machine()} (the figures are noisy; the ratios count)::",
        "",
        f"    {command}",
        "",
        f"{args.messages} messages of {args.size} bytes of body, {args.sessions} parallel sessions"
        f" ({'several messages per connection' if args.reuse else 'one connection per message'}),"
        f" {args.rounds} round(s), median:",
        "",
        "=========  ==========  ===============  ==================================================",
        "server     msgs/s      rounds (msgs/s)  how",
        "=========  ==========  ===============  ==================================================",
    ]
    for name, items in runs.items():
        median = medians[name]
        each = " ".join(f"{run.rate:.0f}" if run.complete else "fail" for run in items)
        lines.append(f"{name:<9}  {median:>10.1f}  {each:<15}  {items[0].detail}" if median is not None
                     else f"{name:<9}  {'failed':>10}  {each:<15}  {items[0].detail}")
    lines.append("=========  ==========  ===============  ==================================================")
    lines.append("")
    lines += harness.ratio_lines(medians, ("postfix", "aiosmtpd"))
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    harness.common_arguments(parser, SERVERS, messages=10_000, sessions=20)
    parser.add_argument("--reuse", action="store_true", help="several messages per connection (smtp-source -d)")
    parser.add_argument("--timeout", type=float, default=900, help="limit for one smtp-source run, seconds")
    parser.add_argument("--settle-timeout", type=float, default=300,
                        help="how long to wait for delivery after smtp-source ends, seconds")
    parser.add_argument("--profile", metavar="FILE", help="run emailsvc under cProfile (twistd --profile), "
                        "stats saved to FILE.<round>; the figures are then not comparable")
    parser.add_argument("--checks", action="store_true",
                        help="run emailsvc's default inbound checks (SPF, DKIM, DMARC, rDNS) against a local"
                             " DNS stand-in that answers NXDOMAIN; the peers do no such checks")
    args = parser.parse_args(argv)
    servers = harness.chosen_servers(parser, args, SERVERS)
    if not (1 <= args.messages <= 1_000_000 and 1 <= args.sessions <= 200 and 1 <= args.rounds <= 20
            and 100 <= args.size <= 10_000_000):
        parser.error("--messages 1..1000000, --sessions 1..200, --rounds 1..20, --size 100..10000000")
    ensure_peers()

    def measure_one(name, where, round_number):
        profile = f"{args.profile}.{round_number}" if args.profile and name == "emailsvc" else None
        with start(name, where, profile, args.checks, args.workers) as server:
            run = measure(server, args, os.path.join(where, f"{name}-smtp-source.log"))
            if not run.complete:
                run.errors.append("server log:\n" + server.log_tail())
        return run, run.summary("stored", "smtp-source done")

    runs = harness.run_rounds(servers, args.rounds, "emailsvc-inbound-", args.keep, measure_one)
    command = harness.command_line(__file__, argv)
    readme = None
    if not args.no_readme and not args.profile and not args.checks:
        readme = ("inbound", "Latest inbound figures", lambda medians: figures(args, runs, medians, command))
    return harness.report(runs, args.rounds, ("postfix", "aiosmtpd"), readme)


if __name__ == "__main__":
    sys.exit(main())
