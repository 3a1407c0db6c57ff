"""The ``zhuanxie`` command line: transcribe, models, jobs, info, eval.

Exit status: 0 when every input succeeded, 1 when some failed (the rest are still written),
2 for usage errors (bad options, no inputs, a job in use).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

app = typer.Typer(
    name="zhuanxie",
    help="Offline Mandarin speech recognition (Paraformer / SeACo-Paraformer).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
models_app = typer.Typer(help="Model directories: list, download, create.", no_args_is_help=True)
jobs_app = typer.Typer(help="Resumable batch jobs.", no_args_is_help=True)
app.add_typer(models_app, name="models")
app.add_typer(jobs_app, name="jobs")

# Resident memory after loading each configuration, float32, published sizes; measured as
# described in docs/benchmarks.md ("Memory by configuration").
MEMORY_BY_CONFIGURATION = (
    ("ASR only (SeACo-large)", "1.2 GiB"),
    ("+ punctuation zh", "1.5 GiB"),
    ("+ punctuation zh-en", "2.4 GiB"),
    ("full (+ FSMN-VAD, ITN)", "2.4 GiB"),
)
USAGE_ERROR = 2
SOME_FAILED = 1
DEFAULT_MODEL = "seaco-paraformer-large"

err = Console(stderr=True, soft_wrap=True)  # messages keep their lines; tables still fit


def fail(message: str) -> typer.Exit:
    err.print(f"[red]error:[/red] {message}", highlight=False)
    return typer.Exit(USAGE_ERROR)


@dataclass(frozen=True)
class Outcome:
    path: Path
    duration: float
    error: str | None
    outputs: tuple[Path, ...] = ()


@app.command()
def transcribe(
    paths: Annotated[
        list[str], typer.Argument(help="Files, folders, glob patterns or @list.txt files.")
    ],
    output_dir: Annotated[
        Path | None,
        typer.Option(
            "-o", "--output-dir", help="Write results here (default: next to each input)."
        ),
    ] = None,
    formats: Annotated[
        str, typer.Option("-f", "--format", help="Comma-separated: txt,srt,vtt,json,tsv.")
    ] = "txt",
    model: Annotated[
        str, typer.Option(help="A known model name or a model directory.")
    ] = DEFAULT_MODEL,
    hotwords: Annotated[
        str | None, typer.Option(help='Comma-separated hotwords, e.g. "达摩院,魔搭".')
    ] = None,
    hotwords_file: Annotated[Path | None, typer.Option(help="Hotwords, one per line.")] = None,
    device: Annotated[
        str, typer.Option(help="cpu, cuda, cuda:0 or several: cuda:0,cuda:1.")
    ] = "cpu",
    dtype: Annotated[
        str, typer.Option(help="float32, bfloat16, float16 or int8 (CPU).")
    ] = "float32",
    threads: Annotated[
        int | None, typer.Option(help="CPU threads for the model (default: all cores).")
    ] = None,
    vad: Annotated[
        bool, typer.Option("--vad/--no-vad", help="Split at pauses with Silero VAD.")
    ] = True,
    vad_model: Annotated[
        str | None,
        typer.Option(help="Split with FunASR's FSMN-VAD from this model (name or folder) instead."),
    ] = None,
    max_segment: Annotated[float, typer.Option(help="Longest segment in seconds.")] = 20.0,
    punc_model: Annotated[
        str | None,
        typer.Option(help="Add punctuation with this CT-Transformer model (name or directory)."),
    ] = None,
    itn: Annotated[
        bool, typer.Option("--itn/--no-itn", help="Write numbers, dates, money as digits.")
    ] = False,
    language: Annotated[
        str | None,
        typer.Option(help="Whisper models: language code (zh, en, ...); default: detect."),
    ] = None,
    job: Annotated[
        Path | None, typer.Option(help="Keep a resumable job record in this folder.")
    ] = None,
    allow_option_change: Annotated[
        bool, typer.Option(help="Let --job continue with changed options.")
    ] = False,
    overwrite: Annotated[
        bool, typer.Option(help="Redo inputs whose outputs already exist.")
    ] = False,
    quiet: Annotated[bool, typer.Option("-q", "--quiet", help="Print only errors.")] = False,
    jsonl: Annotated[
        bool, typer.Option(help="Print one JSON line per input (for scripts).")
    ] = False,
    ray: Annotated[
        bool,
        typer.Option(
            help="Run on Ray (RAY_ADDRESS, or a new local Ray); needs -o. Also takes "
            "JSONL/Parquet manifests (id, path or uri, hotwords). -q prints plain progress lines."
        ),
    ] = False,
    ray_address: Annotated[
        str | None,
        typer.Option(help="The Ray cluster: auto, HOST:PORT or ray://HOST:10001 (implies --ray)."),
    ] = None,
) -> None:
    """Transcribe audio and video files into text and subtitles."""
    from zhuanxie.inputs import expand_inputs
    from zhuanxie.writers import FORMATS

    wanted = [f.strip().lower() for f in formats.split(",") if f.strip()]
    unknown = [f for f in wanted if f not in FORMATS]
    if unknown or not wanted:
        raise fail(
            f"unknown format {', '.join(unknown) or '(none)'}; choose from {', '.join(FORMATS)}"
        )
    phrases = read_hotwords(hotwords, hotwords_file)
    options: dict[str, Any] = {
        "model": model,
        "formats": wanted,
        "hotwords": list(phrases),
        "vad": vad,
        "vad_model": vad_model,
        "max_segment": max_segment,
        "output_dir": str(output_dir.resolve()) if output_dir else None,
        "punc_model": punc_model,
        "itn": itn,
    }
    if language is not None:
        options["language"] = language
    if ray or ray_address:  # the same files, written by a Ray cluster (see zhuanxie.ray_jobs)
        from zhuanxie import ray_jobs

        if job is not None:
            raise fail("--job is for local runs; a --ray run resumes from its outputs by itself")
        try:
            settings = ray_jobs.ModelSettings(
                model=model,
                device=device,
                dtype=dtype,
                vad=("fsmn" if vad_model else "silero") if vad else "none",
                vad_model=vad_model,
                max_segment=max_segment,
                language=language,
                threads=threads,
            )
        except ValueError as e:
            raise fail(str(e)) from e
        metadata = {"model": model, "options": options}
        raise typer.Exit(
            ray_jobs.transcribe_command(
                paths,
                output_dir=output_dir,
                formats=wanted,
                hotwords=phrases,
                metadata=metadata,
                settings=settings,
                post=(punc_model, itn),
                overwrite=overwrite,
                quiet=quiet,
                jsonl=jsonl,
                address=ray_address,
            )
        )
    expansion = expand_inputs(paths)
    for problem in expansion.problems:
        err.print(f"[yellow]skipped:[/yellow] {problem}", highlight=False)
    if not expansion.files:
        raise fail("no input files found")
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    roots = [Path(p).resolve() for p in paths if not p.startswith("@") and Path(p).is_dir()]
    stems = output_stems(expansion.files, output_dir, roots)
    postprocessor = build_postprocessor(punc_model, itn)
    vad_kind = ("fsmn" if vad_model else "silero") if vad else "none"
    engine = build_engine(
        model, device, dtype, vad_kind, max_segment, language, postprocessor, vad_model
    )
    metadata = {"model": model, "options": options}

    store = open_job(job, options, allow_option_change) if job else None
    try:
        if store is not None:
            store.add_inputs([str(p) for p in expansion.files])
            todo = [Path(k) for k in store.claim_pending(len(expansion.files) + 1_000_000)]
        elif overwrite:
            todo = list(expansion.files)
        else:
            todo = [p for p in expansion.files if not all_exist(stems[p], wanted)]
            skipped = len(expansion.files) - len(todo)
            if skipped and not quiet and not jsonl:
                err.print(f"{skipped} inputs already have results (use --overwrite to redo them)")
        started = time.perf_counter()
        outcomes = run(engine, todo, phrases, stems, wanted, metadata, store, quiet or jsonl, jsonl)
        wall = time.perf_counter() - started
    finally:
        if store is not None:
            store.close()
    if not quiet and not jsonl:
        print_summary(outcomes, wall)
    if any(o.error for o in outcomes):
        raise typer.Exit(SOME_FAILED)


def read_hotwords(inline: str | None, path: Path | None) -> tuple[str, ...]:
    phrases = [p.strip() for p in (inline or "").replace("，", ",").split(",")]
    if path is not None:
        try:
            phrases += path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise fail(f"cannot read hotwords file {path}: {e}") from e
    return tuple(dict.fromkeys(p.strip() for p in phrases if p.strip()))


def output_stems(
    files: Sequence[Path], output_dir: Path | None, roots: Sequence[Path]
) -> dict[Path, Path]:
    """Output stem per input; inputs that would share one keep their extension in the name."""
    from zhuanxie.inputs import output_stem

    stems = {p: output_stem(p, output_dir, roots) for p in files}
    counts: dict[Path, int] = {}
    for stem in stems.values():
        counts[stem] = counts.get(stem, 0) + 1
    return {p: s.with_name(p.name) if counts[s] > 1 else s for p, s in stems.items()}


def all_exist(stem: Path, formats: Sequence[str]) -> bool:
    return all(stem.with_name(f"{stem.name}.{f}").exists() for f in formats)


def build_postprocessor(punc_model: str | None, itn: bool) -> Any:
    """Punctuation and/or ITN for the transcripts, or None when neither is asked for."""
    if punc_model is None and not itn:
        return None
    from zhuanxie.hub import ModelNotFoundError, resolve_model
    from zhuanxie.postprocess import PostProcessor

    punctuator = normalizer = None
    if punc_model is not None:
        from zhuanxie.punctuation import Punctuator, load_punctuation_model

        try:
            punctuator = Punctuator(load_punctuation_model(resolve_model(punc_model)))
        except ModelNotFoundError as e:
            raise fail(str(e)) from e
        except ValueError as e:
            raise fail(f"cannot load punctuation model {punc_model!r}: {e}") from e
    if itn:
        from zhuanxie.itn import InverseNormalizer

        try:
            normalizer = InverseNormalizer()
        except ImportError as e:
            raise fail(str(e)) from e
    return PostProcessor(punctuator, normalizer)


def build_engine(
    model: str,
    device: str,
    dtype: str,
    vad: str,
    max_segment: float,
    language: str | None = None,
    postprocessor: Any = None,
    vad_model: str | None = None,
) -> Any:
    """The engine for ``model`` on each device; ``vad`` is silero, fsmn (``vad_model``) or none."""
    from zhuanxie.engine import Engine, EngineOptions
    from zhuanxie.hub import ModelNotFoundError, resolve_model
    from zhuanxie.recognizer import load_model
    from zhuanxie.vad import VadOptions

    try:
        directory = resolve_model(model)
        # Whisper: a CTranslate2 directory (model.bin); FunASR directories hold model.pt.
        if (directory / "model.bin").is_file():
            if postprocessor is not None:
                raise fail("--punc-model and --itn are for Paraformer; Whisper writes its own")
            if vad == "fsmn":
                raise fail("--vad-model (FSMN-VAD) works with Paraformer models only")
            return build_whisper_engine(
                directory, device, dtype, vad != "none", max_segment, language
            )
        if language not in (None, "zh"):
            raise fail(f"--language {language}: only Whisper models take a language")
        models = [load_model(directory, device=d.strip(), dtype=dtype) for d in device.split(",")]
        vad_options = VadOptions(max_segment_s=max_segment)
        vad_dir = str(resolve_model(vad_model)) if vad_model else None
        options = EngineOptions(vad=vad, vad_options=vad_options, vad_model=vad_dir)  # type: ignore[arg-type]
        return Engine(models, options, postprocessor=postprocessor)
    except ModelNotFoundError as e:
        raise fail(str(e)) from e
    except typer.Exit:  # a RuntimeError too; fail() has already said why
        raise
    except (ValueError, RuntimeError) as e:
        raise fail(f"cannot load model {model!r}: {e}") from e


def build_whisper_engine(
    directory: Path, device: str, dtype: str, vad: bool, max_segment: float, language: str | None
) -> Any:
    """Whisper on each device, with segments packed for its 30 s window (see zhuanxie.whisper)."""
    import torch

    from zhuanxie.engine import Engine, EngineOptions

    try:
        from zhuanxie import whisper
    except ImportError as e:
        raise fail(f"{directory} is a CTranslate2 model: {e}") from e
    if max_segment > whisper.WINDOW_SECONDS:
        raise fail(f"--max-segment {max_segment:g}: Whisper takes at most 30 s per segment")
    backends = [
        whisper.WhisperBackend(
            directory,
            device=d.strip(),
            compute_type=dtype,
            language=language,
            cpu_threads=torch.get_num_threads(),
        )
        for d in device.split(",")
    ]
    options = EngineOptions(
        vad="silero" if vad else "none",
        vad_options=replace(whisper.VAD_OPTIONS, max_segment_s=max_segment),
        batch_frames=whisper.batch_frames(whisper.BATCH_SIZE),
    )
    return Engine(backends, options)


def open_job(directory: Path, options: dict[str, Any], allow_change: bool) -> Any:
    from zhuanxie.jobs import JobError, JobOptionsChangedError, JobStore

    try:
        return JobStore.open(directory, options, allow_option_change=allow_change)
    except JobOptionsChangedError as e:
        raise fail(f"{e} (pass --allow-option-change to continue with the new options)") from e
    except JobError as e:
        raise fail(str(e)) from e


def run(
    engine: Any,
    todo: list[Path],
    phrases: tuple[str, ...],
    stems: dict[Path, Path],
    formats: list[str],
    metadata: dict[str, Any],
    store: Any,
    silent: bool,
    jsonl: bool,
) -> list[Outcome]:
    from zhuanxie.audio import audio_info
    from zhuanxie.engine import AudioInput
    from zhuanxie.writers import write_outputs

    total_seconds = sum(duration_of(p, audio_info) for p in todo)
    outcomes: list[Outcome] = []
    inputs = [AudioInput(p, hotwords=phrases) for p in todo]
    with progress_display(silent) as progress:
        task = progress.add_task("transcribing", total=len(todo), hours="", speed="")
        started = time.perf_counter()
        done_seconds = 0.0
        for result in engine.transcribe_many(inputs):
            path = todo[result.index]
            outcome = record(result, path, stems[path], formats, metadata, store, write_outputs)
            outcomes.append(outcome)
            done_seconds += outcome.duration
            elapsed = time.perf_counter() - started
            speed = f"{done_seconds / elapsed:.1f}x" if elapsed > 0 else ""
            progress.update(
                task,
                advance=1,
                hours=f"{done_seconds / 3600:.2f}/{total_seconds / 3600:.2f} h",
                speed=speed,
            )
            if outcome.error:
                progress.console.print(
                    f"[red]failed:[/red] {path}: {outcome.error}", highlight=False
                )
            if jsonl:
                print(
                    json.dumps(
                        {
                            "input": str(path),
                            "ok": outcome.error is None,
                            "error": outcome.error,
                            "duration": outcome.duration,
                            "outputs": [str(o) for o in outcome.outputs],
                        },
                        ensure_ascii=False,
                    ),
                    flush=True,
                )
    return outcomes


def duration_of(path: Path, audio_info: Any) -> float:
    try:
        return float(audio_info(path).duration_s or 0.0)
    except ValueError:
        return 0.0


def record(
    result: Any,
    path: Path,
    stem: Path,
    formats: list[str],
    metadata: dict[str, Any],
    store: Any,
    write_outputs: Any,
) -> Outcome:
    """Write an input's outputs (atomically), then record it in the job, in that order."""
    if result.transcript is None:
        if store is not None:
            store.mark_failed(str(path), result.error)
        return Outcome(path, 0.0, result.error)
    try:
        outputs = tuple(
            write_outputs(result.transcript, stem, formats, {**metadata, "input": str(path)})
        )
    except OSError as e:
        error = f"cannot write results next to {stem}: {e}"
        if store is not None:
            store.mark_failed(str(path), error)
        return Outcome(path, result.transcript.duration, error)
    if store is not None:
        store.mark_done(str(path), [str(o) for o in outputs], result.transcript.duration)
    return Outcome(path, result.transcript.duration, None, outputs)


