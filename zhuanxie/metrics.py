"""Prometheus metrics of the server: requests, queues, batches, audio, speed and memory.

Each app has its own registry (tests build many apps in one process). Request counts and
latencies are recorded as requests finish; the engine's figures are read from its running
``EngineStats`` at scrape time, so they cost nothing between scrapes. Batch sizes are exported
as batch and segment counters: ``rate(segments) / rate(batches)`` is the mean batch size.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import replace

import torch
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from zhuanxie.service import Service

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)


class Metrics:
    """The registry and the request-side metrics of one app."""

    def __init__(self, services: Mapping[str, Service]) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "zhuanxie_http_requests",
            "HTTP requests answered, by route template, method and status.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "zhuanxie_http_request_duration_seconds",
            "Seconds from request to response, by route template and method.",
            ["route", "method"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.cancelled = Counter(
            "zhuanxie_transcriptions_cancelled",
            "Interactive transcriptions whose work was cancelled, by reason.",
            ["reason"],
            registry=self.registry,
        )
        self.registry.register(EngineCollector(services))

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(route, method, str(status)).inc()
        self.latency.labels(route, method).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class EngineCollector(Collector):
    """The engines' counters, queues and memory, read when scraped."""

    def __init__(self, services: Mapping[str, Service]) -> None:
        self.services = services

    def collect(self) -> Iterator[Metric]:
        counters = {
            "batches": "Batches the model ran.",
            "segments": "Segments decoded (rate(segments) / rate(batches) = mean batch size).",
            "audio_seconds": "Seconds of audio decoded.",
            "model_seconds": "Seconds the model spent decoding.",
            "padded_frames": "Frames in batches, padding included.",
            "real_frames": "Frames of audio in batches.",
            "out_of_memory": "Out-of-memory errors recovered from by splitting batches.",
        }
        families = {
            name: CounterMetricFamily(f"zhuanxie_engine_{name}", text, labels=["model"])
            for name, text in counters.items()
        }
        gauges = {
            "queue_depth": GaugeMetricFamily(
                "zhuanxie_engine_queue_depth",
                "Segments waiting for the model.",
                labels=["model"],
            ),
            "rtf": GaugeMetricFamily(
                "zhuanxie_engine_real_time_factor",
                "Model seconds per audio second so far (lower is faster).",
                labels=["model"],
            ),
            "batch": GaugeMetricFamily(
                "zhuanxie_engine_mean_batch_size",
                "Segments per batch so far.",
                labels=["model"],
            ),
            "peak": GaugeMetricFamily(
                "zhuanxie_engine_peak_memory_bytes",
                "Peak device memory on a GPU, else the process's peak resident memory.",
                labels=["model"],
            ),
            "inputs": GaugeMetricFamily(
                "zhuanxie_service_inputs",
                "Inputs admitted and unfinished, by lane (interactive, bulk, bulk backlog).",
                labels=["model", "lane"],
            ),
        }
        devices: set[torch.device] = set()
        for model, service in self.services.items():
            engine = service.engine
            with engine.stats_lock:
                stats = replace(engine.stats)
            for name, family in families.items():
                family.add_metric([model], float(getattr(stats, name)))
            gauges["queue_depth"].add_metric([model], stats.queue_depth)
            rtf = stats.model_seconds / stats.audio_seconds if stats.audio_seconds else 0.0
            gauges["rtf"].add_metric([model], rtf)
            gauges["batch"].add_metric(
                [model], stats.segments / stats.batches if stats.batches else 0.0
            )
            gauges["peak"].add_metric([model], stats.peak_memory_bytes)
            load = service.load()
            for lane, count in (("interactive", load.urgent), ("bulk", load.bulk)):
                gauges["inputs"].add_metric([model, lane], count)
            gauges["inputs"].add_metric([model, "backlog"], load.backlog)
            devices.update(r.backend.device for r in engine.runners)
        yield from families.values()
        yield from gauges.values()
        yield memory_family(devices)


def memory_family(devices: set[torch.device]) -> GaugeMetricFamily:
    """Memory in use now: the process's resident memory, and each GPU's allocated memory."""
    family = GaugeMetricFamily(
        "zhuanxie_memory_bytes",
        "Memory in use now: process resident memory (device=host), or GPU memory allocated.",
        labels=["device"],
    )
    family.add_metric(["host"], resident_bytes())
    for device in sorted(devices, key=str):
        if device.type == "cuda":
            family.add_metric([str(device)], torch.cuda.memory_allocated(device))
    return family


def resident_bytes(pid: int | str = "self") -> int:
    """A process's resident set size in bytes (Linux ``/proc``; 0 where that is missing)."""
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0
