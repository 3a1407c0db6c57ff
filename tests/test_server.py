"""The HTTP server through FastAPI's TestClient: every route, limit and error path.

The served model is the tiny random SeACo-Paraformer with a tiny random punctuation model; its
text is random but deterministic, so each answer is compared exactly with what a separately
built engine gives for the same audio. Audio is synthesised noise (decoded without VAD, which
finds no speech in noise), and a real recording where the VAD matters.
"""

from __future__ import annotations

import io
import json
import logging
import os
import socket
import threading
import time
import zipfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import soundfile as sf
import srt
import uvicorn
import webvtt
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from zhuanxie.backend import ParaformerBackend
from zhuanxie.cli import build_engine, build_postprocessor
from zhuanxie.engine import AudioInput, Engine, EngineOptions, Runner
from zhuanxie.generator import write_random_punctuation_model
from zhuanxie.governor import MemoryGovernor
from zhuanxie.jobs import JobView
from zhuanxie.recognizer import load_model
from zhuanxie.result import Segment, Transcript
from zhuanxie.server import create_app
from zhuanxie.service import Service, ServiceOptions
from zhuanxie.settings import ServerSettings, model_id
from zhuanxie.uploads import sanitize_filename
from zhuanxie.writers import to_srt, to_txt, to_vtt

URL = "/v1/audio/transcriptions"
ORIGIN = "http://allowed.example"


# --- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model_dir(tiny_model_dir: Callable[..., Path]) -> Path:
    return tiny_model_dir("seaco-paraformer-tiny")


@pytest.fixture(scope="module")
def punc_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_random_punctuation_model(tmp_path_factory.mktemp("punc"), "ct-punc-zh-tiny", 0)


@pytest.fixture(scope="module")
def reference(model_dir: Path, punc_dir: Path) -> Engine:
    """An engine built like the server's, but apart from it (its own model and threads)."""
    post = build_postprocessor(str(punc_dir), False)
    engine: Engine = build_engine(str(model_dir), "cpu", "float32", "silero", 20.0, None, post)
    return engine


