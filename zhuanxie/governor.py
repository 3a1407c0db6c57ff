"""Memory governor: how many padded frames a batch may hold on a device, learned while running.

On a GPU the budget starts from the device's free memory divided by a per-frame cost measured
at warm-up. An out-of-memory error splits the batch, retries the halves and lowers the budget;
a run of successful batches raises it again, slowly, never above the starting estimate
(decrease fast, increase slowly, as in TCP congestion control). No item is ever dropped: one that
does not fit even alone comes back as an ``ItemOutOfMemoryError`` in its own slot.

On CPU the budget is fixed (see ``GovernorOptions.cpu_padded_frames``).

The device is reached only through a ``MemoryProbe`` and the model only through a ``run_fn``,
so tests drive all of this on CPU with fakes. A governor is not thread-safe: each model runner
owns one.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

import torch

from zhuanxie.batching import BatchBudget, padded_frames, plan_batches

R = TypeVar("R")

LFR_FRAME_SECONDS = 0.06  # one LFR frame stacks 6 fbank frames of 10 ms
# torch.cuda.OutOfMemoryError says "CUDA out of memory", MPS "MPS backend out of memory"; the
# CPU allocator raises a plain RuntimeError "DefaultCPUAllocator: can't allocate memory".
OOM_MESSAGES = ("out of memory", "can't allocate memory")


class MemoryProbe(Protocol):
    """A device's memory, as the governor sees it."""

    def free_bytes(self) -> int:
        """Bytes this process could still allocate for tensors."""
        ...

    def total_bytes(self) -> int:
        """The device's capacity in bytes."""
        ...

    def allocated_bytes(self) -> int:
        """Bytes held by live tensors now."""
        ...

    def reset_peak(self) -> None:
        """Start a new peak measurement at the current allocation."""
        ...

    def peak_bytes(self) -> int:
        """Most bytes held by live tensors since ``reset_peak``."""
        ...

    def release_cache(self) -> None:
        """Hand memory cached by the allocator but unused back to the device."""
        ...


class CudaMemoryProbe:
    """``MemoryProbe`` of one CUDA device, through PyTorch's caching allocator."""

    def __init__(self, device: torch.device | str) -> None:
        self.device = torch.device(device)
        if self.device.type != "cuda":
            raise ValueError(f"CudaMemoryProbe needs a CUDA device, got {self.device}")

    def free_bytes(self) -> int:
        free, _ = torch.cuda.mem_get_info(self.device)
        # Blocks the caching allocator reserved but no tensor uses look taken to the driver,
        # yet they are ours to reuse (after warm-up they hold most of its activations).
        cached = torch.cuda.memory_reserved(self.device) - torch.cuda.memory_allocated(self.device)
        return free + cached

    def total_bytes(self) -> int:
        return torch.cuda.mem_get_info(self.device)[1]

    def allocated_bytes(self) -> int:
        return torch.cuda.memory_allocated(self.device)

    def reset_peak(self) -> None:
        torch.cuda.reset_peak_memory_stats(self.device)

    def peak_bytes(self) -> int:
        return torch.cuda.max_memory_allocated(self.device)

    def release_cache(self) -> None:
        torch.cuda.empty_cache()


