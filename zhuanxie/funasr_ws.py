"""FunASR's runtime WebSocket protocol, served by zhuanxie, so FunASR's own clients (the Python
and HTML5 demos, the C++ clients, third-party ones such as `funasr-client`) work unchanged.

The protocol is FunASR's `runtime/docs/websocket_protocol.md`; where that document is vague we
follow its real-time server (`runtime/websocket/bin/websocket-server-2pass.cpp`):

- The client sends a JSON config (`mode`: offline | online | 2pass, `wav_name`, `wav_format`,
  `audio_fs`, `chunk_size`, `hotwords`, `itn`, `is_speaking`), then binary audio, then
  `{"is_speaking": false}` (or `{"is_finished": true}`).
- Results are labelled as that server labels them, whatever the mode: `2pass-online` for live
  text, `2pass-offline` for a segment's final text. (FunASR's Python demo server says `online`
  and `offline` instead; FunASR's clients accept both, but `funasr-client` merges only
  `2pass-offline` results, so the C++ labels are the ones every client understands.)
- `2pass-online` messages carry only new text, which clients append (a streaming model never
  revises what it sent). Our interims re-decode the segment, so each one sends the part of its
  text beyond what the client already holds; the segment's `2pass-offline` message (2pass and
  offline modes) then replaces the whole. In online mode the final decode supplies the last
  `2pass-online` piece of each segment.
- Every message has `is_final: false` until the end of the audio; then one message with
  `is_final: true` (and `is_end: true`, which FunASR's newer Python client waits for) and empty
  text closes the utterance. The connection stays open for another utterance (a new config or
  more audio) until the client closes it.
- `timestamp` is a JSON string of `[[start_ms, end_ms], ...]` per token and `stamp_sents` a list of
  `{text_seg, punc, start, end, ts_list}` per sentence, on the utterance's timeline.

Deviations: `chunk_size[1]` x 60 ms sets how often interim text comes (600 ms by default), the
other `chunk_size` numbers, `chunk_interval` and the look-back settings do not apply; hotword
weights are accepted and ignored (SeACo has none); `svs_*` fields (SenseVoice) are ignored.
Audio that is not PCM (`wav_format` mp3, wav with its header, ...) is buffered and transcribed
whole when it ends (finals only), as FunASR's offline file server does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError
from starlette.websockets import WebSocket

from zhuanxie.engine import AudioInput, InputResult
from zhuanxie.result import Sentence, Token, Transcript
from zhuanxie.service import OverloadedError
from zhuanxie.stream_hub import (
    DISCONNECTED,
    GONE,
    INVALID_DATA,
    POLICY,
    SERVER_ERROR,
    TOO_BIG,
    TRY_AGAIN_LATER,
    CloseError,
    StreamHub,
    close,
    parse_json,
    relay,
)
from zhuanxie.streaming import AsyncStreamSession, Ended, Event, Final, Interim, StreamOptions

FRAME_S = 0.06  # one `chunk_size` unit: a 60 ms LFR frame of FunASR's streaming Paraformer
INTERACTIVE = 1  # priority of a buffered file's decode (an interactive request)
_PCM = (None, "", "pcm")
_TRAILING_MARKS = re.compile(r"[，。？！、,.?!；;：:]+$")


class FunasrConfig(BaseModel):
    """The config message; unknown fields are ignored, as FunASR's servers do."""

    model_config = ConfigDict(extra="ignore")

    mode: Literal["offline", "online", "2pass"] = "2pass"
    wav_name: str = "wav-default-id"
    wav_format: str | None = "pcm"
    audio_fs: int = 16000
    chunk_size: list[int] | str = [5, 10, 5]
    hotwords: str | dict[str, Any] | list[str] | None = None
    hotword: str | None = None  # FunASR's Python demo server's spelling
    itn: bool = True

    @property
    def pcm(self) -> bool:
        return self.wav_format is None or self.wav_format.lower() in _PCM

    def interval(self) -> float | None:
        """Seconds between interim results (None in offline mode)."""
        if self.mode == "offline":
            return None
        sizes = self.chunk_size
        if isinstance(sizes, str):
            sizes = [int(part) for part in sizes.split(",")]
        if len(sizes) != 3 or sizes[1] < 1:
            raise ValueError(f"chunk_size must be three numbers, the middle one >= 1: {sizes}")
        return max(sizes[1] * FRAME_S, 0.06)

    def phrases(self) -> tuple[str, ...]:
        """Hotword phrases: the keys of a {word: weight} object (or its JSON text), or words
        separated by spaces, commas or new lines."""
        value: Any = self.hotwords if self.hotwords is not None else self.hotword
        if isinstance(value, str):
            with contextlib.suppress(json.JSONDecodeError):
                value = json.loads(value)
        if isinstance(value, dict):
            return tuple(str(k).strip() for k in value if str(k).strip())
        if isinstance(value, list):
            return tuple(str(v).strip() for v in value if str(v).strip())
        if isinstance(value, str):
            return tuple(p for p in re.split(r"[\s,，]+", value) if p)
        return ()

    def options(self, base: StreamOptions) -> StreamOptions:
        return replace(
            base,
            sample_rate=self.audio_fs,
            encoding="pcm_s16le",
            interval=self.interval(),
            hotwords=self.phrases(),
            punctuation=self.mode != "online",
            itn=self.itn,
        )


