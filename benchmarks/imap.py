"""IMAP throughput and latency: emailsvc vs Dovecot, same machine, same run.

One command sets up both servers with the same users, the same password
hash scheme and the same messages, and drives both with the same load:

- Dovecot: Debian's dovecot-imapd (installed when missing), a throwaway
  instance on loopback with its own configuration file, base_dir, state and
  log under a temporary directory; a passwd-file with ARGON2ID hashes
  (`doveadm pw -s ARGON2ID`: m=64 MiB, t=3, p=1; libsodium, which Dovecot
  verifies with, only does p=1); Maildir under each user's home; implicit
  TLS with a self-signed certificate; otherwise Debian's defaults.
- emailsvc: the real `twistd -n emailsvc` (benchmarks/harness.py) with an
  implicit-TLS IMAP listener served by `--workers` worker processes (one
  per core by default, as Dovecot runs a process per connection; 0: one
  process), the embedded store, users added with the `emailsvc` admin
  command (ARGON2ID through argon2-cffi: m=64 MiB, t=3, p=4).
- The same messages (benchmarks/imap_load.py: text and multipart with
  attachments, 2 KB to 60 KB, a fifth \\Seen) are APPENDed to both over
  IMAP before the clock starts.
- The load (benchmarks/imap_load.py): `--processes` x `--threads` client
  sessions at once, each session LOGIN, SELECT, `--commands` commands of a
  weighted mix (fetch flags/envelope/body, store, search, append, expunge,
  idle, noop), LOGOUT; for `--seconds` per server.

Prints commands/s and p50/p99 latency per command for both servers and
emailsvc's ratios, checks the issue's target (at least half of Dovecot's
commands/s, zero protocol errors, p99 under 50 ms) and writes the figures
into benchmarks/README.rst.  Run as root (Dovecot drops privileges to the
mail user and its own service users):

    sudo .venv/bin/python benchmarks/imap.py [--users 8] [--messages 200] [--seconds 30] [--workers N]
"""
from __future__ import annotations

import argparse
import datetime
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import harness  # noqa: E402
import imap_load  # noqa: E402

DOVECOT = "/usr/sbin/dovecot"
DOVEADM = "/usr/bin/doveadm"
MAIL_UID = 65534    # nobody: Dovecot's mail processes run as this user
ORDER = ("CONNECT+LOGIN", "LOGIN", "SELECT", "FETCH FLAGS", "FETCH ENVELOPE", "FETCH BODY", "STORE", "SEARCH",
         "APPEND", "EXPUNGE", "IDLE", "NOOP", "LOGOUT")


def users(count: int) -> list[str]:
    return [harness.USER] + [f"user{index}@{harness.DOMAIN}" for index in range(1, count)]


# -- Dovecot ---------------------------------------------------------------------

def ensure_dovecot() -> None:
    if not (os.path.exists(DOVECOT) and os.path.exists("/usr/lib/dovecot/imap")):
        harness.apt_install("imap", ("dovecot-imapd",))


