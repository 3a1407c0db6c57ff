"""Tokens -> text and timed words: funasr sentence_postprocess parity and its rules by hand."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pytest

from zhuanxie.text import Word, postprocess, remove_cjk_spaces

CJK = list("你好世界中国人我们的是在有说")
DIGITS = ["1", "2", "2024", "9"]
WORDS = ["hello", "world", "model", "don't", "i", "é"]
LETTERS = list("abcxyz")
# BPE words: `@@` pieces closed by a final piece.
BPE = [["he@@", "llo"], ["wor@@", "ld"], ["pa@@", "ra@@", "former"], ["a@@", "b"]]
SPECIALS = ["<unk>", "<s>", "</s>", "<OOV>"]
# Tokens that hit funasr's odd corners: neither CJK nor Latin, strings that sort between CJK
# characters or digits, separators, dangling `@@` pieces.
ODD = ["3d", "-", "中a", "a中", "'", "", " ", "1@@", "@@", "9x", "<s>ab", "ab@@", "x@@"]

Postprocess = Callable[..., Any]


@pytest.fixture(scope="module")
def sentence_postprocess() -> Postprocess:
    pytest.importorskip("funasr", reason="funasr (the reference) is not installed")
    from funasr.utils.postprocess_utils import sentence_postprocess

    return sentence_postprocess  # type: ignore[no-any-return]


def random_tokens(rng: random.Random, kind: str) -> list[str]:
    n = rng.randint(0, 14)
    out: list[str] = []
    while len(out) < n:
        if kind == "cjk":
            out.append(rng.choice([*CJK, *DIGITS, "<unk>"]))
        elif kind == "alpha":
            out.append(rng.choice([*WORDS, *LETTERS, *LETTERS, "<unk>", "'"]))
        elif kind == "clean":
            pick = rng.random()
            if pick < 0.4:
                out.append(rng.choice(CJK + DIGITS))
            elif pick < 0.7:
                out.append(rng.choice(LETTERS))
            elif pick < 0.85:
                out += rng.choice(BPE)
            else:
                out.append(rng.choice(WORDS))
        else:
            pool = [*CJK, *DIGITS, *WORDS, *LETTERS, *SPECIALS, *ODD]
            if rng.random() < 0.15:
                out += rng.choice(BPE)
            else:
                out.append(rng.choice(pool))
    return out


def random_ms(rng: random.Random, n: int) -> list[list[int]]:
    t = rng.randint(-30, 500)
    spans = []
    for _ in range(n):
        start = t
        t += rng.randint(20, 240)
        spans.append([start, t])
    return spans


def as_ms(words: tuple[Word, ...]) -> list[list[int]]:
    return [[round(w.start * 1000), round(w.end * 1000)] for w in words]


@pytest.mark.parametrize("kind", ["cjk", "alpha", "clean", "wild"])
def test_text_matches_funasr_without_timestamps(
    sentence_postprocess: Postprocess, kind: str
) -> None:
    rng = random.Random(kind)
    for _ in range(600):
        tokens = random_tokens(rng, kind)
        text, words = postprocess(tokens)
        assert text == sentence_postprocess(tokens)[0], tokens
        assert words == ()


@pytest.mark.parametrize("kind", ["cjk", "alpha", "clean", "wild"])
def test_words_and_spans_match_funasr(sentence_postprocess: Postprocess, kind: str) -> None:
    rng = random.Random(f"timed-{kind}")
    compared = 0
    for _ in range(600):
        tokens = random_tokens(rng, kind)
        spans_ms = random_ms(rng, len(tokens))
        if kind == "wild" and rng.random() < 0.2:
            del spans_ms[rng.randint(0, len(spans_ms)) :]  # fewer spans than tokens
        try:
            ref_sentence, ref_ms, ref_words = sentence_postprocess(tokens, spans_ms)
        except IndexError:
            continue  # funasr gives up on this token sequence; there is nothing to match
        compared += 1
        text, words = postprocess(tokens, [(s / 1000, e / 1000) for s, e in spans_ms])
        assert text == sentence_postprocess(tokens)[0]
        assert as_ms(words) == ref_ms, tokens
        assert [w.text for w in words] == ref_words[: len(ref_ms)], tokens
        # funasr's two variants hold the same words: only the joining differs.
        assert ref_words == sentence_postprocess(tokens)[1]
        assert ref_sentence == " ".join(ref_words).strip()
    assert compared > 450


def test_remove_cjk_spaces_turns_funasr_spaced_text_into_plain(
    sentence_postprocess: Postprocess,
) -> None:
    rng = random.Random("spaces")
    for _ in range(600):
        tokens = random_tokens(rng, "clean")
        spaced = sentence_postprocess(tokens, random_ms(rng, len(tokens)))[0]
        assert remove_cjk_spaces(spaced) == sentence_postprocess(tokens)[0], tokens


def test_cjk_characters_join_without_spaces() -> None:
    text, words = postprocess(["你", "好"], [(0.1, 0.2), (0.2, 0.3)])
    assert text == "你好"
    assert words == (Word("你", 0.1, 0.2), Word("好", 0.2, 0.3))


def test_latin_words_are_spaced_but_not_before_cjk() -> None:
    tokens = ["你", "好", "hello", "world", "再", "见"]
    assert postprocess(tokens).text == "你好hello world再见"


def test_bpe_pieces_join_into_one_word_spanning_all_pieces() -> None:
    text, words = postprocess(["pa@@", "ra@@", "former", "好"], [(0, 1), (1, 2), (2, 3), (3, 4)])
    assert text == "paraformer好"
    assert words == (Word("paraformer", 0, 3), Word("好", 3, 4))


def test_single_letters_merge_into_upper_case_abbreviation() -> None:
    text, words = postprocess(["a", "b", "c", "hello"], [(0, 1), (1, 2), (2, 3), (3, 4)])
    assert text == "ABC hello"
    assert words == (Word("ABC", 0, 3), Word("hello", 3, 4))


def test_abbreviation_between_cjk_characters() -> None:
    text, words = postprocess(["用", "g", "p", "u"], [(0, 1), (1, 2), (2, 3), (3, 4)])
    assert text == "用GPU"
    assert words == (Word("用", 0, 1), Word("GPU", 1, 4))


def test_specials_are_dropped() -> None:
    assert postprocess(["<s>", "你", "<unk>", "好", "</s>"]).text == "你好"


def test_dropped_unk_passes_its_span_to_the_next_word() -> None:
    # funasr pairs spans with the words that remain by position: 好 gets <unk>'s span.
    _, words = postprocess(["你", "<unk>", "好"], [(0, 1), (1, 2), (2, 3)])
    assert words == (Word("你", 0, 1), Word("好", 1, 2))


def test_untimed_token_shifts_spans_and_leaves_last_word_untimed() -> None:
    # `-` is neither CJK nor Latin: funasr gives it no span, then pairs by position.
    text, words = postprocess(["你", "-", "好"], [(0, 1), (1, 2), (2, 3)])
    assert text == "你-好"
    assert words == (Word("你", 0, 1), Word("-", 2, 3))


def test_strings_sorting_between_digits_count_as_chinese() -> None:
    # funasr's isChinese compares whole strings: "0" <= "3d" <= "9", so this is all "Chinese".
    text, words = postprocess(["你", "3d", "好"], [(0, 1), (1, 2), (2, 3)])
    assert text == "你3d好"
    assert words == (Word("你", 0, 1), Word("3d", 1, 2), Word("好", 2, 3))


def test_empty_token_list_gives_empty_text() -> None:
    assert postprocess([], []) == ("", ())


def test_remove_cjk_spaces_keeps_spaces_between_latin_words() -> None:
    assert remove_cjk_spaces("你 好 hello world 再 见 2024 年") == "你好hello world再见2024年"
