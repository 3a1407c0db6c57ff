"""Memory governor on CPU: a fake memory probe and a fake device that fails above a capacity."""

from __future__ import annotations

import gc
import os
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
import torch

from zhuanxie.batching import padded_frames
from zhuanxie.governor import (
    CudaMemoryProbe,
    GovernorOptions,
    GovernorStats,
    HeapTrimmer,
    ItemOutOfMemoryError,
    MemoryGovernor,
    budget_from_memory,
    is_out_of_memory,
    measure_frame_cost,
    run_with_oom_recovery,
)

MB = 1_000_000


@dataclass
class FakeProbe:
    """A device whose free memory and allocations the test sets."""

    free: int = 8_000 * MB
    total: int = 16_000 * MB
    allocated: int = 1_000 * MB
    peak: int = 0
    released: int = 0

    def free_bytes(self) -> int:
        return self.free

    def total_bytes(self) -> int:
        return self.total

    def allocated_bytes(self) -> int:
        return self.allocated

    def reset_peak(self) -> None:
        self.peak = self.allocated

    def peak_bytes(self) -> int:
        return self.peak

    def release_cache(self) -> None:
        self.released += 1


@dataclass
class FakeDevice:
    """``run_fn`` that runs out of memory on batches above ``capacity`` padded frames."""

    lengths: Sequence[int]
    capacity: int
    calls: list[list[int]] = field(default_factory=list)

    def __call__(self, batch: list[int]) -> list[str]:
        self.calls.append(batch)
        frames = padded_frames(self.lengths, batch)
        if frames > self.capacity:
            raise torch.cuda.OutOfMemoryError(
                f"CUDA out of memory. Tried to allocate {frames} frames\nmore detail"
            )
        return [f"r{i}" for i in batch]


OPTIONS = GovernorOptions(min_padded_frames=100, max_batch_size=8)


def governor(frames: int = 1000, **changes: Any) -> MemoryGovernor:
    """A governor starting at ``frames`` with a fake probe and ``OPTIONS`` changed by ``changes``."""
    return MemoryGovernor(replace(OPTIONS, **changes), frames, FakeProbe())


def test_batch_within_capacity_runs_once() -> None:
    lengths = [100, 250, 200]
    device = FakeDevice(lengths, capacity=1000)
    results = run_with_oom_recovery(lengths, device, governor())
    assert results == ["r0", "r1", "r2"]
    assert device.calls == [[1, 2, 0]]


def test_oom_splits_into_halves_and_returns_every_result_in_order() -> None:
    lengths = [250, 240, 230, 220]
    device = FakeDevice(lengths, capacity=600)
    gov = governor(1000)
    results = run_with_oom_recovery(lengths, device, gov)
    assert results == ["r0", "r1", "r2", "r3"]
    assert device.calls == [[0, 1, 2, 3], [0, 1], [2, 3]]
    assert gov.frames == 800  # backoff 0.8 × the 1000 padded frames that failed


def test_halves_are_replanned_under_the_lowered_budget() -> None:
    lengths = [100] * 8
    device = FakeDevice(lengths, capacity=300)
    gov = governor(800)
    results = run_with_oom_recovery(lengths, device, gov)
    assert results == [f"r{i}" for i in range(8)]
    # 800 fails -> budget 640; the first half (400) fits it but fails -> 320, so its quarters
    # run, and the second half is planned as 300 + 100.
    assert device.calls == [
        [0, 1, 2, 3, 4, 5, 6, 7],
        [0, 1, 2, 3],
        [0, 1],
        [2, 3],
        [4, 5, 6],
        [7],
    ]
    assert gov.frames == 320


def test_batch_over_the_current_budget_is_planned_before_running() -> None:
    lengths = [100] * 6
    device = FakeDevice(lengths, capacity=10_000)
    run_with_oom_recovery(lengths, device, governor(300))
    assert device.calls == [[0, 1, 2], [3, 4, 5]]


def test_budget_never_falls_below_the_floor() -> None:
    lengths = [60] * 16
    gov = governor(960, max_batch_size=16)
    results = run_with_oom_recovery(lengths, FakeDevice(lengths, capacity=60), gov)
    assert results == [f"r{i}" for i in range(16)]
    assert gov.frames == 100


