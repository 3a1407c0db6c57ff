"""Output writers: subtitle cue rules checked through real SRT/VTT parsers, JSON against its
schema, TSV through the csv module, and atomic file replacement."""

from __future__ import annotations

import csv
import io
import itertools
import json
import os
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import srt
import webvtt
from hypothesis import given, settings
from hypothesis import strategies as st

from zhuanxie.result import Segment, Token, Transcript
from zhuanxie.writers import (
    DEFAULT_CUE_OPTIONS,
    FORMATS,
    JSON_SCHEMA,
    CueOptions,
    cues,
    render,
    to_json,
    to_srt,
    to_tsv,
    to_txt,
    to_vtt,
    write_atomic,
    write_outputs,
)

METADATA = {"model": "seaco-paraformer-large", "options": {"dtype": "float32", "vad": True}}
PUNCTUATION = "，。？！、,.?!"
PROSE = "今天天气很好我们一起去公园散步吧路上遇到了很多老朋友大家聊得非常开心"


# --- building transcripts ----------------------------------------------------------------------


def timed(
    units: Sequence[str],
    start: float = 0.0,
    step: float = 0.2,
    pauses: Mapping[int, float] | None = None,
) -> tuple[Token, ...]:
    """Tokens `step` seconds long, back to back, with `pauses[i]` seconds of silence after
    token i."""
    pauses = pauses or {}
    tokens = []
    t = start
    for i, text in enumerate(units):
        tokens.append(Token(text, round(t, 3), round(t + step, 3)))
        t += step + pauses.get(i, 0.0)
    return tuple(tokens)


def segment(tokens: tuple[Token, ...], text: str | None = None) -> Segment:
    text = "".join(t.text for t in tokens) if text is None else text
    ids = tuple(range(1, len(tokens) + 1))
    return Segment(tokens[0].start, tokens[-1].end, text, tokens, ids)


def transcript(*segments: Segment, **fields: Any) -> Transcript:
    duration = segments[-1].end + 0.5 if segments else 0.0
    text = "".join(s.text for s in segments)
    return Transcript(text=text, duration=duration, segments=segments, **fields)


EMPTY = Transcript(text="", duration=3.0, segments=())


# --- reading subtitles back --------------------------------------------------------------------


@dataclass(frozen=True)
class Parsed:
    start: float
    end: float
    lines: tuple[str, ...]


def parse_srt(text: str) -> list[Parsed]:
    return [
        Parsed(c.start.total_seconds(), c.end.total_seconds(), tuple(c.content.split("\n")))
        for c in srt.parse(text)
    ]


def parse_vtt(text: str) -> list[Parsed]:
    return [
        Parsed(vtt_seconds(c.start), vtt_seconds(c.end), tuple(c.lines))
        for c in webvtt.from_string(text).captions
    ]


def vtt_seconds(stamp: str) -> float:
    hours, minutes, seconds = stamp.split(":")
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def subtitles(t: Transcript, options: CueOptions = DEFAULT_CUE_OPTIONS) -> list[Parsed]:
    """The cues of both formats, checked equal, then the SRT ones."""
    from_srt = parse_srt(to_srt(t, options))
    assert parse_vtt(to_vtt(t, options)) == from_srt
    return from_srt


def width(line: str) -> float:
    """Line width in CJK characters: wide characters 1, others 1/2."""
    return sum(1 if unicodedata.east_asian_width(c) in "WF" else 0.5 for c in line)


def assert_cue_rules(parsed: list[Parsed], t: Transcript, options: CueOptions) -> None:
    for cue in parsed:
        assert cue.end > cue.start
        assert cue.end - cue.start <= options.max_duration + 1e-9
        assert 1 <= len(cue.lines) <= options.max_lines
        assert all(line and width(line) <= options.max_chars_per_line for line in cue.lines)
    for before, after in itertools.pairwise(parsed):
        assert before.end <= after.start
    joined = "".join("".join(c.lines) for c in parsed)
    assert joined.replace(" ", "") == t.text.replace(" ", "")


