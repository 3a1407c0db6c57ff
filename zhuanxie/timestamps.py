"""CIF fires -> per-token time spans, as funasr's `ts_prediction_lfr6_standard`.

A CIF predictor integrates per-frame weights (alphas) and "fires" once per token. Paraformer's
timestamp rule (funasr `utils/timestamp_tools.py`): token i lasts from fire i to fire i+1, the
extra last fire belonging to `</s>`. SeACo / BiCif models predict 3x upsampled timestamp alphas
(one frame = 20 ms); plain Paraformer uses its CIF alphas directly (60 ms frames).

funasr loops over frames in Python to find fires; `cif_fires` finds the same frames with prefix
sums. funasr 1.4.16 passes plain Paraformer's peaks and alphas to the span rule swapped; we follow
the fix of FunASR PR #3716 (alphas first).
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

import torch
from torch import Tensor

Span = tuple[float, float]

FIRE_THRESHOLD = 1.0 - 1e-4
"""Threshold funasr's timestamp path fires at (CIF threshold 1.0 minus 1e-4)."""

LFR_FRAME_S = 0.06
"""Seconds per LFR frame: 6 stacked fbank frames at a 10 ms shift."""

SEACO_UPSAMPLE_RATE = 3
"""SeACo / BiCif timestamp alphas have 3 frames per LFR frame."""

_SHIFT_FRAMES = -1.5  # funasr's force_time_shift: fires lag token onsets by 1.5 frames
_EDGE_FRAMES = 5  # START_END_THRESHOLD: a longer stretch after the last fire is silence
_MAX_TOKEN_FRAMES = 12  # MAX_TOKEN_DURATION: longer gaps between fires end in silence


def cif_fires(alphas: Tensor, lengths: Tensor, threshold: float) -> Tensor:
    """Frames where funasr's `cif_wo_hidden(alphas, threshold)` fires, without a loop over T.

    funasr's loop: `integrate += alpha`; fire when `integrate >= threshold`, then subtract
    `threshold` once. With S_t the prefix sum, G_t = floor(S_t / threshold) and F_t the fires up to
    t, a fire happens when F_{t-1} < G_t, so F_t = min(F_{t-1} + 1, G_t) = t + min(1, min_{s<=t}
    (G_s - s)). That is a cumulative minimum, and it keeps the loop's at-most-one-fire-per-frame
    cap when a frame's alpha exceeds the threshold. Requires alphas >= 0 (CIF alphas are ReLU
    outputs). A NaN stops all later fires, as in the loop.

    Exactness: funasr integrates in float32 and compares with float32(threshold); we use that
    threshold and a float64 prefix sum. They can disagree only when a prefix sum lies within float32
    rounding (about 1e-6 over a few thousand frames) of a multiple of the threshold.

    alphas: (B, T) weights; lengths: (B,) valid frames. Returns (B, T) bool, False past lengths.
    """
    _, t = alphas.shape
    theta = torch.tensor(threshold, dtype=torch.float32).item()
    sums = torch.cumsum(alphas.to(torch.float64), dim=1)  # (B, T)
    # Clamping at T + 1 changes nothing (F_t <= t + 1) but keeps the int conversion in range.
    crossings = torch.nan_to_num(torch.floor(sums / theta), nan=t + 1, posinf=t + 1, neginf=-1)
    crossings = crossings.clamp(max=t + 1).to(torch.int64)
    steps = torch.arange(t, device=alphas.device)
    fired = steps + torch.cummin(crossings - steps, dim=1).values.clamp(max=1)  # F_t, (B, T)
    new = fired > torch.nn.functional.pad(fired[:, :-1], (1, 0))
    valid = steps < lengths.to(alphas.device)[:, None]
    return new & valid & ~torch.isnan(sums)


def paraformer_fires(alphas: Tensor, lengths: Tensor) -> Tensor:
    """Frames funasr's plain-Paraformer timestamps treat as fires: `cif_peak >= 1 - 1e-4`.

    `cif_peak` is CifPredictorV2's vectorised trajectory (`cif_wo_hidden_v1`): 1 where the float64
    prefix sum, rounded to float32, passes an integer, plus that sum's fractional part. So a frame
    whose prefix sum ends in .9999 or more counts as a fire too, though CIF did not fire there;
    `token_spans` then falls back to renormalised alphas. Computed with the same float32 operations.

    alphas: (B, T) CifPredictorV2 alphas including the tail weight; lengths: (B,) valid frames
    (encoder length + 1 for the tail frame). Returns (B, T) bool.
    """
    sums = torch.cumsum(alphas, dim=1, dtype=torch.float64).to(torch.float32)
    whole = torch.floor(sums)
    crossed = (whole - torch.nn.functional.pad(whole[:, :-1], (1, 0))) > 0
    peaks = crossed.to(torch.float32) + sums - whole
    steps = torch.arange(alphas.shape[1], device=alphas.device)
    return (peaks >= FIRE_THRESHOLD) & (steps < lengths.to(alphas.device)[:, None])


