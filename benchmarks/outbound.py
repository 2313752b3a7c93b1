"""Outbound queue throughput: emailsvc vs Postfix as a relay, same machine, same run.

N messages (default 2,000) of ~5 KB are submitted over S parallel
authenticated SMTP sessions (default 10: STARTTLS, AUTH PLAIN, then each
session sends its share of the messages on its one connection), one
recipient each, spread over 10 remote domains.  Every server relays them
to the same kind of sink, Postfix's `smtp-sink` on loopback (a fresh one
per run, which counts what it accepted).  The clock runs from just before
the first connect until the sink has accepted every message:

- emailsvc: the real `twistd -n emailsvc` on the embedded store, its
  submission listener (STARTTLS) putting the messages in the outbound
  queue (blob synced, SQL row committed, before the 250), its queue runner
  delivering them to the sink as its smarthost (`queue.smarthost`, no TLS);
- Postfix: a throwaway instance (benchmarks/inbound.py's, its main.cf
  extended) with STARTTLS required before AUTH (Cyrus SASL, sasldb),
  relaying everything to the sink as its `relayhost`.

Each server runs `--rounds` times, interleaved; the median counts.  Prints
msgs/s for both and the ratio and writes them into benchmarks/README.rst.
Installs Postfix and sasl2-bin when missing (as root; running Postfix needs
root anyway).  Everything listens on 127.0.0.1 on free high ports and is
stopped at the end, also on error.

    sudo .venv/bin/python benchmarks/outbound.py [--messages 2000] [--sessions 10] [--size 5120] [--rounds 3]
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import re
import shutil
import smtplib
import ssl
import subprocess
import sys
import threading
import time

import harness
import inbound

SMTP_SINK = "/usr/sbin/smtp-sink"
SASLPASSWD2 = "/usr/sbin/saslpasswd2"
SERVERS = ("emailsvc", "postfix")
DOMAINS = 10


def ensure_peers() -> None:
    """Postfix (with smtp-sink), Cyrus SASL's saslpasswd2 and openssl, installed when missing."""
    if not all(os.path.exists(path) for path in (inbound.POSTFIX, SMTP_SINK, SASLPASSWD2, "/usr/bin/openssl")):
        harness.apt_install("outbound", ("postfix", "sasl2-bin", "openssl"), inbound.POSTFIX_SELECTIONS)


# -- the sink ----------------------------------------------------------------------

class Sink(harness.Helper):
    """Postfix's smtp-sink on 127.0.0.1: accepts everything, keeps nothing,
    and writes a running count (`mesg=N`) of the messages it accepted."""

    what = "smtp-sink"

    def __init__(self, workdir: str):
        super().__init__(os.path.join(workdir, "smtp-sink.out"))
        self.port = harness.free_port()

    def command(self):
        # -c: running counters; -u: the user to run as (required as root);
        # 256: the listen backlog.
        command = [SMTP_SINK, "-c", "-h", "sink.bench.test", f"127.0.0.1:{self.port}", "256"]
        if os.geteuid() == 0:
            command[1:1] = ["-u", "nobody"]
        return command

    def ready(self):
        return harness.port_open(self.port)

    def count(self) -> int:
        """Messages accepted so far (the counter updates at each final dot)."""
        try:
            with open(self.log, "rb") as handle:
                handle.seek(max(os.fstat(handle.fileno()).st_size - 200, 0))
                found = re.findall(rb"mesg=(\d+)", handle.read())
        except OSError:
            return 0
        return int(found[-1]) if found else 0


# -- the servers -------------------------------------------------------------------

class EmailsvcRelay(harness.Emailsvc):
    """harness.Emailsvc with a submission listener (STARTTLS) and its queue
    relaying everything to the sink."""

    name = "emailsvc"

    def __init__(self, workdir: str, sink_port: int, workers: int):
        super().__init__(os.path.join(workdir, "emailsvc"), max_connections_per_ip=1000, workers=workers,
                         protocol="submission", tls="starttls")
        self.sink_port = sink_port
        self.detail = (f"twistd, embedded store, {workers} worker process(es); submission (STARTTLS,"
                       " AUTH PLAIN, argon2id) -> outbound queue -> queue.smarthost, defaults otherwise")

    def extra_config(self) -> str:
        return f"""
[queue]
smarthost = "127.0.0.1"
smarthost_port = {self.sink_port}
tls = "none"
"""


