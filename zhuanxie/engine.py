"""The throughput engine: many inputs in, one transcript per input out, the device kept busy.

    inputs ─► decode workers ─► segments ─► scheduler ─► batches ─► runners ─► results ─► regroup
              (threads: decode,  (bounded    (pools ready  (bounded   (one per    (per input,
               resample, VAD,     queue)      segments of   queue)     device)     in segment
               features)                      every input,                         order)
                                              length-sorted
                                              batches)

Every queue is bounded, so memory stays bounded however long or many the inputs are; a worker
blocks when the scheduler is behind. An input that fails (unreadable file, bad audio) is reported
as that input's error and the others go on. Segments of different inputs share batches; an
item's result does not depend on its batch-mates (see ``decoding``).

With one runner, ``transcribe_many`` decodes in the thread that collects the results rather than
in a thread of its own, and the workers run their tensor work serially: on a CPU, PyTorch work
in a second thread slows every kernel of the first (see ``threads``).
"""

from __future__ import annotations

import collections
import contextlib
import logging
import math
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from zhuanxie.audio import SAMPLE_RATE, AudioError, AudioOptions, Source, stream_audio
from zhuanxie.backend import LFR_SECONDS, Backend, ParaformerBackend
from zhuanxie.batching import BatchBudget, next_batch, padded_frames
from zhuanxie.fsmn_vad import FsmnVad
from zhuanxie.governor import (
    CudaMemoryProbe,
    GovernorOptions,
    HeapTrimmer,
    ItemOutOfMemoryError,
    MemoryGovernor,
    MemoryProbe,
    bound_native_memory,
    measure_frame_cost,
    run_with_oom_recovery,
)
from zhuanxie.hotwords import hotwords_found, normalize_hotwords
from zhuanxie.postprocess import PostProcessor
from zhuanxie.recognizer import Model
from zhuanxie.result import Segment, Transcript
from zhuanxie.text import join_texts
from zhuanxie.threads import serial_native_threads
from zhuanxie.vad import SileroVad, SpeechSegment, VadOptions, fixed_segments

log = logging.getLogger("zhuanxie.engine")

# How long the scheduler waits for more segments before running a partial batch while a runner
# is idle: long enough to pool the segments of a file that is being decoded, short enough that
# the device never idles noticeably.
POOL_WAIT_S = 0.05
# The scheduler pools at most this many batches' worth of frames: enough to sort segments into
# well-filled batches (on a CPU, 16 made the 20-minute recording 13% faster than 4: 22 batches
# instead of 46), and a bound on memory that does not depend on how long segments are (16 CPU
# batches of features are 36 MB).
POOL_BATCHES = 16
# Segments a decode worker may hand over ahead of the scheduler's pool.
HANDOFF_SEGMENTS = 16


