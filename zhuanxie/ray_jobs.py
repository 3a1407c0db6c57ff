"""Batch transcription on a Ray cluster: the result files of ``zhuanxie transcribe``, written by
every machine of the cluster, resumable (issue #9).

    items ──► decode ──────────► transcribe ─────────────► finish ───────────► driver
    id,       Ray Data tasks,    Ray Data actors, one       Ray Data tasks:     progress,
    input,    one CPU each:      Engine each (a GPU, or     punctuation, ITN,   summary
    stem,     read, decode,      CPU slots): VAD, features, writers, the done   (JSONL)
    hotwords  resample to 16 kHz and length-sorted batches  marker
              mono               across the inputs it gets

Why this split. Decoding is the CPU-heavy stage that does not need the model, so it runs as
tasks sized by Ray Data to every CPU of the cluster and hands the model workers ready 16 kHz
audio. VAD and features stay inside the model worker, in its engine's own decode threads: the
engine's batching pools the segments of all the inputs a worker holds into length-sorted
batches, and doing the same with pre-computed features would mean a second copy of the
scheduler, its memory governor and OOM recovery. Each call gives a worker ``batch_inputs``
inputs, enough segments for full batches; Ray Data keeps calls queued at every worker, so it
never waits for the driver. Post-processing and writing run as tasks after the model, so the
model workers only run the model.

Results are the same files as a local run, byte for byte (the same engine, writers, naming and
JSON metadata): ``<output>/<stem>.<format>``, each written atomically (a local or shared
filesystem; or an fsspec URI such as ``s3://bucket/out``, where each file is written whole and
then moved into place). Resuming: after its outputs, an input's *done marker* is written under
``<output>/.zhuanxie/done/``, named from the input's output location and a hash of the input,
its hotwords and every option that changes the result. A run skips an input whose marker for the
same options exists and whose outputs are all present, so a re-run (after a killed driver, or
with Ray's own retries re-running work) does only what is missing, and changed options redo an
input. Files are the unit of work: a killed model worker's calls are retried on its restarted
actor (``max_restarts``/``max_task_retries``), and rewriting an input's files is harmless.

A failing input (unreadable, undecodable, or failing in the model) becomes an error row in the
summary, ``<output>/zhuanxie-summary.jsonl`` (id, input, status, duration, error, outputs), and
never stops the run. Decoded audio travels through Ray's object store (64 KB per second of
audio); inputs longer than ``max_decoded_seconds`` go on undecoded and their model worker
streams them itself, so memory stays bounded for any file length.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import pickle
import time
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import numpy as np

STATE_DIR = ".zhuanxie/done"
SUMMARY_NAME = "zhuanxie-summary.jsonl"
MANIFEST_SUFFIXES = (".jsonl", ".parquet")
Status = Literal["done", "skipped", "failed", "pending"]


class ManifestError(ValueError):
    """A manifest that cannot be read; the message names the file, the line and the problem."""


class RayJobError(RuntimeError):
    """The run stopped before every input was tried (a worker could not start, Ray failed)."""


@dataclass(frozen=True)
class WorkItem:
    """One input and where its results go."""

    id: str
    input: str  # a local path or an fsspec URI
    stem: str  # results go to <stem>.<format>; a local path or an fsspec URI
    hotwords: tuple[str, ...] = ()


@dataclass(frozen=True)
class ModelSettings:
    """What a model worker needs to build its engine: plain values, so they pickle to any node."""

    model: str = "seaco-paraformer-large"
    """A known model name or a model directory that every node can read."""
    device: str = "cpu"
    """cpu or cuda: each worker then takes one GPU (Ray assigns it) and loads the model on it."""
    dtype: str = "float32"
    vad: str = "silero"
    """silero, fsmn or none."""
    vad_model: str | None = None
    """The FSMN-VAD model (name or directory), for vad='fsmn'."""
    max_segment: float = 20.0
    """Longest segment in seconds."""
    language: str | None = None
    """Whisper models only."""
    threads: int | None = None
    """Torch threads per CPU worker (default: the CPUs Ray gives the worker)."""

    def __post_init__(self) -> None:
        if self.device not in ("cpu", "cuda"):
            raise ValueError(
                f"device must be 'cpu' or 'cuda' on Ray, not {self.device!r}: each worker gets "
                "one GPU from Ray, so name no GPU index"
            )
        if self.vad not in ("silero", "fsmn", "none"):
            raise ValueError(f"vad must be 'silero', 'fsmn' or 'none', not {self.vad!r}")
        if self.vad == "fsmn" and self.vad_model is None:
            raise ValueError("vad='fsmn' needs vad_model, an FSMN-VAD model")


@dataclass(frozen=True)
class RayJob:
    """A batch of inputs for the cluster, and how to run it. Vary with ``dataclasses.replace``."""

    items: Sequence[WorkItem]
    output: str
    """A folder (or fsspec URI) every node can write: the done markers and the summary go here."""
    model: ModelSettings = field(default_factory=ModelSettings)
    formats: tuple[str, ...] = ("txt",)
    punc_model: str | None = None
    itn: bool = False
    metadata: Mapping[str, Any] | None = None
    """The JSON output's ``model`` and ``options``; by default, those of the settings."""
    workers: int | None = None
    """Model workers (actors); default: one per GPU, or the cluster's CPUs, less a quarter for
    decoding and writing, in slots of ``cpus_per_worker``."""
    cpus_per_worker: float | None = None
    """CPUs reserved by each model worker; default 1 with a GPU, else up to 4."""
    batch_inputs: int = 16
    """Inputs per call of a model worker; its engine batches the segments of all of them."""
    max_decoded_seconds: float = 1800.0
    """Longer inputs are not decoded up front (their model worker streams them)."""
    overwrite: bool = False
    """Redo inputs that are already done."""
    summary: str | None = None
    """Where the summary goes; default ``<output>/zhuanxie-summary.jsonl``."""

    def __post_init__(self) -> None:
        from zhuanxie.writers import FORMATS

        unknown = [f for f in self.formats if f not in FORMATS]
        if unknown or not self.formats:
            raise ValueError(f"RayJob.formats must be some of {FORMATS}, not {self.formats}")
        for name in ("workers", "cpus_per_worker", "batch_inputs", "max_decoded_seconds"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"RayJob.{name} must be > 0, not {value}")
        ids = [item.id for item in self.items]
        if len(set(ids)) != len(ids):
            raise ValueError("RayJob.items must have distinct ids")

    def json_metadata(self) -> Mapping[str, Any]:
        if self.metadata is not None:
            return self.metadata
        m = self.model
        options = {
            "model": m.model,
            "formats": list(self.formats),
            "vad": m.vad != "none",
            "vad_model": m.vad_model,
            "max_segment": m.max_segment,
            "output_dir": self.output,
            "punc_model": self.punc_model,
            "itn": self.itn,
        }
        return {"model": m.model, "options": options}


