"""Sentences with start and end times, from punctuated text and token timestamps.

The punctuator returns the recogniser's text with punctuation inserted, spaces between English
words and English words capitalised after a sentence end (`str.capitalize`, so `GPU` may come
back as `Gpu`). Each token (a CJK character or an English word) is found in that text in order,
ignoring case; the text between one token and the next is the first token's trailing
punctuation. A sentence ends after a token whose trailing punctuation holds a sentence-ending
mark, and optionally, when a sentence would run longer than `max_duration`, at its last clause
mark (comma) before that point.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from zhuanxie.result import Sentence, Token


@dataclass(frozen=True)
class SentenceOptions:
    """How punctuated text is cut into sentences."""

    sentence_ends: str = "。？！.?!"
    """Marks that end a sentence."""
    clause_marks: str = "，,、；;："
    """Marks a long sentence may be cut at (see `max_duration`)."""
    max_duration: float | None = None
    """Seconds; a sentence that would run longer is cut after its last clause mark that keeps it
    within the limit (or the first one, if none does). None: cut at sentence ends only."""

    def __post_init__(self) -> None:
        if not self.sentence_ends:
            raise ValueError("sentence_ends must name at least one mark")
        if self.max_duration is not None and self.max_duration <= 0:
            raise ValueError(f"max_duration must be positive, got {self.max_duration}")


def sentences(
    tokens: Sequence[Token], punctuated_text: str, options: SentenceOptions | None = None
) -> list[Sentence]:
    """Cut `tokens` into sentences at the marks `punctuated_text` puts after them.

    `punctuated_text` must hold every token's text, in order (case aside). Text before the first
    token (a leading mark) joins the first sentence; text after the last token closes the last.
    Raises ValueError naming the first token that cannot be found.
    """
    options = options or SentenceOptions()
    if not tokens:
        return []
    bounds = _token_bounds(tokens, punctuated_text)
    # The text of token i runs from its start to the next token's start: the token, then its
    # trailing marks and spaces.
    starts = [0] + [start for start, _ in bounds[1:]]
    stops = [start for start, _ in bounds[1:]] + [len(punctuated_text)]
    trailing = [punctuated_text[end:stop] for (_, end), stop in zip(bounds, stops)]
    groups = _split(tokens, trailing, options)
    return [
        Sentence(
            text=punctuated_text[starts[first] : stops[last]].strip(),
            start=tokens[first].start,
            end=tokens[last].end,
            tokens=tuple(tokens[first : last + 1]),
        )
        for first, last in groups
    ]


def _token_bounds(tokens: Sequence[Token], text: str) -> list[tuple[int, int]]:
    """(start, end) of each token in `text`, found left to right, ignoring case."""
    folded = _fold(text)
    bounds = []
    cursor = 0
    for i, token in enumerate(tokens):
        start = folded.find(_fold(token.text), cursor)
        if start < 0:
            raise ValueError(
                f"token {i} ({token.text!r}) is not in the punctuated text after position "
                f"{cursor}: {text!r}"
            )
        cursor = start + len(token.text)
        bounds.append((start, cursor))
    return bounds


def _fold(text: str) -> str:
    """Lower case, one character for one, so that positions carry over to the original."""
    return "".join(c.lower() if len(c.lower()) == 1 else c for c in text)


def _split(
    tokens: Sequence[Token], trailing: Sequence[str], options: SentenceOptions
) -> list[tuple[int, int]]:
    """(first, last) token index of each sentence."""
    groups = []
    first = 0
    for i, marks in enumerate(trailing):
        if i == len(tokens) - 1 or any(m in options.sentence_ends for m in marks):
            groups += _cut_long(tokens, trailing, first, i, options)
            first = i + 1
    return groups


def _cut_long(
    tokens: Sequence[Token],
    trailing: Sequence[str],
    first: int,
    last: int,
    options: SentenceOptions,
) -> list[tuple[int, int]]:
    """Split tokens[first..last] at clause marks into pieces within `max_duration` where the
    marks allow; a piece with no clause mark inside the limit ends at its first one after it."""
    limit = options.max_duration
    pieces = []
    while limit is not None and tokens[last].end - tokens[first].start > limit:
        cuts = [
            i for i in range(first, last) if any(m in options.clause_marks for m in trailing[i])
        ]
        if not cuts:
            break
        within = [i for i in cuts if tokens[i].end - tokens[first].start <= limit]
        cut = within[-1] if within else cuts[0]
        pieces.append((first, cut))
        first = cut + 1
    pieces.append((first, last))
    return pieces
