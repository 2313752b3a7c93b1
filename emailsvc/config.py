"""TOML configuration: typed, frozen, documented in etc/emailsvc.toml.

Every section is a frozen dataclass.  `load()` walks the TOML document
against those classes and collects every problem (unknown key, wrong type,
value out of range, missing required value) before raising one
`ConfigError`, so a user fixes them all in one go.
"""
from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from dataclasses import dataclass, field
from typing import Literal


@dataclass(frozen=True)
class Problem:
    """One configuration problem, located by its dotted key path."""

    key: str
    message: str

    def __str__(self) -> str:
        return f"{self.key}: {self.message}" if self.key else self.message


class ConfigError(Exception):
    """The configuration file cannot be used; carries every problem found."""

    def __init__(self, path: str, problems: list[Problem]):
        self.path = path
        self.problems = problems
        super().__init__(self.render())

    def render(self) -> str:
        return "\n".join(f"{self.path}: {problem}" for problem in self.problems)


def _range(low=None, high=None):
    """Field metadata: an inclusive numeric range."""
    return {"low": low, "high": high}


@dataclass(frozen=True)
class ServerConfig:
    hostname: str = "localhost"
    data_dir: str = "var"
    shutdown_timeout: float = field(default=30.0, metadata=_range(0))
    workers: int = field(default=0, metadata=_range(0, 256))
    spool_threshold: int = field(default=1024 * 1024, metadata=_range(1, 1024 * 1024 * 1024))
    """The largest message being received (SMTP DATA, IMAP APPEND) kept in
    memory; a larger one goes to an anonymous file in {data_dir}/spool
    (emailsvc.spool)."""


@dataclass(frozen=True)
class TLSConfig:
    certificate: str = ""
    private_key: str = ""
    min_version: Literal["1.2", "1.3"] = "1.2"


@dataclass(frozen=True)
class SQLiteConfig:
    path: str = "var/emailsvc.sqlite3"
    readers: int = field(default=4, metadata=_range(1, 64))


@dataclass(frozen=True)
class PostgreSQLConfig:
    dsn: str = ""
    pool_size: int = field(default=8, metadata=_range(1, 256))


@dataclass(frozen=True)
class FilesystemBlobConfig:
    path: str = "var/blobs"
    sync: Literal["auto", "fsync"] = "auto"


@dataclass(frozen=True)
class S3BlobConfig:
    endpoint: str = ""
    region: str = "us-east-1"
    bucket: str = ""
    access_key: str = ""
    secret_key: str = ""
    verify_tls: bool = True


@dataclass(frozen=True)
class StoreConfig:
    metadata: str = "sqlite"
    blobs: str = "fs"
    orphan_grace: float = field(default=3600.0, metadata=_range(0))
    gc_interval: float = field(default=3600.0, metadata=_range(1))
    inline_max: int = field(default=64 * 1024, metadata=_range(0, 1024 * 1024))
    sqlite: SQLiteConfig = SQLiteConfig()
    postgresql: PostgreSQLConfig = PostgreSQLConfig()
    fs: FilesystemBlobConfig = FilesystemBlobConfig()
    s3: S3BlobConfig = S3BlobConfig()


@dataclass(frozen=True)
class ListenerConfig:
    protocol: Literal["smtp", "submission", "imap", "pop3", "https", "metrics"] = "smtp"
    address: str = "127.0.0.1"
    port: int = field(default=0, metadata=_range(0, 65535))
    tls: Literal["none", "starttls", "implicit"] = "none"


@dataclass(frozen=True)
class SMTPConfig:
    max_message_size: int = field(default=50 * 1024 * 1024, metadata=_range(1024))
    max_recipients: int = field(default=100, metadata=_range(1))
    max_line_length: int = field(default=4096, metadata=_range(512))
    command_timeout: float = field(default=300.0, metadata=_range(1))
    data_timeout: float = field(default=600.0, metadata=_range(1))
    max_connections: int = field(default=1000, metadata=_range(1))
    max_connections_per_ip: int = field(default=20, metadata=_range(1))
    max_errors: int = field(default=10, metadata=_range(1))


