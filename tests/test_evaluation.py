"""`zhuanxie eval`: normalisation, CER/WER, hotword recall/precision/F1, and the file loaders."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import zhuanxie.evaluation as ev
from zhuanxie.evaluation import (
    EditCounts,
    EvalInputError,
    HotwordCounts,
    cer,
    count_occurrences,
    edit_counts,
    evaluate,
    format_report,
    load_hypotheses,
    load_results_dir,
    load_texts,
    normalize,
    wer,
    words,
)


def reference_distance(a: list[str], b: list[str]) -> int:
    """Textbook Levenshtein distance, the oracle for the optimised implementation."""
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, start=1):
        row = [i]
        for j, y in enumerate(b, start=1):
            row.append(min(prev[j] + 1, row[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = row
    return prev[-1]


# --- Edit counts ------------------------------------------------------------------------------


def test_cer_counts_one_substituted_character() -> None:
    counts = cer("甚至出现交易几乎停滞的情况", "甚至出现交易几乎停止的情况")
    assert counts == EditCounts(substitutions=1, deletions=0, insertions=0, length=13)
    assert counts.rate == 1 / 13


def test_wer_counts_a_deletion_and_an_insertion() -> None:
    counts = wer("ask not what your country can do", "ask what your country can do for")
    assert counts == EditCounts(substitutions=0, deletions=1, insertions=1, length=7)
    assert counts.rate == 2 / 7


def test_empty_texts() -> None:
    assert cer("", "") == EditCounts()
    assert cer("", "").rate == 0.0
    assert cer("", "你好") == EditCounts(insertions=2)
    assert cer("", "你好").rate == float("inf")
    assert cer("你好", "") == EditCounts(deletions=2, length=2)


def test_ties_are_counted_as_substitutions() -> None:
    # "ab" -> "ba" costs 2 either as two substitutions or as one deletion plus one insertion.
    assert edit_counts(list("ab"), list("ba")) == EditCounts(2, 0, 0, 2)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.sampled_from("abc"), max_size=60),
    st.lists(st.sampled_from("abc"), max_size=60),
)
def test_edit_counts_match_textbook_levenshtein(a: list[str], b: list[str]) -> None:
    counts = edit_counts(a, b)
    assert counts.errors == reference_distance(a, b)
    assert counts.deletions - counts.insertions == len(a) - len(b)
    assert min(counts.substitutions, counts.deletions, counts.insertions) >= 0


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.sampled_from("abcd"), max_size=40),
    st.lists(st.sampled_from("abcd"), min_size=1, max_size=40),
)
def test_python_and_numpy_rows_agree(a: list[str], b: list[str]) -> None:
    original = ev._PYTHON_MAX_WIDTH
    try:
        ev._PYTHON_MAX_WIDTH = 10**9
        by_python = edit_counts(a, b)
        ev._PYTHON_MAX_WIDTH = -1
        by_numpy = edit_counts(a, b)
    finally:
        ev._PYTHON_MAX_WIDTH = original
    assert by_python == by_numpy


# --- Normalisation ----------------------------------------------------------------------------


def test_normalize_folds_full_width_case_and_punctuation() -> None:
    assert normalize("Ｈｅｌｌｏ，ＷＯＲＬＤ！") == "hello world"
    assert normalize("「你好」，世界。\u3000再见…") == "你好 世界 再见"
    assert normalize("  a\tb\n\nc  ") == "a b c"


def test_normalize_deletes_apostrophes_and_removes_symbols() -> None:
    assert normalize("Don't stop, it’s 100% $5 + ok 😀") == "dont stop its 100 5 ok"
    assert normalize("zero\u200bwidth\ufeff") == "zero width"


def test_punctuation_and_width_do_not_count_as_errors() -> None:
    assert cer("你好，世界。", "你好世界") == EditCounts(length=4)
    assert wer("Hello, World!", "ｈｅｌｌｏ ｗｏｒｌｄ") == EditCounts(length=2)
    assert wer("don't", "dont") == EditCounts(length=1)


def test_words_split_cjk_characters_and_keep_latin_words() -> None:
    assert words(normalize("我用iPhone 15拍照")) == ["我", "用", "iphone", "15", "拍", "照"]
    assert words("ask not") == ["ask", "not"]


def test_cer_compares_latin_letters_inside_chinese_one_by_one() -> None:
    assert cer("用iPhone拍", "用iphone拍") == EditCounts(length=8)
    assert cer("用iPhone拍", "用iphome拍") == EditCounts(1, 0, 0, 8)


# --- evaluate ---------------------------------------------------------------------------------


def test_evaluate_picks_cer_for_chinese_and_wer_for_english() -> None:
    report = evaluate(
        {"zh": "甚至出现交易几乎停滞的情况", "en": "ask not what your country can do"},
        {"zh": "甚至出现交易几乎停止的情况", "en": "ask what your country can do for"},
    )
    assert [(u.id, u.metric) for u in report.utterances] == [("zh", "cer"), ("en", "wer")]
    assert report.cer == EditCounts(1, 0, 0, 13)
    assert report.wer == EditCounts(0, 1, 1, 7)


def test_corpus_rate_is_total_errors_over_total_length() -> None:
    report = evaluate({"a": "一二三四", "b": "五六"}, {"a": "一二三四", "b": "五七"})
    assert report.cer == EditCounts(1, 0, 0, 6)
    assert report.cer is not None
    assert report.cer.rate == 1 / 6
    assert report.wer is None


def test_forced_metric_overrides_detection() -> None:
    report = evaluate({"a": "你好 world"}, {"a": "你好 word"}, metric="wer")
    assert report.utterances[0].metric == "wer"
    assert report.wer == EditCounts(1, 0, 0, 3)


def test_missing_hypotheses_count_as_deletions_and_extras_are_ignored() -> None:
    report = evaluate({"a": "你好", "b": "世界"}, {"a": "你好", "x": "多余"})
    assert report.missing == ("b",)
    assert report.extra == ("x",)
    assert report.cer == EditCounts(0, 2, 0, 4)
    assert [u.missing for u in report.utterances] == [False, True]


def test_evaluate_rejects_no_references_and_unknown_metric() -> None:
    with pytest.raises(ValueError, match="no references"):
        evaluate({}, {"a": "x"})
    with pytest.raises(ValueError, match="metric must be"):
        evaluate({"a": "x"}, {"a": "x"}, metric="mer")  # type: ignore[arg-type]


# --- Hotwords ---------------------------------------------------------------------------------


def test_hotword_recall_precision_f1_hand_computed() -> None:
    references = {
        "u1": "张三在北京见到了张三",  # 张三 ×2, 北京 ×1
        "u2": "他在北京工作",  # 北京 ×1
        "u3": "I work at Alibaba",  # alibaba ×1
        "u4": "hello",
    }
    hypotheses = {
        "u1": "张三在背景见到了张三",  # 张三 ×2 (tp 2), 北京 ×0 (tp 0)
        "u2": "北京北京工作",  # 北京 ×2 (tp 1)
        "u3": "i work at ali baba",  # alibaba ×0
        "u4": "Alibaba",  # alibaba ×1, a false alarm
    }
    report = evaluate(references, hypotheses, ["张三", "北京", "Alibaba"])
    assert report.hotwords == {
        "张三": HotwordCounts(reference=2, hypothesis=2, matched=2),
        "北京": HotwordCounts(reference=2, hypothesis=2, matched=1),
        "alibaba": HotwordCounts(reference=1, hypothesis=1, matched=0),
    }
    total = report.hotword_total
    assert total == HotwordCounts(reference=5, hypothesis=5, matched=3)
    assert (total.recall, total.precision, total.f1) == (0.6, 0.6, pytest.approx(0.6))
    assert report.hotwords["北京"].f1 == 0.5
    assert report.hotwords["alibaba"].f1 == 0.0


def test_hotword_precision_and_recall_differ() -> None:
    report = evaluate({"a": "魔搭社区", "b": "魔搭"}, {"a": "魔搭社区魔搭", "b": "模大"}, ["魔搭"])
    # refs 2, hyps 2 (both in "a"), matched min(1, 2) + min(1, 0) = 1
    assert report.hotword_total == HotwordCounts(reference=2, hypothesis=2, matched=1)
    counts = HotwordCounts(reference=4, hypothesis=2, matched=2)
    assert (counts.recall, counts.precision, counts.f1) == (0.5, 1.0, pytest.approx(2 / 3))


def test_hotwords_match_whole_words_only() -> None:
    assert count_occurrences(words(normalize("欢迎来到魔搭社区")), ["魔", "搭"]) == 1
    assert count_occurrences(words(normalize("a category of cats")), ["cat"]) == 0
    assert count_occurrences(words("哈哈哈"), ["哈", "哈"]) == 1  # non-overlapping


def test_hotword_rates_are_undefined_without_occurrences() -> None:
    report = evaluate({"a": "你好"}, {"a": "你好"}, ["缺席"])
    assert report.hotword_total == HotwordCounts()
    assert (report.hotword_total.recall, report.hotword_total.f1) == (None, None)


def test_hotwords_are_normalised_and_deduplicated() -> None:
    report = evaluate({"a": "Hello World"}, {"a": "hello world"}, ["ＨＥＬＬＯ", "hello!"])
    assert report.hotwords == {"hello": HotwordCounts(1, 1, 1)}
    with pytest.raises(ValueError, match="empty after normalisation"):
        evaluate({"a": "x"}, {"a": "x"}, ["！？"])
    assert evaluate({"a": "x"}, {"a": "x"}).hotword_total is None


# --- Report -----------------------------------------------------------------------------------


def test_format_report_summarises_rates_ids_and_hotwords() -> None:
    report = evaluate(
        {"a": "甚至出现交易几乎停滞的情况", "b": "你好"},
        {"a": "甚至出现交易几乎停止的情况", "x": "多余"},
        ["情况"],
    )
    text = format_report(report, per_utterance=True)
    lines = text.splitlines()
    assert lines[0] == (
        "utterances: 2 scored (2 by CER, 0 by WER), 1 missing hypotheses, "
        "1 extra hypotheses ignored"
    )
    assert lines[1] == "CER 20.00%  (3 errors / 15 chars: 1 sub, 2 del, 0 ins)"
    assert lines[2] == "missing (scored as all deletions): b"
    assert lines[3] == "extra (ignored): x"
    assert lines[4] == "hotwords: recall 100.00%, precision 100.00%, F1 100.00%"
    assert lines[6].split()[:4] == ["情况", "1", "1", "1"]
    assert lines[-1].split() == ["b", "CER", "2", "2", "100.00%", "0", "2", "0", "missing"]


# --- Loaders ----------------------------------------------------------------------------------


def test_load_tsv(tmp_path: Path) -> None:
    path = tmp_path / "ref.tsv"
    path.write_text("\ufeffa\t你好 世界\n\nb\t\nc\tx\ty\n", encoding="utf-8")
    assert load_texts(path) == {"a": "你好 世界", "b": "", "c": "x\ty"}


def test_tsv_line_without_tab_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "ref.tsv"
    path.write_text("a\t你好\nb 世界\n", encoding="utf-8")
    with pytest.raises(
        EvalInputError, match=rf"{re.escape(str(path))}: line 2: expected 'id<TAB>text'"
    ):
        load_texts(path)


def test_tsv_duplicate_id_names_both_lines(tmp_path: Path) -> None:
    path = tmp_path / "ref.tsv"
    path.write_text("a\t一\nb\t二\na\t三\n", encoding="utf-8")
    with pytest.raises(EvalInputError, match=r"line 3: id 'a' already given on line 1"):
        load_texts(path)


def test_non_utf8_file_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "ref.tsv"
    path.write_bytes("a\t你好\n".encode() + "b\t世界\n".encode("gbk"))
    with pytest.raises(EvalInputError, match=rf"{re.escape(str(path))}: line 2: not valid UTF-8"):
        load_texts(path)


def test_load_json_dict_and_list(tmp_path: Path) -> None:
    as_dict = tmp_path / "dict.json"
    as_dict.write_text(json.dumps({"a": "你好", "b": "world"}), encoding="utf-8")
    as_list = tmp_path / "list.json"
    as_list.write_text(json.dumps([{"id": "a", "text": "你好"}, {"id": "b", "text": "world"}]))
    assert load_texts(as_dict) == load_texts(as_list) == {"a": "你好", "b": "world"}


def test_invalid_json_names_file_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "ref.json"
    path.write_text('{\n  "a": "你好",\n  "b": \n}\n', encoding="utf-8")
    with pytest.raises(
        EvalInputError, match=rf"{re.escape(str(path))}: line 4 column 1: Expecting value"
    ):
        load_texts(path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"a": 3}, "entry 'a': the text must be a string"),
        ([{"id": "a", "text": "x"}, {"id": "b"}], "item 1: expected an object with string"),
        ([{"id": "a", "text": "x"}, {"id": "a", "text": "y"}], "item 1: id 'a' appears twice"),
        ("just a string", "expected an object"),
    ],
)
def test_malformed_json_entries_are_named(tmp_path: Path, content: object, message: str) -> None:
    path = tmp_path / "ref.json"
    path.write_text(json.dumps(content), encoding="utf-8")
    with pytest.raises(EvalInputError, match=message) as info:
        load_texts(path)
    assert str(path) in str(info.value)


def write_result(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"text": text, "segments": []}, ensure_ascii=False), "utf-8")


def test_load_results_folder(tmp_path: Path) -> None:
    write_result(tmp_path / "a.json", "你好")
    write_result(tmp_path / "sub" / "b.json", "世界")
    write_result(tmp_path / ".partial" / "c.json", "ignored")
    (tmp_path / "a.srt").write_text("not json")
    assert load_hypotheses(tmp_path) == {"a": "你好", "b": "世界"}


def test_load_hypotheses_reads_a_tsv_file_too(tmp_path: Path) -> None:
    path = tmp_path / "hyp.tsv"
    path.write_text("a\t你好\n", encoding="utf-8")
    assert load_hypotheses(path) == {"a": "你好"}


def test_results_folder_errors_name_the_file(tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "a.json").write_text('{"text": "x",\n', encoding="utf-8")
    with pytest.raises(
        EvalInputError, match=rf"{re.escape(str(broken / 'a.json'))}: line 2 column 1"
    ):
        load_results_dir(broken)

    no_text = tmp_path / "no_text"
    write_result(no_text / "a.json", "x")
    (no_text / "b.json").write_text('{"segments": []}', encoding="utf-8")
    with pytest.raises(
        EvalInputError, match=rf"{re.escape(str(no_text / 'b.json'))}: expected a JSON object"
    ):
        load_results_dir(no_text)


def test_results_folder_duplicate_ids_and_empty_folder(tmp_path: Path) -> None:
    write_result(tmp_path / "x" / "a.json", "一")
    write_result(tmp_path / "y" / "a.json", "二")
    with pytest.raises(EvalInputError, match=r"id 'a' also comes from .*x/a.json"):
        load_results_dir(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(EvalInputError, match=r"no <id>\.json result files"):
        load_results_dir(empty)
