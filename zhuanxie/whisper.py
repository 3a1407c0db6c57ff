"""Whisper (CTranslate2 conversions, through faster-whisper) behind the engine's ``Backend``.

    backend = WhisperBackend("path/to/faster-whisper-small", language="zh")
    options = EngineOptions(vad_options=VAD_OPTIONS, batch_frames=batch_frames(BATCH_SIZE))
    engine = Engine([backend], options)

The engine's VAD segments of every input in flight are pooled into batches, and a batch runs as
faster-whisper's batched generation (what ``faster_whisper.BatchedInferencePipeline`` does per
batch): one encoder pass over the batch, one beam search over all its items, one cross-attention
alignment for the word times. Text comes without Whisper's timestamp tokens; a segment's bounds
are its VAD bounds.

Features. ``features`` runs on the engine's CPU workers and returns the segment's log-mel
spectrogram (n_mels, T), T = 10 ms frames, unpadded (faster-whisper's ``FeatureExtractor``);
``decode`` pads each to Whisper's fixed 30 s window (3000 frames) when it builds the batch, so
queued segments hold only their own frames.

Cost. The encoder always runs on a 30 s window, however short the segment, so every segment
costs the same: ``WINDOW_FRAMES`` = 500 of the engine's 60 ms budget frames. A budget of F padded
frames is therefore a batch of F // 500 segments (the CPU default of 1000 frames is 2); pass
``EngineOptions(batch_frames=batch_frames(n))`` for batches of n. Set the budget explicitly on
GPUs too: the engine's memory governor measures torch's allocator, and CTranslate2 has its own.

Segments. Since a 2 s segment costs as much as a 30 s one, Whisper wants few, long segments:
``VAD_OPTIONS`` splits only at pauses of 2 s or more and cuts longer speech at its quietest
point before 30 s. On the four English clips of the shared corpus that makes 5 windows where the
engine's default (0.5 s pauses, 20 s) makes 18, and decoding ran about 2.5 times faster.
faster-whisper packs too, by joining VAD chunks into windows of up to 30 s. Segments must be at most 30 s (``max_segment_s`` <= 30); a longer one
is that input's error, never truncated.

Language. With ``language=None`` a multilingual model detects the language of every segment on
its own (Whisper's language-token probabilities over that segment's 30 s window), so an input
that switches language is followed; ``Segment.language`` carries it. Short segments are detected
less reliably than faster-whisper's per-file detection over the first 30 s of speech: pass the
language when it is known. English-only models (``*.en``) always give "en".

Hotwords. Each segment's hotwords are given to Whisper as previous text (faster-whisper's
``hotwords``: ``<|startofprev|>`` + the phrases, at most 223 tokens), which makes those
spellings likelier but guarantees nothing. It is much weaker than SeACo-Paraformer's dedicated
bias decoder, and a long list costs decoder time on every segment.

Batch independence. A segment's text does not depend on its batch-mates. Items whose prompts
differ (other hotwords, another detected language) cannot share one generation call (CTranslate2
requires the start token at the same position in every prompt), so a batch runs one encoder and
decoder pass per distinct prompt; inputs that share hotwords and language batch fully. Word times
are computed per item from the alignment (faster-whisper carries the previous segment's end
across a batch into its word-time heuristics; here each segment starts after a pause of its own).
"""

from __future__ import annotations

import itertools
import statistics
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from zhuanxie.backend import LFR_SECONDS
from zhuanxie.hub import resolve_model
from zhuanxie.result import Segment, Token
from zhuanxie.vad import VadOptions

WHISPER_EXTRA = "pip install 'zhuanxie[whisper]'"
try:
    from faster_whisper import WhisperModel
    from faster_whisper.tokenizer import Tokenizer
    from faster_whisper.transcribe import get_suppressed_tokens, merge_punctuations
except ImportError as e:  # the optional dependency group
    raise ImportError(f"the Whisper backend needs faster-whisper: {WHISPER_EXTRA}") from e

