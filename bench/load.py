"""Load test of the HTTP server: many concurrent clients on loopback for a fixed time.

```bash
python bench/load.py --clients 32 --seconds 60 --max-interactive 8 --out out/load.json
python bench/load.py --url http://127.0.0.1:8000 --pid 1234 --clients 32 --seconds 60
```

Without ``--url`` it starts ``zhuanxie serve`` on a free loopback port with ``--model`` (default:
a tiny random SeACo-Paraformer and punctuation model, generated once into ``--cache``), so the
figures measure the server — uploads, admission, scheduling, responses — more than the model.

Each client posts a clip (synthesised noise of 1 to 4 s, sent with ``vad=false`` so that the
model runs on all of it; or ``--audio`` files), waits for the answer, and starts the next one; a
refusal (429 or 503 with Retry-After) makes it wait what the server asked, at most
``--max-backoff`` seconds, like a polite client. The first ``--warmup`` seconds are not counted.

Reported: accepted requests per second and audio seconds per second, latency percentiles of the
accepted requests, counts per status (429/503 are the deliberate refusals of a full queue),
transport errors (requests never answered), and the server's resident memory after the warm-up,
at its peak and at the end. The exit status is 1 if any request was not answered or got a 5xx
other than 503.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx
import numpy as np
import soundfile as sf
from serving import start_server  # bench/ is the script's directory

from zhuanxie.generator import write_random_model, write_random_punctuation_model
from zhuanxie.metrics import resident_bytes

MIB = 2**20


@dataclass
class Outcome:
    started: float
    seconds: float
    status: int | None  # None: no answer (transport error)
    audio_seconds: float


@dataclass
class Report:
    clients: int
    seconds: float
    requests: int
    accepted: int
    refused_429: int
    refused_503: int
    other_status: dict[str, int]
    transport_errors: int
    accepted_per_s: float
    audio_seconds_per_s: float
    latency_ms: dict[str, float]
    rss_mib: dict[str, float] = field(default_factory=dict)

    @property
    def healthy(self) -> bool:
        server_errors = {s: n for s, n in self.other_status.items() if int(s) >= 500}
        return self.transport_errors == 0 and not server_errors


def tiny_models(cache: Path) -> tuple[Path, Path]:
    model, punc = cache / "seaco-paraformer-tiny", cache / "ct-punc-zh-tiny"
    if not model.is_dir():
        write_random_model(model, "seaco-paraformer-tiny", 0)
    if not punc.is_dir():
        write_random_punctuation_model(punc, "ct-punc-zh-tiny", 0)
    return model, punc


def synthetic_clips(folder: Path, count: int = 8) -> list[Path]:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        path = folder / f"clip{i}.wav"
        samples = rng.normal(0, 0.1, int(rng.uniform(1, 4) * 16000)).astype(np.float32)
        sf.write(path, samples, 16000)
        paths.append(path)
    return paths


def start(args: argparse.Namespace, data: Path) -> tuple[subprocess.Popen[bytes], str]:
    model, punc = (args.model, args.punc_model)
    if model is None:
        model, punc = tiny_models(args.cache)
    options = [
        f"--model={model}",
        f"--data-dir={data}",
        f"--max-interactive={args.max_interactive}",
    ]
    if punc is not None:
        options.append(f"--punc-model={punc}")
    if args.threads is not None:
        options.append(f"--threads={args.threads}")
    return start_server(options, timeout=180)


async def client_loop(
    http: httpx.AsyncClient,
    url: str,
    clips: list[tuple[str, bytes, float]],
    first: int,
    deadline: float,
    max_backoff: float,
    fields: dict[str, str],
    outcomes: list[Outcome],
) -> None:
    i = first
    while time.monotonic() < deadline:
        name, data, seconds = clips[i % len(clips)]
        i += 1
        started = time.monotonic()
        status: int | None = None
        wait = 0.0
        try:
            response = await http.post(
                f"{url}/v1/audio/transcriptions", files={"file": (name, data)}, data=fields
            )
            status = response.status_code
            if status in (429, 503):
                wait = min(float(response.headers.get("retry-after", 1)), max_backoff)
        except httpx.TransportError:
            pass
        outcomes.append(Outcome(started, time.monotonic() - started, status, seconds))
        if wait:
            await asyncio.sleep(wait)


async def run_clients(args: argparse.Namespace, url: str, clips: list[Path]) -> list[Outcome]:
    loaded = [(p.name, p.read_bytes(), float(sf.info(p).duration)) for p in clips]
    headers = {"authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    fields = {"response_format": "json", "vad": "false"} if args.audio is None else {}
    outcomes: list[Outcome] = []
    limits = httpx.Limits(max_connections=args.clients, max_keepalive_connections=args.clients)
    timeout = httpx.Timeout(args.request_timeout)
    deadline = time.monotonic() + args.warmup + args.seconds
    async with httpx.AsyncClient(headers=headers, limits=limits, timeout=timeout) as http:
        await asyncio.gather(
            *(
                client_loop(http, url, loaded, c, deadline, args.max_backoff, fields, outcomes)
                for c in range(args.clients)
            )
        )
    return outcomes


def sample_memory(
    pid: int, stop: asyncio.Event, samples: list[tuple[float, int]]
) -> asyncio.Task[None]:
    async def sample() -> None:
        while not stop.is_set():
            samples.append((time.monotonic(), resident_bytes(pid)))
            await asyncio.sleep(0.5)

    return asyncio.ensure_future(sample())


def summarise(
    args: argparse.Namespace, outcomes: list[Outcome], start: float, memory: list[tuple[float, int]]
) -> Report:
    counted = [o for o in outcomes if o.started >= start + args.warmup]
    accepted = [o for o in counted if o.status == 200]
    latencies = np.array([o.seconds * 1000 for o in accepted]) if accepted else np.zeros(1)
    others: dict[str, int] = {}
    for o in counted:
        if o.status not in (200, 429, 503, None):
            others[str(o.status)] = others.get(str(o.status), 0) + 1
    report = Report(
        clients=args.clients,
        seconds=args.seconds,
        requests=len(counted),
        accepted=len(accepted),
        refused_429=sum(o.status == 429 for o in counted),
        refused_503=sum(o.status == 503 for o in counted),
        other_status=others,
        transport_errors=sum(o.status is None for o in counted),
        accepted_per_s=round(len(accepted) / args.seconds, 2),
        audio_seconds_per_s=round(sum(o.audio_seconds for o in accepted) / args.seconds, 2),
        latency_ms={
            q: round(float(np.percentile(latencies, p)), 1)
            for q, p in (("p50", 50), ("p90", 90), ("p99", 99), ("max", 100))
        },
    )
    after_warmup = [rss for t, rss in memory if t >= start + args.warmup]
    if after_warmup:
        report.rss_mib = {
            "start": round(after_warmup[0] / MIB, 1),
            "peak": round(max(after_warmup) / MIB, 1),
            "end": round(after_warmup[-1] / MIB, 1),
        }
    return report


async def measure(args: argparse.Namespace, url: str, pid: int, clips: list[Path]) -> Report:
    memory: list[tuple[float, int]] = []
    stop = asyncio.Event()
    sampler = sample_memory(pid, stop, memory)
    start = time.monotonic()
    outcomes = await run_clients(args, url, clips)
    memory.append((time.monotonic(), resident_bytes(pid)))
    stop.set()
    await sampler
    return summarise(args, outcomes, start, memory)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="an already running server (else one is started)")
    parser.add_argument("--pid", type=int, help="that server's pid, for its memory")
    parser.add_argument("--api-key")
    parser.add_argument("--model", help="model for the started server (default: tiny random)")
    parser.add_argument("--punc-model")
    parser.add_argument("--threads", type=int)
    parser.add_argument("--max-interactive", type=int, default=8)
    parser.add_argument("--audio", type=Path, nargs="+", help="clips to send (default: noise)")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--max-backoff", type=float, default=1.0)
    parser.add_argument("--request-timeout", type=float, default=120.0)
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "zhuanxie-bench")
    parser.add_argument("--out", type=Path, help="write the report here as JSON")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="zhuanxie-load-") as scratch:
        clips = args.audio or synthetic_clips(Path(scratch))
        process = None
        if args.url is None:
            process, url = start(args, Path(scratch) / "data")
            pid = process.pid
        else:
            url, pid = args.url.rstrip("/"), args.pid or 0
        try:
            report = asyncio.run(measure(args, url, pid, clips))
        finally:
            if process is not None:
                process.terminate()
                process.wait(timeout=60)
    document = asdict(report) | {"healthy": report.healthy, "cpus": os.cpu_count()}
    print(json.dumps(document, indent=2))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(document, indent=2) + "\n")
    return 0 if report.healthy else 1


if __name__ == "__main__":
    raise SystemExit(main())
