"""Audio input: every format, rate and channel layout, streaming, arrays, and broken inputs.

Test files are generated here (soundfile for PCM/FLAC/Vorbis, PyAV for the other codecs and for
video containers); the real-speech corpus in `../shared/audio` is used when present.
"""

from __future__ import annotations

import json
import re
import struct
import tracemalloc
import warnings
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import av
import numpy as np
import numpy.typing as npt
import pytest
import soundfile as sf
import soxr
from av.audio.stream import AudioStream
from av.video.stream import VideoStream

from zhuanxie.audio import (
    RESAMPLE_QUALITY,
    SAMPLE_RATE,
    AudioError,
    AudioInfo,
    AudioOptions,
    audio_info,
    load_audio,
    stream_audio,
)

Floats = npt.NDArray[np.float64]

SECONDS = 2.5
RATES = (8000, 16000, 22050, 44100, 48000)
# Lossy codecs add encoder delay at the start and pad the last frame, and only some containers
# record how much to trim: up to two codec frames come back (MP3 in WAV keeps LAME's 1105-sample
# delay, 25 ms at 44.1 kHz; AAC in MP4 here keeps up to 1023 samples of padding, 23 ms).
LOSSY_TOLERANCE_S = 0.06
# Stream-versus-one-shot and lossless comparisons differ only by float32 rounding in the mixdown.
FLOAT_TOLERANCE = 1e-6
LAYOUTS = {1: "mono", 2: "stereo", 6: "5.1"}


# --- signals and writers ------------------------------------------------------------------------


def signal(rate: int, seconds: float = SECONDS) -> Floats:
    """A 440 Hz tone (amplitude 0.5) plus a quieter 1-2 kHz chirp, (S,) in [-0.6, 0.6]."""
    t = np.arange(round(rate * seconds)) / rate
    return 0.5 * np.sin(2 * np.pi * 440 * t) + 0.1 * np.sin(2 * np.pi * (1000 * t + 200 * t**2))


def tones(rate: int, freqs: tuple[int, ...], seconds: float = SECONDS) -> Floats:
    """One sine per channel, (S, C), amplitude 0.4."""
    t = np.arange(round(rate * seconds)) / rate
    return np.stack([0.4 * np.sin(2 * np.pi * f * t) for f in freqs], axis=1)


def stereo(mono: Floats) -> Floats:
    """(S,) → (S, 2) with the right channel at half level, so a mixdown is 0.75 of the left."""
    return np.stack([mono, 0.5 * mono], axis=1)


def dominant_hz(x: npt.NDArray[np.float32], rate: int = SAMPLE_RATE) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / rate)[np.argmax(spectrum)])


def level_at(x: npt.NDArray[np.float32], hz: float, rate: int = SAMPLE_RATE) -> float:
    """Spectral magnitude at `hz`, relative to the spectrum's peak."""
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(spectrum[round(hz * len(x) / rate)] / spectrum.max())


def resampled(native: npt.NDArray[np.float32], rate: int) -> npt.NDArray[np.float32]:
    """What the module should return for mono `native`: one-shot soxr of the whole signal."""
    if rate == SAMPLE_RATE:
        return native
    return soxr.resample(native, rate, SAMPLE_RATE, quality=RESAMPLE_QUALITY)


