"""What the benchmarks share: free ports, a real `twistd -n emailsvc`, polling.

Nothing here imports emailsvc: the service runs as its own process, started
exactly as an operator would start it, with PYTHONPATH pointing at this
checkout.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)
USER = "alice@example.test"
DOMAIN = "example.test"
PASSWORD = "bench-password"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (>= 20000)."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        if port >= 20000:
            return port
    raise RuntimeError("no free high port on 127.0.0.1")


def port_open(port: int) -> bool:
    """Whether something accepts connections on 127.0.0.1:`port`."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def wait_for_port(port: int, timeout: float, process=None) -> None:
    """Return once 127.0.0.1:`port` accepts connections; raise after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server exited with status {process.returncode} before listening")
        if port_open(port):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f} s")


def wait_until(predicate, timeout: float, interval: float = 0.05):
    """Poll `predicate()` until it is true or `timeout` passes; returns its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


def stop_process(process, timeout: float = 30.0) -> None:
    """SIGTERM, wait up to `timeout`, then SIGKILL; a no-op once exited."""
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)


def apt_install(who: str, packages, selections: str | None = None) -> None:
    """`apt-get install -y packages` (after `apt-get update` when the first
    attempt fails), with `selections` fed to debconf-set-selections first;
    exits when this is not root."""
    if os.geteuid() != 0:
        sys.exit(f"{who}: {', '.join(packages)} not installed and this is not root; "
                 f"run `apt-get install -y {' '.join(packages)}` first")
    if selections:
        subprocess.run(["debconf-set-selections"], input=selections, text=True, check=False, timeout=60)
    environment = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    apt = ["apt-get", "-o", "DPkg::Lock::Timeout=300"]
    install = [*apt, "install", "-y", *packages]
    if subprocess.run(install, env=environment, timeout=900).returncode:
        subprocess.run([*apt, "update"], env=environment, timeout=900, check=True)
        subprocess.run(install, env=environment, timeout=900, check=True)


def self_signed(directory: str, cn: str) -> tuple[str, str]:
    """A fresh self-signed certificate for `cn`: (cert.pem, key.pem) in `directory`."""
    cert, key = os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", f"/CN={cn}", "-keyout", key, "-out", cert],
                   check=True, capture_output=True, timeout=120)
    return cert, key


def tail(path: str, lines: int = 20) -> str:
    try:
        with open(path, "rb") as handle:
            return b"\n".join(handle.read().splitlines()[-lines:]).decode("utf-8", "replace")
    except OSError:
        return ""