@dataclass(frozen=True)
class EngineOptions:
    """How the engine runs; the same for every input. Vary with ``dataclasses.replace``."""

    vad: Literal["silero", "fsmn", "none"] = "silero"
    """Segmenter: Silero VAD, or none (short inputs whole, long ones cut at quiet points)."""
    vad_options: VadOptions = field(default_factory=VadOptions)
    """Silero thresholds, padding and the maximum segment length (also used by vad='none'
    and, for the maximum length only, by vad='fsmn')."""
    vad_model: str | None = None
    """The FSMN-VAD model directory, for vad='fsmn' (its config.yaml gives the other options)."""
    decode_workers: int = 2
    """Threads that decode, resample, segment and compute features, overlapping the model."""
    max_batch_size: int = 64
    """Most segments in one batch."""
    batch_frames: int | None = None
    """Padded LFR frames (60 ms) per batch; None lets the memory governor choose."""
    min_length_ratio: float = 0.75
    """A segment joins a batch only if at least this share of the batch's longest, which keeps
    padding under 25%. On a CPU batching buys little and padding is pure waste; on a GPU,
    lower it (0 packs purely by the memory budget)."""
    queue_segments: int = 256
    """Segments pooled for batching, at most (and at most 16 batches' worth of frames);
    with the decode workers' hand-off, this bounds memory for any input length."""
    chunk_seconds: float = 30.0
    """Audio decoded per step of a streaming input."""

    def __post_init__(self) -> None:
        if self.vad not in ("silero", "fsmn", "none"):
            raise ValueError(f"vad must be 'silero', 'fsmn' or 'none', not {self.vad!r}")
        if self.vad == "fsmn" and self.vad_model is None:
            raise ValueError("vad='fsmn' needs vad_model, an FSMN-VAD model directory")
        for name in ("decode_workers", "max_batch_size", "queue_segments"):
            if getattr(self, name) < 1:
                raise ValueError(f"EngineOptions.{name} must be >= 1, not {getattr(self, name)}")
        if self.batch_frames is not None and self.batch_frames < 1:
            raise ValueError(f"EngineOptions.batch_frames must be >= 1, not {self.batch_frames}")
        if self.chunk_seconds <= 0:
            raise ValueError(f"EngineOptions.chunk_seconds must be > 0, not {self.chunk_seconds}")


@dataclass(frozen=True)
class AudioInput:
    """One input and its per-input settings."""

    source: Source
    """A path, the bytes of an encoded file, or a numpy array (give ``sample_rate``)."""
    sample_rate: int | None = None
    hotwords: tuple[str, ...] = ()
    channel: int | None = None
    """Decode one channel (0-based) instead of mixing all channels down."""
    name: str | None = None
    """How results and errors refer to this input; defaults to the path."""
    vad: bool = True
    """False: the input is one utterance (or already cut), so it skips the VAD and passes
    through whole (cut at quiet points only if longer than the maximum segment length)."""
    punctuation: bool = True
    """Punctuate this input, when the engine has a punctuation model."""
    itn: bool = True
    """Normalise this input's numbers and dates, when the engine has ITN."""
    priority: int = 0
    """Higher runs first: its decoding skips the queue of waiting inputs and its segments are
    batched before any of lower priority (0: bulk work; the server uses 1 for interactive
    requests, 2 for live interim results and 3 for live finals)."""

    @property
    def label(self) -> str:
        if self.name is not None:
            return self.name
        if isinstance(self.source, (str, Path)):
            return str(self.source)
        return "<bytes>" if isinstance(self.source, bytes) else "<array>"


Cause = Literal["input", "memory", "internal", "cancelled", "closed"]
"""Why an input failed: its own problem (unreadable, not audio, bad options), a segment too big
for the device's memory even alone, an unexpected error inside zhuanxie, the caller cancelled it,
or the service closed first."""


@dataclass(frozen=True)
class InputResult:
    """What became of one input: a transcript, or the reason it failed."""

    index: int  # position in the inputs given to ``transcribe_many``
    name: str
    transcript: Transcript | None
    error: str | None = None
    cause: Cause | None = None  # set with ``error``


@dataclass(frozen=True)
class Progress:
    inputs_done: int
    inputs_failed: int
    audio_seconds: float  # of finished inputs
    elapsed_seconds: float


@dataclass
class EngineStats:
    """Running counters for the server, the UI and logs (read them any time)."""

    batches: int = 0
    segments: int = 0
    padded_frames: int = 0
    real_frames: int = 0
    audio_seconds: float = 0.0
    model_seconds: float = 0.0
    queue_depth: int = 0
    out_of_memory: int = 0
    peak_memory_bytes: int = 0  # device memory on a GPU, else the process's peak RSS

    @property
    def padding_ratio(self) -> float:
        return 1 - self.real_frames / self.padded_frames if self.padded_frames else 0.0

    @property
    def speed(self) -> float:
        """Audio seconds decoded per second of model time (x real time)."""
        return self.audio_seconds / self.model_seconds if self.model_seconds else 0.0