def mixdown(samples: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    return samples.mean(axis=1, dtype=np.float64).astype(np.float32)


def write_pcm(
    path: Path, samples: Floats, rate: int, subtype: str, fmt: str = "WAV"
) -> npt.NDArray[np.float32]:
    """Write (S, C) samples with soundfile as exact integers; return the decoded values (S, C).

    Integers go in unconverted, so the expected floats are known exactly: k / 2^(bits-1).
    """
    if subtype in ("FLOAT", "DOUBLE"):
        data: npt.NDArray[np.generic] = (
            samples.astype(np.float32) if subtype == "FLOAT" else samples
        )
        expected = samples.astype(np.float32)
    else:
        bits = {"PCM_U8": 8, "PCM_16": 16, "PCM_24": 24, "PCM_32": 32}[subtype]
        ints = np.round(samples * (2 ** (bits - 1) - 1)).astype(np.int64)
        # soundfile takes int16 or int32; narrower formats keep the top bits, so shift up.
        container_bits = 16 if bits <= 16 else 32
        data = (ints << (container_bits - bits)).astype(np.int16 if bits <= 16 else np.int32)
        expected = (ints * 2.0 ** -(bits - 1)).astype(np.float32)
    sf.write(path, data, rate, subtype=subtype, format=fmt)
    return expected


def has_encoder(name: str) -> bool:
    try:
        av.codec.Codec(name, "w")
    except av.error.FFmpegError:
        return False
    return True


def encode(
    path: Path, container: str, codec: str, rate: int, samples: Floats, video: str | None = None
) -> None:
    """Encode (S, C) float samples with PyAV; `video` adds a 64x48 video track of the same length."""
    with av.open(str(path), "w", format=container) as out:
        picture = None
        if video is not None:
            picture = cast(VideoStream, out.add_stream(video, rate=10))
            picture.width, picture.height, picture.pix_fmt = 64, 48, "yuv420p"
        sound = cast(AudioStream, out.add_stream(codec, rate=rate))
        layout = LAYOUTS[samples.shape[1]]
        sound.layout = layout
        formats = [f.name for f in sound.codec_context.codec.audio_formats or ()]
        fmt = next(f for f in ("fltp", "flt") if f in formats)
        sound.format = fmt
        if picture is not None:
            for i in range(round(len(samples) / rate * 10)):
                image = np.full((48, 64, 3), 8 * i % 256, np.uint8)
                frame = av.VideoFrame.from_ndarray(image, format="rgb24")
                frame.pts = i
                out.mux(picture.encode(frame))
            out.mux(picture.encode(None))
        size = sound.codec_context.frame_size or 1024
        for start in range(0, len(samples), size):
            block = samples[start : start + size].astype(np.float32)
            data = block.T if fmt == "fltp" else block.reshape(1, -1)
            audio = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(data), format=fmt, layout=layout
            )
            audio.sample_rate, audio.pts = rate, start
            out.mux(sound.encode(audio))
        out.mux(sound.encode(None))


