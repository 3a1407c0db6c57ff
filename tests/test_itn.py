"""Inverse text normalisation: a table of cases per category, and what must stay as spoken.

Expected outputs are what a careful writer of Chinese would put (GB/T 15835-2011 where it speaks).
Cases that wetext's grammar gets wrong and zhuanxie.itn does not repair are strict xfails with the
reason, so that a wetext upgrade that fixes one shows up as XPASS.
"""

from __future__ import annotations

import dataclasses
import sys
import threading

import pytest
from _pytest.mark.structures import ParameterSet

from zhuanxie.itn import KEEP_PHRASES, TOKEN_CLASSES, InverseNormalizer, ItnOptions

SINGLE_DIGIT = (
    "the grammar keeps the digits 0-9 in characters (WeTextProcessing's enable_0_to_9 is off: "
    "turned on, it rewrites 一心一意 as 1心1意, and in wetext 0.1.8 it empties sentences)"
)
ESTIMATE = "adjacent digits for an estimate stay in characters (GB/T 15835-2011)"

# Inputs whose expected output the grammar does not give: strict xfails, with the reason.
KNOWN_FAILURES: dict[str, str] = {
    "二零二四年三月五号到七号": "the grammar reads a day range's second day as a single digit",
    "早上八点": "a whole hour: " + SINGLE_DIGIT,
    "下午三点": "a whole hour: " + SINGLE_DIGIT,
    "五块钱": SINGLE_DIGIT,
    "千分之五": "the grammar has no per-mille",
    "三亿": SINGLE_DIGIT,
    "两米": SINGLE_DIGIT,
    "五公里": SINGLE_DIGIT,
    "三十六度五": "the grammar does not read 度五 as a decimal",
    "三四个": ESTIMATE,
    "四五十": ESTIMATE,
    "三G网络": SINGLE_DIGIT,
    "五G": SINGLE_DIGIT,
    "二百五": "also the number 250; only context tells the insult apart",
    "九一八事变": "events named by their date are read as numbers",
    "十一长假": "the National Day holiday is read as the number 11",
}

