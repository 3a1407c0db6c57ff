"""OpenAI's ``POST /v1/audio/transcriptions`` and ``GET /v1/models``, served by our engines.

Fields as OpenAI defines them: ``file``, ``model`` (any value; one naming a served model picks
it, anything else, e.g. ``whisper-1``, means the default model), ``language``, ``prompt``,
``response_format`` (json, text, srt, vtt, verbose_json), ``temperature`` and
``timestamp_granularities[]`` (segment, word). Extensions, as extra form fields: ``hotwords``
(comma- or newline-separated; SeACo models), and ``punc``, ``itn``, ``vad`` (booleans; default:
what the server loaded).

What differs from OpenAI, on purpose:
- ``prompt`` is accepted and not used: Paraformer has no text prompt (use ``hotwords``).
- ``temperature`` is accepted; decoding is greedy (non-autoregressive), reported as 0.
- ``language``: a Paraformer model transcribes Mandarin, so only ``zh`` (or ``chinese``) is
  accepted; a Whisper model started with ``--language`` accepts that language; one that
  detects the language accepts any and still detects it.
- verbose_json segments are the VAD segments. ``tokens`` are the model's token ids; ``seek`` is
  the start in 10 ms frames; ``compression_ratio`` is Whisper's (text bytes / zlib-compressed
  bytes); ``avg_logprob`` and ``no_speech_prob`` are not computed and are reported as 0.0 (the
  VAD already dropped non-speech), so clients' "failed segment" filters keep every segment.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import uuid
import zlib
from concurrent.futures import Future
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel

from zhuanxie.audio import SAMPLE_RATE, AudioError, audio_info, stream_audio
from zhuanxie.deps import ApiError, AppState, State
from zhuanxie.engine import AudioInput, InputResult
from zhuanxie.result import Transcript
from zhuanxie.service import OverloadedError, Service
from zhuanxie.uploads import UploadTooLargeError, sanitize_filename, save_upload
from zhuanxie.writers import to_srt, to_vtt

log = logging.getLogger("zhuanxie.server")

router = APIRouter(tags=["openai"])

RESPONSE_FORMATS = ("json", "text", "srt", "vtt", "verbose_json")
GRANULARITIES = ("segment", "word")
# How often a waiting request checks whether its client is still there.
DISCONNECT_POLL_S = 0.25
# Whisper's language names (what OpenAI's verbose_json reports), for the languages one is
# likely to meet here; other codes are reported as they are.
LANGUAGE_NAMES = {
    "zh": "chinese",
    "en": "english",
    "yue": "cantonese",
    "ja": "japanese",
    "ko": "korean",
    "de": "german",
    "fr": "french",
    "es": "spanish",
    "ru": "russian",
    "pt": "portuguese",
    "it": "italian",
    "vi": "vietnamese",
    "th": "thai",
    "id": "indonesian",
    "ms": "malay",
    "ar": "arabic",
    "hi": "hindi",
}
_LANGUAGE_CODES = {name: code for code, name in LANGUAGE_NAMES.items()} | {"mandarin": "zh"}


class ModelCard(BaseModel):
    id: str
    object: str = "model"
    created: int = 0
    owned_by: str = "zhuanxie"


class ModelList(BaseModel):
    object: str = "list"
    data: list[ModelCard]


class Usage(BaseModel):
    type: str = "duration"
    seconds: float


class TranscriptionJson(BaseModel):
    text: str
    usage: Usage


class VerboseSegment(BaseModel):
    id: int
    seek: int
    start: float
    end: float
    text: str
    tokens: list[int]
    temperature: float
    avg_logprob: float
    compression_ratio: float
    no_speech_prob: float


class VerboseWord(BaseModel):
    word: str
    start: float
    end: float


class TranscriptionVerbose(BaseModel):
    task: str = "transcribe"
    language: str
    duration: float
    text: str
    segments: list[VerboseSegment] | None = None
    words: list[VerboseWord] | None = None
    usage: Usage


@router.get("/v1/models")
def list_models(state: State) -> ModelList:
    """The served models, in OpenAI's list shape."""
    return ModelList(data=[ModelCard(id=name) for name in state.models])


