"""What the Web UI's buttons do, in plain values: no Gradio here, so it is tested directly.

Every request goes through the server's Service, the same one as the HTTP API, so UI users are
batched together with API callers (single files at interactive priority) instead of queueing
for a private model.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import itertools
import json
import shutil
import tempfile
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import torch

from zhuanxie.batchjobs import JobInputError, JobManager, JobOptions, JobStatus, Upload
from zhuanxie.engine import AudioInput, EngineStats
from zhuanxie.hotword_lists import HotwordLists, parse_hotwords
from zhuanxie.hotwords import hotwords_found
from zhuanxie.result import Transcript
from zhuanxie.service import Load, OverloadedError, Service
from zhuanxie.settings import ServerSettings
from zhuanxie.uploads import UploadTooLargeError
from zhuanxie.webui_strings import text
from zhuanxie.writers import write_outputs

DOWNLOAD_FORMATS = ("txt", "srt", "vtt", "json")
HOTWORDS_DIR = "hotwords"  # saved lists, under the server's data folder
SINGLE_PRIORITY = 1  # interactive: ahead of bulk work (the server's convention, see AudioInput)
DOWNLOADS_KEPT_S = 3600.0  # scratch folders of finished requests older than this are removed
TEXTS_KEPT = 20_000  # batch files' texts kept in memory, so a poll reads only new results
HISTORY_SAMPLES = 300  # points kept for the system tab's charts
HISTORY_MIN_INTERVAL_S = 1.0  # sessions polling together share one sample per interval


class UiState(Protocol):
    """What the UI needs from the server (the server's state object provides these)."""

    @property
    def services(self) -> Mapping[str, Service]:
        """Served model id -> its Service; the first is the default."""
        ...

    @property
    def jobs(self) -> JobManager: ...

    @property
    def settings(self) -> ServerSettings:
        """Saved hotword lists live in ``<settings.data_dir>/hotwords``."""
        ...


class UiError(Exception):
    """A problem to show the user: a key of the string table and its fields."""

    def __init__(self, key: str, **fields: object) -> None:
        super().__init__(text(key, "en", **fields))
        self.key = key
        self.fields = fields

    def message(self, lang: str) -> str:
        return text(self.key, lang, **self.fields)


@dataclass(frozen=True)
class Capabilities:
    """Which per-input options have an effect with the loaded models."""

    hotwords: bool
    punctuation: bool
    itn: bool
    vad: bool


@dataclass(frozen=True)
class StatsSample:
    at: float  # wall-clock time, seconds since the epoch
    audio_seconds: float  # engine total so far
    queue_depth: int  # segments waiting for the model
    load: Load


@dataclass(frozen=True)
class RecognitionOptions:
    """The per-input switches the UI offers (see ``AudioInput``)."""

    punctuation: bool = True
    itn: bool = True
    vad: bool = True


@dataclass(frozen=True)
class SingleResult:
    transcript: Transcript
    rows: list[tuple[float, float, str]]  # (start, end, text) per sentence or segment
    files: list[Path]  # txt, srt, vtt, json


@dataclass(frozen=True)
class BatchRow:
    name: str
    state: str  # a batchjobs.FileState
    duration: float | None  # seconds of audio, once done
    detail: str  # the transcript's text when done, the error when failed


@dataclass(frozen=True)
class BatchView:
    status: JobStatus
    rows: list[BatchRow]


class StatsHistory:
    """Recent engine counters, sampled when a UI polls them (at most once a second however many
    sessions poll); throughput is the audio finished between samples over the time between."""

    def __init__(self, maxlen: int = HISTORY_SAMPLES) -> None:
        self._samples: deque[StatsSample] = deque(maxlen=maxlen)
        self._lock = threading.Lock()

    def sample(self, stats: EngineStats, load: Load, now: float | None = None) -> None:
        now = time.time() if now is None else now
        with self._lock:
            if self._samples and now - self._samples[-1].at < HISTORY_MIN_INTERVAL_S:
                return
            self._samples.append(StatsSample(now, stats.audio_seconds, stats.queue_depth, load))

    def samples(self) -> list[StatsSample]:
        with self._lock:
            return list(self._samples)

    def throughput(self) -> list[tuple[float, float]]:
        """(time, audio seconds per second) between consecutive samples."""
        points = self.samples()
        return [
            (b.at, (b.audio_seconds - a.audio_seconds) / (b.at - a.at))
            for a, b in itertools.pairwise(points)
        ]


class WebUi:
    """The work behind the UI's buttons, in plain values (no Gradio types)."""

    def __init__(self, state: UiState) -> None:
        if not state.services:
            raise ValueError("the Web UI needs at least one served model")
        self.state = state
        self.lists = HotwordLists(state.settings.data_dir / HOTWORDS_DIR)
        self.history = StatsHistory()
        self._scratch: Path | None = None
        self._lock = threading.Lock()
        self._texts: OrderedDict[tuple[str, int], str] = OrderedDict()  # (job, file) -> text

    @property
    def models(self) -> list[str]:
        return list(self.state.services)

    def service(self, model: str | None) -> Service:
        """The Service of ``model`` (None: the default model)."""
        services = self.state.services
        return services[model] if model else next(iter(services.values()))

    def capabilities(self) -> Capabilities:
        """The options that some served model can honour."""
        engines = [s.engine for s in self.state.services.values()]
        posts = [e.postprocessor for e in engines if e.postprocessor is not None]
        return Capabilities(
            hotwords=any(e.backend.supports_hotwords for e in engines),
            punctuation=any(p.punctuator is not None for p in posts),
            itn=any(p.itn is not None for p in posts),
            vad=any(e.vad is not None for e in engines),
        )

    # --- single file ---------------------------------------------------------------------------

    def transcribe_single(
        self, audio_path: str | None, model: str | None, hotwords: str, options: RecognitionOptions
    ) -> SingleResult:
        """One clip at interactive priority: its transcript, timestamps and download files."""
        if not audio_path:
            raise UiError("no_audio")
        path = Path(audio_path)
        phrases = parse_hotwords(hotwords)
        spec = AudioInput(
            path,
            hotwords=phrases,
            name=path.name,
            vad=options.vad,
            punctuation=options.punctuation,
            itn=options.itn,
            priority=SINGLE_PRIORITY,
        )
        service = self.service(model)
        try:
            future = service.submit(spec)
        except OverloadedError as e:
            raise UiError("busy", seconds=e.retry_after) from e
        limit = self.state.settings.request_timeout  # as for the API's interactive requests
        try:
            result = future.result(timeout=limit)
        except concurrent.futures.TimeoutError as e:
            service.cancel(future)
            raise UiError("timeout", seconds=f"{limit:g}") from e
        if result.transcript is None:
            raise UiError("failed", error=result.error)
        # The engine leaves the hotword report to its callers (the Recognizer fills it in).
        transcript = replace(
            result.transcript,
            hotwords=phrases,
            hotwords_found=hotwords_found(result.transcript.text, phrases),
        )
        metadata = {
            "model": model or self.models[0],
            "options": {"hotwords": list(transcript.hotwords), **asdict(options)},
            "input": path.name,
        }
        stem = self.scratch_folder() / (path.stem or "audio")
        files = write_outputs(transcript, stem, DOWNLOAD_FORMATS, metadata)
        return SingleResult(transcript, timestamp_rows(transcript), files)

    def scratch_folder(self) -> Path:
        """A new folder for one request's files; folders older than an hour are removed."""
        with self._lock:
            if self._scratch is None or not self._scratch.is_dir():
                self._scratch = Path(tempfile.mkdtemp(prefix="zhuanxie-webui-"))
            root = self._scratch
        cutoff = time.time() - DOWNLOADS_KEPT_S
        for old in root.iterdir():
            if old.stat().st_mtime < cutoff:
                shutil.rmtree(old, ignore_errors=True)
        return Path(tempfile.mkdtemp(dir=root))

    # --- batch jobs ----------------------------------------------------------------------------

    def start_batch(
        self,
        paths: Sequence[str] | None,
        model: str | None,
        hotwords: str,
        options: RecognitionOptions,
    ) -> str:
        """A batch job over the uploaded files, started at once; its id."""
        if not paths:
            raise UiError("batch_none")
        job_options = JobOptions(
            model=model or self.models[0], hotwords=parse_hotwords(hotwords), **asdict(options)
        )
        with contextlib.ExitStack() as stack:
            uploads = [Upload(Path(p).name, stack.enter_context(open(p, "rb"))) for p in paths]
            try:
                return self.state.jobs.create(job_options, uploads).id
            except (JobInputError, UploadTooLargeError) as e:
                raise UiError("failed", error=str(e)) from e

    def batch_view(self, job_id: str) -> BatchView:
        """The job's counts, and per file: name, state, duration, and its text once done (or
        its error). A file's text is read once, when it is first seen done."""
        status = self.state.jobs.status(job_id)
        rows = []
        for f in status.files:
            detail = self._text(job_id, f.index) if f.state == "done" else f.error or ""
            duration = round(f.duration, 2) if f.duration is not None else None
            rows.append(BatchRow(f.name, f.state, duration, detail))
        return BatchView(status, rows)

    def batch_zip(self, job_id: str) -> Path:
        """Every done file's results in every download format, in one zip file."""
        target = self.scratch_folder() / f"zhuanxie-{job_id[:8]}.zip"
        self.state.jobs.write_zip(job_id, DOWNLOAD_FORMATS, target)
        return target

    def _text(self, job_id: str, index: int) -> str:
        """A done file's text, from its JSON result; the most recently shown are kept."""
        key = (job_id, index)
        with self._lock:
            if key in self._texts:
                self._texts.move_to_end(key)
                return self._texts[key]
        path, _ = self.state.jobs.result_file(job_id, index, "json")
        found: str = json.loads(path.read_text(encoding="utf-8"))["text"]
        with self._lock:
            self._texts[key] = found
            while len(self._texts) > TEXTS_KEPT:
                self._texts.popitem(last=False)
        return found

    # --- saved hotword lists -------------------------------------------------------------------

    def list_names(self) -> list[str]:
        return self.lists.names()

    def list_text(self, name: str | None) -> str:
        """A saved list as text, one phrase per line ('' for no list)."""
        if not name:
            return ""
        return "\n".join(self.lists.load(name))

    def save_list(self, name: str, phrases: str) -> tuple[str, ...]:
        return self.lists.save(name, parse_hotwords(phrases))

    def delete_list(self, name: str | None) -> None:
        if not name:
            raise UiError("list_none")
        self.lists.delete(name)

    # --- system --------------------------------------------------------------------------------

    def system_rows(self, lang: str) -> list[tuple[str, str]]:
        """(what, value) lines: the process, then each served model's device, memory and work;
        also records a sample for the charts."""
        rows = [(text("info_process", lang), process_line(lang))]
        total = EngineStats()
        loads = []
        for model, service in self.state.services.items():
            engine = service.engine
            with engine.stats_lock:
                stats = replace(engine.stats)
            load = service.load()
            total.audio_seconds += stats.audio_seconds
            total.queue_depth += stats.queue_depth
            loads.append(load)
            rows += model_rows(model, service, stats, load, lang)
        summed = Load(
            sum(x.urgent for x in loads), sum(x.bulk for x in loads), sum(x.backlog for x in loads)
        )
        self.history.sample(total, summed)
        return rows


def process_line(lang: str) -> str:
    rss = resident_bytes()
    memory = f", {text('info_memory', lang)} {gib(rss)}" if rss is not None else ""
    return f"torch {torch.__version__}, {torch.get_num_threads()} threads{memory}"


def model_rows(
    model: str, service: Service, stats: EngineStats, load: Load, lang: str
) -> list[tuple[str, str]]:
    engine = service.engine
    devices = ", ".join(str(r.backend.device) for r in engine.runners)
    hotwords = text("yes" if engine.backend.supports_hotwords else "no", lang)
    return [
        (text("info_model", lang), f"{model} ({text('info_hotwords', lang)}: {hotwords})"),
        (text("info_device", lang), devices),
        (text("info_memory", lang), memory_line(engine.backend.device, stats, lang)),
        (text("info_audio", lang), f"{stats.audio_seconds:.1f} s"),
        (text("info_speed", lang), f"{stats.speed:.1f}×"),
        (
            text("info_batches", lang),
            f"{stats.batches} / {stats.segments} / {stats.padding_ratio:.1%}",
        ),
        (text("info_oom", lang), str(stats.out_of_memory)),
        (text("info_load", lang), f"{load.urgent} / {load.bulk} / {load.backlog}"),
    ]


def memory_line(device: torch.device, stats: EngineStats, lang: str) -> str:
    """On a GPU: memory in use, the engine's peak and the total; on a CPU: the peak (the
    process's peak resident memory, see ``engine.peak_memory``)."""
    peak = f"{text('info_peak', lang)} {gib(stats.peak_memory_bytes)}"
    if device.type != "cuda":
        return peak
    _, total = torch.cuda.mem_get_info(device)
    used = gib(torch.cuda.memory_allocated(device))
    return f"{text('info_now', lang)} {used}, {peak}, {text('info_total', lang)} {gib(total)}"


def resident_bytes() -> int | None:
    """This process's resident memory (Linux; None elsewhere)."""
    try:
        fields = Path("/proc/self/statm").read_text().split()
    except OSError:
        return None
    import resource

    return int(fields[1]) * resource.getpagesize()


def gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB"


def timestamp_rows(transcript: Transcript) -> list[tuple[float, float, str]]:
    """(start, end, text) per sentence when punctuation made sentences, else per segment."""
    spans: Sequence[Any] = transcript.sentences or transcript.segments
    return [(round(s.start, 2), round(s.end, 2), s.text) for s in spans]