def token_spans(alphas: Tensor, fires: Tensor, num_tokens: int, frame_s: float) -> list[Span]:
    """Spans in seconds of one utterance's `num_tokens` tokens (`</s>` excluded).

    alphas, fires: (T,) the timestamp alphas and their fire frames, trimmed to the valid frames.
    frame_s: seconds per alpha frame, `LFR_FRAME_S / upsample_rate` (funasr's TIME_RATE, the same
    double): 0.02 for SeACo / BiCif, 0.06 for plain Paraformer.

    funasr's rules: each fire is shifted 1.5 frames earlier; token i spans fire i to fire i+1, cut
    to 12 frames; the last token ends at the end of input, or halfway from the last fire to it when
    that is more than 5 frames away. If there are not num_tokens + 1 fires, the alphas are rescaled
    to sum to num_tokens + 1 and the fires recomputed. Times are truncated to whole milliseconds
    as funasr does, so `round(t * 1000)` is funasr's integer.

    Returns fewer spans than tokens only where funasr does too (fewer fires even after the
    fallback); where funasr raises (no fire at all, or more fires than tokens + 1), it returns no
    spans, or spans for the first num_tokens + 1 fires.
    """
    if alphas.dim() != 1 or fires.shape != alphas.shape:
        raise ValueError(
            f"alphas and fires must be 1-D and the same shape, got {tuple(alphas.shape)} "
            f"and {tuple(fires.shape)}"
        )
    if fires.dtype != torch.bool:
        raise ValueError(f"fires must be a bool mask (cif_fires), got {fires.dtype}")
    if num_tokens == 0:
        return []
    frames: list[int] = fires.nonzero().flatten().tolist()
    if len(frames) != num_tokens + 1:
        # Same float ops as funasr: `alphas /= alphas.sum() / (n + 1)`.
        rescaled = alphas / (alphas.sum() / (num_tokens + 1))
        length = torch.tensor([alphas.shape[0]])
        refired = cif_fires(rescaled[None], length, FIRE_THRESHOLD)[0]
        frames = refired.nonzero().flatten().tolist()
    return _spans(frames[: num_tokens + 1], alphas.shape[0], frame_s)


def upsampled_token_spans(
    us_alphas: Tensor, us_lengths: Tensor, num_tokens: Sequence[int]
) -> list[list[Span]]:
    """Token spans for a SeACo / BiCif batch.

    us_alphas: (B, 3T') upsampled timestamp alphas already rescaled to sum to each item's CIF token
    count (`</s>` included), as `CifPredictorV3.get_upsample_timestamp` does; us_lengths: (B,)
    valid frames (3 x encoder lengths); num_tokens: tokens per item after dropping `<blank>`, `<s>`
    and `</s>`. Returns one list of spans (seconds) per item.
    """
    fires = cif_fires(us_alphas, us_lengths, FIRE_THRESHOLD)
    return _batch_spans(us_alphas, us_lengths, fires, num_tokens, LFR_FRAME_S / SEACO_UPSAMPLE_RATE)


def paraformer_token_spans(
    alphas: Tensor, lengths: Tensor, num_tokens: Sequence[int]
) -> list[list[Span]]:
    """Token spans for a plain Paraformer batch (the PR #3716 argument order).

    alphas: (B, T'+1) CifPredictorV2 alphas with the tail weight; lengths: (B,) encoder lengths + 1;
    num_tokens: tokens per item after dropping `<blank>`, `<s>` and `</s>`.
    """
    fires = paraformer_fires(alphas, lengths)
    return _batch_spans(alphas, lengths, fires, num_tokens, LFR_FRAME_S)


def _batch_spans(
    alphas: Tensor, lengths: Tensor, fires: Tensor, num_tokens: Sequence[int], frame_s: float
) -> list[list[Span]]:
    if len(num_tokens) != alphas.shape[0]:
        raise ValueError(f"got {len(num_tokens)} token counts for a batch of {alphas.shape[0]}")
    alphas, fires = alphas.detach().cpu(), fires.cpu()
    return [
        token_spans(alphas[b, :length], fires[b, :length], n, frame_s)
        for b, (length, n) in enumerate(zip(lengths.tolist(), num_tokens))
    ]


def _spans(fire_frames: list[int], num_frames: int, frame_s: float) -> list[Span]:
    """funasr's span rule on fire frame indices; float operations in funasr's order."""
    if len(fire_frames) < 2:
        return []
    places = [f + _SHIFT_FRAMES for f in fire_frames]
    # [start, end, is_token] in frames. funasr's leading silence before the first fire is left
    # out: it never changes a token's span.
    segments: list[tuple[float, float, bool]] = []
    for a, b in pairwise(places):
        if b - a <= _MAX_TOKEN_FRAMES:
            segments.append((a, b, True))
        else:
            cut = a + _MAX_TOKEN_FRAMES
            segments += [(a, cut, True), (cut, b, False)]
    # The tail rule moves the end of the last segment, which may be the silence after a cut.
    last = places[-1]
    tail_end: float = num_frames
    if num_frames - last > _EDGE_FRAMES:
        tail_end = (num_frames + last) * 0.5
    start, _, is_token = segments[-1]
    segments[-1] = (start, tail_end, is_token)
    return [(_seconds(a, frame_s), _seconds(b, frame_s)) for a, b, token in segments if token]


def _seconds(frames: float, frame_s: float) -> float:
    # funasr reports int(seconds * 1000); keep that truncation, then give seconds back.
    return int(frames * frame_s * 1000) / 1000