def png() -> bytes:
    """An 8x8 black RGB PNG, built by hand."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    rows = b"".join(b"\x00" + bytes(8 * 3) for _ in range(8))
    header = struct.pack(">IIBBBBB", 8, 8, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


# --- every format -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Format:
    """A generated test file: how to write it and what decoding it must give."""

    ext: str
    rate: int
    codec: str
    write: Callable[[Path, Floats, int], npt.NDArray[np.float32] | None]
    """Writes (S, C) samples; returns the exact decoded native samples (lossless) or None."""
    needs: tuple[str, ...] = ()
    """Encoders this PyAV build must have."""
    lossless: bool = False
    """Whether `write` returns the exact samples to compare with."""


def pcm(subtype: str, fmt: str = "WAV") -> Callable[[Path, Floats, int], npt.NDArray[np.float32]]:
    return lambda path, samples, rate: write_pcm(path, samples, rate, subtype, fmt)


def lossy(
    container: str, codec: str, video: str | None = None
) -> Callable[[Path, Floats, int], None]:
    return lambda path, samples, rate: encode(path, container, codec, rate, samples, video)


def mulaw(path: Path, samples: Floats, rate: int) -> None:
    sf.write(path, samples, rate, subtype="ULAW")


def vorbis(path: Path, samples: Floats, rate: int) -> None:
    sf.write(path, samples, rate, format="OGG", subtype="VORBIS")


FORMATS = {
    "wav-u8": Format("wav", 22050, "pcm_u8", pcm("PCM_U8"), lossless=True),
    "wav-s16": Format("wav", 44100, "pcm_s16le", pcm("PCM_16"), lossless=True),
    "wav-s24": Format("wav", 48000, "pcm_s24le", pcm("PCM_24"), lossless=True),
    "wav-s32": Format("wav", 8000, "pcm_s32le", pcm("PCM_32"), lossless=True),
    "wav-f32": Format("wav", 16000, "pcm_f32le", pcm("FLOAT"), lossless=True),
    "wav-f64": Format("wav", 22050, "pcm_f64le", pcm("DOUBLE"), lossless=True),
    # Not plain PCM, so these WAVs are decoded by FFmpeg rather than libsndfile.
    "wav-mulaw": Format("wav", 8000, "pcm_mulaw", mulaw),
    "wav-mp3": Format("wav", 44100, "mp3", lossy("wav", "libmp3lame"), ("libmp3lame",)),
    "flac-s16": Format("flac", 48000, "flac", pcm("PCM_16", "FLAC"), lossless=True),
    "flac-s24": Format("flac", 44100, "flac", pcm("PCM_24", "FLAC"), lossless=True),
    "mp3": Format("mp3", 44100, "mp3", lossy("mp3", "libmp3lame"), ("libmp3lame",)),
    "m4a-aac": Format("m4a", 44100, "aac", lossy("ipod", "aac"), ("aac",)),
    "ogg-vorbis": Format("ogg", 44100, "vorbis", vorbis),
    "opus": Format("opus", 48000, "opus", lossy("ogg", "libopus"), ("libopus",)),
    "mp4-mpeg4-aac": Format("mp4", 44100, "aac", lossy("mp4", "aac", "mpeg4"), ("aac", "mpeg4")),
    "mkv-h264-opus": Format(
        "mkv", 48000, "opus", lossy("matroska", "libopus", "libx264"), ("libopus", "libx264")
    ),
    "webm-vp8-opus": Format(
        "webm", 48000, "opus", lossy("webm", "libopus", "libvpx"), ("libopus", "libvpx")
    ),
}


LOSSLESS = [key for key, spec in FORMATS.items() if spec.lossless]
Made = tuple[Format, Path, npt.NDArray[np.float32] | None]


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Made]:
    """`make(key)`: a stereo file of the test signal in one format, written once per module,
    with its exact native samples (S, 2) if lossless."""
    cache: dict[str, Made] = {}

    def make(key: str) -> Made:
        spec = FORMATS[key]
        missing = [name for name in spec.needs if not has_encoder(name)]
        if missing:
            pytest.skip(f"this PyAV build has no {', '.join(missing)} encoder")
        if key not in cache:
            path = tmp_path_factory.mktemp(key) / f"signal.{spec.ext}"
            cache[key] = spec, path, spec.write(path, stereo(signal(spec.rate)), spec.rate)
        return cache[key]

    return make


@pytest.mark.parametrize("key", list(FORMATS))
def test_format_decodes_with_right_duration(made: Callable[[str], Made], key: str) -> None:
    spec, path, exact = made(key)
    out = load_audio(path)
    assert out.dtype == np.float32
    assert out.ndim == 1
    if exact is None:
        assert abs(len(out) / SAMPLE_RATE - SECONDS) <= LOSSY_TOLERANCE_S
    else:
        assert len(out) == len(resampled(mixdown(exact), spec.rate))


@pytest.mark.parametrize("key", list(FORMATS))
def test_format_keeps_the_tone(made: Callable[[str], Made], key: str) -> None:
    _, path, _ = made(key)
    assert dominant_hz(load_audio(path)) == pytest.approx(440, abs=1)


@pytest.mark.parametrize("key", LOSSLESS)
def test_lossless_format_equals_resampled_source(made: Callable[[str], Made], key: str) -> None:
    spec, path, exact = made(key)
    assert exact is not None
    expected = resampled(mixdown(exact), spec.rate)
    np.testing.assert_allclose(load_audio(path), expected, rtol=0, atol=FLOAT_TOLERANCE)


@pytest.mark.parametrize("key", list(FORMATS))
def test_format_info(made: Callable[[str], Made], key: str) -> None:
    spec, path, _ = made(key)
    info = audio_info(path)
    assert (info.sample_rate, info.channels, info.codec) == (spec.rate, 2, spec.codec)
    assert info.duration_s == pytest.approx(SECONDS, abs=LOSSY_TOLERANCE_S)


@pytest.mark.parametrize("key", list(FORMATS))
def test_bytes_decode_like_the_file(made: Callable[[str], Made], key: str) -> None:
    _, path, _ = made(key)
    np.testing.assert_array_equal(load_audio(path.read_bytes()), load_audio(path))
    assert audio_info(path.read_bytes()) == audio_info(path)


# --- rates, channels, streaming -----------------------------------------------------------------


@pytest.mark.parametrize("rate", RATES)
def test_rate_is_converted_to_16k(tmp_path: Path, rate: int) -> None:
    path = tmp_path / "mono.wav"
    exact = write_pcm(path, signal(rate)[:, None], rate, "PCM_16")
    out = load_audio(path)
    np.testing.assert_allclose(out, resampled(exact[:, 0], rate), rtol=0, atol=FLOAT_TOLERANCE)
    assert len(out) == round(SECONDS * SAMPLE_RATE)
    assert dominant_hz(out) == pytest.approx(440, abs=1)


SURROUND = (300, 500, 700, 900, 1100, 1300)  # one tone per 5.1 channel: FL FR FC LFE BL BR


@pytest.mark.parametrize(("ext", "subtype"), [("wav", "PCM_16"), ("flac", "PCM_24")])
@pytest.mark.parametrize("channel", range(6))
def test_channel_picks_its_tone_in_5_1(
    tmp_path: Path, ext: str, subtype: str, channel: int
) -> None:
    path = tmp_path / f"surround.{ext}"
    write_pcm(path, tones(44100, SURROUND), 44100, subtype, ext.upper())
    out = load_audio(path, options=AudioOptions(channel=channel))
    assert dominant_hz(out) == pytest.approx(SURROUND[channel], abs=1)
    assert max(level_at(out, f) for f in SURROUND if f != SURROUND[channel]) < 1e-3


def test_mixdown_of_5_1_averages_all_channels(tmp_path: Path) -> None:
    path = tmp_path / "surround.wav"
    exact = write_pcm(path, tones(48000, SURROUND), 48000, "PCM_16")
    out = load_audio(path)
    np.testing.assert_allclose(out, resampled(mixdown(exact), 48000), rtol=0, atol=FLOAT_TOLERANCE)
    assert min(level_at(out, f) for f in SURROUND) > 0.9


# Packed integer (WAV), packed s32 (24-bit FLAC) and planar float (AAC, MP3) decoder outputs.
STEREO_WRITERS = {
    "wav": pcm("PCM_16"),
    "flac": pcm("PCM_24", "FLAC"),
    "m4a": lossy("ipod", "aac"),
    "mp3": lossy("mp3", "libmp3lame"),
}


@pytest.mark.parametrize("ext", list(STEREO_WRITERS))
@pytest.mark.parametrize(("channel", "hz", "other"), [(0, 440, 660), (1, 660, 440)])
def test_stereo_channel_selection(
    tmp_path: Path, ext: str, channel: int, hz: int, other: int
) -> None:
    path = tmp_path / f"stereo.{ext}"
    STEREO_WRITERS[ext](path, tones(44100, (440, 660)), 44100)
    out = load_audio(path, options=AudioOptions(channel=channel))
    assert dominant_hz(out) == pytest.approx(hz, abs=1)
    assert level_at(out, other) < 1e-2  # lossy codecs leak a little between channels


def test_stereo_mixdown_keeps_both_tones(tmp_path: Path) -> None:
    path = tmp_path / "stereo.m4a"
    encode(path, "ipod", "aac", 44100, tones(44100, (440, 660)))
    out = load_audio(path)
    assert min(level_at(out, 440), level_at(out, 660)) > 0.9


def test_channel_out_of_range_names_file_and_count(tmp_path: Path) -> None:
    path = tmp_path / "stereo.wav"
    write_pcm(path, tones(16000, (440, 660)), 16000, "PCM_16")
    with pytest.raises(
        AudioError, match=r"stereo\.wav: has 2 channel\(s\), so there is no channel 2"
    ):
        load_audio(path, options=AudioOptions(channel=2))


@pytest.fixture(scope="module")
def ten_seconds(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, npt.NDArray[np.float32]]:
    """10 s of 44.1 kHz stereo 16-bit WAV and its exact native samples (S, 2)."""
    path = tmp_path_factory.mktemp("long") / "ten.wav"
    return path, write_pcm(path, stereo(signal(44100, 10.0)), 44100, "PCM_16")


@pytest.mark.parametrize("chunk_seconds", [0.3, 1.0, 7.0, 30.0])
def test_stream_chunks_have_the_requested_size(
    ten_seconds: tuple[Path, npt.NDArray[np.float32]], chunk_seconds: float
) -> None:
    chunks = list(stream_audio(ten_seconds[0], options=AudioOptions(chunk_seconds=chunk_seconds)))
    size = round(chunk_seconds * SAMPLE_RATE)
    assert [len(c) for c in chunks[:-1]] == [size] * (len(chunks) - 1)
    assert 0 < len(chunks[-1]) <= size
    assert sum(len(c) for c in chunks) == 10 * SAMPLE_RATE


@pytest.mark.parametrize("chunk_seconds", [0.3, 1.0, 7.0])
def test_stream_equals_one_shot_resampling(
    ten_seconds: tuple[Path, npt.NDArray[np.float32]], chunk_seconds: float
) -> None:
    path, exact = ten_seconds
    chunks = stream_audio(path, options=AudioOptions(chunk_seconds=chunk_seconds))
    expected = soxr.resample(mixdown(exact), 44100, SAMPLE_RATE, quality=RESAMPLE_QUALITY)
    np.testing.assert_allclose(np.concatenate(list(chunks)), expected, rtol=0, atol=FLOAT_TOLERANCE)


def test_array_streams_like_the_same_file(
    ten_seconds: tuple[Path, npt.NDArray[np.float32]],
) -> None:
    path, exact = ten_seconds
    ints = np.round(exact * 32768).astype(np.int16)
    from_array = load_audio(ints, sample_rate=44100)
    np.testing.assert_allclose(from_array, load_audio(path), rtol=0, atol=FLOAT_TOLERANCE)


def test_audio_info_reads_the_header(ten_seconds: tuple[Path, npt.NDArray[np.float32]]) -> None:
    assert audio_info(ten_seconds[0]) == AudioInfo(
        duration_s=10.0, sample_rate=44100, channels=2, codec="pcm_s16le", container="wav"
    )


# --- arrays and options -------------------------------------------------------------------------


def test_int16_array_is_scaled_by_1_over_32768() -> None:
    ints = np.array([-32768, -16384, 0, 1, 32767] * 100, np.int16)
    np.testing.assert_array_equal(load_audio(ints, sample_rate=16000), ints / np.float32(32768))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_float_array_is_taken_as_is(dtype: type[np.floating]) -> None:
    samples = np.linspace(-1.5, 1.5, 1000).astype(dtype)  # out of [-1, 1] too: no clipping
    np.testing.assert_array_equal(
        load_audio(samples, sample_rate=16000), samples.astype(np.float32)
    )


def test_array_channels_select_and_mix() -> None:
    samples = tones(48000, (440, 660)).astype(np.float32)
    left = load_audio(samples, sample_rate=48000, options=AudioOptions(channel=0))
    mixed = load_audio(samples, sample_rate=48000)
    np.testing.assert_allclose(left, resampled(samples[:, 0].copy(), 48000), rtol=0, atol=1e-7)
    np.testing.assert_allclose(mixed, resampled(mixdown(samples), 48000), rtol=0, atol=1e-7)


def test_array_shorter_than_one_output_sample_fails() -> None:
    with pytest.raises(AudioError, match=r"<array>: no audio left at 16000 Hz"):
        load_audio(np.zeros(1, np.float32), sample_rate=48000)


@pytest.mark.parametrize(
    ("array", "rate", "message"),
    [
        (np.zeros(100, np.float32), None, r"<array>: sample_rate is required for arrays"),
        (np.zeros(100, np.float32), 0, r"<array>: sample_rate must be positive, not 0"),
        (np.zeros(100, np.float32), -16000, r"<array>: sample_rate must be positive"),
        (np.zeros(100, np.float32), 16000.0, r"<array>: sample_rate must be an integer in Hz"),
        (np.zeros(100, np.float32), True, r"<array>: sample_rate must be an integer in Hz"),
        (np.zeros(100, np.int32), 16000, r"<array>: unsupported dtype int32; pass int16"),
        (np.zeros(100, np.uint8), 16000, r"<array>: unsupported dtype uint8"),
        (np.zeros(100, np.complex64), 16000, r"<array>: unsupported dtype complex64"),
        (np.zeros((10, 2, 2), np.float32), 16000, r"<array>: unsupported shape \(10, 2, 2\)"),
        (np.zeros((2, 16000), np.float32), 16000, r"more channels than samples.*array\.T"),
        (np.zeros(0, np.float32), 16000, r"<array>: holds no samples \(shape \(0,\)\)"),
    ],
)
def test_bad_array_arguments(array: np.ndarray, rate: int | None, message: str) -> None:
    with pytest.raises(AudioError, match=message):
        stream_audio(array, sample_rate=rate)


def test_array_channel_out_of_range() -> None:
    with pytest.raises(AudioError, match=r"<array>: has 2 channel\(s\), so there is no channel 3"):
        stream_audio(np.zeros((100, 2), np.float32), sample_rate=16000, options=AudioOptions(3))


@pytest.mark.parametrize(("value", "at"), [(np.nan, 1.0), (np.inf, 2.5), (-np.inf, 0.0)])
def test_non_finite_array_fails_naming_the_time(value: float, at: float) -> None:
    samples = np.zeros(3 * 16000, np.float32)
    samples[round(at * 16000)] = value
    with pytest.raises(AudioError, match=rf"<array>: contains non-finite samples .* at {at:.3f} s"):
        load_audio(samples, sample_rate=16000)


def test_sample_rate_for_a_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "a.wav"
    write_pcm(path, signal(16000)[:, None], 16000, "PCM_16")
    with pytest.raises(AudioError, match=r"a\.wav: sample_rate is only for numpy arrays"):
        stream_audio(path, sample_rate=16000)


def test_unsupported_source_type() -> None:
    with pytest.raises(AudioError, match=r"<list>: unsupported audio source"):
        stream_audio([0.0, 0.1], sample_rate=16000)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"channel": -1}, r"channel must be None or an integer >= 0, not -1"),
        ({"channel": True}, r"channel must be None or an integer >= 0, not True"),
        ({"channel": 1.0}, r"channel must be None or an integer >= 0, not 1\.0"),
        ({"chunk_seconds": 0}, r"chunk_seconds must be .* not 0"),
        ({"chunk_seconds": -1.0}, r"chunk_seconds must be .* not -1\.0"),
        ({"chunk_seconds": 1e-5}, r"chunk_seconds must be .* not 1e-05"),
        ({"chunk_seconds": float("nan")}, r"chunk_seconds must be .* not nan"),
        ({"chunk_seconds": float("inf")}, r"chunk_seconds must be .* not inf"),
        ({"chunk_seconds": "30"}, r"chunk_seconds must be .* not '30'"),
    ],
)
def test_options_are_validated(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AudioOptions(**kwargs)  # type: ignore[arg-type]


# --- broken inputs: each fails alone with a message naming it -----------------------------------


@pytest.fixture
def wav_bytes(tmp_path: Path) -> bytes:
    """2.5 s of 16 kHz mono 16-bit WAV (44-byte header)."""
    path = tmp_path / "ok.wav"
    write_pcm(path, signal(16000)[:, None], 16000, "PCM_16")
    return path.read_bytes()


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(AudioError, match=r"nope\.wav: no such file"):
        stream_audio(tmp_path / "nope.wav")


def test_directory(tmp_path: Path) -> None:
    with pytest.raises(AudioError, match=r": is a directory, not an audio file"):
        stream_audio(tmp_path)


def test_empty_file(tmp_path: Path) -> None:
    (tmp_path / "empty.wav").touch()
    with pytest.raises(AudioError, match=r"empty\.wav: the file is empty \(0 bytes\)"):
        audio_info(tmp_path / "empty.wav")


def test_empty_bytes() -> None:
    with pytest.raises(AudioError, match=r"<bytes>: no data \(0 bytes\)"):
        stream_audio(b"")


def test_header_only_wav(tmp_path: Path, wav_bytes: bytes) -> None:
    path = tmp_path / "header.wav"
    path.write_bytes(wav_bytes[:44])
    with pytest.raises(
        AudioError, match=r"header\.wav: no decodable audio \(the stream holds no samples\)"
    ):
        load_audio(path)


def test_truncated_wav_yields_the_samples_present(wav_bytes: bytes) -> None:
    whole = load_audio(wav_bytes)
    cut = load_audio(wav_bytes[: 44 + 2 * 16000 + 1])  # 1 s and half a sample
    assert len(cut) == 16000
    np.testing.assert_allclose(cut[:15000], whole[:15000], rtol=0, atol=FLOAT_TOLERANCE)


def test_wav_of_unknown_length_is_read_to_the_end(wav_bytes: bytes) -> None:
    """Streaming writers leave the data size 0; libsndfile then sees no samples, FFmpeg reads on."""
    data = bytearray(wav_bytes)
    at = data.index(b"data")
    data[at + 4 : at + 8] = bytes(4)
    np.testing.assert_array_equal(load_audio(bytes(data)), load_audio(wav_bytes))


@pytest.mark.filterwarnings("ignore:.*damaged packet")  # the cut may split the last frame
@pytest.mark.parametrize("ext", ["mp3", "flac"])
def test_truncated_file_yields_its_start_and_warns(tmp_path: Path, ext: str) -> None:
    path = tmp_path / f"whole.{ext}"
    if ext == "mp3":
        encode(path, "mp3", "libmp3lame", 44100, stereo(signal(44100)))
    else:
        write_pcm(path, stereo(signal(44100)), 44100, "PCM_16", "FLAC")
    data = path.read_bytes()
    with pytest.warns(UserWarning, match=r"<bytes>: decoded .* of the 2\.50 s its header declares"):
        cut = load_audio(data[: len(data) // 2])
    assert 0.9 < len(cut) / SAMPLE_RATE < 1.6
    start = load_audio(data)[: SAMPLE_RATE // 2]
    np.testing.assert_allclose(cut[: SAMPLE_RATE // 2], start, rtol=0, atol=FLOAT_TOLERANCE)


def test_damaged_mp3_packets_are_skipped_with_a_warning(tmp_path: Path) -> None:
    path = tmp_path / "damaged.mp3"
    encode(path, "mp3", "libmp3lame", 44100, stereo(signal(44100)))
    data = bytearray(path.read_bytes())
    third = len(data) // 3
    data[third : third + 2000] = np.random.default_rng(0).integers(0, 256, 2000, np.uint8).tobytes()
    path.write_bytes(data)
    with pytest.warns(
        UserWarning, match=r"damaged\.mp3: \d+ damaged packet\(s\) could not be decoded"
    ):
        out = load_audio(path)
    assert 2.0 < len(out) / SAMPLE_RATE <= SECONDS  # the bit reservoir costs a few more frames


@pytest.mark.parametrize("name", ["noise.wav", "noise.mp3", "noise"])
def test_random_bytes(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(np.random.default_rng(1).integers(0, 256, 50_000, np.uint8).tobytes())
    with pytest.raises(AudioError, match=rf"{name}: not a media file FFmpeg can read"):
        load_audio(path)
    with pytest.raises(AudioError, match=r"<bytes>: not a media file FFmpeg can read"):
        audio_info(path.read_bytes())


def test_content_decides_not_the_extension(tmp_path: Path, wav_bytes: bytes) -> None:
    (tmp_path / "really-a-wav.mp3").write_bytes(wav_bytes)
    encode(tmp_path / "a.mp3", "mp3", "libmp3lame", 16000, signal(16000)[:, None])
    (tmp_path / "really-an-mp3.wav").write_bytes((tmp_path / "a.mp3").read_bytes())
    np.testing.assert_array_equal(load_audio(tmp_path / "really-a-wav.mp3"), load_audio(wav_bytes))
    assert audio_info(tmp_path / "really-an-mp3.wav").codec == "mp3"
    assert dominant_hz(load_audio(tmp_path / "really-an-mp3.wav")) == pytest.approx(440, abs=1)


def test_video_without_audio(tmp_path: Path) -> None:
    path = tmp_path / "silent-film.mp4"
    with av.open(str(path), "w") as out:
        picture = out.add_stream("mpeg4", rate=10)
        picture.width, picture.height, picture.pix_fmt = 64, 48, "yuv420p"
        for i in range(5):
            frame = av.VideoFrame.from_ndarray(np.zeros((48, 64, 3), np.uint8), format="rgb24")
            frame.pts = i
            out.mux(picture.encode(frame))
        out.mux(picture.encode(None))
    with pytest.raises(AudioError, match=r"silent-film\.mp4: has no audio stream \(found: video\)"):
        load_audio(path)


def test_image(tmp_path: Path) -> None:
    (tmp_path / "picture.wav").write_bytes(png())
    with pytest.raises(AudioError, match=r"picture\.wav: has no audio stream \(found: video\)"):
        audio_info(tmp_path / "picture.wav")


def test_huge_declared_wav_length_is_not_allocated(wav_bytes: bytes) -> None:
    data = bytearray(wav_bytes)
    data[4:8] = struct.pack("<I", 0xFFFFFFFF)  # RIFF size
    at = data.index(b"data")
    data[at + 4 : at + 8] = struct.pack("<I", 0xFFFFFFF0)  # ~4 GB of samples declared
    tracemalloc.start()
    try:
        out = load_audio(bytes(data))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(out) == round(SECONDS * SAMPLE_RATE)
    assert peak < 5_000_000
    # FFmpeg clamps the declared size to the input's size, so the probe is right too.
    assert audio_info(bytes(data)).duration_s == SECONDS


@pytest.mark.parametrize(
    ("value", "subtype"), [(np.nan, "FLOAT"), (np.inf, "FLOAT"), (-np.inf, "DOUBLE")]
)
def test_non_finite_float_wav(tmp_path: Path, value: float, subtype: str) -> None:
    samples = stereo(signal(16000))
    samples[24000, 1] = value
    path = tmp_path / "broken-float.wav"
    sf.write(path, samples, 16000, subtype=subtype)
    with pytest.raises(
        AudioError,
        match=r"broken-float\.wav: contains non-finite samples \(NaN or inf\), the first at 1\.500 s",
    ):
        load_audio(path)


def test_a_broken_input_fails_alone(tmp_path: Path, wav_bytes: bytes) -> None:
    (tmp_path / "bad.wav").write_bytes(b"RIFF" + bytes(100))
    results: list[int | str] = []
    for source in (wav_bytes, tmp_path / "bad.wav", wav_bytes):
        try:
            results.append(len(load_audio(source)))
        except AudioError as error:
            results.append(str(error).split(":")[0])
    assert results == [40000, str(tmp_path / "bad.wav"), 40000]


# --- memory -------------------------------------------------------------------------------------


def write_long_flac(path: Path, minutes: float, rate: int = 48000) -> None:
    """Stereo 16-bit FLAC of a slowly gliding tone, written 10 s at a time (never held whole)."""
    block = 10 * rate
    with sf.SoundFile(path, "w", rate, 2, subtype="PCM_16", format="FLAC") as out:
        for start in range(0, round(minutes * 60 * rate), block):
            t = (start + np.arange(block)) / rate
            tone = 0.3 * np.sin(2 * np.pi * (300 + t / 10) * t)
            out.write(np.round(stereo(tone) * 32767).astype(np.int16))


def peak_numpy_bytes(path: Path, chunk_seconds: float) -> tuple[int, float]:
    """(peak traced allocation while streaming, seconds of output)."""
    tracemalloc.start()
    try:
        seconds = 0.0
        for chunk in stream_audio(path, options=AudioOptions(chunk_seconds=chunk_seconds)):
            seconds += len(chunk) / SAMPLE_RATE
        return tracemalloc.get_traced_memory()[1], seconds
    finally:
        tracemalloc.stop()


def test_streaming_memory_is_bounded(tmp_path: Path) -> None:
    path = tmp_path / "three-minutes.flac"
    write_long_flac(path, 3)
    peak, seconds = peak_numpy_bytes(path, 5.0)
    assert seconds == 180
    # Whole, the file is 69 MB as native float32 and 11.5 MB at 16 kHz; a stream holds one 5 s
    # chunk (320 kB) and about a second of native audio (384 kB), plus their copies in flight.
    assert peak < 4_000_000


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096


@pytest.mark.slow
def test_twenty_minute_stream_keeps_rss_flat(tmp_path: Path) -> None:
    if not Path("/proc/self/statm").exists():
        pytest.skip("needs /proc/self/statm (Linux) to read the resident set size")
    path = tmp_path / "twenty-minutes.flac"
    write_long_flac(path, 20)
    chunks = stream_audio(path, options=AudioOptions(chunk_seconds=30.0))
    next(chunks)
    baseline = rss_bytes()
    growth = 0
    seconds = 30.0
    for chunk in chunks:
        growth = max(growth, rss_bytes() - baseline)
        seconds += len(chunk) / SAMPLE_RATE
    assert seconds == 20 * 60
    # Whole, the output would be 77 MB and the native float32 audio 460 MB.
    assert growth < 20_000_000


# --- the real-speech corpus ---------------------------------------------------------------------


def decoded_duration(entry: dict[str, object]) -> float:
    """The decoded length the manifest states: `duration_s`, unless a note gives the decoded one.

    For the MP3, `duration_s` is ffprobe's container duration, which counts the encoder delay;
    its note records the decoded length (5.547 s, the same as the WAV it was made from).
    """
    found = re.search(r"decoded length (\d+(?:\.\d+)?) s", str(entry.get("notes", "")))
    return float(found.group(1)) if found else float(str(entry["duration_s"]))


def manifest(audio_dir: Path) -> list[dict[str, object]]:
    entries: list[dict[str, object]] = json.loads((audio_dir / "manifest.json").read_text())
    return entries


def test_corpus_files_decode_to_their_listed_duration(audio_dir: Path) -> None:
    wrong = {}
    for entry in manifest(audio_dir):
        seconds = len(load_audio(audio_dir / str(entry["path"]))) / SAMPLE_RATE
        if abs(seconds - decoded_duration(entry)) > 0.02:
            wrong[entry["path"]] = (seconds, decoded_duration(entry))
    assert wrong == {}


def test_corpus_headers_match_the_manifest(audio_dir: Path) -> None:
    for entry in manifest(audio_dir):
        info = audio_info(audio_dir / str(entry["path"]))
        listed = (entry["sample_rate"], entry["channels"], entry["codec"], entry["container"])
        assert (info.sample_rate, info.channels, info.codec, info.container) == listed


def test_corpus_stereo_channels_are_kept_apart(audio_dir: Path) -> None:
    path = audio_dir / "en" / "fasterwhisper_stereo_diarization.wav"
    left = load_audio(path, options=AudioOptions(channel=0))
    right = load_audio(path, options=AudioOptions(channel=1))
    native, _ = sf.read(path, dtype="float32")
    np.testing.assert_array_equal(left, native[:, 0])
    np.testing.assert_array_equal(right, native[:, 1])
    np.testing.assert_allclose(load_audio(path), (left + right) / 2, rtol=0, atol=1e-7)


def test_corpus_24_bit_flac_matches_libsndfile(audio_dir: Path) -> None:
    """PyAV's decode of the 44.1 kHz stereo 24-bit FLAC, streamed in 0.5 s chunks, against an
    independent decoder (libsndfile) and one-shot resampling."""
    path = audio_dir / "en" / "whisper_jfk.flac"
    native, rate = sf.read(path, dtype="float32")
    chunks = stream_audio(path, options=AudioOptions(chunk_seconds=0.5))
    np.testing.assert_allclose(
        np.concatenate(list(chunks)), resampled(mixdown(native), rate), rtol=0, atol=FLOAT_TOLERANCE
    )


def test_corpus_mp3_matches_its_wav(audio_dir: Path) -> None:
    mp3 = load_audio(audio_dir / "zh" / "funasr_asr_example.mp3")
    wav = load_audio(audio_dir / "zh" / "funasr_asr_example.wav")
    assert len(mp3) == len(wav)
    assert np.corrcoef(mp3, wav)[0, 1] > 0.999


def test_warnings_are_not_raised_for_clean_corpus_files(audio_dir: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for entry in manifest(audio_dir):
            load_audio(audio_dir / str(entry["path"]))
