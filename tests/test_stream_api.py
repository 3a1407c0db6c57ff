"""The live WebSockets through Starlette's test client: /v1/stream and FunASR's protocol, their
results against the engine-level session, limits, close codes and clean-up."""

from __future__ import annotations

import io
import json
import time
import wave
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi import FastAPI
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from zhuanxie.engine import AudioInput
from zhuanxie.funasr_ws import FunasrConfig
from zhuanxie.service import Service
from zhuanxie.stream_api import STREAM_PATH, StreamLimits, stream_router
from zhuanxie.streaming import Final, StreamOptions, StreamSession
from zhuanxie.vad import SAMPLE_RATE, SileroVad

KEY = "s3cret"
CHUNK_BYTES = 3200  # 100 ms of 16-bit audio


@pytest.fixture(scope="module")
def service(punctuated_service: Service) -> Service:
    return punctuated_service


@pytest.fixture(scope="module")
def vad() -> SileroVad:
    return SileroVad()


def make_client(service: Service, vad: SileroVad, **limits: Any) -> TestClient:
    app = FastAPI()
    router = stream_router(lambda model: service, StreamLimits(**limits), vad=vad)
    app.include_router(router)
    app.state.hub = router.hub  # type: ignore[attr-defined]
    return TestClient(app)


@pytest.fixture(scope="module")
def client(service: Service, vad: SileroVad) -> TestClient:
    return make_client(service, vad)


@pytest.fixture(scope="module")
def recording(speech_clips: list[np.ndarray]) -> bytes:
    """Three clips with pauses, as 16-bit little-endian PCM."""
    silence = np.zeros(int(1.2 * SAMPLE_RATE), np.float32)
    audio = np.concatenate([silence, speech_clips[0], silence, speech_clips[1], silence])
    return np.round(audio * 32768).astype("<i2").tobytes()


def chunks(data: bytes, size: int = CHUNK_BYTES) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def expected_finals(service: Service, vad: SileroVad, data: bytes, **change: Any) -> list[Final]:
    """The engine-level session's finals for the same audio (tests/test_streaming.py checks
    those against offline decoding)."""
    session = StreamSession(service, vad, replace(StreamOptions(interval=None), **change))
    for chunk in chunks(data):
        session.push(chunk)
    return [e for e in session.finish(timeout=60) if isinstance(e, Final)]


def until_closed(ws: Any) -> tuple[list[dict[str, Any]], int, str]:
    """Every message the server sends, then its close code and reason."""
    messages = []
    while True:
        message = ws.receive()
        if message["type"] == "websocket.close":
            return messages, message.get("code", 1000), message.get("reason", "")
        messages.append(json.loads(message["text"]))


# --- /v1/stream -------------------------------------------------------------------------------


def test_stream_sends_interims_finals_and_done(
    client: TestClient, service: Service, vad: SileroVad, recording: bytes
) -> None:
    with client.websocket_connect(STREAM_PATH) as ws:
        ws.send_json({"sample_rate": 16000, "format": "pcm_s16le", "hotwords": ["科技"]})
        ready = ws.receive_json()
        assert ready["type"] == "ready"
        assert ready["hotwords"] == ["科技"]
        for chunk in chunks(recording):
            ws.send_bytes(chunk)
            time.sleep(0.005)  # leave the interims time to run
        ws.send_json({"type": "end"})
        messages, code, _ = until_closed(ws)
    assert code == 1000
    expected = expected_finals(service, vad, recording, hotwords=("科技",))
    finals = [m for m in messages if m["type"] == "final"]
    assert [(f["segment"], f["text"]) for f in finals] == [(e.segment, e.text) for e in expected]
    assert [f["start"] for f in finals] == [round(e.start, 3) for e in expected]
    assert [len(f["tokens"]) for f in finals] == [len(e.tokens) for e in expected]
    assert any(m["type"] == "interim" for m in messages)
    assert messages[-1] == {
        "type": "done",
        "duration": round(len(recording) / 2 / SAMPLE_RATE, 3),
        "segments": len(expected),
    }
    seen_final: set[int] = set()
    for m in messages[:-1]:  # nothing of a segment after its final
        assert m["segment"] not in seen_final
        if m["type"] == "final":
            seen_final.add(m["segment"])


