"""WebSocket endpoints for live recognition: zhuanxie's own protocol at ``/v1/stream`` and
FunASR's runtime protocol (``funasr_ws``) at ``/funasr`` (and ``/``, where FunASR's clients
connect by default).

``/v1/stream`` (documented in docs/streaming.md):

    client                                              server
    {"sample_rate":16000, "format":"pcm_s16le", ...} ─►
                                                     ◄─ {"type":"ready", ...}
    binary audio chunks (any size) ─►               ◄─ {"type":"interim", "segment":0, "text":…}
                                                     ◄─ {"type":"final", "segment":0, "text":…}
    {"type":"end"} ─►                                ◄─ remaining finals, {"type":"done", …}, close 1000

``stream_router(service_for, limits)`` builds both; the server includes it in its app.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any, Literal

from fastapi import APIRouter, WebSocket
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from zhuanxie.funasr_ws import serve_funasr
from zhuanxie.result import Sentence, Token
from zhuanxie.service import Service
from zhuanxie.stream_hub import (
    DISCONNECTED,
    GONE,
    INVALID_DATA,
    NORMAL,
    POLICY,
    CloseError,
    StreamHub,
    StreamLimits,
    close,
    parse_json,
    relay,
)
from zhuanxie.streaming import AsyncStreamSession, Ended, Event, Final, Interim, StreamOptions
from zhuanxie.vad import SileroVad, VadOptions

STREAM_PATH = "/v1/stream"
FUNASR_PATHS = ("/funasr", "/")


class VadConfig(BaseModel):
    """Overrides of the session's VAD options (``zhuanxie.vad.VadOptions``)."""

    model_config = ConfigDict(extra="forbid")

    threshold: float | None = None
    min_silence_ms: int | None = None
    speech_pad_ms: int | None = None
    max_segment_s: float | None = None


class StreamConfig(BaseModel):
    """The first message of a ``/v1/stream`` connection."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["config"] = "config"
    sample_rate: int = 16000
    format: Literal["pcm_s16le", "f32le"] = "pcm_s16le"
    hotwords: list[str] | str = Field(default_factory=list)
    """Phrases, as a list or one string separated by commas or new lines."""
    punc: bool = True
    itn: bool = True
    interval: float | None = 0.6
    """Seconds of new audio between interim results; null: finals only."""
    model: str | None = None
    """A served model's name; the server's default when absent."""
    vad: VadConfig | None = None

    def options(self, max_session_s: float) -> StreamOptions:
        """The session's options; ValueError names a rule broken."""
        vad = VadOptions()
        if self.vad is not None:
            vad = replace(vad, **self.vad.model_dump(exclude_none=True))
        return StreamOptions(
            sample_rate=self.sample_rate,
            encoding=self.format,
            interval=self.interval,
            vad=vad,
            hotwords=split_phrases(self.hotwords),
            punctuation=self.punc,
            itn=self.itn,
            max_session_s=max_session_s,
        )


def split_phrases(hotwords: Sequence[str] | str) -> tuple[str, ...]:
    if isinstance(hotwords, str):
        hotwords = hotwords.replace("\n", ",").replace("，", ",").split(",")
    return tuple(p.strip() for p in hotwords if p.strip())


def stream_router(
    service_for: Callable[[str | None], Service],
    limits: StreamLimits | None = None,
    *,
    vad: SileroVad | None = None,
    api_key: str | None = None,
    funasr_paths: Sequence[str] = FUNASR_PATHS,
) -> APIRouter:
    """The live-recognition WebSockets: ``/v1/stream`` and the FunASR protocol at
    ``funasr_paths``.

    service_for: the service for a model name (None: the default model). api_key: when set,
    clients send ``Authorization: Bearer <key>`` or the query parameter ``?api_key=<key>``.
    Include this router before any mount at ``/`` so that its paths win.
    """
    hub = StreamHub(service_for, limits, vad=vad, api_key=api_key)
    router = APIRouter(tags=["streaming"])

    @router.websocket(STREAM_PATH)
    async def stream(ws: WebSocket) -> None:
        await serve_stream(ws, hub)

    async def funasr(ws: WebSocket) -> None:
        await serve_funasr(ws, hub)

    for path in funasr_paths:
        router.add_api_websocket_route(path, funasr, name=f"funasr{path}")
    router.hub = hub  # type: ignore[attr-defined]  # for the server's metrics and tests
    return router


