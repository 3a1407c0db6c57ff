"""Sentences from punctuated text and token timestamps: hand-made cases with exact answers."""

from __future__ import annotations

import pytest

from zhuanxie.result import Token
from zhuanxie.sentences import Sentence, SentenceOptions, sentences


def timed(*texts: str, step: float = 0.5) -> list[Token]:
    """Tokens back to back, `step` seconds each, starting at 0."""
    return [Token(t, i * step, (i + 1) * step) for i, t in enumerate(texts)]


def test_cjk_sentences_split_after_full_stop_and_question_mark() -> None:
    tokens = timed(*"你好世界今天天气好吗我很好")
    result = sentences(tokens, "你好，世界。今天天气好吗？我很好。")
    assert result == [
        Sentence("你好，世界。", 0.0, 2.0, tuple(tokens[0:4])),
        Sentence("今天天气好吗？", 2.0, 5.0, tuple(tokens[4:10])),
        Sentence("我很好。", 5.0, 6.5, tuple(tokens[10:13])),
    ]


def test_english_words_match_despite_capitalisation_and_spaces() -> None:
    tokens = timed("hello", "world", "我", "们", "use", "gpu")
    result = sentences(tokens, "Hello world. 我们use gpu.")
    assert [(s.text, s.start, s.end) for s in result] == [
        ("Hello world.", 0.0, 1.0),
        ("我们use gpu.", 1.0, 3.0),
    ]


def test_abbreviation_token_matches_its_capitalised_form() -> None:
    # The punctuator's str.capitalize turns a sentence-initial `GPU` into `Gpu`.
    tokens = timed("好", "GPU", "很", "快")
    result = sentences(tokens, "好。 Gpu很快。")
    assert [s.text for s in result] == ["好。", "Gpu很快。"]
    assert result[1].tokens == (tokens[1], tokens[2], tokens[3])


def test_exclamation_and_ascii_question_mark_end_sentences() -> None:
    tokens = timed("太", "好", "了", "ok", "really")
    result = sentences(tokens, "太好了！ Ok? Really.")
    assert [s.text for s in result] == ["太好了！", "Ok?", "Really."]


def test_text_without_a_final_mark_is_one_sentence() -> None:
    tokens = timed(*"你好世界")
    assert sentences(tokens, "你好，世界") == [Sentence("你好，世界", 0.0, 2.0, tuple(tokens))]


def test_leading_marks_join_the_first_sentence() -> None:
    tokens = timed(*"好的")
    assert [s.text for s in sentences(tokens, "“好的。”")] == ["“好的。”"]


def test_words_without_tokens_stay_in_the_text_of_the_sentence_before() -> None:
    # The recogniser's text may hold a trailing word that got no timestamp.
    tokens = timed("我", "们")
    result = sentences(tokens, "我们，好。")
    assert result == [Sentence("我们，好。", 0.0, 1.0, tuple(tokens))]


def test_no_tokens_no_sentences() -> None:
    assert sentences([], "你好。") == []


def test_token_missing_from_text_is_an_error() -> None:
    with pytest.raises(ValueError, match=r"token 1 \('世'\)"):
        sentences(timed("你", "世"), "你好。")


def test_tokens_must_appear_in_order() -> None:
    with pytest.raises(ValueError, match="token 1"):
        sentences(timed("好", "你"), "你好。")


def test_long_sentence_is_cut_at_the_last_comma_within_the_limit() -> None:
    tokens = timed(*"一二三四五六七八九十", step=1.0)
    text = "一二，三四，五六七，八九十。"
    options = SentenceOptions(max_duration=5.0)
    assert [(s.text, s.start, s.end) for s in sentences(tokens, text, options)] == [
        ("一二，三四，", 0.0, 4.0),
        ("五六七，", 4.0, 7.0),
        ("八九十。", 7.0, 10.0),
    ]


def test_long_sentence_without_a_comma_inside_the_limit_is_cut_at_the_first_comma() -> None:
    tokens = timed(*"一二三四五六", step=1.0)
    options = SentenceOptions(max_duration=2.0)
    result = sentences(tokens, "一二三四，五六。", options)
    assert [s.text for s in result] == ["一二三四，", "五六。"]


def test_long_sentence_without_any_comma_stays_whole() -> None:
    tokens = timed(*"一二三四五六", step=1.0)
    result = sentences(tokens, "一二三四五六。", SentenceOptions(max_duration=2.0))
    assert [s.text for s in result] == ["一二三四五六。"]


def test_commas_do_not_cut_without_a_limit() -> None:
    tokens = timed(*"一二三四", step=10.0)
    assert [s.text for s in sentences(tokens, "一二，三四。")] == ["一二，三四。"]


def test_options_are_validated() -> None:
    with pytest.raises(ValueError, match="max_duration"):
        SentenceOptions(max_duration=0.0)
    with pytest.raises(ValueError, match="sentence_ends"):
        SentenceOptions(sentence_ends="")
