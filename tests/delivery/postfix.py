"""A throwaway Postfix on loopback for delivery tests: its own config,
queue and Maildir directories; virtual(8) delivers one domain's users."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time

POSTFIX = "/usr/sbin/postfix"
NOBODY = 65534  # virtual(8) refuses uids below virtual_minimum_uid (100)

# Services of Debian's master.cf that local delivery needs, none chrooted.
_SERVICES = [
    ("pickup", "unix", "n", "-", "n", "60", "1", "pickup"),
    ("cleanup", "unix", "n", "-", "n", "-", "0", "cleanup"),
    ("qmgr", "unix", "n", "-", "n", "300", "1", "qmgr"),
    ("rewrite", "unix", "-", "-", "n", "-", "-", "trivial-rewrite"),
    ("bounce", "unix", "-", "-", "n", "-", "0", "bounce"),
    ("defer", "unix", "-", "-", "n", "-", "0", "bounce"),
    ("trace", "unix", "-", "-", "n", "-", "0", "bounce"),
    ("verify", "unix", "-", "-", "n", "-", "1", "verify"),
    ("flush", "unix", "n", "-", "n", "1000?", "0", "flush"),
    ("proxymap", "unix", "-", "-", "n", "-", "-", "proxymap"),
    ("proxywrite", "unix", "-", "-", "n", "-", "1", "proxymap"),
    ("smtp", "unix", "-", "-", "n", "-", "-", "smtp"),
    ("relay", "unix", "-", "-", "n", "-", "-", "smtp"),
    ("showq", "unix", "n", "-", "n", "-", "-", "showq"),
    ("error", "unix", "-", "-", "n", "-", "-", "error"),
    ("retry", "unix", "-", "-", "n", "-", "-", "error"),
    ("discard", "unix", "-", "-", "n", "-", "-", "discard"),
    ("local", "unix", "-", "n", "n", "-", "-", "local"),
    ("virtual", "unix", "-", "n", "n", "-", "-", "virtual"),
    ("anvil", "unix", "-", "-", "n", "-", "1", "anvil"),
    ("scache", "unix", "-", "-", "n", "-", "1", "scache"),
    ("tlsmgr", "unix", "-", "-", "n", "1000?", "1", "tlsmgr"),
    ("postlog", "unix-dgram", "n", "-", "n", "-", "1", "postlogd"),
]


def write_master_cf(path: str, port: int) -> None:
    """A master.cf with smtpd on 127.0.0.1:`port` and the services above."""
    services = [(f"127.0.0.1:{port}", "inet", "n", "-", "n", "-", "-", "smtpd")] + _SERVICES
    with open(path, "w", encoding="ascii") as handle:
        for service in services:
            handle.write(" ".join(f"{item:<10}" for item in service).rstrip() + "\n")


def available() -> str | None:
    """Why a Postfix cannot be run here, or None."""
    if not os.path.exists(POSTFIX):
        return "Postfix is not installed (apt-get install postfix)"
    if os.geteuid() != 0:
        return "running Postfix needs root"
    return None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Postfix:
    """Accepts mail for `domain` on 127.0.0.1:`port` into Maildirs."""

    def __init__(self, domain: str, users, cert: str | None = None, key: str | None = None):
        self.domain = domain
        self.users = list(users)
        self.root = tempfile.mkdtemp(prefix="emailsvc-postfix-")
        os.chmod(self.root, 0o755)
        self.etc = os.path.join(self.root, "etc")
        self.vmail = os.path.join(self.root, "vmail")
        self.log = os.path.join(self.root, "maillog")
        self.port = _free_port()
        self.cert, self.key = cert, key

    def maildir(self, user: str) -> str:
        return os.path.join(self.vmail, self.domain, user.split("@")[0], "new")

    def messages(self, user: str) -> list[bytes]:
        directory = self.maildir(user)
        if not os.path.isdir(directory):
            return []
        found = []
        for name in sorted(os.listdir(directory)):
            with open(os.path.join(directory, name), "rb") as handle:
                found.append(handle.read())
        return found

    def _write_config(self):
        for name in ("etc", "queue", "data", "vmail"):
            os.makedirs(os.path.join(self.root, name), exist_ok=True)
        os.chown(self.vmail, NOBODY, NOBODY)
        with open(os.path.join(self.etc, "vmailbox"), "w", encoding="ascii") as handle:
            for user in self.users:
                handle.write(f"{user} {self.domain}/{user.split('@')[0]}/\n")
        tls = ""
        if self.cert:
            tls = (f"smtpd_tls_security_level = may\nsmtpd_tls_cert_file = {self.cert}\n"
                   f"smtpd_tls_key_file = {self.key}\nsmtpd_tls_received_header = yes\n")
        with open(os.path.join(self.etc, "main.cf"), "w", encoding="ascii") as handle:
            handle.write(
                "compatibility_level = 3.6\n"
                f"queue_directory = {self.root}/queue\n"
                f"data_directory = {self.root}/data\n"
                "myhostname = postfix.peer.test\n"
                "mydomain = peer.test\n"
                "mydestination =\n"
                "inet_interfaces = 127.0.0.1\n"
                "inet_protocols = ipv4\n"
                "mynetworks = 127.0.0.0/8\n"
                "alias_maps =\nalias_database =\n"
                f"virtual_mailbox_domains = {self.domain}\n"
                f"virtual_mailbox_base = {self.vmail}\n"
                f"virtual_mailbox_maps = texthash:{self.etc}/vmailbox\n"
                f"virtual_uid_maps = static:{NOBODY}\nvirtual_gid_maps = static:{NOBODY}\n"
                f"maillog_file = {self.log}\n"
                f"maillog_file_prefixes = {self.root}\n"
                + tls
            )
        write_master_cf(os.path.join(self.etc, "master.cf"), self.port)

    def _postfix(self, *command: str, check: bool = True):
        result = subprocess.run([POSTFIX, "-c", self.etc, *command], capture_output=True, text=True,
                                timeout=120, stdin=subprocess.DEVNULL)
        if check and result.returncode:
            raise RuntimeError(f"postfix {' '.join(command)}: {result.stdout}{result.stderr}\n{self.log_tail()}")
        return result

    def log_tail(self, lines: int = 30) -> str:
        try:
            with open(self.log, encoding="utf-8", errors="replace") as handle:
                return "".join(handle.readlines()[-lines:])
        except OSError:
            return ""

    def start(self):
        """Write the config and start; blocking (call from a thread)."""
        self._write_config()
        self._postfix("set-permissions", check=False)
        self._postfix("start")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.1)
        raise RuntimeError("Postfix did not start listening\n" + self.log_tail())

    def stop(self):
        """Stop and remove everything; blocking (call from a thread)."""
        self._postfix("stop", check=False)
        pid_file = os.path.join(self.root, "queue", "pid", "master.pid")
        deadline = time.monotonic() + 20
        while os.path.exists(pid_file) and time.monotonic() < deadline:
            time.sleep(0.1)
        if os.path.exists(pid_file):
            self._postfix("abort", check=False)
        shutil.rmtree(self.root, ignore_errors=True)
