"""An item's result never depends on which other items share its batch."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from zhuanxie.decoding import HOTWORD_FILTER, filter_hotwords
from zhuanxie.recognizer import Recognizer, load_model
from zhuanxie.result import Transcript


def waves(count: int, seed: int = 0) -> list[np.ndarray]:
    """Speech-like noise bursts of varied lengths (0.4 s to 9 s)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        n = int(rng.uniform(0.4, 9.0) * 16000)
        envelope = np.abs(np.sin(np.arange(n) / 16000 * 2 * np.pi * rng.uniform(2, 5)))
        out.append((rng.normal(0, 0.2, n) * envelope).astype(np.float32))
    return out


def key(t: Transcript) -> tuple[str, list[tuple[float, float]], tuple[int, ...]]:
    ids = t.segments[0].token_ids if t.segments else ()
    return t.text, [(x.start, x.end) for x in t.tokens], ids


@pytest.mark.parametrize(
    "arch", ["paraformer-tiny", "bicif-paraformer-tiny", "seaco-paraformer-tiny"]
)
def test_results_do_not_depend_on_batch_composition(
    arch: str, tiny_model_dir: Callable[..., Path]
) -> None:
    recognizer = Recognizer(load_model(tiny_model_dir(arch)))
    inputs = waves(8)
    alone = [key(recognizer.transcribe(w)) for w in inputs]
    assert [key(t) for t in recognizer.transcribe_batch(inputs)] == alone
    reverse = recognizer.transcribe_batch(inputs[::-1])[::-1]
    assert [key(t) for t in reverse] == alone
    pairs = [recognizer.transcribe_batch([inputs[i], inputs[7 - i]])[0] for i in range(8)]
    assert [key(t) for t in pairs] == alone


def test_mixed_hotword_lists_in_one_batch_equal_each_alone(
    tiny_model_dir: Callable[..., Path],
) -> None:
    path = tiny_model_dir("seaco-paraformer-tiny")
    recognizer = Recognizer(load_model(path))
    chars = [t for t in recognizer.model.tokens.tokens if "\u4e00" <= t <= "\u9fff"]
    many = ["".join(chars[i : i + 2]) for i in range(0, 140, 2)]  # 70: past the ASF filter
    lists = [many[:3], [], many, many[10:20], [], many[:55], ["你好"], many[5:8]]
    inputs = waves(8, seed=1)
    alone = [key(recognizer.transcribe(w, hotwords=h)) for w, h in zip(inputs, lists)]
    assert [key(t) for t in recognizer.transcribe_batch(inputs, hotwords=lists)] == alone


def test_hotword_filter_keeps_the_top_scores_and_doubles_the_no_bias_entry() -> None:
    k = HOTWORD_FILTER + 6
    member = torch.ones(1, k, dtype=torch.bool)
    scores = torch.arange(k, dtype=torch.float32)[None]  # entry k-1 scores highest
    counts = filter_hotwords(scores, member)
    kept = counts[0].nonzero().flatten().tolist()
    assert kept == [0, *range(k - HOTWORD_FILTER, k)]
    assert counts[0, 0] == 1  # not in the top 50 here: appended once
    scores[0, 0] = 1e9
    assert filter_hotwords(scores, member)[0, 0] == 2  # in the top 50 and appended again


def test_small_hotword_lists_are_not_filtered() -> None:
    member = torch.zeros(2, 60, dtype=torch.bool)
    member[0, :HOTWORD_FILTER] = True
    member[1, :] = True
    counts = filter_hotwords(torch.randn(2, 60), member)
    assert counts[0].tolist() == member[0].float().tolist()
    assert int(counts[1].sum()) == HOTWORD_FILTER + 1
