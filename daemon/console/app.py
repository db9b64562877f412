"""The console's ASGI app (Starlette) and its server (uvicorn).

Security: reading needs no login on loopback; bound to any other address, every request
needs the token (`RLR_CONSOLE_TOKEN`: header `X-RLR-Token`, or once as `?token=` which sets
a same-site, HTTP-only cookie). Actions that change state always need the token in the
`X-RLR-Token` header of a JSON POST: a form on another site can send neither the header nor a
JSON body without a CORS preflight, which this app never grants; a cross-site `Origin` or
`Sec-Fetch-Site` is refused as well. Every page is served with a strict Content Security
Policy (scripts only from /static), so even a value that slipped through escaping could not run.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
from pathlib import Path
from urllib.parse import urlsplit

import redis
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from daemon.console import pages, views
from daemon.console.hub import Hub
from daemon.console.settings import ConsoleServerSettings
from daemon.errors import BadRequest, ConsoleError, JobError, RegistryError
from daemon.wire.clients import connect, connect_async

STATIC = Path(__file__).parent / "static"
LOOPBACK = ("127.0.0.1", "::1", "localhost")
COOKIE = "rlr_console"
HEADERS = [(b"content-security-policy", b"default-src 'self'; img-src 'self' data:; "
            b"script-src 'self'; style-src 'self'; frame-ancestors 'none'; form-action 'self'"),
           (b"x-content-type-options", b"nosniff"), (b"x-frame-options", b"DENY"),
           (b"referrer-policy", b"same-origin")]


class Guard:
    """ASGI middleware: the token on every request where reading needs it, and the security
    headers on every response."""

    def __init__(self, app, token: str | None, read_needs_token: bool) -> None:
        self.app, self.token, self.read_needs_token = app, token, read_needs_token

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *HEADERS]}
            await send(message)

        if self.read_needs_token:
            request = Request(scope)
            given = request.query_params.get("token")
            if given is not None and self.token and hmac.compare_digest(given, self.token):
                response = RedirectResponse(request.url.path, 303)
                response.set_cookie(COOKIE, self.token, httponly=True, samesite="strict")
                return await response(scope, receive, send_with_headers)
            if not token_ok(request, self.token, cookie=True):
                response = PlainTextResponse(
                    "this console needs its token: open it once as /?token=<RLR_CONSOLE_TOKEN>",
                    401)
                return await response(scope, receive, send_with_headers)
        await self.app(scope, receive, send_with_headers)


def token_ok(request: Request, token: str | None, cookie: bool) -> bool:
    if not token:
        return False
    given = request.headers.get("x-rlr-token") or (request.cookies.get(COOKIE) if cookie else "")
    return bool(given) and hmac.compare_digest(given, token)


def create_app(settings: ConsoleServerSettings, host: str) -> Starlette:
    token = settings.console_token.get_secret_value() if settings.console_token else None
    if host not in LOOPBACK and not token:
        raise ConsoleError(f"the console binds {host}, beyond loopback: set RLR_CONSOLE_TOKEN "
                           "(every request then needs it), or bind 127.0.0.1")
    lines = list(settings.lines)
    state: dict = {}

    @contextlib.asynccontextmanager
    async def lifespan(app):
        state["sync"] = connect(settings)
        state["async"] = connect_async(settings)
        state["hub"] = Hub(state["async"], state["sync"], lines, settings.group)
        task = asyncio.create_task(state["hub"].run())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
            await state["async"].aclose()
            state["sync"].close()

    def hub() -> Hub:
        return state["hub"]

    def html(body: str) -> HTMLResponse:
        return HTMLResponse(body, headers={"cache-control": "no-store"})

    async def overview(request: Request) -> Response:
        return html(pages.overview(lines))

    async def alerts(request: Request) -> Response:
        return html(pages.alerts_page(lines))

    async def workers(request: Request) -> Response:
        return html(pages.workers_page(lines))

    async def jobs(request: Request) -> Response:
        return html(pages.jobs_page(lines))

    async def models(request: Request) -> Response:
        data = await run_in_threadpool(lambda: [views.rollout(state["sync"], ln) for ln in lines])
        return html(pages.models_page(lines, data))

    async def events(request: Request) -> Response:
        q = hub().subscribe()

        async def stream():
            try:
                yield f"data: {json.dumps(hub().snapshot())}\n\n"
                while True:
                    try:
                        item = await asyncio.wait_for(q.get(), 15.0)
                    except asyncio.TimeoutError:
                        yield ": keep-alive\n\n"
                        continue
                    if item is None:  # fell behind: the browser reconnects for a snapshot
                        return
                    yield f"data: {item}\n\n"
            finally:
                hub().unsubscribe(q)

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"cache-control": "no-store",
                                          "x-accel-buffering": "no"})

    def _line(request: Request) -> str:
        line = request.query_params.get("line", "")
        if line not in lines:
            raise BadRequest(f"unknown line {line!r}; this console shows {', '.join(lines)}")
        return line

    async def thumb(request: Request) -> Response:
        cam = hub().camera(_line(request), request.query_params.get("camera", ""))
        if cam is None or cam.thumb is None:
            return PlainTextResponse("no picture of this camera yet", 404)
        return Response(cam.thumb[2], media_type="image/jpeg",
                        headers={"cache-control": "private, max-age=60"})

    async def overlay(request: Request) -> Response:
        cam = hub().camera(_line(request), request.query_params.get("camera", ""))
        mask = cam.masks.get(request.query_params.get("frame", "")) if cam else None
        if mask is None:
            return PlainTextResponse("no mask for this frame", 404)
        return Response(await run_in_threadpool(views.overlay, mask), media_type="image/png",
                        headers={"cache-control": "private, max-age=600"})

    async def evidence(request: Request) -> Response:
        line, aid = _line(request), request.query_params.get("alert", "")
        kind = "mask" if request.query_params.get("kind") == "mask" else "image"
        try:
            index = int(request.query_params.get("i", "0"))
        except ValueError:
            return PlainTextResponse("i must be a number", 400)
        try:
            data = await run_in_threadpool(views.evidence, state["sync"], line, aid, index, kind)
        except redis.ResponseError:
            return PlainTextResponse("not an alert id", 400)
        if data is None:
            return PlainTextResponse("no such evidence", 404)
        return Response(data, media_type="image/jpeg" if kind == "image" else "image/png",
                        headers={"cache-control": "private, max-age=3600"})

    async def alert_list(request: Request) -> Response:
        line = _line(request)
        return JSONResponse(await run_in_threadpool(views.alerts, state["sync"], line))

    async def job_log(request: Request) -> Response:
        job = request.query_params.get("job", "")
        return JSONResponse(await run_in_threadpool(views.job_log, state["sync"], job))

    def _body_line(body: dict) -> str:
        line = str(body.get("line", ""))
        if line not in lines:
            raise BadRequest(f"unknown line {line!r}; this console shows {', '.join(lines)}")
        return line

    async def action(request: Request) -> Response:
        refused = refuse_action(request, token)
        if refused:
            return JSONResponse({"error": refused}, 403)
        try:
            body = await request.json()
            if not isinstance(body, dict):
                raise ValueError("send a JSON object")
            by = views.operator(body.get("by"))
            what = request.path_params["what"]
            if what == "rollout":
                line = _body_line(body)
                out = await run_in_threadpool(views.rollout_action, state["sync"], line,
                                              str(body.get("action")), by)
            elif what == "ack":
                line = _body_line(body)
                out = await run_in_threadpool(views.acknowledge, state["sync"], line,
                                              str(body.get("alert_id", "")), by)
                hub().broadcast({"type": "ack", "line": line, "id": body.get("alert_id"),
                             "ack": out})
            elif what == "job":
                out = await run_in_threadpool(views.job_action, state["sync"],
                                              str(body.get("job_id", "")),
                                              str(body.get("action")), by)
            else:
                return JSONResponse({"error": f"no action {what!r}"}, 404)
        except (ValueError, BadRequest, RegistryError, JobError, redis.ResponseError) as exc:
            return JSONResponse({"error": str(exc)}, 400)
        return JSONResponse({"ok": True, "result": out, "by": by})

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok")

    async def bad_request(request: Request, exc: Exception) -> Response:
        return PlainTextResponse(str(exc), 400)

    app = Starlette(routes=[
        Route("/", overview), Route("/alerts", alerts), Route("/models", models),
        Route("/workers", workers), Route("/jobs", jobs), Route("/events", events),
        Route("/thumb", thumb), Route("/overlay", overlay), Route("/evidence", evidence),
        Route("/api/alerts", alert_list), Route("/api/joblog", job_log),
        Route("/api/{what}", action, methods=["POST"]), Route("/healthz", healthz),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ], lifespan=lifespan, exception_handlers={BadRequest: bad_request})
    app.add_middleware(Guard, token=token, read_needs_token=host not in LOOPBACK)
    app.state.console = state
    return app


def refuse_action(request: Request, token: str | None) -> str | None:
    """Why an action request is refused, or None when it may go ahead."""
    if not token:
        return ("actions are off: start the console with RLR_CONSOLE_TOKEN set, and give "
                "that token on the page")
    if not token_ok(request, token, cookie=False):
        return "wrong or missing operator token (the token field at the top of the page)"
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        return "actions are JSON POSTs"
    origin = request.headers.get("origin")
    if origin and urlsplit(origin).netloc != request.headers.get("host"):
        return f"cross-site request from {origin} refused"
    if request.headers.get("sec-fetch-site") not in (None, "same-origin", "none"):
        return "cross-site request refused"
    return None


def serve(settings: ConsoleServerSettings, host: str, port: int) -> None:
    """Run the console until interrupted."""
    import uvicorn

    app = create_app(settings, host)
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False,
                timeout_graceful_shutdown=2)
