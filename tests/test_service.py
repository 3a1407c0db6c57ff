"""The shared service: callers on many threads, one scheduler, priorities, limits, cancelling."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from pathlib import Path

import numpy as np
import pytest

from zhuanxie.backend import ParaformerBackend
from zhuanxie.engine import AudioInput, Engine, EngineOptions, InputResult, Runner
from zhuanxie.governor import MemoryGovernor
from zhuanxie.recognizer import Model, load_model
from zhuanxie.result import Segment
from zhuanxie.service import CANCELLED, CLOSED, OverloadedError, Service, ServiceOptions
from zhuanxie.vad import VadOptions

OPTIONS = EngineOptions(vad="none")


@pytest.fixture(scope="module")
def model(tiny_model_dir: Callable[..., Path]) -> Model:
    return load_model(tiny_model_dir("seaco-paraformer-tiny"))


@pytest.fixture(scope="module")
def waves() -> list[np.ndarray]:
    rng = np.random.default_rng(5)
    return [
        rng.normal(0, 0.1, int(rng.uniform(1, 4) * 16000)).astype(np.float32) for _ in range(12)
    ]


class GatedRunner(Runner):
    """Holds its first batch until ``gate`` is set, and records each batch's priorities."""

    def __init__(self, model: Model, engine: Engine) -> None:
        super().__init__(
            ParaformerBackend(model), MemoryGovernor.for_cpu(engine.governor_options())
        )
        self.gate = threading.Event()
        self.started = threading.Event()
        self.batches: list[list[int]] = []

    def decode(self, items: Sequence) -> list[Segment | None]:  # type: ignore[type-arg]
        self.started.set()
        self.gate.wait(timeout=30)
        self.batches.append([it.priority for it in items])
        return super().decode(items)


def gated(model: Model, options: EngineOptions = OPTIONS) -> tuple[Engine, GatedRunner]:
    plain = Engine(model, options)
    runner = GatedRunner(model, plain)
    return Engine(model, options, runners=[runner]), runner


def inputs(waves: list[np.ndarray], priority: int = 0) -> list[AudioInput]:
    return [
        AudioInput(w, sample_rate=16000, name=f"w{i}", priority=priority)
        for i, w in enumerate(waves)
    ]


def texts(results: Sequence[InputResult]) -> dict[str, str | None]:
    return {r.name: r.transcript.text if r.transcript else r.error for r in results}


def test_results_equal_transcribe_many(model: Model, waves: list[np.ndarray]) -> None:
    expected = texts(list(Engine(model, OPTIONS).transcribe_many(inputs(waves))))
    with Service(Engine(model, OPTIONS)) as service:
        futures = [service.submit(spec) for spec in inputs(waves)]
        assert texts([f.result(timeout=60) for f in futures]) == expected


