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
from daemon.console.guard import LOOPBACK, allowed_hosts, host_refused, local_path, same_token
from daemon.console.hub import Hub
from daemon.console.settings import ConsoleServerSettings
from daemon.errors import BadRequest, ConsoleError, JobError, RegistryError
from daemon.recipes.recipe import RecipeError
from daemon.wire.clients import connect, connect_async

STATIC = Path(__file__).parent / "static"
COOKIE = "rlr_console"
HEADERS = [(b"content-security-policy", b"default-src 'self'; img-src 'self' data:; "
            b"script-src 'self'; style-src 'self'; frame-ancestors 'none'; form-action 'self'"),
           (b"x-content-type-options", b"nosniff"), (b"x-frame-options", b"DENY"),
           (b"referrer-policy", b"same-origin")]


class Guard:
    """ASGI middleware: the Host allow-list (`daemon.console.guard`), the token on every
    request where reading needs it, and the security headers on every response."""

    def __init__(self, app, token: str | None, read_needs_token: bool,
                 hosts: frozenset[str] | None = None) -> None:
        self.app, self.token, self.read_needs_token = app, token, read_needs_token
        self.hosts = hosts

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *HEADERS]}
            await send(message)

        request = Request(scope)
        refused = host_refused(request.headers.get("host"), self.hosts)
        if refused is not None:
            response = PlainTextResponse(refused[1], refused[0])
            return await response(scope, receive, send_with_headers)
        if self.read_needs_token:
            given = request.query_params.get("token")
            if given is not None and same_token(given, self.token):
                response = RedirectResponse(local_path(request.url.path), 303)
                response.set_cookie(COOKIE, self.token, httponly=True, samesite="strict")
                return await response(scope, receive, send_with_headers)
            if not token_ok(request, self.token, cookie=True):
                response = PlainTextResponse(
                    "this console needs its token: open it once as /?token=<RLR_CONSOLE_TOKEN>",
                    401)
                return await response(scope, receive, send_with_headers)
        await self.app(scope, receive, send_with_headers)


def token_ok(request: Request, token: str | None, cookie: bool) -> bool:
    given = request.headers.get("x-rlr-token") or (request.cookies.get(COOKIE) if cookie else "")
    return same_token(given, token)


