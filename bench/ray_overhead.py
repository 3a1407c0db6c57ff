"""What running through Ray costs on one machine: the local engine against a Ray job (issue #9).

    python bench/ray_overhead.py [--arch paraformer-large] [--files 120] [--threads 2]
                                 [--repeats 1] [--out results.json]

Both transcribe the same files (the 16 kHz Mandarin clips of the shared corpus, cycled to
``--files`` WAV files in the cache dir) with the same full-size random checkpoint, Silero VAD and
``--threads`` model threads, and write the same txt results:

- local: ``build_engine`` as ``zhuanxie transcribe`` builds it, then ``transcribe_many`` over all
  files and ``write_outputs`` per result, in this process.
- Ray: a local Ray instance with ``--threads`` + 1 logical CPUs (one model worker reserving
  ``--threads`` CPUs and running that many torch threads; decode and finish tasks share the
  remaining slot, as the local engine's decode threads share the cores with the model), then
  ``ray_jobs.run_job``.

The two alternate (local, Ray, local, Ray, ...) ``--repeats`` times, so that other load on the
machine falls on both; each run records the load average at its start. Reported: the median wall
times and audio seconds per wall second, with the model load (and, for Ray, the worker start)
included, and without it for the local engine; the Ray start-up itself separately. The Ray
results are checked equal to the local ones.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import soundfile

CACHE = Path(os.environ.get("ZHUANXIE_BENCH_CACHE", Path.home() / ".cache" / "zhuanxie-bench"))
AUDIO = Path(
    os.environ.get(
        "ZHUANXIE_TEST_AUDIO", Path(__file__).resolve().parents[1].parent / "shared" / "audio"
    )
)


def inputs(count: int) -> list[Path]:
    """``count`` WAV files cycling through the corpus's Mandarin clips (at most 15 s each)."""
    folder = CACHE / f"ray-inputs-{count}"
    clips = [p for p in sorted((AUDIO / "zh").glob("*.wav")) if soundfile.info(p).duration <= 15.0]
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for i in range(count):
        path = folder / f"clip{i:04d}.wav"
        if not path.exists():
            shutil.copyfile(clips[i % len(clips)], path)
        files.append(path)
    return files


def model_dir(arch: str) -> Path:
    path = CACHE / f"{arch}-seed0"
    if not path.exists():
        from zhuanxie.generator import write_random_model

        write_random_model(path, arch, 0)
    return path


def run_local(model: Path, files: list[Path], out: Path, threads: int) -> dict[str, float]:
    import torch

    from zhuanxie.cli import build_engine
    from zhuanxie.engine import AudioInput
    from zhuanxie.writers import write_outputs

    torch.set_num_threads(threads)
    started = time.perf_counter()
    engine = build_engine(str(model), "cpu", "float32", "silero", 20.0)
    loaded = time.perf_counter()
    metadata = {"model": str(model), "options": {}}
    audio = 0.0
    for result in engine.transcribe_many([AudioInput(p) for p in files]):
        assert result.transcript is not None, result.error
        audio += result.transcript.duration
        stem = out / files[result.index].stem
        write_outputs(result.transcript, stem, ["txt"], metadata)
    done = time.perf_counter()
    return {"audio_s": audio, "load_s": loaded - started, "transcribe_s": done - loaded}


def run_ray(model: Path, files: list[Path], out: Path, threads: int) -> dict[str, float]:
    import ray

    from zhuanxie import ray_jobs

    started = time.perf_counter()
    ray.init(num_cpus=threads + 1, include_dashboard=False, log_to_driver=False)
    ready = time.perf_counter()
    items, _ = ray_jobs.items_from_paths([str(p) for p in files], str(out))
    settings = ray_jobs.ModelSettings(str(model), threads=threads)
    job = ray_jobs.RayJob(
        items, str(out), settings, metadata={"model": str(model), "options": {}}, workers=1,
        cpus_per_worker=threads,
    )  # fmt: skip
    first: list[float] = []

    def progress(row: ray_jobs.SummaryRow | None, state: ray_jobs.JobProgress) -> None:
        if row is not None and not first:
            first.append(time.perf_counter())

    report = ray_jobs.run_job(job, progress=progress)
    done = time.perf_counter()
    ray.shutdown()
    assert report.count("done") == len(files), [r.error for r in report.rows if r.error]
    return {
        "audio_s": report.audio_seconds,
        "ray_init_s": ready - started,
        "job_s": done - ready,
        "first_result_s": first[0] - ready,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--arch", default="paraformer-large")
    parser.add_argument("--files", type=int, default=120)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    files = inputs(args.files)
    model = model_dir(args.arch)
    runs: dict[str, list[dict[str, float]]] = {"local": [], "ray": []}
    same = True
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            local_out, ray_out = Path(tmp) / "local", Path(tmp) / "ray"
            for name, run, out in (("local", run_local, local_out), ("ray", run_ray, ray_out)):
                load = os.getloadavg()[0]
                runs[name].append({**run(model, files, out, args.threads), "load_1min": load})
            same = same and all(
                (local_out / f"{p.stem}.txt").read_bytes()
                == (ray_out / f"{p.stem}.txt").read_bytes()
                for p in files
            )
    audio = runs["local"][0]["audio_s"]
    local_walls = [r["load_s"] + r["transcribe_s"] for r in runs["local"]]
    local_wall = statistics.median(local_walls)
    transcribe = statistics.median(r["transcribe_s"] for r in runs["local"])
    job = statistics.median(r["job_s"] for r in runs["ray"])
    results = {
        "arch": args.arch,
        "files": len(files),
        "audio_s": round(audio, 1),
        "threads": args.threads,
        "cpus": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
        "runs": {k: [{n: round(x, 2) for n, x in r.items()} for r in v] for k, v in runs.items()},
        "median_local_s": round(local_wall, 2),
        "median_ray_job_s": round(job, 2),
        "speed_local_with_load": round(audio / local_wall, 2),
        "speed_local_transcribe_only": round(audio / transcribe, 2),
        "speed_ray_job": round(audio / job, 2),
        "ray_job_over_local": round(job / local_wall - 1, 3),
        "outputs_identical": same,
    }
    print(json.dumps(results, indent=2))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    if not same:
        sys.exit("the Ray results differ from the local ones")


if __name__ == "__main__":
    main()
