"""The Web UI in a real browser: Debian's chromium, driven by Playwright, against the real server
(``create_app`` on uvicorn, 127.0.0.1) with a tiny random SeACo model.

Screenshots go to ``test-artifacts/browser/`` (``ZHUANXIE_TEST_ARTIFACTS`` overrides the folder).
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from zhuanxie.deps import AppState
from zhuanxie.engine import AudioInput, Engine, EngineOptions
from zhuanxie.recognizer import Model, load_model
from zhuanxie.service import Service
from zhuanxie.settings import ServerSettings
from zhuanxie.writers import to_srt

pytest.importorskip("gradio", reason="the Web UI needs gradio (the 'ui' extra)")
playwright = pytest.importorskip("playwright.sync_api", reason="needs the playwright package")
uvicorn = pytest.importorskip("uvicorn", reason="needs uvicorn")

CHROMIUM = os.environ.get("ZHUANXIE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(
    os.environ.get(
        "ZHUANXIE_TEST_ARTIFACTS", Path(__file__).resolve().parents[1] / "test-artifacts"
    )
)
OPTIONS = EngineOptions(vad="none")
MODEL_ID = "seaco-tiny"
TIMEOUT_MS = 60_000

pytestmark = pytest.mark.skipif(
    shutil.which(CHROMIUM) is None,
    reason=f"no chromium at {CHROMIUM} (apt-get install chromium, or set ZHUANXIE_CHROMIUM)",
)


@pytest.fixture(scope="module")
def model(tiny_model_dir: Callable[..., Path]) -> Model:
    return load_model(tiny_model_dir("seaco-paraformer-tiny"))


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("browser-clips")
    rng = np.random.default_rng(11)
    paths = []
    for name, seconds in (("会议录音.wav", 2.6), ("b.wav", 1.4), ("c.wav", 3.1)):
        path = folder / name
        sf.write(path, rng.normal(0, 0.1, int(seconds * 16000)).astype(np.float32), 16000)
        paths.append(path)
    return paths


@dataclass(frozen=True)
class Server:
    url: str
    state: AppState


@pytest.fixture(scope="module")
def server(
    model: Model, tiny_model_dir: Callable[..., Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """The server's app with the UI mounted, on a free port."""
    from zhuanxie.server import create_app

    settings = ServerSettings(
        models=[str(tiny_model_dir("seaco-paraformer-tiny"))],
        data_dir=tmp_path_factory.mktemp("server-data"),
    )
    app = create_app(settings, {MODEL_ID: Service(Engine(model, OPTIONS))})
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    runner = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=runner.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not runner.started:
        assert thread.is_alive(), "the server stopped while starting"
        assert time.monotonic() < deadline, "the server did not start in 60 s"
        time.sleep(0.05)
    yield Server(f"http://127.0.0.1:{port}", app.state.zhuanxie)
    runner.should_exit = True
    thread.join(timeout=60)
    sock.close()


@pytest.fixture(scope="module")
def page(server: Server) -> Iterator[Any]:
    shots = ARTIFACTS / "browser"
    shots.mkdir(parents=True, exist_ok=True)
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
        )
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(f"{server.url}/ui/")
        page.wait_for_selector("#single-run")
        yield page
        context.close()
        browser.close()


def shot(page: Any, name: str) -> Path:
    path = ARTIFACTS / "browser" / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def table_cells(page: Any, elem_id: str) -> list[list[str]]:
    """The text of a Gradio table's body cells, row by row, once it has rows."""
    script = """id => {
        const rows = [];
        for (const cell of document.querySelectorAll(`#${id} [role=gridcell]`)) {
            (rows[cell.dataset.row] ??= [])[cell.dataset.col] = cell.innerText.trim();
        }
        return rows;
    }"""
    page.wait_for_function(f"document.querySelector('#{elem_id} [role=gridcell]')")
    cells: list[list[str]] = page.evaluate(script, elem_id)
    return cells


def number(seconds: float) -> str:
    """A time as the table shows it (rounded to 10 ms, no trailing zeros)."""
    return f"{round(seconds, 2):g}"


def test_single_file_shows_the_engines_transcript(
    page: Any, model: Model, clips: list[Path]
) -> None:
    expected = Engine(model, OPTIONS).transcribe(AudioInput(clips[0]))
    assert expected.text
    shot(page, "0-start")
    page.locator("#single-audio input[type=file]").set_input_files(str(clips[0]))
    # Uploaded once the player offers the file back.
    page.locator("#single-audio [data-testid=download-link]").wait_for(state="attached")
    page.locator("#single-run").click()
    shown = page.locator("#single-text textarea")
    page.wait_for_function(
        "document.querySelector('#single-text textarea').value.length > 0", timeout=TIMEOUT_MS
    )
    assert shown.input_value() == expected.text
    assert table_cells(page, "single-table") == [
        [number(s.start), number(s.end), s.text] for s in expected.segments
    ]
    links = page.locator("#single-files a[download]")
    names = [links.nth(i).get_attribute("download") for i in range(links.count())]
    assert names == [f"会议录音.{fmt}" for fmt in ("txt", "srt", "vtt", "json")]
    with page.expect_download() as download:
        links.nth(1).click()
    assert Path(download.value.path()).read_text(encoding="utf-8") == to_srt(expected)
    shot(page, "1-single-file")


