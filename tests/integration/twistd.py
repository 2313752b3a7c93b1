"""A real `twistd -n emailsvc` process with its own config, data and ports."""
import os
import socket
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def can_bind(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


class TwistdFixture:
    """Mixin for trial TestCases that run the real service."""

    def setUp(self):
        self.dir = os.path.abspath(self.mktemp())
        os.makedirs(self.dir)
        self.https, self.metrics, self.smtp, self.imap, self.pop3 = (free_port() for _ in range(5))

    def write_config(self, extra=""):
        path = os.path.join(self.dir, "emailsvc.toml")
        with open(path, "w") as handle:
            handle.write(f"""
[server]
data_dir = "{self.dir}/var"
[store.sqlite]
path = "{self.dir}/var/meta.sqlite3"
[store.fs]
path = "{self.dir}/var/blobs"
[listeners.web]
protocol = "https"
port = {self.https}
tls = "implicit"
[listeners.metrics]
protocol = "metrics"
port = {self.metrics}
[listeners.mx]
protocol = "smtp"
port = {self.smtp}
tls = "starttls"
[listeners.imap]
protocol = "imap"
port = {self.imap}
tls = "starttls"
[listeners.pop3]
protocol = "pop3"
port = {self.pop3}
tls = "starttls"
{extra}""")
        return path

    def start(self, config):
        process = subprocess.Popen(
            [TWISTD, "-n", "--pidfile=", "--logfile=-", "emailsvc", "--config", config],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": ROOT},
        )
        self.addCleanup(lambda: process.poll() is None and process.kill())
        return process

    def start_with_port_taken(self, port: int, config: str) -> str:
        """Start on `config` while something else listens on `port`; the
        service must exit with status 1.  @return: its standard output."""
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", port))
            taken.listen()
            process = self.start(config)
            self.assertEqual(process.wait(timeout=20), 1)
            return process.stdout.read().decode()

    def wait_for_log(self, process, text, timeout=10):
        deadline = time.monotonic() + timeout
        seen = b""
        os.set_blocking(process.stdout.fileno(), False)
        while time.monotonic() < deadline:
            chunk = process.stdout.read()
            if chunk:
                seen += chunk
                if text.encode() in seen:
                    return seen.decode()
            elif process.poll() is not None:
                break
            time.sleep(0.05)
        self.fail(f"{text!r} not logged; output so far:\n{seen.decode()}\n{process.stderr.read().decode()}")

    def admin(self, config, *args, password=None):
        done = subprocess.run(
            [os.path.join(os.path.dirname(sys.executable), "emailsvc"), "--config", config, *args],
            input=password, capture_output=True, timeout=60,
        )
        if done.returncode:
            self.fail(f"emailsvc {' '.join(args)} exited {done.returncode}:\n{done.stdout.decode()}{done.stderr.decode()}")
        return done

    def wait_until(self, condition, what: str, timeout: float, output=lambda: ""):
        """Poll `condition()` every 50 ms until it is true; fail after `timeout`
        seconds, with `output()` (what the service said) in the message."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return
            time.sleep(0.05)
        self.fail(f"timed out after {timeout} s waiting for {what}; the service said:\n{output()}")

    def add_alice(self, config, password: bytes):
        """The domain example.test and its user alice@example.test, through the admin command."""
        self.admin(config, "domain", "add", "example.test")
        self.admin(config, "user", "add", "alice@example.test", password=password + b"\n")
