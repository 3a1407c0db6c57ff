"""The Web UI: a Gradio app that the server mounts at ``/ui`` on its own FastAPI app.

    build_ui(state) ─► tabs: 单文件识别 · 批量处理 · 实时录音 · 热词 · 系统信息
                         └► event handlers: Gradio updates, errors in the user's language
                              └► WebUi (webui_actions): plain values on the server's Service,
                                 job manager, saved hotword lists and engine counters

Every string comes from the table in ``webui_strings``; the language switch re-labels every
registered component in place (no reload, nothing typed is lost).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import gradio as gr
import pandas as pd

from zhuanxie.batchjobs import JobNotFoundError, JobStatus
from zhuanxie.hotword_lists import HotwordListError
from zhuanxie.result import Transcript
from zhuanxie.webui_actions import RecognitionOptions, StatsHistory, UiError, UiState, WebUi
from zhuanxie.webui_strings import DEFAULT_LANGUAGE, LANGUAGES, text

__all__ = ["UiState", "build_ui"]

LANG0 = DEFAULT_LANGUAGE  # what the page shows before the user switches
Label = Callable[[str], str]  # language code -> the text shown


class Labels:
    """Components whose text follows the language switch, and the tables whose headers do."""

    def __init__(self) -> None:
        self.entries: list[tuple[Any, str, Label]] = []
        self.tables: list[tuple[gr.Dataframe, tuple[str, ...]]] = []

    def make(
        self, kind: Callable[..., Any], key: str | Label, attr: str = "label", **kw: Any
    ) -> Any:
        """``kind(**kw)`` with its ``attr`` set to the string ``key`` (or ``key(lang)``), and
        registered to follow the language."""
        label = key if callable(key) else _lookup(key)
        block = kind(**{attr: label(LANG0)}, **kw)
        self.entries.append((block, attr, label))
        return block

    def add(self, block: Any, key: str | Label, attr: str) -> None:
        """Register another attribute of ``block`` made with ``make`` (set now, and on switch)."""
        label = key if callable(key) else _lookup(key)
        setattr(block, attr, label(LANG0))
        self.entries.append((block, attr, label))

    def table(self, columns: tuple[str, ...], key: str, **kw: Any) -> gr.Dataframe:
        """A read-only table with headers from the string keys ``columns``."""
        frame = self.make(
            gr.Dataframe, key, value=table_frame([], columns, LANG0), interactive=False, **kw
        )
        self.tables.append((frame, columns))
        return frame

    def outputs(self) -> list[Any]:
        """Every registered component once, in the order of ``switch``'s updates."""
        return list({id(b): b for b, _, _ in self.entries}.values())

    def switch(self, lang: str, *tables: pd.DataFrame | None) -> list[Any]:
        """One update per component: its texts in ``lang``, and for the tables (current
        values given in registration order) their rows under the new headers."""
        changes: dict[int, dict[str, Any]] = {}
        for block, attr, label in self.entries:
            changes.setdefault(id(block), {})[attr] = label(lang)
        for (table, columns), value in zip(self.tables, tables, strict=True):
            rows = [] if value is None else value.to_numpy().tolist()
            changes[id(table)]["value"] = table_frame(rows, columns, lang)
        return [gr.update(**change) for change in changes.values()]


def _lookup(key: str) -> Label:
    return lambda lang: text(key, lang)


def table_frame(rows: Sequence[Sequence[Any]], columns: Sequence[str], lang: str) -> pd.DataFrame:
    """Rows under headers in ``lang`` (``columns`` are string-table keys)."""
    return pd.DataFrame([list(r) for r in rows], columns=[text(c, lang) for c in columns])


def build_ui(state: UiState) -> gr.Blocks:
    """The Web UI on the server's state; mount it with ``gradio.mount_gradio_app(app, ...)``."""
    ui = WebUi(state)
    labels = Labels()
    # delete_cache: Gradio keeps uploads and returned files in its cache; a long-running server
    # must drop them (every 10 minutes, those older than an hour).
    with gr.Blocks(title="转写 zhuanxie", delete_cache=(600, 3600)) as demo:
        with gr.Row(equal_height=True):
            labels.make(gr.Markdown, "title", "value", scale=3)
            lang = labels.make(
                gr.Radio,
                "language",
                choices=list(LANGUAGES),
                value=LANG0,
                scale=1,
                elem_id="language",
            )
        pickers: list[gr.Dropdown] = []  # every tab's choice of saved hotword list
        with gr.Tabs():
            with labels.make(gr.Tab, "tab_single", elem_id="tab-single") as single:
                pickers.append(single_tab(ui, labels, lang))
            with labels.make(gr.Tab, "tab_batch", elem_id="tab-batch") as batch:
                pickers.append(batch_tab(ui, labels, lang))
            live = live_tab(ui, labels, lang)
            with labels.make(gr.Tab, "tab_hotwords", elem_id="tab-hotwords") as hotwords:
                hotwords_tab(ui, labels, lang, pickers)
            with labels.make(gr.Tab, "tab_system", elem_id="tab-system") as system:
                timer = system_tab(ui, labels, lang, system)
        # Poll the engine only while the system tab is open.
        for tab in (single, batch, live, hotwords, system):
            if tab is not None:
                tab.select(timer_switch(tab is system), None, timer, queue=False)
        tables = [t for t, _ in labels.tables]
        lang.change(labels.switch, [lang, *tables], labels.outputs(), queue=False)
        # Lists saved from another session (or by hand in the data folder) show on reload.
        demo.load(lambda: [gr.update(choices=ui.list_names())] * len(pickers), None, pickers)
    return demo


