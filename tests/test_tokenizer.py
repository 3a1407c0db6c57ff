"""Token list and seg_dict loading, and hotword tokenisation against funasr's SeACo builder."""

from __future__ import annotations

import json
import random
from pathlib import Path
from types import SimpleNamespace

import pytest

from zhuanxie.tokenizer import (
    HotwordTokens,
    TokenList,
    load_seg_dict,
    load_token_list,
    tokenize_hotword,
)

VOCAB = [
    "<blank>", "<s>", "</s>",
    "你", "好", "魔", "搭", "驱", "动", "2", "0", "4",
    "he@@", "llo", "wor@@", "ld", "g@@", "pu", "model",
    "<unk>",
]  # fmt: skip
SEG_DICT = {
    "hello": ["he@@", "llo"],
    "world": ["wor@@", "ld"],
    "gpu": ["g@@", "pu"],
    "model": ["model"],
    "missing": ["mi@@", "ssing"],  # pieces not in the vocabulary
    "empty": [],  # a seg_dict line with the word alone
    "你": ["你"],
    "好": ["好"],
    "魔": ["魔"],
    "搭": ["搭"],
    "驱": ["驱"],
    "2": ["2"],
    "0": ["0"],
    "中": ["中"],  # a character the vocabulary lacks
}
PHRASE_WORDS = [
    *SEG_DICT, "Hello", "WORLD", "GPU", "你好", "魔搭", "驱动", "2024", "你好2", "GPU驱动",
    "zzz", "好!", "動", "ä", "\u9fa6",
]  # fmt: skip


@pytest.fixture
def tokens() -> TokenList:
    return TokenList(tuple(VOCAB))


def write_seg_dict(path: Path, seg_dict: dict[str, list[str]]) -> None:
    path.write_text("".join(f"{k} {' '.join(v)}\n" for k, v in seg_dict.items()), encoding="utf-8")


def funasr_hotword_ids(model_dir: Path, phrases: list[str]) -> list[list[int]]:
    """Ids from funasr's `generate_hotwords_list`, one hotword per line of a .txt file."""
    pytest.importorskip("funasr", reason="funasr (the reference) is not installed")
    from funasr.models.seaco_paraformer.model import SeacoParaformer
    from funasr.tokenizer.char_tokenizer import CharTokenizer

    hotword_file = model_dir / "hotwords.txt"
    hotword_file.write_text("".join(p + "\n" for p in phrases), encoding="utf-8")
    # funasr looks for seg_dict next to the CMVN file; `self` is read only for `sos`.
    frontend = SimpleNamespace(cmvn_file=str(model_dir / "am.mvn"))
    ids = SeacoParaformer.generate_hotwords_list(
        SimpleNamespace(sos=1), str(hotword_file), CharTokenizer(token_list=VOCAB), frontend
    )
    assert ids[-1] == [1]  # funasr appends <s> as the "no hotword" entry
    return ids[:-1]  # type: ignore[no-any-return]


def random_phrases(seed: int) -> list[str]:
    """Phrases of 1-3 words; none of "empty" alone, which has no tokens (funasr's LSTM then fails)."""
    rng = random.Random(seed)
    phrases = [" ".join(rng.choices(PHRASE_WORDS, k=rng.randint(1, 3))) for _ in range(300)]
    return [p for p in phrases if set(p.split()) != {"empty"}]


def test_hotword_ids_match_funasr(tmp_path: Path, tokens: TokenList) -> None:
    write_seg_dict(tmp_path / "seg_dict", SEG_DICT)
    phrases = random_phrases(0)
    seg_dict = load_seg_dict(tmp_path / "seg_dict")
    ours = [list(tokenize_hotword(p, tokens, seg_dict).ids) for p in phrases]
    assert ours == funasr_hotword_ids(tmp_path, phrases)


def test_hotword_ids_match_funasr_without_seg_dict(tmp_path: Path, tokens: TokenList) -> None:
    phrases = [*random_phrases(1), "你", "model", "Model"]
    ours = [list(tokenize_hotword(p, tokens, None).ids) for p in phrases]
    assert ours == funasr_hotword_ids(tmp_path, phrases)


def test_hotword_uses_seg_dict_pieces_of_lowercased_word(tokens: TokenList) -> None:
    hotword = tokenize_hotword("Hello GPU", tokens, SEG_DICT)
    assert hotword == HotwordTokens(
        ids=tuple(tokens.to_ids(["he@@", "llo", "g@@", "pu"])), unknown=()
    )


def test_hotword_splits_cjk_and_digit_words_into_characters(tokens: TokenList) -> None:
    hotword = tokenize_hotword("魔搭2", tokens, SEG_DICT)
    assert hotword == HotwordTokens(ids=tuple(tokens.to_ids(["魔", "搭", "2"])), unknown=())