@pytest.mark.parametrize(
    ("config", "reason"),
    [
        ({"sample_rate": 12}, "sample_rate"),
        ({"format": "mp3"}, "format"),
        ({"interval": 0}, "interval"),
        ({"colour": "blue"}, "colour"),
        ({"vad": {"min_silence_ms": 10}}, "min_silence_ms"),
    ],
)
def test_bad_config_closes_with_1008_and_the_reason(
    client: TestClient, config: dict[str, Any], reason: str
) -> None:
    with client.websocket_connect(STREAM_PATH) as ws:
        ws.send_json(config)
        messages, code, said = until_closed(ws)
    assert code == 1008
    assert reason in said
    assert messages[0]["type"] == "error"
    assert reason in messages[0]["message"]


def test_audio_before_config_is_refused(client: TestClient) -> None:
    with client.websocket_connect(STREAM_PATH) as ws:
        ws.send_bytes(b"\0\0")
        _, code, reason = until_closed(ws)
    assert (code, reason) == (1008, "send the config JSON first, then audio")


def test_a_full_server_answers_1013(service: Service, vad: SileroVad) -> None:
    client = make_client(service, vad, max_sessions=1)
    with client.websocket_connect(STREAM_PATH) as first:
        first.send_json({})
        assert first.receive_json()["type"] == "ready"
        with client.websocket_connect(STREAM_PATH) as second:
            _, code, reason = until_closed(second)
        assert code == 1013
        assert "try again later" in reason
        first.send_json({"type": "end"})
        _, code, _ = until_closed(first)
        assert code == 1000
    with client.websocket_connect(STREAM_PATH) as third:  # the slot is free again
        third.send_json({})
        assert third.receive_json()["type"] == "ready"


def test_idle_session_sends_its_finals_then_closes(
    service: Service, vad: SileroVad, recording: bytes
) -> None:
    client = make_client(service, vad, idle_timeout_s=1.0)
    with client.websocket_connect(STREAM_PATH) as ws:
        ws.send_json({"interval": None})
        ws.receive_json()
        for chunk in chunks(recording):
            ws.send_bytes(chunk)
        messages, code, reason = until_closed(ws)  # no "end": the server gives up waiting
    assert (code, reason) == (1008, "no message for 1 s")
    kinds = [m["type"] for m in messages]
    assert kinds[-2:] == ["done", "error"]
    assert kinds.count("final") == len(expected_finals(service, vad, recording))


def test_session_length_limit(service: Service, vad: SileroVad, recording: bytes) -> None:
    client = make_client(service, vad, max_session_s=3.0)
    with client.websocket_connect(STREAM_PATH) as ws:
        ws.send_json({"interval": None})
        assert ws.receive_json()["max_session_s"] == 3.0
        for chunk in chunks(recording):
            ws.send_bytes(chunk)
        messages, code, reason = until_closed(ws)
    assert code == 1008
    assert "limit of 3 s" in reason
    done = next(m for m in messages if m["type"] == "done")
    assert done["duration"] == 3.0
    assert all(m["end"] <= 3.0 for m in messages if m["type"] == "final")


def test_oversized_message_closes_with_1009(service: Service, vad: SileroVad) -> None:
    client = make_client(service, vad, max_message_bytes=1000)
    with client.websocket_connect(STREAM_PATH) as ws:
        ws.send_json({})
        ws.receive_json()
        ws.send_bytes(bytes(1002))
        _, code, reason = until_closed(ws)
    assert code == 1009
    assert "1002 bytes" in reason


def test_a_dropped_connection_frees_its_slot_and_its_decodes(
    service: Service, vad: SileroVad, recording: bytes
) -> None:
    client = make_client(service, vad)
    hub = client.app.state.hub  # type: ignore[attr-defined]
    with client.websocket_connect(STREAM_PATH) as ws:
        ws.send_json({"interval": 0.1})
        ws.receive_json()
        for chunk in chunks(recording)[:60]:
            ws.send_bytes(chunk)
        assert hub.active == 1
    for _ in range(200):
        if hub.active == 0 and service.load().urgent == 0:
            break
        time.sleep(0.02)
    assert hub.active == 0
    assert service.load().urgent == 0


