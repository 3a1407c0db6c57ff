"""Transcript -> txt, srt, vtt, json and tsv text, and atomic writing of result files.

Every writer is a pure function `Transcript -> str`; `write_outputs` writes one file per format.

- txt: one line per segment (the segment's text), so VAD breaks stay visible; joined, the lines
  are the transcript's text. An empty transcript gives an empty file.
- tsv: a `start\\tend\\ttext` header, then one row per segment, times in seconds with three
  decimals (seconds everywhere, like the JSON, rather than Whisper's integer milliseconds). Runs
  of whitespace in the text become one space; rows are written in the `csv` module's `excel-tab`
  dialect, so a text holding a quote is quoted and reads back whole.
- json: the shape in `JSON_SCHEMA` (`version` 1): text, duration, language, hotwords,
  hotwords_found, segments with their tokens (times in seconds, rounded to milliseconds) and
  token ids, and the caller's `metadata` (at least `model` and `options`).
- srt, vtt: cues from `cues`, see `CueOptions` for the rules.
"""

from __future__ import annotations

import csv
import glob
import io
import json
import math
import os
import secrets
import unicodedata
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zhuanxie.result import Segment, Transcript

FORMATS = ("txt", "srt", "vtt", "json", "tsv")
JSON_VERSION = 1

# Break points a punctuation model puts in the text. ASCII marks count only before a space, so
# `3.5` and `1,000` are not broken.
_PUNCTUATION = frozenset("，。？！、；：…,.?!;:")
_ASCII_PUNCTUATION = frozenset(",.?!;:")
_SENTENCE_END = frozenset("。？！….?!")
# Characters of punctuation and spaces searched past for the next token of a segment's text.
_MAX_GAP = 8


@dataclass(frozen=True)
class CueOptions:
    """How subtitle cues are cut and wrapped.

    Widths are counted in CJK characters: a wide or full-width character (CJK, full-width
    punctuation) counts 1, any other character 1/2 — half its display width — so a line holds
    18 Chinese characters or about 36 Latin letters and spaces.
    """

    max_chars_per_line: int = 18  # line width in CJK characters (see above)
    max_lines: int = 2  # lines per cue
    max_duration: float = 7.0  # seconds a cue may stay on screen
    # Seconds a cue is shown at least: a short cue is held on screen longer, up to the start of
    # the next cue (never overlapping it).
    min_duration: float = 0.5

    def __post_init__(self) -> None:
        if self.max_chars_per_line < 1:
            raise ValueError(
                f"CueOptions.max_chars_per_line must be at least 1, got {self.max_chars_per_line}"
            )
        if self.max_lines < 1:
            raise ValueError(f"CueOptions.max_lines must be at least 1, got {self.max_lines}")
        if not self.max_duration > 0:
            raise ValueError(f"CueOptions.max_duration must be positive, got {self.max_duration}")
        if not 0 <= self.min_duration <= self.max_duration:
            raise ValueError(
                "CueOptions.min_duration must be between 0 and max_duration "
                f"({self.max_duration}), got {self.min_duration}"
            )


DEFAULT_CUE_OPTIONS = CueOptions()


@dataclass(frozen=True)
class Cue:
    """One subtitle: its display span in seconds and its lines."""

    start: float
    end: float
    lines: tuple[str, ...]

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


@dataclass(frozen=True)
class _Unit:
    """An unbreakable piece of a segment's text: a token with the punctuation and spaces that
    follow it in the text (`body` without the trailing spaces, `gap` the spaces)."""

    body: str
    gap: str
    start: float
    end: float
    width: int  # display columns of body
    gap_width: int  # display columns of gap

    @property
    def mark(self) -> str:
        """The punctuation mark the unit ends with, or ""."""
        last = self.body[-1:]
        if last in _ASCII_PUNCTUATION and not self.gap:
            return ""
        return last if last in _PUNCTUATION else ""


# --- cues --------------------------------------------------------------------------------------


