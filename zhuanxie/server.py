"""The HTTP server: an OpenAI-compatible transcription API, batch jobs, operations, the Web UI.

    request ─► access log + metrics ─► body limit ─► CORS ─► API key ─► route
                                       (413 while                        │
                                        streaming)                       ▼
                                                  Service (one per model: one engine, priority
                                                  lanes, bounded) ◄── JobManager (bulk jobs)

``create_app(settings)`` builds the engines (once per device, through the CLI's builders) and
wires the routes; ``zhuanxie serve`` runs it on uvicorn. The app owns the services it is given
and closes them at shutdown, after stopping the batch jobs (which stay resumable).
"""

from __future__ import annotations

import importlib
import logging
import secrets
import shutil
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from zhuanxie import jobapi, transcriptions
from zhuanxie.batchjobs import JobManager
from zhuanxie.deps import ApiError, AppState, State, error_body, require_api_key
from zhuanxie.metrics import CONTENT_TYPE, Metrics
from zhuanxie.service import Service, ServiceOptions
from zhuanxie.settings import MIB, ServerSettings, model_id
from zhuanxie.stream_api import StreamLimits, stream_router

log = logging.getLogger("zhuanxie.server")

UI_PATH = "/ui"
# Room for the form fields around an uploaded file.
FORM_SLACK_BYTES = MIB
TMP_DIR = "tmp"


def create_app(
    settings: ServerSettings, services: Service | Mapping[str, Service] | None = None
) -> FastAPI:
    """The server's app. ``services`` (model id -> Service, or one Service for the first of
    ``settings.models``) are built from ``settings`` when not given."""
    if services is None:
        services = build_services(settings)
    elif isinstance(services, Service):
        services = {model_id(settings.models[0]): services}
    services = dict(services)
    state = AppState(settings, services, JobManager(services, settings), Metrics(services))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        tmp = settings.data_dir / TMP_DIR
        shutil.rmtree(tmp, ignore_errors=True)  # uploads a killed server left behind
        tmp.mkdir(parents=True, exist_ok=True)
        resumed = state.jobs.start()
        state.ready = True
        log.info("ready", extra={"models": state.models, "jobs_resumed": len(resumed)})
        try:
            yield
        finally:
            state.ready = False
            state.jobs.close()
            for service in services.values():
                service.close()
            log.info("stopped")

    app = FastAPI(
        title="zhuanxie",
        summary="Offline Mandarin speech recognition: an OpenAI-compatible API and batch jobs.",
        lifespan=lifespan,
    )
    app.state.zhuanxie = state
    add_error_handlers(app)
    # The last added runs first: the access log sees every request, CORS headers go on every
    # answer (a 413 included), and the body limit runs before any route reads the body.
    app.add_middleware(BodyLimit, settings=settings)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["*"],
            allow_headers=["*"],
            expose_headers=["Retry-After"],
        )
    app.add_middleware(AccessLog, metrics=state.metrics)
    app.include_router(operations)
    protected = [Depends(require_api_key)]
    app.include_router(metrics_router, dependencies=protected)
    app.include_router(transcriptions.router, dependencies=protected)
    app.include_router(jobapi.router, dependencies=protected)
    # Live recognition (zhuanxie.stream_api): /v1/stream, and FunASR's runtime protocol at
    # /funasr and /. WebSockets check the API key themselves (header or ?api_key=): browsers
    # cannot set headers on them.
    app.include_router(stream_router_for(state))
    if settings.ui:
        mount_ui(app, state)
    return app