@dataclass(frozen=True)
class SummaryRow:
    id: str
    input: str
    status: Status
    duration: float  # seconds of audio; 0 when it failed
    error: str | None = None
    outputs: tuple[str, ...] = ()


@dataclass(frozen=True)
class JobProgress:
    inputs_done: int  # tried in this run, failures included
    inputs_failed: int
    inputs_total: int  # to do in this run
    inputs_skipped: int  # done by an earlier run
    audio_seconds: float  # of the inputs done in this run
    elapsed_seconds: float

    @property
    def speed(self) -> float:
        """Audio hours per wall-clock hour."""
        return self.audio_seconds / self.elapsed_seconds if self.elapsed_seconds > 0 else 0.0


@dataclass(frozen=True)
class JobReport:
    rows: tuple[SummaryRow, ...]  # one per item, in item order
    wall_seconds: float
    summary: str  # where the summary was written

    def count(self, status: Status) -> int:
        return sum(r.status == status for r in self.rows)

    @property
    def audio_seconds(self) -> float:
        """Audio transcribed in this run."""
        return sum(r.duration for r in self.rows if r.status == "done")


# --- inputs -------------------------------------------------------------------------------


def items_from_paths(
    paths: Sequence[str], output: str, hotwords: Sequence[str] = ()
) -> tuple[list[WorkItem], tuple[str, ...]]:
    """Items for files, folders, globs and @lists (as ``zhuanxie transcribe`` takes them), named
    as it names them under ``output``; also the arguments that named nothing."""
    from zhuanxie.cli import output_stems
    from zhuanxie.inputs import expand_inputs

    expansion = expand_inputs(paths)
    roots = [Path(p).resolve() for p in paths if not p.startswith("@") and Path(p).is_dir()]
    stems = output_stems(expansion.files, Path(""), roots)  # relative to the output
    items = [
        WorkItem(str(p), str(p), _join(output, stems[p].as_posix()), tuple(hotwords))
        for p in expansion.files
    ]
    return items, expansion.problems