class Console:
    """The console's state (its lines, token and Redis clients, the hub) and its handlers;
    `routes` maps each path to one of them."""

    def __init__(self, settings: ConsoleServerSettings, token: str | None) -> None:
        self.settings, self.token = settings, token
        self.lines = list(settings.lines)
        self.state: dict = {}  # "sync", "async", "hub": set while the app runs (lifespan)

    @property
    def hub(self) -> Hub:
        return self.state["hub"]

    @property
    def sync(self) -> redis.Redis:
        return self.state["sync"]

    @contextlib.asynccontextmanager
    async def lifespan(self, app):
        state, settings = self.state, self.settings
        state["sync"] = connect(settings)
        state["async"] = connect_async(settings)
        state["hub"] = Hub(state["async"], state["sync"], self.lines, settings.group)
        task = asyncio.create_task(state["hub"].run())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
            await state["async"].aclose()
            state["sync"].close()

    def routes(self) -> list:
        return [
            Route("/", self.overview), Route("/alerts", self.alerts),
            Route("/models", self.models), Route("/workers", self.workers),
            Route("/jobs", self.jobs), Route("/events", self.events),
            Route("/thumb", self.thumb), Route("/overlay", self.overlay),
            Route("/evidence", self.evidence), Route("/api/alerts", self.alert_list),
            Route("/api/joblog", self.job_log),
            Route("/api/lines/{line}/recipe", self.recipe, methods=["GET", "POST"]),
            Route("/api/{what}", self.action, methods=["POST"]),
            Route("/healthz", healthz),
            Mount("/static", StaticFiles(directory=STATIC), name="static"),
        ]

    # ------------------------------------------------------------------------- pages

    async def overview(self, request: Request) -> Response:
        return html(pages.overview(self.lines))

    async def alerts(self, request: Request) -> Response:
        return html(pages.alerts_page(self.lines))

    async def workers(self, request: Request) -> Response:
        return html(pages.workers_page(self.lines))

    async def jobs(self, request: Request) -> Response:
        return html(pages.jobs_page(self.lines))

    async def models(self, request: Request) -> Response:
        data = await run_in_threadpool(lambda: [views.rollout(self.sync, ln)
                                                for ln in self.lines])
        return html(pages.models_page(self.lines, data))

    async def events(self, request: Request) -> Response:
        hub = self.hub
        q = hub.subscribe()

        async def stream():
            try:
                yield f"data: {json.dumps(hub.snapshot())}\n\n"
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
                hub.unsubscribe(q)

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"cache-control": "no-store",
                                          "x-accel-buffering": "no"})

    # ------------------------------------------------------------------------- pictures

    def _line(self, line: str) -> str:
        if line not in self.lines:
            raise BadRequest(f"unknown line {line!r}; this console shows {', '.join(self.lines)}")
        return line

    async def thumb(self, request: Request) -> Response:
        q = request.query_params
        cam = self.hub.camera(self._line(q.get("line", "")), q.get("camera", ""))
        if cam is None or cam.thumb is None:
            return PlainTextResponse("no picture of this camera yet", 404)
        return Response(cam.thumb[2], media_type="image/jpeg",
                        headers={"cache-control": "private, max-age=60"})

    async def overlay(self, request: Request) -> Response:
        q = request.query_params
        cam = self.hub.camera(self._line(q.get("line", "")), q.get("camera", ""))
        mask = cam.masks.get(q.get("frame", "")) if cam else None
        if mask is None:
            return PlainTextResponse("no mask for this frame", 404)
        return Response(await run_in_threadpool(views.overlay, mask), media_type="image/png",
                        headers={"cache-control": "private, max-age=600"})

    async def evidence(self, request: Request) -> Response:
        q = request.query_params
        line, aid = self._line(q.get("line", "")), q.get("alert", "")
        kind = "mask" if q.get("kind") == "mask" else "image"
        try:
            index = int(q.get("i", "0"))
        except ValueError:
            return PlainTextResponse("i must be a number", 400)
        try:
            data = await run_in_threadpool(views.evidence, self.sync, line, aid, index, kind)
        except redis.ResponseError:
            return PlainTextResponse("not an alert id", 400)
        if data is None:
            return PlainTextResponse("no such evidence", 404)
        return Response(data, media_type="image/jpeg" if kind == "image" else "image/png",
                        headers={"cache-control": "private, max-age=3600"})

    # ------------------------------------------------------------------------- API

    async def alert_list(self, request: Request) -> Response:
        line = self._line(request.query_params.get("line", ""))
        return JSONResponse(await run_in_threadpool(views.alerts, self.sync, line))

    async def job_log(self, request: Request) -> Response:
        job = request.query_params.get("job", "")
        return JSONResponse(await run_in_threadpool(views.job_log, self.sync, job))

    async def action(self, request: Request) -> Response:
        refused = refuse_action(request, self.token)
        if refused:
            return JSONResponse({"error": refused}, 403)
        try:
            body = await request.json()
            if not isinstance(body, dict):
                raise ValueError("send a JSON object")
            by = views.operator(body.get("by"))
            what = request.path_params["what"]
            if what not in ("rollout", "ack", "job"):
                return JSONResponse({"error": f"no action {what!r}"}, 404)
            out = await self._act(what, body, by)
        except (ValueError, BadRequest, RegistryError, JobError, redis.ResponseError) as exc:
            return JSONResponse({"error": str(exc)}, 400)
        return JSONResponse({"ok": True, "result": out, "by": by})

    async def recipe(self, request: Request) -> Response:
        """GET: the line's active recipe and the recipes to choose from. POST (an action:
        token, same-origin JSON) `{"name": ..., "by": ...}`: switch; a refusal is 409 with
        its one line, and the old recipe stays."""
        line = self._line(request.path_params["line"])
        if request.method == "GET":
            return JSONResponse(await run_in_threadpool(views.recipes, self.sync, line))
        refused = refuse_action(request, self.token)
        if refused:
            return JSONResponse({"error": refused}, 403)
        try:
            body = await request.json()
            if not isinstance(body, dict) or not isinstance(body.get("name"), str):
                raise ValueError('send a JSON object with the recipe\'s "name"')
            by = views.operator(body["by"]) if body.get("by") else "console"
            out = await run_in_threadpool(views.switch_recipe, self.sync, line, body["name"],
                                          by)
        except RecipeError as exc:
            return JSONResponse({"error": str(exc)}, 409)
        except (ValueError, redis.ResponseError) as exc:
            return JSONResponse({"error": str(exc)}, 400)
        self.hub.broadcast({"type": "recipe", "line": line, "active": out})
        return JSONResponse({"ok": True, "result": out, "by": by})

    async def _act(self, what: str, body: dict, by: str):
        if what == "job":
            return await run_in_threadpool(views.job_action, self.sync,
                                           str(body.get("job_id", "")), str(body.get("action")),
                                           by)
        line = self._line(str(body.get("line", "")))
        if what == "rollout":
            return await run_in_threadpool(views.rollout_action, self.sync, line,
                                           str(body.get("action")), by)
        out = await run_in_threadpool(views.acknowledge, self.sync, line,
                                      str(body.get("alert_id", "")), by)
        self.hub.broadcast({"type": "ack", "line": line, "id": body.get("alert_id"), "ack": out})
        return out


def html(body: str) -> HTMLResponse:
    return HTMLResponse(body, headers={"cache-control": "no-store"})


async def healthz(request: Request) -> Response:
    return PlainTextResponse("ok")


async def bad_request(request: Request, exc: Exception) -> Response:
    return PlainTextResponse(str(exc), 400)


def create_app(settings: ConsoleServerSettings, host: str) -> Starlette:
    token = settings.console_token.get_secret_value() if settings.console_token else None
    if host not in LOOPBACK and not token:
        raise ConsoleError(f"the console binds {host}, beyond loopback: set RLR_CONSOLE_TOKEN "
                           "(every request then needs it), or bind 127.0.0.1")
    console = Console(settings, token)
    app = Starlette(routes=console.routes(), lifespan=console.lifespan,
                    exception_handlers={BadRequest: bad_request})
    app.add_middleware(Guard, token=token, read_needs_token=host not in LOOPBACK,
                       hosts=allowed_hosts(settings.console_hosts, host))
    app.state.console = console.state
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