class Dovecot:
    name = "dovecot"

    def __init__(self, workdir: str, user_names: list[str]):
        self.root = os.path.join(workdir, "dovecot")
        self.users = user_names
        self.port = harness.free_port()
        self.process = None
        self.config = os.path.join(self.root, "dovecot.conf")
        self.log = os.path.join(self.root, "dovecot.log")

    def write_config(self):
        for sub in ("run", "state", "home"):
            os.makedirs(os.path.join(self.root, sub), exist_ok=True)
        os.chmod(self.root, 0o755)
        cert, key = harness.self_signed(self.root, "localhost")
        passwd = os.path.join(self.root, "passwd")
        with open(passwd, "w", encoding="utf-8") as handle:
            for user in self.users:
                hashed = subprocess.run([DOVEADM, "-c", "/dev/null", "pw", "-s", "ARGON2ID", "-p", harness.PASSWORD],
                                        check=True, capture_output=True, text=True, timeout=60).stdout.strip()
                if not hashed.startswith("{ARGON2ID}"):
                    raise RuntimeError(f"doveadm pw gave {hashed!r}")
                home = os.path.join(self.root, "home", user)
                os.makedirs(home, exist_ok=True)
                os.chown(home, MAIL_UID, MAIL_UID)
                handle.write(f"{user}:{hashed}:{MAIL_UID}:{MAIL_UID}::{home}::\n")
        os.chmod(passwd, 0o644)
        dh = "/usr/share/dovecot/dh.pem"
        with open(self.config, "w", encoding="utf-8") as handle:
            handle.write(f"""\
base_dir = {self.root}/run
state_dir = {self.root}/state
log_path = {self.log}
protocols = imap
listen = 127.0.0.1
ssl = required
ssl_cert = <{cert}
ssl_key = <{key}
{"ssl_dh = <" + dh if os.path.exists(dh) else ""}
disable_plaintext_auth = yes
auth_mechanisms = plain login
passdb {{
  driver = passwd-file
  args = scheme=ARGON2ID {passwd}
}}
userdb {{
  driver = passwd-file
  args = {passwd}
}}
mail_location = maildir:~/Maildir
first_valid_uid = 100
last_valid_uid = 0
mail_max_userip_connections = 100
service imap-login {{
  inet_listener imap {{
    port = 0
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {self.port}
    ssl = yes
  }}
}}
service anvil {{
  chroot =
}}
""")

    def __enter__(self):
        self.write_config()
        self.process = subprocess.Popen([DOVECOT, "-F", "-c", self.config], stdin=subprocess.DEVNULL,
                                        stdout=subprocess.DEVNULL, stderr=open(self.log + ".stderr", "wb"))
        try:
            harness.wait_for_port(self.port, 30, self.process)
        except BaseException:
            harness.stop_process(self.process)
            raise RuntimeError(f"dovecot did not start:\n{harness.tail(self.log)}\n{harness.tail(self.log + '.stderr')}")
        return self

    def __exit__(self, *exc_info):
        harness.stop_process(self.process)
        return False

    @property
    def address(self):
        return ("127.0.0.1", self.port)

    @property
    def detail(self) -> str:
        version = subprocess.run([DOVECOT, "--version"], capture_output=True, text=True).stdout.strip()
        return f"Dovecot {version}, Maildir, ARGON2ID (m=64M t=3 p=1), implicit TLS"


# -- emailsvc --------------------------------------------------------------------

class EmailsvcIMAP(harness.Emailsvc):
    """harness.Emailsvc with an implicit-TLS IMAP listener and `user_names`."""

    name = "emailsvc"

    def __init__(self, workdir, user_names, profile=None, workers=0):
        super().__init__(os.path.join(workdir, "emailsvc"), profile=profile, workers=workers,
                         protocol="imap", tls="implicit", users=user_names)
        self.detail = (f"twistd, {workers} worker processes (server.workers), embedded store (SQLite WAL, messages inline),"
                       f" ARGON2ID (m=64M t=3 p=4), implicit TLS")

    @property
    def address(self):
        return ("127.0.0.1", self.port)


# -- the run ---------------------------------------------------------------------

def populate(address, user_names, messages):
    started = time.monotonic()
    with multiprocessing.Pool(min(4, len(user_names))) as pool:
        octets = pool.starmap(imap_load.populate, [(address, user, harness.PASSWORD, messages, index)
                                                   for index, user in enumerate(user_names)])
    return sum(octets), time.monotonic() - started


def drive(address, user_names, options):
    started = time.monotonic()
    with multiprocessing.Pool(options.processes) as pool:
        results = pool.starmap(imap_load.run_process, [
            (address, user_names, harness.PASSWORD, index + 1, options.threads, options.commands, options.seconds,
             options.max_sessions, options.messages) for index in range(options.processes)])
    elapsed = time.monotonic() - started
    latencies, errors, examples = {}, 0, []
    for part, part_errors, part_examples in results:
        for name, values in part.items():
            latencies.setdefault(name, []).extend(values)
        errors += part_errors
        examples.extend(part_examples)
    return latencies, errors, examples, elapsed


def summarize(latencies, elapsed):
    commands = sum(len(values) for name, values in latencies.items() if name != "CONNECT+LOGIN")
    rows = {}
    for name, values in latencies.items():
        values = sorted(values)
        rows[name] = {"count": len(values), "p50": _percentile(values, 50), "p99": _percentile(values, 99)}
    return {"commands": commands, "rate": commands / elapsed, "rows": rows}


def _percentile(values, percent):
    if not values:
        return float("nan")
    index = min(len(values) - 1, max(0, round(percent / 100 * len(values) + 0.5) - 1))
    return values[index]


