"""CT-Transformer punctuation: parity with funasr 1.4.16, batching, loading, the text rules."""

from __future__ import annotations

import functools
import json
import random
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.oracle import _quiet
from zhuanxie.checkpoint import CheckpointError
from zhuanxie.generator import (
    COMMON_WORDS,
    ENGLISH_PIECES,
    JIEBA_USER_WORDS,
    PUNC_LIST,
    _english_word,
    build_punctuation_vocabulary,
    random_punctuation_state_dict,
    write_random_punctuation_model,
)
from zhuanxie.punctuation import (
    PunctuatedText,
    Punctuator,
    close_text,
    load_punctuation_model,
    render,
    split_words,
)

ENGLISH = [_english_word(pieces) for pieces in ENGLISH_PIECES]
SENTENCE_END = PUNC_LIST.index("。")


@pytest.fixture(scope="session")
def punc_dir(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """Factory `make(arch, variant="calibrated") -> Path`, each written once per session.

    Variant "no-sentence-end" never predicts `。`/`？`, so windows carry over until the forced
    comma cut at 200 words.
    """
    made: dict[tuple[str, str], Path] = {}

    def make(arch: str, variant: str = "calibrated") -> Path:
        if (arch, variant) not in made:
            state = random_punctuation_state_dict(arch, seed=0)
            if variant == "no-sentence-end":
                state["decoder.bias"][[PUNC_LIST.index("。"), PUNC_LIST.index("？")]] = -1e4
            out = tmp_path_factory.mktemp(f"{arch}-{variant}")
            made[arch, variant] = write_random_punctuation_model(out, arch, 0, state_dict=state)
        return made[arch, variant]

    return make


@functools.cache
def funasr_model(model_dir: Path) -> Any:
    """funasr's AutoModel for a punctuation dir.

    The reference loads a model's jieba dictionary into jieba's process-wide tokenizer, so in one
    process a second word-level model would cut with both dictionaries; each model here gets a
    fresh tokenizer with its own dictionary, the state a process holding only it would have.
    """
    with _quiet():
        from funasr import AutoModel

        auto = AutoModel(
            model=str(model_dir),
            device="cpu",
            ncpu=torch.get_num_threads(),
            disable_update=True,
            disable_pbar=True,
            disable_log=True,
            log_level="ERROR",
        )
        if auto.model.jieba_usr_dict is not None:
            import jieba

            fresh = jieba.Tokenizer()
            fresh.load_userdict(str(model_dir / "jieba_usr_dict"))
            auto.model.jieba_usr_dict = fresh
    return auto


def funasr_punctuate(model_dir: Path, texts: list[str]) -> list[PunctuatedText]:
    """funasr's text and punc_array for each text, one `generate` call per text."""
    auto = funasr_model(model_dir)
    results = []
    with _quiet(), torch.no_grad():
        for text in texts:
            out = auto.generate(input=text)[0]
            ids = () if out["punc_array"] is None else tuple(out["punc_array"].tolist())
            results.append(PunctuatedText(out["text"], (), ids))
    return results


def assert_matches_funasr(model_dir: Path, texts: list[str]) -> list[PunctuatedText]:
    ours = Punctuator(load_punctuation_model(model_dir)).punctuate(texts)
    reference = funasr_punctuate(model_dir, texts)
    for text, mine, theirs in zip(texts, ours, reference):
        assert (mine.text, mine.punc_ids) == (theirs.text, theirs.punc_ids), text
    return ours


def random_texts(arch: str, count: int, seed: int, sizes: tuple[int, int]) -> list[str]:
    """Texts of `sizes` characters from the arch's vocabulary, with English words, digits,
    spaces and the odd punctuation mark mixed in."""
    rng = random.Random(seed)
    words = [w for w in build_punctuation_vocabulary(arch)[3:-1] if not w.isascii()]
    if arch.startswith("ct-punc-large"):
        words += [*JIEBA_USER_WORDS, *COMMON_WORDS] * 20
    texts = []
    for _ in range(count):
        target = rng.randint(*sizes)
        parts: list[str] = []
        while sum(map(len, parts)) < target:
            roll = rng.random()
            if roll < 0.08:
                parts.append(f" {rng.choice(ENGLISH)} ")
            elif roll < 0.09:
                parts.append(rng.choice(["2024", " 3.5 ", "，", "。", " ", "hello,", "iPhone"]))
            else:
                parts.append(rng.choice(words))
        texts.append("".join(parts).strip())
    return texts


EDGE_TEXTS = [
    "好",
    "hello",
    "hello world",
    "GPU",
    "你好 world",
    "  你好  ",
    "今天天气怎么样。",
    "价格是3.5元吗？",
    "use the app on iphone 今天 ok",
    "a" * 30,
]


def test_char_model_matches_funasr(punc_dir: Callable[..., Path]) -> None:
    texts = EDGE_TEXTS + random_texts("ct-punc-zh-tiny", 40, seed=1, sizes=(30, 300))
    assert_matches_funasr(punc_dir("ct-punc-zh-tiny"), texts)


def test_word_model_with_jieba_matches_funasr(punc_dir: Callable[..., Path]) -> None:
    texts = EDGE_TEXTS + random_texts("ct-punc-large-tiny", 30, seed=2, sizes=(30, 300))
    assert_matches_funasr(punc_dir("ct-punc-large-tiny"), texts)


def test_word_model_reads_jieba_words_and_reports_characters(
    punc_dir: Callable[..., Path],
) -> None:
    model = load_punctuation_model(punc_dir("ct-punc-large-tiny"))
    text = "欢迎使用魔搭社区的语音识别模型 hello world 今天"
    assert split_words(text, model.segmenter) == [
        "欢迎",
        "使用",
        "魔搭社区",
        "的",
        "语音识别",
        "模型",
        "hello",
        "world",
        "今天",
    ]
    result = Punctuator(model).punctuate([text])[0]
    assert result.units == (*"欢迎使用魔搭社区的语音识别模型", "hello", "world", "今", "天")
    # A word's punctuation follows its last character; the others get none (1).
    assert result.punc_ids[:1] == (1,)
    assert result.punc_ids[-1] == SENTENCE_END


@pytest.mark.parametrize("arch", ["ct-punc-zh-tiny", "ct-punc-large-tiny"])
def test_units_cover_the_text_without_spaces(arch: str, punc_dir: Callable[..., Path]) -> None:
    texts = EDGE_TEXTS + random_texts(arch, 10, seed=9, sizes=(30, 300))
    results = Punctuator(load_punctuation_model(punc_dir(arch))).punctuate(texts)
    for text, result in zip(texts, results):
        assert "".join(result.units) == "".join(text.split())
        assert len(result.units) == len(result.punc_ids)


def test_long_texts_carry_over_between_windows_as_funasr_does(
    punc_dir: Callable[..., Path],
) -> None:
    texts = random_texts("ct-punc-zh-tiny", 4, seed=3, sizes=(700, 900))
    ours = assert_matches_funasr(punc_dir("ct-punc-zh-tiny"), texts)
    assert all(r.punc_ids.count(SENTENCE_END) > 20 for r in ours)


def test_forced_comma_cut_after_200_words_matches_funasr(punc_dir: Callable[..., Path]) -> None:
    texts = random_texts("ct-punc-zh-tiny", 2, seed=4, sizes=(500, 600))
    ours = assert_matches_funasr(punc_dir("ct-punc-zh-tiny", "no-sentence-end"), texts)
    for result in ours:
        # Only the forced cuts and the final mark are sentence ends.
        forced = [i for i, p in enumerate(result.punc_ids[:-1]) if p == SENTENCE_END]
        assert len(forced) >= 1
        assert forced[0] > 200


def test_batched_results_equal_one_at_a_time(punc_dir: Callable[..., Path]) -> None:
    texts = EDGE_TEXTS + random_texts("ct-punc-large-tiny", 30, seed=5, sizes=(10, 500))
    punctuator = Punctuator(load_punctuation_model(punc_dir("ct-punc-large-tiny")))
    assert punctuator.punctuate(texts) == [punctuator.punctuate([t])[0] for t in texts]


def test_batch_limit_does_not_change_results(punc_dir: Callable[..., Path]) -> None:
    texts = random_texts("ct-punc-zh-tiny", 20, seed=6, sizes=(10, 400))
    model = load_punctuation_model(punc_dir("ct-punc-zh-tiny"))
    small = Punctuator(model, max_batch_words=50, max_batch_texts=3)
    assert small.punctuate(texts) == Punctuator(model).punctuate(texts)


def test_empty_and_blank_texts_give_empty_results_in_place(
    punc_dir: Callable[..., Path],
) -> None:
    punctuator = Punctuator(load_punctuation_model(punc_dir("ct-punc-zh-tiny")))
    result = punctuator.punctuate(["", "你好", " \t "])
    assert result[0] == result[2] == PunctuatedText("", (), ())
    assert result[1] == punctuator.punctuate(["你好"])[0]
    assert punctuator.punctuate([]) == []


def test_random_model_emits_a_realistic_mix(punc_dir: Callable[..., Path]) -> None:
    texts = random_texts("ct-punc-zh-tiny", 20, seed=7, sizes=(200, 300))
    results = Punctuator(load_punctuation_model(punc_dir("ct-punc-zh-tiny"))).punctuate(texts)
    counts = Counter(p for r in results for p in r.punc_ids)
    total = sum(counts.values())
    assert counts[0] == 0
    assert 0.7 < counts[1] / total < 0.9
    assert 0.05 < (counts[3] + counts[4]) / total < 0.15


def test_char_level_split_keeps_ascii_runs_whole() -> None:
    assert split_words("你好hello, world3 再见 ok", None) == [
        "你",
        "好",
        "hello,",
        "world3",
        "再",
        "见",
        "ok",
    ]


def test_render_capitalises_spaces_and_writes_ascii_marks() -> None:
    names = list(PUNC_LIST)
    words = ["hello", "world", "iPhone", "你", "好", "ok"]
    classes = [2, 4, 1, 5, 1, 1]
    assert render(words, classes, names) == " Hello, world? Iphone你、好ok"


def test_close_text_forces_a_final_sentence_end() -> None:
    assert close_text("你好，") == ("你好。", True)
    assert close_text("你好、") == ("你好。", True)
    assert close_text("hello,") == ("hello.", True)
    assert close_text("你好") == ("你好。", True)
    assert close_text("hello") == ("hello.", True)
    assert close_text("你好？") == ("你好？", False)
    assert close_text("hello.") == ("hello.", False)


def test_generated_directories_are_reproducible(tmp_path: Path) -> None:
    first = write_random_punctuation_model(tmp_path / "a", "ct-punc-large-tiny", 3)
    second = write_random_punctuation_model(tmp_path / "b", "ct-punc-large-tiny", 3)
    names = sorted(p.name for p in first.iterdir())
    assert names == [
        "config.yaml",
        "configuration.json",
        "jieba_usr_dict",
        "model.pt",
        "tokens.json",
    ]
    for name in names:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name


def write_with(
    tmp_path: Path, edit: Callable[[dict[str, torch.Tensor]], None], arch: str = "ct-punc-zh-tiny"
) -> Path:
    state = random_punctuation_state_dict(arch, seed=0)
    edit(state)
    return write_random_punctuation_model(tmp_path / "model", arch, 0, state_dict=state)


def test_missing_key_is_an_error_naming_it(tmp_path: Path) -> None:
    path = write_with(tmp_path, lambda s: s.pop("encoder.after_norm.weight"))
    with pytest.raises(CheckpointError, match=r"model\.pt.*missing keys.*after_norm\.weight"):
        load_punctuation_model(path)


def test_unexpected_key_is_an_error_naming_it(tmp_path: Path) -> None:
    path = write_with(tmp_path, lambda s: s.update({"ctc.weight": torch.zeros(2)}))
    with pytest.raises(CheckpointError, match=r"unexpected keys \(1\): ctc\.weight"):
        load_punctuation_model(path)


def test_wrong_shape_is_an_error_naming_both_shapes(tmp_path: Path) -> None:
    path = write_with(tmp_path, lambda s: s.update({"decoder.bias": torch.zeros(5)}))
    with pytest.raises(CheckpointError, match=r"decoder\.bias: checkpoint \(5,\), model \(6,\)"):
        load_punctuation_model(path)


def test_missing_token_list_is_an_error(punc_dir: Callable[..., Path], tmp_path: Path) -> None:
    path = copy_dir(punc_dir("ct-punc-zh-tiny"), tmp_path / "model")
    (path / "tokens.json").unlink()
    with pytest.raises(CheckpointError, match="no token list found"):
        load_punctuation_model(path)


def test_token_list_without_unk_is_an_error(punc_dir: Callable[..., Path], tmp_path: Path) -> None:
    path = copy_dir(punc_dir("ct-punc-zh-tiny"), tmp_path / "model")
    tokens = json.loads((path / "tokens.json").read_text(encoding="utf-8"))
    (path / "tokens.json").write_text(json.dumps([*tokens[:-1], "<unknown>"]), encoding="utf-8")
    with pytest.raises(CheckpointError, match=r"tokens\.json.*'<unk>' is missing"):
        load_punctuation_model(path)


def test_asr_config_is_not_a_punctuation_model(
    punc_dir: Callable[..., Path], tmp_path: Path
) -> None:
    path = copy_dir(punc_dir("ct-punc-zh-tiny"), tmp_path / "model")
    config = (path / "config.yaml").read_text(encoding="utf-8")
    (path / "config.yaml").write_text(config.replace("CTTransformer", "Paraformer"), "utf-8")
    with pytest.raises(CheckpointError, match=r"config\.yaml: model 'Paraformer'"):
        load_punctuation_model(path)


def test_missing_directory_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        load_punctuation_model(tmp_path / "absent")


def copy_dir(source: Path, target: Path) -> Path:
    target.mkdir()
    for item in source.iterdir():
        (target / item.name).write_bytes(item.read_bytes())
    return target


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["ct-punc-zh", "ct-punc-large"])
def test_full_size_models_match_funasr(arch: str, tmp_path: Path) -> None:
    path = write_random_punctuation_model(tmp_path / arch, arch, seed=0)
    texts = EDGE_TEXTS + random_texts(arch, 30, seed=8, sizes=(30, 600))
    assert_matches_funasr(path, texts)
