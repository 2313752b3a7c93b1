"""DKIM signing (RFC 6376) of mail our users send, with RSA (rsa-sha256) and
Ed25519 (ed25519-sha256, RFC 8463) keys, through dkimpy.

Keys live in `{key_dir}/<domain>/<selector>.key` (the domain in A-label
form), one PKCS#8 PEM file per selector.  Every key in a domain's directory
signs: a domain with an RSA and an Ed25519 key gets both signatures, as
RFC 8463 section 6 suggests while verifiers catch up; rotating a key means
adding the new selector, publishing it, then deleting the old file.  The
`.txt` file beside each key holds the DNS record to publish.

Reading the keys and signing run in a worker thread: RSA signing and body
hashing are too slow for the reactor.
"""
from __future__ import annotations

import base64
import os
import re

import dkim as dkimpy
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from twisted.internet import threads
from twisted.logger import Logger

from emailsvc.addresses import ascii_domain, normalize_domain
from emailsvc.checks.headers import header_fields

ALGORITHMS = ("rsa", "ed25519")
_SELECTOR = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\Z")
KEY_SUFFIX = ".key"

log = Logger()


class DKIMKeyError(Exception):
    """A key cannot be made or used; the message is for the operator."""


def check_selector(selector: str) -> str:
    """`selector` if it is one DNS label (RFC 6376 3.1 allows dots; we do not)."""
    if not _SELECTOR.match(selector):
        raise DKIMKeyError(f"invalid selector {selector!r}: use letters, digits and '-'")
    return selector


def domain_directory(key_dir: str, domain: str) -> str:
    """The directory holding the keys of `domain` (any form of the name)."""
    return os.path.join(key_dir, ascii_domain(normalize_domain(domain)))


def generate_key(algorithm: str, bits: int = 2048):
    """A new private key (cryptography object) for `algorithm` ("rsa" or "ed25519")."""
    if algorithm == "rsa":
        if bits < 1024:
            raise DKIMKeyError("RSA keys must have at least 1024 bits (RFC 8301)")
        return rsa.generate_private_key(public_exponent=65537, key_size=bits)
    if algorithm == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    raise DKIMKeyError(f"unknown algorithm {algorithm!r}")


def public_record(private_key) -> str:
    """The `v=DKIM1` TXT record publishing the public half of `private_key`."""
    public = private_key.public_key()
    if isinstance(private_key, ed25519.Ed25519PrivateKey):
        # RFC 8463 section 4: p= is the raw 32-octet public key.
        raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return "v=DKIM1; k=ed25519; p=" + base64.b64encode(raw).decode("ascii")
    der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return "v=DKIM1; k=rsa; p=" + base64.b64encode(der).decode("ascii")


def zone_line(selector: str, domain: str, record: str) -> str:
    """A zone-file line for `record`, split into strings of at most 255 octets."""
    name = f"{selector}._domainkey.{ascii_domain(normalize_domain(domain))}."
    strings = " ".join(f'"{record[i:i + 255]}"' for i in range(0, len(record), 255))
    return f"{name} IN TXT ( {strings} )"


def write_key(key_dir: str, domain: str, selector: str, private_key) -> tuple[str, str]:
    """Store a new key as `{key_dir}/<domain>/<selector>.key` (mode 0600) and
    its DNS record beside it; refuses to replace an existing key.

    @return: (key path, the TXT record text).
    """
    check_selector(selector)
    directory = domain_directory(key_dir, domain)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    path = os.path.join(directory, selector + KEY_SUFFIX)
    pem = private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise DKIMKeyError(f"{path} exists already: choose another selector") from None
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(pem)
        handle.flush()
        os.fsync(handle.fileno())
    record = public_record(private_key)
    with open(os.path.join(directory, selector + ".txt"), "w", encoding="ascii") as handle:
        handle.write(zone_line(selector, domain, record) + "\n")
    return path, record


