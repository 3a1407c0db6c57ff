"""The Web UI's live microphone tab: the recording object against the engine-level session, and
the tab in a real browser (Debian's chromium, its fake microphone playing a file of speech)."""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import soxr

from zhuanxie.engine import Engine, EngineOptions
from zhuanxie.generator import write_random_punctuation_model
from zhuanxie.postprocess import PostProcessor
from zhuanxie.punctuation import Punctuator, load_punctuation_model
from zhuanxie.recognizer import Model, load_model
from zhuanxie.service import Service
from zhuanxie.settings import ServerSettings
from zhuanxie.streaming import Final, StreamOptions, StreamSession
from zhuanxie.vad import SAMPLE_RATE, SileroVad
from zhuanxie.writers import to_srt, to_txt

pytest.importorskip("gradio", reason="the Web UI needs gradio (the 'ui' extra)")
from zhuanxie.webui_live import LiveRecording, start_recording

CHROMIUM = os.environ.get("ZHUANXIE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(
    os.environ.get(
        "ZHUANXIE_TEST_ARTIFACTS", Path(__file__).resolve().parents[1] / "test-artifacts"
    )
)
BROWSER_RATE = 48000  # what browsers record at


@pytest.fixture(scope="module")
def model(tiny_model_dir: Callable[..., Path]) -> Model:
    return load_model(tiny_model_dir("seaco-paraformer-tiny"))


@pytest.fixture(scope="module")
def engine(model: Model, tmp_path_factory: pytest.TempPathFactory) -> Engine:
    punc = write_random_punctuation_model(tmp_path_factory.mktemp("punc"), "ct-punc-zh-tiny", 0)
    postprocessor = PostProcessor(Punctuator(load_punctuation_model(punc)))
    return Engine(model, EngineOptions(vad="none"), postprocessor=postprocessor)


@pytest.fixture(scope="module")
def service(engine: Engine) -> Iterator[Service]:
    with Service(engine) as service:
        yield service


@pytest.fixture(scope="module")
def vad() -> SileroVad:
    return SileroVad()


@pytest.fixture(scope="module")
def speech(speech_clips: list[np.ndarray]) -> np.ndarray:
    """Two clips between pauses, at 16 kHz, float."""
    silence = np.zeros(SAMPLE_RATE, np.float32)
    return np.concatenate([silence, speech_clips[0], silence, speech_clips[1], silence, silence])


@pytest.fixture(scope="module")
def browser_audio(speech: np.ndarray) -> np.ndarray:
    """The speech as a browser sends it: 48 kHz, 16-bit, stereo."""
    native = soxr.resample(speech, SAMPLE_RATE, BROWSER_RATE)
    mono = np.round(np.clip(native, -1, 1) * 32767).astype(np.int16)
    return np.stack([mono, mono], axis=1)


@dataclass
class FakeState:
    """What start_recording reads of the server's state."""

    services: dict[str, Service]
    settings: ServerSettings
    jobs: Any = None


def test_recording_equals_the_session_and_writes_downloads(
    service: Service, vad: SileroVad, browser_audio: np.ndarray
) -> None:
    options = StreamOptions(sample_rate=BROWSER_RATE, hotwords=("科技",))
    recording = LiveRecording(service, vad, options, "tiny")
    reference = StreamSession(service, vad, options)
    step = BROWSER_RATE // 10  # Gradio sends ~100 ms pieces
    shown = []
    for i in range(0, len(browser_audio), step):
        piece = browser_audio[i : i + step]
        assert recording.feed(BROWSER_RATE, piece)
        reference.push(piece[:, 0].copy())
        recording.session.wait(timeout=30)
        shown.append(recording.interim_text())
    recording.stop()
    finals = [e for e in reference.finish(timeout=60) if isinstance(e, Final)]
    assert len(finals) >= 2
    assert recording.rows() == [(round(f.start, 2), round(f.end, 2), f.text) for f in finals]
    assert recording.text() == "".join(f.text for f in finals)
    assert any(shown)  # interims were on show while speaking
    assert recording.interim_text() == ""
    assert [p.name for p in recording.files] == ["live.txt", "live.srt", "live.vtt", "live.json"]
    transcript = reference.transcript()
    assert recording.files[0].read_text(encoding="utf-8") == to_txt(transcript)
    assert recording.files[1].read_text(encoding="utf-8") == to_srt(transcript)
    assert '"model": "tiny"' in recording.files[3].read_text(encoding="utf-8")
    assert "录音结束" in recording.status("zh")
    assert "Stopped" in recording.status("en")
    assert not recording.feed(BROWSER_RATE, browser_audio[:step])  # late chunks are dropped
    folder = recording.files[0].parent
    recording.close()
    assert not folder.exists()