@router.post("/v1/audio/transcriptions", response_model=None)
async def create_transcription(
    request: Request,
    state: State,
    file: Annotated[UploadFile, File(description="The audio (any format FFmpeg reads).")],
    model: Annotated[str | None, Form(description="A served model's id; else the default.")] = None,
    language: Annotated[str | None, Form()] = None,
    prompt: Annotated[str | None, Form(description="Accepted, not used (see hotwords).")] = None,
    response_format: Annotated[str, Form()] = "json",
    temperature: Annotated[float, Form(ge=0, le=1)] = 0.0,
    granularities: Annotated[list[str] | None, Form(alias="timestamp_granularities[]")] = None,
    granularities_plain: Annotated[list[str] | None, Form(alias="timestamp_granularities")] = None,
    hotwords: Annotated[str | None, Form(description="Comma- or newline-separated.")] = None,
    punc: Annotated[bool | None, Form(description="Add punctuation.")] = None,
    itn: Annotated[bool | None, Form(description="Numbers and dates as digits.")] = None,
    vad: Annotated[bool | None, Form(description="Split at pauses.")] = None,
    stream: Annotated[bool, Form()] = False,
) -> Response:
    """Transcribe one file (OpenAI-compatible); see the module docstring for the fields."""
    name = sanitize_filename(file.filename)
    model_name = state.resolve_model(model)
    service = state.services[model_name]
    wanted = [*(granularities or []), *(granularities_plain or [])]
    check_format(response_format, wanted, stream)
    check_language(language, service)
    spec_options = input_options(service, hotwords, punc, itn, vad)
    request.scope["zhuanxie.log"] = {"model": model_name, "file": name}
    temp = state.settings.data_dir / "tmp" / f"{uuid.uuid4().hex}-{name}"
    try:
        await save(file, temp, state.settings.max_upload_bytes, name)
        seconds = await run_in_threadpool(check_audio, temp, name, state.settings.max_audio_seconds)
        spec = AudioInput(temp, name=name, priority=1, **spec_options)
        result = await transcribe(request, state, service, spec)
    except ClientGoneError:
        return Response(status_code=499)  # nginx's "client closed request"; nobody reads it
    finally:
        temp.unlink(missing_ok=True)
    transcript = result.transcript
    assert transcript is not None
    request.scope["zhuanxie.log"] |= {"audio_s": round(seconds, 2)}
    return render(transcript, response_format, wanted)


def check_format(response_format: str, granularities: list[str], stream: bool) -> None:
    if response_format not in RESPONSE_FORMATS:
        raise ApiError(
            400,
            f"response_format {response_format!r} is not one of {', '.join(RESPONSE_FORMATS)}",
            param="response_format",
        )
    unknown = [g for g in granularities if g not in GRANULARITIES]
    if unknown:
        raise ApiError(
            400,
            f"timestamp_granularities {unknown} must be 'segment' or 'word'",
            param="timestamp_granularities",
        )
    if "word" in granularities and response_format != "verbose_json":
        raise ApiError(
            400,
            "word timestamps need response_format verbose_json",
            param="timestamp_granularities",
        )
    if stream:
        raise ApiError(400, "stream=true is not supported by this endpoint", param="stream")


def check_language(language: str | None, service: Service) -> None:
    """Refuse a language the model cannot transcribe (see the module docstring)."""
    if not language:
        return
    code = language.strip().lower()
    code = _LANGUAGE_CODES.get(code, code.replace("_", "-").split("-")[0])
    backend = service.engine.backend
    # A Whisper backend has `language` (None: it detects); Paraformer models are Mandarin.
    fixed: str | None = getattr(backend, "language", "zh")
    if fixed is not None and code != fixed:
        raise ApiError(
            400,
            f"language {language!r}: this model transcribes {LANGUAGE_NAMES.get(fixed, fixed)}"
            f" ({fixed}) only",
            param="language",
            code="unsupported_language",
        )


def input_options(
    service: Service, hotwords: str | None, punc: bool | None, itn: bool | None, vad: bool | None
) -> dict[str, Any]:
    """The AudioInput fields of a request, checked against what the engine has loaded."""
    engine = service.engine
    post = engine.postprocessor
    phrases = parse_hotwords(hotwords)
    if phrases and not engine.backend.supports_hotwords:
        raise ApiError(
            400, "hotwords need a SeACo-Paraformer model; this one takes none", param="hotwords"
        )
    available = {
        "punc": post is not None and post.punctuator is not None,
        "itn": post is not None and post.itn is not None,
        "vad": engine.vad is not None,
    }
    for field, asked in (("punc", punc), ("itn", itn), ("vad", vad)):
        if asked and not available[field]:
            raise ApiError(
                400,
                f"{field}=true: the server was started without it (see `zhuanxie serve --help`)",
                param=field,
            )
    return {
        "hotwords": phrases,
        "punctuation": available["punc"] if punc is None else punc,
        "itn": available["itn"] if itn is None else itn,
        "vad": available["vad"] if vad is None else vad,
    }


def parse_hotwords(text: str | None) -> tuple[str, ...]:
    """Hotwords separated by commas (ASCII or full-width) or newlines, without duplicates."""
    parts = re.split(r"[,，\n\r]", text or "")
    return tuple(dict.fromkeys(p.strip() for p in parts if p.strip()))


async def save(file: UploadFile, target: Path, limit: int, name: str) -> None:
    try:
        await run_in_threadpool(save_upload, file.file, target, limit, name)
    except UploadTooLargeError as e:
        raise ApiError(413, str(e), param="file", code="file_too_large") from e


def check_audio(path: Path, name: str, limit: float) -> float:
    """The audio's length in seconds; 400 if it cannot be read or is longer than ``limit``."""
    try:
        seconds = audio_info(path).duration_s
        if seconds is None:  # the header does not say: count, stopping past the limit
            samples = 0
            for chunk in stream_audio(path):
                samples += len(chunk)
                if samples > limit * SAMPLE_RATE:
                    break
            seconds = samples / SAMPLE_RATE
    except AudioError as e:
        raise ApiError(400, _named(str(e), path, name), param="file", code="invalid_audio") from e
    if seconds > limit:
        raise ApiError(
            400,
            f"{name}: {seconds:.0f} s of audio is longer than the server's limit of {limit:.0f} s",
            param="file",
            code="audio_too_long",
        )
    return seconds


