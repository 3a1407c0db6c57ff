"""The engine: many inputs, shared batches, per-input failures, bounded queues."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

import zhuanxie.backend
from zhuanxie.audio import load_audio
from zhuanxie.backend import ParaformerBackend
from zhuanxie.engine import (
    AudioInput,
    Engine,
    EngineOptions,
    InputResult,
    Progress,
    Runner,
)
from zhuanxie.governor import MemoryGovernor
from zhuanxie.recognizer import Model, Recognizer, load_model
from zhuanxie.result import Segment
from zhuanxie.text import join_texts
from zhuanxie.vad import VadOptions


@pytest.fixture(scope="module")
def model(tiny_model_dir: Callable[..., Path]):  # type: ignore[no-untyped-def]
    return load_model(tiny_model_dir("seaco-paraformer-tiny"))


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Speech-like bursts with pauses, written as 16 kHz WAV files of 2 to 14 s."""
    folder = tmp_path_factory.mktemp("clips")
    rng = np.random.default_rng(3)
    paths = []
    for i in range(6):
        parts = []
        for _ in range(i + 1):
            n = int(rng.uniform(1.0, 2.5) * 16000)
            t = np.arange(n) / 16000
            voiced = np.sin(2 * np.pi * 150 * t) * (1 + np.sin(2 * np.pi * 3 * t))
            parts += [0.2 * voiced + rng.normal(0, 0.02, n), np.zeros(16000)]
        path = folder / f"clip{i}.wav"
        soundfile.write(path, np.concatenate(parts).astype(np.float32), 16000)
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def speech_files(
    tmp_path_factory: pytest.TempPathFactory, speech_clips: list[np.ndarray]
) -> list[Path]:
    """Real Mandarin recordings joined with one-second pauses (VAD needs real speech)."""
    folder = tmp_path_factory.mktemp("speech")
    pause = np.zeros(16000, dtype=np.float32)
    paths = []
    for i in range(4):
        parts = [
            clip
            for j in range(i + 2)
            for clip in (speech_clips[(i + j) % len(speech_clips)], pause)
        ]
        path = folder / f"speech{i}.wav"
        soundfile.write(path, np.concatenate(parts), 16000)
        paths.append(path)
    return paths


def by_index(results: list[InputResult]) -> list[InputResult]:
    return sorted(results, key=lambda r: r.index)


def test_every_input_gets_a_transcript(model, clips: list[Path]) -> None:  # type: ignore[no-untyped-def]
    engine = Engine(model, EngineOptions(vad="none"))
    results = by_index(list(engine.transcribe_many(clips)))
    assert [r.index for r in results] == list(range(len(clips)))
    assert [r.name for r in results] == [str(p) for p in clips]
    assert all(r.transcript is not None and r.error is None for r in results)


def test_unsegmented_short_input_equals_the_recognizer(model, clips: list[Path]) -> None:  # type: ignore[no-untyped-def]
    engine = Engine(model, EngineOptions(vad="none"))
    recognizer = Recognizer(model)
    for result in by_index(list(engine.transcribe_many(clips[:3]))):
        wave = load_audio(clips[result.index])
        assert result.transcript is not None
        assert result.transcript.text == recognizer.transcribe(wave).text


def test_an_input_can_skip_the_vad(model, speech_files: list[Path]) -> None:  # type: ignore[no-untyped-def]
    engine = Engine(model, EngineOptions(vad="silero", vad_options=VadOptions(max_segment_s=30)))
    inputs = [AudioInput(speech_files[0], vad=False), speech_files[0]]
    whole, split = (r.transcript for r in by_index(list(engine.transcribe_many(inputs))))
    assert whole is not None
    assert split is not None
    assert [(s.start, s.end) for s in whole.segments] == [(0.0, whole.segments[0].end)]
    assert len(split.segments) > 1


def test_segments_of_different_inputs_share_batches(model, speech_files: list[Path]) -> None:  # type: ignore[no-untyped-def]
    engine = Engine(model, EngineOptions(vad="silero", decode_workers=2))
    results = list(engine.transcribe_many(speech_files))
    segments = sum(len(r.transcript.segments) for r in results if r.transcript)
    assert engine.stats.segments >= segments > len(speech_files)
    assert engine.stats.batches < engine.stats.segments


