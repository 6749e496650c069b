"""The ASGI app: the page's static files and the JSON API over `engine.ServedModel` (Starlette).

    GET  /                    the page (static/index.html; static/app.js, static/style.css)
    GET  /api/models          [{"name", "mode", "classes"}]
    POST /api/complete        {"model", "strokes", "n"?, "temperature"?, "class"?, "seed"?} -> {"sketches"}
    POST /api/sample          {"model", "n"?, "temperature"?, "class"?, "seed"?}            -> {"sketches"}
    POST /api/interpolate     {"model", "a", "b", "steps"?, "temperature"?, "seed"?}         -> {"sketches"}

Every error is JSON `{"error": "FIELD: what is wrong", "field": FIELD}` with a 4xx status (400 bad
field, 404 unknown path, 405 wrong method, 413 body too large); an unexpected failure is a 500
with `{"error": "internal error ..."}` and the traceback goes to the server's log only.  When
`max_queue` requests are already waiting or being sampled, a new one is answered at once with 503,
`{"error": "busy: ..."}` and `Retry-After: 1`.
Sampling runs in worker threads (at most `workers` at once), never on the event loop; a request whose
client has gone away while it waited (the page cancels its request when a new stroke starts) is
dropped without sampling.

Dynamic batching (`batch_window_ms` > 0): the complete and sample requests to one model that arrive
within that window are handed together to the model's decoding thread (`ServedModel.submit`), which
decodes every request it holds in one batch: requests join between decoder steps and are answered as
soon as their own sketches have ended (continuous batching), each answer bit for bit what the
request gets alone with its seed (with batching off the answers come from `complete` / `sample` in
worker threads, equal up to float32 rounding).  The decoding threads (one per model in use) do not
count against `workers`.  Interpolations are not batched.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
from pathlib import Path

from sketchvae.serve import requests as R
from sketchvae.serve.engine import BATCHED, ModelError, ServedModel

STATIC = Path(__file__).resolve().parent / "static"
DEFAULT_BATCH_WINDOW_MS = 5.0   # ms a request waits for others to share its decoder pass (0: no batching)
DEFAULT_MAX_QUEUE = 64          # requests waiting or being sampled at once; more are answered 503
RETRY_AFTER_S = 1
log = logging.getLogger("sketchvae.serve")

# the page loads nothing from elsewhere: no CDN, works offline (and a stray URL fails loudly)
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; "
                               "script-src 'self'; connect-src 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def _error(message: str, status: int, field: str | None = None, headers: dict | None = None):
    from starlette.responses import JSONResponse

    body = {"error": message}
    if field is not None:
        body["field"] = field
    return JSONResponse(body, status_code=status, headers=headers)


GONE = object()  # a request whose client left before its answer


@dataclasses.dataclass(eq=False)
class _Job:
    method: str  # one of engine.BATCHED
    args: dict  # the method's keyword arguments
    request: object  # the starlette Request, to hear when its client leaves
    done: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    result: object = None  # the answer or the exception to raise
    gone: bool = False  # its client has left: the decoding thread drops it


class _Batcher:
    """Collects the complete / sample jobs per model for `window_s`, then hands them to the model's
    decoding thread (`ServedModel.submit`), which decodes them together with the jobs it already
    holds.  One flush task per model with jobs waiting.  A job whose client leaves is marked gone
    (and answered 499 at once): dropped from the window, or from the batch before its next step."""

    def __init__(self, window_s: float):
        self.window_s = window_s
        self.waiting: dict[str, list[_Job]] = {}
        self.tasks: set = set()  # strong references to the running flush tasks

    async def run(self, model: ServedModel, job: _Job):
        queue = self.waiting.setdefault(model.name, [])
        queue.append(job)
        if len(queue) == 1:
            task = asyncio.get_running_loop().create_task(self._flush(model))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        answered = asyncio.ensure_future(job.done.wait())
        left = asyncio.ensure_future(self._client_leaves(job.request))
        await asyncio.wait({answered, left}, return_when=asyncio.FIRST_COMPLETED)
        for task in (answered, left):
            task.cancel()
        if job.done.is_set():
            return job.result
        job.gone = True
        return GONE

    @staticmethod
    async def _client_leaves(request) -> None:
        while (await request.receive())["type"] != "http.disconnect":  # the body has been read already
            pass

    async def _flush(self, model: ServedModel) -> None:
        await asyncio.sleep(self.window_s)
        live = [job for job in self.waiting.pop(model.name, []) if not job.gone]
        if not live:
            return
        loop = asyncio.get_running_loop()

        def deliver(job: _Job, result) -> None:  # on the event loop
            job.result = result
            job.done.set()

        def answer(job: _Job, result) -> None:  # in the decoding thread
            try:
                loop.call_soon_threadsafe(deliver, job, result)
            except RuntimeError:  # the event loop has closed: the server stopped meanwhile, nobody waits
                pass

        model.submit([(j.method, j.args, j) for j in live], answer, lambda job: job.gone)


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


def create_app(models: dict[str, ServedModel], *, workers: int = 2, allowed_hosts=None,
               batch_window_ms: float = DEFAULT_BATCH_WINDOW_MS, max_queue: int = DEFAULT_MAX_QUEUE):
    """The Starlette app serving `models` (name -> ServedModel, e.g. from `engine.discover`).

    workers: most unbatched sampling calls running at once (threads); others wait their turn.
    allowed_hosts: Host header values accepted (None: any); `sketchvae serve` passes the local names
    when bound to 127.0.0.1, so a web page elsewhere cannot reach the API by DNS rebinding.
    batch_window_ms: how long a complete / sample request waits for others to share its decoder pass
    (module docstring); 0 samples every request on its own.
    max_queue: most requests waiting or being sampled at once; more get 503 with Retry-After.
    """
    if batch_window_ms < 0 or max_queue < 1:
        raise ValueError(f"batch_window_ms={batch_window_ms} must be >= 0 and max_queue={max_queue} >= 1")
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
    batcher = _Batcher(batch_window_ms / 1000.0) if batch_window_ms > 0 else None
    admitted = [0]  # requests waiting or being sampled

    def model_named(name: str) -> ServedModel:
        if name not in models:
            raise R.RequestError("model", f"unknown model {name!r}; this server has: {', '.join(models)}")
        return models[name]

    def endpoint(check, method: str):
        """POST handler: read and check the body, call the model's `method` in a worker thread."""

        async def handler(request):
            if admitted[0] >= max_queue:  # answer at once rather than queue without bound
                return _error(f"busy: {max_queue} requests are already waiting or being sampled; try again in "
                              f"{RETRY_AFTER_S} s", 503, headers={"Retry-After": str(RETRY_AFTER_S)})
            admitted[0] += 1
            try:
                args = check(R.parse_body(await _read_body(request)))
                model = model_named(args.pop("model"))
                if batcher is not None and method in BATCHED and model.packable:
                    sketches = await batcher.run(model, _Job(method, args, request))
                    if isinstance(sketches, Exception):
                        raise sketches
                else:
                    async with limiter:  # wait for a free worker
                        if await request.is_disconnected():  # the page gave up (a newer stroke): skip the work
                            sketches = GONE
                        else:
                            sketches = await anyio.to_thread.run_sync(
                                functools.partial(getattr(model, method), **args))
                if sketches is GONE:
                    return Response(status_code=499)
            except R.RequestError as err:
                return _error(str(err), err.status, err.field)
            except ModelError as err:
                return _error(str(err), 400, err.field)
            except ValueError as err:  # the sample API's own checks (e.g. a drawing too long for the model)
                return _error(f"request: {err}", 400, "request")
            finally:
                admitted[0] -= 1
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
    app.state.admitted = admitted  # [requests waiting or being sampled now]
    return app
