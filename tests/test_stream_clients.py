"""Real clients over a real socket: the third-party `funasr-client` package (written for FunASR's
runtime server) in every mode, and the `websockets` library on /v1/stream, against uvicorn.

funasr-client's asyncio API is used: its synchronous client (0.1.6) deadlocks on leaving its
`with` block whatever the server (`close` holds a non-reentrant lock that `signal_close` takes
again), so `file_asr` never returns.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
import wave
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import uvicorn
from fastapi import FastAPI
from websockets.sync.client import connect

from zhuanxie.engine import AudioInput
from zhuanxie.service import Service
from zhuanxie.stream_api import stream_router
from zhuanxie.streaming import Final, StreamOptions, StreamSession
from zhuanxie.vad import SAMPLE_RATE, SileroVad

funasr_client = pytest.importorskip("funasr_client")


@pytest.fixture(scope="module")
def service(punctuated_service: Service) -> Service:
    return punctuated_service


@pytest.fixture(scope="module")
def vad() -> SileroVad:
    return SileroVad()


@pytest.fixture(scope="module")
def url(service: Service, vad: SileroVad) -> Iterator[str]:
    """ws://127.0.0.1:<port> of a uvicorn server running the streaming routes."""
    app = FastAPI()
    app.include_router(stream_router(lambda model: service, vad=vad))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    for _ in range(200):
        if server.started:
            break
        time.sleep(0.05)
    assert server.started
    yield f"ws://127.0.0.1:{sock.getsockname()[1]}"
    server.should_exit = True
    thread.join(timeout=10)
    sock.close()


@pytest.fixture(scope="module")
def pcm(speech_clips: list[np.ndarray]) -> bytes:
    silence = np.zeros(int(1.2 * SAMPLE_RATE), np.float32)
    audio = np.concatenate([silence, speech_clips[2], silence, speech_clips[3], silence])
    return np.round(audio * 32768).astype("<i2").tobytes()


@pytest.fixture(scope="module")
def wav_path(pcm: bytes, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("audio") / "speech.wav"
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(SAMPLE_RATE)
        out.writeframes(pcm)
    return path


def finals(service: Service, vad: SileroVad, pcm: bytes, **change: Any) -> list[Final]:
    session = StreamSession(service, vad, replace(StreamOptions(interval=None), **change))
    for i in range(0, len(pcm), 3200):
        session.push(pcm[i : i + 3200])
    return [e for e in session.finish(timeout=60) if isinstance(e, Final)]


@pytest.mark.parametrize("mode", ["2pass", "offline"])
def test_funasr_client_file_asr(
    url: str, wav_path: Path, service: Service, vad: SileroVad, pcm: bytes, mode: str
) -> None:
    hotwords = {"科技": 20}
    merged = asyncio.run(
        funasr_client.async_file_asr(wav_path, f"{url}/", mode=mode, hotwords=hotwords)
    )
    expected = finals(service, vad, pcm, hotwords=("科技",))
    assert expected
    assert merged["text"] == "".join(f.text for f in expected)
    spans = [[round(t.start * 1000), round(t.end * 1000)] for f in expected for t in f.tokens]
    assert merged["timestamp"] == spans


def stream_messages(path: Path, url: str, **options: Any) -> list[dict[str, Any]]:
    async def collect() -> list[dict[str, Any]]:
        return [dict(m) async for m in funasr_client.async_file_asr_stream(path, url, **options)]

    return asyncio.run(collect())


def paced(url: str, pcm: bytes, speed: float = 4.0, **options: Any) -> list[dict[str, Any]]:
    """funasr-client's own client fed 0.6 s chunks at `speed` x real time (as a microphone
    would, only faster), collecting what the server sends until its final message."""
    received: list[dict[str, Any]] = []
    chunk = int(0.6 * SAMPLE_RATE) * 2

    async def run() -> None:
        client = funasr_client.async_funasr_client(
            url, wav_name="paced", audio_fs=SAMPLE_RATE, callback=received.append, **options
        )
        async with client:
            for i in range(0, len(pcm), chunk):
                await client.send(pcm[i : i + chunk])
                await asyncio.sleep(0.6 / speed)

    asyncio.run(run())
    return received


def test_funasr_client_2pass_live_has_online_then_offline_results(
    url: str, pcm: bytes, service: Service, vad: SileroVad
) -> None:
    messages = paced(f"{url}/funasr", pcm, mode="2pass")
    modes = [m["mode"] for m in messages]
    assert "2pass-online" in modes
    offline = [m["text"] for m in messages if m["mode"] == "2pass-offline" and not m["is_final"]]
    assert offline == [f.text for f in finals(service, vad, pcm)]
    assert messages[-1]["is_final"]
    assert all(not m["is_final"] for m in messages[:-1])
    # A segment's live text comes before its final text.
    assert modes.index("2pass-online") < modes.index("2pass-offline")


def test_funasr_client_online(
    url: str, wav_path: Path, service: Service, vad: SileroVad, pcm: bytes
) -> None:
    # chunk_size[1] = 1000: interims every 60 s, so only each segment's final text comes.
    quiet = stream_messages(wav_path, url, mode="online", chunk_size=(5, 1000, 5))
    expected = finals(service, vad, pcm, punctuation=False)
    assert {m["mode"] for m in quiet} == {"2pass-online"}
    assert "".join(m["text"] for m in quiet) == "".join(f.text for f in expected)
    live = paced(url, pcm, mode="online")
    assert {m["mode"] for m in live} == {"2pass-online"}
    assert len(live) > len(quiet)
    assert live[-1]["is_final"]


def test_funasr_client_async_with_an_mp3(url: str, service: Service, audio_dir: Path) -> None:
    path = audio_dir / "zh" / "funasr_asr_example.mp3"
    merged = asyncio.run(funasr_client.async_file_asr(path, url, mode="offline"))
    whole = service.submit(AudioInput(path.read_bytes(), priority=1)).result(timeout=60)
    assert whole.transcript is not None
    assert merged["text"] == whole.transcript.text.replace(" ", "") or merged["text"] == "".join(
        s.text for s in whole.transcript.segments
    )


def test_websockets_client_on_v1_stream(
    url: str, service: Service, vad: SileroVad, pcm: bytes
) -> None:
    with connect(f"{url}/v1/stream") as ws:
        ws.send(json.dumps({"interval": 0.3}))
        assert json.loads(ws.recv())["type"] == "ready"
        for i in range(0, len(pcm), 3200):
            ws.send(pcm[i : i + 3200])
        ws.send(json.dumps({"type": "end"}))
        messages = []
        for raw in ws:
            messages.append(json.loads(raw))
        code = ws.close_code
    assert code == 1000
    expected = finals(service, vad, pcm)
    assert [m["text"] for m in messages if m["type"] == "final"] == [f.text for f in expected]
    assert messages[-1]["type"] == "done"
