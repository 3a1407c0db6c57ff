"""FSMN-VAD: the network, its loading, the streaming front end and the endpoint state machine.

Parity: segment lists identical to funasr 1.4.16's `AutoModel(model=dir).generate(wave)` on the
same random checkpoint, on every clip of the shared corpus and on generated audio, with the fixed
800 ms end silence (`max_end_silence_time=800`) and with funasr's default dynamic schedule.
"""

from __future__ import annotations

import functools
import os
import shutil
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

from tests.oracle import _quiet
from zhuanxie.audio import load_audio
from zhuanxie.checkpoint import CheckpointError
from zhuanxie.frontend import apply_cmvn, apply_lfr, fbank
from zhuanxie.fsmn_vad import (
    DEFAULT_SILENCE_SCHEDULE,
    FsmnVad,
    FsmnVadOptions,
    _decibels,
    _Features,
    options_from_model_conf,
)
from zhuanxie.generator import fsmn_vad_config, write_random_fsmn_vad

AUDIO_DIR = Path(
    os.environ.get(
        "ZHUANXIE_TEST_AUDIO", Path(__file__).resolve().parents[1].parent / "shared" / "audio"
    )
)
AUDIO_SUFFIXES = {".wav", ".flac", ".mp3"}
FIXED = FsmnVadOptions()
DYNAMIC = replace(FIXED, dynamic_silence=True)
MODES = {"fixed": FIXED, "dynamic": DYNAMIC}
RATE = 16000


@pytest.fixture(scope="module")
def vad_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_random_fsmn_vad(tmp_path_factory.mktemp("fsmn-vad") / "model", seed=0)


@pytest.fixture(scope="module")
def vad(vad_dir: Path) -> FsmnVad:
    return FsmnVad(vad_dir)


@pytest.fixture(scope="module")
def reference(vad_dir: Path) -> Any:
    """`generate(wave, mode, **options)` -> funasr's [[start_ms, end_ms], ...]."""
    models: dict[tuple[tuple[str, Any], ...], Any] = {}

    def generate(wave: np.ndarray, mode: str, **options: Any) -> list[list[int]]:
        key = tuple(sorted(options.items()))
        with _quiet():
            if key not in models:
                from funasr import AutoModel

                models[key] = AutoModel(
                    model=str(vad_dir),
                    disable_update=True,
                    disable_pbar=True,
                    disable_log=True,
                    log_level="ERROR",
                    **options,
                )
            # funasr's dynamic schedule is on unless max_end_silence_time is passed.
            fixed = {"max_end_silence_time": 800} if mode == "fixed" else {}
            result = models[key].generate(input=wave, **fixed)
        return [[int(start), int(end)] for start, end in result[0]["value"]]

    return generate


