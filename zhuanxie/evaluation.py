"""Scoring transcripts against references: CER / WER, and hotword recall, precision and F1.

Normalisation, applied alike to references, hypotheses and hotwords:

1. Unicode NFKC, which also turns full-width forms into ASCII (``ＡＢＣ１２３，`` → ``ABC123,``).
2. Lower case.
3. Apostrophes (``'`` and ``’``) are deleted, so "don't" and "dont" agree. Every other
   punctuation mark (Unicode category P*), symbol (S*: ``$ + % ©``, emoji) and control or format
   character (Cc, Cf: zero-width space, BOM) becomes a space.
4. Runs of whitespace collapse to one space; the ends are stripped.

Nothing else is rewritten: no number normalisation (二零二四 ≠ 2024), no traditional/simplified
folding, no spelling variants.

Units. CER counts the characters of the normalised text with all whitespace removed, so an
English word inside Chinese counts letter by letter. WER counts words, where every CJK character
(Han ideographs, kana) is a word of its own and every other run of characters between spaces or
CJK characters is one word: "我用iPhone拍照" → 我 / 用 / iphone / 拍 / 照. Pure English text
splits on spaces; pure Chinese text gives the same units as CER. With ``metric="auto"`` an
utterance is scored by CER when its normalised reference (or, if that is empty, its hypothesis)
contains a CJK character, and by WER otherwise.

Errors are the minimum edit distance (Levenshtein; substitution, deletion and insertion cost 1
each). Among minimum alignments the one with the most substitutions (so the fewest deletions and
insertions) is reported, which fixes the split into S/D/I without changing the total. Corpus
rates are sum(errors) / sum(reference units) over the utterances scored by that metric. A
reference with no hypothesis is scored against the empty string (all deletions) and listed as
missing; a hypothesis with no reference is ignored and listed as extra.

Hotwords. SeACo-Paraformer (arXiv 2308.03266) reports recall, precision and F1 of the biasing
words; the counting below is the occurrence-count convention of public hotword evaluation
scripts for FunASR models. Hotwords are normalised and split into words as for WER, so
they match whole words only ("魔搭" matches inside "魔搭社区"; "cat" does not match "category").
For utterance u and hotword w let r = the occurrences of w in the reference and h = those in
the hypothesis (non-overlapping, counted left to right, anywhere in the text), and
tp = min(r, h). Then, summing over all utterances (missing hypotheses count h = 0) and hotwords,
recall = Σtp / Σr, precision = Σtp / Σh, F1 = 2PR / (P + R); a rate whose denominator is 0 is
undefined (None).
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

Metric = Literal["cer", "wer"]

_APOSTROPHES = frozenset("'\u2019")
# Han (URO, extension A, compatibility, supplementary planes), the ideographic zero, and kana.
_CJK_CLASS = "\u3007\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f"
_CJK = re.compile(f"[{_CJK_CLASS}]")
_WORD = re.compile(f"[{_CJK_CLASS}]|[^\\s{_CJK_CLASS}]+")
_LIST_LIMIT = 20  # ids shown in a report before "... and N more"


class EvalInputError(ValueError):
    """A reference, hypothesis or results file that cannot be read; names the file and line."""


@dataclass(frozen=True)
class EditCounts:
    """Edit operations between a reference and a hypothesis, in units of the metric."""

    substitutions: int = 0
    deletions: int = 0
    insertions: int = 0
    length: int = 0  # reference units (characters for CER, words for WER)

    @property
    def errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    @property
    def rate(self) -> float:
        """errors / length; 0.0 for two empty texts, inf for insertions into an empty one."""
        if self.length == 0:
            return 0.0 if self.errors == 0 else float("inf")
        return self.errors / self.length

    def __add__(self, other: EditCounts) -> EditCounts:
        return EditCounts(
            self.substitutions + other.substitutions,
            self.deletions + other.deletions,
            self.insertions + other.insertions,
            self.length + other.length,
        )


@dataclass(frozen=True)
class HotwordCounts:
    """Hotword occurrences in references and hypotheses, and how many of them match."""

    reference: int = 0
    hypothesis: int = 0
    matched: int = 0  # sum over utterances of min(reference, hypothesis) occurrences

    @property
    def recall(self) -> float | None:
        return self.matched / self.reference if self.reference else None

    @property
    def precision(self) -> float | None:
        return self.matched / self.hypothesis if self.hypothesis else None

    @property
    def f1(self) -> float | None:
        p, r = self.precision, self.recall
        if p is None or r is None:
            return None
        return 2 * p * r / (p + r) if p + r else 0.0

    def __add__(self, other: HotwordCounts) -> HotwordCounts:
        return HotwordCounts(
            self.reference + other.reference,
            self.hypothesis + other.hypothesis,
            self.matched + other.matched,
        )


@dataclass(frozen=True)
class UtteranceScore:
    """One utterance: the normalised texts and the edit counts under its metric."""

    id: str
    metric: Metric
    reference: str
    hypothesis: str
    counts: EditCounts
    missing: bool  # no hypothesis was given; scored against the empty string


@dataclass(frozen=True)
class EvalReport:
    """Corpus and per-utterance scores; see the module docstring for every definition."""

    utterances: tuple[UtteranceScore, ...]
    cer: EditCounts | None  # summed over CER utterances; None when there are none
    wer: EditCounts | None
    missing: tuple[str, ...]  # reference ids without a hypothesis
    extra: tuple[str, ...]  # hypothesis ids without a reference, not scored
    hotwords: Mapping[str, HotwordCounts]  # normalised hotword -> counts, in the given order
    hotword_total: HotwordCounts | None  # None when no hotwords were given


def normalize(text: str) -> str:
    """The normalised form of `text` (NFKC, lower case, no punctuation, single spaces)."""
    text = unicodedata.normalize("NFKC", text).lower()
    kept = []
    for ch in text:
        if ch in _APOSTROPHES:
            continue
        category = unicodedata.category(ch)
        kept.append(" " if category[0] in "PS" or category in ("Cc", "Cf") else ch)
    return " ".join("".join(kept).split())


def characters(normalized: str) -> list[str]:
    """CER units: the characters of a normalised text, whitespace removed."""
    return [ch for ch in normalized if not ch.isspace()]


def words(normalized: str) -> list[str]:
    """WER units: whitespace-separated words, with every CJK character a word of its own."""
    return _WORD.findall(normalized)


def has_cjk(text: str) -> bool:
    return _CJK.search(text) is not None


@dataclass(frozen=True)
class _Costs:
    sub: int
    dele: int
    ins: int


# Rows up to this wide are faster in plain Python (~0.7 µs a cell) than as numpy calls (~25 µs a
# row, whatever the width).
_PYTHON_MAX_WIDTH = 24


def edit_counts(reference: Sequence[str], hypothesis: Sequence[str]) -> EditCounts:
    """Minimum edit operations turning `reference` into `hypothesis` (sequences of units).

    O(len(reference) × len(hypothesis)) time and O(len(hypothesis)) memory, so hour-long
    transcripts are fine.
    """
    n, m = len(reference), len(hypothesis)
    if n == 0 or m == 0:
        return EditCounts(deletions=n, insertions=m, length=n)
    ids: dict[str, int] = {}
    ref = [ids.setdefault(u, len(ids)) for u in reference]
    hyp = [ids.setdefault(u, len(ids)) for u in hypothesis]
    # Each cell holds cost·K + deletions with K above any deletion count, so one integer minimum
    # picks the fewest errors, then the fewest deletions. Every alignment has
    # deletions - insertions = n - m, so that is also the fewest insertions and the most
    # substitutions.
    k = n + 1
    costs = _Costs(sub=k, dele=k + 1, ins=k)
    rows = _last_row_python if m <= _PYTHON_MAX_WIDTH else _last_row_numpy
    cost, deletions = divmod(rows(ref, hyp, costs)[-1], k)
    insertions = deletions - (n - m)
    return EditCounts(cost - deletions - insertions, deletions, insertions, n)


def _last_row_python(ref: list[int], hyp: list[int], costs: _Costs) -> list[int]:
    sub, dele, ins = costs.sub, costs.dele, costs.ins
    prev = [j * ins for j in range(len(hyp) + 1)]
    for r in ref:
        left = prev[0] + dele
        row = [left]
        for h, up, up_left in zip(hyp, prev[1:], prev):
            left = min(up + dele, up_left if h == r else up_left + sub, left + ins)
            row.append(left)
        prev = row
    return prev


def _last_row_numpy(ref: list[int], hyp: list[int], costs: _Costs) -> list[int]:
    hyp_ids = np.array(hyp)
    steps = np.arange(len(hyp) + 1, dtype=np.int64) * costs.ins
    prev = steps.copy()  # row 0: the first j hypothesis units all inserted
    for r in ref:
        best = np.empty_like(prev)
        best[0] = prev[0] + costs.dele
        substituted = prev[:-1] + np.where(hyp_ids == r, 0, costs.sub)
        best[1:] = np.minimum(prev[1:] + costs.dele, substituted)
        # Insertions run along the row: cell j = min over c <= j of best[c] + (j - c)·ins.
        prev = np.minimum.accumulate(best - steps) + steps
    return [int(x) for x in prev]


def cer(reference: str, hypothesis: str) -> EditCounts:
    """Character edit counts after normalisation (see the module docstring)."""
    return edit_counts(characters(normalize(reference)), characters(normalize(hypothesis)))


def wer(reference: str, hypothesis: str) -> EditCounts:
    """Word edit counts after normalisation, each CJK character a word."""
    return edit_counts(words(normalize(reference)), words(normalize(hypothesis)))


def count_occurrences(units: Sequence[str], phrase: Sequence[str]) -> int:
    """Non-overlapping occurrences of `phrase` in `units`, counted left to right."""
    size, count, i = len(phrase), 0, 0
    target = list(phrase)
    while size and i + size <= len(units):
        if list(units[i : i + size]) == target:
            count += 1
            i += size
        else:
            i += 1
    return count


def evaluate(
    references: Mapping[str, str],
    hypotheses: Mapping[str, str],
    hotwords: Sequence[str] | None = None,
    *,
    metric: Literal["auto", "cer", "wer"] = "auto",
) -> EvalReport:
    """Score `hypotheses` against `references` (both id -> text), optionally with hotwords."""
    if metric not in ("auto", "cer", "wer"):
        raise ValueError(f"metric must be auto, cer or wer, not {metric!r}")
    if not references:
        raise ValueError("no references to score against")
    phrases = _hotword_units(hotwords or [])
    scores = []
    hotword_counts = {phrase: HotwordCounts() for phrase in phrases}
    for utt_id, ref_text in references.items():
        ref = normalize(ref_text)
        hyp = normalize(hypotheses.get(utt_id, ""))
        chosen: Metric = metric if metric != "auto" else "cer" if has_cjk(ref or hyp) else "wer"
        units = characters if chosen == "cer" else words
        counts = edit_counts(units(ref), units(hyp))
        scores.append(UtteranceScore(utt_id, chosen, ref, hyp, counts, utt_id not in hypotheses))
        ref_words, hyp_words = words(ref), words(hyp)
        for phrase, units_of_phrase in phrases.items():
            r = count_occurrences(ref_words, units_of_phrase)
            h = count_occurrences(hyp_words, units_of_phrase)
            hotword_counts[phrase] += HotwordCounts(r, h, min(r, h))
    return EvalReport(
        utterances=tuple(scores),
        cer=_total([s.counts for s in scores if s.metric == "cer"]),
        wer=_total([s.counts for s in scores if s.metric == "wer"]),
        missing=tuple(s.id for s in scores if s.missing),
        extra=tuple(h for h in hypotheses if h not in references),
        hotwords=hotword_counts,
        hotword_total=sum(hotword_counts.values(), HotwordCounts()) if phrases else None,
    )


def _hotword_units(hotwords: Sequence[str]) -> dict[str, list[str]]:
    if isinstance(hotwords, str):
        raise TypeError("hotwords must be a sequence of phrases, not one string")
    phrases: dict[str, list[str]] = {}
    for hotword in hotwords:
        phrase = normalize(hotword)
        if not phrase:
            raise ValueError(f"hotword {hotword!r} is empty after normalisation")
        phrases.setdefault(phrase, words(phrase))
    return phrases


def _total(counts: list[EditCounts]) -> EditCounts | None:
    return sum(counts, EditCounts()) if counts else None


# --- Reading references and hypotheses --------------------------------------------------------


def load_texts(path: Path) -> dict[str, str]:
    """id -> text from a ``.json`` file (``{id: text}`` or ``[{"id": ..., "text": ...}]``) or a
    TSV file (any other name; one ``id<TAB>text`` per line, blank lines skipped)."""
    if path.suffix.lower() == ".json":
        return _load_json_texts(path)
    return _load_tsv(path)


def load_hypotheses(path: Path) -> dict[str, str]:
    """id -> text from a results folder of ``<id>.json`` files, or a TSV / JSON like references."""
    return load_results_dir(path) if path.is_dir() else load_texts(path)


def load_results_dir(directory: Path) -> dict[str, str]:
    """id -> text from our JSON outputs under `directory` (recursively; hidden files skipped).

    The id is the file name without ``.json``; each file must be an object with a string
    ``text``. Two files with the same id are an error.
    """
    texts: dict[str, str] = {}
    origin: dict[str, Path] = {}
    for path in sorted(directory.rglob("*.json")):
        if any(part.startswith(".") for part in path.relative_to(directory).parts):
            continue
        data = _read_json(path)
        if not isinstance(data, dict) or not isinstance(data.get("text"), str):
            raise EvalInputError(f"{path}: expected a JSON object with a string 'text' field")
        if path.stem in texts:
            raise EvalInputError(f"{path}: id {path.stem!r} also comes from {origin[path.stem]}")
        texts[path.stem] = data["text"]
        origin[path.stem] = path
    if not texts:
        raise EvalInputError(f"{directory}: no <id>.json result files found")
    return texts


def _load_tsv(path: Path) -> dict[str, str]:
    texts: dict[str, str] = {}
    first_line: dict[str, int] = {}
    for number, line in enumerate(_read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        utt_id, tab, text = line.partition("\t")
        utt_id = utt_id.strip()
        if not tab or not utt_id:
            raise EvalInputError(f"{path}: line {number}: expected 'id<TAB>text', got {line!r}")
        if utt_id in texts:
            raise EvalInputError(
                f"{path}: line {number}: id {utt_id!r} already given on line {first_line[utt_id]}"
            )
        texts[utt_id] = text.strip()
        first_line[utt_id] = number
    return texts


def _load_json_texts(path: Path) -> dict[str, str]:
    data = _read_json(path)
    if isinstance(data, dict):
        for key, value in data.items():
            if not isinstance(value, str):
                raise EvalInputError(f"{path}: entry {key!r}: the text must be a string")
        return dict(data)
    if not isinstance(data, list):
        raise EvalInputError(f"{path}: expected an object {{id: text}} or a list of {{id, text}}")
    texts: dict[str, str] = {}
    for index, item in enumerate(data):
        where = f"{path}: item {index}"
        if not isinstance(item, dict) or not isinstance(item.get("text"), str):
            raise EvalInputError(f"{where}: expected an object with string 'id' and 'text'")
        utt_id = item.get("id")
        if not isinstance(utt_id, str) or not utt_id:
            raise EvalInputError(f"{where}: expected an object with string 'id' and 'text'")
        if utt_id in texts:
            raise EvalInputError(f"{where}: id {utt_id!r} appears twice")
        texts[utt_id] = item["text"]
    return texts


def _read_text(path: Path) -> str:
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise EvalInputError(f"{path}: cannot read: {e.strerror or e}") from e
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise EvalInputError(f"{path}: line {line}: not valid UTF-8") from e


def _read_json(path: Path) -> object:
    try:
        return json.loads(_read_text(path))
    except json.JSONDecodeError as e:
        raise EvalInputError(f"{path}: line {e.lineno} column {e.colno}: {e.msg}") from e


# --- Report -----------------------------------------------------------------------------------


def format_report(report: EvalReport, *, per_utterance: bool = False) -> str:
    """A plain-text summary: corpus rates, missing/extra ids, hotword table, optional rows."""
    n_cer = sum(s.metric == "cer" for s in report.utterances)
    lines = [
        f"utterances: {len(report.utterances)} scored ({n_cer} by CER, "
        f"{len(report.utterances) - n_cer} by WER), {len(report.missing)} missing hypotheses, "
        f"{len(report.extra)} extra hypotheses ignored"
    ]
    for name, counts, unit in (("CER", report.cer, "chars"), ("WER", report.wer, "words")):
        if counts is not None:
            lines.append(
                f"{name} {_percent(counts.rate)}  ({counts.errors} errors / {counts.length} "
                f"{unit}: {counts.substitutions} sub, {counts.deletions} del, "
                f"{counts.insertions} ins)"
            )
    if report.missing:
        lines.append("missing (scored as all deletions): " + _id_list(report.missing))
    if report.extra:
        lines.append("extra (ignored): " + _id_list(report.extra))
    if report.hotword_total is not None:
        lines.extend(_hotword_lines(report.hotwords, report.hotword_total))
    if per_utterance:
        header = ["id", "metric", "errors", "length", "rate", "S", "D", "I", "note"]
        rows = [_utterance_row(s) for s in report.utterances]
        lines.extend(["", _table(header, rows)])
    return "\n".join(lines)


def _utterance_row(score: UtteranceScore) -> list[str]:
    c = score.counts
    numbers = [c.errors, c.length]
    edits = [c.substitutions, c.deletions, c.insertions]
    return [
        score.id,
        score.metric.upper(),
        *map(str, numbers),
        _percent(c.rate),
        *map(str, edits),
        "missing" if score.missing else "",
    ]


def _hotword_lines(hotwords: Mapping[str, HotwordCounts], total: HotwordCounts) -> list[str]:
    rows = [
        [phrase, *map(str, (c.reference, c.hypothesis, c.matched))]
        + [_percent(x) for x in (c.recall, c.precision, c.f1)]
        for phrase, c in [*hotwords.items(), ("(all)", total)]
    ]
    header = ["hotword", "in refs", "in hyps", "matched", "recall", "precision", "F1"]
    return [
        f"hotwords: recall {_percent(total.recall)}, precision {_percent(total.precision)}, "
        f"F1 {_percent(total.f1)}",
        _table(header, rows),
    ]


def _table(header: list[str], rows: list[list[str]]) -> str:
    table = [header, *rows]
    widths = [max(_width(row[c]) for row in table) for c in range(len(header))]
    return "\n".join(
        "  ".join(cell + " " * (w - _width(cell)) for cell, w in zip(row, widths)).rstrip()
        for row in table
    )


def _width(text: str) -> int:
    """Terminal columns: CJK and other wide characters take two."""
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def _percent(value: float | None) -> str:
    if value is None:
        return "n/a"
    return "inf" if value == float("inf") else f"{100 * value:.2f}%"


def _id_list(ids: Sequence[str]) -> str:
    shown = ", ".join(ids[:_LIST_LIMIT])
    return shown + (f", ... and {len(ids) - _LIST_LIMIT} more" if len(ids) > _LIST_LIMIT else "")