def test_callers_on_different_threads_share_batches(model: Model, waves: list[np.ndarray]) -> None:
    engine, runner = gated(model)
    with Service(engine) as service:
        first = service.submit(AudioInput(waves[0], sample_rate=16000))
        runner.started.wait(timeout=30)
        futures: list[Future[InputResult]] = []
        threads = [
            threading.Thread(target=lambda s=spec: futures.append(service.submit(s)))
            for spec in inputs(waves[1:])
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        while service.load().backlog or engine.stats.queue_depth < len(waves) - 1:
            threading.Event().wait(0.01)
        runner.gate.set()
        assert all(f.result(timeout=60).transcript for f in [first, *futures])
    # The first batch held the first input alone; the other callers' inputs pooled meanwhile.
    assert len(runner.batches) < len(waves) - 1


def test_urgent_input_runs_before_waiting_bulk_work(model: Model, waves: list[np.ndarray]) -> None:
    engine, runner = gated(model, EngineOptions(vad="none", max_batch_size=1))
    with Service(engine) as service:
        bulk = [service.submit(spec) for spec in inputs(waves)]
        runner.started.wait(timeout=30)
        urgent = service.submit(AudioInput(waves[0], sample_rate=16000, priority=1))
        while engine.stats.queue_depth < len(waves):  # the urgent segment joined the pool
            threading.Event().wait(0.01)
        runner.gate.set()
        assert urgent.result(timeout=60).transcript is not None
        assert all(f.result(timeout=60).transcript for f in bulk)
    # Batch 1 was already running; the urgent segment went next, ahead of 11 waiting ones.
    assert runner.batches[:3] == [[0], [1], [0]]


class StallingRunner(GatedRunner):
    """Decodes two batches, then holds the rest until ``gate`` is set."""

    def decode(self, items: Sequence) -> list[Segment | None]:  # type: ignore[type-arg]
        if len(self.batches) == 2:
            self.started.set()
            self.gate.wait(timeout=30)
        self.batches.append([it.priority for it in items])
        return Runner.decode(self, items)


def test_progress_reports_the_audio_decoded_so_far(model: Model, waves: list[np.ndarray]) -> None:
    options = EngineOptions(vad="none", max_batch_size=1, vad_options=VadOptions(max_segment_s=2))
    runner = StallingRunner(model, Engine(model, options))
    wave = np.concatenate(waves[:4])
    with Service(Engine(model, options, runners=[runner])) as service:
        future = service.submit(AudioInput(wave, sample_rate=16000))
        runner.started.wait(timeout=30)
        while service.progress(future) == 0:  # until a decoded segment reaches the collector
            threading.Event().wait(0.01)
        seen = service.progress(future)
        runner.gate.set()
        transcript = future.result(timeout=60).transcript
        assert service.progress(future) == 0.0  # finished: no longer tracked
    assert transcript is not None
    assert len(transcript.segments) > 2
    assert seen in {s.end for s in transcript.segments}
    assert 0 < seen < transcript.duration


def test_a_full_urgent_lane_answers_overloaded(model: Model, waves: list[np.ndarray]) -> None:
    engine, runner = gated(model)
    with Service(engine, ServiceOptions(max_urgent=1)) as service:
        service.submit(AudioInput(waves[0], sample_rate=16000, priority=1))
        with pytest.raises(OverloadedError, match="the interactive queue is full") as caught:
            service.submit(AudioInput(waves[1], sample_rate=16000, priority=1))
        assert caught.value.retry_after >= 1
        bulk = service.submit(AudioInput(waves[1], sample_rate=16000))  # the bulk lane is apart
        runner.gate.set()
        assert bulk.result(timeout=60).transcript is not None


def test_cancelling_a_waiting_input(model: Model, waves: list[np.ndarray]) -> None:
    engine, runner = gated(model)
    with Service(engine) as service:
        futures = [service.submit(spec) for spec in inputs(waves)]
        runner.started.wait(timeout=30)
        assert service.cancel(futures[-1])
        runner.gate.set()
        results = [f.result(timeout=60) for f in futures]
    assert (results[-1].name, results[-1].error, results[-1].cause) == (
        f"w{len(waves) - 1}",
        CANCELLED,
        "cancelled",
    )
    assert all(r.transcript is not None for r in results[:-1])


def test_cancelling_an_input_in_the_pipeline(model: Model, waves: list[np.ndarray]) -> None:
    engine, runner = gated(model)
    with Service(engine) as service:
        running = service.submit(AudioInput(waves[0], sample_rate=16000, priority=1))
        runner.started.wait(timeout=30)
        assert service.cancel(running)
        assert (running.result(timeout=60).error, running.result().cause) == (
            CANCELLED,
            "cancelled",
        )
        runner.gate.set()
        after = service.submit(AudioInput(waves[1], sample_rate=16000, priority=1))
        assert after.result(timeout=60).transcript is not None
        assert service.load().urgent == 0


def test_cancelling_a_finished_input_changes_nothing(model: Model, waves: list[np.ndarray]) -> None:
    with Service(Engine(model, OPTIONS)) as service:
        future = service.submit(AudioInput(waves[0], sample_rate=16000))
        result = future.result(timeout=60)
        assert not service.cancel(future)
        assert future.result() is result


def test_closing_resolves_unfinished_inputs(model: Model, waves: list[np.ndarray]) -> None:
    engine, runner = gated(model)
    service = Service(engine)
    futures = [service.submit(spec) for spec in inputs(waves)]
    runner.started.wait(timeout=30)
    runner.gate.set()
    service.close()
    errors = [(f.result(timeout=1).error, f.result().cause) for f in futures]
    assert (CLOSED, "closed") in errors
    with pytest.raises(RuntimeError, match="closed"):
        service.submit(AudioInput(waves[0], sample_rate=16000))


def test_a_bad_input_fails_alone(model: Model, waves: list[np.ndarray]) -> None:
    with Service(Engine(model, OPTIONS)) as service:
        bad = service.submit(AudioInput(b"not audio at all", name="junk.wav", priority=1))
        good = service.submit(AudioInput(waves[0], sample_rate=16000, priority=1))
        result = bad.result(timeout=60)
        assert result.name == "junk.wav"
        assert result.error is not None
        assert result.cause == "input"
        assert good.result(timeout=60).transcript is not None


def test_options_are_validated() -> None:
    with pytest.raises(ValueError, match="max_urgent must be >= 1"):
        ServiceOptions(max_urgent=0)