def parse_config(message: dict[str, Any], previous: FunasrConfig | None) -> FunasrConfig:
    """A config message over the previous one (FunASR's servers keep settings between
    messages); ``CloseError`` (1008) on a bad field."""
    base = previous.model_dump() if previous is not None else {}
    try:
        return FunasrConfig.model_validate({**base, **message})
    except ValidationError as e:
        error = e.errors()[0]
        where = ".".join(str(part) for part in error["loc"])
        raise CloseError(POLICY, f"bad config: {where}: {error['msg']}") from None


def is_end(message: dict[str, Any]) -> bool:
    return message.get("is_speaking") is False or message.get("is_finished") is True


async def serve_funasr(ws: WebSocket, hub: StreamHub) -> None:
    """One connection: utterances (config, audio, end) until the client closes."""
    offered = ws.scope.get("subprotocols") or []
    if not await hub.admit(ws, "binary" if "binary" in offered else None):
        return
    config: FunasrConfig | None = None
    try:
        while True:
            first = await hub.receive(ws)
            audio = b""
            if isinstance(first, str):
                message = parse_json(first)
                config = parse_config(message, config)
                if is_end(message):  # an end with no audio: nothing to recognise
                    await _send(ws, Writer(config).closing())
                    continue
            else:
                audio = first
            config = config or FunasrConfig()
            if config.pcm:
                await _live(ws, hub, config, audio)
            else:
                await _buffered(ws, hub, config, audio)
    except CloseError as e:
        if e is not DISCONNECTED:
            await close(ws, e.code, e.reason)
    except GONE:  # the client left while we were answering
        pass
    finally:
        hub.release()


async def _failing(ws: WebSocket, config: FunasrConfig, closing: CloseError) -> CloseError:
    """Tell the client its utterance failed (unless it has gone); return ``closing``."""
    if closing is not DISCONNECTED:
        with contextlib.suppress(*GONE):
            await _send(ws, Writer(config).failed(closing.reason))
    return closing


async def _live(ws: WebSocket, hub: StreamHub, config: FunasrConfig, audio: bytes) -> None:
    """PCM audio through a live session, results as they come."""
    base = StreamOptions(max_session_s=hub.limits.max_session_s)
    try:
        options = config.options(base)
        service = hub.service_for(ws.query_params.get("model"))
        session = AsyncStreamSession(service, hub.vad, options, name=config.wav_name)
    except (KeyError, ValueError) as e:
        raise await _failing(ws, config, CloseError(POLICY, f"bad config: {e}")) from None
    writer = Writer(config)

    async def read() -> None:
        if audio:
            await hub.push(session, audio)
        while True:
            message = await hub.receive(ws)
            if isinstance(message, bytes):
                await hub.push(session, message)
            elif is_end(parse_json(message)):
                return
            # Other text (a repeated config) changes nothing mid-utterance.

    outcome = await relay(ws, session, read(), writer.encode)
    if outcome is not None:
        raise outcome


async def _buffered(ws: WebSocket, hub: StreamHub, config: FunasrConfig, audio: bytes) -> None:
    """An encoded file: gather it, transcribe it whole, send its segments."""
    try:
        result = await _transcribe_whole(ws, hub, config, audio)
    except CloseError as e:
        raise await _failing(ws, config, e) from None
    writer = Writer(config)
    for event in transcript_events(result):
        await _send(ws, *writer.encode(event))