async def serve_stream(ws: WebSocket, hub: StreamHub) -> None:
    """One ``/v1/stream`` connection, from admission to close."""
    if not await hub.admit(ws):
        return
    session: AsyncStreamSession | None = None
    try:
        try:
            session = await _start(ws, hub)
        except CloseError as e:
            await _refuse(ws, e)
            return
        outcome = await relay(ws, session, _read_audio(ws, hub, session), encode_event)
        if outcome is None:
            await close(ws, NORMAL, "done")
        else:
            await _refuse(ws, outcome)
    except GONE:  # the client left while we were answering
        pass
    finally:
        if session is not None:
            session.cancel()
        hub.release()


async def _refuse(ws: WebSocket, closing: CloseError) -> None:
    """Say why in an error message and in the close frame (unless the client has gone)."""
    if closing is DISCONNECTED:
        return
    with contextlib.suppress(*GONE):
        await ws.send_json({"type": "error", "message": closing.reason})
    await close(ws, closing.code, closing.reason)


async def _start(ws: WebSocket, hub: StreamHub) -> AsyncStreamSession:
    """Read the config message and open the session (``CloseError`` says what was wrong)."""
    first = await hub.receive(ws)
    if isinstance(first, bytes):
        raise CloseError(POLICY, "send the config JSON first, then audio")
    try:
        config = StreamConfig.model_validate(parse_json(first))
        options = config.options(hub.limits.max_session_s)
    except ValidationError as e:
        error = e.errors()[0]
        where = ".".join(str(part) for part in error["loc"])
        raise CloseError(POLICY, f"bad config: {where}: {error['msg']}") from None
    except (ValueError, TypeError) as e:
        raise CloseError(POLICY, f"bad config: {e}") from None
    try:
        service = hub.service_for(config.model)
        session = AsyncStreamSession(service, hub.vad, options, name=f"ws{id(ws):x}")
    except (KeyError, ValueError) as e:
        raise CloseError(POLICY, f"bad config: {e}") from None
    await ws.send_json(
        {
            "type": "ready",
            "sample_rate": options.sample_rate,
            "format": options.encoding,
            "interval": options.interval,
            "hotwords": list(session.session.hotwords),
            "max_session_s": options.max_session_s,
        }
    )
    return session


async def _read_audio(ws: WebSocket, hub: StreamHub, session: AsyncStreamSession) -> None:
    """Push binary messages until the client sends ``{"type": "end"}``."""
    while True:
        message = await hub.receive(ws)
        if isinstance(message, bytes):
            await hub.push(session, message)
            continue
        kind = parse_json(message).get("type")
        if kind == "end":
            return
        raise CloseError(INVALID_DATA, f'expected binary audio or {{"type": "end"}}, not {kind!r}')


def encode_event(event: Event) -> list[dict[str, Any]]:
    """The JSON message(s) for one event."""
    if isinstance(event, Interim):
        timed = _timed(event.segment, event.text, event.start, event.end)
        return [{"type": "interim", **timed, "tokens": _tokens(event.tokens)}]
    if isinstance(event, Final):
        message: dict[str, Any] = {
            "type": "final",
            **_timed(event.segment, event.text, event.start, event.end),
            "tokens": _tokens(event.tokens),
            "sentences": [_sentence(s) for s in event.sentences],
        }
        if event.error is not None:
            message["error"] = event.error
        return [message]
    assert isinstance(event, Ended)
    return [{"type": "done", "duration": _ms(event.duration), "segments": event.segments}]


def _timed(segment: int, text: str, start: float, end: float) -> dict[str, Any]:
    return {"segment": segment, "text": text, "start": _ms(start), "end": _ms(end)}


def _tokens(tokens: Sequence[Token]) -> list[dict[str, Any]]:
    return [{"text": t.text, "start": _ms(t.start), "end": _ms(t.end)} for t in tokens]


def _sentence(sentence: Sentence) -> dict[str, Any]:
    return {"text": sentence.text, "start": _ms(sentence.start), "end": _ms(sentence.end)}


def _ms(seconds: float) -> float:
    """Seconds rounded to the millisecond."""
    return round(seconds, 3)


__all__ = ["FUNASR_PATHS", "STREAM_PATH", "StreamConfig", "StreamLimits", "stream_router"]
