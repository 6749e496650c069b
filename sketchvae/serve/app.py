"""The ASGI app: the page's static files and the JSON API over `engine.ServedModel` (Starlette).

    GET  /                    the page (static/index.html; static/app.js, static/style.css)
    GET  /api/models          [{"name", "mode", "classes"}]
    POST /api/complete        {"model", "strokes", "n"?, "temperature"?, "class"?, "seed"?} -> {"sketches"}
    POST /api/sample          {"model", "n"?, "temperature"?, "class"?, "seed"?}            -> {"sketches"}
    POST /api/interpolate     {"model", "a", "b", "steps"?, "temperature"?, "seed"?}         -> {"sketches"}

Every error is JSON `{"error": "FIELD: what is wrong", "field": FIELD}` with a 4xx status (400 bad
field, 404 unknown path, 405 wrong method, 413 body too large); an unexpected failure is a 500
with `{"error": "internal error ..."}` and the traceback goes to the server's log only.
Sampling runs in worker threads (at most `workers` at once), never on the event loop; a request whose
client has gone away while it waited for a worker (the page cancels its request when a new stroke
starts) is dropped without sampling.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

from sketchvae.serve import requests as R
from sketchvae.serve.engine import ModelError, ServedModel

STATIC = Path(__file__).resolve().parent / "static"
log = logging.getLogger("sketchvae.serve")

# the page loads nothing from elsewhere: no CDN, works offline (and a stray URL fails loudly)
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; "
                               "script-src 'self'; connect-src 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def _error(message: str, status: int, field: str | None = None):
    from starlette.responses import JSONResponse

    body = {"error": message}
    if field is not None:
        body["field"] = field
    return JSONResponse(body, status_code=status)


async def _read_body(request) -> bytes:
    """The body, refused (413) as soon as it grows past MAX_BODY, without reading the rest."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > R.MAX_BODY:
        raise R.RequestError("body", f"request body of {declared} bytes is larger than the limit of "
                                     f"{R.MAX_BODY} bytes", 413)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > R.MAX_BODY:
            raise R.RequestError("body", f"request body is larger than the limit of {R.MAX_BODY} bytes", 413)
        chunks.append(chunk)
    return b"".join(chunks)


class _SecurityHeaders:
    """ASGI middleware adding SECURITY_HEADERS to every HTTP response that lacks them."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                have = {k.lower() for k, _ in headers}
                headers += [(k.lower().encode(), v.encode()) for k, v in SECURITY_HEADERS.items()
                            if k.lower().encode() not in have]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def create_app(models: dict[str, ServedModel], *, workers: int = 2, allowed_hosts=None):
    """The Starlette app serving `models` (name -> ServedModel, e.g. from `engine.discover`).

    workers: most sampling calls running at once (threads); others wait their turn.
    allowed_hosts: Host header values accepted (None: any); `sketchvae serve` passes the local names
    when bound to 127.0.0.1, so a web page elsewhere cannot reach the API by DNS rebinding.
    """
    import anyio
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.middleware import Middleware
    from starlette.middleware.trustedhost import TrustedHostMiddleware
    from starlette.responses import FileResponse, JSONResponse, Response
    from starlette.routing import Mount, Route
    from starlette.staticfiles import StaticFiles

    limiter = anyio.CapacityLimiter(max(1, int(workers)))
    listing = [m.info() for m in models.values()]

    def model_named(name: str) -> ServedModel:
        if name not in models:
            raise R.RequestError("model", f"unknown model {name!r}; this server has: {', '.join(models)}")
        return models[name]

    def endpoint(check, method: str):
        """POST handler: read and check the body, call the model's `method` in a worker thread."""

        async def handler(request):
            try:
                args = check(R.parse_body(await _read_body(request)))
                model = model_named(args.pop("model"))
                async with limiter:  # wait for a free worker
                    if await request.is_disconnected():  # the page gave up (a newer stroke): skip the work
                        return Response(status_code=499)
                    sketches = await anyio.to_thread.run_sync(functools.partial(getattr(model, method), **args))
            except R.RequestError as err:
                return _error(str(err), err.status, err.field)
            except ModelError as err:
                return _error(str(err), 400, err.field)
            except ValueError as err:  # the sample API's own checks (e.g. a drawing too long for the model)
                return _error(f"request: {err}", 400, "request")
            return JSONResponse({"sketches": sketches}, headers={"Cache-Control": "no-store"})

        return handler

    # each check returns the keyword arguments of the ServedModel method it feeds
    complete = endpoint(R.complete_request, "complete")
    sample = endpoint(R.sample_request, "sample")
    interpolate = endpoint(R.interpolate_request, "interpolate")

    async def list_models(request):
        return JSONResponse(listing, headers={"Cache-Control": "no-store"})

    async def index(request):
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    async def http_error(request, exc):
        path = request.url.path
        if exc.status_code == 404:
            return _error(f"path: no such page or endpoint {path!r}; the API is GET /api/models, POST "
                          f"/api/complete, /api/sample, /api/interpolate", 404, "path")
        if exc.status_code == 405:
            return _error(f"method: {request.method} is not allowed on {path}", 405, "method")
        return _error(f"request: {exc.detail}", exc.status_code, "request")

    async def server_error(request, exc):
        log.error("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
        return _error("internal error while answering this request (details are in the server's log)", 500)

    middleware = [Middleware(_SecurityHeaders)]
    if allowed_hosts:
        middleware.insert(0, Middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts)))
    routes = [
        Route("/", index),
        Route("/api/models", list_models, methods=["GET"]),
        Route("/api/complete", complete, methods=["POST"]),
        Route("/api/sample", sample, methods=["POST"]),
        Route("/api/interpolate", interpolate, methods=["POST"]),
        Mount("/static", app=StaticFiles(directory=STATIC), name="static"),
    ]
    app = Starlette(routes=routes, middleware=middleware,
                    exception_handlers={HTTPException: http_error, Exception: server_error})
    app.state.models = models
    return app
