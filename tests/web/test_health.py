"""Tests for emailsvc.web.health (no real network)."""
from __future__ import annotations

import json

from twisted.internet.testing import MemoryReactorClock
from twisted.trial import unittest
from twisted.web.resource import IResource, Resource
from twisted.web.server import Site
from twisted.web.test.requesthelper import DummyRequest
from zope.interface.verify import verifyObject

from tests.web.exchange import http_exchange
from emailsvc.web.health import (
    HealthResource,
    SecurityHeaders,
    WebRoot,
    _prefers_json,
    web_site,
)


class _Request(DummyRequest):
    """DummyRequest with isSecure(), which the real Request has."""

    secure = False

    def isSecure(self):
        return self.secure


class HealthResourceTests(unittest.TestCase):
    def render(self, accept: bytes | None = None) -> _Request:
        request = _Request([])
        if accept is not None:
            request.requestHeaders.setRawHeaders(b"accept", [accept])
        request.render(HealthResource())
        return request

    def header(self, request, name: bytes):
        return request.responseHeaders.getRawHeaders(name, [None])[0]

    def test_text(self):
        request = self.render()
        self.assertIn(request.responseCode, (None, 200))
        self.assertEqual(b"".join(request.written), b"ok\n")
        self.assertEqual(self.header(request, b"content-type"), b"text/plain; charset=utf-8")
        self.assertEqual(self.header(request, b"vary"), b"Accept")
        self.assertEqual(self.header(request, b"cache-control"), b"no-store")

    def test_json(self):
        request = self.render(b"application/json")
        self.assertEqual(self.header(request, b"content-type"), b"application/json")
        self.assertEqual(json.loads(b"".join(request.written)), {"status": "ok"})
        self.assertEqual(b"".join(request.written), b'{"status":"ok"}')

    def test_browser_accept_gets_text(self):
        request = self.render(b"text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8")
        self.assertEqual(b"".join(request.written), b"ok\n")


class PrefersJSONTests(unittest.TestCase):
    def test_choices(self):
        cases = {
            None: False,
            b"": False,
            b"*/*": False,
            b"text/plain": False,
            b"application/json": True,
            b"Application/JSON": True,
            b"application/*": True,
            b"application/json, */*;q=0.8": True,
            b"text/plain, application/json": False,
            b"text/plain;q=0.5, application/json": True,
            b"application/json;q=0": False,
            b"application/json;q=0, */*": False,
            b"application/json;q=bogus": False,
            b"*/*, application/json": True,
        }
        for accept, expected in cases.items():
            self.assertEqual(_prefers_json(accept), expected, accept)


class WebRootTests(unittest.TestCase):
    def render(self, path: bytes, secure: bool = False, site=None) -> _Request:
        site = site or web_site(reactor=MemoryReactorClock())
        request = _Request(path.lstrip(b"/").split(b"/"))
        request.secure = secure
        request.render(site.getResourceFor(request))
        return request

    def test_health(self):
        request = self.render(b"/health")
        self.assertEqual(b"".join(request.written), b"ok\n")

    def test_not_found(self):
        for path in (b"/", b"/index.html", b"/health/", b"/health/x", b"/jmap", b"/metrics"):
            self.assertEqual(self.render(path).responseCode, 404, path)

    def test_security_headers(self):
        for path in (b"/health", b"/nope"):
            headers = self.render(path).responseHeaders
            self.assertEqual(headers.getRawHeaders(b"x-content-type-options"), [b"nosniff"])
            self.assertEqual(headers.getRawHeaders(b"referrer-policy"), [b"no-referrer"])
            self.assertIsNone(headers.getRawHeaders(b"strict-transport-security"))

    def test_hsts_when_secure(self):
        headers = self.render(b"/health", secure=True).responseHeaders
        self.assertEqual(
            headers.getRawHeaders(b"strict-transport-security"), [b"max-age=63072000"]
        )

    def test_later_resources_get_headers(self):
        site = web_site(reactor=MemoryReactorClock())

        class Hello(Resource):
            isLeaf = True

            def render_GET(self, request):
                return b"hello"

        site.resource.putChild(b"hello", Hello())
        request = self.render(b"/hello/there", secure=True, site=site)
        self.assertEqual(b"".join(request.written), b"hello")
        headers = request.responseHeaders
        self.assertEqual(headers.getRawHeaders(b"x-content-type-options"), [b"nosniff"])
        self.assertIsNotNone(headers.getRawHeaders(b"strict-transport-security"))

    def test_wrapped_leaf_root(self):
        class Leaf(Resource):
            isLeaf = True

            def render_GET(self, request):
                return b"leaf"

        site = Site(SecurityHeaders(Leaf(), hsts_max_age=60), reactor=MemoryReactorClock())
        request = self.render(b"/anything", secure=True, site=site)
        self.assertEqual(b"".join(request.written), b"leaf")
        self.assertEqual(
            request.responseHeaders.getRawHeaders(b"strict-transport-security"), [b"max-age=60"]
        )

    def test_interfaces(self):
        verifyObject(IResource, SecurityHeaders(WebRoot()))
        verifyObject(IResource, HealthResource())


class WebSiteTests(unittest.TestCase):
    """Whole HTTP exchanges through the Site, over an in-memory transport."""

    def setUp(self):
        self.site = web_site(reactor=MemoryReactorClock())

    def test_plain_http(self):
        status, headers, body = http_exchange(self.site, b"GET /health HTTP/1.0\r\n\r\n")
        self.assertEqual((status, body), (200, b"ok\n"))
        self.assertEqual(headers[b"content-type"], b"text/plain; charset=utf-8")
        self.assertEqual(headers[b"x-content-type-options"], b"nosniff")
        self.assertEqual(headers[b"referrer-policy"], b"no-referrer")
        self.assertNotIn(b"strict-transport-security", headers)

    def test_https(self):
        status, headers, body = http_exchange(
            self.site,
            b"GET /health HTTP/1.0\r\nAccept: application/json\r\n\r\n",
            secure=True,
        )
        self.assertEqual((status, body), (200, b'{"status":"ok"}'))
        self.assertEqual(headers[b"content-type"], b"application/json")
        self.assertEqual(headers[b"strict-transport-security"], b"max-age=63072000")

    def test_not_found_has_headers(self):
        status, headers, _ = http_exchange(self.site, b"GET /webmail HTTP/1.0\r\n\r\n", secure=True)
        self.assertEqual(status, 404)
        self.assertEqual(headers[b"x-content-type-options"], b"nosniff")
        self.assertIn(b"strict-transport-security", headers)

    def test_head_and_method_not_allowed(self):
        status, headers, body = http_exchange(self.site, b"HEAD /health HTTP/1.0\r\n\r\n")
        self.assertEqual((status, body), (200, b""))
        status, _, _ = http_exchange(
            self.site, b"POST /health HTTP/1.0\r\nContent-Length: 0\r\n\r\n"
        )
        self.assertEqual(status, 405)