def test_token_times_are_on_each_inputs_timeline(model, speech_files: list[Path]) -> None:  # type: ignore[no-untyped-def]
    engine = Engine(model, EngineOptions(vad="silero"))
    for result in engine.transcribe_many(speech_files):
        t = result.transcript
        assert t is not None
        assert len(t.segments) > 1
        for a, b in zip(t.segments, t.segments[1:]):
            assert a.end <= b.start
        for s in t.segments:
            assert all(s.start <= tok.start <= tok.end <= s.end for tok in s.tokens)
        assert t.segments[-1].end <= t.duration + 1e-6


def test_a_broken_input_fails_alone(model, clips: list[Path], tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(np.random.default_rng(0).bytes(5000))
    empty = tmp_path / "empty.mp3"
    empty.write_bytes(b"")
    inputs = [clips[0], garbage, tmp_path / "missing.flac", empty, clips[1]]
    results = by_index(list(Engine(model).transcribe_many(inputs)))
    assert [r.error is None for r in results] == [True, False, False, False, True]
    assert "garbage.wav" in (results[1].error or "") or "garbage.wav" in results[1].name
    assert "no such file" in (results[2].error or "")
    assert results[3].error is not None


def test_silence_gives_an_empty_transcript_not_an_error(model, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "silence.wav"
    soundfile.write(path, np.zeros(16000 * 5, dtype=np.float32), 16000)
    result = next(iter(Engine(model).transcribe_many([path])))
    assert result.error is None
    assert result.transcript is not None
    assert result.transcript.text == ""
    assert result.transcript.duration == 5.0


def test_arrays_bytes_and_per_input_hotwords(model, clips: list[Path]) -> None:  # type: ignore[no-untyped-def]
    wave = load_audio(clips[0])
    inputs = [
        AudioInput(wave, sample_rate=16000, name="array"),
        AudioInput(clips[0].read_bytes(), name="bytes"),
        AudioInput(clips[0], hotwords=("北京", "魔搭")),
    ]
    results = by_index(list(Engine(model, EngineOptions(vad="none")).transcribe_many(inputs)))
    assert [r.name for r in results] == ["array", "bytes", str(clips[0])]
    assert results[0].transcript == results[1].transcript
    assert results[2].transcript is not None


def test_transcripts_report_the_hotwords_asked_for_and_found(model, clips: list[Path]) -> None:  # type: ignore[no-untyped-def]
    wave = load_audio(clips[0])
    plain = Recognizer(model).transcribe(wave).text
    hotwords = (plain[1:3], "魔搭")
    (result,) = Engine(model, EngineOptions(vad="none")).transcribe_many(
        [AudioInput(wave, sample_rate=16000, hotwords=hotwords)]
    )
    expected = Recognizer(model).transcribe(wave, hotwords=hotwords)
    assert result.transcript is not None
    assert result.transcript.hotwords == hotwords
    assert result.transcript.text == expected.text
    assert result.transcript.hotwords_found == expected.hotwords_found == (plain[1:3],)


def test_a_failing_input_listing_raises_after_the_rest(model, clips: list[Path]) -> None:  # type: ignore[no-untyped-def]
    def broken() -> Iterator[Path]:
        yield from clips[:2]
        raise OSError("the listing failed")

    results: list[InputResult] = []
    with pytest.raises(OSError, match="the listing failed"):
        results.extend(Engine(model, EngineOptions(vad="none")).transcribe_many(broken()))
    assert [r.name for r in by_index(results)] == [str(p) for p in clips[:2]]
    assert all(r.transcript is not None for r in results)


def test_progress_reports_every_input(model, clips: list[Path]) -> None:  # type: ignore[no-untyped-def]
    seen: list[Progress] = []
    list(Engine(model).transcribe_many(clips, progress=seen.append))
    assert [p.inputs_done for p in seen] == list(range(1, len(clips) + 1))
    assert seen[-1].inputs_failed == 0
    assert seen[-1].audio_seconds == pytest.approx(sum(soundfile.info(p).duration for p in clips))


def test_closing_early_stops_the_workers(model, clips: list[Path]) -> None:  # type: ignore[no-untyped-def]
    before = threading.active_count()
    results = Engine(model).transcribe_many(clips * 5)
    next(results)
    results.close()
    assert threading.active_count() == before


class FlakyRunner(Runner):
    """Runs out of memory on any batch over a hidden capacity, like a GPU would."""

    def __init__(self, model: Model, governor: MemoryGovernor, capacity: int) -> None:
        super().__init__(ParaformerBackend(model), governor)
        self.capacity = capacity  # padded LFR frames

    def decode(self, items: Sequence) -> list[Segment | None]:  # type: ignore[type-arg]
        frames = len(items) * max(it.frames for it in items)
        if frames > self.capacity:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB (injected)")
        return super().decode(items)


def flaky_engine(model: Model, options: EngineOptions, capacity: int) -> Engine:
    governor = MemoryGovernor.for_cpu(Engine(model, options).governor_options())
    return Engine(model, options, runners=[FlakyRunner(model, governor, capacity)])


def test_out_of_memory_splits_batches_and_loses_nothing(model, speech_files: list[Path]) -> None:  # type: ignore[no-untyped-def]
    options = EngineOptions(vad="silero", batch_frames=2000)
    expected = {r.index: r.transcript for r in Engine(model, options).transcribe_many(speech_files)}
    flaky = flaky_engine(model, options, capacity=150)
    results = {r.index: r.transcript for r in flaky.transcribe_many(speech_files)}
    assert results == expected
    governor = flaky.runners[0].governor
    assert governor.stats().oom_events > 0
    assert governor.budget.max_padded_frames < 2000


def test_an_item_too_big_for_memory_fails_only_its_input(model, clips: list[Path]) -> None:  # type: ignore[no-untyped-def]
    options = EngineOptions(vad="none")
    frames = [Engine(model, options).features(load_audio(p)).shape[0] for p in clips[:3]]
    # The shortest clip fits alone, the longer ones never do.
    flaky = flaky_engine(model, options, capacity=frames[0])
    results = by_index(list(flaky.transcribe_many(clips[:3])))
    assert (results[0].error, results[0].cause) == (None, None)
    assert [r.cause for r in results[1:]] == ["memory", "memory"]
    assert [r.error for r in results[1:]] == [
        f"the {n * 0.06:.1f} s segment at 0.0 s ran out of memory even alone (CUDA out of "
        "memory. Tried to allocate 2.00 GiB (injected)); lower the maximum segment length "
        "or free device memory"
        for n in frames[1:]
    ]


class BrokenRunner(Runner):
    def decode(self, items: Sequence) -> list[Segment | None]:  # type: ignore[type-arg]
        raise RuntimeError("a bug in the model code (injected)")


def test_an_unexpected_batch_error_fails_its_inputs_as_internal(model, clips: list[Path]) -> None:  # type: ignore[no-untyped-def]
    options = EngineOptions(vad="none")
    governor = MemoryGovernor.for_cpu(Engine(model, options).governor_options())
    broken = Engine(model, options, runners=[BrokenRunner(ParaformerBackend(model), governor)])
    (result,) = broken.transcribe_many(clips[:1])
    assert result.error == "RuntimeError: a bug in the model code (injected)"
    assert result.cause == "internal"


def test_options_are_validated() -> None:
    with pytest.raises(ValueError, match="vad must be 'silero', 'fsmn' or 'none'"):
        EngineOptions(vad="webrtc")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="vad='fsmn' needs vad_model"):
        EngineOptions(vad="fsmn")
    with pytest.raises(ValueError, match="decode_workers must be >= 1"):
        replace(EngineOptions(), decode_workers=0)


def test_segment_texts_join_without_spaces_except_between_words() -> None:
    assert join_texts(["你好", "世界", "hello", "world", "再见"]) == "你好世界hello world再见"


def test_two_runners_share_the_work_and_agree_with_one(model, speech_files: list[Path]) -> None:  # type: ignore[no-untyped-def]
    options = EngineOptions(vad="silero", batch_frames=300)
    one = {r.index: r.transcript for r in Engine(model, options).transcribe_many(speech_files)}
    second = load_model(model.directory)
    engine = Engine([model, second], options)
    used: set[str] = set()
    original = engine.record

    def spy(runner: Runner, items, elapsed: float) -> None:  # type: ignore[no-untyped-def]
        used.add(str(id(runner)))
        original(runner, items, elapsed)

    engine.record = spy  # type: ignore[method-assign]
    two = {r.index: r.transcript for r in engine.transcribe_many(speech_files)}
    assert two == one
    assert len(used) == 2


class ThreadRecordingRunner(Runner):
    """Notes which thread decodes, and how many PyTorch threads the feature workers had."""

    def __init__(self, model: Model, governor: MemoryGovernor) -> None:
        super().__init__(ParaformerBackend(model), governor)
        self.decoded_in: set[int] = set()
        self.feature_threads: set[tuple[int, int]] = set()
        features = self.backend.features

        def recording(audio: np.ndarray) -> torch.Tensor:
            self.feature_threads.add((threading.get_ident(), torch.get_num_threads()))
            return features(audio)

        self.backend.features = recording  # type: ignore[method-assign]

    def decode(self, items: Sequence) -> list[Segment | None]:  # type: ignore[type-arg]
        self.decoded_in.add(threading.get_ident())
        return super().decode(items)


def test_one_runner_decodes_in_the_callers_thread(model, clips: list[Path]) -> None:  # type: ignore[no-untyped-def]
    options = EngineOptions(vad="none", batch_frames=300)
    governor = MemoryGovernor.for_cpu(Engine(model, options).governor_options())
    runner = ThreadRecordingRunner(model, governor)
    engine = Engine(model, options, runners=[runner])
    results = list(engine.transcribe_many(clips))
    assert all(r.transcript is not None for r in results)
    assert engine.stats.batches > 1
    assert runner.decoded_in == {threading.get_ident()}


def test_feature_workers_leave_the_cores_to_the_model(model, clips: list[Path]) -> None:  # type: ignore[no-untyped-def]
    options = EngineOptions(vad="none")
    governor = MemoryGovernor.for_cpu(Engine(model, options).governor_options())
    runner = ThreadRecordingRunner(model, governor)
    threads = torch.get_num_threads()
    list(Engine(model, options, runners=[runner]).transcribe_many(clips))
    assert {count for _, count in runner.feature_threads} == {1}
    assert threading.get_ident() not in {ident for ident, _ in runner.feature_threads}
    assert torch.get_num_threads() == threads


class FakeProbe:
    """A pretend GPU: 8 GB free, and each warm-up frame costs 1 MB of peak memory."""

    def __init__(self) -> None:
        self.peak = 0

    def free_bytes(self) -> int:
        return 8 * 2**30

    def total_bytes(self) -> int:
        return 16 * 2**30

    def allocated_bytes(self) -> int:
        return 0

    def reset_peak(self) -> None:
        self.peak = 0

    def peak_bytes(self) -> int:
        return self.peak

    def release_cache(self) -> None:
        pass


def test_device_budget_comes_from_free_memory_and_warm_up_cost(
    model, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    probe = FakeProbe()
    engine = Engine(model, EngineOptions(vad_options=VadOptions(max_segment_s=12.0)))
    original = zhuanxie.backend.decode_batch

    def measured(*args, **kwargs):  # type: ignore[no-untyped-def]
        feats = args[1]
        probe.peak = feats.shape[0] * feats.shape[1] * 2**20
        return original(*args, **kwargs)

    monkeypatch.setattr(zhuanxie.backend, "decode_batch", measured)
    governor = engine.make_governor(ParaformerBackend(model), probe)
    # 80% of 8 GiB at 1 MiB per frame
    assert governor.budget.max_padded_frames == int(8 * 1024 * 0.8)


def test_each_batch_is_logged_and_counted(
    model, clips: list[Path], caplog: pytest.LogCaptureFixture
) -> None:  # type: ignore[no-untyped-def]
    engine = Engine(model, EngineOptions(vad="none"))
    with caplog.at_level("INFO", logger="zhuanxie.engine"):
        list(engine.transcribe_many(clips))
    batches = [r for r in caplog.records if r.getMessage() == "batch"]
    assert len(batches) == engine.stats.batches > 0
    assert sum(r.items for r in batches) == engine.stats.segments == len(clips)  # type: ignore[attr-defined]
    for record in batches:
        assert record.padded_frames >= 1  # type: ignore[attr-defined]
        assert 0.0 <= record.padding_ratio < 1.0  # type: ignore[attr-defined]
        assert record.peak_memory_bytes > 0  # type: ignore[attr-defined]
    assert engine.stats.speed > 0
    assert engine.stats.peak_memory_bytes > 0
