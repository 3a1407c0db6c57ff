"""Batch planning: invariants over random lengths (hypothesis), and exact small cases."""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import cache

import pytest
from hypothesis import given
from hypothesis import strategies as st

from zhuanxie.batching import (
    BatchBudget,
    BatchShape,
    next_batch,
    padded_frames,
    plan_batches,
)

lengths_st = st.lists(st.integers(min_value=0, max_value=600), max_size=80)
budgets = st.builds(
    BatchBudget,
    max_padded_frames=st.integers(min_value=1, max_value=3000),
    max_batch_size=st.integers(min_value=1, max_value=40),
)


def within_budget(lengths: Sequence[int], batch: Sequence[int], budget: BatchBudget) -> bool:
    return (
        len(batch) <= budget.max_batch_size
        and padded_frames(lengths, batch) <= budget.max_padded_frames
    )


def contiguous_splits(lengths: Sequence[int], budget: BatchBudget) -> tuple[int, int]:
    """Over all splits of the sorted order into batches within budget (oversize items alone):
    (fewest batches, fewest padded frames)."""
    ordered = sorted(lengths, reverse=True)

    @cache
    def best(start: int) -> tuple[int, int]:
        if start == len(ordered):
            return 0, 0
        options = []
        for end in range(start + 1, len(ordered) + 1):
            run = ordered[start:end]
            if end - start > 1 and not within_budget(run, range(len(run)), budget):
                break
            batches, frames = best(end)
            options.append((batches + 1, frames + len(run) * run[0]))
        return min(o[0] for o in options), min(o[1] for o in options)

    return best(0)


@given(lengths_st, budgets)
def test_every_index_appears_exactly_once(lengths: list[int], budget: BatchBudget) -> None:
    batches = plan_batches(lengths, budget)
    assert sorted(i for batch in batches for i in batch) == list(range(len(lengths)))
    assert all(batches)


@given(lengths_st, budgets)
def test_batches_respect_budget_unless_single_oversize(
    lengths: list[int], budget: BatchBudget
) -> None:
    for batch in plan_batches(lengths, budget):
        assert within_budget(lengths, batch, budget) or len(batch) == 1


@given(lengths_st, budgets)
def test_batches_are_sorted_longest_first(lengths: list[int], budget: BatchBudget) -> None:
    flat = [lengths[i] for batch in plan_batches(lengths, budget) for i in batch]
    assert flat == sorted(lengths, reverse=True)


@given(lengths_st, budgets)
def test_plan_is_deterministic(lengths: list[int], budget: BatchBudget) -> None:
    assert plan_batches(lengths, budget) == plan_batches(list(lengths), budget)


@given(lengths_st, budgets)
def test_replanning_a_batch_keeps_it_whole(lengths: list[int], budget: BatchBudget) -> None:
    for batch in plan_batches(lengths, budget):
        assert plan_batches([lengths[i] for i in batch], budget) == [list(range(len(batch)))]


@given(st.lists(st.integers(min_value=1, max_value=600), min_size=1, max_size=80), budgets)
def test_padding_is_bounded_by_budget_times_log_length_spread(
    lengths: list[int], budget: BatchBudget
) -> None:
    padding = sum(padded_frames(lengths, b) for b in plan_batches(lengths, budget)) - sum(lengths)
    spread = max(lengths) / min(lengths)
    assert padding <= budget.max_padded_frames * math.log(spread) + 1e-9
    assert padding <= budget.max_batch_size * (max(lengths) - min(lengths))


@given(st.lists(st.integers(min_value=1, max_value=60), max_size=12), budgets)
def test_no_contiguous_split_has_fewer_batches(lengths: list[int], budget: BatchBudget) -> None:
    fewest, _ = contiguous_splits(lengths, budget)
    assert len(plan_batches(lengths, budget)) == fewest


@given(
    st.lists(st.integers(min_value=50, max_value=100), min_size=1, max_size=12),
    st.integers(min_value=100, max_value=1000),
)
def test_padding_within_twice_optimal_when_lengths_within_twice(
    lengths: list[int], max_padded_frames: int
) -> None:
    budget = BatchBudget(max_padded_frames, 8)
    _, optimal = contiguous_splits(lengths, budget)
    ours = sum(padded_frames(lengths, b) for b in plan_batches(lengths, budget))
    assert ours <= 2 * optimal


def test_equal_lengths_pack_without_padding() -> None:
    batches = plan_batches([50] * 10, BatchBudget(200, 8))
    assert batches == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def test_greedy_packing_example() -> None:
    lengths = [10, 300, 120, 290, 100, 20]
    assert plan_batches(lengths, BatchBudget(600, 3)) == [[1, 3], [2, 4, 5], [0]]


def test_oversize_item_runs_alone() -> None:
    assert plan_batches([50, 900, 40], BatchBudget(500, 8)) == [[1], [0, 2]]


