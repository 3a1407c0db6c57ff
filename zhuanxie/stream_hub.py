"""What the live-recognition WebSockets share: limits, admission, and relaying a session's events.

Both protocols (``stream_api``: zhuanxie's own, ``funasr_ws``: FunASR's runtime protocol) run a
connection the same way:

    connect ─► admit (API key; a free session slot, else close 1013) ─► config ─► session
                                                                                   │
    client audio ─► reader task ─► session.push (worker thread) ──► decodes ──► events
                      │ end / idle / limit / bad input: session.end()             │
                      │ disconnect: session.cancel() (decodes in flight stop)      ▼
                      └──────────────────────────────────── relay: encode, send ─► client

Close codes (RFC 6455): 1000 after the last result; 1007 malformed audio or JSON; 1008 a
policy (bad config, idle, too long, wrong API key); 1009 a message too big; 1011 a server
fault; 1013 the server is at its session limit (try again later).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import secrets
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from zhuanxie.service import Service
from zhuanxie.streaming import AsyncStreamSession, Ended, Event, SessionLimitError
from zhuanxie.vad import SileroVad

NORMAL = 1000
INVALID_DATA = 1007
POLICY = 1008
TOO_BIG = 1009
SERVER_ERROR = 1011
TRY_AGAIN_LATER = 1013
MAX_REASON_BYTES = 123  # a close frame's reason, in UTF-8 bytes (RFC 6455 §5.5)


@dataclass(frozen=True)
class StreamLimits:
    """Bounds on live sessions, shared by both WebSocket protocols."""

    max_sessions: int = 16
    """Live connections at once; more are accepted and closed with 1013. Each session keeps at
    most one interim decode and its pending finals in the service's interactive lane, so keep
    this at about half of the service's ``max_urgent``."""
    idle_timeout_s: float = 30.0
    """Seconds without any message from the client before the session ends (finals are sent,
    then the connection closes with 1008)."""
    max_session_s: float = 4 * 3600.0
    """Audio seconds one session takes; at the limit its finals are sent and it closes (1008)."""
    max_message_bytes: int = 4 * 1024 * 1024
    """Largest single binary message (a chunk of audio); bigger ones close with 1009."""
    max_buffered_bytes: int = 200 * 1024 * 1024
    """Largest encoded file (FunASR protocol, wav_format other than pcm), buffered whole."""

    def __post_init__(self) -> None:
        if self.max_sessions < 1:
            raise ValueError(f"max_sessions must be >= 1, not {self.max_sessions}")
        for name in ("idle_timeout_s", "max_session_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number > 0, not {value!r}")
        for name in ("max_message_bytes", "max_buffered_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, not {getattr(self, name)}")


