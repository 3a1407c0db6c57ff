"""The server's batch jobs: many files transcribed in the background through the shared engine.

Each job is a ``zhuanxie.jobs.JobStore`` record, the same durable record the CLI's ``--job``
keeps, so a server that stops (or is killed) resumes its unfinished jobs when it starts again.
A job's directory holds everything about it:

    <data_dir>/jobs/<id>/
        job.sqlite3, job.lock    the JobStore: options, inputs, each input's state and results
        job.json                 what the server adds: creation time, file names, cancelled
        uploads/00000-name.wav   uploaded inputs (server-side paths are read where they are)
        results/00000.<format>   every output format, written before the input is marked done

Files are handed to the engine as bulk work (priority 0), at most ``job_concurrency`` per job at
a time, so interactive requests go first and concurrent jobs take turns.

The API for the HTTP routes and the Web UI: ``create``, ``status``, ``list_jobs``, ``result_file``,
``write_zip``, ``cancel``, ``delete``; ``start`` resumes unfinished jobs, ``close`` stops them
(they stay resumable).
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import sqlite3
import threading
import time
import uuid
import zipfile
from collections import deque
from collections.abc import Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Literal

from zhuanxie.audio import AudioError, audio_info
from zhuanxie.engine import AudioInput, InputResult
from zhuanxie.jobs import JobError, JobItem, JobStore, JobView
from zhuanxie.service import CANCELLED, OverloadedError, Service
from zhuanxie.settings import ServerSettings
from zhuanxie.uploads import (
    PathNotAllowedError,
    expand_allowed,
    inside,
    sanitize_filename,
    save_upload,
)
from zhuanxie.writers import FORMATS, write_atomic, write_outputs

log = logging.getLogger("zhuanxie.batchjobs")

JOB_FILE = "job.json"
JOBS_DIR = "jobs"
# Seconds between looks at a job's running files when none finished (also how fast a job
# notices that it was cancelled).
POLL_S = 0.2
_JOB_ID = re.compile(r"[0-9a-f]{32}")

JobState = Literal["running", "done", "failed", "cancelled", "paused"]
FileState = Literal["pending", "running", "done", "failed", "cancelled"]


class JobNotFoundError(LookupError):
    """No job with this id (or no such file in it)."""


class JobInputError(ValueError):
    """A job that cannot be created as asked; the message names the input and the problem."""


@dataclass(frozen=True)
class JobOptions:
    """How every file of a job is transcribed (recorded with the job)."""

    model: str
    """The served model's id."""
    hotwords: tuple[str, ...] = ()
    punctuation: bool = True
    itn: bool = True
    vad: bool = True

    def record(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "hotwords": list(self.hotwords),
            "punctuation": self.punctuation,
            "itn": self.itn,
            "vad": self.vad,
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> JobOptions:
        return cls(
            model=record["model"],
            hotwords=tuple(record["hotwords"]),
            punctuation=record["punctuation"],
            itn=record["itn"],
            vad=record["vad"],
        )


@dataclass(frozen=True)
class Upload:
    """A file sent by a client: its name as given (sanitised before use) and its content."""

    name: str
    file: BinaryIO


@dataclass(frozen=True)
class FileStatus:
    index: int
    name: str
    """The upload's sanitised name, or the server-side path."""
    state: FileState
    progress: float
    """The share decoded: while running, the audio decoded so far over the file's length (0
    if its header gives none); 1 once finished (done, failed or cancelled)."""
    duration: float | None
    """Audio seconds (done files)."""
    error: str | None
    started_at: float | None
    finished_at: float | None


@dataclass(frozen=True)
class JobStatus:
    id: str
    state: JobState
    """running; done (every file finished, some may have failed); failed (every file failed);
    cancelled; paused (unfinished but not running in this server, e.g. held by another)."""
    created_at: float
    options: JobOptions
    total: int
    pending: int
    running: int
    done: int
    failed: int
    audio_seconds: float
    progress: float
    """Share of the files finished, running files counted by their own progress."""
    files: tuple[FileStatus, ...] = ()
    """Per file, in the order given (empty in ``JobManager.list_jobs``)."""


@dataclass
class _Active:
    """A job this server is working on."""

    id: str
    store: JobStore
    service: Service
    options: JobOptions
    index: dict[str, int]  # input key -> file index
    names: list[str]
    stop: threading.Event = field(default_factory=threading.Event)
    # Inputs in the engine, for their progress: key -> (future, seconds of audio if known).
    live: dict[str, tuple[Future[InputResult], float | None]] = field(default_factory=dict)
    cancelled: bool = False
    thread: threading.Thread | None = None


class JobManager:
    """Creates, runs, reports on and removes the server's batch jobs (thread-safe)."""

    def __init__(self, services: Mapping[str, Service], settings: ServerSettings) -> None:
        if not services:
            raise ValueError("JobManager needs at least one service")
        self.services = dict(services)
        self.settings = settings
        self.root = settings.data_dir / JOBS_DIR
        self._lock = threading.Lock()
        self._active: dict[str, _Active] = {}
        self._closed = False

    def start(self) -> list[str]:
        """Resume every unfinished job that was not cancelled; their ids."""
        self.root.mkdir(parents=True, exist_ok=True)
        resumed = []
        for directory in sorted(self.root.iterdir()):
            if not _JOB_ID.fullmatch(directory.name) or not (directory / JOB_FILE).is_file():
                continue
            meta = _read_meta(directory)
            if meta["cancelled"] or not _unfinished(directory):
                continue
            options = JobOptions.from_record(meta["options"])
            if options.model not in self.services:
                log.warning(
                    "job not resumed: its model is not served",
                    extra={"job": directory.name, "model": options.model},
                )
                continue
            try:
                store = JobStore.open(directory, options.record())
            except JobError as e:
                log.warning("job not resumed: %s", e, extra={"job": directory.name})
                continue
            self._launch(directory.name, store, options, meta["files"])
            resumed.append(directory.name)
            log.info("job resumed", extra={"job": directory.name, **vars(store.recovery)})
        return resumed

    def create(
        self,
        options: JobOptions,
        uploads: Sequence[Upload] = (),
        paths: Sequence[str] = (),
    ) -> JobStatus:
        """A new job over ``uploads`` and the audio files at ``paths`` (files or folders inside
        the allowed roots), started at once.

        Raises JobInputError for a bad request (no files, too many, a path not allowed, an
        unknown model) and ``UploadTooLargeError`` for an upload over the limit.
        """
        service = self._service(options)
        found = [p for given in paths for p in _expand(given, self.settings.allowed_roots)]
        count = len(uploads) + len(found)
        if count == 0:
            raise JobInputError("a job needs at least one file or server-side path")
        if count > self.settings.max_job_files:
            raise JobInputError(
                f"a job takes at most {self.settings.max_job_files} files, not {count}"
            )
        job_id = uuid.uuid4().hex
        directory = self.root / job_id
        (directory / "uploads").mkdir(parents=True)
        (directory / "results").mkdir()
        try:
            files = self._save_uploads(directory, uploads)
            files += [{"key": str(p), "name": str(p)} for p in found]
            files = list({f["key"]: f for f in files}.values())  # a path given twice counts once
            meta = {"id": job_id, "created_at": time.time(), "cancelled": False}
            meta |= {"options": options.record(), "files": files}
            write_atomic(directory / JOB_FILE, json.dumps(meta, ensure_ascii=False))
            store = JobStore.open(directory, options.record())
            store.add_inputs([f["key"] for f in files])
        except BaseException:
            shutil.rmtree(directory, ignore_errors=True)
            raise
        self._launch(job_id, store, options, files, service)
        log.info("job created", extra={"job": job_id, "files": len(files)})
        return self.status(job_id)

    def status(self, job_id: str, files: bool = True) -> JobStatus:
        """The job's state and counts, and each file's state when ``files``."""
        directory = self._directory(job_id)
        meta = _read_meta(directory)
        with self._lock:
            active = self._active.get(job_id)
        if active is not None:
            try:
                items = active.store.items()
            except sqlite3.ProgrammingError:  # closed as the job finished: read it from disk
                active = None
        if active is None:
            try:
                with JobView.open(directory) as view:
                    items = view.items()
            except JobError as e:
                raise JobNotFoundError(f"job {job_id} cannot be read: {e}") from e
        progress = {} if active is None else self._progress(active)
        return _status(meta, items, running=active is not None, files=files, progress=progress)

    @staticmethod
    def _progress(job: _Active) -> dict[str, float]:
        """Each running input's share decoded so far, where its length is known."""
        return {
            key: min(job.service.progress(future) / seconds, 1.0)
            for key, (future, seconds) in list(job.live.items())
            if seconds
        }

    def list_jobs(self) -> list[JobStatus]:
        """Every job, oldest first, without per-file detail."""
        if not self.root.is_dir():
            return []
        statuses = []
        for directory in self.root.iterdir():
            if _JOB_ID.fullmatch(directory.name) and (directory / JOB_FILE).is_file():
                try:
                    statuses.append(self.status(directory.name, files=False))
                except JobNotFoundError:
                    continue  # being created or deleted right now
        return sorted(statuses, key=lambda s: s.created_at)

    def result_file(self, job_id: str, index: int, fmt: str) -> tuple[Path, str]:
        """File ``index``'s result in format ``fmt``: its path and a download name."""
        if fmt not in FORMATS:
            raise JobInputError(f"unknown format {fmt!r}; formats: {', '.join(FORMATS)}")
        status = self.status(job_id)
        if not 0 <= index < len(status.files):
            raise JobNotFoundError(f"job {job_id} has no file {index}")
        file = status.files[index]
        if file.state != "done":
            raise JobNotFoundError(
                f"file {index} of job {job_id} has no result: it is {file.state}"
            )
        return self._result_path(job_id, index, fmt), _download_name(file.name, fmt)

    def write_zip(self, job_id: str, formats: Sequence[str], target: Path) -> int:
        """Write the done files' results in ``formats`` into the zip file ``target``; how many
        results it holds. Names are the inputs' names with the format's suffix."""
        unknown = [f for f in formats if f not in FORMATS]
        if unknown or not formats:
            raise JobInputError(f"unknown format {unknown or '(none)'}; formats: {FORMATS}")
        status = self.status(job_id)
        used: set[str] = set()
        count = 0
        with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
            for file in status.files:
                if file.state != "done":
                    continue
                for fmt in dict.fromkeys(formats):
                    name = _download_name(file.name, fmt)
                    if name in used:
                        name = f"{file.index:05d}-{name}"
                    used.add(name)
                    archive.write(self._result_path(job_id, file.index, fmt), name)
                    count += 1
        return count

    def cancel(self, job_id: str) -> JobStatus:
        """Stop the job: running files are cancelled, pending ones are never started (nor
        resumed by a restart). A finished job stays as it is."""
        directory = self._directory(job_id)
        with self._lock:
            active = self._active.get(job_id)
            if active is not None:
                active.cancelled = True
                active.stop.set()
        meta = _read_meta(directory)
        if not meta["cancelled"] and (active is not None or _unfinished(directory)):
            meta["cancelled"] = True
            write_atomic(directory / JOB_FILE, json.dumps(meta, ensure_ascii=False))
            log.info("job cancelled", extra={"job": job_id})
        if active is not None and active.thread is not None:
            active.thread.join()
        return self.status(job_id)

    def delete(self, job_id: str) -> None:
        """Cancel the job if it runs, and remove it with its uploads and results."""
        directory = self._directory(job_id)
        self.cancel(job_id)
        shutil.rmtree(directory)
        log.info("job deleted", extra={"job": job_id})

    def close(self) -> None:
        """Stop every running job, leaving it resumable by the next ``start``."""
        with self._lock:
            self._closed = True
            active = list(self._active.values())
            for job in active:
                job.stop.set()
        for job in active:
            if job.thread is not None:
                job.thread.join()

    # --- internals ------------------------------------------------------------------------

    def _service(self, options: JobOptions) -> Service:
        service = self.services.get(options.model)
        if service is None:
            raise JobInputError(
                f"model {options.model!r} is not served; models: {', '.join(self.services)}"
            )
        if options.hotwords and not service.engine.backend.supports_hotwords:
            raise JobInputError(
                f"hotwords need a SeACo-Paraformer model; {options.model} does not take them"
            )
        return service

    def _directory(self, job_id: str) -> Path:
        directory = self.root / job_id
        if not _JOB_ID.fullmatch(job_id) or not (directory / JOB_FILE).is_file():
            raise JobNotFoundError(f"no job {job_id!r}")
        return directory

    def _result_path(self, job_id: str, index: int, fmt: str) -> Path:
        return self.root / job_id / "results" / f"{index:05d}.{fmt}"

    def _save_uploads(self, directory: Path, uploads: Sequence[Upload]) -> list[dict[str, str]]:
        files = []
        budget = self.settings.max_job_upload_bytes
        for i, upload in enumerate(uploads):
            name = sanitize_filename(upload.name)
            target = directory / "uploads" / f"{i:05d}-{name}"
            limit = min(self.settings.max_upload_bytes, budget)
            budget -= save_upload(upload.file, target, limit, name)
            files.append({"key": str(target), "name": name})
        return files

    def _launch(
        self,
        job_id: str,
        store: JobStore,
        options: JobOptions,
        files: list[dict[str, str]],
        service: Service | None = None,
    ) -> None:
        job = _Active(
            job_id,
            store,
            service or self.services[options.model],
            options,
            {f["key"]: i for i, f in enumerate(files)},
            [f["name"] for f in files],
        )
        job.thread = threading.Thread(target=self._run, args=(job,), name=f"job-{job_id[:8]}")
        with self._lock:
            if self._closed:
                store.close()
                return
            self._active[job_id] = job
        job.thread.start()

    def _run(self, job: _Active) -> None:
        """Feed the job's pending files to the engine and record each result."""
        try:
            self._feed(job)
        except Exception:
            log.exception("job stopped by an error", extra={"job": job.id})
        finally:
            with self._lock:
                self._active.pop(job.id, None)
            job.store.close()  # inputs still running go back to pending
            log.info("job stopped", extra={"job": job.id, "cancelled": job.cancelled})

    def _feed(self, job: _Active) -> None:
        limit = self.settings.job_concurrency
        claimed: deque[str] = deque()
        running: dict[Future[InputResult], str] = {}
        while not job.stop.is_set():
            if not claimed and len(running) < limit:
                claimed.extend(job.store.claim_pending(limit - len(running)))
            while claimed and len(running) < limit:
                key = claimed[0]
                problem, seconds = self._problem(job, key)
                if problem is not None:
                    job.store.mark_failed(claimed.popleft(), self._named(job, key, problem))
                    continue
                try:
                    future = job.service.submit(self._input(job, key))
                except OverloadedError as e:
                    job.stop.wait(min(e.retry_after, 5.0))
                    break
                running[future] = claimed.popleft()
                job.live[key] = (future, seconds)
            if not claimed and not running:
                return  # nothing pending: the job is finished
            finished, _ = wait(list(running), timeout=POLL_S, return_when=FIRST_COMPLETED)
            for future in finished:
                key = running.pop(future)
                job.live.pop(key, None)
                self._record(job, key, future.result())
        for future in running:
            job.service.cancel(future)
        if job.cancelled:
            for future, key in running.items():
                self._record(job, key, future.result(timeout=60))
            for key in claimed:
                job.store.mark_failed(key, CANCELLED)

    def _problem(self, job: _Active, key: str) -> tuple[str | None, float | None]:
        """Why an input cannot be transcribed, found before it goes to the engine, and its
        length in seconds where its header tells."""
        path = Path(key)
        uploads = (self.root / job.id / "uploads").resolve()
        if not inside(path.resolve(), [uploads, *self.settings.allowed_roots]):
            return "no longer inside the server's allowed roots", None
        try:
            seconds = audio_info(path).duration_s
        except AudioError as e:
            return str(e), None
        limit = self.settings.max_audio_seconds
        if seconds is not None and seconds > limit:
            message = f"{seconds:.0f} s of audio is longer than the server's limit of {limit:.0f} s"
            return message, seconds
        return None, seconds

    @staticmethod
    def _named(job: _Active, key: str, error: str) -> str:
        """``error`` with an upload's stored path replaced by the name it was uploaded as."""
        return error.replace(key, job.names[job.index[key]])

    def _input(self, job: _Active, key: str) -> AudioInput:
        options = job.options
        return AudioInput(
            key,
            hotwords=options.hotwords,
            name=job.names[job.index[key]],
            vad=options.vad,
            punctuation=options.punctuation,
            itn=options.itn,
            priority=0,
        )

    def _record(self, job: _Active, key: str, result: InputResult) -> None:
        """Write a finished input's outputs, then mark it done (or record its failure)."""
        if result.transcript is None:
            assert result.error is not None
            if result.cause == "closed" or (result.cause == "cancelled" and not job.cancelled):
                return  # the server is stopping: the input stays unfinished, resumable
            job.store.mark_failed(key, self._named(job, key, result.error))
            return
        index = job.index[key]
        metadata = {"model": job.options.model, "options": job.options.record()}
        stem = self.root / job.id / "results" / f"{index:05d}"
        try:
            outputs = write_outputs(
                result.transcript, stem, FORMATS, {**metadata, "input": job.names[index]}
            )
        except OSError as e:
            job.store.mark_failed(key, f"cannot write its results: {e}")
            return
        job.store.mark_done(key, [str(p) for p in outputs], result.transcript.duration)


def _expand(given: str, roots: Sequence[Path]) -> list[Path]:
    try:
        return expand_allowed(given, roots)
    except PathNotAllowedError as e:
        raise JobInputError(str(e)) from e


def _read_meta(directory: Path) -> dict[str, Any]:
    try:
        meta: dict[str, Any] = json.loads((directory / JOB_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise JobNotFoundError(f"job {directory.name} cannot be read: {e}") from e
    return meta


def _unfinished(directory: Path) -> bool:
    try:
        with JobView.open(directory) as view:
            summary = view.summary()
    except JobError:
        return False
    return summary.pending + summary.running > 0


def _status(
    meta: Mapping[str, Any],
    items: Sequence[JobItem],
    *,
    running: bool,
    files: bool,
    progress: Mapping[str, float] | None = None,
) -> JobStatus:
    """The job's status from its record; ``progress`` gives running inputs' shares done."""
    by_key = {item.key: item for item in items}
    progress = progress or {}
    cancelled = bool(meta["cancelled"])
    details = tuple(
        _file_status(i, f["name"], by_key[f["key"]], cancelled, progress.get(f["key"], 0.0))
        for i, f in enumerate(meta["files"])
        if f["key"] in by_key
    )
    counts = {state: sum(f.state == state for f in details) for state in ("pending", "running")}
    done = sum(f.state == "done" for f in details)
    failed = sum(f.state in ("failed", "cancelled") for f in details)
    total = len(details)
    state: JobState
    if cancelled:
        state = "cancelled"
    elif running:
        state = "running"
    elif counts["pending"] + counts["running"]:
        state = "paused"
    else:
        state = "failed" if total and failed == total else "done"
    return JobStatus(
        id=meta["id"],
        state=state,
        created_at=meta["created_at"],
        options=JobOptions.from_record(meta["options"]),
        total=total,
        pending=counts["pending"],
        running=counts["running"],
        done=done,
        failed=failed,
        audio_seconds=sum(f.duration or 0.0 for f in details),
        progress=(done + failed + sum(f.progress for f in details if f.state == "running")) / total
        if total
        else 1.0,
        files=details if files else (),
    )


def _file_status(
    index: int, name: str, item: JobItem, job_cancelled: bool, share: float
) -> FileStatus:
    """One file's status; ``share`` is how much of it is decoded, while it runs."""
    state: FileState = item.state
    stopped = job_cancelled and item.state in ("pending", "running")
    if stopped or (item.state == "failed" and item.error == CANCELLED):
        state = "cancelled"
    finished = state in ("done", "failed", "cancelled")
    return FileStatus(
        index=index,
        name=name,
        state=state,
        progress=1.0 if finished else share if state == "running" else 0.0,
        duration=item.duration,
        error=item.error if state != "done" else None,
        started_at=item.started_at,
        finished_at=item.finished_at,
    )


def _download_name(name: str, fmt: str) -> str:
    stem = sanitize_filename(Path(name).name)
    stem = stem.rsplit(".", 1)[0] if "." in stem[1:] else stem
    return f"{stem}.{fmt}"