class Emailsvc:
    """A real `twistd -n emailsvc` on a generated config under `workdir`.

    Use as a context manager: the domain and `users` (all with PASSWORD) are
    created with the `emailsvc` admin command, the service is started and
    waited for, and it is stopped (SIGTERM, then SIGKILL) on the way out,
    also on error.  It has one listener on `self.port`: `protocol` with
    `tls` (the SMTP MX listener by default); a subclass may add sections to
    the config in `extra_config()`.
    """

    def __init__(self, workdir: str, *, max_connections_per_ip: int = 20, profile: str | None = None,
                 checks: list[str] | None = (), nameservers: list[str] | None = None, workers: int = 0,
                 protocol: str = "smtp", tls: str = "none", users=(USER,)):
        self.workdir = os.path.abspath(workdir)
        self.data = os.path.join(self.workdir, "var")
        self.database = os.path.join(self.data, "emailsvc.sqlite3")
        self.blobs = os.path.join(self.data, "blobs")
        self.config = os.path.join(self.workdir, "emailsvc.toml")
        self.log = os.path.join(self.workdir, "twistd.log")
        self.port = free_port()
        self.protocol, self.tls = protocol, tls
        self.users = list(users)
        self.profile = profile
        self.process = None
        self.max_connections_per_ip = max_connections_per_ip
        # `checks` lists the inbound checks to enable; None keeps the service's
        # default list.  By default none run: the peers do no SPF/DKIM/DMARC,
        # and without `nameservers` (NXDomainDNS) every DNS lookup times out.
        self.checks = None if checks is None else list(checks)
        self.nameservers = list(nameservers or [])
        self.workers = workers

    def write_config(self) -> None:
        os.makedirs(self.data, exist_ok=True)
        with open(self.config, "w", encoding="utf-8") as handle:
            handle.write(f"""\
[server]
hostname = "mx.bench.test"
data_dir = "{self.data}"
shutdown_timeout = 30.0
workers = {self.workers}

[store.sqlite]
path = "{self.database}"

[store.fs]
path = "{self.blobs}"

[smtp]
max_connections = 1000
max_connections_per_ip = {self.max_connections_per_ip}

{listener("mx" if self.protocol == "smtp" else self.protocol, self.protocol, self.port, self.tls)}
[dns]
nameservers = {_toml_list(self.nameservers)}
timeout = 1.0
attempts = 1
""")
            if self.checks is not None:
                handle.write(f"\n[checks]\nenabled = {_toml_list(self.checks)}\n")
            handle.write(self.extra_config())

    def extra_config(self) -> str:
        """TOML appended to the config (nothing here)."""
        return ""

    def admin(self, *args: str, stdin: str | None = None) -> None:
        command = [os.path.join(BIN, "emailsvc"), "--config", self.config, *args]
        result = subprocess.run(command, input=stdin, capture_output=True, text=True, timeout=120,
                                cwd=self.workdir, env=self._environment())
        if result.returncode:
            raise RuntimeError(f"{' '.join(command)} failed ({result.returncode}):\n"
                               f"{result.stdout}{result.stderr}")

    def _environment(self) -> dict:
        path = os.environ.get("PYTHONPATH")
        return {**os.environ, "PYTHONPATH": REPO + (os.pathsep + path if path else "")}

    def __enter__(self):
        self.write_config()
        self.admin("domain", "add", DOMAIN)
        for user in self.users:
            self.admin("user", "add", user, stdin=PASSWORD + "\n")
        command = [os.path.join(BIN, "twistd"), "-n", "--pidfile=", f"--logfile={self.log}"]
        if self.profile:
            command += [f"--profile={self.profile}", "--profiler=cprofile", "--savestats"]
        command += ["emailsvc", "--config", self.config]
        self.process = subprocess.Popen(command, cwd=self.workdir, env=self._environment(),
                                        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        try:
            started = wait_until(lambda: "emailsvc started" in tail(self.log, 200)
                                 or self.process.poll() is not None, 60, 0.1)
            if not started or self.process.poll() is not None:
                raise RuntimeError(f"emailsvc did not start; log:\n{tail(self.log, 40)}")
            wait_for_port(self.port, 10, self.process)
        except BaseException:
            stop_process(self.process)
            raise
        return self

    def __exit__(self, *exc_info):
        stop_process(self.process, 60)
        return False

    def inbox_count(self) -> int:
        """Messages in the user's INBOX, read from the SQLite file (read-only)."""
        return inbox_count(self.database)

    def log_tail(self) -> str:
        return tail(self.log)


def listener(name: str, protocol: str, port: int, tls: str = "none") -> str:
    """The TOML table of a listener on 127.0.0.1."""
    return f'''[listeners.{name}]
protocol = "{protocol}"
address = "127.0.0.1"
port = {port}
tls = "{tls}"
'''


def _toml_list(items) -> str:
    return "[" + ", ".join('"' + item.replace("\\", "\\\\").replace('"', '\\"') + '"' for item in items) + "]"


class Helper:
    """A program a benchmark runs beside the servers: started by `with`,
    its output in `self.log`, waited for until it prints "ready" (a
    subclass may wait for something else in `ready()`), stopped on the
    way out, also when it fails to start."""

    what = "helper"

    def __init__(self, log: str):
        self.log = log
        self.process = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def ready(self) -> bool:
        return "ready" in tail(self.log)

    def log_tail(self) -> str:
        return tail(self.log)

    def __enter__(self):
        os.makedirs(os.path.dirname(os.path.abspath(self.log)), exist_ok=True)
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=log,
                                            stderr=subprocess.STDOUT)
        if not wait_until(lambda: self.process.poll() is not None or self.ready(), 30) \
                or self.process.poll() is not None:
            stop_process(self.process)
            raise RuntimeError(f"{self.what} did not start:\n{tail(self.log)}")
        return self

    def __exit__(self, *exc_info):
        stop_process(self.process)
        return False


