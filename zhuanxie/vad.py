"""Voice activity detection: Silero VAD through onnxruntime, streamed, with bounded segment length.

Input is an iterable of float32 mono 16 kHz chunks of any sizes (what `zhuanxie.audio` yields);
output is an iterator of `SpeechSegment`s, each given in samples on the input's timeline together
with its audio, produced while the input is still being read. Memory stays bounded whatever the
input length: a few chunks plus one segment (`max_segment_s`) of audio at most are held. Live audio
is pushed instead (`SileroVad.stream` -> `VadStream`), which also shows the segment still open.

How the model runs. Silero VAD (v5/v6, the weights inside the `silero-vad` wheel) decides once per
512-sample window (32 ms) from that window plus the 64 samples before it, and carries an LSTM state
from window to window, so one stream cannot be batched across time with the per-window model
(`silero_vad.onnx`: input (B, 576), state (2, B, 128), sr). Two ways around the per-call cost:
- one stream: the wheel's sequence export (`silero_vad_16k_sequence.onnx`: input (T, 576), h and c
  (1, 1, 128)) runs the LSTM over a whole chunk inside one onnxruntime call;
- several streams: the per-window model with one row per stream (`SileroVad.segments_many`).
Both give the same probabilities as `silero_vad.get_speech_timestamps` with
`load_silero_vad(onnx=True)`, bit for bit on the machines tested (tests/test_vad.py checks this).
The `silero_vad` Python package is never imported: its `__init__` imports torch and calls
`torch.set_num_threads(1)`, which would throttle the ASR models; the ONNX files are located through
the installed distribution's file list instead.

How probabilities become segments. Silero's own rules (`get_speech_timestamps`): speech starts at a
window with probability >= threshold; it ends once the probability has stayed below neg_threshold
for min_silence_ms, at the first such window; regions not longer than min_speech_ms are dropped;
segments are widened by speech_pad_ms each side. Requiring min_silence_ms >= 2 * speech_pad_ms keeps
padded segments apart, so each one is final as soon as its silence is confirmed. On top of that, a
segment about to grow past max_segment_s is split inside itself at its quietest window (see
`VadOptions.max_segment_s`); the two parts abut, so no audio is lost or repeated.
"""

from __future__ import annotations

import importlib.metadata
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

SAMPLE_RATE = 16000  # Hz; the only rate the Silero sequence export and zhuanxie's models take
WINDOW = 512  # samples per Silero decision (32 ms at 16 kHz)
CONTEXT = 64  # samples before each window that Silero v5+ prepends to it (input width 576)
STATE_SIZE = 128  # Silero's LSTM width
STEP_MODEL = "silero_vad.onnx"  # per-window model, batchable across streams
SEQUENCE_MODEL = "silero_vad_16k_sequence.onnx"  # whole-chunk model for one stream
BLOCK = 1024 * WINDOW  # longest piece given to the model at once (~33 s): bounds transient memory

Samples: TypeAlias = npt.NDArray[np.float32]