class _Silent:
    """A stand-in for rich's Progress when output is quiet or machine-readable."""

    console = err

    def __enter__(self) -> _Silent:
        return self

    def __exit__(self, *args: object) -> None:
        return None

    def add_task(self, *args: object, **kwargs: object) -> int:
        return 0

    def update(self, *args: object, **kwargs: object) -> None:
        return None


def progress_display(silent: bool) -> Any:
    if silent:
        return _Silent()
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[hours]}"),
        TextColumn("{task.fields[speed]}"),
        TimeRemainingColumn(),
        console=err,
    )


def clock(seconds: float) -> str:
    """Audio duration as H:MM:SS."""
    whole = round(seconds)
    return f"{whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


def print_summary(outcomes: Sequence[Outcome], wall: float) -> None:
    failed = [o for o in outcomes if o.error]
    audio = sum(o.duration for o in outcomes)
    table = Table(title="zhuanxie", show_header=False)
    table.add_row("files", f"{len(outcomes) - len(failed)} done, {len(failed)} failed")
    table.add_row("audio", clock(audio))
    table.add_row("wall time", clock(wall))
    table.add_row("speed", f"{audio / wall:.1f}x real time" if wall > 0 else "-")
    err.print(table)
    for outcome in failed:
        err.print(f"[red]failed:[/red] {outcome.path}: {outcome.error}", highlight=False)


