"""VAD time per hour of audio: zhuanxie's FSMN-VAD, funasr's FSMN-VAD and zhuanxie's Silero VAD.

    python bench/vad.py [--minutes 20] [--threads 1] [--repeats 3] [--out results.json]

The recording is bench/memory.py's: Mandarin clips of the shared corpus joined with 0.3-1.5 s
pauses. The FSMN-VAD is a generated checkpoint of the published size (zhuanxie.generator's
`fsmn-vad`, whose random weights follow the audio's energy); both FSMN-VADs run in both silence
modes, funasr through `AutoModel.generate` as its users call it, and their segment lists are
checked to be identical. Audio is decoded before timing; each figure is the best of --repeats runs.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import soundfile
import torch
from memory import CACHE, build_recording  # bench/ is the script's directory

from zhuanxie.fsmn_vad import FsmnVad, FsmnVadOptions
from zhuanxie.generator import write_random_fsmn_vad
from zhuanxie.vad import SileroVad

CHUNK = 30 * 16000  # what zhuanxie.audio streams by default


def vad_dir() -> Path:
    # bench/throughput.py keeps an uncalibrated one under "fsmn-vad-seed0".
    path = CACHE / "fsmn-vad-calibrated-seed0"
    if not path.exists():
        write_random_fsmn_vad(path, seed=0)
    return path


def best_time(
    run: Callable[[], list[list[int]]], repeats: int
) -> tuple[float, float, list[list[int]]]:
    """Best wall and CPU seconds of `repeats` runs (CPU time suffers less from a busy machine)."""
    walls, cpus, segments = [], [], []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        segments = run()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return min(walls), min(cpus), segments


@contextlib.contextmanager
def quiet() -> Any:
    logging.disable(logging.CRITICAL)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        logging.disable(logging.NOTSET)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1, help="torch / onnxruntime threads")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    wave, rate = soundfile.read(build_recording(args.minutes), dtype="float32")
    assert rate == 16000
    hours = len(wave) / 16000 / 3600
    chunks = [wave[i : i + CHUNK] for i in range(0, len(wave), CHUNK)]
    model = vad_dir()
    ours = FsmnVad(model)
    silero = SileroVad(threads=args.threads)
    with quiet():
        from funasr import AutoModel

        reference = AutoModel(
            model=str(model), ncpu=args.threads, disable_update=True, disable_pbar=True
        )

    def zhuanxie_fsmn(options: FsmnVadOptions) -> Callable[[], list[list[int]]]:
        return lambda: [[s.start // 16, s.end // 16] for s in ours.segments(chunks, options)]

    def funasr_fsmn(fixed: bool) -> Callable[[], list[list[int]]]:
        kwargs = {"max_end_silence_time": 800} if fixed else {}

        def run() -> list[list[int]]:
            with quiet():
                return reference.generate(input=wave, **kwargs)[0]["value"]

        return run

    runs = {
        "zhuanxie fsmn-vad, fixed 800 ms": zhuanxie_fsmn(FsmnVadOptions()),
        "funasr fsmn-vad, fixed 800 ms": funasr_fsmn(True),
        "zhuanxie fsmn-vad, dynamic": zhuanxie_fsmn(
            replace(FsmnVadOptions(), dynamic_silence=True)
        ),
        "funasr fsmn-vad, dynamic": funasr_fsmn(False),
        "zhuanxie silero": lambda: [[s.start // 16, s.end // 16] for s in silero.segments(chunks)],
    }
    rows: dict[str, dict[str, Any]] = {}
    for name, run in runs.items():
        wall, cpu, segments = best_time(run, args.repeats)
        rows[name] = {
            "seconds_per_hour": round(wall / hours, 2),
            "cpu_seconds_per_hour": round(cpu / hours, 2),
            "segments": len(segments),
            "_segments": segments,
        }
        print(
            f"{name:34s} {wall / hours:7.2f} s per hour of audio"
            f" (CPU {cpu / hours:6.2f} s)  {len(segments):5d} segments",
            flush=True,
        )
    for mode in ("fixed 800 ms", "dynamic"):
        same = (
            rows[f"zhuanxie fsmn-vad, {mode}"]["_segments"]
            == rows[f"funasr fsmn-vad, {mode}"]["_segments"]
        )
        print(f"segments identical to funasr ({mode}): {same}")
        rows[f"zhuanxie fsmn-vad, {mode}"]["identical_to_funasr"] = same
    for row in rows.values():
        del row["_segments"]
    if args.out:
        summary = {"minutes": args.minutes, "threads": args.threads, "runs": rows}
        args.out.write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