def test_item_that_fails_alone_gets_an_error_and_the_others_run() -> None:
    lengths = [100, 500, 120]
    device = FakeDevice(lengths, capacity=400)
    gov = governor(1500)
    results = run_with_oom_recovery(lengths, device, gov)
    assert results[0] == "r0"
    assert results[2] == "r2"
    error = results[1]
    assert isinstance(error, ItemOutOfMemoryError)
    assert (error.index, error.frames) == (1, 500)
    assert str(error) == (
        "item 1 (500 LFR frames, 30.0 s of audio) ran out of memory in a batch of its own "
        "(CUDA out of memory. Tried to allocate 500 frames); lower the maximum segment length, "
        "or free device memory"
    )
    assert device.calls == [[1, 2, 0], [1, 2], [1], [2], [0]]
    assert gov.stats().failed_items == 1


def test_persistent_failure_ends_after_at_most_2n_minus_1_calls() -> None:
    lengths = [50] * 7
    device = FakeDevice(lengths, capacity=0)
    results = run_with_oom_recovery(lengths, device, governor(350))
    assert all(isinstance(r, ItemOutOfMemoryError) for r in results)
    assert len(device.calls) <= 2 * len(lengths) - 1


def test_cache_is_released_once_per_oom_and_not_per_batch() -> None:
    lengths = [250, 240, 230, 220]
    gov = governor(1000)
    run_with_oom_recovery(lengths, FakeDevice(lengths, capacity=600), gov)
    assert isinstance(gov.probe, FakeProbe)
    assert gov.probe.released == 1


def test_failed_batch_is_freed_before_the_retry() -> None:
    """The OOM's traceback holds the failed batch's tensors; they must be gone on retry."""
    refs: list[weakref.ref[torch.Tensor]] = []
    alive_at_retry: list[bool] = []

    def run(batch: list[int]) -> list[int]:
        if refs:
            gc.disable()  # only reference counting may free it, as it must on a device
            alive_at_retry.append(refs[0]() is not None)
            gc.enable()
            return batch
        activations = torch.zeros(4)
        refs.append(weakref.ref(activations))
        raise RuntimeError("CUDA out of memory")

    run_with_oom_recovery([10, 10], run, governor())
    assert alive_at_retry == [False, False]


def test_cpu_allocator_failure_counts_as_oom() -> None:
    error = RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 8 GB")
    assert is_out_of_memory(error)


def test_other_errors_are_not_oom_and_propagate() -> None:
    def run(batch: list[int]) -> list[int]:
        raise RuntimeError("shape mismatch")

    assert not is_out_of_memory(ValueError("out of memory"))
    with pytest.raises(RuntimeError, match="shape mismatch"):
        run_with_oom_recovery([10, 10], run, governor())


def test_wrong_number_of_results_is_an_error() -> None:
    with pytest.raises(ValueError, match="run_fn returned 1 results for a batch of 2"):
        run_with_oom_recovery([10, 10], lambda batch: batch[:1], governor())


def test_budget_grows_back_after_a_run_of_successes_up_to_the_start() -> None:
    gov = governor(1000, grow_after=3, growth=1.1)
    gov.record_oom(1000)
    assert gov.frames == 800
    for _ in range(2):
        gov.record_success(400)
    assert gov.frames == 800
    gov.record_success(400)
    assert gov.frames == 880
    for _ in range(6):
        gov.record_success(500)
    assert gov.frames == 1000  # 968, then capped at the starting budget


def test_small_batches_do_not_grow_the_budget() -> None:
    gov = governor(1000, grow_after=2, growth=1.1)
    gov.record_oom(1000)
    for _ in range(10):
        gov.record_success(399)
    assert gov.frames == 800


def test_oom_resets_the_success_streak() -> None:
    gov = governor(1000, grow_after=2, growth=1.5)
    gov.record_oom(1000)
    gov.record_success(800)
    gov.record_oom(2000)  # an oversize item: the budget stays, the streak restarts
    gov.record_success(800)
    assert gov.frames == 800


def test_oversize_failure_lowers_the_budget_no_further_than_backoff_times_its_size() -> None:
    gov = governor(1000)
    gov.record_oom(1100)
    assert gov.frames == 880