@models_app.command("random")
def models_random(
    out_dir: Annotated[Path, typer.Argument(help="Directory to create (must be absent or empty).")],
    arch: Annotated[str, typer.Option(help="Architecture, e.g. seaco-paraformer-large.")],
    seed: Annotated[int, typer.Option(help="Random seed; the same seed gives the same files.")] = 0,
) -> None:
    """Write a seeded random model in the official FunASR layout (for tests and benchmarks)."""
    from zhuanxie import generator

    known = [*generator.ARCHS, *generator.PUNCTUATION_ARCHS, generator.FSMN_VAD_ARCH]
    if arch not in known:
        raise fail(f"unknown arch {arch!r}; known: {', '.join(known)}")
    try:
        if arch in generator.PUNCTUATION_ARCHS:
            generator.write_random_punctuation_model(out_dir, arch, seed)
        elif arch == generator.FSMN_VAD_ARCH:
            generator.write_random_fsmn_vad(out_dir, seed)
        else:
            generator.write_random_model(out_dir, arch, seed)
    except FileExistsError as e:
        raise fail(str(e)) from e
    typer.echo(f"wrote random {arch} (seed {seed}) to {out_dir}")


@models_app.command("list")
def models_list() -> None:
    """Known models, what each is, and whether it is downloaded."""
    from zhuanxie.hub import KNOWN_MODELS, list_models, models_dir

    table = Table(title="known models")
    table.add_column("name", no_wrap=True)
    for column in ("kind", "present", "description"):
        table.add_column(column)
    for status in list_models():
        mark = "[green]yes[/green]" if status.present else "no"
        repo = KNOWN_MODELS[status.name].modelscope_id or KNOWN_MODELS[status.name].huggingface_id
        table.add_row(status.name, status.kind, mark, f"{status.description}\n[dim]{repo}[/dim]")
    console = Console()
    console.print(table)
    console.print(f"cache: {models_dir()}  (download with: zhuanxie models download NAME)")


