"""TLS contexts (server, client) and the development self-signed certificate.

`ensure_certificate` turns the `[tls]` configuration into a certificate and
key path, generating a self-signed pair under the data directory when none is
configured.  `server_context` builds the options used by implicit-TLS
listeners and by STARTTLS/STLS alike; `client_context` builds the options for
outbound connections (opportunistic or verified).
"""
from __future__ import annotations

import contextlib
import datetime
import fcntl
import ipaddress
import os
import tempfile
import time

import idna
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from OpenSSL import SSL
from OpenSSL.crypto import PKey, X509
from twisted.internet import ssl
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.logger import Logger
from zope.interface import implementer

from emailsvc.config import ConfigError, Problem, TLSConfig

__all__ = [
    "SELF_SIGNED_DAYS",
    "SERVER_CIPHERS",
    "TLSFileError",
    "client_context",
    "ensure_certificate",
    "server_context",
]

_log = Logger()

SELF_SIGNED_DAYS = 825
# Regenerate the self-signed certificate when it has less than this left.
_RENEW_BEFORE = datetime.timedelta(days=30)

# TLS 1.2 suites: forward secrecy only, AEAD first, CBC-SHA2 as a fallback
# for old MTAs.  TLS 1.3 suites are all acceptable and keep OpenSSL's order.
SERVER_CIPHERS = (
    "ECDHE+AESGCM:ECDHE+CHACHA20:ECDHE+AES+SHA384:ECDHE+AES+SHA256:!aNULL:!eNULL"
)
_server_ciphers = ssl.AcceptableCiphers.fromOpenSSLCipherString(SERVER_CIPHERS)

_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}


class TLSFileError(ValueError):
    """A certificate or key file cannot be used; `key` is the config key."""

    def __init__(self, key: str, message: str):
        self.key = key
        self.message = message
        super().__init__(message)


def ensure_certificate(
    tls_config: TLSConfig,
    data_dir: str,
    hostname: str,
    config_path: str = "<config>",
    clock=None,
) -> tuple[str, str]:
    """Return (certificate path, key path) to serve, generating if needed.

    Configured files are checked (readable, PEM, key matches the first
    certificate) and ConfigError is raised naming tls.certificate or
    tls.private_key.  Without configured files a self-signed certificate is
    kept in {data_dir}/tls/ and reused while it is valid for `hostname`.
    `clock` (an IReactorTime) is only used to read the current time.
    """
    now = _now(clock)
    if tls_config.certificate or tls_config.private_key:
        if not (tls_config.certificate and tls_config.private_key):
            raise ConfigError(
                config_path, [Problem("tls", "certificate and private_key must be given together")]
            )
        cert_path, key_path = tls_config.certificate, tls_config.private_key
        try:
            leaf, _chain, _key = _load_pair(cert_path, key_path)
        except TLSFileError as error:
            raise ConfigError(config_path, [Problem(error.key, error.message)]) from None
        _warn_validity(leaf, cert_path, now)
        return cert_path, key_path
    try:
        names = _san_names(hostname)
    except ValueError as error:
        raise ConfigError(config_path, [Problem("server.hostname", str(error))]) from None
    directory = os.path.join(data_dir, "tls")
    try:
        return _ensure_self_signed(directory, hostname, names, now)
    except OSError as error:
        problem = Problem(
            "server.data_dir",
            f"cannot keep the self-signed certificate in {directory!r}: {error.strerror}",
        )
        raise ConfigError(config_path, [problem]) from None


def server_context(cert_path: str, key_path: str, min_version: str = "1.2") -> ssl.CertificateOptions:
    """Server TLS options for implicit TLS endpoints and transport.startTLS.

    `cert_path` holds the leaf certificate first, then any intermediates.
    Raises TLSFileError (a ValueError) when the files cannot be used.
    """
    leaf, chain, key = _load_pair(cert_path, key_path)
    return ssl.CertificateOptions(
        privateKey=PKey.from_cryptography_key(key),
        certificate=X509.from_cryptography(leaf),
        extraCertChain=[X509.from_cryptography(cert) for cert in chain],
        acceptableCiphers=_server_ciphers,
        raiseMinimumTo=_tls_version(min_version),
    )