@dataclass(frozen=True)
class GovernorOptions:
    """How the padded-frames budget is set and adapted; frames are LFR frames (60 ms)."""

    cpu_padded_frames: int = 1000
    """The fixed budget on CPU: 1000 frames (60 s of audio) per batch. Measured with full-size
    SeACo-Paraformer on 2 threads (``bench/throughput.py``'s 20-minute recording, runs
    alternated): 1000 frames took 39.5-44.1 s where 2000 took 45.9-49.0 s and 600 took
    41.9-48.2 s; int8 was equal or faster at 1000. Fewer frames leave too few rows per matmul to
    amortise each weight read; more make the activations outgrow the caches (the FFN's alone is
    8 MB at 1000 frames, 32 MB at 4000) and add padding."""
    max_batch_size: int = 64
    """Most items per batch. Caps the host-side work per batch (padding, results) and the
    wait before an input's first results; beyond the budget, more items add nothing."""
    memory_fraction: float = 0.8
    """Share of the device's free memory the budget may plan for; the rest absorbs allocator
    fragmentation and the spread between the warm-up batch and real ones."""
    min_padded_frames: int = 256
    """Floor under the learned budget (about 15 s of audio). Below it batching gains little;
    items longer than the budget still run, alone."""
    backoff: float = 0.8
    """After a batch of P padded frames runs out of memory, the budget is at most backoff × P."""
    growth: float = 1.05
    """Factor by which the budget rises after ``grow_after`` successful batches in a row."""
    grow_after: int = 50
    """Successful batches in a row, each using at least half the budget, before it grows."""
    min_length_ratio: float = 0.0
    """Items shorter than this share of their batch's longest wait for another batch (see
    ``BatchBudget.min_length_ratio``); the engine sets it on the CPU."""

    def __post_init__(self) -> None:
        for name in ("cpu_padded_frames", "max_batch_size", "min_padded_frames", "grow_after"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"GovernorOptions.{name} must be a positive int, got {value!r}")
        if not 0.0 < self.memory_fraction <= 1.0:
            raise ValueError(
                f"GovernorOptions.memory_fraction must be in (0, 1], got {self.memory_fraction}"
            )
        if not 0.0 < self.backoff < 1.0:
            raise ValueError(f"GovernorOptions.backoff must be in (0, 1), got {self.backoff}")
        if self.growth < 1.0:
            raise ValueError(f"GovernorOptions.growth must be at least 1, got {self.growth}")
        if self.min_padded_frames > self.cpu_padded_frames:
            raise ValueError(
                f"GovernorOptions.min_padded_frames ({self.min_padded_frames}) must not exceed "
                f"cpu_padded_frames ({self.cpu_padded_frames})"
            )


@dataclass(frozen=True)
class GovernorStats:
    """A snapshot for logs and dashboards."""

    batches_run: int
    """Calls of the model that succeeded."""
    oom_events: int
    """Calls of the model that ran out of memory."""
    failed_items: int
    """Items that ran out of memory even alone."""
    max_padded_frames: int
    """The current budget."""
    free_bytes: int | None
    """Device memory free now (None on CPU)."""
    total_bytes: int | None
    """Device capacity (None on CPU)."""


class ItemOutOfMemoryError(RuntimeError):
    """One item ran out of device memory even in a batch of its own."""

    def __init__(self, index: int, frames: int, reason: str) -> None:
        super().__init__(
            f"item {index} ({frames} LFR frames, {frames * LFR_FRAME_SECONDS:.1f} s of audio) "
            f"ran out of memory in a batch of its own ({reason}); lower the maximum segment "
            "length, or free device memory"
        )
        self.index = index
        self.frames = frames
        self.reason = reason


def measure_frame_cost(probe: MemoryProbe, run: Callable[[], object], frames: int) -> float:
    """Device bytes per padded frame at peak, from one warm-up ``run`` of ``frames`` padded frames.

    Warm up on items as long as the longest segment expected (the VAD's maximum): attention
    grows with T'^2, so the cost per frame is highest there and bounds that of shorter batches.
    """
    if frames < 1:
        raise ValueError(f"warm-up batch must have at least one padded frame, got {frames}")
    base = probe.allocated_bytes()
    probe.reset_peak()
    run()
    used = probe.peak_bytes() - base
    if used <= 0:
        raise RuntimeError(
            "the warm-up run allocated no device memory; run the model on the probe's device"
        )
    return used / frames


def budget_from_memory(free_bytes: int, bytes_per_frame: float, options: GovernorOptions) -> int:
    """Padded frames that ``memory_fraction`` of ``free_bytes`` holds, at least the floor."""
    if bytes_per_frame <= 0:
        raise ValueError(f"bytes_per_frame must be positive, got {bytes_per_frame}")
    frames = math.floor(free_bytes * options.memory_fraction / bytes_per_frame)
    return max(options.min_padded_frames, frames)