@dataclass(frozen=True, eq=False)
class _Item:
    """A segment ready for the model."""

    input_index: int
    segment_index: int
    start: float  # seconds on the input's timeline
    duration: float
    features: Any  # the backend's model input, on the CPU
    frames: int  # its cost in the batch budget (60 ms frames)
    hotwords: tuple[str, ...]
    priority: int


@dataclass(frozen=True)
class _InputEnd:
    input_index: int
    segments: int
    duration: float


@dataclass(frozen=True)
class _InputError:
    input_index: int
    error: str
    cause: Cause = "input"


@dataclass(frozen=True)
class _Done:
    """A decoded segment; it holds no features, so finished work frees its memory at once."""

    input_index: int
    segment_index: int
    segment: Segment | None
    error: str | None = None
    cause: Cause | None = None


@dataclass(frozen=True, eq=False)
class _Batch:
    """A batch for the runner that decodes in the collecting thread."""

    items: list[_Item]


_Message = _Item | _InputEnd | _InputError
# Marks "nothing more is waiting" inside the collector's loop.
_FLUSH = _InputError(-1, "")


class Runner:
    """One backend (a model on a device), decoding one batch at a time under its own memory
    governor."""

    def __init__(self, backend: Backend, governor: MemoryGovernor) -> None:
        self.backend = backend
        self.governor = governor

    def run_batch(self, items: Sequence[_Item]) -> list[_Done]:
        """Decode one batch, recovering from out-of-memory by splitting it."""
        lengths = [it.frames for it in items]

        def run(indices: Sequence[int]) -> list[Segment | None]:
            return self.decode([items[i] for i in indices])

        try:
            outcomes: list[Segment | BaseException | None] = list(
                run_with_oom_recovery(lengths, run, self.governor)
            )
        # A batch that fails for any other reason fails its items' inputs, not the run.
        except Exception as e:
            log.exception("batch of %d segments failed", len(items))
            outcomes = [e] * len(items)
        return [self._done(item, outcome) for item, outcome in zip(items, outcomes, strict=True)]

    def decode(self, items: Sequence[_Item]) -> list[Segment | None]:
        return self.backend.decode(
            [it.features for it in items],
            [it.hotwords for it in items],
            [it.start for it in items],
            [it.duration for it in items],
        )

    @staticmethod
    def _done(item: _Item, outcome: Segment | BaseException | None) -> _Done:
        if isinstance(outcome, ItemOutOfMemoryError):
            error = (
                f"the {item.duration:.1f} s segment at {item.start:.1f} s ran out of memory "
                f"even alone ({outcome.reason}); lower the maximum segment length "
                "or free device memory"
            )
            return _Done(item.input_index, item.segment_index, None, error, "memory")
        if isinstance(outcome, BaseException):
            error = f"{type(outcome).__name__}: {outcome}"
            return _Done(item.input_index, item.segment_index, None, error, "internal")
        return _Done(item.input_index, item.segment_index, outcome)