def cues(transcript: Transcript, options: CueOptions = DEFAULT_CUE_OPTIONS) -> list[Cue]:
    """Readable subtitle cues, in order, never overlapping, none of zero length.

    Each segment is cut on its own (a cue never spans two segments) into cues of at most
    `max_lines` lines of `max_chars_per_line` and `max_duration` seconds: each cue takes as much
    text as fits, ending at the last sentence end that leaves it at least half full, else at the
    last punctuation mark, else at the longest pause between tokens among the break points that
    leave the cue at least half full (or that let the rest of the segment fit in one cue). "Half
    full" counts tokens. A single token wider than a line or longer than `max_duration` gets a
    cue of its own, its display clipped to `max_duration`.
    """
    raw: list[tuple[float, float, tuple[str, ...]]] = []
    for segment in transcript.segments:
        units = _units(segment)
        for piece in _split(units, options):
            lines = tuple(_line_text(line) for line in _wrap(piece, options))
            raw.append((piece[0].start, max(u.end for u in piece), lines))
    return _settle(raw, transcript.duration, options)


def _units(segment: Segment) -> list[_Unit]:
    """The segment's text cut at its tokens, each piece timed by its token.

    Tokens are found in the text in order, so punctuation added to the text after decoding rides
    with the token before it. A token not found near where the previous one ended (the text was
    changed) gives no cut; its text stays with the token before. With no token found, the text is
    cut into characters and words timed by spreading the segment's span over them.
    """
    text = segment.text.strip()
    cuts: list[tuple[int, float, float]] = []  # (offset in text, start, end)
    cursor = 0  # where the text after the last token found begins
    skipped = 0  # characters the tokens not found since then would take
    for token in segment.tokens:
        # Between two tokens there is at most punctuation and spaces; a small window keeps a
        # missing token from matching a later repetition of its text far ahead.
        reach = cursor + skipped + len(token.text) + _MAX_GAP
        at = text.find(token.text, cursor, reach) if token.text.strip() else -1
        if at >= 0:
            cuts.append((at, token.start, token.end))
            cursor, skipped = at + len(token.text), 0
        else:
            skipped += len(token.text) + 1
    if not cuts:
        return _spread(text, segment.start, segment.end)
    offsets = [0, *(at for at, _, _ in cuts[1:]), len(text)]
    return [
        _unit(text[offsets[i] : offsets[i + 1]], start, end)
        for i, (_, start, end) in enumerate(cuts)
    ]


def _unit(text: str, start: float, end: float) -> _Unit:
    body = text.rstrip()
    gap = text[len(body) :]
    return _Unit(body, gap, start, end, _width(body), _width(gap))


def _spread(text: str, start: float, end: float) -> list[_Unit]:
    """Units of untimed text (CJK characters, Latin words) with the span shared by width."""
    pieces = list(_pieces(text))
    total = sum(_width(p) for p in pieces)
    units: list[_Unit] = []
    done = 0
    for piece in pieces:
        t0 = start + (end - start) * done / total
        done += _width(piece)
        units.append(_unit(piece, t0, start + (end - start) * done / total))
    return units


def _pieces(text: str) -> Iterator[str]:
    """Split text into wide characters and runs of narrow ones, each keeping the punctuation and
    spaces that follow it."""
    piece = ""
    for char in text:
        if piece and _starts_piece(char, piece[-1]):
            yield piece
            piece = ""
        piece += char
    if piece:
        yield piece


def _starts_piece(char: str, previous: str) -> bool:
    if char.isspace() or char in _PUNCTUATION:
        return False  # trails the piece before it
    return _wide(char) or _wide(previous) or previous.isspace() or previous in _PUNCTUATION


def _split(units: list[_Unit], options: CueOptions) -> list[list[_Unit]]:
    pieces: list[list[_Unit]] = []
    i = 0
    while i < len(units):
        fit = _fitting(units, i, options)
        if i + fit == len(units):
            pieces.append(units[i:])
            break
        take = _break(units, i, fit, options)
        pieces.append(units[i : i + take])
        i += take
    return pieces


