"""Punctuation and ITN applied to finished transcripts."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile
from typer.testing import CliRunner

from zhuanxie.cli import app
from zhuanxie.engine import Engine, EngineOptions
from zhuanxie.generator import write_random_punctuation_model
from zhuanxie.postprocess import PostProcessor, with_punctuation
from zhuanxie.punctuation import Punctuator, load_punctuation_model
from zhuanxie.recognizer import load_model
from zhuanxie.result import Segment, Token, Transcript


def transcript(*segment_texts: str) -> Transcript:
    """Segments with one token per character (English words kept whole), 0.1 s each."""
    segments, t = [], 0.0
    for text in segment_texts:
        tokens = []
        for word in text.split(" "):
            units = [word] if word.isascii() else list(word)
            for unit in units:
                tokens.append(Token(unit, t, t + 0.1))
                t += 0.1
        segments.append(Segment(tokens[0].start, tokens[-1].end, text, tuple(tokens), ()))
    return Transcript(text="".join(segment_texts), duration=t, segments=tuple(segments))


def test_punctuation_marks_go_back_into_their_segments() -> None:
    raw = transcript("今天天气很好", "我们去公园吧")
    out = with_punctuation(raw, "今天天气很好，我们去公园吧。")
    assert [s.text for s in out.segments] == ["今天天气很好，", "我们去公园吧。"]
    assert out.text == "今天天气很好，我们去公园吧。"
    assert out.tokens == raw.tokens


def test_punctuated_transcripts_carry_timed_sentences() -> None:
    raw = transcript("今天天气很好", "我们去公园吧")

    class Fixed:
        def punctuate(self, texts):  # type: ignore[no-untyped-def]
            from zhuanxie.punctuation import PunctuatedText

            return [PunctuatedText("今天天气很好。我们去公园吧？", (), ()) for _ in texts]

    out = PostProcessor(Fixed()).apply([raw])[0]  # type: ignore[arg-type]
    assert [(s.text, s.start, s.end) for s in out.sentences] == [
        ("今天天气很好。", 0.0, pytest.approx(0.6)),
        ("我们去公园吧？", pytest.approx(0.6), pytest.approx(1.2)),
    ]


def test_transcripts_can_opt_out_of_punctuation_and_itn() -> None:
    pytest.importorskip("wetext")
    from zhuanxie.itn import InverseNormalizer
    from zhuanxie.punctuation import PunctuatedText

    seen: list[list[str]] = []

    class Fixed:
        def punctuate(self, texts):  # type: ignore[no-untyped-def]
            seen.append(list(texts))
            return [PunctuatedText(t + "。", (), ()) for t in texts]

    raws = [transcript("百分之十五"), transcript("百分之二十"), transcript("百分之三十")]
    processor = PostProcessor(Fixed(), InverseNormalizer())  # type: ignore[arg-type]
    out = processor.apply(raws, punctuate=[True, False, True], normalize=[False, True, True])
    assert seen == [["百分之十五", "百分之三十"]]  # one batch, without the one that opted out
    assert [t.text for t in out] == ["百分之十五。", "20%", "30%。"]


def test_a_punctuator_that_changes_the_words_leaves_the_text_alone() -> None:
    raw = transcript("你好世界")
    assert with_punctuation(raw, "您好，世界。") == raw


def test_itn_rewrites_each_segment() -> None:
    pytest.importorskip("wetext")
    from zhuanxie.itn import InverseNormalizer

    out = PostProcessor(itn=InverseNormalizer()).apply(
        [transcript("会议定在二零二四年三月五日", "增长了百分之十五")]
    )[0]
    assert [s.text for s in out.segments] == ["会议定在2024年3月5日", "增长了15%"]
    assert out.text == "会议定在2024年3月5日增长了15%"


@pytest.fixture(scope="module")
def punc_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_random_punctuation_model(tmp_path_factory.mktemp("punc"), "ct-punc-zh-tiny", 0)


def test_engine_punctuates_whole_inputs(
    punc_dir: Path,
    tiny_model_dir: Callable[..., Path],
    speech_clips: list[np.ndarray],
    tmp_path: Path,
) -> None:
    path = tmp_path / "speech.wav"
    soundfile.write(
        path, np.concatenate([speech_clips[0], np.zeros(16000, np.float32), speech_clips[4]]), 16000
    )
    model = load_model(tiny_model_dir("seaco-paraformer-tiny"))
    plain = Engine(model, EngineOptions()).transcribe(path)
    punctuator = Punctuator(load_punctuation_model(punc_dir))
    expected = punctuator.punctuate([plain.text])[0].text
    result = Engine(model, EngineOptions(), postprocessor=PostProcessor(punctuator)).transcribe(
        path
    )
    assert result.text == expected
    assert result.tokens == plain.tokens
    assert "".join(s.text for s in result.segments) == result.text


def test_cli_punctuation_option(
    punc_dir: Path,
    tiny_model_dir: Callable[..., Path],
    speech_clips: list[np.ndarray],
    tmp_path: Path,
) -> None:
    soundfile.write(tmp_path / "a.wav", speech_clips[0], 16000)
    model = tiny_model_dir("seaco-paraformer-tiny")
    result = CliRunner().invoke(
        app,
        [
            "transcribe",
            str(tmp_path / "a.wav"),
            "--model",
            str(model),
            "--punc-model",
            str(punc_dir),
            "-f",
            "txt,json",
        ],
    )
    assert result.exit_code == 0, result.output
    text = (tmp_path / "a.txt").read_text().strip()
    assert text.endswith(("。", "？", ".", "?"))
    data = json.loads((tmp_path / "a.json").read_text())
    assert data["sentences"]
    assert "".join(x["text"] for x in data["sentences"]) == data["text"]


def test_engine_and_cli_can_segment_with_fsmn_vad(
    tiny_model_dir: Callable[..., Path],
    speech_clips: list[np.ndarray],
    tmp_path: Path,
) -> None:
    from zhuanxie.fsmn_vad import FsmnVad
    from zhuanxie.generator import write_random_fsmn_vad

    vad_dir = write_random_fsmn_vad(tmp_path / "fsmn", seed=0)
    audio = np.concatenate([speech_clips[0], np.zeros(32000, np.float32), speech_clips[2]])
    soundfile.write(tmp_path / "b.wav", audio, 16000)
    expected = [(s.start, s.end) for s in FsmnVad(vad_dir).segments([audio])]
    model = load_model(tiny_model_dir("paraformer-tiny"))
    options = EngineOptions(vad="fsmn", vad_model=str(vad_dir))
    result = Engine(model, options).transcribe(tmp_path / "b.wav")
    assert [round(s.start * 16000) for s in result.segments] == [a for a, _ in expected][
        : len(result.segments)
    ]
    cli = CliRunner().invoke(
        app,
        [
            "transcribe",
            str(tmp_path / "b.wav"),
            "--model",
            str(tiny_model_dir("paraformer-tiny")),
            "--vad-model",
            str(vad_dir),
            "-f",
            "json",
        ],
    )
    assert cli.exit_code == 0, cli.output


def test_inputs_finished_together_are_punctuated_in_one_batch(
    punc_dir: Path, tiny_model_dir: Callable[..., Path], speech_clips: list[np.ndarray]
) -> None:
    from zhuanxie.engine import AudioInput

    model = load_model(tiny_model_dir("seaco-paraformer-tiny"))
    punctuator = Punctuator(load_punctuation_model(punc_dir))
    calls: list[int] = []
    original = punctuator.punctuate

    def spy(texts):  # type: ignore[no-untyped-def]
        calls.append(len(texts))
        return original(texts)

    punctuator.punctuate = spy  # type: ignore[method-assign]
    inputs = [AudioInput(c, sample_rate=16000) for c in speech_clips[:6]]
    engine = Engine(model, EngineOptions(vad="none"), postprocessor=PostProcessor(punctuator))
    results = {r.index: r.transcript for r in engine.transcribe_many(inputs)}
    plain = {
        r.index: r.transcript
        for r in Engine(model, EngineOptions(vad="none")).transcribe_many(inputs)
    }
    assert sum(calls) == len(inputs)
    assert max(calls) > 1  # one batch of segments finishes several inputs at once
    for index, transcript in results.items():
        assert transcript is not None
        assert transcript.text == original([plain[index].text])[0].text