class NXDomainDNS(Helper):
    """A DNS server on 127.0.0.1 that answers every question NXDOMAIN at once.

    Stands in for a local caching resolver when the checks run, so that
    their cost is measured without network timeouts.
    """

    what = "the DNS stand-in"

    def __init__(self, workdir: str):
        super().__init__(os.path.join(workdir, "dns.log"))
        self.port = free_port()

    def command(self):
        return [sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)), "nxdomain_dns.py"),
                str(self.port)]

    @property
    def nameserver(self) -> str:
        return f"127.0.0.1:{self.port}"


def inbox_count(database: str) -> int:
    connection = sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=30)
    try:
        return connection.execute(
            "SELECT count(*) FROM messages m JOIN mailboxes b ON b.id = m.mailbox_id"
            " JOIN users u ON u.id = b.user_id WHERE u.address = ? AND b.name = 'INBOX'", (USER,)
        ).fetchone()[0]
    finally:
        connection.close()


def machine() -> str:
    """One line about this machine: cores, CPU model, kernel."""
    model = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{os.cpu_count()} cores, {model or 'unknown CPU'}, Linux {os.uname().release}"


README = os.path.join(os.path.dirname(os.path.abspath(__file__)), "README.rst")


def write_results(name: str, title: str, text: str) -> None:
    """Replace the `.. NAME-results-begin/end` block of benchmarks/README.rst
    with `text`, or append it under `title` when the block is missing."""
    begin, end = f".. {name}-results-begin", f".. {name}-results-end"
    with open(README, encoding="utf-8") as handle:
        current = handle.read()
    block = f"{begin}\n\n{text}\n{end}"
    if begin in current and end in current:
        updated = current[:current.index(begin)] + block + current[current.index(end) + len(end):]
    else:
        updated = f"{current.rstrip()}\n\n{title}\n{'-' * len(title)}\n\n{block}\n"
    with open(README, "w", encoding="utf-8") as handle:
        handle.write(updated)


class Run:
    """One timed run of `server` (its `detail` kept): `done` of `messages` in
    `seconds`, the load generator done after `load_seconds`."""

    def __init__(self, server, messages: int):
        self.detail = server.detail
        self.messages = messages
        self.done = 0
        self.seconds = 0.0
        self.load_seconds = 0.0
        self.errors: list[str] = []

    @property
    def complete(self) -> bool:
        return self.done >= self.messages and not self.errors

    @property
    def rate(self) -> float:
        return self.done / self.seconds if self.seconds else 0.0

    def summary(self, counted: str, loaded: str) -> str:
        """The line printed after the run, e.g. summary("stored", "smtp-source done")."""
        return (f"{self.done} {counted} in {self.seconds:.2f} s = {self.rate:.1f} msgs/s"
                f" ({loaded} after {self.load_seconds:.2f} s)")


def summarize(runs: dict[str, list[Run]]) -> dict[str, float | None]:
    """The median msgs/s of each server; None when one of its runs failed."""
    medians = {}
    for name, items in runs.items():
        good = [run.rate for run in items if run.complete]
        medians[name] = statistics.median(good) if good and len(good) == len(items) else None
    return medians


