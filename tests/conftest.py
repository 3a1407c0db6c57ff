"""Shared fixtures: generated tiny model directories and the real-speech corpus."""

from __future__ import annotations

import os
import wave as wavfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from zhuanxie.engine import Engine, EngineOptions
from zhuanxie.generator import write_random_model, write_random_punctuation_model
from zhuanxie.postprocess import PostProcessor
from zhuanxie.punctuation import Punctuator, load_punctuation_model
from zhuanxie.recognizer import load_model
from zhuanxie.service import Service

TINY_ARCHS = ("paraformer-tiny", "seaco-paraformer-tiny", "bicif-paraformer-tiny")
DEFAULT_AUDIO_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "audio"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip `slow` tests unless a -m expression selects tests explicitly (e.g. `-m slow`)."""
    if config.getoption("markexpr"):
        return
    skip = pytest.mark.skip(reason="slow: run with -m slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """Factory `make(arch, seed=0) -> Path` of generated model dirs, written once per session."""
    made: dict[tuple[str, int], Path] = {}

    def make(arch: str, seed: int = 0) -> Path:
        if arch not in TINY_ARCHS:
            raise ValueError(f"tiny_model_dir makes only {TINY_ARCHS}, not {arch!r}")
        if (arch, seed) not in made:
            out = tmp_path_factory.mktemp(f"{arch}-seed{seed}")
            made[arch, seed] = write_random_model(out, arch, seed)
        return made[arch, seed]

    return make


@pytest.fixture(scope="session")
def audio_dir() -> Path:
    """The shared real-speech corpus (`ZHUANXIE_TEST_AUDIO` overrides its location)."""
    path = Path(os.environ.get("ZHUANXIE_TEST_AUDIO", DEFAULT_AUDIO_DIR))
    if not path.is_dir():
        pytest.skip(f"test audio not found at {path}; set ZHUANXIE_TEST_AUDIO to its folder")
    return path


def read_wav(path: Path) -> np.ndarray:
    """A 16-bit PCM WAV file as float32 samples in [-1, 1]."""
    with wavfile.open(str(path)) as f:
        assert f.getframerate() == 16000, path
        assert f.getnchannels() == 1, path
        frames = f.readframes(f.getnframes())
    return np.frombuffer(frames, dtype=np.int16).astype(np.float32) / 32768


@pytest.fixture(scope="session")
def speech_clips(audio_dir: Path) -> list[np.ndarray]:
    """The 16 kHz mono Mandarin recordings of the shared corpus (1.8 s to 13 s)."""
    clips = []
    for path in sorted((audio_dir / "zh").glob("*.wav")):
        with wavfile.open(str(path)) as f:
            if f.getframerate() == 16000 and f.getnchannels() == 1 and f.getnframes() < 16000 * 20:
                clips.append(read_wav(path))
    assert len(clips) >= 5, f"expected the Mandarin clips in {audio_dir / 'zh'}"
    return clips


@pytest.fixture(scope="module")
def punctuated_service(
    tiny_model_dir: Callable[..., Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    """A service on the tiny SeACo model with a tiny punctuation model, without VAD."""
    punc = write_random_punctuation_model(tmp_path_factory.mktemp("punc"), "ct-punc-zh-tiny", 0)
    engine = Engine(
        load_model(tiny_model_dir("seaco-paraformer-tiny")),
        EngineOptions(vad="none"),
        postprocessor=PostProcessor(Punctuator(load_punctuation_model(punc))),
    )
    with Service(engine) as service:
        yield service
