"""Tests for emailsvc.web.metrics (no real network)."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from twisted.internet.testing import MemoryReactorClock
from twisted.trial import unittest
from twisted.web.test.requesthelper import DummyRequest

from tests.web.exchange import http_exchange
from emailsvc.web.metrics import MetricsResource, metrics_site


class MetricsResourceTests(unittest.TestCase):
    def setUp(self):
        self.registry = CollectorRegistry()
        self.counter = Counter("emailsvc_test_messages", "Messages seen.", registry=self.registry)
        self.counter.inc(3)

    def render(self, path: bytes, method: bytes = b"GET") -> DummyRequest:
        site = metrics_site(self.registry, reactor=MemoryReactorClock())
        request = DummyRequest(path.lstrip(b"/").split(b"/"))
        request.method = method
        request.render(site.getResourceFor(request))
        return request

    def test_metrics(self):
        request = self.render(b"/metrics")
        self.assertIn(request.responseCode, (None, 200))
        self.assertEqual(
            request.responseHeaders.getRawHeaders(b"content-type"), [CONTENT_TYPE_LATEST.encode()]
        )
        body = b"".join(request.written)
        self.assertIn(b"# TYPE emailsvc_test_messages", body)
        self.assertIn(b"emailsvc_test_messages_total 3.0", body)

    def test_reflects_current_values(self):
        self.render(b"/metrics")
        self.counter.inc()
        self.assertIn(b"emailsvc_test_messages_total 4.0", b"".join(self.render(b"/metrics").written))

    def test_other_paths_not_found(self):
        for path in (b"/", b"/metric", b"/metrics/x", b"/metrics/", b"/health"):
            request = self.render(path)
            self.assertEqual(request.responseCode, 404, path)
            self.assertNotIn(b"emailsvc_test_messages", b"".join(request.written))

    def test_default_registry(self):
        resource = MetricsResource()
        request = DummyRequest([b""])
        request.render(resource)
        # The default registry always carries the platform collector.
        self.assertIn(b"python_info", b"".join(request.written))


class MetricsSiteTests(unittest.TestCase):
    """Whole HTTP exchanges through the Site, over an in-memory transport."""

    def setUp(self):
        self.registry = CollectorRegistry()
        Counter("emailsvc_test_site", "Site test.", registry=self.registry).inc()
        self.site = metrics_site(self.registry, reactor=MemoryReactorClock())

    def test_get(self):
        status, headers, body = http_exchange(self.site, b"GET /metrics HTTP/1.0\r\n\r\n")
        self.assertEqual(status, 200)
        self.assertEqual(headers[b"content-type"], CONTENT_TYPE_LATEST.encode())
        self.assertEqual(int(headers[b"content-length"]), len(body))
        self.assertIn(b"emailsvc_test_site_total 1.0", body)

    def test_head(self):
        status, headers, body = http_exchange(self.site, b"HEAD /metrics HTTP/1.0\r\n\r\n")
        self.assertEqual(status, 200)
        self.assertEqual(headers[b"content-type"], CONTENT_TYPE_LATEST.encode())
        self.assertEqual(body, b"")

    def test_not_found(self):
        status, _, _ = http_exchange(self.site, b"GET /nope HTTP/1.0\r\n\r\n")
        self.assertEqual(status, 404)

    def test_post_not_allowed(self):
        status, _, _ = http_exchange(
            self.site, b"POST /metrics HTTP/1.0\r\nContent-Length: 0\r\n\r\n"
        )
        self.assertEqual(status, 405)
