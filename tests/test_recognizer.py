"""The Python API: inputs, dtypes, hotwords, errors."""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

import zhuanxie
from zhuanxie.recognizer import Recognizer, load_model


@pytest.fixture(scope="module")
def seaco(tiny_model_dir: Callable[..., Path]) -> Recognizer:
    return Recognizer(load_model(tiny_model_dir("seaco-paraformer-tiny")))


def noise(seconds: float, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 0.1, int(seconds * 16000)).astype(np.float32)


def test_transcript_carries_tokens_with_ordered_timestamps(seaco: Recognizer) -> None:
    t = seaco.transcribe(noise(4.0))
    assert t.duration == 4.0
    assert t.text == "".join(tok.text for tok in t.tokens) or " " in t.text
    assert len(t.tokens) > 5
    starts = [tok.start for tok in t.tokens]
    assert starts == sorted(starts)
    assert all(0 <= tok.start <= tok.end <= t.duration for tok in t.tokens)


def test_random_model_fires_about_four_tokens_per_second(seaco: Recognizer) -> None:
    ids = seaco.transcribe(noise(10.0)).segments[0].token_ids
    assert 35 <= len(ids) <= 55


def test_int16_float_and_tensor_inputs_agree(seaco: Recognizer) -> None:
    wave = noise(2.0)
    as_int16 = np.round(wave * 32768).clip(-32768, 32767).astype(np.int16)
    expected = seaco.transcribe(as_int16.astype(np.float32) / 32768).text
    assert seaco.transcribe(as_int16).text == expected
    assert seaco.transcribe(torch.from_numpy(as_int16.astype(np.float32) / 32768)).text == expected


def test_audio_too_short_for_one_frame_gives_an_empty_transcript(seaco: Recognizer) -> None:
    for n in (0, 100):
        t = seaco.transcribe(np.zeros(n, dtype=np.float32))
        assert t.text == ""
        assert t.segments == ()


def test_an_empty_batch_gives_no_results(seaco: Recognizer) -> None:
    assert seaco.transcribe_batch([]) == []


