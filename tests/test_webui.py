"""The Web UI's handlers on a real Service and JobManager (tiny random SeACo model, CPU)."""

from __future__ import annotations

import importlib.util
import json
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from zhuanxie.batchjobs import JobManager
from zhuanxie.deps import AppState
from zhuanxie.engine import AudioInput, Engine, EngineOptions
from zhuanxie.hotwords import hotwords_found
from zhuanxie.metrics import Metrics
from zhuanxie.recognizer import Model, load_model
from zhuanxie.result import Transcript
from zhuanxie.service import Load, Service
from zhuanxie.settings import ServerSettings
from zhuanxie.webui_actions import (
    RecognitionOptions,
    StatsHistory,
    UiError,
    WebUi,
    timestamp_rows,
)
from zhuanxie.webui_strings import STRINGS, text
from zhuanxie.writers import to_srt, to_txt, to_vtt

gr = pytest.importorskip("gradio", reason="the Web UI needs gradio (the 'ui' extra)")
webui = pytest.importorskip("zhuanxie.webui")

OPTIONS = EngineOptions(vad="none")
MODEL_ID = "seaco-tiny"
ALL_ON = RecognitionOptions(punctuation=True, itn=True, vad=True)


@pytest.fixture(scope="module")
def model(tiny_model_dir: Callable[..., Path]) -> Model:
    return load_model(tiny_model_dir("seaco-paraformer-tiny"))


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Three WAV files of noise (the random model gives each some text)."""
    folder = tmp_path_factory.mktemp("clips")
    rng = np.random.default_rng(7)
    paths = []
    for i, seconds in enumerate((1.5, 2.5, 3.2)):
        path = folder / f"clip{i}.wav"
        sf.write(path, rng.normal(0, 0.1, int(seconds * 16000)).astype(np.float32), 16000)
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def state(
    model: Model, tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Callable[..., Path]
) -> Iterator[AppState]:
    settings = ServerSettings(
        models=[str(tiny_model_dir("seaco-paraformer-tiny"))],
        data_dir=tmp_path_factory.mktemp("data"),
    )
    services = {MODEL_ID: Service(Engine(model, OPTIONS))}
    jobs = JobManager(services, settings)
    jobs.start()
    yield AppState(settings, services, jobs, Metrics(services))
    jobs.close()
    for service in services.values():
        service.close()


@pytest.fixture(scope="module")
def ui(state: AppState) -> WebUi:
    return WebUi(state)


def engine_transcript(model: Model, path: Path, hotwords: tuple[str, ...] = ()) -> Transcript:
    return Engine(model, OPTIONS).transcribe(AudioInput(path, hotwords=hotwords))


def test_single_file_text_timestamps_and_downloads(
    ui: WebUi, model: Model, clips: list[Path]
) -> None:
    result = ui.transcribe_single(str(clips[1]), None, "", ALL_ON)
    expected = engine_transcript(model, clips[1])
    assert result.transcript.text == expected.text != ""
    assert result.rows == [(round(s.start, 2), round(s.end, 2), s.text) for s in expected.segments]
    assert [p.name for p in result.files] == ["clip1.txt", "clip1.srt", "clip1.vtt", "clip1.json"]
    txt, srt, vtt, js = (p.read_text(encoding="utf-8") for p in result.files)
    assert (txt, srt, vtt) == (to_txt(expected), to_srt(expected), to_vtt(expected))
    document = json.loads(js)
    assert document["text"] == expected.text
    assert document["metadata"] == {
        "model": MODEL_ID,
        "options": {"hotwords": [], "punctuation": True, "itn": True, "vad": True},
        "input": "clip1.wav",
    }


def test_single_file_hotwords_reach_the_model(ui: WebUi, model: Model, clips: list[Path]) -> None:
    result = ui.transcribe_single(str(clips[0]), MODEL_ID, "达摩院，魔搭\n阿里 巴巴\n", ALL_ON)
    hotwords = ("达摩院", "魔搭", "阿里 巴巴")
    expected = engine_transcript(model, clips[0], hotwords)
    assert result.transcript.hotwords == hotwords
    assert result.transcript.text == expected.text
    assert result.transcript.hotwords_found == hotwords_found(expected.text, hotwords)


def test_single_file_errors_speak_the_users_language(ui: WebUi, tmp_path: Path) -> None:
    with pytest.raises(UiError) as missing:
        ui.transcribe_single(None, None, "", ALL_ON)
    assert missing.value.message("zh") == "请先上传或录制一段音频"
    assert missing.value.message("en") == "Upload or record a clip first"
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"not audio at all")
    with pytest.raises(UiError) as failed:
        ui.transcribe_single(str(broken), None, "", ALL_ON)
    assert failed.value.key == "failed"
    assert failed.value.message("zh").startswith("识别失败：")
    assert "broken.wav" in failed.value.message("en")


def test_a_clip_over_the_request_timeout_is_cancelled(
    state: AppState, model: Model, clips: list[Path]
) -> None:
    impatient = replace(state, settings=state.settings.model_copy(update={"request_timeout": 1e-6}))
    with pytest.raises(UiError) as e:
        WebUi(impatient).transcribe_single(str(clips[2]), None, "", ALL_ON)
    assert e.value.message("en") == "Transcription took over 1e-06 s and was cancelled"
    service = state.services[MODEL_ID]
    deadline = time.monotonic() + 30
    while service.load().urgent:  # the cancelled input leaves the service
        assert time.monotonic() < deadline
        time.sleep(0.01)


def test_timestamps_are_sentences_when_punctuation_made_them(
    ui: WebUi, model: Model, clips: list[Path]
) -> None:
    from zhuanxie.result import Sentence

    plain = engine_transcript(model, clips[2])
    tokens = plain.tokens
    sentence = Sentence("一句。", tokens[0].start, tokens[-1].end, tokens)
    with_sentences = Transcript(plain.text, plain.duration, plain.segments, sentences=(sentence,))
    assert timestamp_rows(with_sentences) == [
        (round(tokens[0].start, 2), round(tokens[-1].end, 2), "一句。")
    ]


def wait_finished(ui: WebUi, job_id: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while ui.batch_view(job_id).status.state == "running":
        assert time.monotonic() < deadline, "the batch job did not finish"
        time.sleep(0.05)


def test_batch_rows_texts_and_zip(ui: WebUi, model: Model, clips: list[Path]) -> None:
    job_id = ui.start_batch([str(p) for p in clips], None, "", ALL_ON)
    wait_finished(ui, job_id)
    view = ui.batch_view(job_id)
    assert (view.status.state, view.status.done, view.status.failed) == ("done", 3, 0)
    expected = [engine_transcript(model, p) for p in clips]
    assert [(r.name, r.state, r.detail) for r in view.rows] == [
        (p.name, "done", t.text) for p, t in zip(clips, expected)
    ]
    assert [r.duration for r in view.rows] == [1.5, 2.5, 3.2]
    with zipfile.ZipFile(ui.batch_zip(job_id)) as archive:
        assert sorted(archive.namelist()) == sorted(
            f"clip{i}.{fmt}" for i in range(3) for fmt in ("txt", "srt", "vtt", "json")
        )
        assert archive.read("clip2.txt").decode() == to_txt(expected[2])


def test_batch_reports_a_broken_file_and_goes_on(
    ui: WebUi, clips: list[Path], tmp_path: Path
) -> None:
    broken = tmp_path / "broken.mp3"
    broken.write_bytes(b"\x00" * 1000)
    job_id = ui.start_batch([str(broken), str(clips[0])], MODEL_ID, "魔搭", ALL_ON)
    wait_finished(ui, job_id)
    view = ui.batch_view(job_id)
    assert [r.state for r in view.rows] == ["failed", "done"]
    assert "broken.mp3" in view.rows[0].detail
    assert view.status.options.hotwords == ("魔搭",)


def test_batch_needs_files(ui: WebUi) -> None:
    with pytest.raises(UiError) as e:
        ui.start_batch([], None, "", ALL_ON)
    assert e.value.message("en") == "Choose audio files first"


def test_hotword_lists_are_files_in_the_data_dir(ui: WebUi, state: AppState) -> None:
    saved = ui.save_list(" 会议 ", "达摩院\n魔搭, 阿里巴巴，魔搭\n\n")
    assert saved == ("达摩院", "魔搭", "阿里巴巴")
    path = state.settings.data_dir / "hotwords" / "会议.txt"
    assert path.read_text(encoding="utf-8") == "达摩院\n魔搭\n阿里巴巴\n"
    ui.save_list("a-list", "x")
    assert ui.list_names() == ["a-list", "会议"]
    assert ui.list_text("会议") == "达摩院\n魔搭\n阿里巴巴"
    assert ui.list_text(None) == ""
    ui.save_list("会议", "新词")  # editing replaces the list
    assert ui.list_text("会议") == "新词"
    ui.delete_list("会议")
    ui.delete_list("a-list")
    assert ui.list_names() == []
    with pytest.raises(UiError):
        ui.delete_list(None)


def test_system_rows_report_the_model_device_and_work(ui: WebUi, state: AppState) -> None:
    stats = state.services[MODEL_ID].engine.stats
    rows = dict(ui.system_rows("en"))
    assert rows["Model"] == f"{MODEL_ID} (Hotwords: supported)"
    assert rows["Device"] == "cpu"
    assert rows["Audio transcribed"] == f"{stats.audio_seconds:.1f} s"
    assert rows["Load (interactive / bulk / backlog)"] == "0 / 0 / 0"
    assert rows["Process"].startswith("torch ")
    assert dict(ui.system_rows("zh"))["设备"] == "cpu"


def test_stats_history_throughput_between_samples() -> None:
    from zhuanxie.engine import EngineStats

    history = StatsHistory(maxlen=3)
    idle = Load(0, 0, 0)
    for at, audio in ((100.0, 0.0), (100.5, 9.0), (102.0, 10.0), (104.0, 30.0), (106.0, 30.0)):
        history.sample(EngineStats(audio_seconds=audio), idle, now=at)
    # 100.5 came too soon after 100.0 and was dropped; maxlen keeps the last three samples.
    assert [s.at for s in history.samples()] == [102.0, 104.0, 106.0]
    assert history.throughput() == [(104.0, 10.0), (106.0, 0.0)]
    speed, queue = webui.history_frames(history, "en")
    assert speed["speed"].tolist() == [10.0, 0.0]
    assert sorted(set(queue["series"])) == ["bulk inputs", "interactive inputs", "segments waiting"]


def test_language_switch_relabels_components_and_table_headers() -> None:
    labels = webui.Labels()
    with gr.Blocks():
        button = labels.make(gr.Button, "transcribe", "value")
        box = labels.make(gr.Checkbox, webui.option_label("itn", False))
        table = labels.table(("col_start", "col_text"), "timestamps")
    assert (button.value, box.label, table.label) == (
        "开始识别",
        "数字规整（ITN）（未加载）",
        "时间戳",
    )
    labels.add(table, "timestamps", "elem_id")  # a second attribute of the same component
    rows = webui.table_frame([(0.5, "你好")], ("col_start", "col_text"), "zh")
    button_update, box_update, table_update = labels.switch("en", rows)
    assert button_update == gr.update(value="Transcribe")
    assert box_update == gr.update(label="Numbers as digits (ITN) (not loaded)")
    assert table_update.keys() == {"__type__", "label", "elem_id", "value"}
    assert table_update["label"] == table_update["elem_id"] == "Timestamps"
    assert table_update["value"].equals(
        pd.DataFrame([[0.5, "你好"]], columns=["Start (s)", "Text"])
    )
    assert labels.outputs() == [button, box, table]


def test_build_ui_has_every_tab(state: AppState) -> None:
    demo = webui.build_ui(state)
    tabs = [b.label for b in demo.blocks.values() if isinstance(b, gr.Tab)]
    live = ["实时录音"] if importlib.util.find_spec("zhuanxie.webui_live") else []
    assert tabs == ["单文件识别", "批量处理", *live, "热词", "系统信息"]


def test_every_string_has_both_languages_with_the_same_fields() -> None:
    import string

    for key, (zh, en) in STRINGS.items():
        assert zh, key
        assert en, key
        fields = [{f for _, f, _, _ in string.Formatter().parse(s) if f} for s in (zh, en)]
        assert fields[0] == fields[1], key
    assert text("batch_summary", "en", total=3, done=1, failed=1, active=1) == (
        "3 files: 1 done, 1 failed, 1 in progress"
    )