@dataclass(frozen=True)
class POP3Config:
    """POP3 per-connection limits."""

    idle_timeout: float = field(default=600.0, metadata=_range(1))
    max_line_length: int = field(default=1024, metadata=_range(255))
    max_auth_line_length: int = field(default=8192, metadata=_range(255))
    max_errors: int = field(default=20, metadata=_range(1))
    max_buffered_input: int = field(default=64 * 1024, metadata=_range(1024))


@dataclass(frozen=True)
class AuthConfig:
    max_failures: int = field(default=10, metadata=_range(1))
    failure_window: float = field(default=600.0, metadata=_range(1))
    lockout: float = field(default=900.0, metadata=_range(0))


@dataclass(frozen=True)
class DNSConfig:
    nameservers: list[str] = field(default_factory=list)
    timeout: float = field(default=3.0, metadata=_range(0.1, 60))
    attempts: int = field(default=2, metadata=_range(1, 10))
    cache_ttl: float = field(default=300.0, metadata=_range(0, 86400))
    cache_entries: int = field(default=10000, metadata=_range(1, 10_000_000))


@dataclass(frozen=True)
class DNSBLZoneConfig:
    zone: str = ""
    action: Literal["", "reject", "tempfail", "junk", "tag", "ignore"] = ""


@dataclass(frozen=True)
class DNSBLConfig:
    zones: list[DNSBLZoneConfig] = field(default_factory=list)


@dataclass(frozen=True)
class DKIMCheckConfig:
    min_key_bits: int = field(default=1024, metadata=_range(512, 16384))
    max_signatures: int = field(default=5, metadata=_range(1, 50))
    thread_threshold: int = field(default=262144, metadata=_range(0))


@dataclass(frozen=True)
class ActionsConfig:
    spf: dict[str, Literal["reject", "tempfail", "junk", "tag", "ignore"]] = field(
        default_factory=lambda: {"fail": "tag", "softfail": "tag", "temperror": "tag", "permerror": "tag"}
    )
    dkim: dict[str, Literal["reject", "tempfail", "junk", "tag", "ignore"]] = field(
        default_factory=lambda: {"fail": "tag", "temperror": "tag", "permerror": "tag"}
    )
    dmarc: dict[str, Literal["reject", "tempfail", "junk", "tag", "ignore"]] = field(
        default_factory=lambda: {
            "fail_reject": "reject",
            "fail_quarantine": "junk",
            "fail_none": "tag",
            "temperror": "tag",
            "permerror": "tag",
        }
    )
    dnsbl: dict[str, Literal["reject", "tempfail", "junk", "tag", "ignore"]] = field(
        default_factory=lambda: {"listed": "reject", "temperror": "tag"}
    )
    rdns: dict[str, Literal["reject", "tempfail", "junk", "tag", "ignore"]] = field(
        default_factory=lambda: {"fail": "tag", "none": "tag", "temperror": "tag"}
    )
    helo: dict[str, Literal["reject", "tempfail", "junk", "tag", "ignore"]] = field(
        default_factory=lambda: {"fail_forged": "tag", "fail_invalid": "tag"}
    )
    plugins: dict[str, dict[str, Literal["reject", "tempfail", "junk", "tag", "ignore"]]] = field(default_factory=dict)


@dataclass(frozen=True)
class ChecksConfig:
    authserv_id: str = ""
    enabled: list[str] = field(default_factory=lambda: ["spf", "dkim", "dmarc", "rdns"])
    timeout: float = field(default=30.0, metadata=_range(1))
    actions: ActionsConfig = ActionsConfig()
    dnsbl: DNSBLConfig = DNSBLConfig()
    dkim: DKIMCheckConfig = DKIMCheckConfig()
    options: dict[str, dict[str, str]] = field(default_factory=dict)


@dataclass(frozen=True)
class SubmissionConfig:
    """The submission listeners (RFC 6409: 587 STARTTLS, 465 implicit TLS)."""

    max_messages_per_hour: int = field(default=0, metadata=_range(0))
    """Messages one user may submit in any hour (0: no limit)."""
    save_to_sent: bool = False
    """File a copy of each submitted message in the sender's \\Sent mailbox."""