def test_api_key_by_header_or_query(service: Service, vad: SileroVad) -> None:
    app = FastAPI()
    app.include_router(stream_router(lambda model: service, vad=vad, api_key=KEY))
    client = TestClient(app)
    with pytest.raises(WebSocketDisconnect) as refused, client.websocket_connect(STREAM_PATH):
        pass
    assert refused.value.code == 1008
    with client.websocket_connect(STREAM_PATH, headers={"Authorization": f"Bearer {KEY}"}) as ws:
        ws.send_json({})
        assert ws.receive_json()["type"] == "ready"
    with client.websocket_connect(f"{STREAM_PATH}?api_key={KEY}") as ws:
        ws.send_json({})
        assert ws.receive_json()["type"] == "ready"


# --- FunASR's protocol ------------------------------------------------------------------------


def funasr_run(
    client: TestClient, config: dict[str, Any], data: bytes, path: str = "/"
) -> list[dict[str, Any]]:
    with client.websocket_connect(path, subprotocols=["binary"]) as ws:
        assert ws.accepted_subprotocol == "binary"
        ws.send_json({"is_speaking": True, "wav_name": "demo", **config})
        for chunk in chunks(data):
            ws.send_bytes(chunk)
            time.sleep(0.003)
        ws.send_json({"is_speaking": False})
        messages = []
        while not messages or not messages[-1]["is_final"]:
            messages.append(ws.receive_json())
    return messages


def test_funasr_2pass(
    client: TestClient, service: Service, vad: SileroVad, recording: bytes
) -> None:
    hotwords = json.dumps({"科技": 20, "因为": 10}, ensure_ascii=False)
    messages = funasr_run(client, {"mode": "2pass", "hotwords": hotwords}, recording)
    expected = expected_finals(service, vad, recording, hotwords=("科技", "因为"))
    offline = [m for m in messages if m["mode"] == "2pass-offline" and not m["is_final"]]
    assert [m["text"] for m in offline] == [f.text for f in expected]
    assert any(m["mode"] == "2pass-online" for m in messages)
    assert all(m["wav_name"] == "demo" for m in messages)
    assert all(not m["is_final"] for m in messages[:-1])
    assert messages[-1] == {
        "mode": "2pass-offline",
        "wav_name": "demo",
        "text": "",
        "is_final": True,
        "is_end": True,
    }
    for message, final in zip(offline, expected, strict=True):
        spans = json.loads(message["timestamp"])
        assert spans == [[round(t.start * 1000), round(t.end * 1000)] for t in final.tokens]
        if final.sentences:
            sents = message["stamp_sents"]
            assert [s["start"] for s in sents] == [round(s.start * 1000) for s in final.sentences]
            assert all(s["ts_list"] for s in sents)


def test_funasr_online_sends_only_new_text(
    client: TestClient, service: Service, vad: SileroVad, recording: bytes
) -> None:
    # chunk_size[1] = 1000 frames: no interims, so each segment's text comes once, unpunctuated.
    quiet = funasr_run(client, {"mode": "online", "chunk_size": [5, 1000, 5]}, recording)
    expected = expected_finals(service, vad, recording, punctuation=False)
    assert {m["mode"] for m in quiet} == {"2pass-online"}
    assert "".join(m["text"] for m in quiet) == "".join(f.text for f in expected)
    live = funasr_run(client, {"mode": "online", "chunk_size": "5,5,5"}, recording)
    assert {m["mode"] for m in live} == {"2pass-online"}
    assert len(live) > len(quiet)
    assert live[-1]["is_final"]


def test_funasr_offline_sends_punctuated_segments(
    client: TestClient, service: Service, vad: SileroVad, recording: bytes
) -> None:
    messages = funasr_run(client, {"mode": "offline", "audio_fs": 16000}, recording, "/funasr")
    expected = expected_finals(service, vad, recording)
    assert {m["mode"] for m in messages} == {"2pass-offline"}
    assert [m["text"] for m in messages[:-1]] == [f.text for f in expected]


