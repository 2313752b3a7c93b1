"""Real TLS handshakes over loopback with emailsvc.tls contexts."""
from __future__ import annotations

import datetime
import os

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from OpenSSL import SSL
from service_identity import VerificationError
from twisted.internet import defer, endpoints, protocol, reactor, ssl
from twisted.internet.interfaces import IHandshakeListener
from twisted.protocols.basic import LineReceiver
from twisted.trial import unittest
from zope.interface import implementer

from emailsvc import tls
from emailsvc.config import TLSConfig


class _Server(protocol.Protocol):
    """Echoes; on a plain b"STARTTLS\\r\\n" switches to TLS first."""

    def __init__(self, context, starttls: bool):
        self.context = context
        self.starttls = starttls
        self.lost = defer.Deferred()

    def dataReceived(self, data):
        if self.starttls:
            self.starttls = False
            assert data == b"STARTTLS\r\n", data
            self.transport.write(b"220 go ahead\r\n")
            self.transport.startTLS(self.context)
            return
        self.transport.write(data)

    def connectionLost(self, reason):
        self.lost.callback(None)


class _ServerFactory(protocol.Factory):
    def __init__(self, context=None, starttls=False):
        self.context = context
        self.starttls = starttls
        self.protocols = []

    def buildProtocol(self, addr):
        server = _Server(self.context, self.starttls)
        self.protocols.append(server)
        return server


@implementer(IHandshakeListener)
class _Client(LineReceiver):
    """Sends a line over TLS, waits for its echo, reports the TLS session."""

    def __init__(self, context=None):
        self.starttls_context = context
        self.done = defer.Deferred()
        self.handshake_done = False
        self.result = None

    def connectionMade(self):
        if self.starttls_context is not None:
            self.sendLine(b"STARTTLS")
        else:
            self.sendLine(b"hello")

    def handshakeCompleted(self):
        self.handshake_done = True

    def lineReceived(self, line):
        if line == b"220 go ahead":
            self.transport.startTLS(self.starttls_context)
            self.sendLine(b"hello")
            return
        connection = self.transport.getHandle()
        self.result = {
            "line": line,
            "version": connection.get_protocol_version_name(),
            "peer": connection.get_peer_certificate().to_cryptography(),
            "chain": [c.to_cryptography() for c in connection.get_peer_cert_chain() or []],
        }
        self.transport.loseConnection()

    def connectionLost(self, reason):
        if self.result is not None:
            self.done.callback(self.result)
        else:
            self.done.errback(reason)


def _write(path: str, data: bytes) -> str:
    with open(path, "wb") as handle:
        handle.write(data)
    return path


def _certificate(key, subject: str, issuer_key, issuer: str, ca: bool, now) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False
        )
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=False, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
    else:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(subject)]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


