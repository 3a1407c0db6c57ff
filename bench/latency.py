"""Latency of live recognition: concurrent real-time streams against `zhuanxie serve`.

```bash
python bench/latency.py --streams 1 8 32 --seconds 60 --out out/latency.json   # full-size model
python bench/latency.py --tiny --streams 1 8 32 --seconds 30                    # tiny model
```

It starts `zhuanxie serve` on a loopback port (the model: `--model`, else a full-size random
`seaco-paraformer-large` from `--cache`, written there once (~1 GB); `--tiny` for the tiny one;
punctuation from a tiny random CT-Transformer), then for each count in `--streams` runs that many
WebSocket clients on `/v1/stream` at once. Each client sends the same recording — the Mandarin
clips of `$ZHUANXIE_TEST_AUDIO/zh` joined with 0.8-1.5 s pauses of faint noise, `--seconds`
long — in 100 ms chunks paced to real time, starting at a random offset within the first
second so that the streams are not in lockstep, and records when each event arrives.

Measured per segment, against the time the speaker said it (the stream's start plus the audio
position; a chunk leaves when its last sample has been "spoken"):

- **end of speech -> final**: from the end of the segment's speech (its end minus the 200 ms
  padding) to its final result. It includes the VAD's 500 ms of silence that confirm the end.
- **final after endpoint**: the same minus those 500 ms: the time the final decode (queue,
  model, punctuation) and delivery took.
- **speech start -> first interim**: from the start of the segment's speech (its start plus the
  padding) to its first interim. It includes the `--interval` (0.6 s) of audio heard before the
  first interim decode is due.

Also reported: interims per second of speech, and how far the client ended behind the audio (a
client that cannot send in real time makes every figure meaningless; it is checked).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
import websockets
from serving import start_server  # bench/ is the script's directory

from zhuanxie.generator import write_random_model, write_random_punctuation_model

SAMPLE_RATE = 16000
CHUNK_S = 0.1
PAD_S = 0.2  # VadOptions.speech_pad_ms
SILENCE_S = 0.5  # VadOptions.min_silence_ms
DEFAULT_CACHE = Path("~/.cache/zhuanxie-bench").expanduser()
DEFAULT_AUDIO = Path(__file__).resolve().parents[2] / "shared" / "audio"


@dataclass
class Stream:
    """What one client saw."""

    finals: list[dict[str, float]] = field(default_factory=list)  # end, latency
    first_interims: list[float] = field(default_factory=list)  # latency per segment
    interims: int = 0
    speech_seconds: float = 0.0
    lag_s: float = 0.0  # how late the last chunk left, against real time


@dataclass
class Result:
    streams: int
    finals: int
    end_of_speech_to_final_ms: dict[str, float]
    final_after_endpoint_ms: dict[str, float]
    speech_start_to_first_interim_ms: dict[str, float]
    interims_per_speech_second: float
    max_client_lag_ms: float
    load_average: float


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    array = np.asarray(values) * 1000
    return {
        "p50": round(float(np.percentile(array, 50))),
        "p90": round(float(np.percentile(array, 90))),
        "max": round(float(array.max())),
    }


def recording(audio_dir: Path, seconds: float) -> np.ndarray:
    """The corpus's Mandarin clips with pauses, cycled to `seconds`, as 16-bit samples."""
    clips = []
    for path in sorted((audio_dir / "zh").glob("*.wav")):
        audio, rate = sf.read(path, dtype="int16")
        if rate == SAMPLE_RATE and audio.ndim == 1 and len(audio) < 15 * SAMPLE_RATE:
            clips.append(audio)
    if not clips:
        raise SystemExit(f"no 16 kHz Mandarin clips in {audio_dir / 'zh'}")
    rng = np.random.default_rng(0)
    parts, total, i = [np.zeros(SAMPLE_RATE // 2, np.int16)], 0.5, 0
    while total < seconds:
        clip = clips[i % len(clips)]
        pause = rng.normal(0, 15, int(rng.uniform(0.8, 1.5) * SAMPLE_RATE)).astype(np.int16)
        parts += [clip, pause]
        total += (len(clip) + len(pause)) / SAMPLE_RATE
        i += 1
    return np.concatenate(parts)[: int(seconds * SAMPLE_RATE)]


def models(args: argparse.Namespace) -> tuple[Path, Path]:
    cache: Path = args.cache
    punc = cache / "ct-punc-zh-tiny"
    if not punc.is_dir():
        write_random_punctuation_model(punc, "ct-punc-zh-tiny", 0)
    if args.model is not None:
        return args.model, punc
    arch = "seaco-paraformer-tiny" if args.tiny else "seaco-paraformer-large"
    model = cache / f"{arch}-seed0"
    if not model.is_dir():
        print(f"writing a random {arch} into {model} (once)", file=sys.stderr)
        write_random_model(model, arch, 0)
    return model, punc


def start(args: argparse.Namespace, data: Path) -> tuple[subprocess.Popen[bytes], str]:
    """The server for the streams and its /v1/stream URL."""
    model, punc = models(args)
    options = [
        f"--model={model}",
        f"--punc-model={punc}",
        f"--data-dir={data}",
        f"--max-interactive={2 * max(args.streams) + 2}",
    ]
    if args.threads is not None:
        options.append(f"--threads={args.threads}")
    process, url = start_server(options, timeout=300)
    return process, url.replace("http://", "ws://", 1) + "/v1/stream"


async def client(url: str, audio: bytes, interval: float, delay: float) -> Stream:
    """One real-time stream: send paced chunks, time every event against the audio clock."""
    stream = Stream()
    step = int(CHUNK_S * SAMPLE_RATE) * 2
    await asyncio.sleep(delay)
    async with websockets.connect(url, max_size=None) as ws:
        await ws.send(json.dumps({"interval": interval}))
        assert json.loads(await ws.recv())["type"] == "ready"
        loop = asyncio.get_running_loop()
        start = loop.time()
        seen: set[int] = set()

        async def send() -> None:
            for k, i in enumerate(range(0, len(audio), step)):
                # Chunk k holds audio up to (k + 1) * 100 ms: it leaves once that was "spoken".
                await asyncio.sleep(max(0.0, start + (k + 1) * CHUNK_S - loop.time()))
                await ws.send(audio[i : i + step])
            stream.lag_s = loop.time() - (start + len(audio) / 2 / SAMPLE_RATE)
            await ws.send(json.dumps({"type": "end"}))

        sender = asyncio.create_task(send())
        async for raw in ws:
            now = loop.time() - start
            event = json.loads(raw)
            if event["type"] == "interim":
                stream.interims += 1
                if event["segment"] not in seen:
                    seen.add(event["segment"])
                    speech_start = event["start"] + (PAD_S if event["start"] > 0 else 0.0)
                    stream.first_interims.append(now - speech_start)
            elif event["type"] == "final" and event["text"]:
                speech_end = event["end"] - PAD_S
                stream.finals.append({"end": event["end"], "latency": now - speech_end})
                stream.speech_seconds += event["end"] - event["start"] - 2 * PAD_S
        await sender
    return stream


async def run(url: str, audio: bytes, streams: int, interval: float) -> list[Stream]:
    rng = random.Random(streams)
    tasks = [client(url, audio, interval, rng.uniform(0, 1.0)) for _ in range(streams)]
    return list(await asyncio.gather(*tasks))


def summarise(streams: list[Stream], count: int, audio_s: float, load: float) -> Result:
    # The last segment's final waits for the end of the audio, not for silence: leave it out.
    finals = [f for s in streams for f in s.finals if f["end"] < audio_s - 0.05]
    latencies = [f["latency"] for f in finals]
    speech = sum(s.speech_seconds for s in streams)
    return Result(
        streams=count,
        finals=len(finals),
        end_of_speech_to_final_ms=percentiles(latencies),
        final_after_endpoint_ms=percentiles([x - SILENCE_S for x in latencies]),
        speech_start_to_first_interim_ms=percentiles(
            [x for s in streams for x in s.first_interims]
        ),
        interims_per_speech_second=round(sum(s.interims for s in streams) / max(speech, 1e-9), 2),
        max_client_lag_ms=round(max(s.lag_s for s in streams) * 1000),
        load_average=load,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--seconds", type=float, default=60.0, help="audio per stream")
    parser.add_argument("--interval", type=float, default=0.6, help="interim interval (s)")
    parser.add_argument("--model", type=Path, help="model directory (default: random large)")
    parser.add_argument("--tiny", action="store_true", help="the tiny random model instead")
    parser.add_argument("--threads", type=int, help="server's CPU threads for the model")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--audio-dir", type=Path, default=None)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    audio_dir = args.audio_dir or Path(os.environ.get("ZHUANXIE_TEST_AUDIO", DEFAULT_AUDIO))
    samples = recording(audio_dir, args.seconds)
    audio = samples.astype("<i2").tobytes()
    audio_s = len(samples) / SAMPLE_RATE
    results = []
    with tempfile.TemporaryDirectory() as data:
        process, url = start(args, Path(data))
        try:
            asyncio.run(run(url, audio[: 8 * SAMPLE_RATE * 2], 1, args.interval))  # warm-up
            for count in args.streams:
                streams = asyncio.run(run(url, audio, count, args.interval))
                # The 1-minute load average at the end: ~2 of it is the server itself.
                result = summarise(streams, count, audio_s, round(os.getloadavg()[0], 2))
                results.append(result)
                print(json.dumps(asdict(result)), flush=True)
        finally:
            process.terminate()
            process.wait(timeout=30)
    report = {
        "model": str(
            args.model
            or ("seaco-paraformer-tiny" if args.tiny else "seaco-paraformer-large (random)")
        ),
        "audio_seconds_per_stream": audio_s,
        "interval_s": args.interval,
        "cpu_count": os.cpu_count(),
        "threads": args.threads,
        "results": [asdict(r) for r in results],
    }
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2))
    print_table(report)


def print_table(report: dict[str, object]) -> None:
    print(f"\n{report['model']}, {report['audio_seconds_per_stream']:.0f} s per stream")
    print(
        "| streams | finals | end of speech -> final p50 / p90 / max | final after endpoint p50 / p90 | speech start -> first interim p50 / p90 | interims per speech s | client lag |"
    )
    print("| ---: | ---: | --- | --- | --- | ---: | ---: |")
    for r in report["results"]:  # type: ignore[attr-defined]
        e, a, i = (
            r["end_of_speech_to_final_ms"],
            r["final_after_endpoint_ms"],
            r["speech_start_to_first_interim_ms"],
        )
        print(
            f"| {r['streams']} | {r['finals']} | {e.get('p50')} / {e.get('p90')} / {e.get('max')} ms"
            f" | {a.get('p50')} / {a.get('p90')} ms | {i.get('p50')} / {i.get('p90')} ms"
            f" | {r['interims_per_speech_second']} | {r['max_client_lag_ms']} ms |"
        )


if __name__ == "__main__":
    main()