def test_batch_size_limit_applies_to_short_items() -> None:
    assert plan_batches([1] * 5, BatchBudget(1000, 2)) == [[0, 1], [2, 3], [4]]


def test_equal_lengths_keep_input_order() -> None:
    assert plan_batches([7, 9, 7, 9], BatchBudget(100, 8)) == [[1, 3, 0, 2]]


def test_empty_input_gives_no_batches() -> None:
    assert plan_batches([], BatchBudget(100, 8)) == []


def test_negative_length_is_rejected_with_its_index() -> None:
    with pytest.raises(ValueError, match=r"item 1: length must be a non-negative int, got -3"):
        plan_batches([4, -3], BatchBudget(100, 8))


@pytest.mark.parametrize(
    ("frames", "size", "message"),
    [
        (0, 8, r"BatchBudget.max_padded_frames must be a positive int, got 0"),
        (100, 0, r"BatchBudget.max_batch_size must be a positive int, got 0"),
        (100.0, 8, r"BatchBudget.max_padded_frames must be a positive int, got 100.0"),
    ],
)
def test_budget_validation(frames: int, size: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        BatchBudget(frames, size)


def test_can_add_checks_padded_frames_after_adding() -> None:
    budget = BatchBudget(300, 8)
    shape = BatchShape().add(100).add(80)
    assert budget.can_add(shape, 100)
    assert not budget.can_add(shape, 101)  # 3 × 101 = 303 padded frames


def test_empty_batch_accepts_an_oversize_item() -> None:
    assert BatchBudget(10, 1).can_add(BatchShape(), 500)


def test_full_batch_takes_no_item_of_any_length() -> None:
    budget = BatchBudget(300, 8)
    assert budget.is_full(BatchShape(3, 100))
    assert not budget.is_full(BatchShape(2, 100))
    assert budget.is_full(BatchShape(8, 1))
    assert not budget.is_full(BatchShape())


# next_batch: the streaming form


def test_next_batch_waits_while_the_pool_cannot_fill_a_batch() -> None:
    assert next_batch([100, 50], BatchBudget(400, 8), flush=False) is None


def test_next_batch_takes_a_batch_full_by_frames() -> None:
    # The two longest fill 2 × 150 = 300; a third item would pad to 450 > 400.
    assert next_batch([100, 150, 20, 140], BatchBudget(400, 8), flush=False) == [1, 3]


def test_next_batch_takes_a_batch_full_by_size() -> None:
    assert next_batch([5, 6, 7], BatchBudget(1000, 2), flush=False) == [2, 1]


def test_next_batch_takes_an_exactly_full_pool() -> None:
    assert next_batch([100, 100, 100, 100], BatchBudget(400, 8), flush=False) == [0, 1, 2, 3]


def test_next_batch_takes_an_oversize_item_at_once() -> None:
    assert next_batch([30, 900], BatchBudget(400, 8), flush=False) == [1]


def test_next_batch_flush_takes_a_partial_batch() -> None:
    assert next_batch([100, 50], BatchBudget(400, 8), flush=True) == [0, 1]


def test_next_batch_on_an_empty_pool_is_none_even_on_flush() -> None:
    assert next_batch([], BatchBudget(400, 8), flush=True) is None


@given(lengths_st, budgets)
def test_next_batch_on_flush_is_the_first_planned_batch(
    lengths: list[int], budget: BatchBudget
) -> None:
    planned = plan_batches(lengths, budget)
    assert next_batch(lengths, budget, flush=True) == (planned[0] if planned else None)


@given(lengths_st, budgets)
def test_next_batch_without_flush_returns_only_full_batches(
    lengths: list[int], budget: BatchBudget
) -> None:
    batch = next_batch(lengths, budget, flush=False)
    if batch is not None:
        shape = BatchShape(len(batch), max(lengths[i] for i in batch))
        assert budget.is_full(shape)


@given(lengths_st, budgets)
def test_draining_the_pool_with_next_batch_reproduces_the_plan(
    lengths: list[int], budget: BatchBudget
) -> None:
    pool = list(range(len(lengths)))
    drained = []
    while (batch := next_batch([lengths[i] for i in pool], budget, flush=True)) is not None:
        drained.append([pool[j] for j in batch])
        pool = [i for i in pool if i not in drained[-1]]
    assert drained == plan_batches(lengths, budget)


def test_min_length_ratio_keeps_short_items_out_of_long_batches() -> None:
    budget = BatchBudget(max_padded_frames=10_000, max_batch_size=64, min_length_ratio=0.75)
    lengths = [200, 190, 160, 150, 100, 80, 30]
    batches = plan_batches(lengths, budget)
    assert batches == [[0, 1, 2, 3], [4, 5], [6]]
    for batch in batches:
        assert min(lengths[i] for i in batch) >= 0.75 * max(lengths[i] for i in batch)


def test_min_length_ratio_is_validated() -> None:
    with pytest.raises(ValueError, match="min_length_ratio must be in"):
        BatchBudget(100, 4, min_length_ratio=1.5)