def test_hotword_mixed_latin_cjk_word_is_one_unk(tokens: TokenList) -> None:
    hotword = tokenize_hotword("GPU驱动", tokens, SEG_DICT)
    assert hotword == HotwordTokens(ids=(tokens.unk_id,), unknown=("gpu驱动",))


def test_hotword_reports_each_unrepresentable_part(tokens: TokenList) -> None:
    # 动 is in the vocabulary but not in seg_dict; 中 is in seg_dict but not the vocabulary;
    # "missing" maps to pieces the vocabulary lacks.
    hotword = tokenize_hotword("驱动 中 missing", tokens, SEG_DICT)
    unk = tokens.unk_id
    assert hotword == HotwordTokens(
        ids=(tokens.to_ids(["驱"])[0], unk, unk, unk, unk),
        unknown=("动", "中", "missing", "missing"),
    )


def test_hotword_without_tokens_is_an_error(tokens: TokenList) -> None:
    with pytest.raises(ValueError, match="hotword 'empty' yields no tokens"):
        tokenize_hotword("empty", tokens, SEG_DICT)
    with pytest.raises(ValueError, match="yields no tokens"):
        tokenize_hotword("  ", tokens, SEG_DICT)


def test_token_list_specials_and_lookup(tokens: TokenList) -> None:
    assert (tokens.blank_id, tokens.sos_id, tokens.eos_id, tokens.unk_id) == (0, 1, 2, 19)
    assert len(tokens) == 20
    assert tokens.to_ids(["你", "not-a-token"]) == [3, 19]
    assert tokens.to_tokens([4, 3]) == ["好", "你"]


def test_content_tokens_drop_blank_and_sentence_marks_but_keep_unk(tokens: TokenList) -> None:
    assert tokens.content_tokens([1, 3, 0, 19, 4, 2]) == ["你", "<unk>", "好"]


def test_to_tokens_rejects_ids_outside_the_list(tokens: TokenList) -> None:
    with pytest.raises(IndexError, match="token id 20 is outside the token list"):
        tokens.to_tokens([20])
    with pytest.raises(IndexError, match="token id -1"):
        tokens.to_tokens([-1])


def test_load_token_list_json(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    path.write_text(json.dumps(VOCAB, ensure_ascii=False), encoding="utf-8")
    assert load_token_list(path) == TokenList(tuple(VOCAB))


def test_load_token_list_txt_strips_line_ends(tmp_path: Path) -> None:
    path = tmp_path / "tokens.txt"
    path.write_text("".join(f"{t} \r\n" for t in VOCAB), encoding="utf-8")
    assert load_token_list(path).tokens == tuple(VOCAB)


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ('{"a": 1}', "expected a JSON list of strings, got dict"),
        ("[1, 2]", "token 0 is int, not a string"),
        ("[]", "token list is empty"),
        ('["<blank>", "<s>", "</s>", "<unk>", "<s>"]', "token '<s>' appears twice, at ids 1 and 4"),
        ('["<blank>", "<s>", "x"]', "lacks the special tokens </s>, <unk>"),
        ('["<blank>",', "not valid JSON"),
    ],
)
def test_load_token_list_errors_name_file_and_problem(
    tmp_path: Path, content: str, problem: str
) -> None:
    path = tmp_path / "tokens.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError, match="tokens.json: .*" + problem.replace("(", r"\(")) as e:
        load_token_list(path)
    assert str(path) in str(e.value)


def test_load_token_list_missing_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"token list not found: .*tokens\.json"):
        load_token_list(tmp_path / "tokens.json")


def test_load_token_list_rejects_other_formats(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"vocab\.model: expected a tokens\.json or tokens\.txt"):
        load_token_list(tmp_path / "vocab.model")


def test_load_seg_dict_reads_words_and_pieces(tmp_path: Path) -> None:
    path = tmp_path / "seg_dict"
    path.write_text("main ma@@ in\n\nhello\the@@  llo\nmain m@@ ain\nalone\n", encoding="utf-8")
    # Blank lines are skipped, any whitespace separates, the last entry for a word wins.
    assert load_seg_dict(path) == {"main": ["m@@", "ain"], "hello": ["he@@", "llo"], "alone": []}


def test_load_seg_dict_missing_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"seg_dict not found: .*seg_dict"):
        load_seg_dict(tmp_path / "seg_dict")


def test_load_seg_dict_rejects_non_utf8(tmp_path: Path) -> None:
    path = tmp_path / "seg_dict"
    path.write_bytes("你 你\n".encode("gbk"))
    with pytest.raises(ValueError, match="seg_dict: not UTF-8"):
        load_seg_dict(path)
