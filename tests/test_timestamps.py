"""CIF fires and token spans: funasr parity on generated alphas, and the span rules by hand."""

from __future__ import annotations

from types import ModuleType

import pytest
import torch
from torch import Tensor

from zhuanxie.timestamps import (
    FIRE_THRESHOLD,
    LFR_FRAME_S,
    Span,
    cif_fires,
    paraformer_fires,
    paraformer_token_spans,
    token_spans,
    upsampled_token_spans,
)

SEACO_FRAME_S = LFR_FRAME_S / 3


@pytest.fixture(scope="module")
def ref() -> ModuleType:
    """funasr's timestamp helpers; skips the parity tests where funasr is missing."""
    pytest.importorskip("funasr", reason="funasr (the reference) is not installed")
    from funasr.models.bicif_paraformer import cif_predictor as v3
    from funasr.models.paraformer import cif_predictor as v2
    from funasr.utils import timestamp_tools

    module = ModuleType("ref")
    module.cif_wo_hidden = v3.cif_wo_hidden  # type: ignore[attr-defined]
    module.cif_wo_hidden_v1 = v2.cif_wo_hidden_v1  # type: ignore[attr-defined]
    module.ts_prediction = timestamp_tools.ts_prediction_lfr6_standard  # type: ignore[attr-defined]
    return module


def ms(spans: list[Span]) -> list[list[int]]:
    return [[round(s * 1000), round(e * 1000)] for s, e in spans]


def ref_ms(
    ref: ModuleType, alphas: Tensor, peaks: Tensor, n: int, upsample_rate: int
) -> list[list[int]]:
    # ts_prediction rescales its alphas in place in the fallback: give it copies.
    tokens = ["x"] * n
    out = ref.ts_prediction(alphas.clone(), peaks.clone(), tokens, upsample_rate=upsample_rate)
    return out[1]  # type: ignore[no-any-return]