@models_app.command("download")
def models_download(
    name: Annotated[str, typer.Argument(help="A known model name (see `zhuanxie models list`).")],
    source: Annotated[str, typer.Option(help="auto, modelscope or huggingface.")] = "auto",
    revision: Annotated[
        str | None, typer.Option(help="A hub revision (default: the latest).")
    ] = None,
) -> None:
    """Download a model into the cache (resumable; sizes and checksums verified)."""
    from zhuanxie.hub import DownloadError, ModelNotFoundError, download

    if source not in ("auto", "modelscope", "huggingface"):
        raise fail(f"--source must be auto, modelscope or huggingface, not {source!r}")
    try:
        path = download(name, source=source, revision=revision, progress=typer.echo)  # type: ignore[arg-type]
    except (ModelNotFoundError, DownloadError) as e:
        err.print(f"[red]error:[/red] {e}", highlight=False)
        raise typer.Exit(SOME_FAILED) from e
    typer.echo(f"{name} is ready at {path}")


@app.command("eval")
def evaluate_results(
    references: Annotated[Path, typer.Argument(help="References: TSV (id<TAB>text) or JSON.")],
    hypotheses: Annotated[
        Path, typer.Argument(help="A results folder (<id>.json) or a TSV/JSON file.")
    ],
    hotwords: Annotated[str | None, typer.Option(help="Comma-separated hotwords to score.")] = None,
    hotwords_file: Annotated[Path | None, typer.Option(help="Hotwords, one per line.")] = None,
    metric: Annotated[
        str, typer.Option(help="auto (CER for Chinese, WER otherwise), cer or wer.")
    ] = "auto",
    per_utterance: Annotated[bool, typer.Option(help="Also list every utterance's score.")] = False,
) -> None:
    """Score results against references: CER/WER, and hotword recall, precision and F1."""
    from zhuanxie.evaluation import (
        EvalInputError,
        evaluate,
        format_report,
        load_hypotheses,
        load_texts,
    )

    if metric not in ("auto", "cer", "wer"):
        raise fail(f"--metric must be auto, cer or wer, not {metric!r}")
    phrases = read_hotwords(hotwords, hotwords_file)
    try:
        report = evaluate(
            load_texts(references),
            load_hypotheses(hypotheses),
            list(phrases) or None,
            metric=metric,  # type: ignore[arg-type]
        )
    except (EvalInputError, ValueError, OSError) as e:
        raise fail(str(e)) from e
    typer.echo(format_report(report, per_utterance=per_utterance))


