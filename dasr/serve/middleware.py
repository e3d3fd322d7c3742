"""Two small ASGI middlewares: request metrics, and refusing other origins (no CORS unless ``--cors``)."""

from __future__ import annotations

import time
from collections.abc import Collection
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dasr.serve.errors import error_response
from dasr.serve.metrics import ServiceMetrics


class RequestMetrics:
    """Count every HTTP request by endpoint (``other`` for unknown paths) and status, with its latency."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics, endpoints: Collection[str]) -> None:
        self.app, self.metrics, self.endpoints = app, metrics, set(endpoints)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status = time.perf_counter(), 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            endpoint = scope["path"] if scope["path"] in self.endpoints else "other"
            self.metrics.observe_request(endpoint, status, time.perf_counter() - started)


class SameOriginOnly:
    """Refuse requests and WebSockets from a browser page of another origin (403), unless ``allowed`` names it.

    CORS alone would not do: a cross-origin form POST and a WebSocket are sent by browsers without
    asking first, so another site could make a visitor's browser use a service on 127.0.0.1.
    """

    def __init__(self, app: ASGIApp, allowed: Collection[str]) -> None:
        self.app, self.allowed = app, set(allowed)

    def _allowed(self, scope: Scope) -> bool:
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        origin = headers.get("origin")
        return origin is None or origin in self.allowed or urlsplit(origin).netloc == headers.get("host")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or self._allowed(scope):
            await self.app(scope, receive, send)
        elif scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
        else:
            message = "cross-origin requests are off: start the service with --cors ORIGIN to allow this page"
            await error_response(403, message)(scope, receive, send)
