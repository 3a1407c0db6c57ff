"""Live recognition: audio pushed in small chunks, interim text while someone speaks, and a final
result for each utterance.

    push(chunk) ─► samples ─► resample ─► VadStream ─► closed segment ─► final decode ─┐
    (int16/f32     (float32)   (soxr,      (Silero,     (padded, on the                 ├─► Service
     bytes, or                  streaming)  pushed)      session's timeline)            │   (priority 3/2,
     arrays)                                   └──► open segment, every `interval` s ─►─┘    batched with
                                                    of new audio: interim decode              every session)
                                                                                   │
                                               events, in order: Interim… Final ◄──┘

The model is not a streaming one: an interim result is the open segment decoded again from its
start, so it may change earlier words as more audio arrives, and the final result is the closed
segment decoded whole (with punctuation, ITN and hotwords), the same as an offline decode of
those samples. Decodes of all live sessions meet in the service's scheduler, which batches them
together ahead of interactive and bulk work, finals ahead of interims. A session never piles up
work: while one of its interim decodes is running, the next one is skipped, and an interim still
waiting when its segment closes is cancelled.

Events come out in segment order: every interim of a segment before its final, and finals in
order; an interim of the next segment that completes before the previous final is held back
until that final is out. The session ends with one `Ended` event once every final is out.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import math
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from typing import Any, Literal, TypeAlias

import numpy as np
import numpy.typing as npt
import soxr

from zhuanxie.audio import RESAMPLE_QUALITY
from zhuanxie.engine import AudioInput, InputResult
from zhuanxie.hotwords import hotwords_found, normalize_hotwords
from zhuanxie.result import Segment, Sentence, Token, Transcript
from zhuanxie.service import OverloadedError, Service
from zhuanxie.text import join_texts
from zhuanxie.vad import SAMPLE_RATE, SileroVad, SpeechSegment, VadOptions, VadStream

# Scheduler priorities: live decodes go ahead of interactive requests (1) and bulk jobs (0), and
# a segment's final ahead of interims, so that under load interims thin out before finals wait.
INTERIM_PRIORITY = 2
FINAL_PRIORITY = 3
RETRY_S = 0.2  # longest wait before a final that the full service refused is offered again

Encoding: TypeAlias = Literal["pcm_s16le", "f32le"]
Samples: TypeAlias = npt.NDArray[np.float32]
_SAMPLE_BYTES: dict[str, int] = {"pcm_s16le": 2, "f32le": 4}


@dataclass(frozen=True)
class StreamOptions:
    """How one live session reads its audio and what it returns; vary with ``replace``."""

    sample_rate: int = SAMPLE_RATE
    """Rate of the pushed audio in Hz; anything else than 16 kHz is resampled (soxr, streaming)."""
    encoding: Encoding = "pcm_s16le"
    """Layout of audio pushed as bytes: 16-bit signed or 32-bit float samples, little-endian, mono.
    Arrays are taken by dtype instead (int16 scaled by 1/32768, floats as they are)."""
    interval: float | None = 0.6
    """Seconds of new audio between interim decodes of the open segment; None: no interims."""
    vad: VadOptions = field(default_factory=VadOptions)
    """Silero thresholds, padding, the silence that ends an utterance and the longest segment."""
    hotwords: tuple[str, ...] = ()
    """Phrases to favour (SeACo models), in every decode of the session."""
    punctuation: bool = True
    """Punctuate final results (when the service's engine has a punctuation model)."""
    itn: bool = True
    """Normalise numbers and dates in interim and final results (when the engine has ITN)."""
    max_session_s: float | None = None
    """Most audio one session takes, in seconds; None: no limit."""

    def __post_init__(self) -> None:
        if isinstance(self.sample_rate, bool) or not isinstance(self.sample_rate, int):
            raise ValueError(f"sample_rate must be an integer, not {self.sample_rate!r}")
        if not 1000 <= self.sample_rate <= 384_000:
            raise ValueError(f"sample_rate must lie in 1000..384000 Hz, not {self.sample_rate}")
        if self.encoding not in _SAMPLE_BYTES:
            raise ValueError(f"encoding must be 'pcm_s16le' or 'f32le', not {self.encoding!r}")
        if self.interval is not None and not (
            math.isfinite(self.interval) and 0.05 <= self.interval <= 60
        ):
            raise ValueError(f"interval must be None or 0.05..60 seconds, not {self.interval!r}")
        if self.max_session_s is not None and not self.max_session_s > 0:
            raise ValueError(f"max_session_s must be None or > 0, not {self.max_session_s!r}")


@dataclass(frozen=True)
class Interim:
    """The open segment decoded so far; later interims and the final replace it."""

    segment: int  # index of the segment in the session, from 0
    text: str
    start: float  # seconds on the session's timeline: where the segment begins
    end: float  # how far the decoded audio reaches
    tokens: tuple[Token, ...]  # timed on the session's timeline


@dataclass(frozen=True)
class Final:
    """A closed segment's result. ``error`` says why it failed (then ``text`` is empty); a
    segment whose speech turned out too short after interims were shown also ends with an
    empty final."""

    segment: int
    text: str
    start: float  # seconds on the session's timeline
    end: float
    tokens: tuple[Token, ...]
    sentences: tuple[Sentence, ...] = ()  # when punctuation was added
    error: str | None = None


@dataclass(frozen=True)
class Ended:
    """The last event of a session: every final is out."""

    duration: float  # seconds of audio received (at 16 kHz)
    segments: int  # finals sent


Event: TypeAlias = Interim | Final | Ended


class SessionLimitError(RuntimeError):
    """The session reached ``max_session_s``; audio beyond it was dropped."""


class StreamSession:
    """One live audio stream recognised through a shared ``Service``.

    Feed it from one thread at a time: ``push`` audio as it arrives, then ``end``. Events go to
    ``listener`` (called from the service's threads, in order, under the session's lock: keep it
    short and do not call back into the session), or are kept for ``events()``. ``cancel`` drops
    the session at any point and stops its decodes.
    """

    _ids = itertools.count()

    def __init__(
        self,
        service: Service,
        vad: SileroVad,
        options: StreamOptions | None = None,
        *,
        name: str | None = None,
        listener: Callable[[Event], None] | None = None,
    ) -> None:
        self.options = options = options or StreamOptions()
        self.name = name or f"stream{next(self._ids)}"
        self.hotwords = normalize_hotwords(options.hotwords)
        backend = service.engine.backend
        if self.hotwords and not backend.supports_hotwords:
            raise ValueError(f"hotwords are not supported by {backend.name}; drop them")
        self._service = service
        self._vad: VadStream = vad.stream(options.vad)
        self._listener = listener
        self._resampler = (
            None
            if options.sample_rate == SAMPLE_RATE
            else soxr.ResampleStream(
                options.sample_rate, SAMPLE_RATE, 1, dtype="float32", quality=RESAMPLE_QUALITY
            )
        )
        self._limit = (
            None if options.max_session_s is None else round(options.max_session_s * SAMPLE_RATE)
        )
        self._interval = None if options.interval is None else round(options.interval * SAMPLE_RATE)
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._carry = b""  # bytes of a sample split between two pushes
        self._segment = 0  # index of the open (or next) segment
        self._open_start: int | None = None  # where the tracked open segment begins
        self._shown = False  # interims of the open segment were sent
        self._interim_from = 0  # position from which `interval` counts to the next interim
        self._interim: tuple[int, Future[InputResult]] | None = None  # (segment, in flight)
        self._stale: list[Future[InputResult]] = []  # interims of closed segments, to cancel
        self._finals: dict[int, Future[InputResult]] = {}  # submitted, not yet resolved
        self._waiting: list[tuple[int, SpeechSegment]] = []  # refused by a full service
        self._ready: dict[int, Final] = {}  # resolved, waiting for earlier finals
        self._held: Interim | None = None  # an interim waiting for earlier finals
        self._next = 0  # index of the next final to send
        self._sent: list[Final] = []
        self._events: list[Event] = []
        self._ended = False
        self._done = False
        self._cancelled = False
        self._retry: threading.Timer | None = None
        self.interims_skipped = 0  # interim decodes skipped: one was running, or service full

    # --- feeding ---------------------------------------------------------------------------

    @property
    def duration(self) -> float:
        """Seconds of audio received so far (after resampling)."""
        return self._vad.received / SAMPLE_RATE

    def push(self, audio: bytes | npt.NDArray[Any]) -> None:
        """Add audio: bytes in the session's encoding, or a 1-D array (int16 or float).

        Raises ``SessionLimitError`` once the session holds ``max_session_s`` of audio (the part
        within the limit is kept; call ``end`` next), ``ValueError`` for malformed audio.
        """
        if self._ended:
            raise RuntimeError("audio pushed after the session ended")
        samples = self._resample(self._samples(audio), last=False)
        self._feed(samples)

    def end(self) -> None:
        """No more audio: close the open segment; its final (and any still due) follow."""
        if self._ended:
            return
        tail = self._resample(np.zeros(0, dtype=np.float32), last=True)
        with contextlib.suppress(SessionLimitError):
            self._feed(tail, interim=False)
        closed = self._vad.finish()
        with self._lock:
            self._ended = True
            finals = self._plan(closed)
            stale, self._stale = self._stale, []
            if self._interim is not None:
                stale.append(self._interim[1])
                self._interim = None
        for future in stale:
            self._service.cancel(future)
        self._submit_finals(finals)
        with self._lock:
            self._deliver()

    def cancel(self) -> None:
        """Drop the session: stop its decodes in flight; no more events are sent."""
        with self._lock:
            if self._cancelled:
                return
            self._cancelled = True
            self._ended = True
            futures = list(self._finals.values())
            if self._interim is not None:
                futures.append(self._interim[1])
            self._interim = None
            self._finals.clear()
            self._waiting.clear()
            if self._retry is not None:
                self._retry.cancel()
            self._changed.notify_all()
        for future in futures:
            self._service.cancel(future)

    # --- reading ---------------------------------------------------------------------------

    @property
    def done(self) -> bool:
        """Ended, and every final (then ``Ended``) sent."""
        return self._done

    def events(self) -> list[Event]:
        """The events sent since the last call (only without a listener)."""
        with self._lock:
            events, self._events = self._events, []
            return events

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until no decode of this session is in flight (done, if it ended); False on
        timeout."""
        with self._changed:
            return self._changed.wait_for(self._idle, timeout)

    def finish(self, timeout: float | None = None) -> list[Event]:
        """``end``, wait for the last final, and return the events not yet read."""
        self.end()
        if not self.wait(timeout):
            raise TimeoutError(f"{self.name}: finals still pending after {timeout} s")
        return self.events()

    def transcript(self) -> Transcript:
        """The finals sent so far as one transcript on the session's timeline (for writers)."""
        with self._lock:
            finals = [f for f in self._sent if f.error is None and f.text]
            segments = tuple(
                Segment(f.start, f.end, f.text, f.tokens, token_ids=()) for f in finals
            )
            text = join_texts([s.text for s in segments])
            return Transcript(
                text=text,
                duration=self.duration,
                segments=segments,
                hotwords=self.hotwords,
                hotwords_found=hotwords_found(text, self.hotwords),
                sentences=tuple(s for f in finals for s in f.sentences),
            )

    # --- internals -------------------------------------------------------------------------

    def _samples(self, audio: bytes | npt.NDArray[Any]) -> Samples:
        """Pushed audio as float32 samples at the input rate."""
        if isinstance(audio, bytes | bytearray | memoryview):
            width = _SAMPLE_BYTES[self.options.encoding]
            data = self._carry + bytes(audio)
            whole = len(data) // width * width
            self._carry = data[whole:]
            if self.options.encoding == "pcm_s16le":
                return _from_int16(np.frombuffer(data[:whole], dtype="<i2"))
            samples = np.frombuffer(data[:whole], dtype="<f4").astype(np.float32)
        else:
            array = np.asarray(audio)
            if array.ndim != 1:
                raise ValueError(f"audio must be mono, 1-D samples, not shape {array.shape}")
            if array.dtype == np.int16:
                return _from_int16(array)
            if not np.issubdtype(array.dtype, np.floating):
                raise ValueError(f"audio arrays must be int16 or float, not {array.dtype}")
            samples = array.astype(np.float32)
        if not np.isfinite(samples).all():
            raise ValueError("audio holds a NaN or infinite sample")
        return samples

    def _resample(self, samples: Samples, *, last: bool) -> Samples:
        if self._resampler is None:
            return samples
        return np.asarray(self._resampler.resample_chunk(samples, last=last), dtype=np.float32)

    def _feed(self, samples: Samples, interim: bool = True) -> None:
        """Samples at 16 kHz into the VAD; then finals for closed segments and maybe an interim."""
        over = False
        if self._limit is not None and self._vad.received + len(samples) > self._limit:
            samples = samples[: max(0, self._limit - self._vad.received)]
            over = True
        closed = self._vad.push(samples) if len(samples) else []
        with self._lock:
            if self._cancelled:
                return
            plan = self._plan(closed)
            due = self._next_interim() if interim else None
            self._deliver()
            stale, self._stale = self._stale, []
        for future in stale:
            self._service.cancel(future)
        self._submit_finals(plan)
        if due is not None:
            self._submit_interim(*due)
        if over:
            raise SessionLimitError(
                f"the session reached its limit of {self.options.max_session_s:g} s of audio"
            )

    def _plan(self, closed: list[SpeechSegment]) -> list[tuple[int, SpeechSegment]]:
        """Number the closed segments, retire the tracked open segment, and return the finals to
        submit. Holds the lock."""
        finals = self._waiting + [(self._segment + i, s) for i, s in enumerate(closed)]
        self._waiting = []
        tracked = self._open_start
        if closed:  # the tracked segment closed or was split (its interims end here)
            self._segment += len(closed)
            self._retire_open()
        elif tracked is not None and self._vad.open_start != tracked:
            # Its speech was too short to keep: close it with an empty final if interims showed
            # it, else forget it (and number the next segment in its place).
            if self._shown:
                at = tracked / SAMPLE_RATE
                self._ready[self._segment] = Final(self._segment, "", at, at, ())
                self._segment += 1
            self._retire_open()
        start = self._vad.open_start
        if start is not None and start != self._open_start:
            self._open_start = start
            self._interim_from = max(start, self._vad.speech_start or start)
        return finals

    def _retire_open(self) -> None:
        """The tracked open segment has closed: its interim, if running, is stale."""
        self._open_start = None
        self._shown = False
        self._held = None
        if self._interim is not None:  # still queued, it would only delay the final
            self._stale.append(self._interim[1])
            self._interim = None

    def _next_interim(self) -> tuple[int, int, Samples] | None:
        """(segment, start sample, audio) for an interim decode now, if one is due. Holds the lock."""
        if self._interval is None or self._open_start is None or self._ended:
            return None
        received = self._vad.received
        if received - self._interim_from < self._interval:
            return None
        self._interim_from = received
        if self._interim is not None:
            self.interims_skipped += 1
            return None
        return self._segment, self._open_start, self._vad.open_audio()

    def _input(self, audio: Samples, segment: int, final: bool) -> AudioInput:
        return AudioInput(
            audio,
            sample_rate=SAMPLE_RATE,
            hotwords=self.hotwords,
            name=f"{self.name}#{segment}" + ("" if final else "~"),
            vad=False,
            punctuation=self.options.punctuation and final,
            itn=self.options.itn,
            priority=FINAL_PRIORITY if final else INTERIM_PRIORITY,
        )

    def _submit_interim(self, segment: int, start: int, audio: Samples) -> None:
        try:
            future = self._service.submit(self._input(audio, segment, final=False))
        except OverloadedError:
            with self._lock:
                self.interims_skipped += 1
            return
        except RuntimeError:  # the service closed; the finals will say so
            return
        with self._lock:
            if self._cancelled or self._segment != segment or self._open_start != start:
                stale = True
            else:
                stale = False
                self._interim = (segment, future)
        if stale:
            self._service.cancel(future)
            return
        end = start + len(audio)
        future.add_done_callback(functools.partial(self._interim_done, segment, start, end))

    def _submit_finals(self, finals: list[tuple[int, SpeechSegment]]) -> None:
        refused: list[tuple[int, SpeechSegment]] = []
        retry_after = RETRY_S
        for index, segment in finals:
            try:
                future = self._service.submit(self._input(segment.audio, index, final=True))
            except OverloadedError as e:
                refused.append((index, segment))
                retry_after = min(retry_after, e.retry_after)
                continue
            except RuntimeError as e:
                self._resolved(index, self._failed(index, segment.start, segment.end, str(e)))
                continue
            with self._lock:
                if self._cancelled:
                    stale = True
                else:
                    stale = False
                    self._finals[index] = future
            if stale:
                self._service.cancel(future)
                return
            future.add_done_callback(
                functools.partial(self._final_done, index, segment.start, segment.end)
            )
        if refused:
            with self._lock:
                if self._cancelled:
                    return
                self._waiting = refused + self._waiting
                self._retry = threading.Timer(retry_after, self._retry_finals)
                self._retry.daemon = True
                self._retry.start()

    def _retry_finals(self) -> None:
        with self._lock:
            if self._cancelled:
                return
            waiting, self._waiting = self._waiting, []
        self._submit_finals(waiting)

    def _interim_done(
        self, segment: int, start: int, end: int, future: Future[InputResult]
    ) -> None:
        result = future.result()
        with self._lock:
            if self._interim is not None and self._interim[1] is future:
                self._interim = None
            fresh = not self._cancelled and self._segment == segment and self._open_start == start
            if fresh and result.transcript is not None:
                offset = start / SAMPLE_RATE
                tokens = _shifted_tokens(result.transcript, offset)
                text = result.transcript.text
                self._held = Interim(segment, text, offset, end / SAMPLE_RATE, tokens)
            self._deliver()

    def _final_done(self, index: int, start: int, end: int, future: Future[InputResult]) -> None:
        result = future.result()
        with self._lock:
            if self._finals.pop(index, None) is None:  # cancelled with the session
                return
        if result.transcript is None:
            reason = result.error or "unknown error"
            final = self._failed(index, start, end, reason)
        else:
            offset = start / SAMPLE_RATE
            transcript = result.transcript
            final = Final(
                index,
                transcript.text,
                offset,
                end / SAMPLE_RATE,
                _shifted_tokens(transcript, offset),
                tuple(_shifted_sentence(s, offset) for s in transcript.sentences),
            )
        self._resolved(index, final)

    @staticmethod
    def _failed(index: int, start: int, end: int, reason: str) -> Final:
        return Final(index, "", start / SAMPLE_RATE, end / SAMPLE_RATE, (), error=reason)

    def _resolved(self, index: int, final: Final) -> None:
        with self._lock:
            if self._cancelled:
                return
            self._ready[index] = final
            self._deliver()

    def _deliver(self) -> None:
        """Send whatever is next in order. Holds the lock."""
        if self._cancelled:
            return
        while self._next in self._ready:
            final = self._ready.pop(self._next)
            self._sent.append(final)
            self._send(final)
            self._next += 1
        held = self._held
        if held is not None and held.segment == self._next:
            self._held = None
            self._shown = True
            self._send(held)
        if (
            self._ended
            and not self._done
            and not self._finals
            and not self._waiting
            and not self._ready
        ):
            self._done = True
            self._send(Ended(self.duration, len(self._sent)))
        self._changed.notify_all()

    def _send(self, event: Event) -> None:
        if self._listener is None:
            self._events.append(event)
        else:
            self._listener(event)

    def _idle(self) -> bool:
        if self._cancelled:
            return True
        if self._ended:
            return self._done
        return self._interim is None and not self._finals and not self._waiting


def _from_int16(samples: npt.NDArray[np.int16]) -> Samples:
    return (samples.astype(np.float32) * np.float32(1 / 32768)).astype(np.float32)


def _shifted_tokens(transcript: Transcript, offset: float) -> tuple[Token, ...]:
    return tuple(replace(t, start=t.start + offset, end=t.end + offset) for t in transcript.tokens)


def _shifted_sentence(sentence: Sentence, offset: float) -> Sentence:
    tokens = tuple(replace(t, start=t.start + offset, end=t.end + offset) for t in sentence.tokens)
    return replace(
        sentence, start=sentence.start + offset, end=sentence.end + offset, tokens=tokens
    )


class AsyncStreamSession:
    """A ``StreamSession`` for asyncio code: audio is processed off the event loop and events
    arrive on an ``asyncio.Queue``. Create it inside the running loop."""

    def __init__(
        self,
        service: Service,
        vad: SileroVad,
        options: StreamOptions | None = None,
        *,
        name: str | None = None,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[Event] = asyncio.Queue()
        self.session = StreamSession(service, vad, options, name=name, listener=self._post)

    def _post(self, event: Event) -> None:
        with contextlib.suppress(RuntimeError):  # the loop closed: no one is listening
            self._loop.call_soon_threadsafe(self._queue.put_nowait, event)

    async def push(self, audio: bytes | npt.NDArray[Any]) -> None:
        """``StreamSession.push`` on a worker thread (the VAD and resampler run there)."""
        await asyncio.to_thread(self.session.push, audio)

    async def end(self) -> None:
        await asyncio.to_thread(self.session.end)

    async def next_event(self) -> Event:
        return await self._queue.get()

    async def events(self) -> AsyncIterator[Event]:
        """Events as they come, up to and including ``Ended``."""
        while True:
            event = await self._queue.get()
            yield event
            if isinstance(event, Ended):
                return

    def cancel(self) -> None:
        self.session.cancel()


__all__ = [
    "FINAL_PRIORITY",
    "INTERIM_PRIORITY",
    "AsyncStreamSession",
    "Ended",
    "Event",
    "Final",
    "Interim",
    "SessionLimitError",
    "StreamOptions",
    "StreamSession",
]
