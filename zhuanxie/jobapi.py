"""Batch job routes (``/v1/jobs``): create from uploads or server-side paths, poll, fetch
results per file or as a zip, cancel, delete. The work is ``zhuanxie.batchjobs.JobManager``'s.

    curl -F file=@a.wav -F file=@b.mp3 -F hotwords=魔搭 http://HOST/v1/jobs
    curl -F path=/data/calls http://HOST/v1/jobs                  # inside --allowed-root only
    curl http://HOST/v1/jobs/ID                                    # state, per-file states
    curl -o a.srt "http://HOST/v1/jobs/ID/files/0?format=srt"
    curl -o all.zip "http://HOST/v1/jobs/ID/results.zip?format=txt,srt"
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

from fastapi import APIRouter, File, Form, Query, UploadFile
from fastapi.responses import FileResponse
from pydantic import BaseModel
from starlette.background import BackgroundTask

from zhuanxie.batchjobs import (
    FileStatus,
    JobInputError,
    JobNotFoundError,
    JobOptions,
    JobStatus,
    Upload,
)
from zhuanxie.deps import ApiError, State
from zhuanxie.transcriptions import input_options
from zhuanxie.uploads import UploadTooLargeError
from zhuanxie.writers import FORMATS

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

MEDIA_TYPES = {
    "txt": "text/plain; charset=utf-8",
    "srt": "application/x-subrip; charset=utf-8",
    "vtt": "text/vtt; charset=utf-8",
    "json": "application/json",
    "tsv": "text/tab-separated-values; charset=utf-8",
}


class FileOut(BaseModel):
    index: int
    name: str
    state: str
    progress: float
    duration: float | None
    error: str | None
    started_at: float | None
    finished_at: float | None


class JobOut(BaseModel):
    id: str
    object: str = "job"
    state: str
    created_at: float
    model: str
    hotwords: list[str]
    punc: bool
    itn: bool
    vad: bool
    total: int
    pending: int
    running: int
    done: int
    failed: int
    audio_seconds: float
    progress: float
    files: list[FileOut] | None = None


class JobList(BaseModel):
    object: str = "list"
    data: list[JobOut]


class JobDeleted(BaseModel):
    id: str
    object: str = "job.deleted"
    deleted: bool = True


@contextmanager
def api_errors() -> Iterator[None]:
    """The job manager's errors as HTTP errors."""
    try:
        yield
    except JobNotFoundError as e:
        raise ApiError(404, str(e), code="not_found") from e
    except JobInputError as e:
        raise ApiError(400, str(e)) from e
    except UploadTooLargeError as e:
        raise ApiError(413, str(e), param="file", code="file_too_large") from e


@router.post("", status_code=201)
def create_job(
    state: State,
    file: Annotated[list[UploadFile] | None, File(description="Audio files to upload.")] = None,
    path: Annotated[
        list[str] | None, Form(description="Server-side files or folders (allowed roots only).")
    ] = None,
    model: Annotated[str | None, Form()] = None,
    hotwords: Annotated[str | None, Form(description="Comma- or newline-separated.")] = None,
    punc: Annotated[bool | None, Form()] = None,
    itn: Annotated[bool | None, Form()] = None,
    vad: Annotated[bool | None, Form()] = None,
) -> JobOut:
    """Start a job over uploaded files and/or server-side paths."""
    model_name = state.resolve_model(model)
    chosen = input_options(state.services[model_name], hotwords, punc, itn, vad)
    options = JobOptions(
        model=model_name,
        hotwords=chosen["hotwords"],
        punctuation=chosen["punctuation"],
        itn=chosen["itn"],
        vad=chosen["vad"],
    )
    uploads = [Upload(f.filename or "audio", f.file) for f in file or []]
    with api_errors():
        return job_out(state.jobs.create(options, uploads, path or []))


@router.get("")
def list_jobs(state: State) -> JobList:
    """Every job, oldest first (without per-file detail)."""
    return JobList(data=[job_out(s) for s in state.jobs.list_jobs()])


@router.get("/{job_id}")
def get_job(state: State, job_id: str) -> JobOut:
    """The job's state, counts and per-file states."""
    with api_errors():
        return job_out(state.jobs.status(job_id))


@router.get("/{job_id}/files/{index}")
def get_result(
    state: State,
    job_id: str,
    index: int,
    format: Annotated[str, Query(description=f"One of {', '.join(FORMATS)}.")] = "txt",
) -> FileResponse:
    """One file's result in one format, as a download."""
    with api_errors():
        path, name = state.jobs.result_file(job_id, index, format)
    return FileResponse(path, media_type=MEDIA_TYPES[format], filename=name)


@router.get("/{job_id}/results.zip")
def get_zip(
    state: State,
    job_id: str,
    format: Annotated[str, Query(description="Comma-separated formats.")] = ",".join(FORMATS),
) -> FileResponse:
    """Every finished file's results in the given formats, as one zip."""
    formats = [f.strip() for f in format.split(",") if f.strip()]
    target = state.settings.data_dir / "tmp" / f"{uuid.uuid4().hex}.zip"
    try:
        with api_errors():
            state.jobs.write_zip(job_id, formats, target)
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    return FileResponse(
        target,
        media_type="application/zip",
        filename=f"{job_id}.zip",
        background=BackgroundTask(target.unlink, missing_ok=True),
    )


@router.post("/{job_id}/cancel")
def cancel_job(state: State, job_id: str) -> JobOut:
    """Stop the job: running files are cancelled, pending files are never started."""
    with api_errors():
        return job_out(state.jobs.cancel(job_id))


@router.delete("/{job_id}")
def delete_job(state: State, job_id: str) -> JobDeleted:
    """Cancel the job if needed and remove it, its uploads and its results."""
    with api_errors():
        state.jobs.delete(job_id)
    return JobDeleted(id=job_id)


def job_out(status: JobStatus) -> JobOut:
    options = status.options
    return JobOut(
        id=status.id,
        state=status.state,
        created_at=status.created_at,
        model=options.model,
        hotwords=list(options.hotwords),
        punc=options.punctuation,
        itn=options.itn,
        vad=options.vad,
        total=status.total,
        pending=status.pending,
        running=status.running,
        done=status.done,
        failed=status.failed,
        audio_seconds=status.audio_seconds,
        progress=status.progress,
        files=[file_out(f) for f in status.files] if status.files else None,
    )


def file_out(file: FileStatus) -> FileOut:
    return FileOut(
        index=file.index,
        name=file.name,
        state=file.state,
        progress=file.progress,
        duration=file.duration,
        error=file.error,
        started_at=file.started_at,
        finished_at=file.finished_at,
    )