def cue_texts(parsed: list[Parsed], line_separator: str = "") -> list[str]:
    return [line_separator.join(c.lines) for c in parsed]


# --- CueOptions --------------------------------------------------------------------------------


def test_cue_options_defaults() -> None:
    options = CueOptions()
    assert (options.max_chars_per_line, options.max_lines, options.max_duration) == (18, 2, 7.0)
    assert 0 < options.min_duration <= options.max_duration


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"max_chars_per_line": 0}, "max_chars_per_line"),
        ({"max_lines": 0}, "max_lines"),
        ({"max_duration": 0.0}, "max_duration"),
        ({"min_duration": -0.1}, "min_duration"),
        ({"min_duration": 8.0}, "min_duration"),
    ],
)
def test_cue_options_reject_invalid_values(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CueOptions(**fields)


# --- subtitles: exact output -------------------------------------------------------------------


def test_srt_of_a_short_cjk_transcript() -> None:
    t = transcript(segment(timed("你好世界", start=1.0)))
    assert to_srt(t) == "1\n00:00:01,000 --> 00:00:01,800\n你好世界\n\n"


def test_vtt_of_a_short_cjk_transcript() -> None:
    t = transcript(segment(timed("你好世界", start=1.0)))
    assert to_vtt(t) == "WEBVTT\n\n00:00:01.000 --> 00:00:01.800\n你好世界\n"


def test_timestamps_past_an_hour() -> None:
    t = transcript(segment(timed("你好", start=3725.5)))
    assert "01:02:05,500 --> 01:02:06,000" in to_srt(t)
    assert "01:02:05.500 --> 01:02:06.000" in to_vtt(t)


def test_vtt_escapes_markup_characters() -> None:
    t = transcript(segment(timed(["a", "<", "b", "&"]), text="a < b &"))
    assert to_vtt(t).endswith("\na &lt; b &amp;\n")
    # webvtt-py hands cue text back as written, entities and all.
    assert parse_vtt(to_vtt(t))[0].lines == ("a &lt; b &amp;",)


def test_empty_transcript_gives_valid_empty_subtitles() -> None:
    assert to_srt(EMPTY) == ""
    assert to_vtt(EMPTY) == "WEBVTT\n"
    assert parse_srt(to_srt(EMPTY)) == []
    assert parse_vtt(to_vtt(EMPTY)) == []


# --- subtitles: cue rules ----------------------------------------------------------------------


def test_short_segment_is_one_cue_on_one_line() -> None:
    t = transcript(segment(timed(PROSE[:12])))
    assert subtitles(t) == [Parsed(0.0, 2.4, (PROSE[:12],))]


def test_cue_of_two_lines_is_wrapped_evenly() -> None:
    t = transcript(segment(timed(PROSE[:30], step=0.1)))
    assert subtitles(t) == [Parsed(0.0, 3.0, (PROSE[:15], PROSE[15:30]))]


def test_long_monologue_breaks_at_its_pauses() -> None:
    # 200 tokens of 0.2 s with half a second of silence after every 25th: a cue holds at most
    # 32 tokens (7 s), so each cue runs from pause to pause.
    text = (PROSE * 6)[:200]
    pauses = {i: 0.5 for i in range(24, 199, 25)}
    t = transcript(segment(timed(text, pauses=pauses)))
    parsed = subtitles(t)
    assert_cue_rules(parsed, t, CueOptions())
    assert cue_texts(parsed) == [text[i : i + 25] for i in range(0, 200, 25)]


def test_cue_breaks_at_the_longest_pause() -> None:
    text = (PROSE * 2)[:50]
    t = transcript(segment(timed(text, step=0.1, pauses={19: 0.2, 24: 0.3, 30: 0.25})))
    parsed = subtitles(t)
    assert_cue_rules(parsed, t, CueOptions())
    assert cue_texts(parsed) == [text[:25], text[25:]]


def test_pause_early_in_a_cue_does_not_leave_a_fragment() -> None:
    # The pause after 3 tokens is the longest, but cutting there leaves a 3-character cue and
    # 47 characters that need two more cues; the longest pause in the cue's second half wins.
    text = (PROSE * 2)[:50]
    t = transcript(segment(timed(text, step=0.1, pauses={2: 1.0, 29: 0.2})))
    assert cue_texts(subtitles(t)) == [text[:30], text[30:]]


def test_pause_early_in_a_cue_is_used_when_the_rest_fits() -> None:
    text = (PROSE * 2)[:40]
    t = transcript(segment(timed(text, step=0.1, pauses={9: 1.0, 29: 0.2})))
    assert cue_texts(subtitles(t)) == [text[:10], text[10:]]


def test_cues_break_at_punctuation_over_a_longer_pause() -> None:
    clauses = [
        "今天天气很好，",
        "我们一起去公园散步吧。",
        "路上遇到了很多老朋友，",
        "大家聊得非常开心！",
    ]
    text = "".join(clauses)
    chars = [c for c in text if c not in PUNCTUATION]
    # The longest pause falls inside a clause, not at a punctuation mark.
    t = transcript(segment(timed(chars, step=0.15, pauses={8: 0.6}), text=text))
    parsed = subtitles(t)
    assert_cue_rules(parsed, t, CueOptions())
    assert [c.lines for c in parsed] == [
        ("今天天气很好，我们一起去公园散步吧。", "路上遇到了很多老朋友，"),
        ("大家聊得非常开心！",),
    ]


def test_cue_ends_at_a_sentence_end_before_a_later_comma() -> None:
    # At 0.35 s a token a cue holds 20 tokens; the full stop after 10 leaves it half full.
    text = "我们一起去公园散步吧。路上遇到了很多老朋友，大家聊得非常开心"
    chars = [c for c in text if c not in PUNCTUATION]
    t = transcript(segment(timed(chars, step=0.35), text=text))
    assert cue_texts(subtitles(t)) == [
        "我们一起去公园散步吧。",
        "路上遇到了很多老朋友，大家聊得非常开心",
    ]


def test_every_cue_of_punctuated_text_ends_at_a_punctuation_mark() -> None:
    sentence = "我们一起去公园散步吧，路上遇到了很多老朋友。"
    text = sentence * 10
    chars = [c for c in text if c not in PUNCTUATION]
    t = transcript(segment(timed(chars, step=0.15), text=text))
    parsed = subtitles(t)
    assert_cue_rules(parsed, t, CueOptions())
    assert len(parsed) > 5
    assert all(c.lines[-1][-1] in PUNCTUATION for c in parsed)


def test_lines_of_a_cue_break_at_punctuation() -> None:
    text = "路上遇到了很多老朋友，大家聊得非常开心"
    chars = [c for c in text if c not in PUNCTUATION]
    t = transcript(segment(timed(chars, step=0.1), text=text))
    assert subtitles(t)[0].lines == ("路上遇到了很多老朋友，", "大家聊得非常开心")


def test_ascii_dot_inside_a_number_is_not_a_break() -> None:
    # Cut after `.`, the first cue would be half full; the pause after `3.5路上…` wins instead.
    units = [*PROSE[:16], "3", ".", "5", *(PROSE * 2)[16:46]]
    text = "".join(units)
    t = transcript(segment(timed(units, step=0.1, pauses={30: 0.3}), text=text))
    assert cue_texts(subtitles(t)) == [text[:31], text[31:]]


def test_ascii_full_stop_before_a_space_is_a_break() -> None:
    text = "the weather is nice today. we went to the park and met many old friends there"
    words = text.split()
    t = transcript(segment(timed(words, pauses={8: 0.5}), text=text))
    assert cue_texts(subtitles(t), " ") == [
        "the weather is nice today.",
        "we went to the park and met many old friends there",
    ]


def test_english_words_keep_their_spaces_and_stay_whole() -> None:
    english = "we tested the recognizer on english speech with several long words today"
    words = english.split()
    text = "我们用" + english + "测试了"
    units = ["我", "们", "用", *words, "测", "试", "了"]
    options = CueOptions()
    t = transcript(segment(timed(units, step=0.3), text=text))
    parsed = subtitles(t, options)
    assert_cue_rules(parsed, t, options)
    lines = [line for c in parsed for line in c.lines]
    assert lines == [
        "我们用we tested the recognizer on",
        "english speech with several long",
        "words today测试了",
    ]


def test_latin_letters_count_half_a_cjk_character() -> None:
    # 36 letters and spaces are 18 CJK characters wide: one line.
    words = ["abcdefgh"] * 4  # 4 * 8 + 3 spaces = 35 columns
    t = transcript(segment(timed(words), text=" ".join(words)))
    assert subtitles(t)[0].lines == (" ".join(words),)


def test_cue_never_spans_two_segments() -> None:
    first = segment(timed("你好", start=0.0))
    second = segment(timed("世界", start=0.5))
    t = transcript(first, second)
    parsed = subtitles(t)
    assert cue_texts(parsed) == ["你好", "世界"]
    assert_cue_rules(parsed, t, CueOptions())


def test_short_cue_is_held_for_min_duration() -> None:
    t = transcript(segment(timed("好", step=0.1)), segment(timed("的", start=2.0, step=0.1)))
    assert [(c.start, c.end) for c in subtitles(t)] == [(0.0, 0.5), (2.0, 2.5)]


def test_short_cue_is_held_only_until_the_next_cue() -> None:
    t = transcript(segment(timed("好", step=0.1)), segment(timed("的", start=0.3, step=0.1)))
    assert [(c.start, c.end) for c in subtitles(t)] == [(0.0, 0.3), (0.3, 0.8)]


def test_token_longer_than_max_duration_is_clipped() -> None:
    t = transcript(segment((Token("嗯", 1.0, 11.0),)))
    assert subtitles(t) == [Parsed(1.0, 8.0, ("嗯",))]


def test_tokens_with_equal_start_and_end() -> None:
    tokens = tuple(Token(c, 1.0, 1.0) for c in (PROSE * 3)[:80])
    t = transcript(segment(tokens))
    options = CueOptions()
    parsed = subtitles(t, options)
    assert len(parsed) == 3
    assert_cue_rules(parsed, t, options)


def test_segment_without_tokens_is_spread_over_its_span() -> None:
    text = (PROSE * 2)[:60]
    t = transcript(Segment(0.0, 12.0, text, (), ()))
    options = CueOptions()
    parsed = subtitles(t, options)
    assert_cue_rules(parsed, t, options)
    assert [(c.start, c.end) for c in parsed] == [(0.0, 7.0), (7.0, 12.0)]


def test_tokens_missing_from_the_text_keep_the_text_whole() -> None:
    # A later stage wrote `二` as `2`: that token gives no cut, the others still do.
    text = "我们有2个老朋友住在北京"
    units = ["我", "们", "有", "二", "个", "老", "朋", "友", "住", "在", "北", "京"]
    t = transcript(segment(timed(units), text=text))
    parsed = subtitles(t)
    assert cue_texts(parsed) == [text]
    assert (parsed[0].start, parsed[0].end) == (0.0, 2.4)


@st.composite
def random_segment(draw: st.DrawFn, start: float) -> Segment:
    """Tokens of CJK characters and English words, some of zero length, some followed by
    pauses, with punctuation after some of them in the text."""
    units = draw(
        st.lists(st.sampled_from([*PROSE[:12], "hello", "speech", "ok"]), min_size=1, max_size=90)
    )
    steps = draw(st.lists(st.sampled_from([0.0, 0.05, 0.2, 0.4]), min_size=len(units)))
    gaps = draw(st.lists(st.sampled_from([0.0, 0.0, 0.1, 1.5]), min_size=len(units)))
    marks = draw(st.lists(st.sampled_from(["", "", "", "，", "。", ","]), min_size=len(units)))
    tokens = []
    text = ""
    t = start
    for unit, step, gap, mark in zip(units, steps, gaps, marks):
        tokens.append(Token(unit, round(t, 3), round(t + step, 3)))
        t += step + gap
        latin = unit.isascii()
        if text and latin and text[-1].isascii() and text[-1] != ",":
            text += " "
        text += unit + mark + (" " if latin and mark else "")
    return segment(tuple(tokens), text.strip())


@st.composite
def random_transcript(draw: st.DrawFn) -> Transcript:
    segments = []
    start = 0.0
    for _ in range(draw(st.integers(min_value=0, max_value=3))):
        segments.append(draw(random_segment(start)))
        start = segments[-1].end + draw(st.sampled_from([0.0, 0.3, 2.0]))
    return transcript(*segments)


cue_options = st.builds(
    CueOptions,
    max_chars_per_line=st.integers(min_value=4, max_value=24),
    max_lines=st.integers(min_value=1, max_value=3),
    max_duration=st.floats(min_value=1.0, max_value=8.0),
    min_duration=st.floats(min_value=0.0, max_value=1.0),
)


@settings(max_examples=100, deadline=None)
@given(random_transcript(), cue_options)
def test_cue_rules_hold_for_random_transcripts(t: Transcript, options: CueOptions) -> None:
    parsed = subtitles(t, options)
    assert_cue_rules(parsed, t, options)
    # One cue per segment at least, and no cue mixing two segments' texts.
    texts = iter(cue_texts(parsed))
    for s in t.segments:
        target, covered = s.text.replace(" ", ""), ""
        while covered != target:
            covered += next(texts).replace(" ", "")
            assert target.startswith(covered)
    assert next(texts, None) is None


def test_cues_returns_the_same_cues_as_srt() -> None:
    t = transcript(segment(timed((PROSE * 2)[:60])))
    assert [(c.start, c.end, c.lines) for c in cues(t)] == [
        (p.start, p.end, p.lines) for p in parse_srt(to_srt(t))
    ]


# --- txt, tsv, json ----------------------------------------------------------------------------


def test_txt_has_one_line_per_segment() -> None:
    t = transcript(segment(timed("你好")), segment(timed(["hello", "world"]), text="hello world"))
    assert to_txt(t) == "你好\nhello world\n"
    assert to_txt(EMPTY) == ""


def test_tsv_rows_parse_with_csv() -> None:
    t = transcript(
        segment(timed("你好", start=0.25)),
        segment(timed(["say", '"hi"'], start=2.0), text='say "hi"'),
    )
    rows = list(csv.reader(io.StringIO(to_tsv(t)), dialect="excel-tab"))
    assert rows == [
        ["start", "end", "text"],
        ["0.250", "0.650", "你好"],
        ["2.000", "2.400", 'say "hi"'],
    ]


def test_tsv_of_empty_transcript_is_the_header() -> None:
    assert to_tsv(EMPTY) == "start\tend\ttext\n"


def test_json_validates_and_round_trips() -> None:
    t = transcript(
        segment(timed("魔搭社区", start=0.5)),
        segment(timed(["hello", "world"], start=3.0), text="hello world"),
        hotwords=("魔搭", "阿里"),
        hotwords_found=("魔搭",),
    )
    document = json.loads(to_json(t, METADATA))
    jsonschema.validate(document, JSON_SCHEMA)
    assert document["version"] == 1
    assert document["text"] == t.text
    assert document["duration"] == t.duration
    assert document["language"] == "zh"
    assert document["hotwords"] == ["魔搭", "阿里"]
    assert document["hotwords_found"] == ["魔搭"]
    assert document["metadata"] == METADATA
    back = tuple(
        Segment(
            s["start"],
            s["end"],
            s["text"],
            tuple(Token(k["text"], k["start"], k["end"]) for k in s["tokens"]),
            tuple(s["token_ids"]),
        )
        for s in document["segments"]
    )
    assert back == t.segments


def test_json_of_empty_transcript_validates() -> None:
    document = json.loads(to_json(EMPTY, METADATA))
    jsonschema.validate(document, JSON_SCHEMA)
    assert document["segments"] == []


def test_json_keeps_cjk_readable_and_times_in_milliseconds() -> None:
    t = transcript(segment((Token("你", 0.1 + 0.2, 0.7000001),)))
    out = to_json(t, METADATA)
    assert "你" in out
    assert json.loads(out)["segments"][0]["tokens"][0] == {"text": "你", "start": 0.3, "end": 0.7}


def test_json_needs_model_and_options_in_metadata() -> None:
    with pytest.raises(ValueError, match=r"\['options'\]"):
        to_json(EMPTY, {"model": "x"})


def test_schema_rejects_a_segment_without_tokens_field() -> None:
    document = json.loads(to_json(transcript(segment(timed("你好"))), METADATA))
    del document["segments"][0]["tokens"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(document, JSON_SCHEMA)


def test_render_rejects_an_unknown_format() -> None:
    with pytest.raises(ValueError, match=r"\['docx'\].*'txt', 'srt', 'vtt', 'json', 'tsv'"):
        render(EMPTY, "docx", METADATA)


# --- files -------------------------------------------------------------------------------------


T = transcript(segment(timed("你好世界")))


def test_write_outputs_writes_each_format(tmp_path: Path) -> None:
    paths = write_outputs(T, tmp_path / "talk.v2", FORMATS, METADATA)
    assert paths == [tmp_path / f"talk.v2.{fmt}" for fmt in FORMATS]
    assert paths[1].read_text(encoding="utf-8") == to_srt(T)
    assert json.loads(paths[3].read_text(encoding="utf-8")) == json.loads(to_json(T, METADATA))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in paths)


def test_write_outputs_creates_the_directory(tmp_path: Path) -> None:
    (path,) = write_outputs(T, tmp_path / "a" / "b" / "talk", ["txt"], METADATA)
    assert path.read_text(encoding="utf-8") == "你好世界\n"


def test_write_outputs_writes_a_repeated_format_once(tmp_path: Path) -> None:
    assert write_outputs(T, tmp_path / "talk", ["txt", "txt"], METADATA) == [tmp_path / "talk.txt"]


def test_write_outputs_rejects_unknown_format_before_writing(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"\['doc'\].*known formats"):
        write_outputs(T, tmp_path / "talk", ["txt", "doc"], METADATA)
    assert list(tmp_path.iterdir()) == []


def test_write_outputs_replaces_an_existing_file(tmp_path: Path) -> None:
    (tmp_path / "talk.txt").write_text("old\n", encoding="utf-8")
    write_outputs(T, tmp_path / "talk", ["txt"], METADATA)
    assert (tmp_path / "talk.txt").read_text(encoding="utf-8") == "你好世界\n"
    assert [p.name for p in tmp_path.iterdir()] == ["talk.txt"]


def test_failed_write_leaves_the_old_file_and_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "talk.txt").write_text("old\n", encoding="utf-8")

    def fail(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", fail)
    with pytest.raises(OSError, match="No space left"):
        write_outputs(T, tmp_path / "talk", ["txt"], METADATA)
    assert (tmp_path / "talk.txt").read_text(encoding="utf-8") == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["talk.txt"]


def test_written_file_has_default_permissions(tmp_path: Path) -> None:
    (path,) = write_outputs(T, tmp_path / "talk", ["txt"], METADATA)
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_a_temp_file_left_by_a_killed_writer_is_cleaned_up(tmp_path: Path) -> None:
    stale = tmp_path / ".talk.srt.0123456789ab.tmp"
    stale.write_text("half a subtitle")
    other = tmp_path / ".other.srt.0123456789ab.tmp"
    other.write_text("someone else's")
    write_atomic(tmp_path / "talk.srt", "whole")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.srt.0123456789ab.tmp", "talk.srt"]
