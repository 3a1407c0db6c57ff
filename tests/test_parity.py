"""End-to-end parity with funasr 1.4.16 on the same random checkpoints.

Each clip is decoded by funasr alone (batch size 1, dither 0) and by zhuanxie; token ids, text,
per-word timestamps and features must agree. Plain Paraformer timestamps are compared with the
reference's span rule called in the corrected argument order (FunASR PR #3716); the test
``test_paraformer_timestamps_follow_the_upstream_fix`` documents the difference from 1.4.16.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.oracle import FunasrResult, funasr_transcribe
from zhuanxie.recognizer import Model, Recognizer, load_model
from zhuanxie.result import Transcript
from zhuanxie.tokenizer import load_token_list

ARCHS = ("paraformer-tiny", "bicif-paraformer-tiny", "seaco-paraformer-tiny")


def reference_text(ref: FunasrResult) -> str:
    """funasr's own text for the reference tokens, in its no-timestamp form (no CJK spaces)."""
    from funasr.utils.postprocess_utils import sentence_postprocess

    return str(sentence_postprocess(ref.tokens)[0]) if ref.tokens else ""


def reference_spans(ref: FunasrResult, upsampled: bool, duration: float) -> list[tuple[int, int]]:
    """funasr's per-word [start_ms, end_ms] (for plain Paraformer with PR #3716's argument
    order), clamped to the audio as zhuanxie reports them."""
    spans = ref.timestamps
    if not upsampled and ref.tokens:
        from funasr.utils.postprocess_utils import sentence_postprocess
        from funasr.utils.timestamp_tools import ts_prediction_lfr6_standard

        _, stamps = ts_prediction_lfr6_standard(
            ref.alphas, ref.peaks, list(ref.tokens), upsample_rate=1
        )
        spans = sentence_postprocess(ref.tokens, stamps)[1]
    end = round(duration * 1000)
    return [(min(max(int(s), 0), end), min(max(int(e), 0), end)) for s, e in spans]


def spans_ms(t: Transcript) -> list[tuple[int, int]]:
    return [(round(tok.start * 1000), round(tok.end * 1000)) for tok in t.tokens]


def assert_same(ours: Transcript, ref: FunasrResult, upsampled: bool) -> None:
    ids = list(ours.segments[0].token_ids) if ours.segments else []
    assert ids == ref.token_ids
    assert ours.text == reference_text(ref)
    assert spans_ms(ours) == reference_spans(ref, upsampled, ours.duration)


@pytest.fixture(scope="module", params=ARCHS)
def arch_model(
    request: pytest.FixtureRequest, tiny_model_dir: Callable[..., Path]
) -> tuple[Path, Model]:
    path = tiny_model_dir(request.param)
    return path, load_model(path)


def test_features_match_the_reference(
    arch_model: tuple[Path, Model], speech_clips: list[np.ndarray]
) -> None:
    path, model = arch_model
    wave = speech_clips[0]
    ref = funasr_transcribe(path, wave)
    feats, lens = model.frontend(torch.from_numpy(wave)[None], torch.tensor([len(wave)]))
    assert int(lens[0]) == ref.features.shape[0]
    torch.testing.assert_close(feats[0], ref.features, atol=2e-3, rtol=1e-4)


def test_real_speech_decodes_like_the_reference(
    arch_model: tuple[Path, Model], speech_clips: list[np.ndarray]
) -> None:
    path, model = arch_model
    recognizer = Recognizer(model)
    for wave in speech_clips:
        ref = funasr_transcribe(path, wave, output_timestamp=True)
        assert_same(recognizer.transcribe(wave), ref, model.dims.predictor.upsample_times > 0)


def test_synthetic_audio_decodes_like_the_reference(arch_model: tuple[Path, Model]) -> None:
    path, model = arch_model
    recognizer = Recognizer(model)
    rng = np.random.default_rng(7)
    for seconds in (0.3, 1.0, 2.7, 9.1):
        n = int(seconds * 16000)
        t = np.arange(n) / 16000
        wave = (0.3 * np.sin(2 * np.pi * 220 * t * (1 + t)) + rng.normal(0, 0.05, n)).astype(
            np.float32
        )
        ref = funasr_transcribe(path, wave, output_timestamp=True)
        assert_same(recognizer.transcribe(wave), ref, model.dims.predictor.upsample_times > 0)


@pytest.fixture(scope="module")
def seaco(tiny_model_dir: Callable[..., Path]) -> tuple[Path, Recognizer]:
    path = tiny_model_dir("seaco-paraformer-tiny")
    return path, Recognizer(load_model(path))


def chinese_hotwords(path: Path, count: int, length: int = 2) -> list[str]:
    chars = [t for t in load_token_list(path / "tokens.json").tokens if "\u4e00" <= t <= "\u9fff"]
    return ["".join(chars[i : i + length]) for i in range(0, count * length, length)]


def test_hotwords_decode_like_the_reference(
    seaco: tuple[Path, Recognizer], speech_clips: list[np.ndarray]
) -> None:
    path, recognizer = seaco
    hotwords = chinese_hotwords(path, 4)
    for wave in speech_clips:
        ref = funasr_transcribe(path, wave, hotwords)
        assert_same(recognizer.transcribe(wave, hotwords=hotwords), ref, upsampled=True)


def test_hotwords_change_the_output(
    seaco: tuple[Path, Recognizer], speech_clips: list[np.ndarray]
) -> None:
    _, recognizer = seaco
    plain = [recognizer.transcribe(w).text for w in speech_clips]
    biased = [recognizer.transcribe(w, hotwords=["你好", "世界"]).text for w in speech_clips]
    assert plain != biased


def test_more_than_fifty_hotwords_decode_like_the_reference(
    seaco: tuple[Path, Recognizer], speech_clips: list[np.ndarray]
) -> None:
    # Past 50 entries the reference keeps only the best-scoring hotwords (its ASF filter).
    path, recognizer = seaco
    hotwords = chinese_hotwords(path, 60)
    for wave in speech_clips:
        ref = funasr_transcribe(path, wave, hotwords)
        assert_same(recognizer.transcribe(wave, hotwords=hotwords), ref, upsampled=True)


def test_paraformer_timestamps_follow_the_upstream_fix(
    tiny_model_dir: Callable[..., Path], speech_clips: list[np.ndarray]
) -> None:
    path = tiny_model_dir("paraformer-tiny")
    recognizer = Recognizer(load_model(path))
    differs = 0
    for wave in speech_clips:
        ref = funasr_transcribe(path, wave, output_timestamp=True)
        transcript = recognizer.transcribe(wave)
        ours = spans_ms(transcript)
        assert ours == reference_spans(ref, upsampled=False, duration=transcript.duration)
        differs += ours != ref.timestamps  # 1.4.16 passes (peaks, alphas) swapped
    assert differs > 0
