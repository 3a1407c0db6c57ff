"""A real `zhuanxie serve` (uvicorn on loopback, in a subprocess) called with the official
`openai` client: every response format, word and segment timestamps as the client's typed
objects, the extension fields, and errors raised with our message."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Literal

import httpx
import numpy as np
import openai
import pytest
import soundfile as sf

from zhuanxie.cli import build_engine, build_postprocessor
from zhuanxie.engine import AudioInput, Engine
from zhuanxie.generator import write_random_punctuation_model
from zhuanxie.result import Transcript
from zhuanxie.settings import model_id
from zhuanxie.writers import to_srt, to_vtt

API_KEY = "test-key"
NO_VAD = {"vad": False}  # noise: the VAD would find no speech in it


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def model_dir(tiny_model_dir: Callable[..., Path]) -> Path:
    return tiny_model_dir("seaco-paraformer-tiny")


@pytest.fixture(scope="module")
def punc_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_random_punctuation_model(tmp_path_factory.mktemp("punc"), "ct-punc-zh-tiny", 0)


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, model_dir: Path, punc_dir: Path
) -> Iterator[str]:
    """`zhuanxie serve` in a subprocess; its base URL once /ready answers."""
    port = free_port()
    data = tmp_path_factory.mktemp("data")
    log = (data / "server.log").open("w")
    command = [
        sys.executable,
        "-m",
        "zhuanxie.cli",
        "serve",
        "--host=127.0.0.1",
        f"--port={port}",
        f"--model={model_dir}",
        f"--punc-model={punc_dir}",
        f"--data-dir={data}",
        "--no-ui",
        "--threads=1",
        "--max-upload-mb=2",
    ]
    env = {**os.environ, "ZHUANXIE_API_KEY": API_KEY}
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if process.poll() is not None:
                pytest.fail(f"zhuanxie serve exited: {(data / 'server.log').read_text()}")
            try:
                if httpx.get(f"{url}/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        else:
            pytest.fail(f"zhuanxie serve not ready: {(data / 'server.log').read_text()}")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


@pytest.fixture(scope="module")
def client(server: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server}/v1", api_key=API_KEY, max_retries=0)


@pytest.fixture(scope="module")
def reference(model_dir: Path, punc_dir: Path) -> Engine:
    post = build_postprocessor(str(punc_dir), False)
    engine: Engine = build_engine(str(model_dir), "cpu", "float32", "silero", 20.0, None, post)
    return engine


@pytest.fixture(scope="module")
def noise(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("audio") / "noise.wav"
    rng = np.random.default_rng(4)
    sf.write(path, rng.normal(0, 0.1, 40_000).astype(np.float32), 16000)
    return path


@pytest.fixture(scope="module")
def want(reference: Engine, noise: Path) -> Transcript:
    transcript = reference.transcribe(AudioInput(noise, vad=False))
    assert transcript.text
    return transcript


def test_models(client: openai.OpenAI, model_dir: Path) -> None:
    assert [m.id for m in client.models.list()] == [model_id(str(model_dir))]


def test_json(client: openai.OpenAI, noise: Path, want: Transcript) -> None:
    with noise.open("rb") as f:
        result = client.audio.transcriptions.create(
            model="whisper-1", file=f, language="zh", prompt="ignored", extra_body=NO_VAD
        )
    assert isinstance(result, openai.types.audio.Transcription)
    assert result.text == want.text
    assert result.usage is not None
    assert result.usage.type == "duration"


@pytest.mark.parametrize("fmt", ["text", "srt", "vtt"])
def test_plain_formats(
    client: openai.OpenAI, noise: Path, want: Transcript, fmt: Literal["text", "srt", "vtt"]
) -> None:
    with noise.open("rb") as f:
        body = client.audio.transcriptions.create(
            model="whisper-1", file=f, response_format=fmt, extra_body=NO_VAD
        )
    assert isinstance(body, str)
    assert body == {"text": want.text + "\n", "srt": to_srt(want), "vtt": to_vtt(want)}[fmt]


def test_verbose_json_words_and_segments(
    client: openai.OpenAI, noise: Path, want: Transcript
) -> None:
    with noise.open("rb") as f:
        result = client.audio.transcriptions.create(
            model="whisper-1",
            file=f,
            response_format="verbose_json",
            timestamp_granularities=["word", "segment"],
            temperature=0.0,
            extra_body=NO_VAD,
        )
    assert isinstance(result, openai.types.audio.TranscriptionVerbose)
    assert (result.text, result.language) == (want.text, "chinese")
    assert result.duration == pytest.approx(want.duration, abs=1e-3)
    assert result.segments is not None
    assert result.words is not None
    assert [type(s).__name__ for s in result.segments] == ["TranscriptionSegment"] * len(
        want.segments
    )
    for got, seg in zip(result.segments, want.segments, strict=True):
        assert (got.text, got.tokens) == (seg.text, list(seg.token_ids))
        assert got.start == pytest.approx(seg.start, abs=1e-3)
        assert isinstance(got.avg_logprob, float)
        assert isinstance(got.compression_ratio, float)
        assert isinstance(got.no_speech_prob, float)
        assert isinstance(got.seek, int)
    assert [(w.word, w.start, w.end) for w in result.words] == [
        (t.text, round(t.start, 3), round(t.end, 3)) for t in want.tokens
    ]
    with noise.open("rb") as f:
        segments_only = client.audio.transcriptions.create(
            model="whisper-1",
            file=f,
            response_format="verbose_json",
            timestamp_granularities=["segment"],
            extra_body=NO_VAD,
        )
    assert segments_only.words is None
    assert segments_only.segments == result.segments


def test_extension_fields(
    client: openai.OpenAI, reference: Engine, noise: Path, want: Transcript
) -> None:
    plain = reference.transcribe(
        AudioInput(noise, vad=False, punctuation=False, hotwords=("魔搭",))
    )
    with noise.open("rb") as f:
        result = client.audio.transcriptions.create(
            model="whisper-1",
            file=f,
            extra_body={"vad": False, "punc": False, "hotwords": "魔搭"},
        )
    assert result.text == plain.text != want.text


def test_errors_carry_our_message(client: openai.OpenAI, server: str, tmp_path: Path) -> None:
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"definitely not audio")
    with bad.open("rb") as f, pytest.raises(openai.BadRequestError) as caught:
        client.audio.transcriptions.create(model="whisper-1", file=f)
    assert caught.value.status_code == 400
    assert "bad.wav: not a media file" in caught.value.message
    assert caught.value.code == "invalid_audio"
    assert caught.value.param == "file"

    with bad.open("rb") as f, pytest.raises(openai.BadRequestError) as caught:
        client.audio.transcriptions.create(model="whisper-1", file=f, language="en")
    assert "this model transcribes chinese (zh) only" in caught.value.message

    big = tmp_path / "big.wav"
    big.write_bytes(b"\0" * (3 * 2**20))
    with big.open("rb") as f, pytest.raises(openai.APIStatusError) as status:
        client.audio.transcriptions.create(model="whisper-1", file=f)
    assert status.value.status_code == 413
    assert "limit" in status.value.message

    stranger = openai.OpenAI(base_url=f"{server}/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as denied:
        stranger.models.list()
    assert "API key" in denied.value.message