def test_language_switch_to_english_and_back(page: Any) -> None:
    page.locator("#language").get_by_text("English").click()
    page.get_by_role("button", name="Transcribe").wait_for()
    page.get_by_role("tab", name="Batch").wait_for()
    assert page.locator("#single-table").get_by_text("Start (s)").count() == 1
    shot(page, "2-english")
    page.locator("#language").get_by_text("中文").click()
    page.get_by_role("button", name="开始识别").wait_for()


def test_batch_progress_and_zip(page: Any, model: Model, clips: list[Path]) -> None:
    engine = Engine(model, OPTIONS)
    expected = {p.name: engine.transcribe(AudioInput(p)).text for p in clips}
    page.get_by_role("tab", name="批量处理").click()
    page.locator("#batch-files input[type=file]").set_input_files([str(p) for p in clips])
    page.wait_for_function("document.querySelectorAll('#batch-files a[download]').length === 3")
    page.locator("#batch-run").click()
    page.locator("#batch-zip a").first.wait_for()
    summary = page.locator("#batch-summary").inner_text()
    assert summary.strip() == "共 3 个文件：完成 3，失败 0，进行中 0"
    durations = [number(sf.info(p).duration) for p in clips]
    assert table_cells(page, "batch-table") == [
        [p.name, "完成", d, expected[p.name]] for p, d in zip(clips, durations)
    ]
    shot(page, "3-batch")
    with page.expect_download() as download:
        page.locator("#batch-zip a").first.click()
    with zipfile.ZipFile(download.value.path()) as archive:
        assert sorted(archive.namelist()) == sorted(
            f"{Path(name).stem}.{fmt}" for name in expected for fmt in ("txt", "srt", "vtt", "json")
        )
        assert archive.read("b.json").decode().count(expected["b.wav"]) >= 1


def save_list(page: Any, name: str, phrases: str) -> None:
    page.get_by_role("tab", name="热词").click()
    page.locator("#lists-name textarea, #lists-name input").first.fill(name)
    page.locator("#lists-phrases textarea").fill(phrases)
    page.locator("#lists-save").click()
    page.locator("#lists-status").get_by_text(f"已保存「{name}」").wait_for()


def test_a_saved_hotword_list_fills_the_single_file_tab(page: Any) -> None:
    save_list(page, "会议", "达摩院\n魔搭，阿里巴巴")
    page.locator("#lists-status").get_by_text("已保存「会议」，共 3 个热词").wait_for()
    assert page.locator("#lists-phrases textarea").input_value() == "达摩院\n魔搭\n阿里巴巴"
    shot(page, "4-hotwords")
    page.get_by_role("tab", name="单文件识别").click()
    page.locator("#single-list input").click()
    page.get_by_role("option", name="会议").click()
    hotwords = page.locator("#single-hotwords textarea")
    page.wait_for_function(
        "document.querySelector('#single-hotwords textarea').value === '达摩院\\n魔搭\\n阿里巴巴'"
    )
    # Saving another list leaves the single-file tab's choice and hotwords as they are.
    save_list(page, "其他", "某词")
    page.get_by_role("tab", name="单文件识别").click()
    page.locator("#single-list input").click()
    page.get_by_role("option", name="其他").wait_for()  # offered there too
    page.keyboard.press("Escape")
    assert hotwords.input_value() == "达摩院\n魔搭\n阿里巴巴"
    assert page.locator("#single-list input").input_value() == "会议"
    # Pick a list in the hotwords tab, delete it; New empties the form.
    page.get_by_role("tab", name="热词").click()
    page.locator("#lists-chosen input").click()
    page.get_by_role("option", name="其他").click()
    page.wait_for_function("document.querySelector('#lists-phrases textarea').value === '某词'")
    page.locator("#lists-delete").click()
    page.locator("#lists-status").get_by_text("已删除「其他」").wait_for()
    page.locator("#lists-chosen input").click()
    page.get_by_role("option", name="会议").click()
    page.locator("#lists-new").click()
    page.wait_for_function(
        "document.querySelector('#lists-name textarea, #lists-name input').value === ''"
    )
    assert page.locator("#lists-phrases textarea").input_value() == ""


def test_system_tab_shows_the_model_work_and_charts(page: Any, server: Server) -> None:
    stats = server.state.services[MODEL_ID].engine.stats
    assert stats.audio_seconds > 0  # the tests above transcribed
    page.get_by_role("tab", name="系统信息").click()
    info = page.locator("#system-info")
    info.get_by_text(f"模型: {MODEL_ID} (热词: 支持)").wait_for()
    info.get_by_text("设备: cpu").wait_for()
    info.get_by_text(f"已识别音频: {stats.audio_seconds:.1f} s").wait_for()
    info.get_by_text(f"批次 / 片段 / 填充: {stats.batches} / {stats.segments} /").wait_for()
    # The charts draw lines once the timer (every 2 s) has taken a few samples.
    for chart in ("system-speed", "system-queue"):
        page.wait_for_function(
            f"document.querySelector('#{chart} path[aria-roledescription=\"line mark\"]')"
            "?.getAttribute('d').includes('L')"
        )
    page.locator("#system-queue").get_by_text("待识别片段").wait_for()
    shot(page, "5-system")
