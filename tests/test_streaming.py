"""Live sessions: streamed finals equal offline decodes of the offline VAD's segments, interims
equal decodes of the audio heard so far, events in order, no piling up, cancelling, limits."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soxr

from zhuanxie.backend import ParaformerBackend
from zhuanxie.engine import AudioInput, Engine, EngineOptions, Runner
from zhuanxie.generator import write_random_punctuation_model
from zhuanxie.governor import MemoryGovernor
from zhuanxie.itn import InverseNormalizer
from zhuanxie.postprocess import PostProcessor
from zhuanxie.punctuation import Punctuator, load_punctuation_model
from zhuanxie.recognizer import Model, load_model
from zhuanxie.result import Segment, Token, Transcript
from zhuanxie.service import Service
from zhuanxie.streaming import (
    AsyncStreamSession,
    Ended,
    Event,
    Final,
    Interim,
    SessionLimitError,
    StreamOptions,
    StreamSession,
)
from zhuanxie.vad import SAMPLE_RATE, SileroVad, VadOptions
from zhuanxie.writers import to_srt

HOTWORDS = ("科技", "因为")
# A 4 s limit makes the VAD split the longer clips, so continuation segments are covered too.
VAD = VadOptions(max_segment_s=4.0)
OPTIONS = StreamOptions(vad=VAD, hotwords=HOTWORDS, interval=0.5)
CHUNK = 1600  # 100 ms, a typical browser / client packet


@pytest.fixture(scope="module")
def model(tiny_model_dir: Callable[..., Path]) -> Model:
    return load_model(tiny_model_dir("seaco-paraformer-tiny"))


@pytest.fixture(scope="module")
def postprocessor(tmp_path_factory: pytest.TempPathFactory) -> PostProcessor:
    punc = write_random_punctuation_model(tmp_path_factory.mktemp("punc"), "ct-punc-zh-tiny", 0)
    return PostProcessor(Punctuator(load_punctuation_model(punc)), InverseNormalizer())


@pytest.fixture(scope="module")
def engine(model: Model, postprocessor: PostProcessor) -> Engine:
    return Engine(model, EngineOptions(vad="none"), postprocessor=postprocessor)


@pytest.fixture(scope="module")
def service(engine: Engine) -> Any:
    with Service(engine) as service:
        yield service


@pytest.fixture(scope="module")
def vad() -> SileroVad:
    return SileroVad()


@pytest.fixture(scope="module")
def recording(speech_clips: list[np.ndarray]) -> np.ndarray:
    """Six clips with 0.8-1.6 s pauses of faint noise between them, as 16-bit samples."""
    rng = np.random.default_rng(3)
    parts = [np.zeros(4000, np.int16)]
    for clip in speech_clips[:6]:
        parts.append(np.round(clip * 32768).astype(np.int16))
        pause = int(rng.uniform(0.8, 1.6) * SAMPLE_RATE)
        parts.append(rng.normal(0, 15, pause).astype(np.int16))
    return np.concatenate(parts)


def as_float(samples: np.ndarray) -> np.ndarray:
    return samples.astype(np.float32) / 32768


@dataclass
class Streamed:
    events: list[Event]
    transcript: Transcript
    skipped: int

    @property
    def finals(self) -> list[Final]:
        return [e for e in self.events if isinstance(e, Final)]

    @property
    def interims(self) -> list[Interim]:
        return [e for e in self.events if isinstance(e, Interim)]


def stream(
    service: Service,
    vad: SileroVad,
    chunks: Sequence[bytes | np.ndarray],
    options: StreamOptions = OPTIONS,
    *,
    settle: bool = True,
) -> Streamed:
    """Push the chunks one by one (waiting for each interim when `settle`), then end."""
    session = StreamSession(service, vad, options)
    for chunk in chunks:
        session.push(chunk)
        if settle:
            assert session.wait(timeout=30)
    events = session.events() + session.finish(timeout=60)
    return Streamed(events, session.transcript(), session.interims_skipped)


def pieces(data: bytes | np.ndarray, size: int) -> list[Any]:
    return [data[i : i + size] for i in range(0, len(data), size)]


@pytest.fixture(scope="module")
def streamed(service: Service, vad: SileroVad, recording: np.ndarray) -> Streamed:
    return stream(service, vad, pieces(recording.tobytes(), 2 * CHUNK))


def offline(
    engine: Engine, audios: Sequence[np.ndarray], *, final: bool, hotwords: Sequence[str] = HOTWORDS
) -> list[Transcript]:
    """Each audio decoded alone through a fresh run of the engine, as one utterance."""
    specs = [
        AudioInput(
            a, sample_rate=SAMPLE_RATE, hotwords=tuple(hotwords), vad=False, punctuation=final
        )
        for a in audios
    ]
    results = sorted(engine.transcribe_many(specs), key=lambda r: r.index)
    assert all(r.transcript is not None for r in results), [r.error for r in results]
    return [r.transcript for r in results if r.transcript is not None]


def shifted(tokens: Sequence[Token], offset: float) -> list[tuple[str, float, float]]:
    return [(t.text, round(t.start + offset, 6), round(t.end + offset, 6)) for t in tokens]


def rounded(tokens: Sequence[Token]) -> list[tuple[str, float, float]]:
    return shifted(tokens, 0.0)


# --- finals and interims against offline decoding -------------------------------------------


def test_segments_are_the_offline_vads(
    streamed: Streamed, vad: SileroVad, recording: np.ndarray
) -> None:
    expected = list(vad.segments([as_float(recording)], VAD))
    assert len(expected) >= 7
    assert any(a.end == b.start for a, b in pairwise(expected))  # split at 4 s
    got = [(round(f.start * SAMPLE_RATE), round(f.end * SAMPLE_RATE)) for f in streamed.finals]
    assert got == [(s.start, s.end) for s in expected]
    assert [f.segment for f in streamed.finals] == list(range(len(expected)))


def test_finals_equal_offline_decodes_of_the_segments(
    streamed: Streamed, engine: Engine, vad: SileroVad, recording: np.ndarray
) -> None:
    segments = list(vad.segments([as_float(recording)], VAD))
    expected = offline(engine, [s.audio for s in segments], final=True)
    for final, segment, transcript in zip(streamed.finals, segments, expected, strict=True):
        assert final.error is None
        assert final.text == transcript.text
        offset = segment.start / SAMPLE_RATE
        assert rounded(final.tokens) == shifted(transcript.tokens, offset)
        assert [s.text for s in final.sentences] == [s.text for s in transcript.sentences]
        assert [round(s.start, 6) for s in final.sentences] == [
            round(s.start + offset, 6) for s in transcript.sentences
        ]


def test_finals_are_punctuated_and_timed_on_the_session_timeline(streamed: Streamed) -> None:
    texts = [f.text for f in streamed.finals if f.tokens]
    assert any(mark in text for text in texts for mark in "，。？")
    for final in streamed.finals:
        assert all(final.start <= t.start <= t.end <= final.end + 1e-6 for t in final.tokens)
    starts = [f.start for f in streamed.finals]
    assert starts == sorted(starts)
    assert streamed.finals[-1].end > 30  # well into the recording, not restarting at 0


def test_each_interim_equals_the_decode_of_the_audio_heard_so_far(
    streamed: Streamed, engine: Engine, recording: np.ndarray
) -> None:
    interims = streamed.interims
    assert len(interims) >= 2 * len(streamed.finals)
    audio = as_float(recording)
    spans = [(round(i.start * SAMPLE_RATE), round(i.end * SAMPLE_RATE)) for i in interims]
    expected = offline(engine, [audio[a:b] for a, b in spans], final=False)
    for interim, transcript in zip(interims, expected, strict=True):
        assert interim.text == transcript.text
        assert rounded(interim.tokens) == shifted(transcript.tokens, interim.start)


def test_interims_come_every_interval_of_new_audio(streamed: Streamed) -> None:
    for segment in {i.segment for i in streamed.interims}:
        ends = [i.end for i in streamed.interims if i.segment == segment]
        assert all(0.5 - 1e-9 <= b - a <= 0.6 + 1e-9 for a, b in pairwise(ends))
    assert streamed.skipped == 0  # each push waited for its interim


def test_events_come_in_segment_order(streamed: Streamed) -> None:
    finalised: set[int] = set()
    for event in streamed.events[:-1]:
        assert isinstance(event, Interim | Final)
        assert event.segment not in finalised
        assert event.segment == len(finalised)  # nothing of a later segment before this final
        if isinstance(event, Final):
            finalised.add(event.segment)
    assert streamed.events[-1] == Ended(streamed.transcript.duration, len(streamed.finals))


def test_transcript_joins_the_finals(streamed: Streamed, recording: np.ndarray) -> None:
    transcript = streamed.transcript
    assert transcript.duration == len(recording) / SAMPLE_RATE
    finals = [f for f in streamed.finals if f.text]
    assert [s.text for s in transcript.segments] == [f.text for f in finals]
    assert transcript.hotwords == HOTWORDS
    srt = to_srt(transcript)
    assert srt.count(" --> ") >= len(finals)


# --- input forms ------------------------------------------------------------------------------


def test_resampled_input_equals_offline_decoding_of_the_resampled_audio(
    service: Service, engine: Engine, vad: SileroVad, recording: np.ndarray
) -> None:
    native = soxr.resample(as_float(recording[: 20 * SAMPLE_RATE]), SAMPLE_RATE, 44100)
    native = native.astype(np.float32)
    options = replace(OPTIONS, sample_rate=44100, encoding="f32le", interval=None)
    got = stream(service, vad, pieces(native.tobytes(), 4 * 1234 + 3), options)
    audio = soxr.resample(native, 44100, SAMPLE_RATE).astype(np.float32)
    segments = list(vad.segments([audio], VAD))
    assert len(segments) >= 2
    assert not got.interims
    assert [round(f.start * SAMPLE_RATE) for f in got.finals] == [s.start for s in segments]
    expected = offline(engine, [s.audio for s in segments], final=True)
    assert [f.text for f in got.finals] == [t.text for t in expected]


def test_arrays_and_bytes_split_anywhere_give_the_same_events(
    service: Service, vad: SileroVad, recording: np.ndarray
) -> None:
    audio = recording[: 12 * SAMPLE_RATE]
    options = replace(OPTIONS, interval=None)
    from_bytes = stream(service, vad, pieces(audio.tobytes(), 777), options)
    from_arrays = stream(service, vad, pieces(audio, 5000), options)
    from_floats = stream(service, vad, pieces(as_float(audio), 3000), options)
    assert from_bytes.events == from_arrays.events == from_floats.events
    assert len(from_bytes.finals) >= 1


# --- scheduling -------------------------------------------------------------------------------


class GatedRunner(Runner):
    """Holds every batch until ``gate`` is set; counts the inputs it was given."""

    def __init__(self, model: Model, engine: Engine) -> None:
        super().__init__(
            ParaformerBackend(model), MemoryGovernor.for_cpu(engine.governor_options())
        )
        self.gate = threading.Event()
        self.started = threading.Event()
        self.items = 0
        self.priorities: list[list[int]] = []  # of each batch, in the order run

    def decode(self, items: Sequence[Any]) -> list[Segment | None]:
        self.started.set()
        self.gate.wait(timeout=30)
        self.items += len(items)
        self.priorities.append([it.priority for it in items])
        return super().decode(items)


@pytest.fixture
def gated(model: Model) -> Any:
    options = EngineOptions(vad="none")
    runner = GatedRunner(model, Engine(model, options))
    with Service(Engine(model, options, runners=[runner])) as service:
        yield service, runner
        runner.gate.set()


def test_interims_never_pile_up(
    gated: tuple[Service, GatedRunner], vad: SileroVad, recording: np.ndarray
) -> None:
    service, runner = gated
    session = StreamSession(service, vad, OPTIONS)
    audio = recording.tobytes()
    chunks = pieces(audio[: 2 * 6 * SAMPLE_RATE], 2 * CHUNK)
    for chunk in chunks:
        session.push(chunk)
        assert service.load().urgent <= 1 + len(session._finals)
    assert runner.started.wait(timeout=10)
    assert session.interims_skipped >= 5
    runner.gate.set()
    events = session.events() + session.finish(timeout=60)
    assert isinstance(events[-1], Ended)


def test_finals_go_first_and_a_closed_segments_interim_is_dropped(
    gated: tuple[Service, GatedRunner],
    vad: SileroVad,
    recording: np.ndarray,
    speech_clips: list[np.ndarray],
) -> None:
    service, runner = gated
    session = StreamSession(service, vad, replace(OPTIONS, interval=0.3))
    first = pieces(recording[: int(1.2 * SAMPLE_RATE)].tobytes(), 2 * CHUNK)
    for chunk in first:
        session.push(chunk)
    assert runner.started.wait(timeout=10)  # segment 0's first interim holds the model
    # Past the end of clip 0 and well into clip 1: segment 0's finals are queued, and with its
    # interim retired (cancelled), segment 1's interims may queue too.
    later = int(1.2 * SAMPLE_RATE), 4000 + len(speech_clips[0]) + 3 * SAMPLE_RATE
    for chunk in pieces(recording[later[0] : later[1]].tobytes(), 2 * CHUNK):
        session.push(chunk)
    # Waiting now: segment 0's final and segment 1's interim (segment 0's was cancelled).
    assert session._interim is not None
    assert session._interim[0] == 1
    assert list(session._finals) == [0]
    runner.gate.set()
    events = session.events() + session.finish(timeout=60)
    assert runner.priorities[:2] == [[2], [3]]  # the held interim, then the final alone
    finals = [e for e in events if isinstance(e, Final)]
    assert finals[0].segment == 0
    assert not any(isinstance(e, Interim) and e.segment == 0 for e in events)


def test_cancel_stops_the_decodes_in_flight(
    gated: tuple[Service, GatedRunner], vad: SileroVad, recording: np.ndarray
) -> None:
    service, runner = gated
    session = StreamSession(service, vad, replace(OPTIONS, interval=0.3))
    for chunk in pieces(recording[: 12 * SAMPLE_RATE].tobytes(), 2 * CHUNK):
        session.push(chunk)
    assert runner.started.wait(timeout=10)
    assert service.load().urgent >= 2  # an interim and at least one final are waiting
    session.cancel()
    runner.gate.set()
    deadline = threading.Event()
    for _ in range(100):
        if service.load().urgent == 0:
            break
        deadline.wait(0.05)
    assert service.load().urgent == 0
    assert session.events() == []
    assert session.wait(timeout=1)
    with pytest.raises(RuntimeError, match="ended"):
        session.push(b"\0\0")


def test_sessions_share_batches(
    gated: tuple[Service, GatedRunner], vad: SileroVad, recording: np.ndarray
) -> None:
    service, runner = gated
    sessions = [StreamSession(service, vad, OPTIONS) for _ in range(3)]
    for chunk in pieces(recording[: 3 * SAMPLE_RATE].tobytes(), 2 * CHUNK):
        for session in sessions:
            session.push(chunk)
    assert runner.started.wait(timeout=10)
    runner.gate.set()
    for session in sessions:
        session.finish(timeout=60)
    # The first batch held one interim; everything queued behind it went in shared batches.
    assert runner.items >= 3


# --- limits and options -----------------------------------------------------------------------


def test_max_session_length_keeps_the_audio_within_it(
    service: Service, vad: SileroVad, recording: np.ndarray
) -> None:
    session = StreamSession(service, vad, replace(OPTIONS, max_session_s=5.0, interval=None))
    chunks = pieces(recording[: 8 * SAMPLE_RATE].tobytes(), 2 * CHUNK)
    for chunk in chunks[:50]:
        session.push(chunk)
    with pytest.raises(SessionLimitError, match="5 s"):
        session.push(chunks[50])
    assert session.duration == 5.0
    events = session.finish(timeout=60)
    assert isinstance(events[-1], Ended)
    assert events[-1].duration == 5.0
    assert all(e.end <= 5.0 for e in events if isinstance(e, Final))


def test_hotwords_need_a_seaco_model(tiny_model_dir: Callable[..., Path], vad: SileroVad) -> None:
    plain = Engine(load_model(tiny_model_dir("paraformer-tiny")), EngineOptions(vad="none"))
    with Service(plain) as service, pytest.raises(ValueError, match="hotwords are not supported"):
        StreamSession(service, vad, OPTIONS)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"sample_rate": 500}, "sample_rate"),
        ({"encoding": "mp3"}, "encoding"),
        ({"interval": 0.0}, "interval"),
        ({"max_session_s": 0}, "max_session_s"),
    ],
)
def test_invalid_options_name_the_rule(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        StreamOptions(**change)


def test_malformed_audio_is_rejected(service: Service, vad: SileroVad) -> None:
    session = StreamSession(service, vad, replace(OPTIONS, encoding="f32le"))
    with pytest.raises(ValueError, match="NaN"):
        session.push(np.array([0.0, np.nan], dtype=np.float32).tobytes())
    with pytest.raises(ValueError, match="mono"):
        session.push(np.zeros((2, 10), np.float32))
    session.cancel()


def test_silence_gives_no_events_but_the_end(service: Service, vad: SileroVad) -> None:
    got = stream(service, vad, [np.zeros(16000, np.int16)] * 3)
    assert got.events == [Ended(3.0, 0)]


def test_speech_too_short_to_keep_closes_its_interims_with_an_empty_final(
    service: Service, vad: SileroVad, speech_clips: list[np.ndarray]
) -> None:
    burst = speech_clips[0][10 * 512 : 10 * 512 + 3200]  # 200 ms of speech: below min_speech_ms
    audio = np.concatenate([np.zeros(SAMPLE_RATE, np.float32), burst, np.zeros(SAMPLE_RATE)])
    audio = audio.astype(np.float32)
    shown = stream(service, vad, pieces(audio, 512), replace(OPTIONS, interval=0.05))
    *interims, final, ended = shown.events
    assert interims
    assert all(isinstance(i, Interim) and i.segment == 0 for i in interims)
    assert isinstance(final, Final)
    assert (final.segment, final.text, final.tokens, final.error) == (0, "", (), None)
    assert ended == Ended(len(audio) / SAMPLE_RATE, 1)
    unseen = stream(service, vad, pieces(audio, 512), replace(OPTIONS, interval=None))
    assert unseen.events == [Ended(len(audio) / SAMPLE_RATE, 0)]


# --- asyncio ----------------------------------------------------------------------------------


def test_async_session_gives_the_sync_events(
    streamed: Streamed, service: Service, vad: SileroVad, recording: np.ndarray
) -> None:
    async def run() -> list[Event]:
        session = AsyncStreamSession(service, vad, replace(OPTIONS, interval=None))
        for chunk in pieces(recording.tobytes(), 2 * CHUNK):
            await session.push(chunk)
        await session.end()
        return [event async for event in session.events()]

    events = asyncio.run(run())
    assert [e for e in events if isinstance(e, Final)] == streamed.finals
    assert isinstance(events[-1], Ended)