@pytest.fixture(scope="module")
def audio(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Four WAV files of noise, 1.2 to 3 s."""
    folder = tmp_path_factory.mktemp("audio")
    rng = np.random.default_rng(11)
    paths = []
    for i, seconds in enumerate((1.2, 2.0, 2.6, 3.0)):
        path = folder / f"noise{i}.wav"
        sf.write(path, rng.normal(0, 0.1, int(seconds * 16000)).astype(np.float32), 16000)
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def roots(tmp_path_factory: pytest.TempPathFactory, audio: list[Path]) -> dict[str, Path]:
    """An allowed root with a folder of audio (one file deeper, a symlink leading out, a text
    file), and a secret file outside it."""
    base = tmp_path_factory.mktemp("fs")
    root, outside = base / "root", base / "outside"
    (root / "calls" / "deeper").mkdir(parents=True)
    outside.mkdir()
    secret = outside / "secret.wav"
    secret.write_bytes(audio[0].read_bytes())
    (root / "calls" / "a.wav").write_bytes(audio[1].read_bytes())
    (root / "calls" / "b.wav").write_bytes(audio[2].read_bytes())
    (root / "calls" / "deeper" / "c.wav").write_bytes(audio[3].read_bytes())
    (root / "calls" / "notes.txt").write_text("not audio")
    (root / "calls" / "escape.wav").symlink_to(secret)
    return {"root": root, "outside": outside, "secret": secret}


@pytest.fixture(scope="module")
def settings(
    tmp_path_factory: pytest.TempPathFactory,
    model_dir: Path,
    punc_dir: Path,
    roots: dict[str, Path],
) -> ServerSettings:
    return ServerSettings(
        models=[str(model_dir)],
        punc_model=str(punc_dir),
        data_dir=tmp_path_factory.mktemp("data"),
        allowed_roots=[roots["root"]],
        cors_origins=[ORIGIN],
        max_upload_mb=1,
        max_job_upload_mb=4,
        max_audio_seconds=60,
        ui=False,
    )


@pytest.fixture(scope="module")
def client(settings: ServerSettings) -> Iterator[TestClient]:
    """The server as `zhuanxie serve` builds it (engines from the settings)."""
    with TestClient(create_app(settings)) as client:
        yield client


class GatedRunner(Runner):
    """A real runner that holds every batch until ``gate`` is set."""

    def __init__(self, model_dir: Path) -> None:
        model = load_model(model_dir)
        super().__init__(
            ParaformerBackend(model), MemoryGovernor.for_cpu(Engine(model).governor_options())
        )
        self.gate = threading.Event()
        self.started = threading.Event()

    def decode(self, items: Sequence[Any]) -> list[Segment | None]:
        self.started.set()
        self.gate.wait(timeout=60)
        return super().decode(items)


def gated_service(model_dir: Path, **options: Any) -> tuple[Service, GatedRunner]:
    runner = GatedRunner(model_dir)
    engine = Engine(load_model(model_dir), EngineOptions(vad="none"), runners=[runner])
    return Service(engine, ServiceOptions(**options)), runner


def derive(settings: ServerSettings, update: dict[str, Any]) -> ServerSettings:
    """``settings`` with some fields changed, validated again."""
    return ServerSettings(**{**settings.model_dump(), **update})


def upload(client: TestClient, path: Path, url: str = URL, **fields: Any) -> Any:
    return client.post(url, files={"file": (path.name, path.read_bytes())}, data=fields)


def expected(reference: Engine, path: Path, **fields: Any) -> Transcript:
    return reference.transcribe(AudioInput(path, **fields))


def assert_error(response: Any, status: int, *words: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    for word in words:
        assert word in error["message"]
    return error


def temp_files(settings: ServerSettings) -> list[Path]:
    return list((settings.data_dir / "tmp").iterdir())


def wait_job(client: TestClient, job_id: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job: dict[str, Any] = client.get(f"/v1/jobs/{job_id}").json()
        if job["state"] != "running":
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} still running after {timeout} s")


# --- operations ----------------------------------------------------------------------------------


def test_health_ready_and_models(client: TestClient, model_dir: Path) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    name = model_id(str(model_dir))
    assert client.get("/ready").json() == {"status": "ready", "models": [name]}
    assert client.get("/v1/models").json() == {
        "object": "list",
        "data": [{"id": name, "object": "model", "created": 0, "owned_by": "zhuanxie"}],
    }


def test_ready_is_503_outside_the_lifespan(settings: ServerSettings, model_dir: Path) -> None:
    service, runner = gated_service(model_dir)
    runner.gate.set()
    app = create_app(derive(settings, {"data_dir": settings.data_dir / "x"}), service)
    # Without entering the client, the lifespan has not run: not ready, but alive.
    client = TestClient(app)
    assert client.get("/health").status_code == 200
    assert client.get("/ready").status_code == 503
    service.close()


# --- POST /v1/audio/transcriptions ---------------------------------------------------------------


def test_json_equals_the_engine(client: TestClient, reference: Engine, audio: list[Path]) -> None:
    for path in audio[:2]:
        want = expected(reference, path, vad=False)
        assert want.text  # the random model writes something for noise
        response = upload(client, path, model="whisper-1", vad="false")
        assert response.status_code == 200
        assert response.json() == {
            "text": want.text,
            "usage": {"type": "duration", "seconds": round(want.duration, 3)},
        }


def test_text_srt_and_vtt_bodies(client: TestClient, reference: Engine, audio: list[Path]) -> None:
    path = audio[3]
    want = expected(reference, path, vad=False)
    text = upload(client, path, response_format="text", vad="false")
    assert text.headers["content-type"] == "text/plain; charset=utf-8"
    assert text.text == want.text + "\n"

    subrip = upload(client, path, response_format="srt", vad="false")
    assert subrip.headers["content-type"] == "application/x-subrip; charset=utf-8"
    assert subrip.text == to_srt(want)
    cues = list(srt.parse(subrip.text))
    cue_text = "".join(c.content for c in cues)
    assert "".join(cue_text.split()) == "".join(want.text.split())
    assert all(c.start < c.end for c in cues)

    vtt = upload(client, path, response_format="vtt", vad="false")
    assert vtt.headers["content-type"] == "text/vtt; charset=utf-8"
    assert vtt.text == to_vtt(want)
    captions = webvtt.from_buffer(io.StringIO(vtt.text))
    assert [c.text for c in captions.captions] == [c.content for c in cues]
    assert [c.start for c in captions.captions] == [str(c.start)[:-3].rjust(12, "0") for c in cues]


def test_verbose_json_segments_and_words(
    client: TestClient, reference: Engine, audio: list[Path]
) -> None:
    path = audio[2]
    want = expected(reference, path, vad=False)
    fields: dict[str, Any] = {"response_format": "verbose_json", "vad": "false"}
    granularities: dict[str, Any] = {"timestamp_granularities[]": ["segment", "word"]}
    both = upload(client, path, **fields, **granularities)
    body = both.json()
    assert body["task"] == "transcribe"
    assert body["language"] == "chinese"
    assert body["duration"] == round(want.duration, 3)
    assert body["text"] == want.text
    assert body["segments"] == [
        {
            "id": i,
            "seek": round(s.start * 100),
            "start": round(s.start, 3),
            "end": round(s.end, 3),
            "text": s.text,
            "tokens": list(s.token_ids),
            "temperature": 0.0,
            "avg_logprob": 0.0,
            "compression_ratio": body["segments"][i]["compression_ratio"],
            "no_speech_prob": 0.0,
        }
        for i, s in enumerate(want.segments)
    ]
    assert all(s["compression_ratio"] > 0 for s in body["segments"])
    assert body["words"] == [
        {"word": t.text, "start": round(t.start, 3), "end": round(t.end, 3)} for t in want.tokens
    ]
    words_only = upload(client, path, **fields, **{"timestamp_granularities[]": "word"}).json()
    assert "segments" not in words_only
    assert words_only["words"] == body["words"]
    default = upload(client, path, **fields).json()
    assert default["segments"] == body["segments"]
    assert "words" not in default


def test_real_speech_with_vad_and_hotwords(
    client: TestClient, reference: Engine, speech_clips: list[np.ndarray], tmp_path: Path
) -> None:
    path = tmp_path / "speech.flac"
    sf.write(path, speech_clips[0], 16000)
    want = expected(reference, path)
    assert len(want.segments) >= 1
    assert upload(client, path).json()["text"] == want.text
    hot = expected(reference, path, hotwords=("魔搭", "达摩院"))
    response = upload(client, path, hotwords="魔搭，达摩院\n魔搭")
    assert response.json()["text"] == hot.text


def test_per_request_punctuation(client: TestClient, reference: Engine, audio: list[Path]) -> None:
    path = audio[1]
    plain = expected(reference, path, vad=False, punctuation=False)
    punctuated = expected(reference, path, vad=False)
    assert plain.text != punctuated.text
    assert upload(client, path, vad="false", punc="false").json()["text"] == plain.text
    assert upload(client, path, vad="false", punc="true").json()["text"] == punctuated.text
    error = assert_error(upload(client, path, itn="true"), 400, "itn=true")
    assert error["param"] == "itn"


def test_bad_requests_are_400_in_openai_shape(
    client: TestClient, settings: ServerSettings, audio: list[Path], tmp_path: Path
) -> None:
    path = audio[0]
    missing = assert_error(client.post(URL, data={"model": "whisper-1"}), 400, "file")
    assert missing["param"] == "file"
    assert missing["type"] == "invalid_request_error"
    fmt = assert_error(upload(client, path, response_format="mp3"), 400, "response_format")
    assert fmt["param"] == "response_format"
    assert_error(upload(client, path, language="en"), 400, "'en'", "zh")
    assert upload(client, path, language="zh", vad="false").status_code == 200
    assert upload(client, path, language="Chinese", vad="false").status_code == 200
    words = {"timestamp_granularities[]": "word"}
    assert_error(upload(client, path, **words), 400, "verbose_json")
    assert_error(upload(client, path, stream="true"), 400, "stream")
    assert_error(upload(client, path, temperature="3"), 400, "temperature")
    garbage = tmp_path / "talk.wav"
    garbage.write_bytes(b"RIFF....not really a wave file at all" * 20)
    bad = assert_error(upload(client, garbage), 400, "talk.wav:")
    assert bad["code"] == "invalid_audio"
    assert str(settings.data_dir) not in bad["message"]  # the stored path is never shown
    empty = tmp_path / "empty.mp3"
    empty.write_bytes(b"")
    assert_error(upload(client, empty), 400, "empty.mp3")
    assert temp_files(settings) == []


def test_upload_and_duration_limits(
    client: TestClient, settings: ServerSettings, tmp_path: Path
) -> None:
    rng = np.random.default_rng(3)
    big = tmp_path / "big.wav"  # 1.5 MiB: inside the body limit, over the file limit
    sf.write(big, rng.normal(0, 0.1, 786_432).astype(np.float32), 16000, subtype="PCM_16")
    assert_error(upload(client, big), 413, "big.wav", "1 MiB")
    huge = tmp_path / "huge.wav"  # over the body limit, refused from Content-Length
    huge.write_bytes(b"\0" * (3 * 2**20))
    error = assert_error(upload(client, huge), 413, "limit")
    assert error["code"] == "file_too_large"

    # Streamed without a Content-Length: refused once the bytes pass the limit.
    boundary = "zhuanxie-boundary"
    head = (
        f"--{boundary}\r\nContent-Disposition: form-data; name=file; filename=huge.wav\r\n"
        "Content-Type: audio/wav\r\n\r\n"
    ).encode()
    sent = []

    def body() -> Iterator[bytes]:
        yield head
        for _ in range(64):  # 8 MiB in all, if it were all read
            sent.append(1)
            yield b"\0" * 2**17
        yield f"\r\n--{boundary}--\r\n".encode()

    streamed = client.post(
        URL, content=body(), headers={"content-type": f"multipart/form-data; boundary={boundary}"}
    )
    assert_error(streamed, 413, "limit")

    long = tmp_path / "long.flac"  # 61 s of silence: small, but longer than the limit
    sf.write(long, np.zeros(61 * 16000, np.float32), 16000)
    too_long = assert_error(upload(client, long), 400, "long.flac", "61 s", "60 s")
    assert too_long["code"] == "audio_too_long"
    assert temp_files(settings) == []


def test_filenames_are_sanitised(client: TestClient, settings: ServerSettings) -> None:
    garbage = b"this is not audio"
    for given, shown in (
        ("../../../etc/passwd", "passwd:"),
        ("..\\..\\evil<>|;.wav", "evil____.wav:"),
        ("..", "audio:"),
        ("会议 记录#1.mp3", "会议 记录_1.mp3:"),
    ):
        response = client.post(URL, files={"file": (given, garbage)})
        assert_error(response, 400, shown)
    assert sanitize_filename("a\x00b.wav") == "a_b.wav"
    assert sanitize_filename(".hidden") == "hidden"
    assert len(sanitize_filename("长" * 300 + ".wav")) == 120
    assert sanitize_filename("长" * 300 + ".wav").endswith("长.wav")
    assert temp_files(settings) == []


def test_cors(client: TestClient) -> None:
    preflight = {"origin": ORIGIN, "access-control-request-method": "POST"}
    allowed = client.options(URL, headers=preflight)
    assert allowed.headers["access-control-allow-origin"] == ORIGIN
    other = client.options(URL, headers={**preflight, "origin": "http://evil.example"})
    assert "access-control-allow-origin" not in other.headers


def test_metrics_and_access_log(
    client: TestClient, audio: list[Path], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="zhuanxie.server"):
        assert upload(client, audio[0], vad="false").status_code == 200
    lines = [r for r in caplog.records if r.getMessage() == "request"]
    assert len(lines) == 1
    line = vars(lines[0])
    assert (line["method"], line["route"], line["status"]) == ("POST", URL, 200)
    assert line["file"] == audio[0].name
    assert line["audio_s"] == pytest.approx(1.2)

    response = client.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }
    ok = ("zhuanxie_http_requests_total", (("method", "POST"), ("route", URL), ("status", "200")))
    assert samples[ok] >= 1
    bad = ("zhuanxie_http_requests_total", (("method", "POST"), ("route", URL), ("status", "400")))
    assert samples[bad] >= 1
    model = (("model", next(iter(client.get("/ready").json()["models"]))),)
    assert samples["zhuanxie_engine_batches_total", model] >= 1
    assert samples["zhuanxie_engine_audio_seconds_total", model] > 1
    assert samples["zhuanxie_engine_real_time_factor", model] > 0
    assert samples["zhuanxie_engine_mean_batch_size", model] >= 1
    assert samples["zhuanxie_engine_queue_depth", model] == 0
    assert samples["zhuanxie_service_inputs", (("lane", "interactive"), *model)] == 0
    assert samples["zhuanxie_memory_bytes", (("device", "host"),)] > 10 * 2**20


# --- admission, timeouts, disconnects --------------------------------------------------------------


def test_full_lane_answers_429_with_retry_after(
    settings: ServerSettings, model_dir: Path, audio: list[Path], tmp_path: Path
) -> None:
    service, runner = gated_service(model_dir, max_urgent=1)
    app = create_app(derive(settings, {"data_dir": tmp_path}), service)
    with TestClient(app) as client:
        held: list[Any] = []
        thread = threading.Thread(target=lambda: held.append(upload(client, audio[0])))
        thread.start()
        assert runner.started.wait(30)
        refused = upload(client, audio[1])
        error = assert_error(refused, 429, "busy")
        assert error["type"] == "rate_limit_error"
        assert int(refused.headers["retry-after"]) >= 1
        runner.gate.set()
        thread.join(30)
        assert held[0].status_code == 200
        assert upload(client, audio[1]).status_code == 200  # room again


def test_timeout_answers_504_and_cancels(
    settings: ServerSettings, model_dir: Path, audio: list[Path], tmp_path: Path
) -> None:
    service, runner = gated_service(model_dir)
    update = {"data_dir": tmp_path, "request_timeout": 0.5}
    with TestClient(create_app(derive(settings, update), service)) as client:
        error = assert_error(upload(client, audio[0]), 504, "0.5 s", "cancelled")
        assert error["code"] == "timeout"
        assert service.load().urgent == 0  # its work was cancelled, though the model is held
        runner.gate.set()
    assert temp_files(derive(settings, update)) == []


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_client_disconnect_cancels_the_work(
    settings: ServerSettings, model_dir: Path, audio: list[Path], tmp_path: Path
) -> None:
    service, runner = gated_service(model_dir)
    app = create_app(derive(settings, {"data_dir": tmp_path}), service)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None))
    thread = threading.Thread(target=server.run)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        files = {"file": (audio[0].name, audio[0].read_bytes())}
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"http://127.0.0.1:{port}{URL}", files=files, timeout=1.0)
        assert runner.started.is_set()
        while service.load().urgent and time.monotonic() < deadline:
            time.sleep(0.05)
        assert service.load().urgent == 0  # cancelled while the model was still held
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics").text
        assert 'zhuanxie_transcriptions_cancelled_total{reason="disconnect"} 1.0' in metrics
        assert list((tmp_path / "tmp").iterdir()) == []
    finally:
        runner.gate.set()
        server.should_exit = True
        thread.join(30)


# --- API key -------------------------------------------------------------------------------------


def test_api_key(
    settings: ServerSettings, model_dir: Path, audio: list[Path], tmp_path: Path
) -> None:
    service, runner = gated_service(model_dir)
    runner.gate.set()
    update = {"data_dir": tmp_path, "api_key": "s3cret"}
    with TestClient(create_app(derive(settings, update), service)) as client:
        assert client.get("/health").status_code == 200
        assert client.get("/ready").status_code == 200
        for route in ("/v1/models", "/metrics", "/v1/jobs"):
            missing = client.get(route)
            error = assert_error(missing, 401, "API key")
            assert error["type"] == "authentication_error"
            assert missing.headers["www-authenticate"] == "Bearer"
        assert_error(client.get("/v1/models", headers={"authorization": "Bearer nope"}), 401)
        assert_error(client.get("/v1/models", headers={"authorization": "s3cret"}), 401)
        good = {"authorization": "Bearer s3cret"}
        assert client.get("/v1/models", headers=good).status_code == 200
        assert_error(upload(client, audio[0]), 401)
        files = {"file": (audio[0].name, audio[0].read_bytes())}
        assert client.post(URL, files=files, headers=good).status_code == 200


# --- batch jobs ----------------------------------------------------------------------------------


def test_job_from_uploads(
    client: TestClient, settings: ServerSettings, reference: Engine, audio: list[Path]
) -> None:
    files = [("file", (p.name, p.read_bytes())) for p in audio[:2]]
    files.append(("file", ("../../broken.wav", b"not audio")))
    created = client.post("/v1/jobs", files=files, data={"vad": "false", "hotwords": "魔搭"})
    assert created.status_code == 201
    job_id = created.json()["id"]
    job = wait_job(client, job_id)
    assert (job["state"], job["total"], job["done"], job["failed"]) == ("done", 3, 2, 1)
    assert (job["hotwords"], job["punc"], job["vad"], job["progress"]) == (["魔搭"], True, False, 1)
    names = [f["name"] for f in job["files"]]
    assert names == ["noise0.wav", "noise1.wav", "broken.wav"]
    assert [f["state"] for f in job["files"]] == ["done", "done", "failed"]
    assert job["files"][2]["error"].startswith("broken.wav: not a media file")
    assert not (settings.data_dir / "broken.wav").exists()

    for i, path in enumerate(audio[:2]):
        want = expected(reference, path, vad=False, hotwords=("魔搭",))
        assert job["files"][i]["duration"] == pytest.approx(want.duration)
        txt = client.get(f"/v1/jobs/{job_id}/files/{i}?format=txt")
        assert txt.text == to_txt(want)
        assert txt.headers["content-disposition"] == f'attachment; filename="noise{i}.txt"'
        subrip = client.get(f"/v1/jobs/{job_id}/files/{i}", params={"format": "srt"}).text
        assert subrip == to_srt(want)
        document = client.get(f"/v1/jobs/{job_id}/files/{i}?format=json").json()
        assert document["text"] == want.text
        assert document["metadata"]["input"] == path.name

    archive = zipfile.ZipFile(io.BytesIO(client.get(f"/v1/jobs/{job_id}/results.zip").content))
    formats = ("txt", "srt", "vtt", "json", "tsv")
    assert sorted(archive.namelist()) == sorted(f"noise{i}.{f}" for i in (0, 1) for f in formats)
    assert archive.read("noise1.txt").decode() == to_txt(
        expected(reference, audio[1], vad=False, hotwords=("魔搭",))
    )
    only = zipfile.ZipFile(
        io.BytesIO(client.get(f"/v1/jobs/{job_id}/results.zip?format=srt").content)
    )
    assert sorted(only.namelist()) == ["noise0.srt", "noise1.srt"]

    listed = client.get("/v1/jobs").json()
    assert listed["object"] == "list"
    assert job_id in [j["id"] for j in listed["data"]]
    assert temp_files(settings) == []


def test_job_from_server_paths(
    client: TestClient, reference: Engine, roots: dict[str, Path]
) -> None:
    folder = roots["root"] / "calls"
    created = client.post("/v1/jobs", data={"path": str(folder), "vad": "false", "punc": "false"})
    assert created.status_code == 201, created.text
    job = wait_job(client, created.json()["id"])
    # The symlink out of the root and the text file are left out; the deeper file is found.
    expected_names = [
        str(folder / "a.wav"),
        str(folder / "b.wav"),
        str(folder / "deeper" / "c.wav"),
    ]
    assert [f["name"] for f in job["files"]] == [str(Path(n).resolve()) for n in expected_names]
    assert job["done"] == 3
    want = expected(reference, folder / "a.wav", vad=False, punctuation=False)
    text = client.get(f"/v1/jobs/{job['id']}/files/0?format=txt").text
    assert text == to_txt(want)
    assert (
        client.get(f"/v1/jobs/{job['id']}/files/0")
        .headers["content-disposition"]
        .endswith('filename="a.txt"')
    )


def test_server_paths_outside_the_roots_are_refused(
    client: TestClient, roots: dict[str, Path]
) -> None:
    root, secret = roots["root"], roots["secret"]
    attempts = {
        str(secret): "not inside",
        f"{root}/../outside/secret.wav": "not inside",
        str(root / "calls" / "escape.wav"): "not inside",  # a symlink out of the root
        "calls/a.wav": "absolute path",
        str(root / "missing.wav"): "no such file",
        "/etc/passwd": "not inside",
    }
    for path, words in attempts.items():
        response = client.post("/v1/jobs", data={"path": path})
        assert_error(response, 400, words)
    assert_error(client.post("/v1/jobs", data={}), 400, "at least one")


def test_job_downloads_refuse_traversal(client: TestClient, audio: list[Path]) -> None:
    created = client.post("/v1/jobs", files=[("file", (audio[0].name, audio[0].read_bytes()))])
    job_id = wait_job(client, created.json()["id"])["id"]
    assert_error(client.get("/v1/jobs/..%2F..%2Fetc"), 404)
    assert_error(client.get("/v1/jobs/../../etc/passwd"), 404)
    assert_error(client.get(f"/v1/jobs/{job_id}/files/0?format=../../job.sqlite3"), 400, "format")
    assert_error(client.get(f"/v1/jobs/{job_id}/files/1"), 404)
    assert_error(client.get(f"/v1/jobs/{job_id}/files/-1"), 404)
    assert_error(client.get(f"/v1/jobs/{job_id}/results.zip?format=exe"), 400)
    assert_error(client.get(f"/v1/jobs/{'0' * 32}"), 404)


def test_job_upload_limit(client: TestClient, settings: ServerSettings, audio: list[Path]) -> None:
    big = ("file", ("big.wav", b"\0" * (2**20 + 10)))
    before = set((settings.data_dir / "jobs").iterdir())
    response = client.post(
        "/v1/jobs", files=[("file", (audio[0].name, audio[0].read_bytes())), big]
    )
    assert_error(response, 413, "big.wav")
    assert set((settings.data_dir / "jobs").iterdir()) == before  # nothing left of the job


def test_delete_job(client: TestClient, settings: ServerSettings, audio: list[Path]) -> None:
    created = client.post("/v1/jobs", files=[("file", (audio[0].name, audio[0].read_bytes()))])
    job_id = wait_job(client, created.json()["id"])["id"]
    assert (settings.data_dir / "jobs" / job_id).is_dir()
    deleted = client.delete(f"/v1/jobs/{job_id}")
    assert deleted.json() == {"id": job_id, "object": "job.deleted", "deleted": True}
    assert not (settings.data_dir / "jobs" / job_id).exists()
    assert_error(client.get(f"/v1/jobs/{job_id}"), 404)
    assert_error(client.delete(f"/v1/jobs/{job_id}"), 404)


def test_cancel_job(
    settings: ServerSettings, model_dir: Path, audio: list[Path], tmp_path: Path
) -> None:
    service, runner = gated_service(model_dir)
    job_settings = derive(settings, {"data_dir": tmp_path, "job_concurrency": 2})
    try:
        with TestClient(create_app(job_settings, service)) as client:
            files = [("file", (p.name, p.read_bytes())) for p in audio]
            job_id = client.post("/v1/jobs", files=files, data={"vad": "false"}).json()["id"]
            assert runner.started.wait(30)
            job = client.post(f"/v1/jobs/{job_id}/cancel").json()
            assert job["state"] == "cancelled"
            assert [f["state"] for f in job["files"]] == ["cancelled"] * 4
            assert (job["done"], job["failed"], job["progress"]) == (0, 4, 1.0)
            assert service.load().bulk == 0
            runner.gate.set()  # let the held batch go, so that the service closes at once
    finally:
        runner.gate.set()
    # A restart does not take a cancelled job up again.
    service2, runner2 = gated_service(model_dir)
    runner2.gate.set()
    with TestClient(create_app(job_settings, service2)) as client:
        assert client.get(f"/v1/jobs/{job_id}").json()["state"] == "cancelled"
        assert service2.load().bulk == 0


class BrokenRunner(GatedRunner):
    def decode(self, items: Sequence[Any]) -> list[Segment | None]:
        raise RuntimeError("a bug in the model code (injected)")


def test_an_internal_failure_is_a_500(
    settings: ServerSettings, model_dir: Path, audio: list[Path], tmp_path: Path
) -> None:
    runner = BrokenRunner(model_dir)
    service = Service(Engine(load_model(model_dir), EngineOptions(vad="none"), runners=[runner]))
    with TestClient(create_app(derive(settings, {"data_dir": tmp_path}), service)) as client:
        error = assert_error(upload(client, audio[0]), 500, "transcription failed")
    assert error["code"] == "internal_error"
    assert error["message"] == (
        f"{audio[0].name}: transcription failed: RuntimeError: a bug in the model code (injected)"
    )


class StallingRunner(GatedRunner):
    """Decodes the first batch, then holds the rest until ``gate`` is set."""

    def __init__(self, model_dir: Path, options: EngineOptions) -> None:
        super().__init__(model_dir)
        model = load_model(model_dir)
        self.governor = MemoryGovernor.for_cpu(Engine(model, options).governor_options())
        self.calls = 0

    def decode(self, items: Sequence[Any]) -> list[Segment | None]:
        self.calls += 1
        if self.calls > 1:
            self.gate.wait(timeout=60)
        return Runner.decode(self, items)


def test_job_reports_a_running_files_share_decoded(
    settings: ServerSettings, model_dir: Path, tmp_path: Path
) -> None:
    options = EngineOptions(vad="none", max_batch_size=1)  # one segment (<= 20 s) per batch
    runner = StallingRunner(model_dir, options)
    service = Service(Engine(load_model(model_dir), options, runners=[runner]))
    long = tmp_path / "long.wav"
    noise = np.random.default_rng(1).normal(0, 0.1, 30 * 16000).astype(np.float32)
    sf.write(long, noise, 16000, subtype="PCM_16")  # under the fixture's 1 MiB per file
    job_settings = derive(settings, {"data_dir": tmp_path / "data"})
    try:
        with TestClient(create_app(job_settings, service)) as client:
            files = [("file", (long.name, long.read_bytes()))]
            created = client.post("/v1/jobs", files=files, data={"vad": "false"})
            assert created.status_code == 201, created.text
            job_id = created.json()["id"]
            deadline = time.monotonic() + 30
            job = client.get(f"/v1/jobs/{job_id}").json()
            while job["files"][0]["progress"] == 0 and time.monotonic() < deadline:
                time.sleep(0.05)
                job = client.get(f"/v1/jobs/{job_id}").json()
            (file,) = job["files"]
            assert file["state"] == "running"
            assert 0 < file["progress"] < 1
            assert job["progress"] == file["progress"]
            runner.gate.set()
            done = wait_job(client, job_id)
            assert (done["progress"], done["files"][0]["progress"]) == (1, 1)
    finally:
        runner.gate.set()


def test_restart_resumes_unfinished_jobs(
    settings: ServerSettings, model_dir: Path, reference: Engine, audio: list[Path], tmp_path: Path
) -> None:
    service, runner = gated_service(model_dir)
    job_settings = derive(settings, {"data_dir": tmp_path, "job_concurrency": 1})
    app = create_app(job_settings, service)
    try:
        with TestClient(app) as client:
            files = [("file", (p.name, p.read_bytes())) for p in audio[:3]]
            job_id = client.post("/v1/jobs", files=files, data={"vad": "false"}).json()["id"]
            assert runner.started.wait(30)
            app.state.zhuanxie.jobs.close()  # what shutdown does first
            runner.gate.set()
    finally:
        runner.gate.set()
    with JobView.open(tmp_path / "jobs" / job_id) as view:
        summary = view.summary()
    assert (summary.pending, summary.done) == (3, 0)  # the running file went back to pending

    with TestClient(create_app(job_settings)) as client:  # a new server on the same data
        job = wait_job(client, job_id)
        assert (job["state"], job["done"]) == ("done", 3)
        # The job keeps its recorded options: created on a server without punctuation, it
        # is not punctuated by this one.
        assert job["punc"] is False
        for i, path in enumerate(audio[:3]):
            want = expected(reference, path, vad=False, punctuation=False)
            assert client.get(f"/v1/jobs/{job_id}/files/{i}").text == to_txt(want)


# --- Web UI mount --------------------------------------------------------------------------------


def test_web_ui_is_mounted(settings: ServerSettings, tmp_path: Path) -> None:
    pytest.importorskip("gradio", reason="the Web UI needs gradio")
    pytest.importorskip("zhuanxie.webui", reason="the Web UI module is not installed")
    update = {"data_dir": tmp_path, "ui": True, "api_key": "s3cret"}
    app: FastAPI = create_app(derive(settings, update))
    with TestClient(app) as client:
        page = client.get("/ui/", follow_redirects=True)
        assert page.status_code == 200
        assert "<html" in page.text.lower()
        assert client.get("/v1/models").status_code == 401  # the API still needs the key
        login = client.post("/ui/login", data={"username": "any", "password": "s3cret"})
        assert login.status_code == 200, login.text
        wrong = client.post("/ui/login", data={"username": "any", "password": "nope"})
        assert wrong.status_code == 400


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ZHUANXIE_MODELS", "a, b")
    monkeypatch.setenv("ZHUANXIE_ALLOWED_ROOTS", f"{tmp_path},{tmp_path}/x/..")
    monkeypatch.setenv("ZHUANXIE_API_KEY", "k")
    monkeypatch.setenv("ZHUANXIE_MAX_UPLOAD_MB", "5")
    settings = ServerSettings(port=9001)
    assert settings.models == ["a", "b"]
    assert settings.allowed_roots == [tmp_path.resolve(), tmp_path.resolve()]
    assert settings.api_key is not None
    assert settings.api_key.get_secret_value() == "k"
    assert (settings.port, settings.max_upload_bytes) == (9001, 5 * 2**20)
    assert ServerSettings(models=["c"]).models == ["c"]  # arguments win over the environment
    with pytest.raises(ValueError, match="max_job_upload_mb"):
        ServerSettings(max_upload_mb=10, max_job_upload_mb=5)
    assert os.environ["ZHUANXIE_MODELS"] == "a, b"
    assert json.loads(json.dumps(settings.model_dump(mode="json")))["port"] == 9001