class CloseError(Exception):
    """End the connection with this close code and reason (after the session's finals)."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


DISCONNECTED = CloseError(1006, "the client went away")
# What sending raises once the client has gone (Starlette: RuntimeError after a close).
GONE = (WebSocketDisconnect, RuntimeError, OSError)


class StreamHub:
    """The services, the VAD and the session slots behind the live endpoints."""

    def __init__(
        self,
        service_for: Callable[[str | None], Service],
        limits: StreamLimits | None = None,
        *,
        vad: SileroVad | None = None,
        api_key: str | None = None,
    ) -> None:
        self.service_for = service_for
        self.limits = limits or StreamLimits()
        self.vad = vad or SileroVad()
        self.api_key = api_key
        self._lock = threading.Lock()
        self.active = 0

    async def admit(self, ws: WebSocket, subprotocol: str | None = None) -> bool:
        """Accept the connection and take a slot; False (already closed) if refused."""
        if not self._authorised(ws):
            # CloseError before accepting refuses the handshake (HTTP 403).
            await ws.close(POLICY, "missing or wrong API key: send 'Authorization: Bearer <key>'")
            return False
        await ws.accept(subprotocol=subprotocol)
        with self._lock:
            full = self.active >= self.limits.max_sessions
            if not full:
                self.active += 1
        if full:
            reason = (
                f"server busy: {self.limits.max_sessions} live streams already; try again later"
            )
            await close(ws, TRY_AGAIN_LATER, reason)
        return not full

    def release(self) -> None:
        with self._lock:
            self.active -= 1

    def _authorised(self, ws: WebSocket) -> bool:
        if self.api_key is None:
            return True
        scheme, _, token = ws.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            token = ws.query_params.get("api_key", "")
        return secrets.compare_digest(token.strip().encode(), self.api_key.encode())

    async def receive(self, ws: WebSocket) -> bytes | str:
        """The next message's payload; raises ``DISCONNECTED``, or ``CloseError`` when idle."""
        try:
            message = await asyncio.wait_for(ws.receive(), self.limits.idle_timeout_s)
        except asyncio.TimeoutError:
            raise CloseError(POLICY, f"no message for {self.limits.idle_timeout_s:g} s") from None
        if message["type"] == "websocket.disconnect":
            raise DISCONNECTED
        if message.get("bytes") is not None:
            data: bytes = message["bytes"]
            if len(data) > self.limits.max_message_bytes:
                limit = self.limits.max_message_bytes
                raise CloseError(TOO_BIG, f"a message of {len(data)} bytes; the limit is {limit}")
            return data
        text: str = message.get("text") or ""
        return text

    async def push(self, session: AsyncStreamSession, data: bytes) -> None:
        """Audio into the session; malformed audio and the length limit become ``CloseError``."""
        try:
            await session.push(data)
        except SessionLimitError as e:
            raise CloseError(POLICY, str(e)) from None
        except ValueError as e:
            raise CloseError(INVALID_DATA, f"bad audio: {e}") from None


def parse_json(text: str) -> dict[str, Any]:
    """A JSON object from a text message, or ``CloseError`` (1007) saying what is wrong."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise CloseError(INVALID_DATA, f"text messages must be JSON: {e}") from None
    if not isinstance(value, dict):
        raise CloseError(INVALID_DATA, "text messages must be JSON objects")
    return value


async def relay(
    ws: WebSocket,
    session: AsyncStreamSession,
    reader: Awaitable[CloseError | None],
    encode: Callable[[Event], list[dict[str, Any]]],
) -> CloseError | None:
    """Send the session's encoded events while ``reader`` feeds it, up to ``Ended``.

    ``reader`` pushes the client's audio and returns when the client asks to end (None) or
    raises ``CloseError`` (why it stopped); either way the session is then ended and its last
    finals are sent. If it raises ``DISCONNECTED``, the session is cancelled at once. Returns how
    the connection should close (None: normally), or ``DISCONNECTED`` if the client went away.
    """
    reading: asyncio.Task[CloseError | None] | None = asyncio.ensure_future(reader)
    outcome: CloseError | None = None
    try:
        while True:
            next_event = asyncio.ensure_future(session.next_event())
            waiting: set[asyncio.Future[Any]] = {next_event}
            if reading is not None:
                waiting.add(reading)
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            if reading is not None and reading.done():
                try:
                    outcome = reading.result()
                except CloseError as e:
                    outcome = e
                reading = None
                if outcome is DISCONNECTED:
                    next_event.cancel()
                    session.cancel()
                    return DISCONNECTED
                await session.end()  # the finals still due follow
            if not next_event.done():
                next_event.cancel()
                continue
            event = next_event.result()
            for message in encode(event):
                await ws.send_text(json.dumps(message, ensure_ascii=False))
            if isinstance(event, Ended):
                return outcome
    except GONE:
        session.cancel()
        return DISCONNECTED
    finally:
        if reading is not None:
            reading.cancel()
            with contextlib.suppress(BaseException):
                await reading
        session.cancel()  # no-op once ended; stops decodes when the relay fails


async def close(ws: WebSocket, code: int, reason: str) -> None:
    """Close with ``reason`` cut to what a close frame holds; nothing if already closed."""
    cut = reason.encode()[:MAX_REASON_BYTES].decode(errors="ignore")
    with contextlib.suppress(*GONE):
        await ws.close(code, cut)