@jobs_app.command("show")
def jobs_show(
    directory: Annotated[Path, typer.Argument(help="The job folder given to --job.")],
) -> None:
    """Print a job's state: inputs per state, audio done, failures with reasons."""
    from zhuanxie.jobs import JobError, JobView, format_summary

    try:
        with JobView.open(directory) as view:
            typer.echo(format_summary(view))
    except JobError as e:
        raise fail(str(e)) from e


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Interface (0.0.0.0: all).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default 8000).")] = None,
    model: Annotated[
        list[str] | None,
        typer.Option(help="Model name or directory; repeat to serve several (first: default)."),
    ] = None,
    punc_model: Annotated[
        str | None, typer.Option(help="CT-Transformer punctuation model (name or directory).")
    ] = None,
    itn: Annotated[bool | None, typer.Option("--itn/--no-itn", help="Load ITN.")] = None,
    vad: Annotated[bool | None, typer.Option("--vad/--no-vad", help="Split at pauses.")] = None,
    vad_model: Annotated[str | None, typer.Option(help="FSMN-VAD model instead of Silero.")] = None,
    max_segment: Annotated[float | None, typer.Option(help="Longest segment, seconds.")] = None,
    device: Annotated[str | None, typer.Option(help="cpu, cuda:0, or cuda:0,cuda:1.")] = None,
    dtype: Annotated[str | None, typer.Option(help="float32, bfloat16, float16, int8.")] = None,
    threads: Annotated[int | None, typer.Option(help="CPU threads for the model.")] = None,
    max_upload_mb: Annotated[float | None, typer.Option(help="Largest upload (MiB).")] = None,
    max_audio_seconds: Annotated[float | None, typer.Option(help="Longest audio (s).")] = None,
    max_interactive: Annotated[
        int | None, typer.Option(help="Interactive requests admitted at once; more get 429.")
    ] = None,
    request_timeout: Annotated[float | None, typer.Option(help="Seconds per request.")] = None,
    api_key: Annotated[
        str | None, typer.Option(help="Require 'Authorization: Bearer KEY' (or ZHUANXIE_API_KEY).")
    ] = None,
    cors_origin: Annotated[
        list[str] | None, typer.Option(help="Browser origin allowed to call the API; repeatable.")
    ] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Jobs and temporary uploads.")] = None,
    allowed_root: Annotated[
        list[Path] | None,
        typer.Option(help="Folder whose files jobs may read by path; repeatable."),
    ] = None,
    ui: Annotated[
        bool | None, typer.Option("--ui/--no-ui", help="Mount the Web UI at /ui.")
    ] = None,
    log_level: Annotated[str | None, typer.Option(help="debug, info, warning, error.")] = None,
) -> None:
    """Run the HTTP server: OpenAI-compatible API, batch jobs, metrics and the Web UI.

    Every option can also be set as ZHUANXIE_<OPTION> in the environment (lists comma-separated);
    options given here win.
    """
    import uvicorn
    from pydantic import ValidationError

    from zhuanxie.logs import configure_logging
    from zhuanxie.server import create_app
    from zhuanxie.settings import ServerSettings

    given: dict[str, Any] = {
        "host": host,
        "port": port,
        "models": model or None,
        "punc_model": punc_model,
        "itn": itn,
        "vad": vad,
        "vad_model": vad_model,
        "max_segment": max_segment,
        "device": device,
        "dtype": dtype,
        "threads": threads,
        "max_upload_mb": max_upload_mb,
        "max_audio_seconds": max_audio_seconds,
        "max_interactive": max_interactive,
        "request_timeout": request_timeout,
        "api_key": api_key,
        "cors_origins": cors_origin or None,
        "data_dir": data_dir,
        "allowed_roots": allowed_root or None,
        "ui": ui,
        "log_level": log_level,
    }
    try:
        settings = ServerSettings(**{k: v for k, v in given.items() if v is not None})
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(map(str, x['loc']))}: {x['msg']}" for x in e.errors())
        raise fail(f"invalid server settings: {problems}") from e
    configure_logging(settings.log_level)
    application = create_app(settings)
    uvicorn.run(
        application, host=settings.host, port=settings.port, log_config=None, access_log=False
    )


