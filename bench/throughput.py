"""Throughput of zhuanxie's engine against funasr's AutoModel (issue 3), in one reproducible run.

    python bench/throughput.py --out out/throughput.json            # ~3 min clips + 20 min file
    python bench/throughput.py --quick --out out/throughput.json    # ~1 minute of audio, 1 repeat

Both systems load the same full-size random checkpoint directory (written once with
``zhuanxie.write_random_model`` into the cache dir), get the same 16 kHz float32 samples (decoded
by ``zhuanxie.audio.load_audio``) and the same intra-op thread count.

Workloads
- (a) short clips: the 16 kHz Mandarin clips of the shared corpus (3-15 s), cycled to about
  ``--short-seconds``. funasr: ``generate(wave)`` per clip (its CPU path, batch 1), and once more
  with ``batch_size=8``. zhuanxie: ``Engine(vad="none")`` over all clips at once. With SeACo, the
  same again with 20 hotwords.
- (b) long recording: the Mandarin clips concatenated in a seeded random order with 0.3-1.5 s
  pauses of faint noise, about ``--long-minutes`` long, written as a WAV into the cache dir.
  zhuanxie: ``Engine(vad="silero").transcribe(path)``, from the path to the transcript. funasr is
  charged what its long-audio path costs: its FSMN-VAD pass over the file (a random-weight
  ``fsmn-vad`` written here; the per-frame state machine dominates and does not depend on the
  weights) plus its ASR over the segments our VAD finds, decoded one at a time as its CPU path
  does (``inference_with_vad`` forces batch size 0 on CPU).

Every measurement runs in a child process (this script with ``--child``), so each system's peak
RSS is its own and one system's allocator state cannot help or hurt the other. Each child loads
its model, runs the workload once to warm up (oneDNN primitive caches, allocator pools), then
runs it timed: workload (a) ``--rounds`` times, the kinds of run (plain, hotwords, batch 8)
interleaved, workload (b) once. The children alternate (ours fp32, funasr, ours bf16, ours int8,
...), and each is repeated ``--repeats`` times; the tables report the median wall time, and the
hotword cost is the median over neighbouring plain/hotword pairs.

Token identity: funasr's token ids are recorded by wrapping its tokenizer's ``ids2tokens``, which
its ``inference`` calls once per result with the ids it decoded (blank/sos/eos removed); ours are
``Segment.token_ids``. An item counts as identical when the id lists are equal.

FLOP utilisation: model FLOPs are counted with ``torch.utils.flop_counter.FlopCounterMode`` on
our fp32 model, decoding each distinct item alone (no padding), so they are the useful work of
the workload; achieved FLOP/s (useful FLOPs / wall time) is divided by the matmul peak measured
here (a 4096^3 ``torch.matmul`` at the same thread count, fp32 and bf16).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import platform
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

SAMPLE_RATE = 16000
ARCHS = ("seaco-paraformer-large", "paraformer-large")
VARIANTS = ("float32", "bfloat16", "int8")
SHORT_SECONDS_MAX = 15.0  # clips longer than this are not "short" (the 70 s lecture)
LONG_PAUSE_S = (0.3, 1.5)
PAUSE_NOISE_RMS = 1e-3  # about -60 dBFS: room tone, not silence
WARMUP_LONG_S = 60.0
MATMUL_N = 4096
REPO = Path(__file__).resolve().parent.parent

# One timed pass over a list of waveforms: token ids per item (None if unknown), engine counters.
RunFn = Callable[[list[np.ndarray]], tuple[list[list[int]] | None, dict[str, Any]]]

# ---------------------------------------------------------------------------------------------
# Shared helpers


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def audio_dir(given: str | None) -> Path:
    if given:
        return Path(given)
    env = os.environ.get("ZHUANXIE_TEST_AUDIO")
    return Path(env) if env else REPO.parent / "shared" / "audio"


def mandarin_files(root: Path) -> list[Path]:
    """Every Mandarin recording once (the MP3 is an encoding of a WAV that is also there)."""
    files = sorted(p for p in (root / "zh").iterdir() if p.suffix in (".wav", ".flac"))
    if not files:
        raise SystemExit(f"no Mandarin clips under {root / 'zh'}; set ZHUANXIE_TEST_AUDIO")
    return files


def short_clip_files(root: Path) -> list[Path]:
    """The native 16 kHz Mandarin clips of at most SHORT_SECONDS_MAX seconds."""
    import soundfile as sf

    chosen = []
    for path in mandarin_files(root):
        info = sf.info(str(path))
        if info.samplerate == SAMPLE_RATE and info.duration <= SHORT_SECONDS_MAX:
            chosen.append(path)
    return chosen


def cycle_to(durations: Sequence[float], target_s: float) -> list[int]:
    """Indices into ``durations``, cycling in order, until their total reaches ``target_s``."""
    order: list[int] = []
    total = 0.0
    while total < target_s:
        i = len(order) % len(durations)
        order.append(i)
        total += durations[i]
    return order


def rss_now_kib() -> tuple[int, int]:
    """(VmRSS, VmHWM) of this process in KiB."""
    values = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0])
    return values["VmRSS"], values["VmHWM"]


def reset_peak_rss() -> bool:
    """Reset the kernel's RSS high-water mark (clear_refs 5), so later peaks exclude loading."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence funasr's prints and log records."""
    previous = logging.root.manager.disable
    logging.disable(logging.CRITICAL)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        logging.disable(previous)


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def cpu_flags() -> list[str]:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            flags = line.split(":", 1)[1].split()
            wanted = ("avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_int8", "amx_tile")
            return [f for f in flags if f in wanted]
    return []


def machine_info() -> dict[str, Any]:
    import torch

    mem_kib = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal"):
            mem_kib = int(line.split()[1])
    try:
        with quiet():
            import funasr

        funasr_version = funasr.__version__
    except ImportError:
        funasr_version = None
    return {
        "cpu_model": cpu_model(),
        "cpu_flags": cpu_flags(),
        "logical_cpus": os.cpu_count(),
        "memory_gib": round(mem_kib / 2**20, 1),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "funasr": funasr_version,
        "torch_parallel_info": torch.__config__.parallel_info(),
        "kernel": platform.release(),
    }


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


# ---------------------------------------------------------------------------------------------
# Cached inputs: models, the FSMN-VAD model, the long recording, our VAD segments


def ensure_model(cache: Path, arch: str, seed: int) -> Path:
    import zhuanxie

    target = cache / f"{arch}-seed{seed}"
    if (target / "model.pt").exists():
        return target
    tmp = cache / f".{arch}-seed{seed}.partial"
    if tmp.exists():
        shutil.rmtree(tmp)
    log(f"writing random {arch} (seed {seed}) to {target} ...")
    zhuanxie.write_random_model(tmp, arch, seed)
    tmp.rename(target)
    return target


def ensure_fsmn_vad(cache: Path, seed: int) -> Path:
    """A random-weight FSMN-VAD in the published layout (``generator.write_random_fsmn_vad``:
    calibrated so that it responds to energy like a trained one), which funasr loads as is."""
    target = cache / f"fsmn-vad-calibrated-seed{seed}"
    if (target / "model.pt").exists():
        return target
    from zhuanxie.generator import write_random_fsmn_vad

    tmp = cache / f".fsmn-vad-calibrated-seed{seed}.partial"
    if tmp.exists():
        shutil.rmtree(tmp)
    write_random_fsmn_vad(tmp, seed=seed)
    tmp.rename(target)
    return target


def ensure_long_recording(cache: Path, root: Path, minutes: float, seed: int) -> Path:
    """Mandarin clips in seeded random order with faint-noise pauses, ~``minutes`` long."""
    import soundfile as sf

    from zhuanxie.audio import load_audio

    target = cache / f"long-{minutes:g}min-seed{seed}.wav"
    if target.exists():
        return target
    rng = np.random.default_rng(seed)
    clips = [load_audio(p) for p in mandarin_files(root)]
    goal = round(minutes * 60 * SAMPLE_RATE)
    parts, total = [], 0

    def pause() -> np.ndarray:
        n = round(rng.uniform(*LONG_PAUSE_S) * SAMPLE_RATE)
        return (rng.normal(0.0, PAUSE_NOISE_RMS, n)).astype(np.float32)

    while total < goal:
        for i in rng.permutation(len(clips)):
            for piece in (pause(), clips[i]):
                parts.append(piece)
                total += len(piece)
            if total >= goal:
                break
    parts.append(pause())
    wave = np.clip(np.concatenate(parts), -1.0, 32767 / 32768)
    tmp = target.with_suffix(".partial.wav")
    sf.write(str(tmp), wave, SAMPLE_RATE, subtype="PCM_16")
    tmp.rename(target)
    return target


def our_vad_segments(wav: Path) -> tuple[list[tuple[int, int]], float]:
    """The segments the engine's default Silero VAD finds in ``wav``, and the seconds it took."""
    from zhuanxie.audio import stream_audio
    from zhuanxie.vad import SileroVad, VadOptions

    vad = SileroVad()
    started = time.perf_counter()
    segments = [(s.start, s.end) for s in vad.segments(stream_audio(wav), VadOptions())]
    return segments, time.perf_counter() - started


