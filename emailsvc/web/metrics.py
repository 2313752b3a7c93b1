"""Prometheus metrics over HTTP: /metrics in the text exposition format."""
from __future__ import annotations

from prometheus_client import REGISTRY
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from twisted.web import pages
from twisted.web.resource import Resource
from twisted.web.server import Site

__all__ = ["MetricsResource", "metrics_site"]


class MetricsResource(Resource):
    """The metrics of a prometheus_client registry (default: REGISTRY)."""

    def __init__(self, registry=REGISTRY):
        super().__init__()
        self._registry = registry

    def getChild(self, path, request):
        return pages.notFound()

    def render_GET(self, request):
        body = generate_latest(self._registry)
        request.setHeader(b"content-type", CONTENT_TYPE_LATEST.encode("ascii"))
        request.setHeader(b"cache-control", b"no-store")
        return body


class _MetricsRoot(Resource):
    """Serves /metrics; every other path is 404."""

    def __init__(self, registry):
        super().__init__()
        self.putChild(b"metrics", MetricsResource(registry))

    def getChild(self, path, request):
        return pages.notFound()

    def render(self, request):
        return pages.notFound().render(request)


def metrics_site(registry=REGISTRY, reactor=None) -> Site:
    """A Site serving `registry` at /metrics (for a loopback listener).

    `reactor` is passed to Site for its connection timeouts.
    """
    return Site(_MetricsRoot(registry), reactor=reactor)
