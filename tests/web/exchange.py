"""In-memory HTTP exchanges with a twisted.web Site, for unit tests."""
from twisted.internet.interfaces import ISSLTransport
from twisted.internet.testing import StringTransport
from zope.interface import implementer


@implementer(ISSLTransport)
class _TLSStringTransport(StringTransport):
    """A StringTransport that looks like TLS to HTTPChannel.isSecure()."""

    def setTcpNoDelay(self, enabled):
        pass

    def getPeerCertificate(self):
        return None


def http_exchange(site, raw_request: bytes, secure: bool = False):
    """Feed one HTTP/1.0 request to `site` in memory; return status, headers, body."""
    channel = site.buildProtocol(None)
    transport = _TLSStringTransport() if secure else StringTransport()
    channel.makeConnection(transport)
    channel.dataReceived(raw_request)
    head, _, body = transport.value().partition(b"\r\n\r\n")
    status_line, *header_lines = head.split(b"\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    channel.connectionLost(None)
    return int(status_line.split()[1]), headers, body