def run_rounds(servers, rounds: int, prefix: str, keep: bool, measure_one) -> dict[str, list[Run]]:
    """`measure_one(name, where, round_number)` -> (Run, summary line) for
    every server, rounds interleaved, each in its own directory under a
    temporary one that is removed at the end unless `keep`."""
    workdir = tempfile.mkdtemp(prefix=prefix)
    runs: dict[str, list[Run]] = {name: [] for name in servers}
    try:
        for round_number in range(1, rounds + 1):
            for name in servers:
                where = os.path.join(workdir, f"round{round_number}")
                os.makedirs(where, exist_ok=True)
                print(f"round {round_number}/{rounds}: {name} ...", end=" ", flush=True)
                run, summary = measure_one(name, where, round_number)
                runs[name].append(run)
                print(summary)
                for error in run.errors[:10]:
                    print(f"    {error}")
                # Each run writes its messages: do not let rounds fill the disk.
                if not keep:
                    shutil.rmtree(where, ignore_errors=True)
    finally:
        if keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return runs


def report(runs: dict[str, list[Run]], rounds: int, peers, readme=None) -> int:
    """Print the medians and emailsvc's ratio to each of `peers`; with
    `readme` = (name, title, figures(medians) -> text), write them into
    README.rst too.  @return: the exit status (1 when a run failed)."""
    medians = summarize(runs)
    print()
    for name, value in medians.items():
        print(f"{name:<9} {value:8.1f} msgs/s (median of {rounds})" if value is not None else f"{name:<9}   failed")
    for name, ratio in ratios(medians, peers):
        if ratio is not None:
            print(f"emailsvc / {name}: {ratio:.2f}x")
    if readme is not None:
        name, title, figures = readme
        write_results(name, title, figures(medians))
        print(f"wrote {os.path.relpath(README)}")
    return 0 if all(value is not None for value in medians.values()) else 1


def common_arguments(parser, servers, messages: int, sessions: int) -> None:
    """The options every message-rate benchmark takes."""
    parser.add_argument("--messages", type=int, default=messages)
    parser.add_argument("--sessions", type=int, default=sessions)
    parser.add_argument("--size", type=int, default=5120, help="body bytes per message")
    parser.add_argument("--rounds", type=int, default=3, help="runs per server, interleaved; the median counts")
    parser.add_argument("--servers", default=",".join(servers), help="comma-separated subset of " + ", ".join(servers))
    workers_argument(parser)
    parser.add_argument("--no-readme", action="store_true", help="do not update benchmarks/README.rst")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")


def workers_argument(parser) -> None:
    parser.add_argument("--workers", type=int, default=os.cpu_count(),
                        help="emailsvc's server.workers (default: one per core; 0: a single process)")


def command_line(script: str, argv=None) -> str:
    """How `script` was run, for the README: `python benchmarks/NAME.py ARGS`."""
    arguments = sys.argv[1:] if argv is None else argv
    return " ".join([f"python benchmarks/{os.path.basename(script)}", *arguments])


def chosen_servers(parser, args, servers) -> list[str]:
    """The --servers list, checked against `servers`."""
    chosen = [name.strip() for name in args.servers.split(",") if name.strip()]
    if not chosen or any(name not in servers for name in chosen):
        parser.error(f"--servers takes names among {', '.join(servers)}")
    return chosen


def ratios(medians: dict[str, float | None], peers) -> list[tuple[str, float | None]]:
    """(peer, emailsvc's median / the peer's) for each peer that ran; None when a run failed."""
    ours = medians.get("emailsvc")
    return [(name, ours / medians[name] if ours and medians[name] else None)
            for name in peers if name in medians]


def ratio_lines(medians: dict[str, float | None], peers) -> list[str]:
    """README bullets: emailsvc's median over each peer's."""
    return [f"- emailsvc / {name}: **{ratio:.2f}x**" if ratio is not None
            else f"- emailsvc / {name}: n/a (a run failed)" for name, ratio in ratios(medians, peers)]