def client_context(
    hostname: str | None = None,
    verify: bool = False,
    trust_root=None,
    min_version: str = "1.2",
) -> IOpenSSLClientConnectionCreator:
    """Client TLS options for outbound connections (SMTP relay, smarthosts).

    verify=False is opportunistic TLS: the peer certificate is not checked,
    `hostname` (if given) is only sent as SNI.  verify=True requires
    `hostname` and checks the certificate chain against `trust_root` (a PEM
    file path, a twisted Certificate or trust root; default: the platform
    trust store) and the name with service_identity.
    """
    version = _tls_version(min_version)
    name = hostname.rstrip(".") if hostname else None
    if not verify:
        options = ssl.CertificateOptions(raiseMinimumTo=version)
        return _OpportunisticClient(options, _sni_bytes(name) if name else None)
    if not name:
        raise ValueError("a verified TLS client needs the peer's hostname")
    if isinstance(trust_root, str):
        trust_root = _trust_root_from_file(trust_root)
    return ssl.optionsForClientTLS(
        name,
        trustRoot=trust_root,
        extraCertificateOptions={"raiseMinimumTo": version},
    )


@implementer(IOpenSSLClientConnectionCreator)
class _OpportunisticClient:
    """Unverified client connections that still send SNI."""

    def __init__(self, options: ssl.CertificateOptions, server_name: bytes | None):
        self._options = options
        self._server_name = server_name

    def clientConnectionForTLS(self, tlsProtocol) -> SSL.Connection:
        connection = self._options.clientConnectionForTLS(tlsProtocol)
        if self._server_name:
            connection.set_tlsext_host_name(self._server_name)
        return connection


def _tls_version(min_version: str):
    try:
        return _VERSIONS[min_version]
    except KeyError:
        raise ValueError(f"unsupported TLS version {min_version!r}; use '1.2' or '1.3'") from None


def _sni_bytes(name: str) -> bytes | None:
    """The SNI form of `name`, or None for IP literals and invalid names."""
    if _ip_address(name) is not None:
        return None
    try:
        return idna.encode(name, uts46=True)
    except idna.IDNAError:
        return None


def _trust_root_from_file(path: str):
    try:
        with open(path, "rb") as handle:
            certificates = x509.load_pem_x509_certificates(handle.read())
    except OSError as error:
        raise TLSFileError("", f"cannot read trust root {path!r}: {error.strerror}") from None
    except ValueError:
        raise TLSFileError("", f"no PEM certificate in trust root {path!r}") from None
    return ssl.trustRootFromCertificates(
        [ssl.Certificate(X509.from_cryptography(cert)) for cert in certificates]
    )


def _now(clock) -> datetime.datetime:
    seconds = clock.seconds() if clock is not None else time.time()
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc)


