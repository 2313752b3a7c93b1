"""Tests for emailsvc.tls (no network)."""
from __future__ import annotations

import datetime
import ipaddress
import os
import stat

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from OpenSSL import SSL
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.internet.task import Clock
from twisted.logger import capturedLogs
from twisted.trial import unittest
from zope.interface.verify import verifyObject

from emailsvc import tls
from emailsvc.config import ConfigError, TLSConfig

NOW = datetime.datetime(2030, 1, 1, tzinfo=datetime.timezone.utc)


def clock_at(moment: datetime.datetime) -> Clock:
    clock = Clock()
    clock.advance(moment.timestamp())
    return clock


def make_key(kind: str = "ec"):
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ec.generate_private_key(ec.SECP256R1())


def make_certificate(key, name: str, issuer_key=None, issuer_name: str | None = None, ca=False,
                     not_before=NOW - datetime.timedelta(days=1),
                     not_after=NOW + datetime.timedelta(days=90)) -> x509.Certificate:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    issuer = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_name or name)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
    return builder.sign(issuer_key or key, hashes.SHA256())


def pem_key(key, password: bytes | None = None) -> bytes:
    encryption = (
        serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
    )
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)


def pem_cert(*certificates) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certificates)


class SelfSignedTests(unittest.TestCase):
    def setUp(self):
        self.data_dir = self.mktemp()
        os.makedirs(self.data_dir)
        self.clock = clock_at(NOW)

    def ensure(self, hostname="mail.example.org", clock=None):
        return tls.ensure_certificate(TLSConfig(), self.data_dir, hostname, clock=clock or self.clock)

    def load(self, path):
        with open(path, "rb") as handle:
            return x509.load_pem_x509_certificate(handle.read())

    def test_generates_files(self):
        cert_path, key_path = self.ensure()
        self.assertEqual(cert_path, os.path.join(self.data_dir, "tls", "selfsigned.crt"))
        self.assertEqual(key_path, os.path.join(self.data_dir, "tls", "selfsigned.key"))
        self.assertEqual(stat.S_IMODE(os.stat(key_path).st_mode), 0o600)
        self.assertEqual(stat.S_IMODE(os.stat(os.path.join(self.data_dir, "tls")).st_mode), 0o700)
        with open(key_path, "rb") as handle:
            key = serialization.load_pem_private_key(handle.read(), password=None)
        self.assertIsInstance(key, ec.EllipticCurvePrivateKey)
        self.assertIsInstance(key.curve, ec.SECP256R1)
        certificate = self.load(cert_path)
        self.assertEqual(certificate.public_key().public_numbers(), key.public_key().public_numbers())
        # No temporary files are left behind.
        self.assertEqual(
            sorted(os.listdir(os.path.join(self.data_dir, "tls"))),
            [".lock", "selfsigned.crt", "selfsigned.key"],
        )

    def test_certificate_contents(self):
        cert_path, _ = self.ensure()
        certificate = self.load(cert_path)
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        self.assertEqual(names.get_values_for_type(x509.DNSName), ["mail.example.org", "localhost"])
        self.assertEqual(
            names.get_values_for_type(x509.IPAddress),
            [ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")],
        )
        self.assertEqual(
            certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value, "mail.example.org"
        )
        self.assertEqual(certificate.not_valid_after_utc - NOW, datetime.timedelta(days=825))
        self.assertLessEqual(certificate.not_valid_before_utc, NOW)
        self.assertFalse(certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)

    def test_ip_and_idn_hostnames(self):
        cert_path, _ = self.ensure("192.0.2.7")
        names = self.load(cert_path).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        self.assertIn(ipaddress.ip_address("192.0.2.7"), names.get_values_for_type(x509.IPAddress))
        cert_path, _ = self.ensure("bücher.example.")
        names = self.load(cert_path).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        self.assertIn("xn--bcher-kva.example", names.get_values_for_type(x509.DNSName))

    def test_invalid_hostname(self):
        error = self.assertRaises(
            ConfigError, tls.ensure_certificate, TLSConfig(), self.data_dir, "bad host!",
            config_path="etc/x.toml", clock=self.clock,
        )
        self.assertEqual(error.problems[0].key, "server.hostname")

    def test_reuses_existing(self):
        cert_path, key_path = self.ensure()
        with open(cert_path, "rb") as handle:
            first_cert = handle.read()
        with open(key_path, "rb") as handle:
            first_key = handle.read()
        self.assertEqual(self.ensure(), (cert_path, key_path))
        with open(cert_path, "rb") as handle:
            self.assertEqual(handle.read(), first_cert)
        with open(key_path, "rb") as handle:
            self.assertEqual(handle.read(), first_key)

    def test_regenerates_on_hostname_change(self):
        cert_path, _ = self.ensure("a.example.org")
        serial = self.load(cert_path).serial_number
        self.ensure("b.example.org")
        certificate = self.load(cert_path)
        self.assertNotEqual(certificate.serial_number, serial)
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        self.assertIn("b.example.org", names.get_values_for_type(x509.DNSName))

    def test_regenerates_before_expiry(self):
        cert_path, _ = self.ensure()
        serial = self.load(cert_path).serial_number
        self.ensure(clock=clock_at(NOW + datetime.timedelta(days=700)))
        self.assertEqual(self.load(cert_path).serial_number, serial)
        later = NOW + datetime.timedelta(days=800)
        self.ensure(clock=clock_at(later))
        certificate = self.load(cert_path)
        self.assertNotEqual(certificate.serial_number, serial)
        self.assertEqual(certificate.not_valid_after_utc - later, datetime.timedelta(days=825))

    def test_regenerates_damaged_pair(self):
        cert_path, key_path = self.ensure()
        serial = self.load(cert_path).serial_number
        with open(key_path, "wb") as handle:
            handle.write(pem_key(make_key()))
        self.ensure()
        self.assertNotEqual(self.load(cert_path).serial_number, serial)
        tls.server_context(cert_path, key_path)

    def test_unwritable_data_dir(self):
        blocker = os.path.join(self.data_dir, "file")
        with open(blocker, "w"):
            pass
        error = self.assertRaises(
            ConfigError, tls.ensure_certificate, TLSConfig(), blocker, "mail.example.org",
            config_path="etc/x.toml", clock=self.clock,
        )
        self.assertEqual(error.problems[0].key, "server.data_dir")

    def test_logs_self_signed(self):
        with capturedLogs() as events:
            cert_path, _ = self.ensure()
        warnings = [e for e in events if "self-signed" in e["log_format"] and e["log_level"].name == "warn"]
        self.assertEqual(len(warnings), 1)
        self.assertEqual(warnings[0]["path"], cert_path)


class ConfiguredCertificateTests(unittest.TestCase):
    def setUp(self):
        self.dir = self.mktemp()
        os.makedirs(self.dir)
        self.key = make_key()
        self.cert = make_certificate(self.key, "mail.example.org")

    def write(self, name: str, data: bytes) -> str:
        path = os.path.join(self.dir, name)
        with open(path, "wb") as handle:
            handle.write(data)
        return path

    def ensure(self, cert_path, key_path):
        return tls.ensure_certificate(
            TLSConfig(certificate=cert_path, private_key=key_path),
            os.path.join(self.dir, "var"),
            "mail.example.org",
            config_path="etc/emailsvc.toml",
            clock=clock_at(NOW),
        )

    def assert_problem(self, key: str, cert_path: str, key_path: str, text: str) -> ConfigError:
        error = self.assertRaises(ConfigError, self.ensure, cert_path, key_path)
        self.assertEqual(error.path, "etc/emailsvc.toml")
        self.assertEqual([p.key for p in error.problems], [key])
        self.assertIn(text, error.problems[0].message)
        self.assertIn(f"etc/emailsvc.toml: {key}: ", str(error))
        return error

    def test_returns_configured_paths(self):
        cert_path = self.write("cert.pem", pem_cert(self.cert))
        key_path = self.write("key.pem", pem_key(self.key))
        self.assertEqual(self.ensure(cert_path, key_path), (cert_path, key_path))
        self.assertFalse(os.path.exists(os.path.join(self.dir, "var")))

    def test_missing_certificate(self):
        key_path = self.write("key.pem", pem_key(self.key))
        missing = os.path.join(self.dir, "nope.pem")
        self.assert_problem("tls.certificate", missing, key_path, missing)

    def test_missing_key(self):
        cert_path = self.write("cert.pem", pem_cert(self.cert))
        self.assert_problem("tls.private_key", cert_path, os.path.join(self.dir, "nope.pem"), "cannot read")

    def test_not_pem(self):
        cert_path = self.write("cert.pem", b"hello")
        key_path = self.write("key.pem", pem_key(self.key))
        self.assert_problem("tls.certificate", cert_path, key_path, "no PEM certificate")
        cert_path = self.write("cert.pem", pem_cert(self.cert))
        key_path = self.write("key.pem", pem_cert(self.cert))
        self.assert_problem("tls.private_key", cert_path, key_path, "no PEM private key")

    def test_mismatched_key(self):
        cert_path = self.write("cert.pem", pem_cert(self.cert))
        key_path = self.write("key.pem", pem_key(make_key()))
        self.assert_problem("tls.private_key", cert_path, key_path, "does not match")

    def test_encrypted_key(self):
        cert_path = self.write("cert.pem", pem_cert(self.cert))
        key_path = self.write("key.pem", pem_key(self.key, b"secret"))
        self.assert_problem("tls.private_key", cert_path, key_path, "encrypted")

    def test_only_one_given(self):
        cert_path = self.write("cert.pem", pem_cert(self.cert))
        self.assert_problem("tls", cert_path, "", "together")

    def test_chain_and_rsa(self):
        ca_key = make_key("rsa")
        ca = make_certificate(ca_key, "Test CA", ca=True)
        key = make_key("rsa")
        leaf = make_certificate(key, "mail.example.org", issuer_key=ca_key, issuer_name="Test CA")
        cert_path = self.write("fullchain.pem", pem_cert(leaf, ca))
        key_path = self.write("key.pem", pem_key(key))
        self.assertEqual(self.ensure(cert_path, key_path), (cert_path, key_path))
        options = tls.server_context(cert_path, key_path)
        self.assertEqual(len(options.extraCertChain), 1)
        self.assertEqual(options.extraCertChain[0].get_subject().CN, "Test CA")

    def test_chain_in_wrong_order(self):
        ca_key = make_key()
        ca = make_certificate(ca_key, "Test CA", ca=True)
        leaf = make_certificate(self.key, "mail.example.org", issuer_key=ca_key, issuer_name="Test CA")
        cert_path = self.write("fullchain.pem", pem_cert(ca, leaf))
        key_path = self.write("key.pem", pem_key(self.key))
        self.assert_problem("tls.private_key", cert_path, key_path, "must start with the server certificate")

    def test_combined_file(self):
        path = self.write("combined.pem", pem_cert(self.cert) + pem_key(self.key))
        self.assertEqual(self.ensure(path, path), (path, path))
        tls.server_context(path, path)

    def test_expired_certificate_warns(self):
        cert = make_certificate(
            self.key, "mail.example.org",
            not_before=NOW - datetime.timedelta(days=100), not_after=NOW - datetime.timedelta(days=1),
        )
        cert_path = self.write("cert.pem", pem_cert(cert))
        key_path = self.write("key.pem", pem_key(self.key))
        with capturedLogs() as events:
            self.ensure(cert_path, key_path)
        self.assertTrue(any("expired" in e["log_format"] for e in events))


class ContextTests(unittest.TestCase):
    def setUp(self):
        data_dir = self.mktemp()
        os.makedirs(data_dir)
        self.cert_path, self.key_path = tls.ensure_certificate(
            TLSConfig(), data_dir, "localhost", clock=clock_at(NOW)
        )

    def test_server_context_versions(self):
        options = tls.server_context(self.cert_path, self.key_path)
        context = options.getContext()
        self.assertIsInstance(context, SSL.Context)
        self.assertTrue(options._options & SSL.OP_NO_TLSv1_1)
        self.assertFalse(options._options & SSL.OP_NO_TLSv1_2)
        options = tls.server_context(self.cert_path, self.key_path, min_version="1.3")
        self.assertTrue(options._options & SSL.OP_NO_TLSv1_2)
        self.assertFalse(options._options & SSL.OP_NO_TLSv1_3)
        self.assertRaises(ValueError, tls.server_context, self.cert_path, self.key_path, "1.1")

    def test_server_ciphers_have_forward_secrecy(self):
        options = tls.server_context(self.cert_path, self.key_path)
        for name in options._cipherString.split(":"):
            self.assertTrue(name.startswith(("ECDHE-", "TLS_")), name)

    def test_server_context_bad_files(self):
        error = self.assertRaises(
            tls.TLSFileError, tls.server_context, self.cert_path + ".missing", self.key_path
        )
        self.assertEqual(error.key, "tls.certificate")

    def test_client_contexts(self):
        for creator in (
            tls.client_context(),
            tls.client_context("mx.example.org."),
            tls.client_context("192.0.2.1"),
            tls.client_context("mx.example.org", verify=True),
            tls.client_context("localhost", verify=True, trust_root=self.cert_path),
        ):
            verifyObject(IOpenSSLClientConnectionCreator, creator)

    def test_verified_client_needs_hostname(self):
        self.assertRaises(ValueError, tls.client_context, verify=True)

    def test_bad_trust_root(self):
        self.assertRaises(
            tls.TLSFileError, tls.client_context, "localhost", verify=True,
            trust_root=self.cert_path + ".missing",
        )
        self.assertRaises(ValueError, tls.client_context, min_version="1.0")