# ---------------------------------------------------------------------------------------------
# Child process: one system, one workload, warm-up + timed run(s)


def load_short_workload(spec: dict[str, Any]) -> tuple[list[np.ndarray], list[int]]:
    """The distinct clips and the order in which the workload plays them."""
    from zhuanxie.audio import load_audio

    clips = [load_audio(p) for p in spec["clips"]]
    return clips, spec["order"]


class IdRecorder:
    """Records the token ids funasr decodes, by wrapping its tokenizer class's ``ids2tokens``.

    The class, not the instance: ``AutoModel.generate`` restores its kwargs (tokenizer included)
    from a deep copy taken at construction, so the instance it decodes with is not the one that
    ``auto.kwargs`` held before the call.
    """

    def __init__(self, tokenizer: Any) -> None:
        self.calls: list[list[int]] = []
        cls = type(tokenizer)
        original = cls.ids2tokens

        def recording(instance: Any, ids: Any) -> Any:
            self.calls.append([int(i) for i in ids])
            return original(instance, ids)

        cls.ids2tokens = recording

    def take(self) -> list[list[int]]:
        calls, self.calls = self.calls, []
        return calls


def funasr_asr(model_dir: str, threads: int) -> Any:
    with quiet():
        from funasr import AutoModel

        return AutoModel(
            model=model_dir,
            device="cpu",
            ncpu=threads,
            batch_size=1,
            frontend_conf={"dither": 0.0},
            disable_update=True,
            disable_pbar=True,
            disable_log=True,
            log_level="ERROR",
        )


def funasr_generate_one(auto: Any, recorder: IdRecorder, wave: Any, **cfg: Any) -> list[int]:
    """Decode one waveform; its token ids (empty when funasr decoded nothing)."""
    auto.generate(wave, **cfg)
    calls = recorder.take()
    return calls[-1] if calls else []