def live_tab(ui: WebUi, labels: Labels, lang: gr.Radio) -> gr.Tab | None:
    """The 实时录音 tab, from the streaming module when it is installed.

    Contract: ``zhuanxie.webui_live.live_tab(state, labels, lang)`` builds its components in the
    open tab, taking its strings from ``webui_strings`` through ``labels.make`` so that they
    follow the language switch (``lang`` is the language radio, an input for its handlers).
    """
    try:
        from zhuanxie.webui_live import live_tab as build_live_tab
    except ModuleNotFoundError as e:
        if e.name != "zhuanxie.webui_live":  # the module is there but something it needs is not
            raise
        return None
    with labels.make(gr.Tab, "tab_live", elem_id="tab-live") as tab:
        build_live_tab(ui.state, labels, lang)
    return tab


def timer_switch(active: bool) -> Callable[[], gr.Timer]:
    return lambda: gr.Timer(active=active)


def recognition_options(ui: WebUi, labels: Labels, prefix: str) -> tuple[Any, ...]:
    """A tab's model choice (shown when several are served), saved-list picker, hotword box and
    punctuation / ITN / VAD checkboxes."""
    caps = ui.capabilities()
    models = ui.models
    model = labels.make(
        gr.Dropdown,
        "model",
        choices=models,
        value=models[0],
        visible=len(models) > 1,
        elem_id=f"{prefix}-model",
    )
    picker = labels.make(
        gr.Dropdown, "hotword_list", choices=ui.list_names(), value=None, elem_id=f"{prefix}-list"
    )
    hotwords = labels.make(
        gr.Textbox, option_label("hotwords", caps.hotwords), lines=3, elem_id=f"{prefix}-hotwords"
    )
    boxes = []
    with gr.Row():
        for key, on in (("punctuation", caps.punctuation), ("itn", caps.itn), ("vad", caps.vad)):
            box = labels.make(
                gr.Checkbox,
                option_label(key, on),
                value=on,
                interactive=on,
                elem_id=f"{prefix}-{key}",
            )
            boxes.append(box)
    # .input: the user's choice only, not a value set by another event (a list being saved).
    picker.input(list_text(ui), picker, hotwords, queue=False)
    return (model, picker, hotwords, *boxes)


def list_text(ui: WebUi) -> Callable[[str | None], str]:
    """A saved list's phrases for a text box (an error message if it was deleted meanwhile)."""

    def read(name: str | None) -> str:
        try:
            return ui.list_text(name)
        except HotwordListError as e:
            raise gr.Error(str(e)) from e

    return read


def option_label(key: str, available: bool) -> Label:
    """An option's label, marked as having no effect when no served model can honour it."""
    return lambda lang: text(key, lang) + ("" if available else text("unavailable", lang))


def single_tab(ui: WebUi, labels: Labels, lang: gr.Radio) -> gr.Dropdown:
    """Upload or record a clip; its text, timed sentences and files. Returns the list picker."""
    columns = ("col_start", "col_end", "col_text")
    with gr.Row():
        with gr.Column():
            audio = labels.make(
                gr.Audio,
                "audio",
                sources=["upload", "microphone"],
                type="filepath",
                elem_id="single-audio",
            )
            model, picker, *options = recognition_options(ui, labels, "single")
            button = labels.make(
                gr.Button, "transcribe", "value", variant="primary", elem_id="single-run"
            )
        with gr.Column():
            transcript = labels.make(
                gr.Textbox, "text", lines=6, interactive=False, elem_id="single-text"
            )
            found = gr.Markdown(elem_id="single-found")
            table = labels.table(columns, "timestamps", wrap=True, elem_id="single-table")
            files = labels.make(
                gr.File,
                "downloads",
                file_count="multiple",
                interactive=False,
                elem_id="single-files",
            )

    def run(
        audio_path: str | None,
        model: str,
        hotwords: str,
        punctuation: bool,
        itn: bool,
        vad: bool,
        lang: str,
    ) -> tuple[str, str, pd.DataFrame, list[str]]:
        options = RecognitionOptions(punctuation, itn, vad)
        try:
            result = ui.transcribe_single(audio_path, model, hotwords, options)
        except UiError as e:
            raise gr.Error(e.message(lang)) from e
        return (
            result.transcript.text,
            found_line(result.transcript, lang),
            table_frame(result.rows, columns, lang),
            [str(p) for p in result.files],
        )

    # Every user's clip goes to the shared Service, which batches them together: no Gradio limit.
    button.click(
        run,
        [audio, model, *options, lang],
        [transcript, found, table, files],
        concurrency_limit=None,
    )
    return picker