def _fitting(units: list[_Unit], i: int, options: CueOptions) -> int:
    """How many units from `i` on fit in one cue (at least one)."""
    width = 2 * options.max_chars_per_line
    max_ms = _ms(options.max_duration)  # in milliseconds, as cue times are written
    lines, line, gap = 0, 0, 0
    first_start, last_end = units[i].start, units[i].end
    n = 0
    for j in range(i, len(units)):
        unit = units[j]
        if lines and line + gap + unit.width <= width:
            line += gap + unit.width
        else:
            lines, line = lines + 1, unit.width
        gap = unit.gap_width
        last_end = max(last_end, unit.end)
        if n and (lines > options.max_lines or _ms(last_end - first_start) > max_ms):
            break
        n += 1
    return n


def _break(units: list[_Unit], i: int, fit: int, options: CueOptions) -> int:
    """How many of the `fit` units from `i` on the next cue takes (the rest stays for later)."""
    takes = range(1, fit + 1)
    marks = [k for k in takes if units[i + k - 1].mark]
    # A sentence end beats a later comma unless it leaves the cue less than half full.
    sentences = [k for k in marks if units[i + k - 1].mark in _SENTENCE_END and 2 * k >= fit]
    if sentences:
        return sentences[-1]
    if marks:
        return marks[-1]
    rest = len(units) - i

    def allowed(k: int) -> bool:
        return 2 * k >= fit or _fitting(units, i + k, options) == rest - k

    def pause(k: int) -> tuple[float, int]:
        return units[i + k].start - units[i + k - 1].end, k

    return max((k for k in takes if allowed(k)), key=pause)


def _wrap(units: list[_Unit], options: CueOptions) -> list[list[_Unit]]:
    """Lines of a cue: filled greedily, except that two lines break at the last punctuation mark
    that lets both fit, else where their widths are most even (the longer line below)."""
    width = 2 * options.max_chars_per_line
    lines: list[list[_Unit]] = [[]]
    for unit in units:
        if lines[-1] and _line_width([*lines[-1], unit]) > width:
            lines.append([])
        lines[-1].append(unit)
    fits = [
        k
        for k in range(1, len(units))
        if _line_width(units[:k]) <= width and _line_width(units[k:]) <= width
    ]
    # A unit wider than a line has no even split; it keeps a line of its own.
    if len(lines) != 2 or not fits:
        return lines
    clauses = [k for k in fits if units[k - 1].mark]
    if clauses:
        k = clauses[-1]
    else:

        def unevenness(k: int) -> tuple[int, bool]:
            top, bottom = _line_width(units[:k]), _line_width(units[k:])
            return abs(top - bottom), top > bottom

        k = min(fits, key=unevenness)
    return [units[:k], units[k:]]


def _line_text(units: list[_Unit]) -> str:
    return "".join(u.body + u.gap for u in units).rstrip()


def _line_width(units: list[_Unit]) -> int:
    # The width of `_line_text(units)`: the gap after the last unit is stripped.
    return sum(u.width for u in units) + sum(u.gap_width for u in units[:-1])


def _width(text: str) -> int:
    """Display columns: 2 for a wide or full-width character, 1 for any other."""
    return sum(2 if _wide(c) else 1 for c in text)


def _wide(char: str) -> bool:
    return unicodedata.east_asian_width(char) in ("W", "F")


def _settle(
    raw: list[tuple[float, float, tuple[str, ...]]], duration: float, options: CueOptions
) -> list[Cue]:
    """Final times, in whole milliseconds so that formatting cannot make cues touch or overlap.

    A cue starts no earlier than the previous one ends, lasts at most `max_duration`, is held
    for `min_duration` where the next cue (or the end of the audio) leaves room, and lasts at
    least 1 ms — tokens with equal start and end, or a pile of them at one instant, still give
    cues a player shows, in order.
    """
    min_ms = round(options.min_duration * 1000)
    max_ms = max(1, round(options.max_duration * 1000))
    out: list[Cue] = []
    previous_end = 0
    for i, (start, end, lines) in enumerate(raw):
        s = max(_ms(start), previous_end)
        e = min(_ms(end), s + max_ms)
        limit = _ms(raw[i + 1][0]) if i + 1 < len(raw) else max(_ms(duration), e)
        e = max(e, min(s + min_ms, limit), s + 1)
        out.append(Cue(s / 1000, e / 1000, lines))
        previous_end = e
    return out