def test_funasr_resamples_8k_pcm(client: TestClient, speech_clips: list[np.ndarray]) -> None:
    audio = np.concatenate([np.zeros(8000, np.float32), speech_clips[0][::2]])
    data = np.round(audio * 32767).astype("<i2").tobytes()
    messages = funasr_run(client, {"mode": "offline", "audio_fs": 8000}, data)
    assert messages[-1]["is_final"]
    assert len(messages) >= 2  # at least one segment heard


def test_funasr_encoded_file_is_transcribed_whole(
    client: TestClient, service: Service, recording: bytes
) -> None:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(SAMPLE_RATE)
        out.writeframes(recording)
    messages = funasr_run(client, {"mode": "2pass", "wav_format": "wav"}, buffer.getvalue())
    whole = service.submit(AudioInput(buffer.getvalue(), priority=1)).result(timeout=60)
    assert whole.transcript is not None
    texts = [m["text"] for m in messages if not m["is_final"]]
    assert texts == [s.text for s in whole.transcript.segments]
    assert messages[-1]["is_final"]


def test_funasr_bad_file_reports_the_error(client: TestClient) -> None:
    with client.websocket_connect("/") as ws:
        ws.send_json({"mode": "offline", "wav_format": "mp3", "wav_name": "x"})
        ws.send_bytes(b"not audio at all" * 10)
        ws.send_json({"is_speaking": False})
        messages, code, _ = until_closed(ws)
    assert code == 1007
    assert messages[-1]["is_end"] is True
    assert messages[-1]["is_final"] is False
    assert "x:" in messages[-1]["error"]


def test_funasr_takes_several_utterances_per_connection(
    client: TestClient, recording: bytes
) -> None:
    with client.websocket_connect("/") as ws:
        for name in ("first", "second"):
            ws.send_json({"mode": "offline", "wav_name": name, "is_speaking": True})
            for chunk in chunks(recording):
                ws.send_bytes(chunk)
            ws.send_json({"is_speaking": False})
            messages = [ws.receive_json()]
            while not messages[-1]["is_final"]:
                messages.append(ws.receive_json())
            assert {m["wav_name"] for m in messages} == {name}
            assert len(messages) >= 3


@pytest.mark.parametrize(
    ("hotwords", "phrases"),
    [
        ('{"阿里巴巴": 20, "通义实验室": 30}', ("阿里巴巴", "通义实验室")),
        ({"魔搭": 10}, ("魔搭",)),
        ("阿里巴巴 达摩院", ("阿里巴巴", "达摩院")),
        ("阿里巴巴,达摩院", ("阿里巴巴", "达摩院")),
        ("", ()),
        (None, ()),
    ],
)
def test_funasr_hotword_forms(hotwords: Any, phrases: tuple[str, ...]) -> None:
    assert FunasrConfig(hotwords=hotwords).phrases() == phrases


def test_funasr_chunk_size_sets_the_interim_interval() -> None:
    assert FunasrConfig().interval() == pytest.approx(0.6)
    assert FunasrConfig(chunk_size="8,8,4").interval() == pytest.approx(0.48)
    assert FunasrConfig(mode="offline").interval() is None


# --- in the server's app ----------------------------------------------------------------------


def test_the_server_app_serves_both_protocols_behind_its_api_key(
    service: Service, recording: bytes, tmp_path: Path
) -> None:
    from zhuanxie.server import create_app
    from zhuanxie.settings import ServerSettings

    settings = ServerSettings(models=["tiny"], ui=False, data_dir=tmp_path, api_key=KEY)
    # No `with`: the app's lifespan would close the shared service on the way out.
    client = TestClient(create_app(settings, service))
    with pytest.raises(WebSocketDisconnect), client.websocket_connect(STREAM_PATH):
        pass
    with client.websocket_connect(f"{STREAM_PATH}?api_key={KEY}") as ws:
        ws.send_json({"interval": None})
        assert ws.receive_json()["type"] == "ready"
    app = create_app(settings, service)
    messages = funasr_run(
        TestClient(app, headers={"Authorization": f"Bearer {KEY}"}), {"mode": "offline"}, recording
    )
    assert messages[-1]["is_final"]
    assert len(messages) >= 2