def items_from_manifest(manifest: str, output: str, hotwords: Sequence[str] = ()) -> list[WorkItem]:
    """Items of a JSONL or Parquet manifest with columns ``id``, ``path`` (or ``uri``) and,
    optionally, ``hotwords`` (a list of phrases, added to ``hotwords``). Results of an item go to
    ``<output>/<id>.<format>``; relative paths are relative to the manifest's folder."""
    if manifest.endswith(".parquet"):
        import pyarrow.parquet as pq

        with _open(manifest, "rb") as f:
            records = pq.read_table(f).to_pylist()
    elif manifest.endswith(".jsonl"):
        with _open(manifest, "rt") as f:
            lines = f.read().splitlines()
        records = []
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ManifestError(f"{manifest}, line {number}: not JSON ({e})") from e
    else:
        raise ManifestError(f"{manifest}: a manifest is .jsonl or .parquet")
    base = manifest.rsplit("/", 1)[0] if _is_uri(manifest) else str(_local(manifest).parent)
    items = [_item(r, n, manifest, base, output, hotwords) for n, r in enumerate(records, 1)]
    seen: set[str] = set()
    for n, item in enumerate(items, start=1):
        if item.id in seen:
            raise ManifestError(f"{manifest}, row {n}: id {item.id!r} appears twice")
        seen.add(item.id)
    return items


def _item(
    record: object, n: int, manifest: str, base: str, output: str, extra: Sequence[str]
) -> WorkItem:
    where = f"{manifest}, row {n}"
    if not isinstance(record, dict):
        raise ManifestError(f"{where}: expected an object with id and path")
    identifier = record.get("id")
    source = record.get("path") or record.get("uri")
    if not isinstance(identifier, str) or not identifier.strip():
        raise ManifestError(f"{where}: needs an id (a non-empty string)")
    parts = PurePosixPath(identifier).parts
    if identifier.startswith(("/", "\\")) or ".." in parts or "\\" in identifier:
        raise ManifestError(f"{where}: id {identifier!r} must be a relative name inside the output")
    if not isinstance(source, str) or not source.strip():
        raise ManifestError(f"{where}: needs a path or uri (a non-empty string)")
    if "://" not in source and not Path(source).is_absolute():
        source = _join(base, source)
    phrases = record.get("hotwords") or []
    if isinstance(phrases, str):
        phrases = phrases.replace("，", ",").split(",")
    if not isinstance(phrases, list) or not all(isinstance(p, str) for p in phrases):
        raise ManifestError(f"{where}: hotwords must be a list of strings")
    own = [p.strip() for p in phrases if p.strip()]
    return WorkItem(
        identifier, source, _join(output, identifier), tuple(dict.fromkeys([*extra, *own]))
    )


# --- files: local paths or fsspec URIs ----------------------------------------------------------


def _is_uri(location: str) -> bool:
    return "://" in location and not location.startswith("file://")


def _local(location: str) -> Path:
    return Path(location.removeprefix("file://"))


def _join(base: str, relative: str) -> str:
    if _is_uri(base):
        return f"{base.rstrip('/')}/{relative}"
    return str(_local(base) / relative)


def _fs(location: str) -> tuple[Any, str]:
    import fsspec

    return fsspec.core.url_to_fs(location)


def _open(location: str, mode: str) -> Any:
    if not _is_uri(location):
        return open(_local(location), mode, encoding="utf-8" if "t" in mode else None)
    import fsspec

    return fsspec.open(location, mode, encoding="utf-8" if "t" in mode else None).open()


def _exists(location: str) -> bool:
    if not _is_uri(location):
        return _local(location).exists()
    fs, path = _fs(location)
    return bool(fs.exists(path))