def timed(run: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    out = run()
    return time.perf_counter() - started, out


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy since boot (all cores, from /proc/stat)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


def measured(run: Callable[[], Any]) -> tuple[dict[str, float], Any]:
    """Wall time of ``run``, with how much CPU it got and how much other processes took meanwhile.

    ``other_cores`` is the machine's busy CPU time not spent by this process, per wall second:
    about 0 on an idle machine; 1 means another process held one core throughout.
    """
    busy, own = machine_busy_seconds(), own_cpu_seconds()
    seconds, out = timed(run)
    own = own_cpu_seconds() - own
    busy = machine_busy_seconds() - busy
    return {
        "seconds": seconds,
        "cpu_seconds": own,
        "other_cores": max(busy - own, 0.0) / seconds,
    }, out


def child_main(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    import torch

    torch.set_num_threads(spec["threads"])
    result: dict[str, Any] = {"task": spec["task"], "load_avg_start": os.getloadavg()}
    task = {
        "peak": child_peak,
        "flops": child_flops,
        "short": child_short,
        "long": child_long,
    }[spec["task"]]
    task(spec, result)
    result["load_avg_end"] = os.getloadavg()
    result["ru_maxrss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    Path(spec["result_path"]).write_text(json.dumps(result))


def child_peak(spec: dict[str, Any], result: dict[str, Any]) -> None:
    """Best-of-3 GFLOP/s of an N^3 matmul at the bench's thread count, fp32 and bf16."""
    import torch

    def measure() -> None:
        n = MATMUL_N
        for dtype in ("float32", "bfloat16"):
            a = torch.randn(n, n, dtype=getattr(torch, dtype))
            b = torch.randn(n, n, dtype=getattr(torch, dtype))
            torch.matmul(a, b)
            best = 0.0
            for _ in range(3):
                reps, started = 0, time.perf_counter()
                while (elapsed := time.perf_counter() - started) < 1.0 or reps < 2:
                    torch.matmul(a, b)
                    reps += 1
                best = max(best, 2 * n**3 * reps / elapsed / 1e9)
            result[f"{dtype}_gflops"] = best

    timing, _ = measured(measure)
    result["runs"] = {"matmul": timing}


def child_flops(spec: dict[str, Any], result: dict[str, Any]) -> None:
    """Model FLOPs of each distinct clip, decoded alone by our fp32 model."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    import zhuanxie

    model = zhuanxie.load_model(spec["model_dir"], dtype="float32")
    recognizer = zhuanxie.Recognizer(model)
    # The CPU kernel behind F.scaled_dot_product_attention has no formula in the counter.
    sdpa = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu

    def count(wave: np.ndarray) -> int:
        counter = FlopCounterMode(display=False, custom_mapping={sdpa: attention_flops})
        with counter:
            recognizer.transcribe(wave)
        return int(counter.get_total_flops())

    clips, _ = load_short_workload(spec)
    result["short_item_flops"] = [count(c) for c in clips]


def attention_flops(
    query_shape: Sequence[int],
    key_shape: Sequence[int],
    value_shape: Sequence[int],
    *args: Any,
    **kwargs: Any,
) -> int:
    """Q K^T and the weighted sum of V: 2 B H Lq Lk (E + Ev)."""
    b, h, lq, e = query_shape
    return 2 * b * h * lq * key_shape[-2] * (e + value_shape[-1])


def ours_model(spec: dict[str, Any], result: dict[str, Any]) -> Any:
    import zhuanxie

    try:
        load_s, model = timed(lambda: zhuanxie.load_model(spec["model_dir"], dtype=spec["dtype"]))
    except (ValueError, TypeError, NotImplementedError) as error:
        result["available"] = False
        result["error"] = f"{type(error).__name__}: {error}"
        return None
    result["available"] = True
    result["load_seconds"] = load_s
    return model


def engine_stats_delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    delta = {k: after[k] - before[k] for k in ("batches", "segments", "padded_frames")}
    delta.update({k: after[k] - before[k] for k in ("real_frames", "model_seconds")})
    delta["audio_seconds"] = after["audio_seconds"] - before["audio_seconds"]
    padded = delta["padded_frames"]
    delta["padding_ratio"] = 1 - delta["real_frames"] / padded if padded else 0.0
    return delta


def our_ids(transcript: Any) -> list[int]:
    return [i for segment in transcript.segments for i in segment.token_ids]


def child_short(spec: dict[str, Any], result: dict[str, Any]) -> None:
    clips, order = load_short_workload(spec)
    waves = [clips[i] for i in order]
    hotwords: list[str] | None = spec.get("hotwords")
    runs: dict[str, RunFn] = {}
    if spec["system"] == "ours":
        model = ours_model(spec, result)
        if model is None:
            return
        from zhuanxie.engine import AudioInput, Engine, EngineOptions

        engine = Engine(model, EngineOptions(vad="none"))

        def ours_run(
            items: list[np.ndarray], words: tuple[str, ...]
        ) -> tuple[list[list[int]] | None, dict[str, Any]]:
            before = asdict(engine.stats)
            inputs = [
                AudioInput(w, sample_rate=SAMPLE_RATE, hotwords=words, name=str(i))
                for i, w in enumerate(items)
            ]
            results = sorted(engine.transcribe_many(inputs), key=lambda r: r.index)
            failed = [r for r in results if r.transcript is None]
            if failed:
                raise RuntimeError(f"{len(failed)} inputs failed, e.g. {failed[0].error}")
            stats = engine_stats_delta(before, asdict(engine.stats))
            return [our_ids(r.transcript) for r in results], stats

        runs["plain"] = lambda items: ours_run(items, ())
        if hotwords:
            runs["hotwords"] = lambda items: ours_run(items, tuple(hotwords))
    else:
        load_s, auto = timed(lambda: funasr_asr(spec["model_dir"], spec["threads"]))
        result["load_seconds"] = load_s
        result["available"] = True
        recorder = IdRecorder(auto.kwargs["tokenizer"])

        def funasr_run(
            items: list[np.ndarray], **cfg: Any
        ) -> tuple[list[list[int]] | None, dict[str, Any]]:
            with quiet():
                return [funasr_generate_one(auto, recorder, w, **cfg) for w in items], {}

        def funasr_batched(
            items: list[np.ndarray],
        ) -> tuple[list[list[int]] | None, dict[str, Any]]:
            with quiet():
                auto.generate(items, batch_size=8)
            calls = recorder.take()
            # ids2tokens is skipped only for a batch in which nothing at all is decoded.
            return (calls if len(calls) == len(items) else None), {}

        runs["plain"] = funasr_run
        if hotwords:
            words = " ".join(hotwords)
            runs["hotwords"] = lambda items: funasr_run(items, hotword=words)
        if spec.get("batch8"):
            runs["batch8"] = funasr_batched
    loaded(result)
    started = time.perf_counter()
    for run in runs.values():  # warm-up: each run kind once over the distinct clips
        run(clips)
    result["warmup_seconds"] = time.perf_counter() - started
    # Interleaved rounds: a slow spell of the machine then hits every kind of run alike, and the
    # hotword cost is read from pairs of neighbouring runs.
    timings: dict[str, list[dict[str, float]]] = {name: [] for name in runs}
    outputs: dict[str, tuple[list[list[int]] | None, dict[str, Any]]] = {}
    for _ in range(spec.get("rounds", 1)):
        for name, run in runs.items():
            timing, outputs[name] = measured(lambda run=run: run(waves))
            timings[name].append(timing)
    result["runs"] = {}
    for name, rounds in timings.items():
        ids, stats = outputs[name]
        result["runs"][name] = {
            "seconds": median([t["seconds"] for t in rounds]),
            "cpu_seconds": median([t["cpu_seconds"] for t in rounds]),
            "other_cores": max(t["other_cores"] for t in rounds),
            "round_seconds": [t["seconds"] for t in rounds],
            "ids": ids,
            "engine_stats": stats,
        }
    finished(result)
    result["audio_seconds"] = sum(len(w) for w in waves) / SAMPLE_RATE


def loaded(result: dict[str, Any]) -> None:
    """Note the memory after loading, then reset the peak so the run's own peak shows."""
    result["rss_after_load_mib"] = rss_now_kib()[0] / 1024
    result["load_peak_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result["peak_reset"] = reset_peak_rss()


def finished(result: dict[str, Any]) -> None:
    run_peak = rss_now_kib()[1] / 1024
    result["run_peak_mib"] = run_peak if result["peak_reset"] else None
    result["peak_rss_mib"] = max(
        result["load_peak_mib"],
        run_peak,
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    )


def child_long(spec: dict[str, Any], result: dict[str, Any]) -> None:
    import soundfile as sf

    wav = spec["long_wav"]
    segments: list[tuple[int, int]] = [tuple(s) for s in spec["segments"]]
    # Only the warm-up head is read here: our engine streams the file and must not be charged
    # for a copy of it that it never makes.
    head, _ = sf.read(wav, frames=round(WARMUP_LONG_S * SAMPLE_RATE), dtype="float32")
    if spec["system"] == "ours":
        model = ours_model(spec, result)
        if model is None:
            return
        from zhuanxie.engine import AudioInput, Engine, EngineOptions

        engine = Engine(model, EngineOptions(vad="silero"))
        loaded(result)
        engine.transcribe(AudioInput(head, sample_rate=SAMPLE_RATE))  # warm-up
        before = asdict(engine.stats)
        timing, transcript = measured(lambda: engine.transcribe(Path(wav)))
        by_start = {round(s.start * SAMPLE_RATE): list(s.token_ids) for s in transcript.segments}
        unmatched = set(by_start) - {s for s, _ in segments}
        result["runs"] = {
            "total": {
                **timing,
                "ids": [by_start.get(s, []) for s, _ in segments],
                "engine_stats": engine_stats_delta(before, asdict(engine.stats)),
                "segments_not_in_vad_list": len(unmatched),
            }
        }
    else:
        from funasr.utils.load_utils import load_audio_text_image_video

        with quiet():
            load_s, auto = timed(lambda: funasr_asr(spec["model_dir"], spec["threads"]))
            vad = funasr_asr(spec["vad_dir"], spec["threads"])
        result["load_seconds"] = load_s
        result["available"] = True
        recorder = IdRecorder(auto.kwargs["tokenizer"])
        loaded(result)

        def asr(speech: Any, spans: Sequence[tuple[int, int]]) -> list[list[int]]:
            return [funasr_generate_one(auto, recorder, speech[s:e]) for s, e in spans]

        with quiet():  # warm-up
            vad.generate(head)
            asr(head, [(s, e) for s, e in segments if e <= len(head)][:5])
            vad_timing, vad_out = measured(lambda: vad.generate(wav))

            def reload_and_decode() -> list[list[int]]:
                # What inference_with_vad does after its VAD: reload, slice, decode one by one.
                speech = load_audio_text_image_video(wav, fs=SAMPLE_RATE, audio_fs=SAMPLE_RATE)
                return asr(speech, segments)

            asr_timing, ids = measured(reload_and_decode)
        both = (vad_timing, asr_timing)
        seconds = sum(t["seconds"] for t in both)
        result["runs"] = {
            "vad": {**vad_timing, "segments_found": len(vad_out[0]["value"])},
            "asr": {**asr_timing, "ids": ids},
            "total": {
                "seconds": seconds,
                "cpu_seconds": sum(t["cpu_seconds"] for t in both),
                "other_cores": sum(t["other_cores"] * t["seconds"] for t in both) / seconds,
                "ids": ids,
            },
        }
    finished(result)
    result["audio_seconds"] = sf.info(wav).frames / SAMPLE_RATE


# ---------------------------------------------------------------------------------------------
# Parent: prepare, alternate the children, summarise


def run_child(spec: dict[str, Any], workdir: Path, label: str) -> dict[str, Any]:
    spec_path = workdir / f"spec-{label}.json"
    result_path = workdir / f"result-{label}.json"
    spec = {**spec, "result_path": str(result_path)}
    spec_path.write_text(json.dumps(spec))
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--child", str(spec_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - started
    if proc.returncode != 0 or not result_path.exists():
        tail = (proc.stderr or proc.stdout)[-3000:]
        raise RuntimeError(f"child {label} failed (exit {proc.returncode}):\n{tail}")
    result = json.loads(result_path.read_text())
    result["child_wall_seconds"] = wall
    return result


class QuietGate:
    """Waits for other processes to leave the CPU before a measurement, and flags disturbed ones.

    A shared machine cannot be made quiet, only waited for: before each child this polls
    /proc/stat until the machine has been nearly idle for ``QUIET_WINDOW_S`` (or ``max_wait_s``
    passes), and a child whose timed runs saw more than ``threshold`` cores of other work is run
    again, up to ``retries`` times, keeping the least disturbed attempt.
    """

    QUIET_WINDOW_S = 3.0

    def __init__(self, threshold: float, max_wait_s: float, retries: int) -> None:
        self.threshold = threshold
        self.max_wait_s = max_wait_s
        self.retries = retries

    def wait(self) -> float:
        """Seconds waited; stops waiting after max_wait_s."""
        started = time.perf_counter()
        while time.perf_counter() - started < self.max_wait_s:
            before = machine_busy_seconds()
            time.sleep(self.QUIET_WINDOW_S)
            if (machine_busy_seconds() - before) / self.QUIET_WINDOW_S < self.threshold:
                break
        return time.perf_counter() - started

    def run(self, spec: dict[str, Any], workdir: Path, label: str) -> dict[str, Any]:
        attempts: list[dict[str, Any]] = []
        for attempt in range(self.retries + 1):
            waited = self.wait()
            result = run_child(spec, workdir, f"{label}-a{attempt}")
            result["waited_for_quiet_s"] = waited
            result["disturbance"] = max(
                [r.get("other_cores", 0.0) for r in result.get("runs", {}).values()], default=0.0
            )
            attempts.append(result)
            if result["disturbance"] <= self.threshold or not result.get("available", True):
                break
            log(f"  {label}: other processes used {result['disturbance']:.2f} cores")
        best = min(attempts, key=lambda r: r["disturbance"])
        best["attempt_disturbances"] = [r["disturbance"] for r in attempts]
        return best


def identical(a: Sequence[list[int] | None], b: Sequence[list[int] | None]) -> float | None:
    if a is None or b is None or len(a) != len(b) or not a:
        return None
    return sum(x == y for x, y in zip(a, b)) / len(a)


def short_label(system: str, dtype: str) -> str:
    return "funasr fp32" if system == "funasr" else f"zhuanxie {short_dtype(dtype)}"


def short_dtype(dtype: str) -> str:
    return {"float32": "fp32", "bfloat16": "bf16", "int8": "int8"}[dtype]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="JSON results file (required)")
    parser.add_argument("--quick", action="store_true", help="~1 minute of audio, 1 repeat")
    parser.add_argument("--threads", type=int, default=2, help="intra-op threads, both systems")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats (default 3)")
    parser.add_argument("--short-seconds", type=float, default=None, help="workload (a) length")
    parser.add_argument("--long-minutes", type=float, default=None, help="workload (b) length")
    parser.add_argument("--archs", default=",".join(ARCHS), help="comma-separated")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="our dtypes")
    parser.add_argument("--workloads", default="short,long", help="short, long or both")
    parser.add_argument("--no-batch8", action="store_true", help="skip funasr batch_size=8")
    parser.add_argument("--hotwords", type=int, default=20, help="hotword phrases (SeACo)")
    parser.add_argument(
        "--rounds", type=int, default=3, help="timed rounds per child of workload (a), interleaved"
    )
    parser.add_argument("--seed", type=int, default=0, help="model weights and audio order")
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "zhuanxie-bench")
    parser.add_argument("--audio", default=None, help="corpus root (default $ZHUANXIE_TEST_AUDIO)")
    parser.add_argument(
        "--quiet-threshold",
        type=float,
        default=0.3,
        help="cores of other work above which a measurement counts as disturbed",
    )
    parser.add_argument(
        "--quiet-wait", type=float, default=120.0, help="most seconds to wait for quiet per child"
    )
    parser.add_argument("--retries", type=int, default=1, help="re-runs of a disturbed child")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="reuse the measurements an interrupted run with the same settings left in OUT's "
        ".partial.jsonl",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child_main(args.child)
        return
    if args.out is None:
        parser.error("--out is required")

    repeats = args.repeats or (1 if args.quick else 3)
    short_seconds = args.short_seconds or (30.0 if args.quick else 180.0)
    long_minutes = args.long_minutes or (0.5 if args.quick else 20.0)
    archs = [a for a in args.archs.split(",") if a]
    variants = [v for v in args.variants.split(",") if v]
    workloads = [w for w in args.workloads.split(",") if w]
    args.cache.mkdir(parents=True, exist_ok=True)
    root = audio_dir(args.audio)
    report: dict[str, Any] = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "started": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "load_avg_before": os.getloadavg(),
        "machine": machine_info(),
        "settings": {
            "threads": args.threads,
            "repeats": repeats,
            "short_seconds": short_seconds,
            "long_minutes": long_minutes,
            "archs": archs,
            "variants": variants,
            "workloads": workloads,
            "seed": args.seed,
            "hotwords": args.hotwords,
            "rounds": args.rounds,
            "audio": str(root),
            "cache": str(args.cache),
        },
    }

    # Inputs.
    import soundfile as sf

    clip_paths = short_clip_files(root)
    durations = [sf.info(str(p)).duration for p in clip_paths]
    order = cycle_to(durations, short_seconds)
    report["short_workload"] = {
        "clips": [p.name for p in clip_paths],
        "items": len(order),
        "audio_seconds": sum(durations[i] for i in order),
    }
    model_dirs = {arch: ensure_model(args.cache, arch, args.seed) for arch in archs}
    long_spec: dict[str, Any] = {}
    if "long" in workloads:
        wav = ensure_long_recording(args.cache, root, long_minutes, args.seed)
        segments, vad_seconds = our_vad_segments(wav)
        vad_dir = ensure_fsmn_vad(args.cache, args.seed)
        speech = sum(e - s for s, e in segments) / SAMPLE_RATE
        report["long_workload"] = {
            "wav": str(wav),
            "audio_seconds": sf.info(str(wav)).duration,
            "segments": len(segments),
            "speech_seconds": speech,
            "segment_seconds_min_median_max": [
                min(e - s for s, e in segments) / SAMPLE_RATE,
                median([(e - s) / SAMPLE_RATE for s, e in segments]),
                max(e - s for s, e in segments) / SAMPLE_RATE,
            ],
            "silero_vad_alone_seconds": vad_seconds,
        }
        long_spec = {"long_wav": str(wav), "segments": segments, "vad_dir": str(vad_dir)}
    hotwords = pick_hotwords(model_dirs, args.hotwords, args.seed)
    report["hotword_list"] = hotwords

    workdir = Path(tempfile.mkdtemp(prefix="zhuanxie-bench-"))
    base = {"threads": args.threads, "clips": [str(p) for p in clip_paths], "order": order}
    gate = QuietGate(args.quiet_threshold, args.quiet_wait, args.retries)
    journal = Journal(args.out.with_suffix(".partial.jsonl"), settings=report["settings"])
    if not args.resume:
        journal.clear()
    elif journal.done:
        log(f"resuming: {len(journal.done)} measurements already in {journal.path}")
    try:
        peaks = [gate.run({**base, "task": "peak"}, workdir, "peak-start")]
        log(f"matmul peak: {peak_text(peaks[0])}")
        report["flops"] = {}
        for arch in archs:
            spec = {**base, "task": "flops", "model_dir": str(model_dirs[arch])}
            flops = cached_flops(args.cache, spec, workdir, arch)
            short_total = sum(flops["short_item_flops"][i] for i in order)
            rate = short_total / report["short_workload"]["audio_seconds"]
            # The long recording is made of the same clips, so its segments cost what the
            # clips cost per second of audio (counting it segment by segment takes longer
            # than the benchmark).
            long_flops = rate * report["long_workload"]["speech_seconds"] if long_spec else 0
            report["flops"][arch] = {
                "short_flops": short_total,
                "short_gflop_per_audio_s": rate / 1e9,
                "long_flops_estimate": long_flops,
            }
            log(f"{arch}: {rate / 1e9:.2f} GFLOP per audio second (short clips)")
        report["runs"] = run_alternating(
            archs,
            variants,
            workloads,
            repeats,
            base,
            long_spec,
            model_dirs,
            hotwords,
            args,
            workdir,
            gate,
            journal,
        )
        peaks.append(gate.run({**base, "task": "peak"}, workdir, "peak-end"))
        log(f"matmul peak at the end: {peak_text(peaks[1])}")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    # The best of the two: a disturbed measurement can only read low.
    report["peak"] = {
        key: max(p[key] for p in peaks) for key in ("float32_gflops", "bfloat16_gflops")
    }
    report["peak_measurements"] = peaks
    report["load_avg_after"] = os.getloadavg()
    report["finished"] = time.strftime("%Y-%m-%d %H:%M:%S %z")
    report["summary"] = summarise(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1, ensure_ascii=False))
    print(render(report))
    log(f"wrote {args.out}")


