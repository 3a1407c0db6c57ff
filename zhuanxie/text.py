"""Decoded tokens -> text and timed words, as funasr's `sentence_postprocess` (CharTokenizer case).

The rules, all from funasr `utils/postprocess_utils.py`:
- `<s>`, `</s>`, `<unk>` and `<OOV>` are dropped (but `<unk>` keeps its timestamp slot, below).
- A token ending a BPE word (no `@@`) closes the word begun by the `@@` pieces before it.
- Latin words are followed by a space, which a following CJK character (or digit) removes.
- Runs of single ASCII letters separated by spaces merge into one upper-cased abbreviation,
  `a b c` -> `ABC`, spanning from the first letter's start to the last letter's end.

funasr returns the text two ways: without timestamps, `你好hello world再见` (our `text`); with
timestamps, the words joined by single spaces, `你 好 hello world 再 见`. The words are the
same in both; `remove_cjk_spaces` maps the second form to the first.

Timestamps pair with words by position, and funasr builds the two lists separately. So when tokens
are dropped (`<unk>`) or a token takes no timestamp (a token such as `-` in a sentence that also
holds Chinese), the spans that follow belong to earlier tokens, and the last words run out of
spans. We reproduce that pairing exactly.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

Span = tuple[float, float]

_DROPPED = frozenset({"<s>", "</s>", "<unk>", "<OOV>"})
# Substrings funasr's isAllChinese / isAllAlpha delete from a token before classifying it, in order.
_IGNORED_IN_CLASS = (" ", "</s>", "<s>", "<unk>", "<OOV>")
_SEP = " "  # word separator kept in the word list, as funasr does


@dataclass(frozen=True)
class Word:
    """A word (CJK character, Latin word or abbreviation) and its span in seconds."""

    text: str
    start: float
    end: float


class TimedText(NamedTuple):
    """funasr's text without timestamps, and the words it pairs with spans."""

    text: str
    words: tuple[Word, ...]


def postprocess(tokens: Sequence[str], spans: Sequence[Span] = ()) -> TimedText:
    """Text and timed words of decoded tokens (`<blank>`, `<s>`, `</s>` ids already removed).

    spans: one per token (`timestamps.token_spans`), or none for text only. A word that funasr
    leaves without a span (see the module doc) is in `text` but not in `words`.
    """
    items, word_spans = _merge_abbreviations(*_layout(tokens, spans))
    words = [item for item in items if item != _SEP]
    return TimedText(
        text="".join(items).strip(),
        words=tuple(Word(w, start, end) for w, (start, end) in zip(words, word_spans)),
    )


def remove_cjk_spaces(text: str) -> str:
    """Drop each space next to a CJK character or digit.

    Turns funasr's spaced text (`你 好 hello world 再 见`) into its plain text (`你好hello world再见`)
    for well-formed tokens: CJK characters, digits, BPE words. It differs where a token is neither
    (e.g. `-`), or a BPE word is interrupted.
    """
    return re.sub(r"(?<=[\u4e00-\u9fff0-9]) | (?=[\u4e00-\u9fff0-9])", "", text)


def _sorts_as_chinese(s: str) -> bool:
    """funasr's `isChinese`, which compares whole strings: true for a CJK character or digit, and
    also for longer strings that sort between them, e.g. `12` or `中a`."""
    return "\u4e00" <= s <= "\u9fff" or "0" <= s <= "9" or s == "@"


def _class_form(token: str) -> str:
    for sub in _IGNORED_IN_CLASS:
        token = token.replace(sub, "")
    return token


def _all_tokens_chinese(tokens: Sequence[str]) -> bool:
    return bool(tokens) and all(_sorts_as_chinese(_class_form(t)) for t in tokens)


def _all_tokens_alpha(tokens: Sequence[str]) -> bool:
    def alpha(t: str) -> bool:
        return (t.isalpha() and not _sorts_as_chinese(t)) or t == "'"

    return bool(tokens) and all(alpha(_class_form(t)) for t in tokens)


def _chinese_chars(token: str) -> bool:
    # funasr applies isAllChinese to a single token too; then it tests character by character.
    return bool(token) and all(_sorts_as_chinese(c) for c in token)