class Engine:
    """Transcribes many inputs, pooling their segments into batches shared by one runner per
    model (pass one model per device, or several CPU models to split the cores)."""

    def __init__(
        self,
        models: Model | Backend | Sequence[Model | Backend],
        options: EngineOptions | None = None,
        *,
        runners: Sequence[Runner] | None = None,
        postprocessor: PostProcessor | None = None,
    ) -> None:
        bound_native_memory()
        self.trim_heap = HeapTrimmer()
        self.options = options or EngineOptions()
        self.postprocessor = postprocessor
        if runners is None:
            listed = list(models) if isinstance(models, Sequence) else [models]
            backends = [ParaformerBackend(m) if isinstance(m, Model) else m for m in listed]
            runners = [Runner(b, self.make_governor(b)) for b in backends]
        if not runners:
            raise ValueError("Engine needs at least one model")
        self.runners = list(runners)
        self.backend = self.runners[0].backend
        self.stats = EngineStats()
        self.stats_lock = threading.Lock()
        self.vad: SileroVad | FsmnVad | None = None
        if self.options.vad == "silero":
            self.vad = SileroVad()
        elif self.options.vad == "fsmn":
            assert self.options.vad_model is not None
            self.vad = FsmnVad(self.options.vad_model)

    def governor_options(self) -> GovernorOptions:
        options = GovernorOptions(
            max_batch_size=self.options.max_batch_size,
            min_length_ratio=self.options.min_length_ratio,
        )
        frames = self.options.batch_frames
        if frames is None:
            return options
        return replace(
            options,
            cpu_padded_frames=frames,
            min_padded_frames=min(frames, options.min_padded_frames),
        )

    def make_governor(self, backend: Backend, probe: MemoryProbe | None = None) -> MemoryGovernor:
        """The budget for ``backend``: fixed on the CPU; on a GPU (or with ``probe``), sized from
        free memory and the bytes per frame of a warm-up batch of maximum-length segments."""
        options = self.governor_options()
        if probe is None and backend.device.type == "cuda":
            probe = CudaMemoryProbe(backend.device)
        if probe is None:
            return MemoryGovernor.for_cpu(options)
        if self.options.batch_frames is not None:
            # A fixed budget, but still shrunk on out-of-memory, with the cache freed.
            return MemoryGovernor(options, self.options.batch_frames, probe)
        frames = 2 * math.ceil(self.options.vad_options.max_segment_s / LFR_SECONDS)
        cost = measure_frame_cost(probe, lambda: backend.warm_up(frames), frames)
        governor = MemoryGovernor.for_device(options, probe, cost)
        log.info(
            "memory budget",
            extra={
                "device": str(backend.device),
                "bytes_per_frame": round(cost),
                "frames": governor.frames,
            },
        )
        return governor

    @property
    def budget(self) -> BatchBudget:
        """The batch limits every runner can take (the smallest budget of them all)."""
        budgets = [r.governor.budget for r in self.runners]
        return min(budgets, key=lambda b: b.max_padded_frames)

    def transcribe(self, source: Source | AudioInput) -> Transcript:
        """One input -> its transcript; raises ValueError with the reason if it fails."""
        result = next(iter(self.transcribe_many([source])))
        if result.transcript is None:
            raise ValueError(f"{result.name}: {result.error}")
        return result.transcript

    def transcribe_many(
        self,
        inputs: Iterable[Source | AudioInput],
        progress: Callable[[Progress], None] | None = None,
    ) -> Iterator[InputResult]:
        """Results as inputs complete (not necessarily in input order; see ``index``).

        ``inputs`` is read lazily, so it may be a generator over millions of files.
        Closing the iterator early stops every worker. If ``inputs`` raises, the inputs read
        before are finished and reported, then the error is raised.
        """
        # Decoding in the caller's thread, which usually loaded the model, is what a CPU needs:
        # a second thread of PyTorch work would slow every kernel (see ``threads``).
        run = Run(self, progress, inline=len(self.runners) == 1)
        run.start()
        feeder = threading.Thread(target=run.feed, args=(inputs,), daemon=True)
        feeder.start()
        run.threads.append(feeder)
        try:
            yield from run.results()
        finally:
            run.stop()
        if run.feed_error is not None:
            raise run.feed_error

    def segments(self, spec: AudioInput, counter: SampleCounter) -> Iterator[SpeechSegment]:
        """The input's speech segments; ``counter`` learns its length as it streams."""
        audio_options = AudioOptions(channel=spec.channel, chunk_seconds=self.options.chunk_seconds)
        chunks = counter.count(
            stream_audio(spec.source, sample_rate=spec.sample_rate, options=audio_options)
        )
        limit = self.options.vad_options.max_segment_s
        if isinstance(self.vad, FsmnVad):
            return self.vad.segments(
                chunks, replace(self.vad.options, max_single_segment_ms=round(limit * 1000))
            )
        if self.vad is None or not spec.vad:
            return fixed_segments(chunks, limit)
        return self.vad.segments(chunks, self.options.vad_options)

    def features(self, audio: np.ndarray) -> Any:
        """One segment's model input, computed on the CPU (decode workers call this)."""
        return self.backend.features(audio)

    def record(self, runner: Runner, items: Sequence[_Item], elapsed: float) -> None:
        """Count a finished batch and log it as one structured line."""
        lengths = [it.frames for it in items]
        padded = padded_frames(lengths, range(len(lengths)))
        real = sum(lengths)
        with self.stats_lock:
            stats = self.stats
            stats.batches += 1
            stats.segments += len(items)
            stats.padded_frames += padded
            stats.real_frames += real
            stats.audio_seconds += sum(it.duration for it in items)
            stats.model_seconds += elapsed
            stats.out_of_memory = sum(r.governor.stats().oom_events for r in self.runners)
            memory = peak_memory(runner.backend.device)
            stats.peak_memory_bytes = max(stats.peak_memory_bytes, memory)
        log.info(
            "batch",
            extra={
                "device": str(runner.backend.device),
                "items": len(items),
                "padded_frames": padded,
                "padding_ratio": round(1 - real / padded, 4) if padded else 0.0,
                "seconds": round(elapsed, 4),
                "peak_memory_bytes": memory,
            },
        )