def ours(
    vad: FsmnVad, wave: np.ndarray, options: FsmnVadOptions, chunk: int = 10**8
) -> list[list[int]]:
    pieces = [wave[i : i + chunk] for i in range(0, len(wave), chunk)]
    return [[s.start // 16, s.end // 16] for s in vad.segments(pieces, options)]


def corpus() -> list[Path]:
    if not AUDIO_DIR.is_dir():
        return []
    return sorted(p for p in AUDIO_DIR.rglob("*") if p.suffix in AUDIO_SUFFIXES)


def clip_id(path: Path) -> str:
    return f"{path.parent.name}/{path.name}"


def noise(rng: np.random.Generator, seconds: float, db: float) -> np.ndarray:
    return (rng.normal(0, 1, int(seconds * RATE)) * 10 ** (db / 20)).astype(np.float32)


@functools.cache
def speech_clips() -> list[np.ndarray]:
    paths = sorted((AUDIO_DIR / "zh").glob("*.wav"))
    if not paths:
        pytest.skip(f"test audio not found at {AUDIO_DIR}; set ZHUANXIE_TEST_AUDIO")
    return [load_audio(p) for p in paths]


@functools.cache
def long_speech() -> np.ndarray:
    """~130 s of speech with no pause a segment could end at: forced cuts and 60 s chunk edges."""
    clips = speech_clips()
    lecture = next(c for c in clips if len(c) > 60 * RATE)
    rng = np.random.default_rng(7)
    loud = [c / max(1e-3, float(np.abs(c).max())) * 0.5 for c in clips]
    # Other clips laid over the lecture fill its pauses.
    mixed = np.concatenate([lecture, lecture])
    position = 0
    while position < len(mixed):
        clip = loud[rng.integers(len(loud))]
        mixed[position : position + len(clip)] += clip[: len(mixed) - position]
        position += len(clip) // 2
    return mixed.astype(np.float32)


@functools.cache
def bursts() -> np.ndarray:
    """Noise bursts of every loudness and length between digital silence and quiet hiss."""
    rng = np.random.default_rng(3)
    parts = []
    for _ in range(40):
        parts.append(noise(rng, rng.uniform(0.02, 2.5), rng.uniform(-80, -5)))
        gap = rng.uniform(0.0, 2.0)
        parts.append(
            np.zeros(int(gap * RATE), np.float32) if rng.random() < 0.5 else noise(rng, gap, -70)
        )
    return np.concatenate(parts)


# --- loading ---------------------------------------------------------------------------------


def test_state_dict_keys_and_shapes_are_funasrs(vad: FsmnVad) -> None:
    with _quiet():
        import funasr.models.fsmn_vad_streaming.model  # noqa: F401  (registers the class)
        from funasr.register import tables

        config = fsmn_vad_config()
        reference = tables.model_classes.get(config["model"])(**config, **config["model_conf"])
    expected = {k: tuple(v.shape) for k, v in reference.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in vad.model.state_dict().items()} == expected


def test_published_size_has_428738_parameters(vad: FsmnVad) -> None:
    assert sum(p.numel() for p in vad.model.parameters()) == 428738


def test_config_model_conf_gives_the_default_options(vad: FsmnVad) -> None:
    assert vad.options == FsmnVadOptions()


def copy_model(vad_dir: Path, tmp_path: Path) -> Path:
    target = tmp_path / "model"
    shutil.copytree(vad_dir, target)
    return target


def edit_config(model: Path, change: Any) -> None:
    path = model / "config.yaml"
    config = yaml.safe_load(path.read_text(encoding="utf-8"))
    change(config)
    path.write_text(yaml.safe_dump(config), encoding="utf-8")


def test_missing_and_unexpected_keys_are_listed_with_the_file(
    vad_dir: Path, tmp_path: Path
) -> None:
    model = copy_model(vad_dir, tmp_path)
    state = torch.load(model / "model.pt")
    state["encoder.extra.weight"] = state.pop("encoder.fsmn.2.affine.linear.bias")
    torch.save(state, model / "model.pt")
    with pytest.raises(CheckpointError, match=r"model\.pt") as error:
        FsmnVad(model)
    assert "missing keys (1): encoder.fsmn.2.affine.linear.bias" in str(error.value)
    assert "unexpected keys (1): encoder.extra.weight" in str(error.value)


def test_mis_shaped_weights_are_rejected(vad_dir: Path, tmp_path: Path) -> None:
    model = copy_model(vad_dir, tmp_path)
    state = torch.load(model / "model.pt")
    state["encoder.fsmn.0.fsmn_block.conv_left.weight"] = torch.zeros(128, 1, 10, 1)
    torch.save(state, model / "model.pt")
    with pytest.raises(CheckpointError, match=r"conv_left.weight: checkpoint \(128, 1, 10, 1\)"):
        FsmnVad(model)


def test_a_missing_cmvn_file_is_named(vad_dir: Path, tmp_path: Path) -> None:
    model = copy_model(vad_dir, tmp_path)
    (model / "am.mvn").unlink()
    with pytest.raises(CheckpointError, match=r"am.mvn is missing"):
        FsmnVad(model)


def test_another_model_class_is_rejected(vad_dir: Path, tmp_path: Path) -> None:
    model = copy_model(vad_dir, tmp_path)
    edit_config(model, lambda c: c.update(model="Paraformer"))
    with pytest.raises(CheckpointError, match=r"config.yaml: model is 'Paraformer'"):
        FsmnVad(model)


def test_an_lfr_other_than_5_1_is_rejected(vad_dir: Path, tmp_path: Path) -> None:
    model = copy_model(vad_dir, tmp_path)
    edit_config(model, lambda c: c["frontend_conf"].update(lfr_m=7, lfr_n=6))
    with pytest.raises(CheckpointError, match="lfr_m 5, lfr_n 1"):
        FsmnVad(model)


def test_single_utterance_mode_is_rejected() -> None:
    with pytest.raises(CheckpointError, match="detect_mode is 0"):
        options_from_model_conf({"detect_mode": 0})


def test_unknown_model_conf_keys_are_rejected() -> None:
    with pytest.raises(CheckpointError, match=r"unknown keys \['max_end_silence'\]"):
        options_from_model_conf({"max_end_silence": 500})


def test_model_conf_values_become_options() -> None:
    options = options_from_model_conf({"max_end_silence_time": 500, "do_extend": 0})
    assert options == replace(FsmnVadOptions(), max_end_silence_ms=500, do_extend=False)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"window_size_ms": 0}, "window_size_ms must be >= 1"),
        ({"speech_2_noise_ratio": 0.0}, "speech_2_noise_ratio must be > 0"),
        ({"sil_pdf_ids": ()}, "sil_pdf_ids must be non-empty"),
        ({"silence_schedule": ((1000, 200),)}, "end with math.inf"),
        ({"do_extend": False, "max_end_silence_ms": 100}, "max_end_silence_ms must be >="),
    ],
)
def test_invalid_options_are_rejected(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        replace(FsmnVadOptions(), **change)


def test_dynamic_end_silence_follows_the_schedule() -> None:
    # funasr subtracts speech_to_sil_time_thres (150 ms) and floors at 0.
    assert [DYNAMIC.end_silence_ms(ms) for ms in (0, 60000, 120000)] == [1850, 50, 0]
    assert DYNAMIC.silence_schedule == DEFAULT_SILENCE_SCHEDULE
    assert (FIXED.end_silence_ms(0), DYNAMIC.speech_threshold) == (650, 0.5)


def test_generated_directory_is_the_same_for_the_same_seed(vad_dir: Path, tmp_path: Path) -> None:
    again = write_random_fsmn_vad(tmp_path / "again", seed=0)
    for name in ("config.yaml", "configuration.json", "am.mvn", "model.pt"):
        assert (again / name).read_bytes() == (vad_dir / name).read_bytes(), name


# --- front end and network ---------------------------------------------------------------------


def test_streamed_features_equal_whole_file_lfr_and_cmvn(vad: FsmnVad) -> None:
    wave = np.random.default_rng(0).normal(0, 0.1, 23456).astype(np.float32)
    features = _Features(vad._cmvn)
    streamed = [features.push(wave[i : i + 1700])[0] for i in range(0, len(wave), 1700)]
    streamed.append(features.finish())
    feats, lens = fbank(torch.from_numpy(wave)[None], torch.tensor([len(wave)]))
    stacked, lens = apply_lfr(feats, lens, 5, 1)
    assert torch.equal(torch.cat(streamed), apply_cmvn(stacked, lens, vad._cmvn)[0])


@pytest.mark.parametrize(("samples", "scale"), [(400, 0.5), (16000 * 3 + 77, 0.3), (5000, 3.0)])
def test_fast_decibels_equal_funasrs_per_frame_sum(samples: int, scale: float) -> None:
    wave = np.random.default_rng(samples).normal(0, scale, samples).astype(np.float32)
    wave[100:2000] = 0.0  # digital silence: the 1e-6 floor
    count = (len(wave) - 400) // 160 + 1
    frames = wave[np.arange(count)[:, None] * 160 + np.arange(400)]
    expected = 10 * np.log10(np.sum(np.square(frames), axis=1) + 0.000001)  # funasr's code
    assert np.array_equal(_decibels(wave, count), expected.astype(np.float64))


def test_scores_equal_funasrs_encoder_on_the_same_features(vad: FsmnVad, vad_dir: Path) -> None:
    feats = torch.randn(1, 700, 400)
    with _quiet():
        from funasr import AutoModel

        model = AutoModel(model=str(vad_dir), disable_update=True, disable_log=True).model
    with torch.no_grad():
        expected = model.encoder(feats, {})
        probs, _ = vad.model.encoder(feats, vad.model.encoder.initial_state())
    assert torch.equal(probs, expected)


def test_scores_of_a_stream_do_not_depend_on_its_chunking(vad: FsmnVad) -> None:
    wave = np.random.default_rng(2).normal(0, 0.05, 16000 * 5).astype(np.float32)
    whole = vad.silence_probabilities([wave])
    for size in (160, 4321, 40000):
        chunks = [wave[i : i + size] for i in range(0, len(wave), size)]
        assert np.array_equal(vad.silence_probabilities(chunks), whole)


def test_random_model_hears_energy(vad: FsmnVad) -> None:
    rng = np.random.default_rng(4)
    quiet = vad.silence_probabilities([np.zeros(RATE, np.float32), noise(rng, 1.0, -60)])
    loud = vad.silence_probabilities([noise(rng, 2.0, -20)])
    assert quiet.min() > 0.9
    assert loud[50:].max() < 0.1  # after the memory has filled


# --- parity with funasr ------------------------------------------------------------------------


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("path", corpus(), ids=clip_id)
def test_segments_equal_funasr_on_the_corpus(
    vad: FsmnVad, reference: Any, path: Path, mode: str
) -> None:
    wave = load_audio(path)  # resampled to 16 kHz mono
    assert ours(vad, wave, MODES[mode]) == reference(wave, mode)


def test_corpus_is_present() -> None:
    if not corpus():
        pytest.skip(f"test audio not found at {AUDIO_DIR}; set ZHUANXIE_TEST_AUDIO")
    assert len(corpus()) >= 10


@pytest.mark.parametrize("mode", list(MODES))
def test_segments_equal_funasr_on_noise_bursts(vad: FsmnVad, reference: Any, mode: str) -> None:
    wave = bursts()
    expected = reference(wave, mode)
    assert len(expected) >= 10
    assert ours(vad, wave, MODES[mode]) == expected


@pytest.mark.parametrize("mode", list(MODES))
def test_segments_equal_funasr_on_long_speech(vad: FsmnVad, reference: Any, mode: str) -> None:
    wave = long_speech()
    expected = reference(wave, mode)
    assert ours(vad, wave, MODES[mode]) == expected
    if mode == "fixed":  # the 60 s limit cut a segment: it ends 6001 frames after its start
        assert any(end - start == 60010 for start, end in expected)


@pytest.mark.parametrize("samples", [400, 561, 60 * RATE - 100, 60 * RATE, 60 * RATE + 1])
@pytest.mark.parametrize("mode", list(MODES))
def test_segments_equal_funasr_at_edge_lengths(
    vad: FsmnVad, reference: Any, samples: int, mode: str
) -> None:
    # One frame, two; a length whose last frame lies past a 60 s chunk edge (no chunk starts
    # there), one at the edge (funasr's last chunk is empty), one past it.
    wave = np.resize(long_speech(), samples).astype(np.float32)
    assert ours(vad, wave, MODES[mode]) == reference(wave, mode)


@pytest.mark.parametrize("samples", [0, 399])
def test_audio_shorter_than_a_frame_has_no_segments(vad: FsmnVad, samples: int) -> None:
    # funasr returns no segments for empty input and divides by zero below one frame.
    assert ours(vad, np.ones(samples, np.float32) * 0.5, FIXED) == []


@pytest.mark.parametrize(
    ("funasr_options", "changes"),
    [
        ({"decibel_thres": -45.0, "snr_thres": 5.0}, {"decibel_thres": -45.0, "snr_thres": 5.0}),
        (
            {"speech_2_noise_ratio": 0.8, "max_single_segment_time": 7000},
            {"speech_2_noise_ratio": 0.8, "max_single_segment_ms": 7000},
        ),
        (
            {
                "lookahead_time_end_point": 300,
                "window_size_ms": 300,
                "noise_frame_num_used_for_snr": 10,
                "snr_thres": 8.0,
            },
            {
                "lookahead_end_ms": 300,
                "window_size_ms": 300,
                "noise_frames_for_snr": 10,
                "snr_thres": 8.0,
            },
        ),
        (
            {"do_extend": 0, "max_single_segment_time": 3000},
            {"do_extend": False, "max_single_segment_ms": 3000},
        ),
    ],
)
def test_segments_equal_funasr_with_other_options(
    vad: FsmnVad, reference: Any, funasr_options: dict[str, Any], changes: dict[str, Any]
) -> None:
    wave = np.concatenate([speech_clips()[0], bursts()[: 30 * RATE], speech_clips()[3]])
    for mode, options in MODES.items():
        expected = reference(wave, mode, **funasr_options)
        assert ours(vad, wave, replace(options, **changes)) == expected


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(8))
def test_segments_equal_funasr_on_random_mixtures(vad: FsmnVad, reference: Any, seed: int) -> None:
    rng = np.random.default_rng(seed)
    clips = speech_clips()
    parts: list[np.ndarray] = []
    while sum(map(len, parts)) < rng.uniform(30, 200) * RATE:
        kind = rng.random()
        if kind < 0.5:
            parts.append(clips[rng.integers(len(clips))])
        elif kind < 0.75:
            parts.append(noise(rng, rng.uniform(0.02, 4), rng.uniform(-80, -5)))
        else:
            parts.append(np.zeros(int(rng.uniform(0, 3) * RATE), np.float32))
    wave = np.concatenate(parts)
    for mode, options in MODES.items():
        assert ours(vad, wave, options, chunk=int(rng.integers(500, 10**6))) == reference(
            wave, mode
        )


