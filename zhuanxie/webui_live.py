"""The Web UI's 实时录音 (live microphone) tab: the browser's microphone streamed into a live
session on the server's Service (``zhuanxie.streaming``), as the WebSocket endpoints do.

    microphone ─► Gradio stream (every 0.25 s: sample rate, int16 chunk) ─► LiveRecording.feed
                                                                            (StreamSession.push)
    interim text ◄─ latest Interim    finals table, text ◄─ Finals    stop ─► finish, downloads

``LiveRecording`` holds one browser tab's recording in plain values (tested directly); the
Gradio wiring is ``live_tab``, which ``zhuanxie.webui`` calls inside its 实时录音 tab.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
import numpy.typing as npt

from zhuanxie.hotword_lists import parse_hotwords
from zhuanxie.service import Service
from zhuanxie.streaming import Ended, Final, Interim, StreamOptions, StreamSession
from zhuanxie.text import join_texts
from zhuanxie.vad import SileroVad
from zhuanxie.webui import Labels, option_label, table_frame
from zhuanxie.webui_actions import DOWNLOAD_FORMATS, UiState
from zhuanxie.writers import write_outputs

STREAM_EVERY_S = 0.25  # how often the browser sends what it recorded
FINISH_TIMEOUT_S = 120.0  # longest wait for the last finals after the recording stops
LATE_CHUNK_S = 2.0  # a chunk this soon after a stop belongs to the stopped recording
COLUMNS = ("col_start", "col_end", "col_text")  # zhuanxie.webui_strings keys

# This tab's own strings (zh, en); the shared ones come from zhuanxie.webui_strings by key.
STRINGS: dict[str, tuple[str, str]] = {
    "mic": (
        "麦克风：点击录音即开始实时识别，停止后给出完整结果",
        "Microphone: recognition runs while you record",
    ),
    "interim": (
        "正在说的话（实时，随后会被确定的结果取代）",
        "Being heard now (live; replaced by the final text)",
    ),
    "text": ("已确定的文本", "Final text"),
    "status_idle": ("点击麦克风开始录音。", "Press record to start."),
    "status_live": (
        "录音中：{seconds:.1f} 秒，已确定 {segments} 段",
        "Recording: {seconds:.1f} s, {segments} segments final",
    ),
    "status_done": (
        "录音结束：{seconds:.1f} 秒，共 {segments} 段",
        "Stopped: {seconds:.1f} s, {segments} segments",
    ),
    "bad_hotwords": (
        "该模型不支持热词，请清空热词框",
        "This model takes no hotwords; clear the hotword box",
    ),
}


def say(key: str, lang: str, **fields: object) -> str:
    zh, en = STRINGS[key]
    chosen = en if lang == "en" else zh
    return chosen.format(**fields) if fields else chosen


def label(key: str) -> Any:
    """A label that follows the language switch (``Labels.make`` takes a callable)."""
    return lambda lang: say(key, lang)


Samples = npt.NDArray[Any]


class LiveRecording:
    """One recording from one browser tab: its session, the finals so far and the latest
    interim. ``feed`` and ``stop`` are called one at a time (Gradio runs a session's events in
    order, but a stop may overlap the last chunk's feed: a lock keeps them apart)."""

    def __init__(
        self, service: Service, vad: SileroVad, options: StreamOptions, model: str = ""
    ) -> None:
        self.session = StreamSession(service, vad, options, name="webui-live")
        self.options = options
        self.model = model
        self.sample_rate = options.sample_rate
        self.finals: list[Final] = []
        self.interim: Interim | None = None
        self.stopped_at: float | None = None  # time.monotonic() of the stop
        self.files: list[Path] = []
        self._folder: Path | None = None
        self._lock = threading.RLock()

    def feed(self, sample_rate: int, samples: Samples) -> bool:
        """A chunk as the browser sent it: int16 or float samples, mono or (S, C). False if
        the recording had already stopped (the chunk is dropped)."""
        with self._lock:
            if self.stopped:
                return False
            self._feed(sample_rate, samples)
            return True

    def _feed(self, sample_rate: int, samples: Samples) -> None:
        if sample_rate != self.sample_rate:
            raise ValueError(f"the sample rate changed from {self.sample_rate} to {sample_rate}")
        audio = np.asarray(samples)
        if audio.dtype == np.int16:
            audio = audio.astype(np.float32) / 32768
        if audio.ndim == 2:
            audio = audio.mean(axis=1)
        self.session.push(np.ascontiguousarray(audio, dtype=np.float32))
        self._take(self.session.events())

    def stop(self, timeout: float = FINISH_TIMEOUT_S) -> None:
        """End the recording: wait for its last finals, then write the downloads."""
        with self._lock:
            if self.stopped:
                return
            self._take(self.session.finish(timeout))
            self.stopped_at = time.monotonic()
            self._folder = Path(tempfile.mkdtemp(prefix="zhuanxie-live-"))
            transcript = self.session.transcript()
            options = self.options
            metadata = {
                "model": self.model,
                "source": "microphone",
                "options": {
                    "hotwords": list(options.hotwords),
                    "punctuation": options.punctuation,
                    "itn": options.itn,
                    "sample_rate": options.sample_rate,
                },
            }
            self.files = write_outputs(
                transcript, self._folder / "live", DOWNLOAD_FORMATS, metadata
            )

    def close(self) -> None:
        """Drop the recording: stop its decodes and remove its files."""
        self.session.cancel()
        with self._lock:
            if self._folder is not None:
                shutil.rmtree(self._folder, ignore_errors=True)
                self._folder = None

    @property
    def stopped(self) -> bool:
        return self.stopped_at is not None

    def rows(self) -> list[tuple[float, float, str]]:
        return [(round(f.start, 2), round(f.end, 2), f.text) for f in self.finals if f.text]

    def text(self) -> str:
        return join_texts([f.text for f in self.finals if f.text])

    def interim_text(self) -> str:
        return self.interim.text if self.interim is not None else ""

    def status(self, lang: str) -> str:
        key = "status_done" if self.stopped else "status_live"
        return say(key, lang, seconds=self.session.duration, segments=len(self.rows()))

    def _take(self, events: list[Any]) -> None:
        for event in events:
            if isinstance(event, Interim):
                self.interim = event
            elif isinstance(event, Final):
                self.finals.append(event)
                if self.interim is not None and self.interim.segment <= event.segment:
                    self.interim = None
            else:
                assert isinstance(event, Ended)
                self.interim = None


def start_recording(
    state: UiState,
    vad: SileroVad,
    model: str | None,
    hotwords: str,
    punctuation: bool,
    itn: bool,
    sample_rate: int,
) -> LiveRecording:
    """A recording on ``model``'s service (the default when None) with the tab's options."""
    services = state.services
    name = model if model is not None and model in services else next(iter(services))
    options = StreamOptions(
        sample_rate=sample_rate,
        hotwords=parse_hotwords(hotwords or ""),
        punctuation=punctuation,
        itn=itn,
        max_session_s=state.settings.max_audio_seconds,
    )
    return LiveRecording(services[name], vad, options, name)


def live_tab(state: UiState, labels: Labels, lang: gr.Radio) -> None:
    """The tab's components and handlers, built inside the open 实时录音 tab."""
    vad = SileroVad()
    models = list(state.services)
    engines = [s.engine for s in state.services.values()]
    posts = [e.postprocessor for e in engines if e.postprocessor is not None]
    has_hotwords = any(e.backend.supports_hotwords for e in engines)
    has_punctuation = any(p.punctuator is not None for p in posts)
    has_itn = any(p.itn is not None for p in posts)
    model = labels.make(
        gr.Dropdown,
        "model",
        choices=models,
        value=models[0],
        visible=len(models) > 1,
        elem_id="live-model",
    )
    hotwords = labels.make(
        gr.Textbox, option_label("hotwords", has_hotwords), lines=2, elem_id="live-hotwords"
    )
    with gr.Row():
        punctuation = labels.make(
            gr.Checkbox,
            option_label("punctuation", has_punctuation),
            value=has_punctuation,
            interactive=has_punctuation,
            elem_id="live-punctuation",
        )
        itn = labels.make(
            gr.Checkbox,
            option_label("itn", has_itn),
            value=has_itn,
            interactive=has_itn,
            elem_id="live-itn",
        )
    mic = labels.make(
        gr.Audio,
        label("mic"),
        sources=["microphone"],
        streaming=True,
        type="numpy",
        elem_id="live-mic",
    )
    status = labels.make(gr.Markdown, label("status_idle"), "value", elem_id="live-status")
    interim = labels.make(gr.Textbox, label("interim"), interactive=False, elem_id="live-interim")
    text = labels.make(gr.Textbox, label("text"), lines=6, interactive=False, elem_id="live-text")
    table = labels.table(COLUMNS, "timestamps", elem_id="live-table")
    files = labels.make(
        gr.File, "downloads", file_count="multiple", interactive=False, elem_id="live-files"
    )
    recording = gr.State(None, delete_callback=_drop)

    def feed(
        chunk: tuple[int, Samples] | None,
        current: LiveRecording | None,
        model_id: str | None,
        phrases: str,
        punc: bool,
        normalise: bool,
        language: str,
    ) -> tuple[Any, ...]:
        if chunk is None:
            return (current, gr.skip(), gr.skip(), gr.skip(), gr.skip())
        rate, samples = chunk
        if current is not None and current.stopped:
            if time.monotonic() - (current.stopped_at or 0) < LATE_CHUNK_S:
                return (current, gr.skip(), gr.skip(), gr.skip(), gr.skip())
            current.close()  # a new recording replaces the finished one
            current = None
        if current is None:
            try:
                current = start_recording(state, vad, model_id, phrases, punc, normalise, int(rate))
            except ValueError as e:
                message = say("bad_hotwords", language) if "hotword" in str(e) else str(e)
                raise gr.Error(message) from None
        if not current.feed(int(rate), samples):  # it stopped meanwhile
            return (current, gr.skip(), gr.skip(), gr.skip(), gr.skip())
        return (
            current,
            current.interim_text(),
            current.text(),
            table_frame(current.rows(), COLUMNS, language),
            current.status(language),
        )

    def stop(current: LiveRecording | None, language: str) -> tuple[Any, ...]:
        if current is None or current.stopped:
            return (current, gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip())
        current.stop()
        return (
            current,
            "",
            current.text(),
            table_frame(current.rows(), COLUMNS, language),
            current.status(language),
            [str(p) for p in current.files],
        )

    mic.stream(
        feed,
        [mic, recording, model, hotwords, punctuation, itn, lang],
        [recording, interim, text, table, status],
        stream_every=STREAM_EVERY_S,
        time_limit=int(state.settings.max_audio_seconds),
        concurrency_limit=None,  # every browser streams at once; a chunk is quick to push
        show_progress="hidden",
    )
    mic.stop_recording(
        stop,
        [recording, lang],
        [recording, interim, text, table, status, files],
        concurrency_limit=None,
    )


def _drop(recording: LiveRecording | None) -> None:
    """Gradio forgets a browser session's state: stop its recording."""
    if recording is not None:
        recording.close()
