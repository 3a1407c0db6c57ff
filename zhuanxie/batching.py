"""Batch planning: item lengths and a budget in, groups of item indices out (policy, no I/O).

A batch costs what its padded tensor costs: B items padded to the longest, B × T'_max LFR frames
(60 ms each). Sorting by length and cutting the sorted order into contiguous runs keeps items of
similar length together, so little of that tensor is padding.

The order is longest first. The first batch then holds the longest items, where attention's
T'^2 term peaks, so an out-of-memory error shows on the first batch rather than an hour in.

Greedy packing along that order opens a batch with its longest item and adds items while the
budget allows. Two facts follow (tests check both):

- No contiguous split of the sorted order uses fewer batches: a greedy batch starts at the same
  item as a rival's batch or at a later, shorter one, so it can hold as many items or more, and
  it ends at or after the rival's.
- Padding is bounded however many items there are. Batch k, padded to f_k, holds at most
  F / f_k items (F = max_padded_frames; a lone oversize item has no padding), each shorter than
  f_k by at most f_k - f_{k+1}; summing F × (1 - f_{k+1} / f_k) over the batches, the padding
  frames total at most F × ln(longest / shortest), and at most max_batch_size × (longest -
  shortest). With F = 2000 and segments of 1 to 30 s that is about 6,800 frames (7 minutes
  of audio) per plan, however many hours the plan holds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class BatchShape:
    """The padded extent of a batch being filled: how many items, and the longest (LFR frames)."""

    size: int = 0
    longest: int = 0

    @property
    def padded_frames(self) -> int:
        """Frames in the padded (B, T'_max) tensor: B × T'_max."""
        return self.size * self.longest

    def add(self, length: int) -> BatchShape:
        """This batch with one more item of ``length`` frames."""
        return BatchShape(self.size + 1, max(self.longest, length))


@dataclass(frozen=True)
class BatchBudget:
    """Limits on one batch; memory and compute grow with its padded frames."""

    max_padded_frames: int
    """Most LFR frames in the padded batch, B × T'_max (padding included)."""
    max_batch_size: int
    """Most items in one batch, however short they are."""
    min_length_ratio: float = 0.0
    """An item joins a batch only if it is at least this share of the batch's longest item, so
    padding stays under 1 - ratio of the batch. Padding is pure waste where batching buys
    little (a CPU whose matmuls are compute-bound at batch 1); 0 disables the rule."""

    def __post_init__(self) -> None:
        for name in ("max_padded_frames", "max_batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"BatchBudget.{name} must be a positive int, got {value!r}")
        if not 0.0 <= self.min_length_ratio <= 1.0:
            raise ValueError(
                f"BatchBudget.min_length_ratio must be in [0, 1], got {self.min_length_ratio!r}"
            )

    def can_add(self, shape: BatchShape, length: int) -> bool:
        """Whether an item of ``length`` frames may join a batch of ``shape``.

        An empty batch accepts any item, even one longer than the budget: such an item runs
        alone rather than being dropped.
        """
        if shape.size == 0:
            return True
        if min(length, shape.longest) < self.min_length_ratio * max(length, shape.longest):
            return False
        grown = shape.add(length)
        return grown.size <= self.max_batch_size and grown.padded_frames <= self.max_padded_frames

    def is_full(self, shape: BatchShape) -> bool:
        """Whether no further item could join: not even one no longer than the batch's longest."""
        return shape.size > 0 and not self.can_add(shape, shape.longest)


def length_order(lengths: Sequence[int]) -> list[int]:
    """Indices of ``lengths`` longest first; equal lengths keep their input order."""
    for i, length in enumerate(lengths):
        if isinstance(length, bool) or not isinstance(length, int) or length < 0:
            raise ValueError(f"item {i}: length must be a non-negative int, got {length!r}")
    return sorted(range(len(lengths)), key=lambda i: -lengths[i])


def take_batch(lengths: Sequence[int], order: Sequence[int], budget: BatchBudget) -> BatchShape:
    """The greedy batch at the head of ``order``: as many leading items as the budget allows.

    ``order`` must be longest first, so the batch's first item is its longest. Returns the
    batch's shape; its items are ``order[: shape.size]``.
    """
    shape = BatchShape()
    for i in order:
        if not budget.can_add(shape, lengths[i]):
            break
        shape = shape.add(lengths[i])
    return shape


def plan_batches(lengths: Sequence[int], budget: BatchBudget) -> list[list[int]]:
    """Item lengths (LFR frames) -> batches of item indices, longest first.

    Every index appears exactly once. Each batch is sorted longest first, and each batch's
    longest item is no longer than the previous batch's shortest. Each batch has at most
    ``budget.max_batch_size`` items and at most ``budget.max_padded_frames`` padded frames,
    except a batch of one item longer than the budget on its own.
    """
    order = length_order(lengths)
    batches: list[list[int]] = []
    while order:
        size = take_batch(lengths, order, budget).size
        batches.append(order[:size])
        order = order[size:]
    return batches


def next_batch(
    pool_lengths: Sequence[int], budget: BatchBudget, *, flush: bool
) -> list[int] | None:
    """The batch to run next from a pool of ready items, or None to wait for more items.

    The candidate is the greedy batch of the pool's longest items, as ``plan_batches`` would
    form first. It is returned when it is full — no further item, of any length, could join it,
    because it holds ``max_batch_size`` items or one more item padded to its longest would pass
    ``max_padded_frames`` — since waiting cannot make a full batch any larger. Otherwise it is
    returned only if ``flush``, which the caller sets when no more items are coming or the pool
    must not grow (it is at capacity, or a result is overdue). An empty pool gives None.

    Returns indices into ``pool_lengths``, longest first.
    """
    order = length_order(pool_lengths)
    shape = take_batch(pool_lengths, order, budget)
    if shape.size == 0 or not (flush or budget.is_full(shape)):
        return None
    return order[: shape.size]


def padded_frames(lengths: Sequence[int], batch: Sequence[int]) -> int:
    """Padded frames of the batch of ``batch`` indices into ``lengths``: B × T'_max."""
    return len(batch) * max((lengths[i] for i in batch), default=0)