# --- the state machine on scripted scores -----------------------------------------------------
# The encoder is replaced, in funasr and here, by one that plays back given p_sil values, so that
# the endpoint logic meets patterns real audio rarely produces: runs of every length around the
# window thresholds, a segment limit hit in each kind of frame, speech across whole 60 s chunks.


class ScriptedEncoder(torch.nn.Module):
    """Plays back p_sil (class 0) frame after frame; the other 247 classes share the rest."""

    def __init__(self, p_sil: np.ndarray) -> None:
        super().__init__()
        self.p_sil = torch.tensor(p_sil, dtype=torch.float32)
        self.played = 0
        self.unused = torch.nn.Parameter(torch.zeros(1))  # funasr asks the model for its device

    def play(self, frames: int) -> torch.Tensor:
        p = self.p_sil[self.played : self.played + frames]
        self.played += frames
        probs = ((1 - p) / 247)[:, None].repeat(1, 248)
        probs[:, 0] = p
        return probs[None]

    def forward(self, feats: torch.Tensor, cache: Any = None) -> torch.Tensor:  # funasr's call
        return self.play(feats.shape[1])


class OurScriptedEncoder(ScriptedEncoder):
    def initial_state(self) -> list[torch.Tensor]:
        return []

    def forward(self, feats: torch.Tensor, state: Any = None) -> Any:
        return self.play(feats.shape[1]), state