def report(options, setups, results) -> str:
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    ours, theirs = results["emailsvc"], results["dovecot"]
    lines = [f"Measured {when} on {harness.machine()} (noisy; the ratios count)::", "",
             f"    python benchmarks/imap.py --users {options.users} --messages {options.messages}"
             f" --seconds {options.seconds} --processes {options.processes} --threads {options.threads}"
             f" --commands {options.commands} --workers {options.workers}", "",
             f"{options.users} users x {options.messages} messages"
             f" ({setups['emailsvc'][0] / options.users / options.messages / 1024:.0f} KB average),"
             f" {options.processes * options.threads} concurrent sessions of {options.commands} commands,"
             f" {options.seconds} s per server:", ""]
    header = ["command", "emailsvc n", "p50 ms", "p99 ms", "dovecot n", "p50 ms", "p99 ms"]
    rows = []
    for name in ORDER:
        a, b = ours["rows"].get(name), theirs["rows"].get(name)
        if a is None and b is None:
            continue
        cell = (lambda row, key: "-" if row is None else (str(row["count"]) if key == "count"
                                                            else f"{row[key] * 1000:.1f}"))
        rows.append([name, cell(a, "count"), cell(a, "p50"), cell(a, "p99"),
                     cell(b, "count"), cell(b, "p50"), cell(b, "p99")])
    widths = [max(len(row[i]) for row in rows + [header]) for i in range(len(header))]
    rule = "  ".join("=" * width for width in widths)
    lines += [rule, "  ".join(value.ljust(width) for value, width in zip(header, widths)), rule]
    lines += ["  ".join(value.ljust(width) for value, width in zip(row, widths)) for row in rows]
    lines += [rule, ""]
    ratio = ours["rate"] / theirs["rate"] if theirs["rate"] else float("nan")
    worst = max((row["p99"] for name, row in ours["rows"].items() if name not in ("CONNECT+LOGIN", "LOGIN")),
                default=float("nan"))
    lines += [f"- commands/s: emailsvc **{ours['rate']:.0f}**, dovecot **{theirs['rate']:.0f}**;"
              f" emailsvc / dovecot: **{ratio:.2f}x** (target >= 0.5)",
              f"- protocol errors: emailsvc {ours['errors']}, dovecot {theirs['errors']} (target 0)",
              f"- emailsvc's worst p99 outside LOGIN: {worst * 1000:.1f} ms (target < 50 ms)",
              f"- {results['emailsvc']['detail']}; {results['dovecot']['detail']}"]
    for name in ("emailsvc", "dovecot"):
        for example in results[name]["examples"][:3]:
            lines.append(f"- {name} error: ``{example}``")
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=8)
    parser.add_argument("--messages", type=int, default=200, help="per user")
    parser.add_argument("--seconds", type=float, default=30.0, help="of load per server")
    parser.add_argument("--processes", type=int, default=2, help="client processes")
    parser.add_argument("--threads", type=int, default=8, help="sessions at once per client process")
    parser.add_argument("--commands", type=int, default=200, help="per session, after LOGIN and SELECT")
    parser.add_argument("--max-sessions", type=int, default=10 ** 6, help="per thread")
    parser.add_argument("--only", choices=("emailsvc", "dovecot"), help="drive one server (no README)")
    harness.workers_argument(parser)
    parser.add_argument("--profile", help="run emailsvc's main process under cProfile, stats to this file"
                        " (it serves IMAP only with --workers 0)")
    parser.add_argument("--no-readme", action="store_true")
    options = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("imap: run as root (Dovecot's privilege separation)")
    ensure_dovecot()
    names = users(options.users)
    results, setups = {}, {}
    with tempfile.TemporaryDirectory(prefix="imap-bench-") as workdir:
        os.chmod(workdir, 0o755)
        servers = [("emailsvc", lambda: EmailsvcIMAP(workdir, names, options.profile, options.workers)),
                   ("dovecot", lambda: Dovecot(workdir, names))]
        for name, make in servers:
            if options.only and name != options.only:
                continue
            with make() as server:
                address = server.address
                setups[name] = populate(address, names, options.messages)
                print(f"{name}: {options.users * options.messages} messages appended in {setups[name][1]:.1f} s",
                      flush=True)
                latencies, errors, examples, elapsed = drive(address, names, options)
                summary = summarize(latencies, elapsed)
                summary.update(errors=errors, examples=examples, detail=server.detail)
                results[name] = summary
                print(f"{name}: {summary['commands']} commands in {elapsed:.1f} s = {summary['rate']:.0f}/s,"
                      f" {errors} protocol errors {examples[:2]}", flush=True)
                print("  p50/p99 ms: " + ", ".join(
                    f"{command} {row['p50'] * 1000:.0f}/{row['p99'] * 1000:.0f}"
                    for command, row in summary["rows"].items()), flush=True)
    if options.only:
        return
    text = report(options, setups, results)
    print(text)
    if not options.no_readme:
        harness.write_results("imap", "Latest IMAP figures", text)


if __name__ == "__main__":
    main()