def shrink_budget(budget: int, failed_frames: int, options: GovernorOptions) -> int:
    """The budget after a batch of ``failed_frames`` padded frames ran out of memory.

    A failure above the budget (an item too long to share a batch) does not lower it further
    than ``backoff`` × its own size, so one long item does not shrink everyone's batches.
    """
    return max(options.min_padded_frames, min(budget, math.floor(failed_frames * options.backoff)))


def grow_budget(budget: int, ceiling: int, options: GovernorOptions) -> int:
    """The budget after a run of successes: ``growth`` times larger, at most ``ceiling``."""
    return min(ceiling, max(budget + 1, math.floor(budget * options.growth)))


class MemoryGovernor:
    """The padded-frames budget of one device, adapted from out-of-memory errors and successes."""

    def __init__(
        self, options: GovernorOptions, initial_frames: int, probe: MemoryProbe | None = None
    ) -> None:
        self.options = options
        self.probe = probe
        self.ceiling = max(options.min_padded_frames, initial_frames)
        self.frames = self.ceiling
        self.streak = 0
        self.batches_run = 0
        self.oom_events = 0
        self.failed_items = 0

    @classmethod
    def for_cpu(cls, options: GovernorOptions) -> MemoryGovernor:
        """A governor with the fixed CPU budget."""
        return cls(options, options.cpu_padded_frames)

    @classmethod
    def for_device(
        cls, options: GovernorOptions, probe: MemoryProbe, bytes_per_frame: float
    ) -> MemoryGovernor:
        """A governor whose budget starts from the probe's free memory (read after warm-up)."""
        return cls(options, budget_from_memory(probe.free_bytes(), bytes_per_frame, options), probe)

    @property
    def budget(self) -> BatchBudget:
        """The limits to plan the next batch with."""
        return BatchBudget(self.frames, self.options.max_batch_size, self.options.min_length_ratio)

    def record_success(self, frames: int) -> None:
        """A batch of ``frames`` padded frames ran; enough of them in a row raise the budget."""
        self.batches_run += 1
        if 2 * frames < self.frames:  # a small batch says nothing about the budget's limit
            return
        self.streak += 1
        if self.streak >= self.options.grow_after:
            self.frames = grow_budget(self.frames, self.ceiling, self.options)
            self.streak = 0

    def record_oom(self, frames: int) -> None:
        """A batch of ``frames`` padded frames ran out of memory: lower the budget, free the cache.

        Call it after the exception is gone: its traceback keeps the batch's tensors alive.
        """
        self.oom_events += 1
        self.streak = 0
        self.frames = shrink_budget(self.frames, frames, self.options)
        if self.probe is not None:
            self.probe.release_cache()

    def record_item_failure(self) -> None:
        """An item ran out of memory in a batch of its own; it is returned as an error."""
        self.failed_items += 1

    def stats(self) -> GovernorStats:
        """Counters and the current budget."""
        probe = self.probe
        return GovernorStats(
            batches_run=self.batches_run,
            oom_events=self.oom_events,
            failed_items=self.failed_items,
            max_padded_frames=self.frames,
            free_bytes=probe.free_bytes() if probe else None,
            total_bytes=probe.total_bytes() if probe else None,
        )