def scripted_p_sil(
    rng: np.random.Generator, frames: int, long_speech_frames: int = 0
) -> np.ndarray:
    """Runs of speech (p 0.05), silence (0.95) and in between (0.22: speech at funasr's 0.5
    threshold only), mostly a few frames long, so the 20-frame window flickers."""
    values = []
    while len(values) < frames:
        value = float(rng.choice([0.05, 0.95, 0.22], p=[0.5, 0.4, 0.1]))
        length = int(rng.integers(1, 25) if rng.random() < 0.8 else rng.integers(25, 400))
        values += [value] * length
        if long_speech_frames and rng.random() < 0.02:
            values += [0.05] * long_speech_frames
    return np.array(values[:frames])


def scripted_segments(
    vad_dir: Path,
    p_sil: np.ndarray,
    mode: str,
    funasr_options: dict[str, Any],
    changes: dict[str, Any],
) -> tuple[list[list[int]], list[list[int]]]:
    wave = np.zeros(160 * (len(p_sil) - 1) + 400, np.float32)
    with _quiet():
        from funasr import AutoModel

        auto = AutoModel(
            model=str(vad_dir),
            disable_update=True,
            disable_pbar=True,
            disable_log=True,
            **funasr_options,
        )
        auto.model.encoder = ScriptedEncoder(p_sil)
        fixed = {"max_end_silence_time": 800} if mode == "fixed" else {}
        expected = [[int(a), int(b)] for a, b in auto.generate(input=wave, **fixed)[0]["value"]]
    vad = FsmnVad(vad_dir)
    vad.model.encoder = OurScriptedEncoder(p_sil)
    return ours(vad, wave, replace(MODES[mode], **changes), chunk=40000), expected


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize(
    ("seed", "funasr_options", "changes"),
    [
        (0, {"max_single_segment_time": 2000}, {"max_single_segment_ms": 2000}),
        (1, {"max_single_segment_time": 1230}, {"max_single_segment_ms": 1230}),
        (2, {}, {}),
    ],
)
def test_segments_equal_funasr_on_scripted_scores(
    vad_dir: Path, mode: str, seed: int, funasr_options: dict[str, Any], changes: dict[str, Any]
) -> None:
    p_sil = scripted_p_sil(np.random.default_rng(seed), 20000)
    got, expected = scripted_segments(vad_dir, p_sil, mode, funasr_options, changes)
    assert got == expected