async def transcribe(
    request: Request, state: AppState, service: Service, spec: AudioInput
) -> InputResult:
    """Submit the input as interactive work and wait for it; the work is cancelled if the
    client goes away or the request times out."""
    name = spec.label
    try:
        future = service.submit(spec)
    except OverloadedError as e:
        raise ApiError(
            429,
            f"the server is busy ({e}); retry after {math.ceil(e.retry_after)} s",
            code="rate_limit_exceeded",
            headers={"Retry-After": str(math.ceil(e.retry_after))},
        ) from e
    except RuntimeError as e:  # the service has closed: the server is stopping
        raise unavailable(str(e)) from e
    try:
        result = await wait_for(request, future, state.settings.request_timeout)
    except TimeoutError:
        service.cancel(future)
        state.metrics.cancelled.labels("timeout").inc()
        raise ApiError(
            504,
            f"{name}: not transcribed within the server's {state.settings.request_timeout:g} s"
            " limit; the work was cancelled",
            code="timeout",
        ) from None
    except ClientGoneError:
        service.cancel(future)
        state.metrics.cancelled.labels("disconnect").inc()
        raise
    except BaseException:  # cancelled by the server's shutdown
        service.cancel(future)
        raise
    if result.transcript is None:
        raise result_error(name, result, Path(str(spec.source)))
    return result


class ClientGoneError(Exception):
    """The client disconnected before its answer was ready."""


async def wait_for(request: Request, future: Future[InputResult], timeout: float) -> InputResult:
    waiter = asyncio.wrap_future(future)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    try:
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError
            done, _ = await asyncio.wait({waiter}, timeout=min(DISCONNECT_POLL_S, remaining))
            if done:
                return waiter.result()
            if await request.is_disconnected():
                raise ClientGoneError
    finally:
        if not waiter.done():
            waiter.cancel()


def result_error(name: str, result: InputResult, temp: Path) -> ApiError:
    """The HTTP error for an input the engine could not transcribe, by the failure's cause."""
    error = result.error or "unknown error"
    message = _named(error, temp, name)
    if result.cause == "closed":
        return unavailable(f"{name}: {error}")
    if result.cause == "cancelled":
        return ApiError(503, f"{name}: cancelled", code="cancelled")
    if result.cause == "memory":
        return unavailable(f"{name}: {message}")
    if result.cause == "internal":
        return ApiError(500, f"{name}: transcription failed: {message}", code="internal_error")
    if not message.startswith(name):
        message = f"{name}: {message}"
    return ApiError(400, message, param="file", code="invalid_audio")


def unavailable(message: str) -> ApiError:
    return ApiError(503, message, code="unavailable", headers={"Retry-After": "5"})


def _named(message: str, temp: Path, name: str) -> str:
    """``message`` with the temporary file's path replaced by the client's file name."""
    return message.replace(str(temp), name)


def render(transcript: Transcript, response_format: str, granularities: list[str]) -> Response:
    usage = Usage(seconds=round(transcript.duration, 3))
    if response_format == "text":
        return PlainTextResponse(transcript.text + "\n")
    if response_format == "srt":
        return PlainTextResponse(
            to_srt(transcript), media_type="application/x-subrip; charset=utf-8"
        )
    if response_format == "vtt":
        return PlainTextResponse(to_vtt(transcript), media_type="text/vtt")
    if response_format == "json":
        return JSONResponse(TranscriptionJson(text=transcript.text, usage=usage).model_dump())
    return JSONResponse(verbose(transcript, granularities, usage).model_dump(exclude_none=True))


def verbose(transcript: Transcript, granularities: list[str], usage: Usage) -> TranscriptionVerbose:
    """OpenAI's verbose_json: segments unless only words were asked for, words if asked."""
    segments = None
    if not granularities or "segment" in granularities:
        segments = [
            VerboseSegment(
                id=i,
                seek=round(s.start * 100),
                start=round(s.start, 3),
                end=round(s.end, 3),
                text=s.text,
                tokens=list(s.token_ids),
                temperature=0.0,
                avg_logprob=0.0,
                compression_ratio=compression_ratio(s.text),
                no_speech_prob=0.0,
            )
            for i, s in enumerate(transcript.segments)
        ]
    words = None
    if "word" in granularities:
        words = [
            VerboseWord(word=t.text, start=round(t.start, 3), end=round(t.end, 3))
            for t in transcript.tokens
        ]
    return TranscriptionVerbose(
        language=LANGUAGE_NAMES.get(transcript.language, transcript.language),
        duration=round(transcript.duration, 3),
        text=transcript.text,
        segments=segments,
        words=words,
        usage=usage,
    )


def compression_ratio(text: str) -> float:
    """Whisper's measure of repetition: UTF-8 bytes over zlib-compressed bytes."""
    data = text.encode("utf-8")
    return round(len(data) / len(zlib.compress(data)), 4) if data else 0.0