class PostfixRelay(inbound.PostfixServer):
    """inbound.py's throwaway Postfix, made a submission relay: STARTTLS
    required, then AUTH (Cyrus SASL over a sasldb), and every message sent
    on to the sink as the relayhost."""

    name = "postfix"
    detail = ("throwaway instance; smtpd (STARTTLS required, AUTH PLAIN via Cyrus sasldb) -> queue ->"
              " relayhost, defaults otherwise")

    def __init__(self, workdir: str, sink_port: int):
        super().__init__(workdir)
        self.sink_port = sink_port

    def _write_config(self):
        super()._write_config()
        cert, key = harness.self_signed(self.etc, "postfix.bench.test")
        sasl = os.path.join(self.etc, "sasl")
        os.makedirs(sasl, exist_ok=True)
        sasldb = os.path.join(self.etc, "sasldb2")
        subprocess.run([SASLPASSWD2, "-f", sasldb, "-p", "-c", "-u", harness.DOMAIN,
                        harness.USER.split("@")[0]], input=harness.PASSWORD, text=True, capture_output=True,
                       timeout=60, check=True)
        shutil.chown(sasldb, "postfix", "postfix")
        with open(os.path.join(sasl, "smtpd.conf"), "w", encoding="ascii") as handle:
            handle.write(f"pwcheck_method: auxprop\nauxprop_plugin: sasldb\nmech_list: PLAIN LOGIN\n"
                         f"sasldb_path: {sasldb}\n")
        # Later settings override inbound.py's: relay only for AUTH users.
        with open(os.path.join(self.etc, "main.cf"), "a", encoding="ascii") as handle:
            handle.write(f"""
# benchmarks/outbound.py: a submission relay to the sink.
relayhost = [127.0.0.1]:{self.sink_port}
mynetworks = 127.0.0.1/32
smtpd_relay_restrictions = permit_sasl_authenticated, reject
smtpd_tls_security_level = encrypt
smtpd_tls_auth_only = yes
smtpd_tls_cert_file = {cert}
smtpd_tls_key_file = {key}
smtpd_sasl_auth_enable = yes
smtpd_sasl_type = cyrus
smtpd_sasl_path = smtpd
cyrus_sasl_config_path = {sasl}
smtp_tls_security_level = none
""")


# -- the load ----------------------------------------------------------------------