def load_keys(key_dir: str, domain: str) -> list[tuple[str, bytes, bytes]]:
    """The signing keys of `domain`: (selector, algorithm tag, key in dkimpy's
    form), sorted by selector.  Unusable files are logged and skipped.
    Blocking: call from a thread.
    """
    try:
        directory = domain_directory(key_dir, domain)
        names = sorted(os.listdir(directory))
    except (OSError, ValueError):
        return []
    keys = []
    for name in names:
        if not name.endswith(KEY_SUFFIX):
            continue
        selector = name[: -len(KEY_SUFFIX)]
        path = os.path.join(directory, name)
        try:
            with open(path, "rb") as handle:
                key = serialization.load_pem_private_key(handle.read(), password=None)
        except (OSError, ValueError, TypeError) as problem:
            log.error("DKIM key {path} cannot be used: {problem}", path=path, problem=problem)
            continue
        if isinstance(key, ed25519.Ed25519PrivateKey):
            # dkimpy (PyNaCl) wants the base64 of the 32-octet seed.
            seed = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                     serialization.NoEncryption())
            keys.append((selector, b"ed25519-sha256", base64.b64encode(seed)))
        elif isinstance(key, rsa.RSAPrivateKey):
            pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                    serialization.NoEncryption())
            keys.append((selector, b"rsa-sha256", pem))
        else:
            log.error("DKIM key {path} is neither RSA nor Ed25519", path=path)
    return keys


def sign_message(message: bytes, domain: str, keys, headers, oversign) -> bytes:
    """`message` with one DKIM-Signature field per key prepended
    (relaxed/relaxed).  Blocking: call from a thread.

    Each name in `headers` present in the message is signed once per
    occurrence; names in `oversign` once more, so that adding such a field
    later breaks the signature.
    """
    present: dict[str, int] = {}
    for field in header_fields(message):
        present[field.name] = present.get(field.name, 0) + 1
    include = []
    # dkimpy refuses the fields RFC 6376 5.4 says not to sign (Received...).
    forbidden = {name.decode("ascii").lower() for name in dkimpy.DKIM.SHOULD_NOT}
    headers = [name for name in headers if name.lower() not in forbidden]
    oversign = [name for name in oversign if name.lower() not in forbidden]
    for name in dict.fromkeys(name.lower() for name in headers):
        include.extend([name] * present.get(name, 0))
    include.extend(name.lower() for name in oversign if name.lower() in present)
    if "from" not in include:
        return message  # RFC 6376 5.4: From must be signed; no From, no signature.
    signer_domain = ascii_domain(normalize_domain(domain)).encode("ascii")
    fields = []
    for selector, algorithm, key in keys:
        signer = dkimpy.DKIM(message, signature_algorithm=algorithm, linesep=b"\r\n")
        fields.append(signer.sign(
            selector.encode("ascii"), signer_domain, key,
            canonicalize=(b"relaxed", b"relaxed"),
            include_headers=[name.encode("ascii") for name in include],
        ))
    return b"".join(fields) + message


class DKIMSigner:
    """Signs outgoing messages with the keys of their From domain.

    @param key_dir: the directory of per-domain key directories.
    @param reactor: provides the thread pool the work runs in.
    """

    def __init__(self, key_dir: str, reactor, headers, oversign):
        self.key_dir = key_dir
        self._reactor = reactor
        self.headers = list(headers)
        self.oversign = list(oversign)

    @classmethod
    def from_config(cls, config, reactor):
        """The signer of `config` ([dkim]), or None when signing is off."""
        settings = config.dkim
        if not settings.enabled:
            return None
        return cls(settings.key_dir or os.path.join(config.server.data_dir, "dkim"), reactor,
                   settings.headers, settings.oversign)

    def sign(self, message: bytes, domain: str):
        """@return: Deferred firing with `message` signed by every key of
        `domain` (unchanged when it has none)."""
        return threads.deferToThreadPool(self._reactor, self._reactor.getThreadPool(), self._sign, message, domain)

    def _sign(self, message, domain):
        keys = load_keys(self.key_dir, domain)
        if not keys:
            return message
        return sign_message(message, domain, keys, self.headers, self.oversign)