def test_start_recording_takes_the_tabs_options(
    service: Service, vad: SileroVad, tmp_path: Path
) -> None:
    settings = ServerSettings(models=["tiny"], data_dir=tmp_path, max_audio_seconds=60)
    state = FakeState({"tiny": service}, settings)
    recording = start_recording(state, vad, "tiny", "科技, 因为\n魔搭", False, False, 44100)
    options = recording.session.options
    assert options.hotwords == ("科技", "因为", "魔搭")
    assert (options.punctuation, options.itn, options.sample_rate) == (False, False, 44100)
    assert options.max_session_s == 60
    recording.close()


def test_hotwords_on_a_plain_paraformer_are_refused(
    tiny_model_dir: Callable[..., Path], vad: SileroVad, tmp_path: Path
) -> None:
    plain = Service(
        Engine(load_model(tiny_model_dir("paraformer-tiny")), EngineOptions(vad="none"))
    )
    with plain:
        state = FakeState({"plain": plain}, ServerSettings(models=["plain"], data_dir=tmp_path))
        with pytest.raises(ValueError, match="hotwords"):
            start_recording(state, vad, None, "科技", True, True, 16000)


# --- in a browser -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server_url(
    engine: Engine, tiny_model_dir: Callable[..., Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    uvicorn = pytest.importorskip("uvicorn")
    from zhuanxie.server import create_app

    settings = ServerSettings(
        models=[str(tiny_model_dir("seaco-paraformer-tiny"))],
        data_dir=tmp_path_factory.mktemp("server-data"),
    )
    app = create_app(settings, {"seaco-tiny": Service(engine)})
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    runner = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=runner.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not runner.started:
        assert time.monotonic() < deadline, "the server did not start in 60 s"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    runner.should_exit = True
    thread.join(timeout=60)
    sock.close()


@pytest.mark.skipif(shutil.which(CHROMIUM) is None, reason=f"no chromium at {CHROMIUM}")
def test_live_tab_in_chromium_with_a_fake_microphone(
    server_url: str, speech: np.ndarray, vad: SileroVad, tmp_path: Path
) -> None:
    playwright = pytest.importorskip("playwright.sync_api")
    mic = tmp_path / "mic.wav"  # chromium plays it in a loop as the microphone
    sf.write(mic, speech, SAMPLE_RATE, subtype="PCM_16")
    flags = [
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={mic}",
    ]
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=flags)
        context = browser.new_context(viewport={"width": 1400, "height": 1300})
        context.grant_permissions(["microphone"])
        page = context.new_page()
        page.set_default_timeout(60_000)
        page.goto(f"{server_url}/ui/")
        page.wait_for_selector("#single-run")
        page.get_by_role("tab", name="实时录音").click()
        page.fill("#live-hotwords textarea", "科技")
        page.locator("#live-mic").get_by_role("button", name="Record").click()
        # Interim text while the first clip is heard, then finals in the table.
        page.wait_for_function("document.querySelector('#live-interim textarea').value !== ''")
        page.wait_for_function(
            "document.querySelectorAll('#live-table [role=gridcell]').length >= 6", timeout=90_000
        )
        page.locator("#live-mic").get_by_role("button", name="Stop").click()
        page.wait_for_selector("#live-files a")
        shots = ARTIFACTS / "browser"
        shots.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(shots / "live.png"), full_page=True)
        text = page.input_value("#live-text textarea")
        rows = page.evaluate(
            """() => {
                const rows = [];
                for (const cell of document.querySelectorAll('#live-table [role=gridcell]')) {
                    (rows[cell.dataset.row] ??= [])[cell.dataset.col] = cell.innerText.trim();
                }
                return rows;
            }"""
        )
        status = page.inner_text("#live-status")
        links = {
            a.inner_text().split("\n")[0]: a.get_attribute("href")
            for a in page.query_selector_all("#live-files a")
        }
        txt_link = next(href for name, href in links.items() if "live.txt" in (href or name))
        txt = page.request.get(txt_link if "://" in txt_link else server_url + txt_link).text()
        context.close()
        browser.close()
    assert len(rows) >= 2
    assert text == "".join(row[2] for row in rows)
    assert txt == "".join(f"{row[2]}\n" for row in rows)
    assert f"共 {len(rows)} 段" in status
    starts = [float(row[0]) for row in rows]
    assert starts == sorted(starts)
    # On the recording's timeline: where the offline VAD finds the file's first speech (the
    # browser's capture and resampling shift it by a few milliseconds at most).
    first = next(iter(vad.segments([speech]))).start / SAMPLE_RATE
    assert starts[0] == pytest.approx(first, abs=0.05)