def messages(count: int, size: int) -> list[tuple[str, bytes]]:
    """(recipient, message) pairs, ~`size` bytes of body each."""
    line = b"The outbound queue benchmark writes this line again and again.\r\n"
    body = (line * (size // len(line) + 1))[:size]
    made = []
    for number in range(count):
        recipient = f"user{number}@d{number % DOMAINS}.example"
        headers = (f"From: Alice <{harness.USER}>\r\nTo: <{recipient}>\r\nSubject: queue benchmark {number}\r\n"
                   f"Message-ID: <bench{number}@example.test>\r\n\r\n").encode()
        made.append((recipient, headers + body))
    return made


def measure(server, sink: Sink, load, args) -> harness.Run:
    """Submit `load` to `server` over `args.sessions` sessions; wait (bounded)
    until the sink has accepted all of it."""
    run = harness.Run(server, len(load))
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    deadline = time.monotonic() + args.timeout

    def session(share):
        try:
            with smtplib.SMTP("127.0.0.1", server.port, "load.bench.test", timeout=120) as client:
                client.starttls(context=context)
                client.login(harness.USER, harness.PASSWORD)
                for recipient, message in share:
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"submission still running after {args.timeout:.0f} s")
                    refused = client.sendmail(harness.USER, [recipient], message)
                    if refused:
                        raise smtplib.SMTPRecipientsRefused(refused)
        except Exception as problem:  # noqa: BLE001 - reported, the run fails
            # list.append is atomic (GIL): no lock needed between the sessions.
            run.errors.append(f"session: {type(problem).__name__}: {problem}")

    sessions = [threading.Thread(target=session, args=(load[index::args.sessions],), daemon=True)
                for index in range(args.sessions)]
    started = time.monotonic()
    for thread in sessions:
        thread.start()
    for thread in sessions:
        thread.join(max(deadline - time.monotonic(), 0.1))
    run.load_seconds = time.monotonic() - started
    if any(thread.is_alive() for thread in sessions):
        run.errors.append(f"sessions still running after {args.timeout:.0f} s")
    done = harness.wait_until(lambda: sink.count() >= len(load),
                              max(deadline - time.monotonic(), 0) if not run.errors else 5, 0.02)
    run.seconds = time.monotonic() - started
    run.done = sink.count()
    if not done:
        run.errors.append(f"the sink accepted only {run.done} of {len(load)} messages")
    return run


def start(name: str, workdir: str, sink_port: int, args):
    if name == "emailsvc":
        return EmailsvcRelay(workdir, sink_port, args.workers)
    return PostfixRelay(workdir, sink_port)


# -- report ------------------------------------------------------------------------

def figures(args, runs, medians, command: str) -> str:
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    rule = "=========  ==========  ===============  ==============  " + "=" * 60
    lines = [
        f"Measured {when} on {harness.machine()} (shared and noisy; the ratio counts)::",
        "",
        f"    {command}",
        "",
        f"{args.messages} messages of {args.size} bytes of body, {args.sessions} parallel authenticated sessions,"
        f" one recipient each over {DOMAINS} domains, relayed to smtp-sink; {args.rounds} round(s), median;"
        " submitted = when the last submission got its 250:",
        "",
        rule,
        "server     msgs/s      rounds (msgs/s)  submitted (s)   how",
        rule,
    ]
    for name, items in runs.items():
        each = " ".join(f"{run.rate:.0f}" if run.complete else "fail" for run in items)
        submitted = " ".join(f"{run.load_seconds:.1f}" for run in items)
        value = f"{medians[name]:>10.1f}" if medians[name] is not None else f"{'failed':>10}"
        lines.append(f"{name:<9}  {value}  {each:<15}  {submitted:<14}  {items[0].detail}")
    lines += [rule, ""]
    lines += harness.ratio_lines(medians, ("postfix",))
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    harness.common_arguments(parser, SERVERS, messages=2000, sessions=10)
    parser.add_argument("--timeout", type=float, default=600, help="limit for one run, seconds")
    args = parser.parse_args(argv)
    servers = harness.chosen_servers(parser, args, SERVERS)
    if not (1 <= args.messages <= 200_000 and 1 <= args.sessions <= 100 and 1 <= args.rounds <= 20
            and 100 <= args.size <= 10_000_000 and 1 <= args.timeout <= 7200):
        parser.error("--messages 1..200000, --sessions 1..100, --rounds 1..20, --size 100..10000000,"
                     " --timeout 1..7200")
    ensure_peers()
    load = messages(args.messages, args.size)

    def measure_one(name, where, round_number):
        with contextlib.ExitStack() as stack:
            sink = stack.enter_context(Sink(where))
            server = stack.enter_context(start(name, where, sink.port, args))
            run = measure(server, sink, load, args)
            if not run.complete:
                run.errors.append("server log:\n" + server.log_tail())
        return run, run.summary("at the sink", "all submitted")

    runs = harness.run_rounds(servers, args.rounds, "emailsvc-queue-", args.keep, measure_one)
    command = harness.command_line(__file__, argv)
    readme = None
    if not args.no_readme:
        readme = ("queue", "Latest queue figures", lambda medians: figures(args, runs, medians, command))
    return harness.report(runs, args.rounds, ("postfix",), readme)


if __name__ == "__main__":
    sys.exit(main())
