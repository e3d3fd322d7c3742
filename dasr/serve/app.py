"""The ASGI app of `dasr serve` (Starlette) and its runner (uvicorn)."""

from __future__ import annotations

import contextlib
import logging
from importlib.resources import files

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute

from dasr.decode.recognizer import BaseRecognizer
from dasr.errors import DasrError
from dasr.serve.errors import ApiError, busy_response, error_response
from dasr.serve.middleware import RequestMetrics, SameOriginOnly
from dasr.serve.pool import DecodeTimeout, Overloaded
from dasr.serve.service import ServeSettings, Service
from dasr.serve.stream import stream
from dasr.serve.transcriptions import transcriptions

log = logging.getLogger(__name__)
#: the page and its audio worklet, served by name (no client-supplied path is opened)
STATIC = {"/": ("index.html", "text/html"), "/pcm-worklet.js": ("pcm-worklet.js", "text/javascript")}


def _static_route(path: str, name: str, media_type: str) -> Route:
    body = (files("dasr.serve") / "static" / name).read_bytes()

    async def endpoint(request: Request) -> Response:
        return Response(body, media_type=media_type) if media_type != "text/html" else HTMLResponse(body)

    return Route(path, endpoint)


async def healthz(request: Request) -> Response:
    """``GET /healthz``: 200 while the service answers, with how many decodes run or wait."""
    return JSONResponse({"status": "ok", "in_flight": request.app.state.service.pool.in_flight})


async def metrics(request: Request) -> Response:
    """``GET /metrics`` in the Prometheus text format."""
    body, content_type = request.app.state.service.metrics.render()
    return Response(body, headers={"Content-Type": content_type})


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.message, exc.param)


async def _bad_input(request: Request, exc: Exception) -> Response:
    return error_response(400, str(exc), "file")


async def _busy(request: Request, exc: Exception) -> Response:
    return busy_response(f"{exc}: try again later")


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return error_response(exc.status_code, exc.detail, headers=exc.headers)


async def _internal_error(request: Request, exc: Exception) -> Response:
    log.exception("internal error on %s", request.url.path, exc_info=exc)
    return error_response(500, "internal error of the service (logged)")


def create_app(recognizer: BaseRecognizer, settings: ServeSettings) -> Starlette:
    """The service's app over ``recognizer`` (see :mod:`dasr.serve`)."""
    service = Service(recognizer, settings)
    routes: list[BaseRoute] = [_static_route(path, name, media) for path, (name, media) in STATIC.items()]
    routes += [
        Route("/healthz", healthz),
        Route("/metrics", metrics),
        Route("/v1/audio/transcriptions", transcriptions, methods=["POST"]),
        WebSocketRoute("/v1/audio/stream", stream),
    ]
    middleware = [
        Middleware(
            RequestMetrics,
            metrics=service.metrics,
            endpoints=[r.path for r in routes if isinstance(r, Route | WebSocketRoute)],
        )
    ]
    if settings.cors:
        middleware.append(
            Middleware(CORSMiddleware, allow_origins=settings.cors, allow_methods=["GET", "POST"], allow_headers=["*"])
        )
    middleware.append(Middleware(SameOriginOnly, allowed=settings.cors))
    handlers = {
        ApiError: _api_error,
        DasrError: _bad_input,
        Overloaded: _busy,
        DecodeTimeout: _busy,
        HTTPException: _http_error,
        Exception: _internal_error,
    }

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        yield
        service.pool.close()

    app = Starlette(routes=routes, middleware=middleware, exception_handlers=handlers, lifespan=lifespan)
    app.state.service = service
    return app


def serve(model_dir: str, lm: str | None, settings: ServeSettings, log_level: str = "info") -> None:
    """Load the recognizer of ``model_dir`` (an exp dir or an export dir) and serve it until interrupted."""
    import torch
    import uvicorn

    from dasr.decode.recognizer import open_recognizer

    torch.set_num_threads(1)  # each decoding thread is one core's work (see DecodePool)
    app = create_app(open_recognizer(model_dir, lm), settings)
    log.info("serving %s on http://%s:%d with %d decoder(s)", model_dir, settings.host, settings.port, settings.workers)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=log_level.lower(), access_log=False)