def put_text(location: str, text: str) -> None:
    """Write a whole file: atomically (temp file + rename) on a filesystem; on an fsspec URI,
    written under a temporary name and moved into place, so readers never see part of it."""
    from zhuanxie.writers import write_atomic

    if not _is_uri(location):
        _local(location).parent.mkdir(parents=True, exist_ok=True)
        write_atomic(_local(location), text)
        return
    fs, path = _fs(location)
    parent, name = path.rsplit("/", 1)
    temp = f"{parent}/.{name}.{hashlib.sha256(text.encode()).hexdigest()[:12]}.tmp"
    fs.pipe_file(temp, text.encode("utf-8"))
    fs.mv(temp, path)


def write_results(
    transcript: Any, stem: str, formats: Sequence[str], metadata: Mapping[str, Any]
) -> list[str]:
    """``writers.write_outputs`` for a local stem or an fsspec URI; returns the files written."""
    from zhuanxie.writers import render, write_outputs

    if not _is_uri(stem):
        return [str(p) for p in write_outputs(transcript, _local(stem), formats, metadata)]
    texts = {fmt: render(transcript, fmt, metadata) for fmt in dict.fromkeys(formats)}
    for fmt, text in texts.items():
        put_text(f"{stem}.{fmt}", text)
    return [f"{stem}.{fmt}" for fmt in texts]


# --- done markers -------------------------------------------------------------------------------


def _digest(value: object) -> str:
    text = json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:24]


def marker_name(item: WorkItem, job: RayJob) -> str:
    """``<where>-<what>.json``: where the results go, and what produced them (the input, its
    hotwords, the model and every option that changes the files)."""
    m = job.model
    what = {
        "input": item.input,
        "hotwords": item.hotwords,
        "model": [m.model, m.dtype, m.vad, m.vad_model, m.max_segment, m.language],
        "post": [job.punc_model, job.itn],
        "formats": job.formats,
        "metadata": job.json_metadata(),
    }
    return f"{_digest(item.stem)}-{_digest(what)}.json"


def _finished(job: RayJob) -> dict[str, str]:
    """Marker name -> its location, for the markers under the job's output."""
    state = _join(job.output, STATE_DIR)
    if not _is_uri(state):
        folder = _local(state)
        names = [p.name for p in folder.iterdir()] if folder.is_dir() else []
        return {name: str(folder / name) for name in names if name.endswith(".json")}
    fs, path = _fs(state)
    if not fs.exists(path):
        return {}
    found = [p.rsplit("/", 1)[-1] for p in fs.ls(path, detail=False)]
    return {name: _join(state, name) for name in found if name.endswith(".json")}


def _mark_done(state: str, name: str, record: Mapping[str, Any]) -> None:
    """Replace the input's markers (for other options) by this one."""
    where = name.split("-", 1)[0]
    if not _is_uri(state):
        for stale in _local(state).glob(f"{where}-*.json"):
            if stale.name != name:
                stale.unlink(missing_ok=True)
    else:
        fs, path = _fs(state)
        for stale in fs.glob(f"{path}/{where}-*.json"):
            if not stale.endswith(name):
                fs.rm(stale)
    put_text(_join(state, name), json.dumps(record, ensure_ascii=False) + "\n")


# --- the stages ---------------------------------------------------------------------------------


def decode(row: dict[str, Any], max_seconds: float) -> dict[str, Any]:
    """CPU stage: the input as 16 kHz mono (an empty array if it is longer than ``max_seconds``:
    its model worker streams it instead), or the reason it cannot be decoded."""
    from zhuanxie.audio import SAMPLE_RATE, AudioError, stream_audio

    audio, error = np.zeros(0, np.float32), ""
    try:
        chunks, samples = [], 0
        for chunk in stream_audio(_source(row["input"])):
            chunks.append(chunk)
            samples += len(chunk)
            if samples > max_seconds * SAMPLE_RATE:
                chunks = []
                break
        if chunks:
            audio = np.concatenate(chunks)
    except (AudioError, OSError, ValueError) as e:  # the input's own problem, already explained
        error = str(e)
    # Whatever a decoder raises is that input's error, as in the engine; the run goes on.
    except Exception as e:
        error = f"{type(e).__name__}: {e}"
    return {**row, "audio": audio, "error": error}


def _source(location: str) -> Path | bytes:
    if not _is_uri(location):
        return _local(location)
    fs, path = _fs(location)
    return bytes(fs.cat_file(path))


