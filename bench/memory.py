"""Peak memory against input length: a 10-minute and a 2-hour recording through the engine.

    python bench/memory.py [--arch seaco-paraformer-tiny] [--minutes 10 120] [--out results.json]

Each recording is built from the Mandarin clips of the shared corpus joined with pauses, written
to a cache folder once, and transcribed (Silero VAD, batching) in a fresh process, whose peak
resident set size is reported. Bounded queues should make the peak independent of length.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import soundfile

CACHE = Path(os.environ.get("ZHUANXIE_BENCH_CACHE", Path.home() / ".cache" / "zhuanxie-bench"))
AUDIO = Path(
    os.environ.get(
        "ZHUANXIE_TEST_AUDIO", Path(__file__).resolve().parents[1].parent / "shared" / "audio"
    )
)


def build_recording(minutes: int) -> Path:
    """A WAV of ``minutes`` of real speech with 0.3-1.5 s pauses, written in pieces."""
    path = CACHE / f"speech-{minutes}min.wav"
    if path.exists():
        return path
    from zhuanxie.audio import load_audio

    clips = [load_audio(p) for p in sorted((AUDIO / "zh").glob("*.wav"))]
    rng = np.random.default_rng(minutes)
    target = minutes * 60 * 16000
    CACHE.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial.wav")
    with soundfile.SoundFile(partial, "w", 16000, 1, "PCM_16") as out:
        written = 0
        while written < target:
            clip = clips[rng.integers(len(clips))]
            pause = rng.normal(0, 0.003, int(rng.uniform(0.3, 1.5) * 16000)).astype(np.float32)
            piece = np.concatenate([clip, pause])[: target - written]
            out.write(piece)
            written += len(piece)
    partial.rename(path)
    return path


def model_dir(arch: str) -> Path:
    path = CACHE / f"{arch}-seed0"
    if not path.exists():
        from zhuanxie.generator import write_random_model

        write_random_model(path, arch, seed=0)
    return path


def child(model: Path, recording: Path, threads: int) -> None:
    """Transcribe one recording and print its figures as JSON (runs in its own process)."""
    import torch

    import zhuanxie
    from zhuanxie.engine import Engine

    torch.set_num_threads(threads)
    engine = Engine(zhuanxie.load_model(model))
    started = time.perf_counter()
    transcript = engine.transcribe(recording)
    elapsed = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(
        json.dumps(
            {
                "recording": recording.name,
                "audio_seconds": transcript.duration,
                "segments": len(transcript.segments),
                "wall_seconds": round(elapsed, 2),
                "rtfx": round(transcript.duration / elapsed, 1),
                "peak_rss_mb": round(peak / 2**20, 1),
                "padding_ratio": round(engine.stats.padding_ratio, 3),
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--arch", default="seaco-paraformer-tiny")
    parser.add_argument("--minutes", type=int, nargs="+", default=[10, 120])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(Path(args.child[0]), Path(args.child[1]), args.threads)
        return
    model = model_dir(args.arch)
    rows = []
    for minutes in args.minutes:
        recording = build_recording(minutes)
        command = [
            sys.executable,
            __file__,
            "--threads",
            str(args.threads),
            "--child",
            str(model),
            str(recording),
        ]
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        rows.append(json.loads(output.strip().splitlines()[-1]))
        print(rows[-1], flush=True)
    if len(rows) >= 2:
        growth = rows[-1]["peak_rss_mb"] / rows[0]["peak_rss_mb"] - 1
        print(
            f"peak RSS growth from {args.minutes[0]} to {args.minutes[-1]} minutes: {growth:+.1%}"
        )
    if args.out:
        args.out.write_text(
            json.dumps({"arch": args.arch, "threads": args.threads, "runs": rows}, indent=2)
        )


if __name__ == "__main__":
    main()