_DKIM_SIGNED_HEADERS = [
    "from", "sender", "reply-to", "subject", "date", "message-id", "to", "cc",
    "mime-version", "content-type", "content-transfer-encoding", "content-id",
    "content-description", "in-reply-to", "references", "list-id", "list-help",
    "list-unsubscribe", "list-unsubscribe-post", "list-subscribe", "list-post",
    "list-owner", "list-archive",
]


@dataclass(frozen=True)
class DKIMSigningConfig:
    """DKIM signing of mail sent by our users (verification is [checks.dkim])."""

    enabled: bool = True
    key_dir: str = ""
    """Where keys live, one directory per domain; empty: {server.data_dir}/dkim."""
    headers: list[str] = field(default_factory=lambda: list(_DKIM_SIGNED_HEADERS))
    oversign: list[str] = field(default_factory=lambda: ["from", "subject", "date", "to", "cc", "reply-to"])


@dataclass(frozen=True)
class QueueConfig:
    """The outbound queue: remote delivery, retries and bounces."""

    enabled: bool = True
    scan_interval: float = field(default=30.0, metadata=_range(0.1))
    retry_initial: float = field(default=300.0, metadata=_range(1))
    retry_max: float = field(default=3600.0, metadata=_range(1))
    expire_after: float = field(default=5 * 86400.0, metadata=_range(1))
    lease_time: float = field(default=900.0, metadata=_range(10))
    runner_id: str = ""
    """The runner's lease owner id, stable across restarts; empty: the machine's host name."""
    delay_warning: float = field(default=4 * 3600.0, metadata=_range(0))
    """Seconds a recipient may stay pending before the sender is told (0: never)."""
    batch_size: int = field(default=200, metadata=_range(1, 10000))
    max_connections: int = field(default=20, metadata=_range(1, 1000))
    max_per_domain: int = field(default=4, metadata=_range(1, 100))
    remote_port: int = field(default=25, metadata=_range(1, 65535))
    helo_name: str = ""
    tls: Literal["opportunistic", "required", "none"] = "opportunistic"
    connect_timeout: float = field(default=30.0, metadata=_range(1))
    command_timeout: float = field(default=300.0, metadata=_range(1))
    data_timeout: float = field(default=600.0, metadata=_range(1))
    smarthost: str = ""
    smarthost_port: int = field(default=587, metadata=_range(1, 65535))
    smarthost_username: str = ""
    smarthost_password: str = ""
    smarthost_verify: bool = True


@dataclass(frozen=True)
class Config:
    server: ServerConfig = ServerConfig()
    tls: TLSConfig = TLSConfig()
    store: StoreConfig = StoreConfig()
    smtp: SMTPConfig = SMTPConfig()
    auth: AuthConfig = AuthConfig()
    pop3: POP3Config = POP3Config()
    dns: DNSConfig = DNSConfig()
    checks: ChecksConfig = ChecksConfig()
    submission: SubmissionConfig = SubmissionConfig()
    dkim: DKIMSigningConfig = DKIMSigningConfig()
    queue: QueueConfig = QueueConfig()
    listeners: dict[str, ListenerConfig] = field(default_factory=dict)
    path: str = field(default="", metadata={"internal": True})


_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}


