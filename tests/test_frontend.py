"""Frontend tests: parity with funasr's WavFrontend and kaldi-native-fbank, batching, LFR, CMVN."""

from __future__ import annotations

import dataclasses
import os
import wave
from collections.abc import Callable
from pathlib import Path

import kaldi_native_fbank as knf
import numpy as np
import pytest
import torch
from funasr.frontends.wav_frontend import WavFrontend
from funasr.frontends.wav_frontend import apply_lfr as funasr_apply_lfr
from funasr.frontends.wav_frontend import load_cmvn as funasr_load_cmvn

from zhuanxie.frontend import (
    DEFAULT_OPTIONS,
    SAMPLE_RATE,
    Cmvn,
    Frontend,
    FrontendOptions,
    apply_cmvn,
    apply_lfr,
    fbank,
    load_cmvn,
    options_from_config,
    write_cmvn,
)

AUDIO_DIR = Path(
    os.environ.get("ZHUANXIE_TEST_AUDIO", Path(__file__).parents[1].parent / "shared" / "audio")
)
# Max abs error on log-mel values. Both sides compute in float32; the error is largest in the
# low mel bins of white noise, whose energy pre-emphasis nearly cancels: on 10 s of it
# kaldi-native-fbank is itself 8.5e-4 from a float64 computation, we are 5.1e-4.
FBANK_ATOL = 2.5e-3
# After CMVN, whose random scales below are at most 0.5, plus the rounding of the shift.
FEATURE_ATOL = 0.5 * FBANK_ATOL + 1e-5
PARAFORMER_CONF = {
    "fs": 16000,
    "window": "hamming",
    "n_mels": 80,
    "frame_length": 25,
    "frame_shift": 10,
    "lfr_m": 7,
    "lfr_n": 6,
}


# --- waves -------------------------------------------------------------------------------------


def _noise(n: int, rng: np.random.Generator) -> np.ndarray:
    return (0.1 * rng.standard_normal(n)).astype(np.float32)