class HandshakeTests(unittest.TestCase):
    def setUp(self):
        self.dir = self.mktemp()
        os.makedirs(self.dir)
        self.cert_path, self.key_path = tls.ensure_certificate(TLSConfig(), self.dir, "mail.example.org")

    @defer.inlineCallbacks
    def exchange(self, server_context, client_context, starttls=False):
        """Connect over loopback; return the client's view of the session."""
        factory = _ServerFactory(server_context, starttls)
        if starttls:
            server_endpoint = endpoints.TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1")
        else:
            server_endpoint = endpoints.SSL4ServerEndpoint(
                reactor, 0, server_context, interface="127.0.0.1"
            )
        port = yield server_endpoint.listen(factory)
        self.addCleanup(port.stopListening)
        client_endpoint = endpoints.TCP4ClientEndpoint(
            reactor, "127.0.0.1", port.getHost().port, timeout=10
        )
        if starttls:
            client = _Client(client_context)
        else:
            client = _Client()
            client_endpoint = endpoints.wrapClientTLS(client_context, client_endpoint)
        try:
            yield endpoints.connectProtocol(client_endpoint, client)
            result = yield client.done
        finally:
            yield defer.gatherResults([server.lost for server in factory.protocols])
        self.assertTrue(client.handshake_done)
        return result

    @defer.inlineCallbacks
    def test_implicit_tls_opportunistic(self):
        result = yield self.exchange(
            tls.server_context(self.cert_path, self.key_path),
            tls.client_context("mail.example.org"),
        )
        self.assertEqual(result["line"], b"hello")
        self.assertIn(result["version"], ("TLSv1.2", "TLSv1.3"))

    @defer.inlineCallbacks
    def test_implicit_tls_verified(self):
        result = yield self.exchange(
            tls.server_context(self.cert_path, self.key_path),
            tls.client_context("localhost", verify=True, trust_root=self.cert_path),
        )
        self.assertEqual(result["line"], b"hello")

    @defer.inlineCallbacks
    def test_verified_wrong_name_fails(self):
        with self.assertRaises(VerificationError):
            yield self.exchange(
                tls.server_context(self.cert_path, self.key_path),
                tls.client_context("other.example.net", verify=True, trust_root=self.cert_path),
            )

    @defer.inlineCallbacks
    def test_verified_untrusted_fails(self):
        other_dir = self.mktemp()
        os.makedirs(other_dir)
        other_cert, _ = tls.ensure_certificate(TLSConfig(), other_dir, "mail.example.org")
        with self.assertRaises(SSL.Error):
            yield self.exchange(
                tls.server_context(self.cert_path, self.key_path),
                tls.client_context("mail.example.org", verify=True, trust_root=other_cert),
            )

    @defer.inlineCallbacks
    def test_starttls(self):
        result = yield self.exchange(
            tls.server_context(self.cert_path, self.key_path),
            tls.client_context("localhost", verify=True, trust_root=self.cert_path),
            starttls=True,
        )
        self.assertEqual(result["line"], b"hello")

    @defer.inlineCallbacks
    def test_minimum_tls_1_3(self):
        result = yield self.exchange(
            tls.server_context(self.cert_path, self.key_path, min_version="1.3"),
            tls.client_context(),
        )
        self.assertEqual(result["version"], "TLSv1.3")

    @defer.inlineCallbacks
    def test_client_limited_to_1_2_rejected_by_1_3_server(self):
        # A plain Twisted client capped at TLS 1.2 checks the server's floor.
        client = ssl.CertificateOptions(lowerMaximumSecurityTo=ssl.TLSVersion.TLSv1_2)
        with self.assertRaises(SSL.Error):
            yield self.exchange(
                tls.server_context(self.cert_path, self.key_path, min_version="1.3"), client
            )

    @defer.inlineCallbacks
    def test_full_chain(self):
        now = datetime.datetime.now(datetime.timezone.utc)
        root_key, intermediate_key, leaf_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
        root = _certificate(root_key, "Test Root", root_key, "Test Root", True, now)
        intermediate = _certificate(intermediate_key, "Test Intermediate", root_key, "Test Root", True, now)
        leaf = _certificate(leaf_key, "mail.example.org", intermediate_key, "Test Intermediate", False, now)
        pem = serialization.Encoding.PEM
        chain_path = _write(
            os.path.join(self.dir, "fullchain.pem"), leaf.public_bytes(pem) + intermediate.public_bytes(pem)
        )
        key_path = _write(
            os.path.join(self.dir, "key.pem"),
            leaf_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
        )
        root_path = _write(os.path.join(self.dir, "root.pem"), root.public_bytes(pem))
        config = TLSConfig(certificate=chain_path, private_key=key_path)
        cert_path, key_path = tls.ensure_certificate(config, self.dir, "mail.example.org")
        result = yield self.exchange(
            tls.server_context(cert_path, key_path),
            tls.client_context("mail.example.org.", verify=True, trust_root=root_path),
        )
        self.assertEqual(result["peer"], leaf)
        self.assertIn(intermediate, result["chain"])