class Journal:
    """Finished measurements, one JSON line each, so an interrupted run can resume (--resume).

    Lines written under different settings are ignored.
    """

    def __init__(self, path: Path, settings: dict[str, Any]) -> None:
        self.path = path
        self.settings = settings
        self.done: dict[str, dict[str, Any]] = {}
        if path.exists():
            for line in path.read_text().splitlines():
                entry = json.loads(line)
                if entry["settings"] == settings:
                    self.done[entry["label"]] = entry["result"]

    def clear(self) -> None:
        self.done = {}
        self.path.unlink(missing_ok=True)

    def add(self, label: str, result: dict[str, Any]) -> None:
        self.done[label] = result
        self.path.parent.mkdir(parents=True, exist_ok=True)
        entry = {"label": label, "settings": self.settings, "result": result}
        with self.path.open("a") as f:
            f.write(json.dumps(entry) + "\n")


def peak_text(peak: dict[str, Any]) -> str:
    return (
        f"fp32 {peak['float32_gflops']:.0f} GFLOP/s, bf16 {peak['bfloat16_gflops']:.0f} GFLOP/s"
        f" (other processes: {peak['disturbance']:.2f} cores)"
    )


def cached_flops(cache: Path, spec: dict[str, Any], workdir: Path, arch: str) -> dict[str, Any]:
    """The flops child's result, reused when the same model has counted the same items."""
    import hashlib

    what = [spec["model_dir"], spec["clips"]]
    digest = hashlib.sha1(json.dumps(what).encode()).hexdigest()[:16]
    path = cache / f"flops-{arch}-{digest}.json"
    if path.exists():
        return dict(json.loads(path.read_text()))
    result = run_child(spec, workdir, f"flops-{arch}")
    path.write_text(json.dumps(result))
    return result


