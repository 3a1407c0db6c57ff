"""Inverse text normalisation (ITN) of Mandarin ASR output: 二零二四年三月五日 → 2024年3月5日.

The engine is WeTextProcessing's Chinese ITN grammar (wenet-e2e, Apache-2.0) as compiled into the
`wetext` wheel, which runs the FSTs with kaldifst: no pynini, no grammar build, no download. It is
optional (``pip install 'zhuanxie[itn]'``) and imported when the first `InverseNormalizer` is made.
docs/itn.md has the measured comparison with cn2an, chinese2digits, itntext and NeMo.

How a text is rewritten. The grammar's tagger cuts text into tokens and copies each span into named
fields (``date { year: "二零二四年" month: "三月" day: "五日" }``, ``char { value: "好" }``); its
verbalizer writes each token out. We call the two stages through wetext's public `tag`, `reorder`
and `verbalize`, and verbalize token by token rather than the whole string, which lets this module
- leave the classes the caller did not ask for as spoken (`ItnOptions.convert`);
- write dates, times, money and units the way Chinese text does (`ItnOptions.style`): the grammar
  writes 2024/03/05, 3:20p.m., $100, ¥350, 3.5kg and 10min;
- undo the grammar's misreadings that a token shows: the adverb 十分 (十分感谢 is not 10分感谢) and
  approximate numbers with 几 (十几, 几十 stay in characters, as GB/T 15835-2011 writes them);
- copy plain characters itself: whole-string verbalization in wetext 0.1.8 leaves the tagger's
  escapes in the output (他说"二十" → 他说\\"20\\").
Fixed phrases whose numbers are words (三十而立, 十字路口, 五光十色: `KEEP_PHRASES`) are cut out
before tagging, as the grammar's own whitelist does for 一些 or 三心二意. A token the verbalizer
cannot write (kaldifst returns "" when there is no path) is kept as spoken.

What the grammar leaves alone by design: single digits, so 一些, 一起, 五块钱, 两米 and 第三 stay as
they are. WeTextProcessing's enable_0_to_9 graph converts them, but in wetext 0.1.8 that tagger
emits tokens the shipped verbalizer cannot write, which empties whole sentences.

Cost: tagging takes about 0.5 ms per character, so clauses are tagged one at a time and those with
no numeral are passed through untouched (no token spans a clause break or a space; the tests check
the result equals tagging the whole text).
"""

from __future__ import annotations

import functools
import importlib
import re
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import Literal, TypeAlias, get_args

ITN_EXTRA = "pip install 'zhuanxie[itn]'"

Style: TypeAlias = Literal["chinese", "wetext"]
TokenClass: TypeAlias = Literal[
    "cardinal", "date", "fraction", "licenseplate", "math", "measure", "money", "time"
]
TOKEN_CLASSES: frozenset[TokenClass] = frozenset(get_args(TokenClass))

# Number idioms and fixed terms that the grammar (wetext 0.1.8) rewrites, found by running it over
# common 成语 and terms with numbers; ones it already leaves alone (一心一意, 千方百计) are not here,
# nor ones that are also plain numbers (二百五 is 250 too, 十三点 13 o'clock). A phrase is kept only
# where no numeral touches it: 二百五十 and 九十成绩 are numbers.
KEEP_PHRASES: frozenset[str] = frozenset(
    {
        "十有八九", "十之八九", "八九不离十", "十拿九稳", "十万火急", "十指连心", "十面埋伏",
        "十室九空", "十年寒窗", "十年树木", "一目十行", "闻一知十", "以一当十", "五光十色",
        "十字", "十足", "十成", "三十而立", "四十不惑", "五十而知天命", "六十而耳顺",
        "五十步笑百步", "九九八十一", "三十六计", "七十二变", "十八般武艺", "十八罗汉",
        "二十四孝", "二十四节气", "十二生肖", "二八年华", "三五成群", "三三两两", "七七八八",
    }
)  # fmt: skip

# A run of tokens as the tagger writes them: `name { key: "value" key: "value" }`, \-escaped.
_TOKEN = re.compile(r'(\w+) \{((?: \w+: "(?:[^"\\]|\\.)*")*) \}')
_FIELD = re.compile(r' (\w+): "((?:[^"\\]|\\.)*)"')
_ESCAPE = re.compile(r"\\(.)")
_CLAUSE_BREAK = re.compile(r"([，。！？；：、,;!?\s]+)")
_NUMERAL = re.compile("[零〇一二三四五六七八九十百千万亿两幺壹贰叁肆伍陆柒捌玖拾佰仟]")
# Characters that spell numbers and ranges inside a measure span; what follows them is the unit.
_NUMBER_CHARS = frozenset("零一二三四五六七八九十百千万亿两幺点负到至")
_DIGITS = frozenset("0123456789")
_AM_PM = ("a.m.", "p.m.")