def _chirp(n: int, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(n) / SAMPLE_RATE
    phase = 2 * np.pi * (100 * t + 2000 * t**2) + rng.uniform(0, 2 * np.pi)
    return (0.5 * np.sin(phase) + 0.01).astype(np.float32)  # with a DC offset


def _speech_like(n: int, rng: np.random.Generator) -> np.ndarray:
    """Voiced syllables (harmonics of a gliding f0 under a 4 Hz envelope), noise, digital silence."""
    t = np.arange(n) / SAMPLE_RATE
    f0 = 120 + 60 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
    voiced = sum(np.sin(k * phase) / k for k in range(1, 30))
    envelope = np.clip(np.sin(2 * np.pi * 4 * t), 0, None)
    signal = 0.2 * envelope * voiced + 0.003 * rng.standard_normal(n)
    signal[: n // 10] = 0.0
    return signal.astype(np.float32)


WAVE_KINDS: dict[str, Callable[[int, np.random.Generator], np.ndarray]] = {
    "noise": _noise,
    "chirp": _chirp,
    "speech_like": _speech_like,
}


def _batch(waves: list[np.ndarray], pad: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = [len(w) for w in waves]
    batch = torch.full((len(waves), max(lengths)), pad, dtype=torch.float32)
    for row, w in zip(batch, waves, strict=True):
        row[: len(w)] = torch.from_numpy(w)
    return batch, torch.tensor(lengths)


def _read_wav(path: Path) -> np.ndarray:
    with wave.open(str(path)) as f:
        assert (f.getnchannels(), f.getsampwidth(), f.getframerate()) == (1, 2, SAMPLE_RATE)
        pcm = np.frombuffer(f.readframes(f.getnframes()), dtype="<i2")
    return (pcm / 32768.0).astype(np.float32)


# --- references --------------------------------------------------------------------------------


def _knf_fbank(w: np.ndarray) -> np.ndarray:
    """kaldi-native-fbank with the options funasr's WavFrontend passes it."""
    opts = knf.FbankOptions()
    opts.frame_opts.dither = 0.0
    opts.frame_opts.window_type = "hamming"
    opts.frame_opts.frame_length_ms = min(25.0, len(w) / SAMPLE_RATE * 1000)
    opts.mel_opts.num_bins = 80
    opts.energy_floor = 0.0
    computer = knf.OnlineFbank(opts)
    computer.accept_waveform(SAMPLE_RATE, (w * 32768).astype(np.float32))
    computer.input_finished()
    return np.stack([computer.get_frame(i) for i in range(computer.num_frames_ready)])


@pytest.fixture(scope="module")
def cmvn() -> Cmvn:
    """Random CMVN with realistic magnitudes (log-mel means about 10, scales 0.1 to 0.5)."""
    gen = torch.Generator().manual_seed(0)
    shift = -8.0 - 6.0 * torch.rand(560, generator=gen)
    scale = 0.1 + 0.4 * torch.rand(560, generator=gen)
    return Cmvn(shift=shift, scale=scale)


@pytest.fixture(scope="module")
def cmvn_path(cmvn: Cmvn, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cmvn") / "am.mvn"
    write_cmvn(path, cmvn)
    return path


@pytest.fixture(scope="module")
def funasr_frontend(cmvn_path: Path) -> WavFrontend:
    return WavFrontend(
        cmvn_file=str(cmvn_path),
        window="hamming",
        n_mels=80,
        frame_length=25,
        frame_shift=10,
        lfr_m=7,
        lfr_n=6,
        dither=0.0,
    )


def _funasr_features(frontend: WavFrontend, w: np.ndarray) -> torch.Tensor:
    # A list of lengths, as funasr's extract_fbank passes them.
    feats, _ = frontend(torch.from_numpy(w)[None], [len(w)])
    return feats[0]


def _assert_matches_funasr(
    frontend: Frontend, reference: WavFrontend, waves: list[np.ndarray]
) -> None:
    feats, lens = frontend(*_batch(waves))
    assert feats.dtype == torch.float32
    for i, w in enumerate(waves):
        expected = _funasr_features(reference, w)
        assert int(lens[i]) == expected.shape[0]
        torch.testing.assert_close(feats[i, : int(lens[i])], expected, rtol=0, atol=FEATURE_ATOL)
        assert not feats[i, int(lens[i]) :].any()


# --- fbank -------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(WAVE_KINDS))
@pytest.mark.parametrize("length", [400, 559, 560, 1000, 16000 + 123, 10 * 16000])
def test_fbank_matches_kaldi_native_fbank(kind: str, length: int) -> None:
    w = WAVE_KINDS[kind](length, np.random.default_rng(length))
    feats, lens = fbank(*_batch([w]))
    expected = torch.from_numpy(_knf_fbank(w))
    assert lens.tolist() == [expected.shape[0]] == [1 + (length - 400) // 160]
    torch.testing.assert_close(feats[0], expected, rtol=0, atol=FBANK_ATOL)


def test_fbank_of_waves_under_25_ms_uses_the_whole_wave_as_window() -> None:
    """funasr passes frame_length=min(25 ms, duration): 257..399 samples give one frame."""
    rng = np.random.default_rng(1)
    waves = [_speech_like(n, rng) + _noise(n, rng) for n in range(257, 400)]
    feats, lens = fbank(*_batch(waves))
    assert lens.tolist() == [1] * len(waves)
    for i, w in enumerate(waves):
        expected = torch.from_numpy(_knf_fbank(w))
        torch.testing.assert_close(feats[i, :1], expected, rtol=0, atol=FBANK_ATOL)


def test_fbank_of_waves_of_256_samples_or_fewer_has_no_frames() -> None:
    """kaldi-native-fbank rejects these (a 256-point FFT leaves mel bins empty); we give T = 0."""
    with pytest.raises(ValueError, match="num_mel_bins too large"):
        _knf_fbank(np.zeros(256, dtype=np.float32))
    waves = [np.full(n, 0.1, dtype=np.float32) for n in (1, 100, 256)]
    feats, lens = fbank(*_batch(waves))
    assert feats.shape == (3, 0, 80)
    assert lens.tolist() == [0, 0, 0]


def test_fbank_of_empty_batch_item_next_to_a_long_one() -> None:
    waves, lens = _batch([np.full(1000, 0.1, dtype=np.float32), np.zeros(0, dtype=np.float32)])
    feats, feat_lens = fbank(waves, lens)
    assert feat_lens.tolist() == [4, 0]
    assert not feats[1].any()


def test_fbank_of_digital_silence_is_log_float_epsilon() -> None:
    feats, _ = fbank(torch.zeros(1, 1000), torch.tensor([1000]))
    assert torch.equal(feats, torch.full((1, 4, 80), float(np.log(np.finfo(np.float32).eps))))


def test_fbank_of_a_batch_equals_each_item_alone_exactly() -> None:
    """Padding (here NaN), neighbours and chunking must not change an item's frames by a bit."""
    rng = np.random.default_rng(2)
    # The last wave alone ends in a one-frame chunk of fbank's 1024-frame steps.
    lengths = [3 * 16000 + 77, 399, 5000, 300, 100, 257, 400 + 1024 * 160]
    waves = [_speech_like(n, rng) + _noise(n, rng) for n in lengths]
    feats, lens = fbank(*_batch(waves, pad=float("nan")))
    for i, w in enumerate(waves):
        alone, alone_lens = fbank(*_batch([w]))
        assert int(lens[i]) == int(alone_lens[0])
        assert torch.equal(feats[i, : int(lens[i])], alone[0])
        assert not feats[i, int(lens[i]) :].any()


@pytest.mark.parametrize(
    ("waves", "lengths", "message"),
    [
        (torch.zeros(1000), torch.tensor([1000]), "2-D float"),
        (torch.zeros(1, 1000, dtype=torch.int16), torch.tensor([1000]), "2-D float"),
        (torch.zeros(2, 1000), torch.tensor([1000]), r"\(2,\) int tensor"),
        (torch.zeros(1, 1000), torch.tensor([1000.0]), r"\(1,\) int tensor"),
        (torch.zeros(1, 1000), torch.tensor([1001]), r"lie in \[0, 1000\]"),
    ],
)
def test_fbank_rejects_malformed_batches(
    waves: torch.Tensor, lengths: torch.Tensor, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        fbank(waves, lengths)


# --- whole frontend vs funasr --------------------------------------------------------------------


@pytest.mark.parametrize(
    "lengths",
    [(400, 560, 1000), (2 * 16000 + 37, 8000 + 5, 3333), (257, 399, 12345), (300, 96000, 401)],
)
def test_frontend_matches_funasr_wav_frontend(
    cmvn: Cmvn, funasr_frontend: WavFrontend, lengths: tuple[int, ...]
) -> None:
    rng = np.random.default_rng(sum(lengths))
    kinds = sorted(WAVE_KINDS)
    waves = [WAVE_KINDS[kinds[i % 3]](n, rng) for i, n in enumerate(lengths)]
    _assert_matches_funasr(Frontend(cmvn), funasr_frontend, waves)


def test_frontend_matches_funasr_on_real_speech(cmvn: Cmvn, funasr_frontend: WavFrontend) -> None:
    paths = sorted((AUDIO_DIR / "zh").glob("*.wav"))
    if not paths:
        pytest.skip(f"no real speech under {AUDIO_DIR / 'zh'} (set ZHUANXIE_TEST_AUDIO)")
    waves = sorted((_read_wav(p) for p in paths), key=len)
    # The longest (70 s) alone: padding every clip to it would only slow the test down.
    for batch in (waves[:-1], waves[-1:]):
        _assert_matches_funasr(Frontend(cmvn), funasr_frontend, batch)


def test_frontend_gives_no_frames_for_a_batch_of_tiny_waves(cmvn: Cmvn) -> None:
    feats, lens = Frontend(cmvn)(torch.zeros(2, 200), torch.tensor([200, 50]))
    assert feats.shape == (2, 0, 560)
    assert lens.tolist() == [0, 0]


def test_frontend_keeps_cmvn_out_of_the_state_dict(cmvn: Cmvn) -> None:
    frontend = Frontend(cmvn)
    assert frontend.state_dict() == {}
    assert torch.equal(frontend.shift, cmvn.shift)


def test_frontend_rejects_cmvn_of_the_wrong_size(cmvn: Cmvn) -> None:
    with pytest.raises(ValueError, match="CMVN has 560 dims but the options give 400"):
        Frontend(cmvn, FrontendOptions(lfr_m=5, lfr_n=1))


# --- LFR ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("m", "n"), [(7, 6), (5, 1), (1, 1)])
def test_apply_lfr_matches_funasr_for_every_length_up_to_50(m: int, n: int) -> None:
    lengths = torch.arange(1, 51)
    feats = torch.randn(50, 50, 3)
    feats[torch.arange(50)[None, :] >= lengths[:, None]] = float("nan")  # padding
    stacked, stacked_lens = apply_lfr(feats, lengths, m, n)
    assert stacked.shape == (50, -(-50 // n), 3 * m)
    for i, length in enumerate(lengths.tolist()):
        expected = funasr_apply_lfr(feats[i, :length], m, n)
        assert int(stacked_lens[i]) == expected.shape[0]
        assert torch.equal(stacked[i, : expected.shape[0]], expected)
        assert not stacked[i, expected.shape[0] :].any()


def test_apply_lfr_of_no_frames_is_empty() -> None:
    stacked, lens = apply_lfr(torch.zeros(2, 0, 80), torch.tensor([0, 0]))
    assert stacked.shape == (2, 0, 560)
    assert lens.tolist() == [0, 0]


def test_apply_lfr_rejects_a_zero_stride() -> None:
    with pytest.raises(ValueError, match="n >= 1"):
        apply_lfr(torch.zeros(1, 6, 80), torch.tensor([6]), m=7, n=0)


# --- CMVN --------------------------------------------------------------------------------------


def test_write_then_load_cmvn_round_trips_exactly(cmvn: Cmvn, cmvn_path: Path) -> None:
    loaded = load_cmvn(cmvn_path)
    assert torch.equal(loaded.shift, cmvn.shift)
    assert torch.equal(loaded.scale, cmvn.scale)


def test_funasr_reads_our_cmvn_file(cmvn: Cmvn, cmvn_path: Path) -> None:
    assert torch.equal(funasr_load_cmvn(str(cmvn_path)), torch.stack([cmvn.shift, cmvn.scale]))


def test_load_cmvn_reads_the_kaldi_nnet1_layout(tmp_path: Path) -> None:
    path = tmp_path / "am.mvn"
    path.write_text(
        "<Nnet>\n<Splice> 3 3\n[ 0 ]\n<AddShift> 3 3\n<LearnRateCoef> 0 [ -1.5 2 3e-1 ]\n"
        "<Rescale> 3 3\n<LearnRateCoef> 0 [ 0.5 0.25 1 ]\n</Nnet>\n"
    )
    loaded = load_cmvn(path)
    assert loaded.shift.tolist() == pytest.approx([-1.5, 2.0, 0.3])
    assert loaded.scale.tolist() == [0.5, 0.25, 1.0]


def test_load_cmvn_names_a_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.mvn"
    with pytest.raises(FileNotFoundError, match=f"CMVN file {path} does not exist"):
        load_cmvn(path)


@pytest.mark.parametrize(
    ("corrupt", "message"),
    [
        (lambda text: text[: text.index("<Rescale>")], "no <Rescale> component"),
        (lambda text: text[: text.rindex("]") - 20], r"no closing '\]'"),
        (lambda text: text.replace("<Rescale> 560 560", "<Rescale> 561 561"), "declares 561"),
        (lambda text: text.replace("<AddShift> 560 560", "<AddShift> 560 5"), "two equal dims"),
        (lambda text: text.replace("[ -", "[ x", 1), "non-number"),
        (lambda text: text.replace("0 [", "0 ", 1), "do not start with"),
    ],
)
def test_load_cmvn_names_the_file_and_the_problem(
    cmvn_path: Path, tmp_path: Path, corrupt: Callable[[str], str], message: str
) -> None:
    path = tmp_path / "bad.mvn"
    path.write_text(corrupt(cmvn_path.read_text()))
    with pytest.raises(ValueError, match=message) as error:
        load_cmvn(path)
    assert str(path) in str(error.value)


def test_apply_cmvn_normalises_valid_frames_and_zeroes_padding() -> None:
    cmvn = Cmvn(shift=torch.tensor([1.0, -2.0]), scale=torch.tensor([0.5, 2.0]))
    feats = torch.tensor([[[1.0, 2.0], [3.0, 4.0]], [[5.0, 6.0], [7.0, 8.0]]])
    out = apply_cmvn(feats, torch.tensor([2, 1]), cmvn)
    assert out.tolist() == [[[1.0, 0.0], [2.0, 4.0]], [[3.0, 8.0], [0.0, 0.0]]]


def test_apply_cmvn_rejects_features_of_another_size(cmvn: Cmvn) -> None:
    with pytest.raises(ValueError, match="feats have 80 features but the CMVN has 560"):
        apply_cmvn(torch.zeros(1, 2, 80), torch.tensor([2]), cmvn)


def test_cmvn_rejects_vectors_of_different_sizes() -> None:
    with pytest.raises(ValueError, match="1-D of one size"):
        Cmvn(shift=torch.zeros(3), scale=torch.zeros(4))


# --- options -----------------------------------------------------------------------------------


def test_default_options_derive_paraformer_sizes() -> None:
    opts = DEFAULT_OPTIONS
    sizes = (opts.window_size, opts.hop_size, opts.fft_size, opts.min_samples, opts.feature_dim)
    assert sizes == (400, 160, 512, 257, 560)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"n_mels": 0}, "n_mels must be a positive int"),
        ({"lfr_n": 0}, "lfr_n must be a positive int"),
        ({"frame_shift_ms": -10}, "frame_shift_ms must be a positive int"),
        ({"lfr_m": 1.5}, "lfr_m must be a positive int"),
        ({"n_mels": 2}, "at least 3"),
        ({"n_mels": 200}, "some mel bins are empty"),
    ],
)
def test_options_reject_invalid_values(change: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(DEFAULT_OPTIONS, **change)


def test_options_from_paraformer_config() -> None:
    conf = {**PARAFORMER_CONF, "dither": 1.0, "cmvn_file": "am.mvn"}
    assert options_from_config(conf) == FrontendOptions()


def test_options_from_config_default_to_funasr_defaults_without_lfr() -> None:
    assert options_from_config({}) == FrontendOptions(lfr_m=1, lfr_n=1)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"fs": 8000}, "frontend_conf.fs=8000 is not supported"),
        ({"window": "hanning"}, "frontend_conf.window='hanning' is not supported"),
        ({"snip_edges": False}, "frontend_conf.snip_edges=False is not supported"),
        ({"n_mels": "80"}, "frontend_conf.n_mels must be an integer"),
        ({"lfr_m": 0}, "lfr_m must be a positive int"),
        ({"frame_lenght": 25}, r"unknown keys \['frame_lenght'\]"),
    ],
)
def test_options_from_config_reject_unsupported_values(
    change: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        options_from_config({**PARAFORMER_CONF, **change})