def load_engine(settings: ModelSettings) -> Any:
    """The engine ``zhuanxie transcribe`` would build for these settings (no post-processing)."""
    from zhuanxie.cli import build_engine

    try:
        return build_engine(
            settings.model,
            settings.device,
            settings.dtype,
            settings.vad,
            settings.max_segment,
            settings.language,
            None,
            settings.vad_model,
        )
    except RuntimeError as e:  # typer.Exit: build_engine has printed why (the worker's stderr)
        raise RuntimeError(f"a model worker cannot load {settings.model!r}: see above") from e


class Transcriber:
    """Model stage: a Ray actor holding one engine, which transcribes the inputs of each call
    together (their segments share length-sorted batches)."""

    def __init__(self, settings: ModelSettings) -> None:
        import torch

        cpus = _ray().get_runtime_context().get_assigned_resources().get("CPU", 1)
        torch.set_num_threads(settings.threads or max(1, int(cpus)))
        self.engine = load_engine(settings)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from zhuanxie.audio import SAMPLE_RATE
        from zhuanxie.engine import AudioInput

        errors = [str(e) for e in batch["error"]]
        inputs, positions = [], []
        for i, (name, location) in enumerate(zip(batch["id"], batch["input"])):
            hotwords = tuple(json.loads(batch["hotwords"][i]))
            audio = batch["audio"][i]
            if errors[i]:
                continue
            if len(audio):
                inputs.append(AudioInput(audio, SAMPLE_RATE, hotwords, name=str(name)))
            else:  # too long to pass decoded: the engine streams it
                try:
                    source = _source(str(location))
                except OSError as e:
                    errors[i] = f"cannot read {location}: {e}"
                    continue
                inputs.append(AudioInput(source, hotwords=hotwords, name=str(name)))
            positions.append(i)
        transcripts = [b""] * len(errors)
        for result in self.engine.transcribe_many(inputs):
            i = positions[result.index]
            if result.transcript is None:
                errors[i] = result.error or "failed"
            else:
                transcripts[i] = pickle.dumps(result.transcript)
        columns = {k: v for k, v in batch.items() if k != "audio"}
        return {
            **columns,
            "transcript": np.array(transcripts, dtype=object),
            "error": np.array(errors, dtype=object),
        }


@dataclass(frozen=True)
class FinishSettings:
    """What the finish stage needs (picklable)."""

    formats: tuple[str, ...]
    metadata: Mapping[str, Any]
    punc_model: str | None
    itn: bool
    state: str


@functools.lru_cache(maxsize=2)
def _postprocessor(punc_model: str | None, itn: bool) -> Any:
    """Built once per worker process (a Ray task worker runs many finish tasks)."""
    from zhuanxie.cli import build_postprocessor

    try:
        return build_postprocessor(punc_model, itn)
    except RuntimeError as e:  # typer.Exit, after printing why
        raise RuntimeError(f"cannot load post-processing ({punc_model=}, {itn=}): see above") from e


def finish(batch: dict[str, np.ndarray], settings: FinishSettings) -> dict[str, np.ndarray]:
    """Post stage: punctuation and ITN, then the result files and the done marker."""
    n = len(batch["id"])
    errors: list[str] = [str(e) for e in batch["error"]]
    durations, outputs = [0.0] * n, [""] * n
    ok = [i for i in range(n) if not errors[i]]
    transcripts = [pickle.loads(batch["transcript"][i]) for i in ok]
    post = _postprocessor(settings.punc_model, settings.itn)
    if post is not None and transcripts:
        try:
            transcripts = post.apply(transcripts)
        # As in the engine: a failure fails these inputs, never the run.
        except Exception as e:
            for i in ok:
                errors[i] = f"post-processing failed: {type(e).__name__}: {e}"
            ok, transcripts = [], []
    for i, transcript in zip(ok, transcripts):
        location = str(batch["input"][i])
        try:
            written = write_results(
                transcript,
                str(batch["stem"][i]),
                settings.formats,
                {**settings.metadata, "input": location},
            )
            record = {
                "id": str(batch["id"][i]),
                "input": location,
                "duration": transcript.duration,
                "outputs": written,
            }
            _mark_done(settings.state, str(batch["marker"][i]), record)
        except (OSError, ValueError) as e:
            errors[i] = f"cannot write results to {batch['stem'][i]}: {e}"
            continue
        durations[i], outputs[i] = transcript.duration, json.dumps(written, ensure_ascii=False)
    return {
        "id": batch["id"],
        "error": np.array(errors, dtype=object),
        "duration": np.array(durations, dtype=np.float64),
        "outputs": np.array(outputs, dtype=object),
    }