def _alpha_chars(token: str) -> bool:
    return bool(token) and all(
        (c.isalpha() and not _sorts_as_chinese(c)) or c == "'" for c in token
    )


def _layout(tokens: Sequence[str], spans: Sequence[Span]) -> tuple[list[str], list[Span]]:
    """Words with `_SEP` separators, and the spans funasr attaches (one per timed word).

    The words never depend on the spans; with no spans this is funasr's no-timestamp path.
    """
    kept = [t for t in tokens if t not in _DROPPED]
    if _all_tokens_chinese(kept):
        # funasr passes the timestamps through whole here, spans of dropped tokens included.
        return [t.replace(" ", "") for t in kept], list(spans)
    if _all_tokens_alpha(kept):
        # An `@@` piece cannot pass the all-alpha test, so every token is a whole word.
        items = [part for t in kept for part in (t, _SEP)]
        return items, list(spans[: len(kept)])
    return _layout_mixed(kept, spans)


def _layout_mixed(kept: list[str], spans: Sequence[Span]) -> tuple[list[str], list[Span]]:
    items: list[str] = []
    out_spans: list[Span] = []
    pending = ""  # text of `@@` pieces waiting for the piece that ends the word
    after_latin = False  # items ends with the separator after a Latin word
    word_open = False  # a BPE word is open: its start is fixed, its end moves
    start = end = -1.0
    # funasr indexes spans by position among the kept tokens and raises IndexError past the end of
    # them; from there on we attach no spans. It looks a span up only where it needs one: a CJK
    # character after an open BPE word takes that word's span without a lookup.
    live = bool(spans)
    for i, token in enumerate(kept):
        live = live and (word_open or i < len(spans))
        if live and not word_open:
            start, end = spans[i]
        if _chinese_chars(token):
            if after_latin:
                items.pop()
            items.append(token)
            after_latin = False
            if live:
                word_open = False
                out_spans.append((start, end))
        elif "@@" in token:
            pending += token.replace("@@", "")
            after_latin = False
            live = live and i < len(spans)
            if live:
                word_open = True
                end = spans[i][1]
        elif _alpha_chars(token):
            items += [pending + token, _SEP]
            pending = ""
            after_latin = True
            live = live and i < len(spans)
            if live:
                word_open = False
                end = spans[i][1]
                out_spans.append((start, end))
        else:
            # Neither CJK nor Latin (`-`, `a1`): kept as a word, but funasr gives it no span.
            items.append(token)
    return items, out_spans


def _is_letter(item: str) -> bool:
    return len(item) == 1 and item.encode("utf-8").isalpha()


def _merge_abbreviations(items: list[str], spans: list[Span]) -> tuple[list[str], list[Span]]:
    """funasr's `abbr_dispose`: merge `a _ b _ c` into `ABC` and its spans into one.

    Spans are looked up by the position of each word among the words before merging (the
    separators do not count), so a word with no span of its own shifts every later lookup.
    """
    n = len(items)
    slot = []  # span index of each item: number of words before it
    words_before = 0
    for item in items:
        slot.append(words_before)
        words_before += item != _SEP
    out_items: list[str] = []
    out_spans: list[Span] = []
    k = 0
    while k < n:
        last = k
        if _is_letter(items[k]):
            while last + 2 < n and items[last + 1] == _SEP and _is_letter(items[last + 2]):
                last += 2
        if last > k:
            out_items.append("".join(items[k : last + 1 : 2]).upper())
            if slot[last] < len(spans):
                out_spans.append((spans[slot[k]][0], spans[slot[last]][1]))
            k = last + 1
            continue
        out_items.append(items[k])
        if items[k] != _SEP and slot[k] < len(spans):
            out_spans.append(spans[slot[k]])
        k += 1
    return out_items, out_spans


def join_texts(texts: Sequence[str]) -> str:
    """Join the texts of consecutive segments: no space at a CJK boundary, one space between
    Latin words and after Latin sentence punctuation."""
    out = ""
    for text in texts:
        if not text:
            continue
        if out and text[0].isascii() and text[0].isalnum():
            last = out[-1]
            if (last.isascii() and last.isalnum()) or last in ",.?!;:":
                out += " "
        out += text
    return out