def test_initial_budget_from_free_memory() -> None:
    options = GovernorOptions(memory_fraction=0.75)
    assert budget_from_memory(8_000 * MB, 1.5 * MB, options) == 4000
    assert budget_from_memory(8_000 * MB + 1, 1.5 * MB, options) == 4000


def test_initial_budget_is_at_least_the_floor() -> None:
    options = GovernorOptions(min_padded_frames=300)
    assert budget_from_memory(10 * MB, 1 * MB, options) == 300


def test_for_device_reads_free_memory_from_the_probe() -> None:
    probe = FakeProbe(free=3_000 * MB)
    gov = MemoryGovernor.for_device(GovernorOptions(memory_fraction=0.5), probe, 0.25 * MB)
    assert gov.budget.max_padded_frames == 6000
    assert gov.budget.max_batch_size == 64


def test_cpu_governor_uses_the_fixed_budget() -> None:
    gov = MemoryGovernor.for_cpu(GovernorOptions(cpu_padded_frames=3000))
    assert gov.budget.max_padded_frames == 3000
    assert gov.stats().free_bytes is None


def test_frame_cost_is_the_peak_above_the_allocation_before_warm_up() -> None:
    probe = FakeProbe(allocated=1_000 * MB)

    def warm_up() -> None:
        probe.peak = 1_600 * MB

    assert measure_frame_cost(probe, warm_up, 2000) == 300_000


def test_frame_cost_of_a_warm_up_that_allocates_nothing_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="warm-up run allocated no device memory"):
        measure_frame_cost(FakeProbe(), lambda: None, 2000)


def test_stats_count_batches_ooms_and_budget() -> None:
    lengths = [250, 240, 230, 220]
    gov = governor(1000)
    run_with_oom_recovery(lengths, FakeDevice(lengths, capacity=600), gov)
    assert gov.stats() == GovernorStats(
        batches_run=2,
        oom_events=1,
        failed_items=0,
        max_padded_frames=800,
        free_bytes=8_000 * MB,
        total_bytes=16_000 * MB,
    )


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"memory_fraction": 0.0}, r"memory_fraction must be in \(0, 1\], got 0.0"),
        ({"backoff": 1.0}, r"backoff must be in \(0, 1\), got 1.0"),
        ({"growth": 0.9}, r"growth must be at least 1, got 0.9"),
        ({"max_batch_size": 0}, r"max_batch_size must be a positive int, got 0"),
        (
            {"min_padded_frames": 5000},
            r"min_padded_frames \(5000\) must not exceed cpu_padded_frames \(1000\)",
        ),
    ],
)
def test_options_validation(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        GovernorOptions(**options)


def test_cuda_probe_rejects_a_cpu_device() -> None:
    with pytest.raises(ValueError, match="CudaMemoryProbe needs a CUDA device, got cpu"):
        CudaMemoryProbe("cpu")


def test_native_memory_bounds_are_defaults_the_user_can_override(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import os

    from zhuanxie.governor import ONEDNN_CACHE_ENTRIES, bound_native_memory

    monkeypatch.delenv("ONEDNN_PRIMITIVE_CACHE_CAPACITY", raising=False)
    bound_native_memory()
    assert os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] == str(ONEDNN_CACHE_ENTRIES)
    monkeypatch.setenv("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "1024")
    bound_native_memory()
    assert os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] == "1024"


def resident_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="needs Linux /proc")
def test_heap_trimmer_returns_freed_heap_pages_to_the_system() -> None:
    trimmer = HeapTrimmer(interval_s=0.0)
    # 200 MB in pieces below glibc's mmap threshold, so they come from the heap; the last one
    # stays, pinning the heap's top, so freeing the rest leaves holes glibc would keep.
    pieces = [bytearray(b"x" * 100_000) for _ in range(2000)]
    keep = pieces[-1]
    del pieces
    before = resident_mib()
    assert trimmer()
    assert before - resident_mib() > 150
    assert len(keep) == 100_000


def test_heap_trimmer_trims_at_most_once_per_interval() -> None:
    trimmer = HeapTrimmer(interval_s=60.0)
    assert [trimmer(), trimmer()] == [True, False]