def _ray() -> Any:
    """The ``ray`` module (an optional dependency: ``pip install 'zhuanxie[ray]'``)."""
    import importlib

    try:
        return importlib.import_module("ray")
    except ImportError as e:
        raise ImportError("Ray jobs need Ray: pip install 'zhuanxie[ray]'") from e


# --- the driver ---------------------------------------------------------------------------------

# Ray Data runs one decode task per block; more blocks than this only add scheduling overhead.
MAX_BLOCKS = 2000


def run_job(
    job: RayJob,
    address: str | None = None,
    progress: Callable[[SummaryRow | None, JobProgress], None] | None = None,
) -> JobReport:
    """Run ``job`` on Ray and write its summary; inputs already done are skipped.

    Uses the Ray instance this process is connected to, if any; otherwise connects to
    ``address`` (``auto``, ``HOST:PORT``, ``ray://HOST:10001``; None: ``RAY_ADDRESS`` or a new
    local instance) for this run. ``progress`` is called before the work starts (with no row),
    then once per input finished in this run. Raises ``RayJobError`` if the run stops early;
    its summary then lists the inputs not reached as ``pending``, and a re-run resumes.
    """
    started = time.perf_counter()
    # Workers run elsewhere (another directory, another machine): only absolute paths travel.
    output = _absolute(job.output)
    items = [replace(i, input=_absolute(i.input), stem=_absolute(i.stem)) for i in job.items]
    job = replace(job, items=items, output=output)
    markers = {item.id: marker_name(item, job) for item in items}
    finished = {} if job.overwrite else _finished(job)
    rows: dict[str, SummaryRow] = {}
    todo: list[WorkItem] = []
    for item in items:
        marker = finished.get(markers[item.id])
        if marker and all(_exists(f"{item.stem}.{f}") for f in job.formats):
            rows[item.id] = _skipped(item, marker)
        else:
            todo.append(item)
    ray: Any = _ray() if todo else None  # fails early, with the install command, if Ray is missing
    ours = ray is not None and not ray.is_initialized()
    state = JobProgress(0, 0, len(todo), len(rows), 0.0, 0.0)
    if progress is not None:
        progress(None, state)
    results = _transcribe(job, todo, markers)
    try:
        if ours:
            ray.init(address=address)
        for row in results:
            rows[row.id] = row
            state = replace(
                state,
                inputs_done=state.inputs_done + 1,
                inputs_failed=state.inputs_failed + (row.error is not None),
                audio_seconds=state.audio_seconds + row.duration,
                elapsed_seconds=time.perf_counter() - started,
            )
            if progress is not None:
                progress(row, state)
    except Exception as e:
        done = state.inputs_done
        raise RayJobError(f"the run stopped after {done} of {len(todo)} inputs: {e}") from e
    finally:
        results.close()
        if ours:
            ray.shutdown()
        summary = job.summary or _join(output, SUMMARY_NAME)
        ordered = tuple(
            rows.get(item.id) or SummaryRow(item.id, item.input, "pending", 0.0) for item in items
        )
        put_text(summary, "".join(_summary_line(r) for r in ordered))
    return JobReport(ordered, time.perf_counter() - started, summary)


def _absolute(location: str) -> str:
    return location if _is_uri(location) else str(_local(location).absolute())


def _skipped(item: WorkItem, marker: str) -> SummaryRow:
    with _open(marker, "rt") as f:
        record = json.load(f)
    duration, outputs = float(record["duration"]), tuple(record["outputs"])
    return SummaryRow(item.id, item.input, "skipped", duration, None, outputs)


def _summary_line(row: SummaryRow) -> str:
    record = {
        "id": row.id,
        "input": row.input,
        "status": row.status,
        "duration": round(row.duration, 3),
        "error": row.error,
        "outputs": list(row.outputs),
    }
    return json.dumps(record, ensure_ascii=False) + "\n"