def batch_tab(ui: WebUi, labels: Labels, lang: gr.Radio) -> gr.Dropdown:
    """Many files as one batch job: live per-file progress, texts, and a zip of every result.
    Returns the list picker."""
    columns = ("col_file", "col_state", "col_duration", "col_text")
    with gr.Row():
        with gr.Column():
            files = labels.make(
                gr.File,
                "batch_files",
                file_count="multiple",
                type="filepath",
                elem_id="batch-files",
            )
            model, picker, *options = recognition_options(ui, labels, "batch")
            button = labels.make(
                gr.Button, "batch_start", "value", variant="primary", elem_id="batch-run"
            )
        with gr.Column():
            summary = gr.Markdown(elem_id="batch-summary")
            table = labels.table(columns, "batch_table", wrap=True, elem_id="batch-table")
            archive = labels.make(gr.File, "batch_zip", interactive=False, elem_id="batch-zip")
    job = gr.State(None)  # this session's job id
    timer = gr.Timer(1.0, active=False)

    def start(
        paths: list[str] | None,
        model: str,
        hotwords: str,
        punctuation: bool,
        itn: bool,
        vad: bool,
        lang: str,
    ) -> tuple[str, gr.Timer, str, pd.DataFrame, None]:
        options = RecognitionOptions(punctuation, itn, vad)
        try:
            job_id = ui.start_batch(paths, model, hotwords, options)
        except UiError as e:
            raise gr.Error(e.message(lang)) from e
        return job_id, gr.Timer(active=True), "", table_frame([], columns, lang), None

    def show(job_id: str | None, lang: str) -> tuple[str, pd.DataFrame, str | None]:
        """The summary and the table, and the job's state (None: no job, or it is gone)."""
        if job_id is None:
            return "", table_frame([], columns, lang), None
        try:
            view = ui.batch_view(job_id)
        except JobNotFoundError:  # deleted through the API meanwhile
            return text("batch_gone", lang), table_frame([], columns, lang), None
        rows = [(r.name, text(f"state_{r.state}", lang), r.duration, r.detail) for r in view.rows]
        return batch_summary(view.status, lang), table_frame(rows, columns, lang), view.status.state

    def relabel(job_id: str | None, lang: str) -> tuple[str, pd.DataFrame]:
        summary, table, _ = show(job_id, lang)
        return summary, table

    def poll(job_id: str | None, lang: str) -> tuple[str, pd.DataFrame, Any, gr.Timer]:
        summary, table, state = show(job_id, lang)
        if state == "running":
            return summary, table, gr.update(), gr.Timer(active=True)
        archive = str(ui.batch_zip(job_id)) if job_id is not None and state is not None else None
        return summary, table, archive, gr.Timer(active=False)

    inputs = [files, model, *options, lang]
    button.click(start, inputs, [job, timer, summary, table, archive], concurrency_limit=None)
    timer.tick(poll, [job, lang], [summary, table, archive, timer], concurrency_limit=None)
    lang.change(relabel, [job, lang], [summary, table], queue=False)
    return picker


def batch_summary(status: JobStatus, lang: str) -> str:
    active = status.pending + status.running
    return text(
        "batch_summary",
        lang,
        total=status.total,
        done=status.done,
        failed=status.failed,
        active=active,
    )


def found_line(transcript: Transcript, lang: str) -> str:
    """Which requested hotwords occur in the text ('' when none were requested)."""
    if not transcript.hotwords:
        return ""
    if not transcript.hotwords_found:
        return text("found_none", lang)
    return text("found", lang, found="、".join(transcript.hotwords_found))