SAMPLE_RATE = 16000
HOP = 160  # samples per mel frame (10 ms)
WINDOW_SECONDS = 30  # Whisper's encoder input, always
WINDOW_MEL_FRAMES = WINDOW_SECONDS * SAMPLE_RATE // HOP  # 3000
WINDOW_FRAMES = round(WINDOW_SECONDS / LFR_SECONDS)  # 500: one segment's cost in the budget
VAD_OPTIONS = VadOptions(min_silence_ms=2000, max_segment_s=WINDOW_SECONDS)
BATCH_SIZE = 8  # segments per batch on the CPU; faster-whisper's default batch_size
# Punctuation merged into the neighbouring word, as faster-whisper and openai/whisper do.
PREPEND_PUNCTUATIONS = "\"'“¿([{-"
APPEND_PUNCTUATIONS = "\"'.。,，!！?？:：”)]}、"
SENTENCE_END_MARKS = ".。!！?？"

Mel = npt.NDArray[np.float32]


def batch_frames(batch_size: int) -> int:
    """The engine budget (``EngineOptions.batch_frames``) that gives batches of ``batch_size``."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, not {batch_size}")
    return WINDOW_FRAMES * batch_size


@dataclass(frozen=True)
class WhisperOptions:
    """Beam search settings; the defaults are faster-whisper's. Vary with ``replace``."""

    beam_size: int = 5
    """Hypotheses kept per segment (1: greedy)."""
    patience: float = 1.0
    """Search continues until beam_size × patience hypotheses have finished."""
    length_penalty: float = 1.0
    """Exponent of the length normalisation of hypothesis scores."""
    repetition_penalty: float = 1.0
    """Above 1, penalises tokens already generated."""
    no_repeat_ngram_size: int = 0
    """Forbid repeating n-grams of this size (0: off)."""
    suppress_blank: bool = True
    """Forbid a blank first token."""

    def __post_init__(self) -> None:
        if self.beam_size < 1:
            raise ValueError(f"beam_size must be >= 1, not {self.beam_size}")
        if self.patience <= 0 or self.length_penalty < 0 or self.repetition_penalty <= 0:
            raise ValueError(
                "patience and repetition_penalty must be > 0 and length_penalty >= 0, not "
                f"{self.patience}, {self.repetition_penalty}, {self.length_penalty}"
            )
        if self.no_repeat_ngram_size < 0:
            raise ValueError(f"no_repeat_ngram_size must be >= 0, not {self.no_repeat_ngram_size}")


def ctranslate2_spec(directory: Path) -> str | None:
    """The model spec named in a CTranslate2 ``model.bin`` header ("WhisperSpec", ...).

    None when the file is absent or predates spec names (format version 1).
    """
    path = directory / "model.bin"
    if not path.is_file():
        return None
    with path.open("rb") as f:
        head = f.read(4 + 2 + 256)
    if len(head) < 6 or struct.unpack_from("<I", head)[0] < 2:
        return None
    (size,) = struct.unpack_from("<H", head, 4)
    return head[6 : 6 + size].rstrip(b"\0").decode("ascii", errors="replace")


@dataclass
class _Item:
    """One segment in a batch, with what decoding learns about it."""

    mel: Mel
    hotwords: tuple[str, ...]
    start: float
    duration: float
    language: str = ""
    tokens: list[int] = field(default_factory=list)