def _transcribe(
    job: RayJob, todo: list[WorkItem], markers: Mapping[str, str]
) -> Generator[SummaryRow, None, None]:
    """Finished inputs, as the cluster finishes them."""
    if not todo:
        return
    by_id = {item.id: item for item in todo}
    # Closed explicitly, so that a run stopped early stops its actors and tasks at once.
    rows: Any = iter(_dataset(job, todo, markers).iter_rows())  # a generator
    with contextlib.closing(rows) as results:
        for r in results:
            item = by_id[str(r["id"])]
            error = str(r["error"]) or None
            outputs = tuple(json.loads(r["outputs"])) if r["outputs"] else ()
            status: Status = "failed" if error else "done"
            yield SummaryRow(item.id, item.input, status, float(r["duration"]), error, outputs)


def worker_resources(
    job: RayJob, cluster: Mapping[str, float], inputs: int
) -> tuple[int, float, float]:
    """How many model workers, and the CPUs and GPUs each reserves."""
    calls = -(-inputs // job.batch_inputs)  # more workers than calls would only load models
    if job.model.device == "cuda":
        gpus = int(cluster.get("GPU", 0))
        if gpus < 1 and job.workers is None:
            raise RayJobError("device cuda, but the Ray cluster has no GPU; use device cpu")
        workers = job.workers or gpus
        return min(workers, calls), job.cpus_per_worker or 1, 1
    # A quarter of the CPUs (at least one) stays free for decoding and writing.
    spare = max(1.0, float(cluster.get("CPU", 1)) * 3 // 4)
    per = job.cpus_per_worker or max(1, min(4, int(spare)))
    workers = job.workers or max(1, int(spare // per))
    return min(workers, calls), per, 0


def _dataset(job: RayJob, todo: list[WorkItem], markers: Mapping[str, str]) -> Any:
    from zhuanxie.audio import SAMPLE_RATE

    ray = _ray()
    rows = [
        {
            "id": item.id,
            "input": item.input,
            "stem": item.stem,
            "hotwords": json.dumps(list(item.hotwords), ensure_ascii=False),
            "marker": markers[item.id],
        }
        for item in todo
    ]
    workers, cpus, gpus = worker_resources(job, ray.cluster_resources(), len(todo))
    settings = FinishSettings(
        job.formats, job.json_metadata(), job.punc_model, job.itn, _join(job.output, STATE_DIR)
    )
    ds = ray.data.from_items(rows, override_num_blocks=min(len(rows), MAX_BLOCKS))
    # A decode task's memory: the worker process (~300 MB with its libraries) and the audio,
    # held twice at most (the chunks, then one array). Declaring it also keeps Ray Data from
    # fusing the decode tasks into the model actors, which would decode in the model worker.
    memory = 2**29 + 2 * job.max_decoded_seconds * SAMPLE_RATE * 4
    ds = ds.map(
        decode, fn_kwargs={"max_seconds": job.max_decoded_seconds}, num_cpus=1, memory=memory
    )
    # Ray Data restarts a dead actor and retries its calls without limit by default
    # (max_restarts=-1, max_task_retries=-1), so a killed worker's inputs are redone.
    ds = ds.map_batches(
        Transcriber,
        fn_constructor_kwargs={"settings": job.model},
        batch_size=job.batch_inputs,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=workers),
        num_cpus=cpus,
        num_gpus=gpus,
    )
    ds = ds.map_batches(
        finish,
        fn_kwargs={"settings": settings},
        batch_size=job.batch_inputs,
        batch_format="numpy",
        num_cpus=1,
    )
    ds.context.enable_progress_bars = False  # the caller shows progress
    return ds


# --- the command line ---------------------------------------------------------------------------

# With -q, a plain progress line at most this often (cluster job logs are files, not terminals).
PROGRESS_LINE_SECONDS = 30.0


def transcribe_command(
    paths: Sequence[str],
    *,
    output_dir: Path | None,
    formats: Sequence[str],
    hotwords: Sequence[str],
    metadata: dict[str, Any],
    settings: ModelSettings,
    post: tuple[str | None, bool],
    overwrite: bool,
    quiet: bool,
    jsonl: bool,
    address: str | None,
) -> int:
    """``zhuanxie transcribe --ray``: the exit status (0 all done, 1 some failed or stopped).
    ``post`` is the punctuation model and whether to apply ITN."""
    from zhuanxie.cli import SOME_FAILED, err, fail

    if output_dir is None:
        raise fail("--ray needs -o/--output-dir: a folder (or fsspec URI) every node can write")
    output = _absolute(_as_uri(str(output_dir)))
    if _is_uri(output):  # the option parsed it as a path; the JSON should name the real place
        metadata = {**metadata, "options": {**metadata["options"], "output_dir": output}}
    manifests = [p for p in paths if p.endswith(MANIFEST_SUFFIXES)]
    try:
        if manifests and len(manifests) < len(paths):
            raise fail("give either manifests (.jsonl, .parquet) or audio paths, not both")
        if manifests:
            items = [i for m in manifests for i in items_from_manifest(m, output, hotwords)]
        else:
            items, problems = items_from_paths(paths, output, hotwords)
            for problem in problems:
                err.print(f"[yellow]skipped:[/yellow] {problem}", highlight=False)
        if not items:
            raise fail("no input files found")
        job = RayJob(items, output, settings, tuple(formats), *post, metadata, overwrite=overwrite)
    except (ManifestError, OSError, ValueError) as e:
        raise fail(str(e)) from e
    # Ray Data logs every execution plan at INFO; the progress display says what matters.
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    display = _Display(quiet, jsonl)
    try:
        with display:
            report = run_job(job, address, display.update)
    except ImportError as e:
        raise fail(str(e)) from e
    except RayJobError as e:
        err.print(f"[red]error:[/red] {e}", highlight=False)
        return SOME_FAILED
    if not quiet and not jsonl:
        display.print_report(report)
    return SOME_FAILED if report.count("failed") else 0


def _as_uri(location: str) -> str:
    """Undo what parsing a URI as a path does ("s3://b/x" becomes "s3:/b/x")."""
    scheme, sep, rest = location.partition(":/")
    if sep and len(scheme) > 1 and scheme.isascii() and not rest.startswith("/"):
        return f"{scheme}://{rest}"
    return location


class _Display:
    """Progress on the console: a rich bar; plain lines with -q; JSON lines with --jsonl."""

    def __init__(self, quiet: bool, jsonl: bool) -> None:
        from zhuanxie.cli import err, progress_display

        self.quiet, self.jsonl, self.console = quiet, jsonl, err
        self.bar = progress_display(quiet or jsonl)
        self.task = self.bar.add_task("transcribing", total=None, hours="", speed="")
        self.last_line = time.perf_counter()

    def __enter__(self) -> _Display:
        self.bar.__enter__()
        return self

    def __exit__(self, *args: object) -> None:
        self.bar.__exit__(*args)

    def update(self, row: SummaryRow | None, p: JobProgress) -> None:
        hours = f"{p.audio_seconds / 3600:.2f} h audio"
        speed = f"{p.speed:.1f} h/h" if p.elapsed_seconds > 0 else ""
        self.bar.update(
            self.task, total=p.inputs_total, completed=p.inputs_done, hours=hours, speed=speed
        )
        if row is None:
            if p.inputs_skipped and not self.jsonl:
                self.console.print(f"{p.inputs_skipped} inputs already done (skipped)")
            return
        if row.error:
            self.bar.console.print(f"[red]failed:[/red] {row.id}: {row.error}", highlight=False)
        if self.jsonl:
            record = {
                "id": row.id,
                "input": row.input,
                "ok": row.error is None,
                "error": row.error,
                "duration": row.duration,
                "outputs": list(row.outputs),
            }
            print(json.dumps(record, ensure_ascii=False), flush=True)
        now = time.perf_counter()
        last = p.inputs_done == p.inputs_total
        if (
            self.quiet
            and not self.jsonl
            and (last or now - self.last_line >= PROGRESS_LINE_SECONDS)
        ):
            self.last_line = now
            self.console.print(
                f"{p.inputs_done}/{p.inputs_total} inputs ({p.inputs_failed} failed), "
                f"{hours}, {speed or '-'}",
                highlight=False,
            )

    def print_report(self, report: JobReport) -> None:
        from rich.table import Table

        from zhuanxie.cli import clock

        audio, wall = report.audio_seconds, report.wall_seconds
        table = Table(title="zhuanxie on Ray", show_header=False)
        counts = ", ".join(f"{report.count(s)} {s}" for s in ("done", "skipped", "failed"))
        table.add_row("files", counts)
        table.add_row("audio", clock(audio))
        table.add_row("wall time", clock(wall))
        table.add_row("speed", f"{audio / wall:.1f} audio hours per hour" if wall > 0 else "-")
        table.add_row("summary", report.summary)
        self.console.print(table)
