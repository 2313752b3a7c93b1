"""The public web site's root: /health, security headers, and web_site()."""
from __future__ import annotations

import json

from twisted.python.components import proxyForInterface
from twisted.web import pages
from twisted.web.resource import IResource, Resource
from twisted.web.server import Site

__all__ = ["HealthResource", "SecurityHeaders", "WebRoot", "web_site"]

# Two years, as recommended for HSTS; no includeSubDomains since other hosts
# under the mail domain are not ours to constrain.
HSTS_MAX_AGE = 63072000


class SecurityHeaders(proxyForInterface(IResource)):  # type: ignore[misc]
    """Wrap a resource tree so every response carries the security headers.

    Wrap the site root once; every resource below it (and 404/500 pages)
    gets the headers without doing anything.
    """

    def __init__(self, original: IResource, hsts_max_age: int = HSTS_MAX_AGE):
        super().__init__(original)
        self._hsts = f"max-age={hsts_max_age}".encode("ascii")

    def _add_headers(self, request):
        request.setHeader(b"x-content-type-options", b"nosniff")
        request.setHeader(b"referrer-policy", b"no-referrer")
        if request.isSecure():
            request.setHeader(b"strict-transport-security", self._hsts)

    def getChildWithDefault(self, path, request):
        self._add_headers(request)
        return self.original.getChildWithDefault(path, request)

    def render(self, request):
        self._add_headers(request)
        return self.original.render(request)


class HealthResource(Resource):
    """Liveness: 200 "ok\\n" as text/plain, or {"status":"ok"} as JSON."""

    def getChild(self, path, request):
        return pages.notFound()

    def render_GET(self, request):
        request.setHeader(b"cache-control", b"no-store")
        request.setHeader(b"vary", b"Accept")
        if _prefers_json(request.getHeader(b"accept")):
            request.setHeader(b"content-type", b"application/json")
            return json.dumps({"status": "ok"}, separators=(",", ":")).encode("ascii")
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return b"ok\n"


class WebRoot(Resource):
    """The web root: /health now, webmail and JMAP later; 404 elsewhere."""

    def __init__(self):
        super().__init__()
        self.putChild(b"health", HealthResource())

    def getChild(self, path, request):
        return pages.notFound()

    def render(self, request):
        return pages.notFound().render(request)


def web_site(reactor=None) -> Site:
    """The public HTTP(S) Site: WebRoot wrapped in SecurityHeaders.

    Add resources with `site.resource.putChild(name, resource)`.
    `reactor` is passed to Site for its connection timeouts.
    """
    return Site(SecurityHeaders(WebRoot()), reactor=reactor)


def _prefers_json(accept: bytes | None) -> bool:
    """Whether an Accept header ranks application/json above text/plain."""
    if not accept:
        return False
    json_q, json_exact = _quality(accept, b"application", b"json")
    text_q, text_exact = _quality(accept, b"text", b"plain")
    if json_q <= 0:
        return False
    return json_q > text_q or (json_q == text_q and json_exact and not text_exact)


def _quality(accept: bytes, main: bytes, sub: bytes) -> tuple[float, bool]:
    """(q, matched exactly) of the most specific range covering main/sub."""
    best_rank, best_q = -1, 0.0
    for item in accept.split(b","):
        media, *params = item.split(b";")
        media = media.strip().lower()
        if media == main + b"/" + sub:
            rank = 2
        elif media == main + b"/*":
            rank = 1
        elif media == b"*/*":
            rank = 0
        else:
            continue
        q = 1.0
        for param in params:
            name, _, value = param.partition(b"=")
            if name.strip().lower() == b"q":
                try:
                    q = min(max(float(value.strip()), 0.0), 1.0)
                except ValueError:
                    q = 0.0
        if rank > best_rank:
            best_rank, best_q = rank, q
    return best_q, best_rank == 2