CASES: dict[str, list[tuple[str, str]]] = {
    "date": [
        ("二零二四年三月五日", "2024年3月5日"),
        ("一九九八年十二月三十一日", "1998年12月31日"),
        ("二零二四年", "2024年"),
        ("二零零八年八月", "2008年8月"),
        ("三月五号", "3月5号"),
        ("十一月十一日", "11月11日"),
        ("他生于一九八五年", "他生于1985年"),
        ("二〇二四年一月一日", "2024年1月1日"),
        ("零八年", "08年"),
        ("二零一九年底", "2019年底"),
        ("公元一六八年", "公元168年"),
        ("今天是二零二四年三月五日星期二", "今天是2024年3月5日星期二"),
        ("八月", "八月"),  # a month name alone: both forms are standard
        ("二零二四年三月五号到七号", "2024年3月5号到7号"),
    ],
    "time": [
        ("下午三点二十", "下午3:20"),
        ("三点二十分", "3:20"),
        ("十点半", "10:30"),
        ("晚上九点十五分", "晚上9:15"),
        ("十二点三十分四十秒", "12:30:40"),
        ("两点零五分", "2:05"),
        ("下午三点零五", "下午3:05"),
        ("凌晨三点二十", "凌晨3:20"),
        ("早上八点半", "早上8:30"),
        ("上午十点", "上午10点"),
        ("会议在上午十点三十分开始", "会议在上午10:30开始"),
        ("早上八点", "早上8点"),
        ("下午三点", "下午3点"),
    ],
    "money": [
        ("三百五十元", "350元"),
        ("一百美元", "100美元"),
        ("五十欧元", "50欧元"),
        ("一百万美元", "100万美元"),
        ("三百五十人民币", "350人民币"),
        ("三点五元", "3.5元"),
        ("十五元五角", "15.5元"),
        ("一点五亿元", "1.5亿元"),
        ("两千三百块", "2300块"),
        ("两百块钱", "200块钱"),
        ("十五块五", "15块5"),
        ("工资是八千五百元", "工资是8500元"),
        ("五块钱", "5块钱"),
    ],
    "percentage": [
        ("百分之十五", "15%"),
        ("百分之三点五", "3.5%"),
        ("百分之零点五", "0.5%"),
        ("百分之一百", "100%"),
        ("负百分之五", "-5%"),
        ("增长了百分之二十", "增长了20%"),
        ("我百分百同意", "我100%同意"),
        ("千分之五", "5‰"),
    ],
    "number": [
        ("二十一", "21"),
        ("一百零五", "105"),
        ("一千二百三十四", "1234"),
        ("一万两千", "12000"),
        ("三万五", "35000"),
        ("人口有一千四百万", "人口有1400万"),
        ("一百多", "100多"),
        ("三点一四", "3.14"),
        ("零点五", "0.5"),
        ("负三点五", "-3.5"),
        ("一千二百三十四点五六", "1234.56"),
        ("三分之一", "1/3"),
        ("十分之一", "1/10"),
        ("零下十度", "零下10度"),
        ("三亿", "3亿"),
    ],
    "measure": [
        ("三点五公斤", "3.5公斤"),
        ("五十公里", "50公里"),
        ("一千米", "1000米"),
        ("二十吨", "20吨"),
        ("五百毫升", "500毫升"),
        ("一百二十平方米", "120平方米"),
        ("三十五度", "35度"),
        ("三十八点五摄氏度", "38.5摄氏度"),
        ("十分钟", "10分钟"),
        ("三十岁", "30岁"),
        ("时速一百二十公里", "时速120公里"),
        ("一百公里每小时", "100公里每小时"),
        ("每小时一百公里", "每小时100公里"),
        ("两米", "2米"),
        ("五公里", "5公里"),
        ("三十六度五", "36.5度"),
    ],
    "ordinal": [
        ("第十", "第10"),
        ("第二十一届", "第21届"),
        ("第十五章", "第15章"),
        ("第一百名", "第100名"),
        ("第三", "第三"),  # single-digit ordinals stay in characters, as prose writes them
        ("第三季度", "第三季度"),
    ],
    "phone": [
        ("一三八一二三四五六七八", "13812345678"),
        ("幺三八一二三四五六七八", "13812345678"),
        ("我的电话是一三九零零零零幺二三四", "我的电话是13900001234"),
        ("零一零六二七八八九九零", "01062788990"),
        ("幺幺零", "110"),
        ("拨打幺二零", "拨打120"),
        ("幺零零八六", "10086"),
        ("邮编一零零零八四", "邮编100084"),
    ],
    "range": [
        ("三到五个", "3~5个"),
        ("二十到三十度", "20~30度"),
        ("五十到六十公斤", "50~60公斤"),
        ("百分之十到百分之二十", "10%~20%"),
        ("一九九零年到二零零零年", "1990年到2000年"),
        ("二比一", "2:1"),
        ("三四个", "三四个"),
        ("四五十", "四五十"),
    ],
    "english": [
        ("iPhone十五", "iPhone15"),
        ("Windows十一", "Windows11"),
        ("我买了iPhone十五 Pro Max", "我买了iPhone15 Pro Max"),
        ("三点五GHz", "3.5GHz"),
        ("我用了二十GB流量", "我用了20GB流量"),
        ("用了百分之八十的CPU", "用了80%的CPU"),
        ("CPU 百分之八十", "CPU 80%"),
        ("Python 三点一二", "Python 3.12"),
        ("三G网络", "3G网络"),
        ("五G", "5G"),
    ],
    "sentence": [
        (
            "二零二四年三月五日，下午三点二十，花了一百美元。",
            "2024年3月5日，下午3:20，花了100美元。",
        ),
        (
            "公司第三季度营收达到十二点五亿元，同比增长百分之二十三点六。",
            "公司第三季度营收达到12.5亿元，同比增长23.6%。",
        ),
        (
            "这件事十分重要，万一出了问题，一定要在十分钟内打幺幺零。",
            "这件事十分重要，万一出了问题，一定要在10分钟内打110。",
        ),
        ('他说"二十"个', '他说"20"个'),
        ("  二十  ", "  20  "),
        ("", ""),
    ],
}

UNTOUCHED: list[str] = [
    # idioms and words with number characters
    "一心一意", "三心二意", "一些", "一起", "万一", "九寨沟", "一样", "一直", "一定", "一般",
    "一下", "一会儿", "一切", "统一", "唯一", "星期一", "七上八下", "乱七八糟", "五湖四海",
    "四面八方", "五花八门", "二话不说", "千万不要", "三国演义", "一路顺风", "十全十美",
    "一模一样", "九死一生", "独一无二", "六神无主", "百发百中", "千方百计", "万万没想到",
    "一五一十", "十恶不赦", "成千上万", "四川", "三亚", "一个人", "两个人", "三个苹果", "一点点",
    # the adverb 十分, and estimates with 几
    "十分感谢", "十分好", "十分的重要", "十几个人", "几十个", "二十几岁",
    # fixed phrases kept by zhuanxie.itn (KEEP_PHRASES)
    "三十而立", "十有八九", "十万火急", "十字路口", "五光十色", "一目十行", "九九八十一",
    "二十四节气", "三五成群",
    # already written
    "2024年3月5日", "15%", "3:20", "3.5公斤", "我有100块钱", "电话13812345678", "我有3个苹果",
    "iPhone 15",
    # words that are also numbers, or names made of numbers
    "二百五", "九一八事变", "十一长假",
]  # fmt: skip

ALL_SPOKEN = [spoken for rows in CASES.values() for spoken, _ in rows]