def hotwords_tab(ui: WebUi, labels: Labels, lang: gr.Radio, pickers: list[gr.Dropdown]) -> None:
    """Create, edit and delete saved lists; every tab's picker follows the changes."""
    with gr.Row():
        with gr.Column(scale=1):
            chosen = labels.make(
                gr.Dropdown, "lists", choices=ui.list_names(), value=None, elem_id="lists-chosen"
            )
            new = labels.make(gr.Button, "list_new", "value", elem_id="lists-new")
        with gr.Column(scale=2):
            name = labels.make(gr.Textbox, "list_name", elem_id="lists-name")
            phrases = labels.make(gr.Textbox, "list_phrases", lines=10, elem_id="lists-phrases")
            with gr.Row():
                save = labels.make(
                    gr.Button, "list_save", "value", variant="primary", elem_id="lists-save"
                )
                delete = labels.make(
                    gr.Button, "list_delete", "value", variant="stop", elem_id="lists-delete"
                )
            status = gr.Markdown(elem_id="lists-status")
    pickers.append(chosen)

    def choices(selected: str | None) -> list[Any]:
        # Other tabs' pickers keep their value: changing it would replace the hotwords there.
        names = ui.list_names()
        return [
            gr.update(choices=names, value=selected) if p is chosen else gr.update(choices=names)
            for p in pickers
        ]

    def on_save(list_name: str, typed: str, lang: str) -> list[Any]:
        try:
            stored = ui.save_list(list_name, typed)
        except HotwordListError as e:
            raise gr.Error(str(e)) from e
        clean = list_name.strip()
        message = text("list_saved", lang, name=clean, count=len(stored))
        return [message, "\n".join(stored), *choices(clean)]

    def on_delete(list_name: str | None, lang: str) -> list[Any]:
        try:
            ui.delete_list(list_name)
        except UiError as e:
            raise gr.Error(e.message(lang)) from e
        except HotwordListError as e:
            raise gr.Error(str(e)) from e
        return [text("list_deleted", lang, name=list_name), "", "", *choices(None)]

    chosen.input(lambda n: (n or "", list_text(ui)(n)), chosen, [name, phrases], queue=False)
    new.click(lambda: ("", "", gr.update(value=None)), None, [name, phrases, chosen], queue=False)
    save.click(on_save, [name, phrases, lang], [status, phrases, *pickers], queue=False)
    delete.click(on_delete, [chosen, lang], [status, name, phrases, *pickers], queue=False)


def system_tab(ui: WebUi, labels: Labels, lang: gr.Radio, tab: gr.Tab) -> gr.Timer:
    """Model, devices, memory and counters, with throughput and queue charts, filled when
    ``tab`` opens; returns the timer that refreshes them (active while the tab is open)."""
    info = gr.Markdown(elem_id="system-info")
    with gr.Row():
        speed = labels.make(
            gr.LinePlot,
            "throughput",
            x="time",
            y="speed",
            x_axis_format="%H:%M:%S",
            y_axis_format="~g",
            y_lim=[0, None],
            elem_id="system-speed",
        )
        queue = labels.make(
            gr.LinePlot,
            "queue",
            x="time",
            y="count",
            color="series",
            x_axis_format="%H:%M:%S",
            y_axis_format="d",
            y_lim=[0, None],
            elem_id="system-queue",
        )
    for plot, y in ((speed, "axis_speed"), (queue, "axis_count")):
        labels.add(plot, "axis_time", "x_title")
        labels.add(plot, y, "y_title")
    labels.add(queue, "axis_series", "color_title")
    timer = gr.Timer(2.0, active=False)

    def refresh(lang: str) -> tuple[str, pd.DataFrame, pd.DataFrame]:
        return system_markdown(ui, lang), *history_frames(ui.history, lang)

    tab.select(refresh, lang, [info, speed, queue], queue=False)
    timer.tick(refresh, lang, [info, speed, queue], queue=False)
    return timer


def system_markdown(ui: WebUi, lang: str) -> str:
    return "\n".join(f"- **{what}**: {value}" for what, value in ui.system_rows(lang))


def history_frames(history: StatsHistory, lang: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The throughput and queue series as the charts' tables."""
    # Typed columns even when empty: the chart picks its scales from the dtypes (an empty
    # frame's object columns would make a categorical axis).
    speed = pd.DataFrame(history.throughput(), columns=["time", "speed"]).astype({"speed": float})
    speed["time"] = pd.to_datetime(speed["time"].astype(float), unit="s")
    series: dict[str, Callable[[Any], int]] = {
        "series_segments": lambda s: s.queue_depth,
        "series_urgent": lambda s: s.load.urgent,
        "series_bulk": lambda s: s.load.bulk,
    }
    rows = [
        (s.at, text(k, lang), count(s)) for s in history.samples() for k, count in series.items()
    ]
    queue = pd.DataFrame(rows, columns=["time", "series", "count"]).astype({"count": int})
    queue["time"] = pd.to_datetime(queue["time"].astype(float), unit="s")
    return speed, queue