def _ms(seconds: float) -> int:
    return max(0, round(seconds * 1000))


# --- formats -----------------------------------------------------------------------------------


def to_txt(transcript: Transcript) -> str:
    return "".join(f"{s.text.strip()}\n" for s in transcript.segments if s.text.strip())


def to_srt(transcript: Transcript, options: CueOptions = DEFAULT_CUE_OPTIONS) -> str:
    """SubRip: numbered cues, `HH:MM:SS,mmm` times; empty for an empty transcript."""
    return "".join(
        f"{n}\n{_timestamp(c.start, ',')} --> {_timestamp(c.end, ',')}\n{c.text}\n\n"
        for n, c in enumerate(cues(transcript, options), start=1)
    )


def to_vtt(transcript: Transcript, options: CueOptions = DEFAULT_CUE_OPTIONS) -> str:
    """WebVTT: the `WEBVTT` header, then cues with `HH:MM:SS.mmm` times."""
    body = "".join(
        f"\n{_timestamp(c.start, '.')} --> {_timestamp(c.end, '.')}\n{_vtt_escape(c.text)}\n"
        for c in cues(transcript, options)
    )
    return "WEBVTT\n" + body


def to_tsv(transcript: Transcript) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, dialect="excel-tab", lineterminator="\n")
    writer.writerow(("start", "end", "text"))
    for s in transcript.segments:
        writer.writerow((f"{s.start:.3f}", f"{s.end:.3f}", " ".join(s.text.split())))
    return buffer.getvalue()


def to_json(transcript: Transcript, metadata: Mapping[str, Any]) -> str:
    """The transcript as JSON of the shape `JSON_SCHEMA`; `metadata` must hold `model` (name or
    directory) and `options` (the settings used), and may hold more."""
    missing = [key for key in ("model", "options") if key not in metadata]
    if missing:
        raise ValueError(f"JSON metadata needs {missing}, got keys {sorted(metadata)}")
    document = {
        "version": JSON_VERSION,
        "text": transcript.text,
        "duration": _seconds(transcript.duration),
        "language": transcript.language,
        "hotwords": list(transcript.hotwords),
        "hotwords_found": list(transcript.hotwords_found),
        "segments": [
            {
                "start": _seconds(s.start),
                "end": _seconds(s.end),
                "text": s.text,
                "tokens": [
                    {"text": t.text, "start": _seconds(t.start), "end": _seconds(t.end)}
                    for t in s.tokens
                ],
                "token_ids": list(s.token_ids),
            }
            for s in transcript.segments
        ],
        "sentences": [
            {"text": x.text, "start": _seconds(x.start), "end": _seconds(x.end)}
            for x in transcript.sentences
        ],
        "metadata": dict(metadata),
    }
    return json.dumps(document, ensure_ascii=False, indent=2, allow_nan=False) + "\n"


def _seconds(value: float) -> float:
    if not math.isfinite(value):
        raise ValueError(f"a transcript time must be finite, got {value}")
    return round(value, 3)


def _timestamp(seconds: float, decimal_mark: str) -> str:
    ms = round(seconds * 1000)
    hours, ms = divmod(ms, 3_600_000)
    minutes, ms = divmod(ms, 60_000)
    secs, ms = divmod(ms, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{decimal_mark}{ms:03d}"


def _vtt_escape(text: str) -> str:
    # WebVTT cue text is markup: `&` and `<` start entities and tags, and cue text may not hold
    # `-->`, which escaping `>` rules out.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def render(
    transcript: Transcript,
    fmt: str,
    metadata: Mapping[str, Any],
    cue_options: CueOptions = DEFAULT_CUE_OPTIONS,
) -> str:
    """The text of one format (`FORMATS`); `metadata` is used by json only."""
    writers: dict[str, Callable[[], str]] = {
        "txt": lambda: to_txt(transcript),
        "srt": lambda: to_srt(transcript, cue_options),
        "vtt": lambda: to_vtt(transcript, cue_options),
        "json": lambda: to_json(transcript, metadata),
        "tsv": lambda: to_tsv(transcript),
    }
    _check_formats([fmt])
    return writers[fmt]()