def pick_hotwords(model_dirs: dict[str, Path], count: int, seed: int) -> list[str]:
    """``count`` distinct 2-4 character phrases over the SeACo model's CJK tokens."""
    seaco = [d for a, d in model_dirs.items() if a.startswith("seaco")]
    if not seaco or count == 0:
        return []
    tokens = json.loads((seaco[0] / "tokens.json").read_text(encoding="utf-8"))
    hanzi = sorted(t for t in tokens if len(t) == 1 and "\u4e00" <= t <= "\u9fa5")
    rng = random.Random(seed)
    phrases: list[str] = []
    while len(phrases) < count:
        phrase = "".join(rng.choice(hanzi) for _ in range(rng.randint(2, 4)))
        if phrase not in phrases:
            phrases.append(phrase)
    return phrases


def run_alternating(
    archs: list[str],
    variants: list[str],
    workloads: list[str],
    repeats: int,
    base: dict[str, Any],
    long_spec: dict[str, Any],
    model_dirs: dict[str, Path],
    hotwords: list[str],
    args: argparse.Namespace,
    workdir: Path,
    gate: QuietGate,
    journal: Journal,
) -> list[dict[str, Any]]:
    """Every (repeat, arch, workload): ours fp32, funasr, then our other dtypes, in turn."""
    systems = [("ours", variants[0]), ("funasr", "float32")] + [("ours", v) for v in variants[1:]]
    unavailable: set[str] = set()
    runs: list[dict[str, Any]] = []
    total = repeats * len(archs) * len(workloads) * len(systems)
    done = 0
    for repeat in range(repeats):
        for arch in archs:
            for workload in workloads:
                for system, dtype in systems:
                    done += 1
                    if system == "ours" and dtype in unavailable:
                        continue
                    spec = {
                        **base,
                        "task": workload,
                        "system": system,
                        "dtype": dtype,
                        "model_dir": str(model_dirs[arch]),
                        "hotwords": hotwords if arch.startswith("seaco") else None,
                        "batch8": not args.no_batch8,
                        "rounds": args.rounds,
                    }
                    if workload == "long":
                        spec.update(long_spec)
                    label = f"r{repeat}-{arch}-{workload}-{system}-{dtype}"
                    if label in journal.done:
                        result = journal.done[label]
                    else:
                        result = gate.run(spec, workdir, label)
                        result.update(repeat=repeat, arch=arch, workload=workload, system=system)
                        result["dtype"] = dtype
                        journal.add(label, result)
                    runs.append(result)
                    if not result.get("available", True):
                        unavailable.add(dtype)
                        log(f"[{done}/{total}] {label}: not available ({result.get('error')})")
                        continue
                    times = ", ".join(
                        f"{k} {v['seconds']:.1f}s" for k, v in result.get("runs", {}).items()
                    )
                    log(
                        f"[{done}/{total}] {label}: {times}; peak RSS {result['peak_rss_mib']:.0f} MiB"
                    )
    return runs