@dataclass(frozen=True)
class ItnOptions:
    """What to rewrite and how to write it; vary per call with `dataclasses.replace`."""

    convert: frozenset[TokenClass] = TOKEN_CLASSES
    """Token classes to rewrite; the others stay as spoken. cardinal: bare numbers, digit strings
    (phone numbers, 幺幺零 → 110) and 第N for N ≥ 10; date: 年/月/日 dates; time: 三点二十分,
    十点半; money: amounts with a currency word (元, 美元, 欧元); measure: numbers with a unit or
    classifier, percentages (百分之十五), amounts in 块, and ranges of these (二十到三十度);
    fraction: 三分之一; math: ranges of bare numbers (三到五) and arithmetic (一加一等于二);
    licenseplate: 京A一二三四五."""
    style: Style = "chinese"
    """"chinese" writes 2024年3月5日, 下午3:20, 100美元, 350元, 3.5公斤, 10分钟; "wetext" keeps
    the grammar's own forms: 2024/03/05, 3:20p.m., $100, ¥350, 3.5kg, 10min."""
    keep: frozenset[str] = KEEP_PHRASES
    """Phrases never rewritten wherever they occur; add domain terms with `KEEP_PHRASES | {...}`."""

    def __post_init__(self) -> None:
        unknown = set(self.convert) - TOKEN_CLASSES
        if unknown:
            raise ValueError(
                f"ItnOptions.convert has unknown token classes {sorted(unknown)}; "
                f"choose from {sorted(TOKEN_CLASSES)}"
            )
        if self.style not in get_args(Style):
            raise ValueError(
                f"ItnOptions.style must be one of {get_args(Style)}, not {self.style!r}"
            )
        if "" in self.keep:
            raise ValueError("ItnOptions.keep must not contain the empty string")


@dataclass(frozen=True)
class _Token:
    name: str
    fields: Mapping[str, str]  # unescaped, in the tagger's order
    tagged: str  # the token as the tagger wrote it, escapes included

    @property
    def spoken(self) -> str:
        """The input span: the tagger copies it into the fields in order (flags aside)."""
        return "".join(v for k, v in self.fields.items() if k != "preserve_order")

    @property
    def value(self) -> str:
        return self.fields.get("value", "")


class InverseNormalizer:
    """Rewrites spoken numbers, dates, times, money and units in Mandarin text in written form.

    The grammar is loaded once per process, when the first instance is made, and shared by all
    instances. Calls from several threads are serialised by a lock: kaldifst holds the GIL while
    it runs, so a lock costs no parallelism, and it promises nothing about a shared FST.
    """

    def __init__(self, options: ItnOptions | None = None) -> None:
        self.options = options or ItnOptions()
        self._wetext = _load_wetext()

    def normalize(self, text: str, options: ItnOptions | None = None) -> str:
        """`text` with its spoken numbers, dates, times, money and units in written form."""
        options = options or self.options
        return "".join(
            self._normalize_clause(clause, options) if _NUMERAL.search(clause) else clause
            for clause in _CLAUSE_BREAK.split(text)
        )

    def normalize_many(self, texts: Iterable[str], options: ItnOptions | None = None) -> list[str]:
        """`normalize` for each text, in order."""
        return [self.normalize(text, options) for text in texts]

    def _normalize_clause(self, clause: str, options: ItnOptions) -> str:
        if options.keep:
            pieces = _keep_pattern(options.keep).split(clause)
            if len(pieces) > 1:  # odd indices are kept phrases
                return "".join(
                    self._normalize_clause(p, options) if i % 2 == 0 and p else p
                    for i, p in enumerate(pieces)
                )
        # The grammar knows 零 as zero but not 〇 (二〇二四年 would become 二〇24年).
        with _LOCK:
            tagged = self._wetext.tag(clause.replace("〇", "零"), "zh", "itn")
            if not tagged:
                return clause
            tokens = _parse(tagged)
            return "".join(self._write(tokens, i, options) for i in range(len(tokens)))

    def _write(self, tokens: list[_Token], i: int, options: ItnOptions) -> str:
        token = tokens[i]
        if token.name == "char":
            return token.value
        if token.name in TOKEN_CLASSES and token.name not in options.convert:
            return token.spoken
        if _misread(tokens, i):
            return token.spoken
        ordered = self._wetext.reorder(token.tagged, "zh", "itn")
        written: str = self._wetext.verbalize(ordered, "zh", "itn")
        if not written:
            return token.spoken
        return _chinese(token, written) if options.style == "chinese" else written


_LOCK = threading.Lock()


def _load_wetext() -> ModuleType:
    """wetext, imported once per process (Python caches modules); the import reads all its FSTs."""
    try:
        return importlib.import_module("wetext")
    except ImportError as e:
        raise ImportError(
            f"inverse text normalisation needs the wetext package: {ITN_EXTRA}"
        ) from e