# --- files -------------------------------------------------------------------------------------


def write_outputs(
    transcript: Transcript,
    stem_path: Path,
    formats: Sequence[str],
    metadata: Mapping[str, Any],
    cue_options: CueOptions = DEFAULT_CUE_OPTIONS,
) -> list[Path]:
    """Write `<stem_path>.<format>` for each format, each atomically; return the paths in order.

    The suffix is appended to the full name (`talk.v2` -> `talk.v2.srt`). Every format is checked
    and rendered before any file is written; the directory is created if needed. Each file is
    replaced whole or not at all, but a failure on one format leaves those before it written.
    """
    _check_formats(formats)
    wanted = list(dict.fromkeys(formats))
    texts = [render(transcript, fmt, metadata, cue_options) for fmt in wanted]
    stem_path.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem_path.with_name(f"{stem_path.name}.{fmt}") for fmt in wanted]
    for path, text in zip(paths, texts):
        write_atomic(path, text)
    return paths


def write_atomic(path: Path, text: str) -> None:
    """Write UTF-8 text to `path` so that readers, and the file after a crash, see either the old
    content or the new, never a part: a temporary file in the same directory, flushed to disk,
    renamed over `path`, and the rename itself flushed.

    A temporary file a killed process left for the same `path` is removed first: the result it
    was writing is being written again now.
    """
    for stale in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        stale.unlink(missing_ok=True)
    temp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    # os.open with mode 0o666 lets the umask decide permissions, as for any new file (mkstemp
    # would make every result 0600).
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)


def _fsync_directory(directory: Path) -> None:
    # A rename is durable only once its directory is flushed (POSIX); Windows cannot open one.
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _check_formats(formats: Sequence[str]) -> None:
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise ValueError(f"unknown output format(s) {unknown}; known formats: {list(FORMATS)}")


_TIME = {"type": "number", "minimum": 0, "description": "seconds from the start of the input"}

JSON_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "zhuanxie transcript",
    "type": "object",
    "required": [
        "version",
        "text",
        "duration",
        "language",
        "hotwords",
        "hotwords_found",
        "segments",
        "sentences",
        "metadata",
    ],
    "additionalProperties": False,
    "properties": {
        "version": {"const": JSON_VERSION},
        "sentences": {
            "type": "array",
            "description": "timed sentences; empty unless punctuation was added",
            "items": {
                "type": "object",
                "required": ["text", "start", "end"],
                "additionalProperties": False,
                "properties": {"text": {"type": "string"}, "start": _TIME, "end": _TIME},
            },
        },
        "text": {"type": "string", "description": "the whole transcript"},
        "duration": {**_TIME, "description": "seconds of audio"},
        "language": {"type": "string"},
        "hotwords": {
            "type": "array",
            "items": {"type": "string"},
            "description": "hotwords requested for this input",
        },
        "hotwords_found": {
            "type": "array",
            "items": {"type": "string"},
            "description": "the requested hotwords that occur in the text",
        },
        "segments": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["start", "end", "text", "tokens", "token_ids"],
                "additionalProperties": False,
                "properties": {
                    "start": _TIME,
                    "end": _TIME,
                    "text": {"type": "string"},
                    "tokens": {
                        "type": "array",
                        "description": "CJK characters and English words, with their spans",
                        "items": {
                            "type": "object",
                            "required": ["text", "start", "end"],
                            "additionalProperties": False,
                            "properties": {
                                "text": {"type": "string"},
                                "start": _TIME,
                                "end": _TIME,
                            },
                        },
                    },
                    "token_ids": {
                        "type": "array",
                        "items": {"type": "integer", "minimum": 0},
                        "description": "model vocabulary ids behind the text, specials removed",
                    },
                },
            },
        },
        "metadata": {
            "type": "object",
            "required": ["model", "options"],
            "properties": {
                "model": {"type": "string", "description": "model name or directory"},
                "options": {"type": "object", "description": "the settings used"},
            },
        },
    },
}