@app.command()
def info() -> None:
    """Versions, devices, free memory, threads and the model cache."""
    import platform
    from importlib.metadata import version

    import torch

    from zhuanxie.hub import models_dir

    table = Table(show_header=False, title="zhuanxie")
    table.add_row("zhuanxie", version("zhuanxie"))
    table.add_row("python", platform.python_version())
    for package in ("torch", "onnxruntime", "av", "numpy"):
        table.add_row(package, version(package))
    table.add_row(
        "cpu", f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    )
    table.add_row("cpu matrix units", ", ".join(cpu_matrix_flags()) or "none (use float32 or int8)")
    try:
        import resource

        table.add_row(
            "process peak memory",
            f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB",
        )
    except ImportError:
        pass
    table.add_row("memory available", memory_available())
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            free, total = torch.cuda.mem_get_info(i)
            name = torch.cuda.get_device_name(i)
            table.add_row(
                f"cuda:{i}", f"{name}, {free / 2**30:.1f} of {total / 2**30:.1f} GiB free"
            )
    else:
        table.add_row("gpu", "none (CUDA not available)")
    table.add_row("model cache", str(models_dir()))
    for name, memory in MEMORY_BY_CONFIGURATION:
        table.add_row(f"memory: {name}", memory)
    Console().print(table)


def cpu_matrix_flags() -> list[str]:
    """The CPU features that make bfloat16 (AMX, AVX-512-BF16) or int8 (VNNI) matmuls fast."""
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return []
    wanted = ("amx_bf16", "amx_int8", "avx512_bf16", "avx512_vnni", "avx_vnni")
    return [f for f in wanted if f in flags]


def memory_available() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return f"{int(line.split()[1]) / 2**20:.1f} GiB"
    except OSError:
        pass
    return "unknown"


def main() -> None:
    app()


if __name__ == "__main__":
    main()