def _read(path: str, key: str, what: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as error:
        raise TLSFileError(key, f"cannot read the {what} {path!r}: {error.strerror}") from None


def _load_pair(cert_path: str, key_path: str):
    """Load (leaf, chain, private key); raise TLSFileError if unusable."""
    cert_data = _read(cert_path, "tls.certificate", "certificate")
    key_data = cert_data if key_path == cert_path else _read(key_path, "tls.private_key", "private key")
    try:
        certificates = x509.load_pem_x509_certificates(cert_data)
    except ValueError:
        raise TLSFileError("tls.certificate", f"no PEM certificate found in {cert_path!r}") from None
    key = _load_private_key(key_data, key_path)
    leaf, chain = certificates[0], certificates[1:]
    if _public_der(leaf.public_key()) != _public_der(key.public_key()):
        raise TLSFileError(
            "tls.private_key",
            f"the key in {key_path!r} does not match the first certificate in {cert_path!r}"
            " (the file must start with the server certificate, then intermediates)",
        )
    return leaf, chain, key


def _load_private_key(data: bytes, path: str):
    block = _pem_block(data, b"PRIVATE KEY")
    if block is None:
        raise TLSFileError("tls.private_key", f"no PEM private key found in {path!r}")
    try:
        key = serialization.load_pem_private_key(block, password=None)
    except TypeError:
        raise TLSFileError(
            "tls.private_key", f"the private key in {path!r} is encrypted; an unencrypted key is required"
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        raise TLSFileError("tls.private_key", f"cannot parse the private key in {path!r}") from None
    try:
        PKey.from_cryptography_key(key)
    except TypeError:
        raise TLSFileError("tls.private_key", f"unsupported private key type in {path!r}") from None
    return key


def _pem_block(data: bytes, label_suffix: bytes) -> bytes | None:
    """The first PEM block whose label ends with `label_suffix`."""
    start = 0
    while (begin := data.find(b"-----BEGIN ", start)) != -1:
        label_end = data.find(b"-----", begin + 11)
        if label_end == -1:
            return None
        label = data[begin + 11:label_end]
        end_marker = b"-----END " + label + b"-----"
        end = data.find(end_marker, label_end)
        if end == -1:
            return None
        start = end + len(end_marker)
        if label.endswith(label_suffix):
            return data[begin:start] + b"\n"
    return None


def _public_der(public_key) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _warn_validity(certificate: x509.Certificate, path: str, now: datetime.datetime):
    if certificate.not_valid_after_utc <= now:
        _log.warn(
            "TLS certificate {path} expired on {expiry}; clients will reject it",
            path=path,
            expiry=certificate.not_valid_after_utc.isoformat(),
        )
    elif certificate.not_valid_before_utc > now:
        _log.warn(
            "TLS certificate {path} is not valid before {start}",
            path=path,
            start=certificate.not_valid_before_utc.isoformat(),
        )


def _ip_address(name: str):
    try:
        return ipaddress.ip_address(name)
    except ValueError:
        return None


def _san_names(hostname: str) -> list[x509.GeneralName]:
    """SubjectAlternativeName entries: hostname, localhost, 127.0.0.1, ::1."""
    names: list[x509.GeneralName] = []
    for name in (hostname.rstrip("."), "localhost", "127.0.0.1", "::1"):
        address = _ip_address(name)
        if address is not None:
            entry: x509.GeneralName = x509.IPAddress(address)
        else:
            try:
                entry = x509.DNSName(idna.encode(name, uts46=True).decode("ascii"))
            except idna.IDNAError as error:
                raise ValueError(f"{name!r} is not a valid host name: {error}") from None
        if entry not in names:
            names.append(entry)
    return names


def _ensure_self_signed(directory: str, hostname: str, names, now) -> tuple[str, str]:
    cert_path = os.path.join(directory, "selfsigned.crt")
    key_path = os.path.join(directory, "selfsigned.key")
    os.makedirs(directory, mode=0o700, exist_ok=True)
    # Several processes may share data_dir: generate under a lock so a
    # certificate never ends up paired with another process's key.
    with _locked(os.path.join(directory, ".lock")):
        reason = _reuse_problem(cert_path, key_path, names, now)
        if reason is None:
            _log.info("Reusing the self-signed TLS certificate {path}", path=cert_path)
        else:
            _log.info(
                "Generating a self-signed TLS certificate for {hostname} ({reason})",
                hostname=hostname,
                reason=reason,
            )
            key = ec.generate_private_key(ec.SECP256R1())
            certificate = _self_signed(key, hostname, names, now)
            _write_atomic(
                key_path,
                key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                ),
                0o600,
            )
            _write_atomic(cert_path, certificate.public_bytes(serialization.Encoding.PEM), 0o644)
    _log.warn(
        "TLS uses a self-signed certificate ({path}); clients will not trust it."
        " Set tls.certificate and tls.private_key for production.",
        path=cert_path,
    )
    return cert_path, key_path


def _reuse_problem(cert_path, key_path, names, now) -> str | None:
    """Why the existing self-signed pair cannot be reused, or None."""
    if not (os.path.exists(cert_path) and os.path.exists(key_path)):
        return "none yet"
    try:
        leaf, _chain, _key = _load_pair(cert_path, key_path)
    except TLSFileError as error:
        return f"existing one unusable: {error.message}"
    if leaf.not_valid_after_utc - _RENEW_BEFORE <= now:
        return "existing one expires soon"
    try:
        present = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return "existing one has no subject alternative names"
    if any(name not in present for name in names):
        return "host name changed"
    return None


def _self_signed(key, hostname: str, names, now: datetime.datetime) -> x509.Certificate:
    common_name = hostname if 0 < len(hostname) <= 64 else "emailsvc self-signed"
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "emailsvc self-signed"),
        ]
    )
    public_key = key.public_key()
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        # Backdated a little so peers with a slow clock accept it.
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=SELF_SIGNED_DAYS))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .sign(key, hashes.SHA256())
    )


@contextlib.contextmanager
def _locked(path: str):
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _write_atomic(path: str, data: bytes, mode: int):
    """Write `data` to `path` via a synced temporary file and a rename."""
    directory = os.path.dirname(path) or "."
    fd, temporary = tempfile.mkstemp(dir=directory, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), mode)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    directory_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(directory_fd)
    finally:
        os.close(directory_fd)