def summarise(report: dict[str, Any]) -> dict[str, Any]:
    """Medians, ratios, agreement and MFU per (arch, workload, system)."""
    peak = report["peak"]
    summary: dict[str, Any] = {}
    runs = report["runs"]
    for arch in report["settings"]["archs"]:
        for workload in report["settings"]["workloads"]:
            key = f"{arch}/{workload}"
            rows: dict[str, dict[str, Any]] = {}
            mine = [r for r in runs if r["arch"] == arch and r["workload"] == workload]
            flops = report["flops"][arch][
                "short_flops" if workload == "short" else "long_flops_estimate"
            ]
            for r in mine:
                if not r.get("available", True):
                    rows.setdefault(short_label(r["system"], r["dtype"]), {"available": False})
                    continue
                for kind, run in r["runs"].items():
                    name = short_label(r["system"], r["dtype"])
                    if kind not in ("plain", "total"):
                        name += f" {kind}"
                    row = rows.setdefault(
                        name, {"seconds": [], "ids": None, "rss": [], "other": [], "pairs": []}
                    )
                    if kind == "hotwords":  # its child timed plain runs alongside
                        plain_rounds = r["runs"]["plain"]["round_seconds"]
                        row["pairs"] += [
                            p / h - 1 for p, h in zip(plain_rounds, run["round_seconds"])
                        ]
                    row["seconds"].append(run["seconds"])
                    row["other"].append(run.get("other_cores", 0.0))
                    row["audio_seconds"] = r["audio_seconds"]
                    row["rss"].append(r["peak_rss_mib"])
                    row["run_peak_mib"] = max(row.get("run_peak_mib") or 0, r["run_peak_mib"] or 0)
                    row["rss_after_load_mib"] = r["rss_after_load_mib"]
                    if "ids" in run:
                        if row["ids"] is None:
                            row["ids"] = run["ids"]
                        elif run["ids"] != row["ids"]:
                            row["nondeterministic"] = True
                    for extra in ("engine_stats", "segments_found"):
                        if extra in run:
                            row[extra] = run[extra]
            funasr = rows.get("funasr fp32")
            ours32 = rows.get("zhuanxie fp32")
            out: dict[str, Any] = {}
            for name, row in rows.items():
                if not row.get("seconds"):
                    out[name] = {"available": False}
                    continue
                wall = median(row["seconds"])
                entry: dict[str, Any] = {
                    "median_seconds": wall,
                    "all_seconds": row["seconds"],
                    "rtfx": row["audio_seconds"] / wall,
                    "peak_rss_mib": max(row["rss"]),
                    "run_peak_rss_mib": row["run_peak_mib"],
                    "rss_after_load_mib": row["rss_after_load_mib"],
                    "other_cores_max": max(row["other"]),
                }
                if name.endswith(("vad", "asr")):
                    entry.pop("rtfx")
                else:
                    entry["gflops_achieved"] = flops / wall / 1e9 if flops else None
                    dtype_peak = peak["bfloat16_gflops" if "bf16" in name else "float32_gflops"]
                    if flops and "int8" not in name:
                        entry["mfu"] = flops / wall / 1e9 / dtype_peak
                for extra in ("engine_stats", "segments_found", "nondeterministic"):
                    if extra in row:
                        entry[extra] = row[extra]
                reference = funasr
                if name.endswith("hotwords"):
                    reference = rows.get("funasr fp32 hotwords")
                if (
                    reference
                    and reference is not row
                    and reference.get("seconds")
                    and "rtfx" in entry
                ):
                    entry["vs_funasr"] = median(reference["seconds"]) / wall
                    entry["identical_to_funasr"] = identical(row["ids"], reference["ids"])
                base_row = ours32
                if name.endswith("hotwords"):
                    base_row = rows.get("zhuanxie fp32 hotwords")
                if name.startswith("zhuanxie") and base_row and base_row is not row:
                    entry["identical_to_our_fp32"] = identical(row["ids"], base_row["ids"])
                if row["pairs"]:  # throughput with hotwords / without, run after run
                    entry["hotword_throughput_change"] = median(row["pairs"])
                    entry["hotword_pairs"] = len(row["pairs"])
                out[name] = entry
            summary[key] = out
    return summary