class SampleCounter:
    """Counts the samples that pass through a chunk stream."""

    def __init__(self) -> None:
        self.samples = 0

    def count(self, chunks: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        for chunk in chunks:
            self.samples += len(chunk)
            yield chunk


def peak_memory(device: torch.device) -> int:
    """Peak device memory on a GPU, else the process's peak resident set size (bytes)."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class Run:
    """The threads, queues and bookkeeping behind ``transcribe_many`` (one call) or a
    ``Service`` (for as long as it lives).

    Inputs of priority > 0 travel in their own lanes: an unbounded queue that decode workers
    check first, and an unbounded segment queue the scheduler reads even when its pool is full.
    Callers bound them by admitting only so much urgent work (the service does).
    """

    def __init__(
        self,
        engine: Engine,
        progress: Callable[[Progress], None] | None = None,
        *,
        urgent_workers: int = 0,
        inline: bool = False,
    ) -> None:
        if inline and len(engine.runners) != 1:
            raise ValueError("only an engine with one runner can decode inline")
        self.engine = engine
        self.progress = progress
        options = engine.options
        self.urgent_workers = urgent_workers
        self.stop_event = threading.Event()
        self.feed_done = threading.Event()  # no more inputs will be added
        self.feed_error: Exception | None = None
        self.pending: queue.Queue[tuple[int, AudioInput]] = queue.Queue(
            maxsize=options.decode_workers * 2
        )
        self.urgent: queue.Queue[tuple[int, AudioInput]] = queue.Queue()
        self.messages: queue.Queue[_Message] = queue.Queue(maxsize=HANDOFF_SEGMENTS)
        self.urgent_messages: queue.Queue[_Message] = queue.Queue()
        self.done: queue.Queue[_Done | _InputEnd | _InputError | _Batch | None] = queue.Queue()
        self.batches: queue.Queue[list[_Item] | None] = queue.Queue()
        self.specs: dict[int, AudioInput] = {}  # inputs added and not yet reported
        self.decoded: dict[int, float] = {}  # input -> seconds of its audio decoded so far
        self.cancelled: set[int] = set()
        # Runners in use; the scheduler hands out a batch only while one is free, so segments
        # keep pooling (into larger, better-sorted batches) while every device is busy.
        self.busy = 0
        self.runners_left = len(engine.runners)
        # Inline, the runner decodes in the thread that collects the results (see ``results``).
        self.inline = inline
        self.busy_lock = threading.Lock()
        self.free = threading.Event()
        self.free.set()
        self.threads: list[threading.Thread] = []
        self.workers: list[threading.Thread] = []
        self.started = time.perf_counter()

    def start(self) -> None:
        count = self.engine.options.decode_workers
        self.workers = [self._spawn(self._work, False) for _ in range(count)]
        self.workers += [self._spawn(self._work, True) for _ in range(self.urgent_workers)]
        if not self.inline:
            for runner in self.engine.runners:
                self._spawn(self._run_batches, runner)
        self._spawn(self._schedule)

    def feed(self, inputs: Iterable[Source | AudioInput]) -> None:
        """Add every input, then mark the end of the inputs. If ``inputs`` raises, the inputs
        added so far still finish and the error is kept in ``feed_error``."""
        try:
            for index, source in enumerate(inputs):
                spec = source if isinstance(source, AudioInput) else AudioInput(source)
                if not self.add(index, spec):
                    return
        except Exception as e:
            self.feed_error = e
        finally:
            self.feed_done.set()

    def add(self, index: int, spec: AudioInput) -> bool:
        """Queue one input (blocks while the bulk lane is full); False if the run stopped."""
        self.specs[index] = spec
        if spec.priority > 0:
            self.urgent.put((index, spec))
            return True
        return self._put(self.pending, (index, spec))

    def cancel(self, index: int) -> None:
        """Stop work on an input; it is reported as failed with the error "cancelled"."""
        self.cancelled.add(index)
        self.done.put(_InputError(index, "cancelled", "cancelled"))

    def results(self) -> Iterator[InputResult]:
        """Results as inputs complete. In an inline run, this is also where batches are decoded,
        so nothing is decoded while the caller holds a result, and a cancelled input is reported
        after the batch in progress."""
        yield from self._collect()

    def stop(self) -> None:
        self.stop_event.set()
        for thread in self.threads:
            thread.join(timeout=30)

    def _spawn(self, target: Callable[..., None], *args: object) -> threading.Thread:
        thread = threading.Thread(target=target, args=args, daemon=True)
        thread.start()
        self.threads.append(thread)
        return thread

    def _put(self, q: queue.Queue[Any], value: object) -> bool:
        """Put unless the run is stopping; False if it stopped."""
        while not self.stop_event.is_set():
            try:
                q.put(value, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _work(self, urgent_only: bool) -> None:
        serial_native_threads()  # features and VAD are small; the cores belong to the model
        while not self.stop_event.is_set():
            # Read the end mark before the queues: an input added before it is then seen.
            ending = self.feed_done.is_set()
            try:
                job = self.urgent.get_nowait()
            except queue.Empty:
                try:
                    lane = self.urgent if urgent_only else self.pending
                    job = lane.get(timeout=0.05)
                except queue.Empty:
                    if ending and self.urgent.empty() and self.pending.empty():
                        return
                    continue
            self._segment(*job)

    def _segment(self, index: int, spec: AudioInput) -> None:
        engine = self.engine
        count, counter = 0, SampleCounter()
        messages = self.urgent_messages if spec.priority > 0 else self.messages
        try:
            hotwords = normalize_hotwords(spec.hotwords)
            if hotwords and not engine.backend.supports_hotwords:
                raise ValueError(f"hotwords are not supported by {engine.backend.name}")
            backend = engine.backend
            for segment in engine.segments(spec, counter):
                if index in self.cancelled:
                    break  # the end message below tells the collector this worker is done
                features = backend.features(segment.audio)
                frames = backend.frames(features)
                if frames == 0:  # too short for one analysis frame
                    continue
                item = _Item(
                    index,
                    count,
                    segment.start / SAMPLE_RATE,
                    (segment.end - segment.start) / SAMPLE_RATE,
                    features,
                    frames,
                    hotwords,
                    spec.priority,
                )
                if not self._put(messages, item):
                    return
                count += 1
        # An input can fail in any library on the way (decoder, resampler, VAD); whatever the
        # cause, it becomes that input's error and the run goes on.
        except (AudioError, ValueError) as e:  # the input's own problem, already explained
            self._put(messages, _InputError(index, str(e)))
            return
        except Exception as e:
            log.exception("input %s failed", spec.label)
            self._put(messages, _InputError(index, f"{type(e).__name__}: {e}", "internal"))
            return
        self._put(messages, _InputEnd(index, count, counter.samples / SAMPLE_RATE))

    def _schedule(self) -> None:
        """Pool segments from every input; hand a runner the next batch when one is free.

        The most urgent segments in the pool are batched first, and at once: interactive work
        does not wait for a fuller batch.
        """
        engine = self.engine
        cap = engine.options.queue_segments
        pool: list[_Item] = []
        while not self.stop_event.is_set():
            frames = POOL_BATCHES * engine.budget.max_padded_frames
            full = len(pool) >= cap or sum(it.frames for it in pool) >= frames
            message: _Message | None = None
            with contextlib.suppress(queue.Empty):
                message = self.urgent_messages.get_nowait()
            if message is None and not full:  # a full pool stops reading bulk work
                with contextlib.suppress(queue.Empty):
                    message = self.messages.get(timeout=POOL_WAIT_S)
            elif message is None:
                self.free.wait(timeout=POOL_WAIT_S)
            if isinstance(message, _Item):
                pool.append(message)
            elif message is not None:
                self.done.put(message)
            if self.cancelled:
                pool = [it for it in pool if it.input_index not in self.cancelled]
            engine.stats.queue_depth = (
                self.messages.qsize() + self.urgent_messages.qsize() + len(pool)
            )
            finished = self.feed_done.is_set() and not any(w.is_alive() for w in self.workers)
            drained = finished and self.messages.empty() and self.urgent_messages.empty()
            if self.free.is_set() and pool:
                top = max(it.priority for it in pool)
                candidates = [i for i, it in enumerate(pool) if it.priority == top]
                idle = message is None  # nothing arrived for a while: don't hold segments back
                flush = top > 0 or idle or drained or full
                lengths = [pool[i].frames for i in candidates]
                chosen = next_batch(lengths, engine.budget, flush=flush)
                if chosen is not None:
                    keep = {candidates[i] for i in chosen}
                    self._dispatch([pool[i] for i in sorted(keep)])
                    pool = [it for i, it in enumerate(pool) if i not in keep]
            if drained and not pool:
                break
        if self.inline:  # after every batch it was handed: the queue keeps their order
            self.done.put(None)
        else:
            for _ in self.engine.runners:
                self.batches.put(None)

    def _dispatch(self, batch: list[_Item]) -> None:
        with self.busy_lock:
            self.busy += 1
            if self.busy == len(self.engine.runners):
                self.free.clear()
        if self.inline:
            self.done.put(_Batch(batch))
        else:
            self.batches.put(batch)

    def _decode(self, runner: Runner, batch: list[_Item]) -> list[_Done]:
        started = time.perf_counter()
        done = runner.run_batch(batch)
        self.engine.record(runner, batch, time.perf_counter() - started)
        self.engine.trim_heap()
        with self.busy_lock:
            self.busy -= 1
            self.free.set()
        return done

    def _run_batches(self, runner: Runner) -> None:
        while (batch := self.batches.get()) is not None:
            for done in self._decode(runner, batch):
                self.done.put(done)
        with self.busy_lock:
            self.runners_left -= 1
            if self.runners_left == 0:
                self.done.put(None)

    def _collect(self) -> Iterator[InputResult]:
        parts: dict[int, list[_Done]] = {}
        ends: dict[int, _InputEnd] = {}
        failed: set[int] = set()  # inputs already reported; their late messages are dropped
        ready: list[tuple[int, Transcript]] = []  # complete, waiting for post-processing
        backlog: collections.deque[_Done] = collections.deque()  # from the inline runner
        finished, seconds = 0, 0.0
        while True:
            # Block only when nothing is ready: inputs completed in the same round are then
            # post-processed (punctuated) together, as one batch.
            message: _Done | _InputEnd | _InputError | _Batch | None
            if backlog:
                message = backlog.popleft()
            else:
                try:
                    message = self.done.get(block=not ready)
                except queue.Empty:
                    message = _FLUSH
            if isinstance(message, _Batch):
                backlog.extend(self._decode(self.engine.runners[0], message.items))
                continue
            if message is None or message is _FLUSH:
                for index, transcript in self._postprocess(ready):
                    finished += 1
                    seconds += transcript.duration
                    yield InputResult(index, self._name(index), transcript)
                    self._report(finished, len(failed), seconds)
                ready = []
                if message is None:
                    return
                continue
            index = message.input_index
            if index in failed:
                if not isinstance(message, _Done):  # a cancelled input's worker has finished
                    self.cancelled.discard(index)
                continue
            if isinstance(message, _Done):
                parts.setdefault(index, []).append(message)
                if message.segment is not None:
                    reached = max(self.decoded.get(index, 0.0), message.segment.end)
                    self.decoded[index] = reached
            elif isinstance(message, _InputEnd):
                ends[index] = message
            else:
                failed.add(index)
                parts.pop(index, None)
                ends.pop(index, None)
                finished += 1
                yield InputResult(index, self._name(index), None, message.error, message.cause)
                self._report(finished, len(failed), seconds)
                continue
            end = ends.get(index)
            if end is None or len(parts.get(index, [])) < end.segments:
                continue
            del ends[index]
            done = sorted(parts.pop(index, []), key=lambda d: d.segment_index)
            errors = [d for d in done if d.error is not None]
            if errors:
                failed.add(index)
                finished += 1
                first = errors[0]
                yield InputResult(index, self._name(index), None, first.error, first.cause)
                self._report(finished, len(failed), seconds)
            else:
                kept = tuple(d.segment for d in done if d.segment is not None)
                hotwords = normalize_hotwords(self.specs[index].hotwords)
                ready.append((index, assemble(kept, end.duration, hotwords)))

    def _postprocess(self, ready: list[tuple[int, Transcript]]) -> list[tuple[int, Transcript]]:
        processor = self.engine.postprocessor
        if processor is None or not ready:
            return ready
        specs = [self.specs[index] for index, _ in ready]
        done = processor.apply(
            [t for _, t in ready],
            punctuate=[s.punctuation for s in specs],
            normalize=[s.itn for s in specs],
        )
        return [(index, t) for (index, _), t in zip(ready, done, strict=True)]

    def _report(self, finished: int, failed: int, seconds: float) -> None:
        if self.progress is not None:
            elapsed = time.perf_counter() - self.started
            self.progress(Progress(finished, failed, seconds, elapsed))

    def _name(self, index: int) -> str:
        """The input's name; its bookkeeping ends here, as it is reported."""
        spec = self.specs.pop(index, None)
        self.decoded.pop(index, None)
        return spec.label if spec is not None else str(index)


def assemble(
    segments: tuple[Segment, ...], duration: float, hotwords: tuple[str, ...] = ()
) -> Transcript:
    """Join an input's segment results (in order) into its transcript, with the ``hotwords``
    asked for and those found in the text.

    Its language is the one spoken longest among the segments that name one (Whisper detects it
    per segment); without any (Paraformer), the transcript keeps its default, "zh".
    """
    text = join_texts([s.text for s in segments])
    transcript = Transcript(
        text=text,
        duration=duration,
        segments=segments,
        hotwords=hotwords,
        hotwords_found=hotwords_found(text, hotwords),
    )
    spoken: dict[str, float] = {}
    for s in segments:
        if s.language is not None:
            spoken[s.language] = spoken.get(s.language, 0.0) + s.end - s.start
    if not spoken:
        return transcript
    return replace(transcript, language=max(spoken, key=spoken.__getitem__))