def speech_like_alphas(gen: torch.Generator, frames: int, scale: float) -> Tensor:
    """Alphas shaped like a predictor's: bursts of weight with silent stretches, never all zero."""
    while True:
        logits = torch.randn(frames, generator=gen) * 2.5
        quiet = torch.rand(frames // 40 + 1, generator=gen) < 0.3
        logits -= 8 * quiet.repeat_interleave(40)[:frames]
        alphas = torch.relu(torch.sigmoid(logits) * scale - 0.01)
        if alphas.sum() > 0:
            return alphas


def seaco_alphas(gen: torch.Generator, frames: int) -> tuple[Tensor, int]:
    """Upsampled timestamp alphas rescaled to an integer sum, as get_upsample_timestamp does."""
    alphas = speech_like_alphas(gen, frames, 0.25)
    count = max(2, round(float(alphas.sum())))  # tokens + </s>
    return alphas * (torch.tensor(float(count)) / alphas.sum()), count


def paraformer_alphas(gen: torch.Generator, frames: int) -> tuple[Tensor, int]:
    """CifPredictorV2 alphas with the 0.45 tail weight appended; the token count excludes </s>."""
    alphas = torch.cat([speech_like_alphas(gen, frames, 1.0), torch.tensor([0.45])])
    return alphas, max(1, round(float(alphas.sum())) - 1)


def test_cif_fires_match_funasr_loop(ref: ModuleType) -> None:
    gen = torch.Generator().manual_seed(1)
    for trial in range(12):
        alphas = torch.relu(torch.sigmoid(torch.randn(6, 700, generator=gen) * 3) * 0.25 - 0.01)
        if trial % 3 == 0:
            # Frames above the threshold: the loop fires at most once per frame.
            alphas *= torch.rand(6, 700, generator=gen) * 12
        lengths = torch.randint(1, 701, (6,), generator=gen)
        valid = torch.arange(700)[None] < lengths[:, None]
        alphas *= valid
        expected = (ref.cif_wo_hidden(alphas, FIRE_THRESHOLD) >= FIRE_THRESHOLD) & valid
        assert torch.equal(cif_fires(alphas, lengths, FIRE_THRESHOLD), expected)


def test_cif_fires_threshold_one_matches_funasr_loop(ref: ModuleType) -> None:
    gen = torch.Generator().manual_seed(2)
    alphas = torch.rand(4, 500, generator=gen) * 0.6
    lengths = torch.tensor([500, 499, 3, 250])
    valid = torch.arange(500)[None] < lengths[:, None]
    expected = (ref.cif_wo_hidden(alphas, 1.0) >= 1.0) & valid
    assert torch.equal(cif_fires(alphas, lengths, 1.0), expected)


def test_cif_fires_caps_one_fire_per_frame() -> None:
    # 2.5 at once: the loop fires now and on the next frame, keeping the rest pending.
    alphas = torch.tensor([[2.5, 0.0, 0.0, 0.0]])
    fires = cif_fires(alphas, torch.tensor([4]), 1.0)
    assert fires.tolist() == [[True, True, False, False]]


def test_cif_fires_stop_at_nan(ref: ModuleType) -> None:
    alphas = torch.tensor([[0.6, 0.6, float("nan"), 0.9, 1.5]])
    expected = ref.cif_wo_hidden(alphas, FIRE_THRESHOLD) >= FIRE_THRESHOLD
    fires = cif_fires(alphas, torch.tensor([5]), FIRE_THRESHOLD)
    assert torch.equal(fires, expected)
    assert fires.tolist() == [[False, True, False, False, False]]


def test_paraformer_fires_match_cif_peak_threshold(ref: ModuleType) -> None:
    gen = torch.Generator().manual_seed(3)
    alphas = torch.rand(5, 400, generator=gen) * 0.7
    lengths = torch.tensor([400, 300, 17, 1, 399])
    valid = torch.arange(400)[None] < lengths[:, None]
    expected = (ref.cif_wo_hidden_v1(alphas, 1.0) >= FIRE_THRESHOLD) & valid
    assert torch.equal(paraformer_fires(alphas, lengths), expected)


def test_paraformer_fires_count_fraction_above_threshold() -> None:
    # The sum reaches 0.99995 without crossing 1: not a CIF fire, but cif_peak >= 0.9999, on
    # every frame until the sum moves on.
    alphas = torch.tensor([[0.5, 0.49995, 0.0]])
    assert paraformer_fires(alphas, torch.tensor([3])).tolist() == [[False, True, True]]


def test_token_spans_match_funasr_when_fires_fit(ref: ModuleType) -> None:
    gen = torch.Generator().manual_seed(4)
    for _ in range(60):
        alphas, count = seaco_alphas(gen, int(torch.randint(30, 900, (1,), generator=gen)))
        peaks = ref.cif_wo_hidden(alphas[None], FIRE_THRESHOLD)[0]
        fires = cif_fires(alphas[None], torch.tensor([len(alphas)]), FIRE_THRESHOLD)[0]
        spans = token_spans(alphas, fires, count - 1, SEACO_FRAME_S)
        assert len(spans) == count - 1
        assert ms(spans) == ref_ms(ref, alphas, peaks, count - 1, 3)


def test_token_spans_match_funasr_fallback(ref: ModuleType) -> None:
    gen = torch.Generator().manual_seed(5)
    for i in range(60):
        alphas, count = seaco_alphas(gen, int(torch.randint(30, 900, (1,), generator=gen)))
        tokens = max(1, count - 1 + (i % 7) - 3)  # not count - 1: the fire count is off
        if tokens == count - 1:
            tokens += 1
        peaks = ref.cif_wo_hidden(alphas[None], FIRE_THRESHOLD)[0]
        fires = cif_fires(alphas[None], torch.tensor([len(alphas)]), FIRE_THRESHOLD)[0]
        spans = token_spans(alphas, fires, tokens, SEACO_FRAME_S)
        assert len(spans) == tokens
        assert ms(spans) == ref_ms(ref, alphas, peaks, tokens, 3)


def test_upsampled_token_spans_match_funasr_batch(ref: ModuleType) -> None:
    gen = torch.Generator().manual_seed(6)
    rows = [seaco_alphas(gen, 3 * n) for n in (200, 37, 120, 5, 199)]
    frames = max(len(a) for a, _ in rows)
    batch = torch.zeros(len(rows), frames)
    for b, (a, _) in enumerate(rows):
        batch[b, : len(a)] = a
    lengths = torch.tensor([len(a) for a, _ in rows])
    counts = [c - 1 for _, c in rows]
    counts[1] += 2  # one item takes the fallback
    # funasr runs cif_wo_hidden on the padded batch, then slices each item.
    peaks = ref.cif_wo_hidden(batch, FIRE_THRESHOLD)
    expected = [
        ref_ms(ref, batch[b, :n], peaks[b, :n], c, 3)
        for b, (n, c) in enumerate(zip(lengths.tolist(), counts))
    ]
    assert [ms(s) for s in upsampled_token_spans(batch, lengths, counts)] == expected


def test_paraformer_token_spans_follow_the_corrected_argument_order(ref: ModuleType) -> None:
    gen = torch.Generator().manual_seed(7)
    differs = 0
    for _ in range(20):
        alphas, tokens = paraformer_alphas(gen, int(torch.randint(20, 300, (1,), generator=gen)))
        peaks = ref.cif_wo_hidden_v1(alphas[None], 1.0)[0]
        corrected = ref_ms(ref, alphas, peaks, tokens, 1)  # FunASR PR #3716
        swapped = ref_ms(ref, peaks, alphas, tokens, 1)  # funasr 1.4.16 Paraformer.inference
        spans = paraformer_token_spans(alphas[None], torch.tensor([len(alphas)]), [tokens])[0]
        assert ms(spans) == corrected
        differs += swapped != corrected
    assert differs > 10


def test_token_spans_run_from_fire_to_fire_shifted_back_1_5_frames() -> None:
    fires = torch.zeros(20, dtype=torch.bool)
    fires[[10, 14, 18]] = True
    spans = token_spans(torch.zeros(20), fires, 2, SEACO_FRAME_S)
    # Fires at 8.5, 12.5, 16.5 frames of 20 ms; the last token ends at the input's end.
    assert spans == [(0.17, 0.25), (0.25, 0.4)]


def test_token_spans_cut_tokens_at_12_frames() -> None:
    fires = torch.zeros(36, dtype=torch.bool)
    fires[[2, 30, 34]] = True
    spans = token_spans(torch.zeros(36), fires, 2, SEACO_FRAME_S)
    assert spans == [(0.01, 0.25), (0.57, 0.72)]


def test_token_spans_end_last_token_halfway_to_a_long_tail() -> None:
    fires = torch.zeros(40, dtype=torch.bool)
    fires[[2, 6, 10]] = True
    spans = token_spans(torch.zeros(40), fires, 2, SEACO_FRAME_S)
    # Last fire at 8.5 is 31.5 frames from the end (> 5): the token ends at (40 + 8.5) / 2.
    assert spans == [(0.01, 0.09), (0.09, 0.485)]


def test_token_spans_tail_rule_moves_the_silence_after_a_cut() -> None:
    fires = torch.zeros(60, dtype=torch.bool)
    fires[[2, 30]] = True
    assert token_spans(torch.zeros(60), fires, 1, SEACO_FRAME_S) == [(0.01, 0.25)]


def test_token_spans_ignore_leading_silence(ref: ModuleType) -> None:
    alphas = torch.zeros(40)
    alphas[[20, 24, 28]] = 1.0
    peaks = ref.cif_wo_hidden(alphas[None], FIRE_THRESHOLD)[0]
    fires = cif_fires(alphas[None], torch.tensor([40]), FIRE_THRESHOLD)[0]
    spans = token_spans(alphas, fires, 2, SEACO_FRAME_S)
    # Last fire 26.5 is 13.5 frames from the end: the last token ends at (40 + 26.5) / 2.
    assert spans == [(0.37, 0.45), (0.45, 0.665)]
    assert ms(spans) == ref_ms(ref, alphas, peaks, 2, 3)


def test_token_spans_renormalise_alphas_when_fires_do_not_fit() -> None:
    alphas = torch.full((40,), 0.25)  # sums to 10; 3 tokens need 4 fires
    spans = token_spans(alphas, torch.zeros(40, dtype=torch.bool), 3, SEACO_FRAME_S)
    # Rescaled to 0.1 per frame: fires at frames 9, 19, 29, 39.
    assert spans == [(0.15, 0.35), (0.35, 0.55), (0.55, 0.8)]


def test_token_spans_truncate_to_whole_milliseconds() -> None:
    fires = torch.zeros(30, dtype=torch.bool)
    fires[[0, 9, 19]] = True
    spans = token_spans(torch.zeros(30), fires, 2, LFR_FRAME_S)
    # 7.5 frames x 60 ms is 449.99... ms: funasr truncates to 449. Fire 0 gives -90 ms.
    assert spans == [(-0.09, 0.449), (0.449, 1.425)]


def test_token_spans_empty_without_tokens() -> None:
    assert token_spans(torch.ones(10), torch.ones(10, dtype=torch.bool), 0, SEACO_FRAME_S) == []


def test_token_spans_empty_when_no_fire_is_possible() -> None:
    # funasr raises IndexError here; all-zero alphas cannot be renormalised.
    assert token_spans(torch.zeros(10), torch.zeros(10, dtype=torch.bool), 2, SEACO_FRAME_S) == []


def test_token_spans_reject_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="same shape"):
        token_spans(torch.zeros(10), torch.zeros(9, dtype=torch.bool), 1, SEACO_FRAME_S)


def test_token_spans_reject_float_peaks_as_fires() -> None:
    with pytest.raises(ValueError, match="fires must be a bool mask"):
        token_spans(torch.zeros(10), torch.zeros(10), 1, SEACO_FRAME_S)


def test_batch_spans_reject_wrong_token_count() -> None:
    with pytest.raises(ValueError, match="2 token counts for a batch of 1"):
        upsampled_token_spans(torch.ones(1, 9), torch.tensor([9]), [1, 2])
