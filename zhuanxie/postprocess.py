"""Readable text from raw recognition: punctuation, then inverse text normalisation.

Punctuation runs on each input's whole text (as the reference does, so its windows see across
segment boundaries), batched across the transcripts given together; the marks are then put back
into each segment's text by walking the tokens. ITN runs last, per segment. Tokens keep the
spoken forms and their timestamps.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from zhuanxie.itn import InverseNormalizer
from zhuanxie.punctuation import Punctuator
from zhuanxie.result import Transcript
from zhuanxie.sentences import sentences
from zhuanxie.text import join_texts


class PostProcessor:
    """Punctuation and/or ITN for finished transcripts; either may be None."""

    def __init__(
        self, punctuator: Punctuator | None = None, itn: InverseNormalizer | None = None
    ) -> None:
        self.punctuator = punctuator
        self.itn = itn

    def apply(
        self,
        transcripts: Sequence[Transcript],
        punctuate: Sequence[bool] | None = None,
        normalize: Sequence[bool] | None = None,
    ) -> list[Transcript]:
        """Post-process the transcripts; ``punctuate`` and ``normalize`` (one flag per
        transcript, default all) leave out the ones that asked for less."""
        out = list(transcripts)
        punctuate = [True] * len(out) if punctuate is None else punctuate
        normalize = [True] * len(out) if normalize is None else normalize
        chosen = [i for i, wanted in enumerate(punctuate) if wanted]
        if self.punctuator is not None and chosen:
            punctuated = self.punctuator.punctuate([out[i].text for i in chosen])
            for i, p in zip(chosen, punctuated, strict=True):
                out[i] = with_sentences(with_punctuation(out[i], p.text), p.text)
        if self.itn is not None:
            out = [self._normalize(t) if n else t for t, n in zip(out, normalize, strict=True)]
        return out

    def _normalize(self, transcript: Transcript) -> Transcript:
        assert self.itn is not None
        texts = self.itn.normalize_many([s.text for s in transcript.segments])
        segments = tuple(
            replace(s, text=t) for s, t in zip(transcript.segments, texts, strict=True)
        )
        return replace(transcript, segments=segments, text=join_texts([s.text for s in segments]))


def with_sentences(transcript: Transcript, punctuated: str) -> Transcript:
    """Add the timed sentences of ``punctuated`` (none if its words no longer match the tokens)."""
    try:
        found = sentences(transcript.tokens, punctuated)
    except ValueError:
        return transcript
    return replace(transcript, sentences=tuple(found))


def with_punctuation(transcript: Transcript, punctuated: str) -> Transcript:
    """Move the marks of ``punctuated`` (the transcript's text with punctuation added) into its
    segments. Characters of ``punctuated`` that match no token (marks, spaces) go to the segment
    of the token before them."""
    if not transcript.segments:
        return transcript
    pieces = [[] for _ in transcript.segments]  # type: list[list[str]]
    owners = [(i, tok.text) for i, s in enumerate(transcript.segments) for tok in s.tokens]
    position, current = 0, 0
    lowered = punctuated.lower()
    for index, text in owners:
        found = lowered.find(text.lower(), position)
        if found < 0:  # the punctuator changed this token: keep the raw text for the rest
            return transcript
        pieces[current].append(punctuated[position:found])
        current = index
        pieces[current].append(punctuated[found : found + len(text)])
        position = found + len(text)
    pieces[current].append(punctuated[position:])
    segments = tuple(
        replace(s, text="".join(p).strip())
        for s, p in zip(transcript.segments, pieces, strict=True)
    )
    return replace(transcript, segments=segments, text=join_texts([s.text for s in segments]))