class _Reader:
    """Walks a TOML document against the dataclasses, collecting problems."""

    def __init__(self):
        self.problems: list[Problem] = []

    def problem(self, key: str, message: str):
        self.problems.append(Problem(key, message))

    def section(self, cls, data, prefix: str):
        if not isinstance(data, dict):
            self.problem(prefix, "must be a table")
            return cls()
        hints = typing.get_type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
        for name in data:
            if name not in fields:
                self.problem(_join(prefix, name), "unknown key")
        values = {}
        for name, f in fields.items():
            if name in data:
                value = self.value(hints[name], data[name], _join(prefix, name), f.metadata)
                if value is not _INVALID:
                    values[name] = value
        return cls(**values)

    def value(self, hint, raw, key, metadata):
        origin = typing.get_origin(hint)
        if dataclasses.is_dataclass(hint):
            return self.section(hint, raw, key)
        if origin is dict:
            if not isinstance(raw, dict):
                self.problem(key, "must be a table")
                return _INVALID
            item = typing.get_args(hint)[1]
            result = {}
            for name, sub in raw.items():
                value = self.value(item, sub, _join(key, name), {})
                if value is not _INVALID:
                    result[name] = value
            return result
        if origin is list:
            if not isinstance(raw, list):
                self.problem(key, "must be a list")
                return _INVALID
            item = typing.get_args(hint)[0]
            values = [self.value(item, sub, f"{key}[{i}]", {}) for i, sub in enumerate(raw)]
            return _INVALID if _INVALID in values else values
        if origin is Literal:
            choices = typing.get_args(hint)
            if raw not in choices:
                self.problem(key, "must be one of " + ", ".join(repr(c) for c in choices))
                return _INVALID
            return raw
        if origin in (typing.Union, types.UnionType):
            return self.value(typing.get_args(hint)[0], raw, key, metadata)
        return self.scalar(hint, raw, key, metadata)

    def scalar(self, hint, raw, key, metadata):
        ok = isinstance(raw, hint) and not (hint is int and isinstance(raw, bool))
        if hint is float and isinstance(raw, int) and not isinstance(raw, bool):
            raw, ok = float(raw), True
        if not ok:
            self.problem(key, f"must be {_TYPE_NAMES[hint]}, not {type(raw).__name__} {raw!r}")
            return _INVALID
        low, high = metadata.get("low"), metadata.get("high")
        if (low is not None and raw < low) or (high is not None and raw > high):
            bounds = f"from {low} to {high}" if high is not None else f"at least {low}"
            self.problem(key, f"must be {bounds}, not {raw!r}")
            return _INVALID
        return raw


_INVALID = object()


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _check(config: Config, reader: _Reader):
    """Cross-field rules that the types alone cannot express."""
    if config.store.metadata == "postgresql" and not config.store.postgresql.dsn:
        reader.problem("store.postgresql.dsn", "is required when store.metadata is 'postgresql'")
    if config.store.blobs == "s3":
        for name in ("endpoint", "bucket"):
            if not getattr(config.store.s3, name):
                reader.problem(f"store.s3.{name}", "is required when store.blobs is 's3'")
    if bool(config.tls.certificate) != bool(config.tls.private_key):
        reader.problem("tls", "certificate and private_key must be given together")
    if config.queue.retry_max < config.queue.retry_initial:
        reader.problem("queue.retry_max", "must be at least queue.retry_initial")
    if config.queue.smarthost_username and not config.queue.smarthost:
        reader.problem("queue.smarthost", "is required when queue.smarthost_username is set")
    bound = {}
    for name, listener in config.listeners.items():
        key = f"listeners.{name}"
        if listener.port == 0:
            reader.problem(f"{key}.port", "is required")
        where = (listener.address, listener.port)
        if listener.port and where in bound:
            reader.problem(f"{key}.port", f"is already used by listeners.{bound[where]}")
        bound.setdefault(where, name)
        if listener.protocol in ("metrics",) and listener.tls != "none":
            reader.problem(f"{key}.tls", f"must be 'none' for protocol {listener.protocol!r}")
        if listener.protocol == "submission" and listener.tls == "none":
            # RFC 8314: credentials never travel in clear text.
            reader.problem(f"{key}.tls", "must be 'starttls' or 'implicit' for protocol 'submission'")
        if listener.protocol == "https" and listener.tls == "starttls":
            reader.problem(f"{key}.tls", "must be 'implicit' or 'none' for protocol 'https'")


def parse(text: str, path: str = "<string>") -> Config:
    """Parse TOML text into a Config, or raise ConfigError with every problem."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(path, [Problem("", f"not valid TOML: {error}")]) from None
    reader = _Reader()
    config = reader.section(Config, document, "")
    if not reader.problems:
        _check(config, reader)
    if reader.problems:
        raise ConfigError(path, reader.problems)
    return dataclasses.replace(config, path=path)


def load(path: str) -> Config:
    """Read and parse the configuration file at `path`."""
    try:
        with open(path, "rb") as handle:
            text = handle.read().decode("utf-8")
    except (OSError, UnicodeDecodeError) as error:
        reason = getattr(error, "strerror", None) or str(error)
        raise ConfigError(path, [Problem("", f"cannot read the configuration file: {reason}")]) from None
    return parse(text, path)
