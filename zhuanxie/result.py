"""Typed recognition results: plain data, times in seconds."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Token:
    """One output unit: a CJK character or an English word (BPE pieces joined)."""

    text: str
    start: float  # seconds from the start of the input
    end: float


@dataclass(frozen=True)
class Segment:
    """A stretch of speech decoded in one piece (the whole input when there is no VAD)."""

    start: float
    end: float
    text: str
    tokens: tuple[Token, ...]
    token_ids: tuple[int, ...]  # model vocabulary ids behind the text, specials removed
    language: str | None = None  # the segment's language, where the model names one (Whisper)


@dataclass(frozen=True)
class Sentence:
    """A run of tokens ending at a sentence mark, with its punctuated text (from punctuation)."""

    text: str
    start: float  # seconds: the first token's start
    end: float  # seconds: the last token's end
    tokens: tuple[Token, ...]


@dataclass(frozen=True)
class Transcript:
    text: str
    duration: float  # seconds of audio
    segments: tuple[Segment, ...]
    language: str = "zh"
    hotwords: tuple[str, ...] = ()  # hotwords requested for this input
    hotwords_found: tuple[str, ...] = ()  # those that occur in the text
    sentences: tuple[Sentence, ...] = ()  # when punctuation was added

    @property
    def tokens(self) -> tuple[Token, ...]:
        return tuple(t for s in self.segments for t in s.tokens)