@functools.lru_cache(maxsize=8)
def _keep_pattern(phrases: frozenset[str]) -> re.Pattern[str]:
    # Longest first, so that a phrase wins over one it contains (十字路口 over 十字).
    alternatives = "|".join(map(re.escape, sorted(phrases, key=lambda p: (-len(p), p))))
    numeral = _NUMERAL.pattern[:-1] + "点0-9]"
    return re.compile(f"(?<!{numeral})({alternatives})(?!{numeral})")


def _parse(tagged: str) -> list[_Token]:
    """The tagger's output as tokens: a run of `_TOKEN`s separated by single spaces."""
    tokens: list[_Token] = []
    pos = 0
    for match in _TOKEN.finditer(tagged):
        if tagged[pos : match.start()].strip():
            break
        fields = {k: _ESCAPE.sub(r"\1", v) for k, v in _FIELD.findall(match.group(2))}
        tokens.append(_Token(match.group(1), fields, match.group(0)))
        pos = match.end()
    if tagged[pos:].strip():
        raise RuntimeError(
            f"cannot read wetext's tagging from offset {pos}: {tagged!r}; "
            "is the installed wetext outside the range zhuanxie[itn] pins?"
        )
    return tokens


def _misread(tokens: list[_Token], i: int) -> bool:
    """Whether the grammar took words for a number: the adverb 十分, or a number next to 几."""
    token = tokens[i]
    before = tokens[i - 1].spoken[-1:] if i > 0 else ""
    after = tokens[i + 1].spoken[:1] if i + 1 < len(tokens) else ""
    if token.name == "measure" and token.spoken == "十分":
        # 十分 before a word is the adverb (十分感谢, 十分的重要); a score of ten ends a clause.
        return _is_cjk(after)
    if token.name in ("cardinal", "measure"):
        return "几" in (before, after)
    return False


def _chinese(token: _Token, written: str) -> str:
    """The grammar's output for `token` in the forms Chinese text uses (see `ItnOptions.style`)."""
    fields = token.fields
    if token.name == "date" and "/" in written:
        # 2024/03/05 → 2024年3月5日: each spoken field ends in its unit (年, 月, 日 or 号).
        units = [fields[k][-1] for k in ("year", "month", "day") if k in fields]
        parts = written.split("/")
        if len(parts) != len(units):
            return written
        if "year" not in fields:
            parts[0] = parts[0].lstrip("0")
        parts[1:] = [p.lstrip("0") for p in parts[1:]]
        return "".join(n + u for n, u in zip(parts, units))
    if token.name == "time" and "noon" in fields and written.endswith(_AM_PM):
        # 3:20p.m. → 下午3:20: the spoken 上午/下午/晚上 goes back in front.
        return fields["noon"] + written[: -len(_AM_PM[0])]
    if token.name == "money" and "currency" in fields:
        # $100 → 100美元, ¥350 → 350元, CNY350 → 350人民币.
        first = next((j for j, c in enumerate(written) if c in _DIGITS or c == "-"), None)
        return written if first is None else written[first:] + fields["currency"]
    if token.name == "cardinal":
        # Digit by digit (一二三四五六 → 123 456) the grammar groups six and seven digits with a
        # space; codes and numbers are written solid.
        return written.replace(" ", "")
    if token.name == "measure" and token.value.count("百分之") == 2 and "~" in written:
        # 百分之十到百分之二十 → 10~20% → 10%~20%, as GB/T 15835-2011 writes percentage ranges.
        low, _, high = written.partition("~")
        return f"{low}%~{high}"
    if token.name == "measure" and set(fields) == {"value"}:
        return _chinese_unit(token.value, written)
    if token.name == "measure" and set(fields) == {"numerator", "denominator"}:
        # 每小时一百公里 → 100km/h → 每小时100公里, in the spoken order.
        amount = _chinese_unit(fields["numerator"], written.partition("/")[0])
        return "".join(amount if k == "numerator" else fields[k] for k in fields)
    return written


def _chinese_unit(spoken: str, written: str) -> str:
    """3.5kg → 3.5公斤: a unit the grammar wrote as a symbol becomes the spoken unit again."""
    symbol = len(written)
    while symbol > 0 and not (
        written[symbol - 1] in _DIGITS or written[symbol - 1] == "%" or _is_cjk(written[symbol - 1])
    ):
        symbol -= 1
    unit = len(spoken)
    while unit > 0 and spoken[unit - 1] not in _NUMBER_CHARS and _is_cjk(spoken[unit - 1]):
        unit -= 1
    if symbol in (0, len(written)) or unit == len(spoken):
        return written
    return written[:symbol] + spoken[unit:]


def _is_cjk(char: str) -> bool:
    return "\u4e00" <= char <= "\u9fff"