def test_segments_equal_funasr_when_speech_spans_whole_chunks(vad_dir: Path) -> None:
    # Speech from 30 s to 170 s with no limit: the schedule accumulates over two chunk edges
    # (threshold 1850 ms, then 50 ms, then 0 ms) before the first pause ends the segment.
    p_sil = np.full(25000, 0.95)
    p_sil[3000:17000] = 0.05
    p_sil[17000:] = scripted_p_sil(np.random.default_rng(5), 8000)
    options = {"max_single_segment_time": 300000}
    got, expected = scripted_segments(
        vad_dir, p_sil, "dynamic", options, {"max_single_segment_ms": 300000}
    )
    assert got == expected
    # Start: 40 frames before the window's switch at frame 3014. End: 60 ms after the speech,
    # where 0 ms of silence suffices (1850 ms would have reached well past that).
    assert expected[0] == [29740, 170060]


def runs(*spans: tuple[int, int], frames: int) -> np.ndarray:
    """p_sil of `frames` frames: silence, with speech in the [first, end) spans."""
    p_sil = np.full(frames, 0.95)
    for first, end in spans:
        p_sil[first:end] = 0.05
    return p_sil


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize(
    ("p_sil", "limit_ms"),
    [
        # Back to speech exactly at the 1 s limit: the window switches at frame 174, the limit
        # of a segment starting at 74.
        (runs((100, 130), (160, 300), frames=400), 1000),
        # The window switches to speech on the last frame: funasr leaves that segment open.
        (runs((285, 300), frames=300), 60000),
        # ... and inside a segment (dynamic: 1850 ms of silence do not end the first speech).
        (runs((100, 150), (285, 300), frames=300), 60000),
    ],
    ids=["switch-at-limit", "opened-on-last-frame", "switch-on-last-frame"],
)
def test_segments_equal_funasr_on_rare_events(
    vad_dir: Path, mode: str, p_sil: np.ndarray, limit_ms: int
) -> None:
    options = {"max_single_segment_time": limit_ms}
    got, expected = scripted_segments(
        vad_dir, p_sil, mode, options, {"max_single_segment_ms": limit_ms}
    )
    assert got == expected


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(10, 30))
def test_segments_equal_funasr_on_more_scripted_scores(vad_dir: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    limit = int(rng.choice([500, 1500, 4000, 60000]))
    p_sil = scripted_p_sil(rng, int(rng.integers(100, 30000)), int(rng.integers(0, 7000)))
    for mode in MODES:
        options = {"max_single_segment_time": limit}
        got, expected = scripted_segments(
            vad_dir, p_sil, mode, options, {"max_single_segment_ms": limit}
        )
        assert got == expected


# --- streaming ---------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", list(MODES))
def test_segments_do_not_depend_on_chunk_sizes(vad: FsmnVad, mode: str) -> None:
    wave = bursts()[: 40 * RATE]
    whole = ours(vad, wave, MODES[mode])
    assert len(whole) >= 3
    for chunk in (160, 7919, 16000 * 7):
        assert ours(vad, wave, MODES[mode], chunk) == whole


def test_segment_audio_is_the_input_slice(vad: FsmnVad) -> None:
    wave = bursts()[: 30 * RATE]
    segments = list(vad.segments([wave[i : i + 5000] for i in range(0, len(wave), 5000)], FIXED))
    assert segments
    for segment in segments:
        assert np.array_equal(segment.audio, wave[segment.start : segment.end])


def test_segments_are_yielded_while_the_input_is_read(vad: FsmnVad) -> None:
    wave = bursts()
    read = 0

    def chunks() -> Iterator[np.ndarray]:
        nonlocal read
        for i in range(0, len(wave), RATE):
            read = i + RATE
            yield wave[i : i + RATE]

    first = next(iter(vad.segments(chunks(), FIXED)))
    assert read < len(wave) / 2
    assert first.end <= read


def test_digital_silence_has_no_segments(vad: FsmnVad) -> None:
    assert list(vad.segments([np.zeros(5 * RATE, np.float32)], FIXED)) == []


def test_class_ids_beyond_the_model_are_rejected(vad: FsmnVad) -> None:
    with pytest.raises(ValueError, match="sil_pdf_ids"):
        list(vad.segments([np.zeros(RATE, np.float32)], replace(FIXED, sil_pdf_ids=(300,))))