def render(report: dict[str, Any]) -> str:
    lines = []
    machine = report["machine"]
    lines.append(
        f"{machine['cpu_model']}, {machine['logical_cpus']} CPUs, {machine['memory_gib']} GiB; "
        f"torch {machine['torch']}, funasr {machine['funasr']}; "
        f"{report['settings']['threads']} threads, median of {report['settings']['repeats']}"
    )
    peak = report["peak"]
    lines.append(
        f"matmul peak ({MATMUL_N}^3): fp32 {peak['float32_gflops']:.0f} GFLOP/s, "
        f"bf16 {peak['bfloat16_gflops']:.0f} GFLOP/s"
    )
    for key, rows in report["summary"].items():
        arch, workload = key.split("/")
        if workload == "short":
            w = report["short_workload"]
            title = f"(a) short clips, {arch}: {w['audio_seconds']:.0f} s in {w['items']} clips"
        else:
            w = report["long_workload"]
            title = (
                f"(b) long recording, {arch}: {w['audio_seconds'] / 60:.1f} min, "
                f"{w['segments']} Silero segments ({w['speech_seconds']:.0f} s speech)"
            )
        gflop = report["flops"][arch]
        lines.append("")
        lines.append(f"{title}; {gflop['short_gflop_per_audio_s']:.2f} GFLOP/audio-s (clips)")
        lines.append(
            "| system | wall s | RTFx | vs funasr | tokens = funasr | = our fp32 "
            "| peak RSS MiB | run peak MiB | MFU | other load |"
        )
        lines.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for name, e in rows.items():
            if not e.get("median_seconds"):
                lines.append(f"| {name} | not available | | | | | | | | |")
                continue

            def fmt(value: float | None, spec: str) -> str:
                return "" if value is None else format(value, spec)

            lines.append(
                f"| {name} | {e['median_seconds']:.1f} | {fmt(e.get('rtfx'), '.1f')} | "
                f"{fmt(e.get('vs_funasr'), '.2f')} | {fmt(e.get('identical_to_funasr'), '.0%')} | "
                f"{fmt(e.get('identical_to_our_fp32'), '.0%')} | {e['peak_rss_mib']:.0f} | "
                f"{fmt(e.get('run_peak_rss_mib'), '.0f')} | {fmt(e.get('mfu'), '.0%')} | "
                f"{e['other_cores_max']:.2f} |"
            )
        for name, e in rows.items():
            if "hotword_throughput_change" in e:
                lines.append(f"hotwords, {name}: throughput {e['hotword_throughput_change']:+.1%}")
            stats = e.get("engine_stats")
            if stats and stats.get("batches"):
                busy = stats["model_seconds"] / e["median_seconds"]
                lines.append(
                    f"{name}: {stats['batches']} batches, {stats['segments'] / stats['batches']:.1f} "
                    f"segments/batch, padding {stats['padding_ratio']:.1%}, model busy {busy:.0%} "
                    "of wall"
                )
            if "segments_found" in e:
                lines.append(
                    f"funasr FSMN-VAD (random weights) found {e['segments_found']} segments"
                )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