def stream_router_for(state: AppState) -> APIRouter:
    """The live-recognition WebSockets on the app's services, within its interactive limits:
    each live session holds up to one interim and its finals in that lane."""
    settings = state.settings
    limits = StreamLimits(
        max_sessions=max(1, settings.max_interactive // 2),
        max_session_s=settings.max_audio_seconds,
    )
    key = settings.api_key.get_secret_value() if settings.api_key is not None else None
    return stream_router(
        lambda model: state.services[state.resolve_model(model)], limits, api_key=key
    )


def build_services(settings: ServerSettings) -> dict[str, Service]:
    """One engine per served model (on every device of ``settings.device``), each behind a
    Service with the settings' admission limits."""
    import torch

    from zhuanxie.cli import build_engine, build_postprocessor
    from zhuanxie.hub import resolve_model

    if settings.threads is not None:
        torch.set_num_threads(settings.threads)
    postprocessor = build_postprocessor(settings.punc_model, settings.itn)
    vad = ("fsmn" if settings.vad_model else "silero") if settings.vad else "none"
    options = ServiceOptions(max_urgent=settings.max_interactive, max_bulk=settings.max_bulk)
    services = {}
    for spec in settings.models:
        whisper = (resolve_model(spec) / "model.bin").is_file()  # Whisper writes its own text
        engine = build_engine(
            spec,
            settings.device,
            settings.dtype,
            vad,
            settings.max_segment,
            None,
            None if whisper else postprocessor,
            settings.vad_model,
        )
        services[model_id(spec)] = Service(engine, options)
    return services


operations = APIRouter(tags=["operations"])
metrics_router = APIRouter(tags=["operations"])


@operations.get("/health")
def health() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok"}


@operations.get("/ready")
def ready(state: State) -> JSONResponse:
    """Readiness: models loaded, services open, batch jobs resumed."""
    if not state.ready:
        return JSONResponse({"status": "starting or stopping"}, status_code=503)
    return JSONResponse({"status": "ready", "models": state.models})


@metrics_router.get("/metrics")
def metrics(state: State) -> Response:
    """Prometheus metrics."""
    return Response(state.metrics.render(), media_type=CONTENT_TYPE)


def add_error_handlers(app: FastAPI) -> None:
    """Every error leaves in OpenAI's shape, with its status and headers."""

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        if isinstance(exc, ApiError):
            body = error_body(exc.status_code, exc.message, exc.param, exc.code)
        else:
            body = error_body(exc.status_code, str(exc.detail))
        return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)

    async def validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        where = [str(part) for part in first.get("loc", ()) if part not in ("body", "query")]
        param = where[0] if where else None
        message = f"{param}: {first['msg']}" if param else str(first["msg"])
        return JSONResponse(error_body(400, message, param), status_code=400)

    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", extra={"path": request.url.path})
        return JSONResponse(error_body(500, f"internal error: {type(exc).__name__}"), 500)

    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(Exception, unexpected)


class BodyTooLargeError(ApiError):
    def __init__(self, limit: int) -> None:
        super().__init__(
            413,
            f"request body larger than the server's limit of {limit / MIB:g} MiB",
            code="file_too_large",
        )


class BodyLimit:
    """Refuse request bodies over the route's limit: at once when Content-Length says so, else
    as soon as the streamed body passes it (nothing beyond the limit is read or stored)."""

    def __init__(self, app: ASGIApp, settings: ServerSettings) -> None:
        self.app = app
        self.settings = settings

    def limit(self, scope: Scope) -> int:
        path: str = scope["path"]
        if path == "/v1/audio/transcriptions":
            return self.settings.max_upload_bytes + FORM_SLACK_BYTES
        if path == "/v1/jobs" or path.startswith(UI_PATH):
            return self.settings.max_job_upload_bytes + FORM_SLACK_BYTES
        return FORM_SLACK_BYTES

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit(scope)
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > limit:
            await _send_error(send, BodyTooLargeError(limit))
            return
        received = 0
        started = False

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLargeError(limit)
            return message

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, tracked)
        except BodyTooLargeError as exc:  # raised where no exception handler caught it
            if started:
                raise
            await _send_error(send, exc)


async def _send_error(send: Send, exc: ApiError) -> None:
    body = JSONResponse(error_body(exc.status_code, exc.message, exc.param, exc.code)).body
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    # The rest of the body is not read: tell the client this connection is done.
    headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": exc.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class AccessLog:
    """One structured log line and the metrics per request."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # unless a response starts

        async def tracked(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        finally:
            seconds = time.perf_counter() - started
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            self.metrics.observe(route, scope["method"], status, seconds)
            client = scope.get("client")
            fields: dict[str, Any] = {
                "method": scope["method"],
                "path": scope["path"],
                "route": route,
                "status": status,
                "ms": round(seconds * 1000, 1),
                "client": client[0] if client else None,
            }
            fields |= scope.get("zhuanxie.log", {})
            log.info("request", extra=fields)


def mount_ui(app: FastAPI, state: AppState) -> None:
    """Mount the Gradio Web UI (``zhuanxie.webui.build_ui``) at /ui; with an API key, the UI
    asks for it as its password. Without Gradio or the UI module, the API runs alone."""
    try:
        import gradio

        # Imported by name: the UI is optional, and its module may be absent from an install.
        webui = importlib.import_module("zhuanxie.webui")
    except ImportError as e:
        log.warning("the Web UI is not mounted: %s", e)
        return
    blocks = webui.build_ui(state)
    key = state.settings.api_key
    auth = None
    if key is not None:

        def auth(_user: str, password: str) -> bool:
            return secrets.compare_digest(password.encode(), key.get_secret_value().encode())

    gradio.mount_gradio_app(
        app, blocks, path=UI_PATH, auth=auth, max_file_size=state.settings.max_upload_bytes
    )