# The grammar's own forms, kept with style="wetext".
WETEXT_STYLE = [
    ("二零二四年三月五日", "2024/03/05"),
    ("下午三点二十", "3:20p.m."),
    ("一百美元", "$100"),
    ("三百五十元", "¥350"),
    ("三点五公斤", "3.5kg"),
    ("十分钟", "10min"),
    ("每小时一百公里", "100km/h"),
    ("百分之十到百分之二十", "10~20%"),
]


def _param(spoken: str, written: str, category: str) -> ParameterSet:
    reason = KNOWN_FAILURES.get(spoken)
    marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
    return pytest.param(spoken, written, marks=marks, id=f"{category}-{spoken.strip()}")


@pytest.fixture(scope="module")
def itn() -> InverseNormalizer:
    pytest.importorskip("wetext", reason="ITN needs wetext: pip install 'zhuanxie[itn]'")
    return InverseNormalizer()


@pytest.mark.parametrize(
    ("spoken", "written"),
    [
        _param(spoken, written, category)
        for category, rows in CASES.items()
        for spoken, written in rows
    ],
)
def test_writes_spoken_forms(itn: InverseNormalizer, spoken: str, written: str) -> None:
    assert itn.normalize(spoken) == written


@pytest.mark.parametrize(("spoken", "written"), [_param(t, t, "untouched") for t in UNTOUCHED])
def test_leaves_words_and_written_numbers_alone(
    itn: InverseNormalizer, spoken: str, written: str
) -> None:
    assert itn.normalize(spoken) == written


@pytest.mark.parametrize(("spoken", "written"), WETEXT_STYLE)
def test_wetext_style_keeps_the_grammars_forms(
    itn: InverseNormalizer, spoken: str, written: str
) -> None:
    assert itn.normalize(spoken, ItnOptions(style="wetext")) == written


def test_wetext_style_equals_wetext_on_whole_texts(itn: InverseNormalizer) -> None:
    """Clause by clause and token by token, the grammar's output is unchanged (repairs aside)."""
    import wetext

    reference = wetext.Normalizer(lang="zh", operator="itn")
    options = ItnOptions(style="wetext", keep=frozenset())
    # What zhuanxie.itn does differently on purpose; wetext also strips surrounding whitespace.
    repaired = ("十分", "几", "〇", '"')
    texts = [t for t in ALL_SPOKEN if t and t == t.strip() and not any(r in t for r in repaired)]
    texts.append("。".join(texts))  # one long text with many clauses
    assert [itn.normalize(t, options) for t in texts] == [reference.normalize(t) for t in texts]


def test_classes_left_out_of_convert_stay_spoken(itn: InverseNormalizer) -> None:
    options = ItnOptions(convert=TOKEN_CLASSES - {"date"})
    text = "二零二四年三月五日花了一百美元"
    assert itn.normalize(text, options) == "二零二四年三月五日花了100美元"


def test_converting_nothing_gives_the_text_back(itn: InverseNormalizer) -> None:
    """Every token's fields spell its input span, so an unconverted token reads as spoken."""
    options = ItnOptions(convert=frozenset())
    assert [itn.normalize(t, options) for t in ALL_SPOKEN] == [
        t.replace("〇", "零") for t in ALL_SPOKEN
    ]


def test_kept_phrases_can_be_extended(itn: InverseNormalizer) -> None:
    options = ItnOptions(keep=KEEP_PHRASES | {"九一八"})
    assert itn.normalize("九一八事变", options) == "九一八事变"
    assert itn.normalize("九一八事变") == "918事变"


def test_kept_phrase_touching_a_numeral_is_a_number(itn: InverseNormalizer) -> None:
    options = ItnOptions(keep=KEEP_PHRASES | {"二百五"})
    assert itn.normalize("二百五十元", options) == "250元"
    assert itn.normalize("他是个二百五", options) == "他是个二百五"


def test_options_are_frozen_and_replaceable() -> None:
    options = ItnOptions()
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.style = "wetext"  # type: ignore[misc]
    assert dataclasses.replace(options, style="wetext").style == "wetext"


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("convert", frozenset({"dates"}), "unknown token classes"),
        ("style", "symbols", "style must be one of"),
        ("keep", frozenset({""}), "empty string"),
    ],
)
def test_options_reject_invalid_values(field: str, value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ItnOptions(**{field: value})  # type: ignore[arg-type]


def test_normalize_many_keeps_order(itn: InverseNormalizer) -> None:
    texts = ["二十一", "一些", "百分之十五", ""]
    assert itn.normalize_many(texts) == ["21", "一些", "15%", ""]


def test_threads_get_the_same_results(itn: InverseNormalizer) -> None:
    texts = [spoken for spoken, _ in CASES["sentence"]] * 5
    expected = itn.normalize_many(texts)
    results: list[list[str]] = [[] for _ in range(4)]

    def work(k: int) -> None:
        results[k] = InverseNormalizer().normalize_many(texts)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [expected] * 4


def test_missing_wetext_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "wetext", None)  # makes `import wetext` raise ImportError
    with pytest.raises(ImportError, match=r"pip install 'zhuanxie\[itn\]'"):
        InverseNormalizer()