@dataclass(frozen=True)
class VadOptions:
    """How speech probabilities become segments; vary per call with `dataclasses.replace`.

    Long-form ASR wants whole sentences rather than Silero's phrase-sized default segments: with
    min_silence_ms=500 and speech_pad_ms=200 the 70 s lecture in the shared corpus gives 13 segments
    where FunASR's FSMN-VAD gives 12 (97% of 10 ms frames agree), against 42 segments (83%) with
    Silero's 100 ms / 30 ms; 800 ms starts merging the Harvard test sentences (FSMN-VAD's own
    end-silence is 800 ms, but Paraformer gains nothing from longer segments and loses timing detail).

    A segment that would pass max_segment_s is cut at the centre of the 512-sample window with the
    lowest speech probability (ties: lowest energy, then latest) among those lying wholly in the
    second half of [segment start, segment start + max_segment_s]; the next segment starts there,
    and is kept however short if it holds any speech (min_speech_ms applies to whole regions).
    """

    threshold: float = 0.5
    """Speech starts at a window whose probability is at least this (Silero's default)."""
    neg_threshold: float | None = None
    """Speech ends below this; None means max(threshold - 0.15, 0.01), as Silero does."""
    min_speech_ms: int = 250
    """Speech regions this short or shorter are dropped (Silero's default)."""
    min_silence_ms: int = 500
    """Silence that ends a segment (Silero's default is 100 ms: see above why longer)."""
    speech_pad_ms: int = 200
    """Audio kept on each side of a segment, so ASR hears word onsets and trailing consonants."""
    max_segment_s: float = 20.0
    """Longest segment: Paraformer is trained on utterances well under this; longer ones are cut."""

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"threshold must lie strictly between 0 and 1, not {self.threshold!r}")
        if self.neg_threshold is not None and not 0.0 <= self.neg_threshold <= self.threshold:
            raise ValueError(
                f"neg_threshold must lie between 0 and threshold ({self.threshold}), not {self.neg_threshold!r}"
            )
        for name in ("min_speech_ms", "min_silence_ms", "speech_pad_ms"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, not {getattr(self, name)!r}")
        if self.min_silence_ms < 2 * self.speech_pad_ms:
            raise ValueError(
                f"min_silence_ms ({self.min_silence_ms}) must be at least 2 * speech_pad_ms"
                f" ({2 * self.speech_pad_ms}) so padded segments never meet"
            )
        if not (math.isfinite(self.max_segment_s) and self.max_segment_s >= 1.0):
            raise ValueError(
                f"max_segment_s must be a finite number >= 1, not {self.max_segment_s!r}"
            )
        if 4 * self.speech_pad_ms > 1000 * self.max_segment_s:
            raise ValueError(
                f"max_segment_s ({self.max_segment_s}) must be at least 4 * speech_pad_ms"
                f" ({4 * self.speech_pad_ms} ms) so a split always has room to search"
            )

    @property
    def exit_threshold(self) -> float:
        """The neg_threshold in force: the given one, or Silero's default derived from threshold."""
        if self.neg_threshold is not None:
            return self.neg_threshold
        return max(self.threshold - 0.15, 0.01)


@dataclass(frozen=True, eq=False)
class SpeechSegment:
    """One stretch of speech; offsets are sample indices (16 kHz) on the input's timeline."""

    start: int
    """First sample of the segment."""
    end: int
    """One past the last sample."""
    audio: Samples
    """The input's samples [start, end), float32, a copy owned by this segment."""


def fixed_segments(
    chunks: Iterable[Samples], max_segment_s: float = 20.0
) -> Iterator[SpeechSegment]:
    """Segments for `vad="none"`: the whole input if it fits in max_segment_s, else pieces of it.

    Every sample lands in exactly one segment. A piece that would exceed max_segment_s is cut at the
    lowest-energy window in its second half, the same rule as `VadOptions.max_segment_s` minus the
    model's vote; it is cut only once the input is known to run past the limit.
    """
    if not (math.isfinite(max_segment_s) and max_segment_s >= 1.0):
        raise ValueError(f"max_segment_s must be a finite number >= 1, not {max_segment_s!r}")
    limit = round(max_segment_s * SAMPLE_RATE)
    tape = _Tape()
    start = 0
    for piece in _checked_pieces(chunks):
        tape.append(piece)
        while tape.end - start > limit:
            first, last = _search_windows(start, start + limit)
            energies = _window_energies(tape, first, last)
            cut = _window_centre(first + _quietest_window(np.zeros_like(energies), energies))
            yield SpeechSegment(start, cut, tape.take(start, cut))
            start = cut
            tape.drop_before(start)
    if tape.end > start:
        yield SpeechSegment(start, tape.end, tape.take(start, tape.end))


class SileroVad:
    """Silero VAD on onnxruntime (CPU). Safe to share between threads: calls keep their own state."""

    def __init__(self, threads: int = 1) -> None:
        """Load both ONNX exports from the installed `silero-vad` wheel.

        threads: onnxruntime intra-op threads per call. One is fastest per core for this small
        model; run several streams (threads, processes or `segments_many`) to use more cores.
        """
        if threads < 1:
            raise ValueError(f"threads must be >= 1, not {threads!r}")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        providers = ["CPUExecutionProvider"]  # the accelerator is kept for ASR
        self._sequence = ort.InferenceSession(
            str(_model_path(SEQUENCE_MODEL)), options, providers=providers
        )
        self._step = ort.InferenceSession(
            str(_model_path(STEP_MODEL)), options, providers=providers
        )

    def speech_probabilities(self, chunks: Iterable[Samples]) -> npt.NDArray[np.float32]:
        """Silero's speech probability per 512-sample window, (ceil(S / 512),) float32.

        The last window is zero-padded, as Silero does.
        """
        framer, state, parts = _Framer(), _SequenceState(), []
        for piece in _checked_pieces(chunks):
            parts.append(self._run_sequence(framer.push(piece), state))
        parts.append(self._run_sequence(framer.flush(), state))
        return np.concatenate(parts)

    def segments(
        self, chunks: Iterable[Samples], options: VadOptions | None = None
    ) -> Iterator[SpeechSegment]:
        """Speech segments of one stream, in order, each yielded as soon as it is final."""
        stream = self.stream(options)
        for piece in _checked_pieces(chunks):
            yield from stream._push_piece(piece)
        yield from stream.finish()

    def stream(self, options: VadOptions | None = None) -> VadStream:
        """A push-style VAD for live audio: feed pieces as they arrive (see `VadStream`)."""
        return VadStream(self, options)

    def segments_many(
        self,
        streams: Iterable[Iterable[Samples]],
        options: VadOptions | None = None,
        batch_size: int = 32,
    ) -> Iterator[tuple[int, SpeechSegment | None]]:
        """Segments of several streams, computed with one model call per window for all of them.

        Yields (index of the stream in `streams`, segment); each stream's segments come in order and
        equal what `segments` gives for it alone, then (index, None) once that stream is exhausted.
        Up to batch_size streams run together; `streams` is read lazily, a new stream starting when
        one finishes.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, not {batch_size!r}")
        options = options or VadOptions()
        waiting = enumerate(streams)
        lanes: list[_Lane] = []
        while True:
            while len(lanes) < batch_size and (entry := next(waiting, None)) is not None:
                lanes.append(_Lane(entry[0], _checked_pieces(entry[1]), _Segmenter(options)))
            for lane in lanes:
                lane.refill()
            for lane in [lane for lane in lanes if not len(lane.pending)]:
                yield from ((lane.index, segment) for segment in lane.segmenter.finish())
                yield lane.index, None
                lanes.remove(lane)
            if not lanes:
                return
            probabilities = self._run_batched(lanes)
            for lane, probs in zip(lanes, probabilities):
                for segment in lane.segmenter.add_probabilities(probs):
                    yield lane.index, segment

    def _run_sequence(
        self, windows: npt.NDArray[np.float32], state: _SequenceState
    ) -> npt.NDArray[np.float32]:
        """Probabilities (T,) for windows (T, 576) of one stream, advancing its LSTM state."""
        if not len(windows):
            return np.zeros(0, dtype=np.float32)
        probs, state.h, state.c = self._sequence.run(
            None, {"input": windows, "h": state.h, "c": state.c}
        )
        return np.asarray(probs, dtype=np.float32).reshape(-1)

    def _run_batched(self, lanes: list[_Lane]) -> npt.NDArray[np.float32]:
        """Probabilities (B, T) for the next T windows every lane has pending; T = the fewest."""
        steps = min(len(lane.pending) for lane in lanes)
        windows = np.stack([lane.pending[:steps] for lane in lanes], axis=1)  # (T, B, 576)
        state = np.stack([lane.state for lane in lanes], axis=1)  # (2, B, 128)
        probs = np.empty((steps, len(lanes)), dtype=np.float32)
        rate = np.array(SAMPLE_RATE, dtype=np.int64)
        for t in range(steps):
            out, state = self._step.run(None, {"input": windows[t], "state": state, "sr": rate})
            probs[t] = out[:, 0]
        for b, lane in enumerate(lanes):
            lane.state = state[:, b]
            lane.pending = lane.pending[steps:]
        return probs.T


class VadStream:
    """Silero VAD over live audio, pushed piece by piece (any sizes).

    `push` returns the segments that became final with that audio; between pushes, `open_start`
    and `open_audio` show the segment still open (speech heard, its end not yet confirmed), which
    is what a live recogniser decodes for interim text. Segments equal what `SileroVad.segments`
    gives for the same audio in one piece. One stream is used from one thread at a time; streams
    of the same `SileroVad` may run on different threads.
    """

    def __init__(self, vad: SileroVad, options: VadOptions | None = None) -> None:
        self._vad = vad
        self._framer, self._state = _Framer(), _SequenceState()
        self._segmenter = _Segmenter(options or VadOptions())
        self._received = 0
        self._finished = False

    @property
    def received(self) -> int:
        """Samples pushed so far."""
        return self._received

    @property
    def open_start(self) -> int | None:
        """First sample of the open segment (padding included), or None in silence."""
        return self._segmenter.open_start

    @property
    def speech_start(self) -> int | None:
        """Where the open speech region was first heard (before padding), or None in silence."""
        return self._segmenter.speech_start

    def open_audio(self) -> Samples:
        """The open segment's samples received so far, [open_start, received); empty in silence."""
        start = self.open_start
        if start is None:
            return np.zeros(0, dtype=np.float32)
        return self._segmenter.take(start, self._received)

    def push(self, samples: Samples) -> list[SpeechSegment]:
        """Add audio (float, mono, 16 kHz); the segments that this audio closed, in order."""
        if self._finished:
            raise RuntimeError("this VAD stream has finished; start a new one")
        found = []
        for piece in _checked_pieces([samples], self._received):
            found += self._push_piece(piece)
        return found

    def finish(self) -> list[SpeechSegment]:
        """End of the audio: decide the last partial window and close the open segment."""
        if self._finished:
            return []
        self._finished = True
        segmenter = self._segmenter
        found = segmenter.add_probabilities(
            self._vad._run_sequence(self._framer.flush(), self._state)
        )
        return found + segmenter.finish()

    def _push_piece(self, piece: Samples) -> list[SpeechSegment]:
        """One checked piece (at most BLOCK samples)."""
        self._received += len(piece)
        self._segmenter.add_audio(piece)
        probs = self._vad._run_sequence(self._framer.push(piece), self._state)
        return self._segmenter.add_probabilities(probs)


def _model_path(name: str) -> Path:
    """Path of one ONNX file inside the installed silero-vad wheel, found without importing it."""
    try:
        files = importlib.metadata.distribution("silero-vad").files or []
    except importlib.metadata.PackageNotFoundError:
        raise FileNotFoundError(
            "Silero VAD needs the silero-vad package for its weights: pip install silero-vad"
        ) from None
    for file in files:
        if file.name == name and file.parent.name == "data":
            return Path(str(file.locate()))
    raise FileNotFoundError(
        f"the installed silero-vad has no data/{name}; install silero-vad >= 6.2.2, the first release that ships it"
    )


def _checked_pieces(chunks: Iterable[Samples], offset: int = 0) -> Iterator[Samples]:
    """The chunks as float32 pieces of at most BLOCK samples, each checked to be mono and finite.

    offset: the stream position of the first chunk, for error messages.
    """
    for chunk in chunks:
        audio = np.asarray(chunk)
        if audio.ndim != 1:
            raise ValueError(
                f"audio chunk at sample {offset} has shape {audio.shape}; expected mono, 1-D samples"
            )
        if not np.issubdtype(audio.dtype, np.floating):
            raise TypeError(
                f"audio chunk at sample {offset} has dtype {audio.dtype}; expected float samples in [-1, 1]"
            )
        audio = audio.astype(np.float32, copy=False)
        bad = np.flatnonzero(~np.isfinite(audio))
        if len(bad):
            raise ValueError(f"audio has a NaN or infinite value at sample {offset + int(bad[0])}")
        for i in range(0, len(audio), BLOCK):
            yield audio[i : i + BLOCK]
        offset += len(audio)


class _SequenceState:
    """LSTM state of one stream for the sequence model: h and c, each (1, 1, 128)."""

    def __init__(self) -> None:
        self.h = np.zeros((1, 1, STATE_SIZE), dtype=np.float32)
        self.c = np.zeros((1, 1, STATE_SIZE), dtype=np.float32)


class _Framer:
    """Cuts a stream into Silero inputs: 512-sample windows, each led by the 64 samples before it."""

    def __init__(self) -> None:
        self._context = np.zeros(CONTEXT, dtype=np.float32)  # zeros before the first window
        self._rest = np.zeros(0, dtype=np.float32)  # samples not yet filling a window

    def push(self, samples: Samples) -> npt.NDArray[np.float32]:
        """Model inputs (T, 576) for the windows completed by these samples."""
        audio = np.concatenate([self._rest, samples])
        count = len(audio) // WINDOW
        self._rest = audio[count * WINDOW :]
        return self._frame(audio[: count * WINDOW].reshape(count, WINDOW))

    def flush(self) -> npt.NDArray[np.float32]:
        """The last partial window zero-padded, as Silero does: (1, 576), or (0, 576) if none."""
        if not len(self._rest):
            return np.zeros((0, CONTEXT + WINDOW), dtype=np.float32)
        window = np.zeros((1, WINDOW), dtype=np.float32)
        window[0, : len(self._rest)] = self._rest
        self._rest = self._rest[:0]
        return self._frame(window)

    def _frame(self, windows: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        frames = np.empty((len(windows), CONTEXT + WINDOW), dtype=np.float32)
        if len(windows):
            frames[:, CONTEXT:] = windows
            frames[0, :CONTEXT] = self._context
            frames[1:, :CONTEXT] = windows[:-1, -CONTEXT:]
            self._context = windows[-1, -CONTEXT:].copy()
        return frames


class _Lane:
    """One stream inside `segments_many`: its reader, framer, segmenter and LSTM state."""

    def __init__(self, index: int, pieces: Iterator[Samples], segmenter: _Segmenter) -> None:
        self.index = index
        self.segmenter = segmenter
        self.state = np.zeros((2, STATE_SIZE), dtype=np.float32)
        self.pending = np.zeros((0, CONTEXT + WINDOW), dtype=np.float32)  # framed, not yet run
        self._pieces: Iterator[Samples] | None = pieces
        self._framer = _Framer()

    def refill(self) -> None:
        """Read until at least one window is pending; none stays pending only at the stream's end."""
        while not len(self.pending) and self._pieces is not None:
            piece = next(self._pieces, None)
            if piece is None:
                self._pieces = None
                self.pending = self._framer.flush()
            else:
                self.segmenter.add_audio(piece)
                self.pending = self._framer.push(piece)


class _Segmenter:
    """Silero's speech/silence rules applied window by window, plus padding and length splits.

    Feed it the stream's audio (`add_audio`) and, as they are computed, the probabilities of its
    windows (`add_probabilities`); it returns segments as they become final. Positions are samples.
    """

    def __init__(self, options: VadOptions) -> None:
        per_ms = SAMPLE_RATE // 1000
        self._threshold = options.threshold
        self._exit_threshold = options.exit_threshold
        self._min_speech = options.min_speech_ms * per_ms
        self._min_silence = options.min_silence_ms * per_ms
        self._pad = options.speech_pad_ms * per_ms
        self._max = round(options.max_segment_s * SAMPLE_RATE)
        self._audio = _Tape()  # samples, from a window boundary on
        self._probs = _Tape()  # one per window, kept alongside the audio for split searches
        self._window = 0  # index of the next window to decide
        self._speech_start: int | None = None  # where the open speech region began; None in silence
        self._segment_start = 0  # where the open region's next segment begins (padded, or a split)
        self._was_split = False
        self._silence_start: int | None = None  # Silero's temp_end: where the current silence began

    @property
    def open_start(self) -> int | None:
        """Where the open segment begins (padded, or at a split), or None in silence."""
        return None if self._speech_start is None else self._segment_start

    @property
    def speech_start(self) -> int | None:
        return self._speech_start

    def take(self, start: int, end: int) -> Samples:
        """Held audio [start, end) (see `_Tape.take`)."""
        return self._audio.take(start, end)

    def add_audio(self, samples: Samples) -> None:
        self._audio.append(samples)

    def add_probabilities(self, probs: npt.NDArray[np.float32]) -> list[SpeechSegment]:
        self._probs.append(probs)
        found = []
        for prob in probs.tolist():
            segment = self._decide(prob, self._window * WINDOW)
            self._window += 1
            if segment is not None:
                found.append(segment)
        # Keep what the open segment needs, or the padding the next segment may reach back to.
        if self._speech_start is not None:
            keep_from = self._segment_start
        else:
            keep_from = max(0, self._window * WINDOW - self._pad)
        keep_from = keep_from // WINDOW * WINDOW
        self._audio.drop_before(keep_from)
        self._probs.drop_before(keep_from // WINDOW)
        return found

    def finish(self) -> list[SpeechSegment]:
        """The open segment, if any, once every window has been decided."""
        end = self._audio.end
        if self._speech_start is None:
            return []
        if self._was_split:
            speech_end = end if self._silence_start is None else self._silence_start
            keep = speech_end > self._segment_start
        else:  # Silero keeps trailing silence shorter than min_silence_ms at the end of the audio
            keep = end - self._speech_start > self._min_speech
        # A trailing silence can run past the limit; what is cut off lies in that silence.
        end = min(end, self._segment_start + self._max)
        return [self._take(self._segment_start, end)] if keep else []

    def _decide(self, prob: float, position: int) -> SpeechSegment | None:
        """Silero's rules for the window starting at `position` (utils_vad.get_speech_timestamps)."""
        if self._speech_start is None:
            if prob >= self._threshold:
                self._speech_start = position
                self._segment_start = max(0, position - self._pad)
                self._was_split = False
            return None
        if prob >= self._threshold:
            self._silence_start = None
        elif prob < self._exit_threshold:
            if self._silence_start is None:
                self._silence_start = position
            if position - self._silence_start >= self._min_silence:
                return self._close(self._silence_start)
        # Split once the segment can no longer end (padded) within the limit and every window up to
        # the limit has been heard; a natural end that would overrun always comes later than this.
        limit = self._segment_start + self._max
        earliest_end = position + WINDOW if self._silence_start is None else self._silence_start
        if earliest_end + self._pad > limit and position + WINDOW >= limit:
            return self._split()
        return None

    def _close(self, speech_end: int) -> SpeechSegment | None:
        """End the open region where its silence began; keep it if long enough (or a split's tail)."""
        start = self._speech_start
        assert start is not None
        self._speech_start = self._silence_start = None
        if self._was_split:
            keep = speech_end > self._segment_start
        else:
            keep = speech_end - start > self._min_speech
        return self._take(self._segment_start, speech_end + self._pad) if keep else None

    def _split(self) -> SpeechSegment:
        """Cut the open region at its quietest window in the second half of the allowed span."""
        start = self._segment_start
        first, last = _search_windows(start, start + self._max)
        probs = self._probs.take(first, last)
        chosen = first + _quietest_window(probs, _window_energies(self._audio, first, last))
        cut = _window_centre(chosen)
        self._segment_start = cut
        self._was_split = True
        return self._take(start, cut)

    def _take(self, start: int, end: int) -> SpeechSegment:
        return SpeechSegment(start, end, self._audio.take(start, end))


def _search_windows(start: int, end: int) -> tuple[int, int]:
    """Windows [first, last) lying wholly in the second half of [start, end)."""
    middle = start + (end - start) // 2
    return -(-middle // WINDOW), end // WINDOW


def _quietest_window(probs: npt.NDArray[np.float32], energies: npt.NDArray[np.float64]) -> int:
    """Index of the lowest probability, ties to the lowest energy, then to the latest window."""
    latest_first = -np.arange(len(probs))
    return int(np.lexsort((latest_first, energies, probs))[0])


def _window_energies(tape: _Tape, first: int, last: int) -> npt.NDArray[np.float64]:
    """Mean square of each window [first, last), zeros past the end of the audio."""
    audio = tape.take(first * WINDOW, last * WINDOW).astype(np.float64)
    return np.square(audio).reshape(last - first, WINDOW).mean(axis=1)


def _window_centre(window: int) -> int:
    return window * WINDOW + WINDOW // 2


class _Tape:
    """The recent part of a growing 1-D float32 stream, addressed by position in the whole stream.

    Appending and dropping are amortised O(1) per value: when the storage is full, the values held
    move to a new one at least twice their number.
    """

    def __init__(self) -> None:
        self._data = np.zeros(0, dtype=np.float32)
        self._head = 0  # index in _data of position `start`
        self.start = 0  # stream position of the first value held
        self.end = 0  # stream position one past the last value held

    def append(self, values: npt.NDArray[Any]) -> None:
        held = self.end - self.start
        if self._head + held + len(values) > len(self._data):
            capacity = max(2 * (held + len(values)), len(self._data))
            data = np.empty(capacity, dtype=np.float32)
            data[:held] = self._data[self._head : self._head + held]
            self._data, self._head = data, 0
        self._data[self._head + held : self._head + held + len(values)] = values
        self.end += len(values)

    def drop_before(self, position: int) -> None:
        """Forget values before `position` (clamped to what is held)."""
        position = min(max(position, self.start), self.end)
        self._head += position - self.start
        self.start = position

    def take(self, start: int, end: int) -> npt.NDArray[np.float32]:
        """A copy of positions [start, end); positions past the end read as zeros."""
        assert self.start <= start <= end, "asked for values already dropped"
        out = np.zeros(end - start, dtype=np.float32)
        held_end = min(end, self.end)
        if held_end > start:
            offset = self._head + start - self.start
            out[: held_end - start] = self._data[offset : offset + held_end - start]
        return out