@pytest.mark.parametrize(
    ("audio", "message"),
    [
        (np.zeros((2, 100), dtype=np.float32), r"waveform 0 has shape \(2, 100\); expected mono"),
        (np.zeros(100, dtype=np.int32), r"waveform 0 has dtype int32"),
        (np.array([0.0, np.nan], dtype=np.float32), r"waveform 0 contains NaN"),
    ],
)
def test_bad_waveforms_are_rejected_by_index(
    seaco: Recognizer, audio: np.ndarray, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        seaco.transcribe(audio)


def test_hotword_lists_must_match_the_batch(seaco: Recognizer) -> None:
    with pytest.raises(ValueError, match="1 hotword lists for 2 waveforms"):
        seaco.transcribe_batch([noise(1), noise(1)], hotwords=[["你好"]])


def test_hotwords_must_be_a_list_not_a_string(seaco: Recognizer) -> None:
    with pytest.raises(TypeError, match="sequence of phrases, not one string"):
        seaco.transcribe(noise(1), hotwords="你好")


def test_hotwords_need_a_seaco_model(tiny_model_dir: Callable[..., Path]) -> None:
    recognizer = Recognizer(load_model(tiny_model_dir("paraformer-tiny")))
    with pytest.raises(ValueError, match="hotwords need a SeACo-Paraformer model"):
        recognizer.transcribe(noise(1), hotwords=["你好"])


def test_unrepresentable_hotwords_warn_by_name(seaco: Recognizer) -> None:
    with pytest.warns(zhuanxie.HotwordWarning, match=r"'GPU驱动' cannot be represented"):
        seaco.transcribe(noise(1), hotwords=["GPU驱动"])
    with pytest.warns(zhuanxie.HotwordWarning, match=r"'zhuanxieword' cannot be represented"):
        seaco.transcribe(noise(1), hotwords=["zhuanxieword"])


def test_representable_hotwords_do_not_warn(seaco: Recognizer) -> None:
    english = next(w for w in seaco.model.seg_dict or {} if w.isascii() and len(w) > 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        seaco.transcribe(noise(1), hotwords=["你好", english])


def test_hotwords_found_are_reported(seaco: Recognizer) -> None:
    wave = noise(3.0, seed=5)
    tokens = seaco.transcribe(wave).tokens
    present = next(
        a.text + b.text for a, b in itertools.pairwise(tokens) if len(a.text + b.text) == 2
    )
    t = seaco.transcribe(wave, hotwords=[present, "从来没有"])
    assert t.hotwords == (present, "从来没有")
    assert set(t.hotwords_found) <= {present}
    assert all(h in t.text for h in t.hotwords_found)


def test_hotword_encodings_are_cached(seaco: Recognizer) -> None:
    encoder = seaco.hotword_encoder
    assert encoder is not None
    seaco.transcribe(noise(1), hotwords=["北京", "魔搭"])
    before = dict(encoder._cache)
    seaco.transcribe(noise(1), hotwords=["魔搭", "北京"])
    assert all(encoder._cache[k] is v for k, v in before.items())


def test_bfloat16_runs_and_mostly_agrees_with_float32(tiny_model_dir: Callable[..., Path]) -> None:
    path = tiny_model_dir("seaco-paraformer-tiny")
    fp32 = Recognizer(load_model(path))
    bf16 = Recognizer(load_model(path, dtype="bfloat16"))
    assert next(bf16.model.network.encoder.parameters()).dtype == torch.bfloat16
    agree = total = 0
    for seed in range(4):
        a = fp32.transcribe(noise(5.0, seed)).segments[0].token_ids
        b = bf16.transcribe(noise(5.0, seed)).segments[0].token_ids
        total += max(len(a), len(b))
        agree += sum(x == y for x, y in zip(a, b))
    assert agree / total > 0.5


def test_float16_on_cpu_warns(tiny_model_dir: Callable[..., Path]) -> None:
    with pytest.warns(UserWarning, match="float16 on CPU is slow"):
        load_model(tiny_model_dir("paraformer-tiny"), dtype="float16")


def test_unknown_dtype_is_rejected(tiny_model_dir: Callable[..., Path]) -> None:
    with pytest.raises(ValueError, match="dtype 'int4' is not one of"):
        load_model(tiny_model_dir("paraformer-tiny"), dtype="int4")


def test_int8_quantises_linear_layers_and_mostly_agrees_with_float32(
    tiny_model_dir: Callable[..., Path],
) -> None:
    path = tiny_model_dir("seaco-paraformer-tiny")
    fp32 = Recognizer(load_model(path))
    int8 = Recognizer(load_model(path, dtype="int8"))
    w_1 = int8.model.network.encoder.encoders[0].feed_forward.w_1
    assert type(w_1).__module__.startswith("torch.ao.nn.quantized.dynamic")
    assert type(int8.model.network.predictor.cif_output) is torch.nn.Linear  # CIF stays float
    agree = total = 0
    for seed in range(4):
        a = fp32.transcribe(noise(5.0, seed)).segments[0].token_ids
        b = int8.transcribe(noise(5.0, seed)).segments[0].token_ids
        total += max(len(a), len(b))
        agree += sum(x == y for x, y in zip(a, b))
    assert agree / total > 0.5


def test_int8_timestamp_blstm_places_tokens_as_float32_does(
    tiny_model_dir: Callable[..., Path],
) -> None:
    path = tiny_model_dir("seaco-paraformer-tiny")
    fp32 = load_model(path).network.predictor
    int8 = load_model(path, dtype="int8").network.predictor
    assert type(int8.blstm).__module__.startswith("torch.ao.nn.quantized.dynamic")
    enc = torch.randn(2, 40, fp32.dims.d_model, generator=torch.Generator().manual_seed(0))
    lens, tokens = torch.tensor([40, 31]), torch.tensor([9, 7])
    with torch.inference_mode():
        a = fp32.upsampled_alphas(enc, lens, tokens)
        b = int8.upsampled_alphas(enc, lens, tokens)
    torch.testing.assert_close(b.sum(-1), tokens.float())  # each spreads the token count
    torch.testing.assert_close(b, a, atol=1e-3, rtol=0.0)  # weights are ~0.075