class WhisperBackend:
    """A CTranslate2 Whisper model on one device, decoding batches of VAD segments."""

    def __init__(
        self,
        model: str | Path,
        device: str = "cpu",
        compute_type: str = "default",
        language: str | None = None,
        cpu_threads: int | None = None,
        options: WhisperOptions | None = None,
    ) -> None:
        """Load ``model``: a CTranslate2 Whisper directory or a downloaded known model name.

        ``device`` is "cpu", "cuda" or "cuda:N"; ``compute_type`` is CTranslate2's ("default"
        keeps the saved type where the device runs it efficiently, else float32; "int8",
        "float32", "float16", "bfloat16", "int8_float16", ...). ``language`` is a Whisper
        language code, or None to detect it per segment. ``cpu_threads`` defaults to
        ``torch.get_num_threads()``, which entry points set.
        """
        directory = resolve_model(str(model))
        spec = ctranslate2_spec(directory)
        if spec != "WhisperSpec" or not (directory / "config.json").is_file():
            found = f"a CTranslate2 {spec} model" if spec else "no CTranslate2 model.bin"
            raise ValueError(
                f"{directory} is not a CTranslate2 Whisper model directory (model.bin with "
                f"WhisperSpec, config.json): found {found}"
            )
        self.device = torch.device(device)
        if self.device.type not in ("cpu", "cuda"):
            raise ValueError(f"device must be cpu, cuda or cuda:N, not {device!r}")
        threads = torch.get_num_threads() if cpu_threads is None else cpu_threads
        self.whisper = WhisperModel(
            str(directory),
            device=self.device.type,
            device_index=self.device.index or 0,
            compute_type=compute_type,
            cpu_threads=threads,
        )
        supported = self.whisper.supported_languages
        if language is not None and language not in supported:
            kind = "English-only" if supported == ["en"] else "multilingual"
            raise ValueError(
                f"language {language!r} is not one of {directory.name}'s ({kind}) languages: "
                f"{', '.join(supported)}"
            )
        self.name = str(directory)
        self.language = "en" if supported == ["en"] else language
        self.options = options or WhisperOptions()
        self.supports_hotwords = True
        self.n_mels = int(self.whisper.model.n_mels)
        self._tokenizers: dict[str, Tokenizer] = {}
        self._suppressed = list(get_suppressed_tokens(self._tokenizer("en"), [-1]))

    def features(self, audio: np.ndarray) -> Mel:
        """(S,) 16 kHz samples -> (n_mels, S // 160) log-mel frames, unpadded."""
        if len(audio) > WINDOW_SECONDS * SAMPLE_RATE:
            raise ValueError(
                f"a {len(audio) / SAMPLE_RATE:.1f} s segment is longer than Whisper's "
                f"{WINDOW_SECONDS} s window; set the maximum segment length "
                f"(VadOptions.max_segment_s, --max-segment) to at most {WINDOW_SECONDS}"
            )
        if len(audio) < HOP:
            return np.zeros((self.n_mels, 0), dtype=np.float32)
        samples = np.ascontiguousarray(audio, dtype=np.float32)
        # faster-whisper drops the last frame, which covers only the padding after the audio.
        mel = self.whisper.feature_extractor(samples)[..., :-1]
        return np.ascontiguousarray(mel, dtype=np.float32)

    def frames(self, features: Mel) -> int:
        """Every segment costs Whisper's whole 30 s window (see the module docstring)."""
        return WINDOW_FRAMES if features.shape[-1] > 0 else 0

    def decode(
        self,
        features: Sequence[Mel],
        hotwords: Sequence[tuple[str, ...]],
        starts: Sequence[float],
        durations: Sequence[float],
    ) -> list[Segment | None]:
        items = [
            _Item(m, h, s, d)
            for m, h, s, d in zip(features, hotwords, starts, durations, strict=True)
        ]
        if not items:
            return []
        batch = np.stack([_pad(item.mel) for item in items])  # (B, n_mels, 3000)
        # Detection needs the whole batch encoded; with a fixed language each group encodes alone.
        if self.language is None:
            encoded = self.whisper.encode(batch)
            languages = self._detect_languages(encoded)
        else:
            encoded, languages = None, [self.language] * len(items)
        for item, language in zip(items, languages, strict=True):
            item.language = language
        groups: dict[tuple[str, tuple[str, ...]], list[int]] = {}
        for i, item in enumerate(items):
            groups.setdefault((item.language, item.hotwords), []).append(i)
        segments: list[Segment | None] = [None] * len(items)
        for indices in groups.values():
            # One prompt per generation call, so each group of a mixed batch is encoded again.
            whole = encoded is not None and len(indices) == len(items)
            group_encoded = encoded if whole else self.whisper.encode(batch[indices])
            group = [items[i] for i in indices]
            for i, segment in zip(indices, self._decode_group(group, group_encoded), strict=True):
                segments[i] = segment
        return segments

    def warm_up(self, frames: int) -> None:
        """Decode a batch of about ``frames`` budget frames of 30 s noise segments."""
        count = max(1, frames // WINDOW_FRAMES)
        rng = np.random.default_rng(0)
        mels = [
            rng.uniform(-1, 1, (self.n_mels, WINDOW_MEL_FRAMES)).astype(np.float32)
            for _ in range(count)
        ]
        self.decode(mels, [()] * count, [0.0] * count, [float(WINDOW_SECONDS)] * count)

    def _tokenizer(self, language: str) -> Tokenizer:
        if language not in self._tokenizers:
            self._tokenizers[language] = Tokenizer(
                self.whisper.hf_tokenizer,
                self.whisper.model.is_multilingual,
                task="transcribe",
                language=language,
            )
        return self._tokenizers[language]

    def _detect_languages(self, encoded: Any) -> list[str]:
        """Whisper's most probable language of each encoded item."""
        # Tokens look like "<|zh|>".
        return [probs[0][0][2:-2] for probs in self.whisper.model.detect_language(encoded)]

    def _decode_group(self, items: list[_Item], encoded: Any) -> list[Segment | None]:
        """Items sharing language and hotwords: beam search, then word alignment."""
        tokenizer = self._tokenizer(items[0].language)
        prompt = self.whisper.get_prompt(
            tokenizer,
            previous_tokens=[],
            without_timestamps=True,
            hotwords=", ".join(items[0].hotwords) or None,
        )
        options = self.options
        results = self.whisper.model.generate(
            encoded,
            [prompt] * len(items),
            beam_size=options.beam_size,
            patience=options.patience,
            length_penalty=options.length_penalty,
            repetition_penalty=options.repetition_penalty,
            no_repeat_ngram_size=options.no_repeat_ngram_size,
            max_length=self.whisper.max_length,
            suppress_blank=options.suppress_blank,
            suppress_tokens=self._suppressed,
        )
        for item, result in zip(items, results, strict=True):
            item.tokens = [t for t in result.sequences_ids[0] if t < tokenizer.eot]
        alignments = self.whisper.find_alignment(
            tokenizer,
            [item.tokens for item in items],
            encoded,
            [item.mel.shape[-1] for item in items],
        )
        return [
            self._segment(item, tokenizer, words)
            for item, words in zip(items, alignments, strict=True)
        ]

    def _segment(
        self, item: _Item, tokenizer: Tokenizer, alignment: list[dict[str, Any]]
    ) -> Segment | None:
        text = tokenizer.decode(item.tokens).strip()
        # Whisper answers silence and noise with punctuation alone (". ."): nothing was said.
        if not any(ch.isalnum() for ch in text):
            return None
        words = _word_times(alignment, item.duration)
        tokens = tuple(
            Token(word, round(item.start + start, 3), round(item.start + end, 3))
            for word, start, end in words
        )
        return Segment(
            item.start,
            item.start + item.duration,
            text,
            tokens,
            tuple(item.tokens),
            language=item.language,
        )


def _pad(mel: Mel) -> Mel:
    """(n_mels, T) -> (n_mels, 3000): zeros after the segment, as faster-whisper's pad_or_trim."""
    padded = np.zeros((mel.shape[0], WINDOW_MEL_FRAMES), dtype=np.float32)
    padded[:, : mel.shape[1]] = mel
    return padded


def _word_times(alignment: list[dict[str, Any]], duration: float) -> list[tuple[str, float, float]]:
    """faster-whisper's aligned words -> (word, start, end) in seconds from the segment start.

    Applies the heuristics of faster-whisper's ``add_word_timestamps`` (from openai/whisper's
    ``timing.py``) to one segment: DTW stretches a word next to a pause over the pause, so
    sentence-end marks and the first word after the pause that opens the segment are cut to
    twice the median word length (at most 1.4 s). Times are clamped to the segment.
    """
    durations = [w["end"] - w["start"] for w in alignment if w["end"] > w["start"]]
    median = min(0.7, float(statistics.median(durations))) if durations else 0.0
    longest = 2 * median
    if durations:
        for previous, word in itertools.pairwise(alignment):
            if word["end"] - word["start"] > longest:
                if word["word"] in SENTENCE_END_MARKS:
                    word["end"] = word["start"] + longest
                elif previous["word"] in SENTENCE_END_MARKS:
                    word["start"] = word["end"] - longest
    merge_punctuations(alignment, PREPEND_PUNCTUATIONS, APPEND_PUNCTUATIONS)
    words = [w for w in alignment if w["word"].strip()]
    if words and words[0]["end"] > 4 * median and words[0]["end"] - words[0]["start"] > longest:
        words[0]["start"] = max(0.0, words[0]["end"] - longest)
    return [
        (
            w["word"].strip(),
            min(max(float(w["start"]), 0.0), duration),
            min(max(float(w["end"]), 0.0), duration),
        )
        for w in words
    ]