async def _transcribe_whole(
    ws: WebSocket, hub: StreamHub, config: FunasrConfig, audio: bytes
) -> Transcript:
    data = bytearray(audio)
    while True:
        message = await hub.receive(ws)
        if isinstance(message, bytes):
            data += message
            if len(data) > hub.limits.max_buffered_bytes:
                raise CloseError(TOO_BIG, f"audio over {hub.limits.max_buffered_bytes} bytes")
        elif is_end(parse_json(message)):
            break
    spec = AudioInput(
        bytes(data),
        hotwords=config.phrases(),
        name=config.wav_name,
        itn=config.itn,
        priority=INTERACTIVE,
    )
    try:
        service = hub.service_for(ws.query_params.get("model"))
        future = service.submit(spec)
    except KeyError as e:
        raise CloseError(POLICY, f"bad config: {e}") from None
    except OverloadedError as e:
        raise CloseError(TRY_AGAIN_LATER, f"server busy: {e}; try again later") from None
    except RuntimeError as e:
        raise CloseError(SERVER_ERROR, str(e)) from None
    result = await _unless_gone(
        ws, hub, asyncio.wrap_future(future), lambda: service.cancel(future)
    )
    if result.transcript is None:
        raise CloseError(INVALID_DATA, f"{config.wav_name}: {result.error}")
    return result.transcript


async def _unless_gone(
    ws: WebSocket, hub: StreamHub, work: Awaitable[InputResult], cancel: Callable[[], object]
) -> InputResult:
    """Await ``work`` while watching for the client going away (then ``cancel`` it)."""
    task = asyncio.ensure_future(work)
    watch = asyncio.ensure_future(hub.receive(ws))
    try:
        await asyncio.wait({task, watch}, return_when=asyncio.FIRST_COMPLETED)
        if not task.done():
            error = watch.exception()
            if error is DISCONNECTED:
                cancel()
                raise DISCONNECTED
            return await task  # another message (or idle): finish the work first
        return task.result()
    finally:
        watch.cancel()
        with contextlib.suppress(BaseException):
            await watch


def transcript_events(transcript: Transcript) -> list[Event]:
    """A whole file's transcript as the events of a session: one final per segment."""
    events: list[Event] = []
    for index, segment in enumerate(transcript.segments):
        inside = tuple(
            s for s in transcript.sentences if segment.start <= s.start < segment.end + 1e-6
        )
        final = Final(index, segment.text, segment.start, segment.end, segment.tokens, inside)
        events.append(final)
    events.append(Ended(transcript.duration, len(transcript.segments)))
    return events


async def _send(ws: WebSocket, *messages: dict[str, Any]) -> None:
    for message in messages:
        await ws.send_text(json.dumps(message, ensure_ascii=False))


class Writer:
    """Session events as FunASR messages for one utterance."""

    def __init__(self, config: FunasrConfig) -> None:
        self.mode = config.mode
        self.wav_name = config.wav_name
        self.shown = ""  # online text the client holds for the open segment

    def encode(self, event: Event) -> list[dict[str, Any]]:
        if isinstance(event, Interim):
            return self._online(event.text)
        if isinstance(event, Final):
            if self.mode == "online":
                messages = self._online(event.text)
                self.shown = ""
                return messages
            if not event.text and not self.shown:
                return []
            self.shown = ""
            return [self._offline(event)]
        return [self.closing()]

    def closing(self) -> dict[str, Any]:
        label = "2pass-online" if self.mode == "online" else "2pass-offline"
        return {**self._message(label, ""), "is_final": True, "is_end": True}

    def failed(self, reason: str) -> dict[str, Any]:
        """The end of an utterance that could not be recognised (FunASR's Python client
        reports `error` when `is_end` comes without `is_final`)."""
        return {**self._message("2pass-offline", ""), "is_end": True, "error": reason}

    def _online(self, text: str) -> list[dict[str, Any]]:
        new = text[len(self.shown) :]
        if not new:
            return []
        self.shown += new
        return [self._message("2pass-online", new)]

    def _offline(self, final: Final) -> dict[str, Any]:
        message = self._message("2pass-offline", final.text)
        if final.tokens:
            message["timestamp"] = json.dumps([_span(t) for t in final.tokens])
        if final.sentences:
            message["stamp_sents"] = [_stamp_sentence(s) for s in final.sentences]
        return message

    def _message(self, label: str, text: str) -> dict[str, Any]:
        return {"mode": label, "wav_name": self.wav_name, "text": text, "is_final": False}


def _span(token: Token) -> list[int]:
    return [round(token.start * 1000), round(token.end * 1000)]


def _stamp_sentence(sentence: Sentence) -> dict[str, Any]:
    mark = _TRAILING_MARKS.search(sentence.text)
    return {
        "text_seg": " ".join(t.text for t in sentence.tokens),
        "punc": mark.group(0) if mark else "",
        "start": round(sentence.start * 1000),
        "end": round(sentence.end * 1000),
        "ts_list": [_span(t) for t in sentence.tokens],
    }