def is_out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` is an allocation failure (CUDA, MPS or CPU) rather than a bug."""
    if isinstance(error, (torch.cuda.OutOfMemoryError, MemoryError)):
        return True
    return isinstance(error, RuntimeError) and any(m in str(error) for m in OOM_MESSAGES)


def run_with_oom_recovery(
    lengths: Sequence[int],
    run_fn: Callable[[list[int]], Sequence[R]],
    governor: MemoryGovernor,
) -> list[R | ItemOutOfMemoryError]:
    """Run items of ``lengths`` LFR frames through ``run_fn``, splitting on out-of-memory errors.

    ``run_fn(indices)`` runs the items at ``indices`` (positions in ``lengths``, longest first)
    as one batch and returns one result per index, in that order. The items are first planned
    into batches under the governor's current budget. A batch that runs out of memory is split
    into its longer and shorter halves, which are planned and run again under the lowered
    budget. An item that runs out of memory alone gets an ``ItemOutOfMemoryError`` in its slot;
    the others still run. Other errors propagate.

    Returns one result per item, in the order of ``lengths``. ``run_fn`` is called at most
    2n - 1 times for n items: each failure splits a batch into strictly smaller ones.
    """
    done: dict[int, R | ItemOutOfMemoryError] = {}
    todo = [list(range(len(lengths)))]
    while todo:
        items = todo.pop()
        groups = plan_batches([lengths[i] for i in items], governor.budget)
        if len(groups) > 1:
            todo.extend([items[j] for j in group] for group in reversed(groups))
            continue
        batch = [items[j] for j in groups[0]]
        frames = padded_frames(lengths, batch)
        results, reason = _attempt(run_fn, batch)
        if results is not None:
            governor.record_success(frames)
            done.update(zip(batch, results))
            continue
        governor.record_oom(frames)
        if len(batch) == 1:
            governor.record_item_failure()
            done[batch[0]] = ItemOutOfMemoryError(batch[0], lengths[batch[0]], reason)
        else:
            half = (len(batch) + 1) // 2
            todo.extend([batch[half:], batch[:half]])  # the longer half runs first
    return [done[i] for i in range(len(lengths))]


def _attempt(
    run_fn: Callable[[list[int]], Sequence[R]], batch: list[int]
) -> tuple[Sequence[R] | None, str]:
    """``run_fn(batch)`` -> (results, "") or, on out-of-memory, (None, the error's first line).

    Only the message leaves the ``except`` clause: the exception's traceback holds the failed
    batch's tensors, which must be freed before anything is retried (PyTorch FAQ, "My model
    reports 'cuda runtime error(2): out of memory'").
    """
    try:
        results = run_fn(batch)
    except (RuntimeError, MemoryError) as error:
        if not is_out_of_memory(error):
            raise
        return None, str(error).split("\n", 1)[0]
    if len(results) != len(batch):
        raise ValueError(f"run_fn returned {len(results)} results for a batch of {len(batch)}")
    return results, ""


# oneDNN caches a compiled primitive per distinct input shape (default: 1024 of them). Segments
# of every length make nearly every batch's shape new, so the cache only grows; the layers of
# one batch share a shape, so a small cache keeps every hit that matters.
ONEDNN_CACHE_ENTRIES = 32


def bound_native_memory() -> None:
    """Keep oneDNN's primitive cache small, so CPU memory stays flat across a long run (see
    ``bench/memory.py``), unless the user set ``ONEDNN_PRIMITIVE_CACHE_CAPACITY``.

    oneDNN reads the variable when it compiles its first primitive, so this takes effect only
    if called before any model ran. (A fixed glibc mmap threshold would flatten memory further,
    but the page faults of fresh mappings cost about 20% of the speed: see docs/benchmarks.md.)
    """
    import os

    os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", str(ONEDNN_CACHE_ENTRIES))


class HeapTrimmer:
    """Hands the C heap's free pages back to the system, at most once per ``interval_s``.

    A batch's activations are freed when it ends, but glibc keeps most of that memory, and as
    batches of different shapes come and go the heap fragments and grows. With the engine's
    queues bounded, peak memory over a 2-hour recording was still 10.8% above a 10-minute one's
    (``bench/memory.py``, tiny model, 4-batch pool); trimming after batches made it 7.3-9.2%,
    without the 20% slowdown of a fixed mmap threshold: the next batch faults its pages back in
    once, not every tensor. A no-op where the C library has no ``malloc_trim`` (not glibc).
    """

    def __init__(self, interval_s: float = 1.0) -> None:
        self.interval_s = interval_s
        self._last = 0.0
        self._trim = _malloc_trim()

    def __call__(self) -> bool:
        """Trim if the interval has passed since the last trim; whether it trimmed."""
        now = time.monotonic()
        if self._trim is None or now - self._last < self.interval_s:
            return False
        self._last = now
        self._trim(0)
        return True


def _malloc_trim() -> Callable[[int], int] | None:
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        trim: Callable[[int], int] = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError, TypeError):
        return None
    return trim
