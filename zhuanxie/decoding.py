"""Greedy decoding of a padded batch: features in, token ids and timestamp weights out.

Every stage runs once for the whole batch; nothing loops over frames, and the only per-item work
is slicing the results apart at the end. An item's result does not depend on what else shares
its batch: padding is masked everywhere the reference lets it leak (encoder output, CIF tail,
timestamp BLSTM, hotword filter).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from zhuanxie.model import Paraformer
from zhuanxie.timestamps import Span, paraformer_token_spans, upsampled_token_spans

# SeACo's attention-score hotword filter (ASF): with more entries than this, each item keeps
# only its best-scoring hotwords (the reference hard-codes nfilter=50).
HOTWORD_FILTER = 50


@dataclass(frozen=True)
class HotwordBatch:
    """Encoded hotwords for one batch: the union of every item's list, masked per item."""

    embeddings: Tensor  # (K, D); entry 0 is the "no bias" entry (the <s> token)
    member: Tensor  # (B, K) bool: entries each item may attend to; entry 0 is always True
    active: Tensor  # (B,) bool: items that asked for hotwords at all


@dataclass(frozen=True)
class Decoded:
    ids: list[int]  # token ids, <blank>/<s>/</s> removed
    spans: list[Span]  # (start, end) seconds per token; may be shorter, as in the reference


@torch.inference_mode()
def decode_batch(
    model: Paraformer, feats: Tensor, feat_lens: Tensor, hotwords: HotwordBatch | None = None
) -> list[Decoded]:
    """feats (B, T', 560) in the model's dtype, feat_lens (B,) -> one ``Decoded`` per item."""
    dims = model.dims
    enc = model.encode(feats, feat_lens)
    cif = model.predict(enc, feat_lens)
    token_lens = cif.token_lens
    if int(token_lens.max()) == 0:
        return [Decoded([], []) for _ in range(feats.shape[0])]
    logits, hidden = model.decode(enc, feat_lens, cif.embeds, token_lens)
    ids = logits.argmax(-1)
    if hotwords is not None and dims.seaco is not None:
        ids = apply_hotwords(model, cif.embeds, hidden, token_lens, ids, hotwords)
    special = {dims.blank_id, dims.sos_id, dims.eos_id}
    ids_cpu, lens_cpu = ids.cpu(), token_lens.cpu()
    content = [
        [i for i in ids_cpu[b, : lens_cpu[b]].tolist() if i not in special]
        for b in range(ids.shape[0])
    ]
    counts = [len(c) for c in content]
    if dims.predictor.upsample_times:
        alphas = model.predictor.upsampled_alphas(enc, feat_lens, token_lens)
        spans = upsampled_token_spans(alphas, feat_lens * dims.predictor.upsample_times, counts)
    else:
        spans = paraformer_token_spans(cif.alphas, feat_lens + 1, counts)  # +1: the tail frame
    return [Decoded(c, s) for c, s in zip(content, spans)]


def apply_hotwords(
    model: Paraformer,
    embeds: Tensor,
    hidden: Tensor,
    token_lens: Tensor,
    ids: Tensor,
    hotwords: HotwordBatch,
) -> Tensor:
    """SeACo merge: where the bias branch's argmax is not NO_BIAS, its token wins."""
    assert model.dims.seaco is not None
    counts = hotwords.member.to(hidden.dtype)  # (B, K) multiplicity of each entry
    sizes = hotwords.member.sum(-1)
    if int(sizes.max()) > HOTWORD_FILTER:
        scores = model.hotword_filter_scores(
            hidden, token_lens, hotwords.embeddings, log_bias(counts)
        )
        counts = filter_hotwords(scores, hotwords.member)
    dha = model.bias_logits(embeds, hidden, token_lens, hotwords.embeddings, log_bias(counts))
    dha_ids = dha.argmax(-1)
    use_bias = (dha_ids != model.dims.seaco.no_bias_id) & hotwords.active[:, None]
    return torch.where(use_bias, dha_ids, ids)


def filter_hotwords(scores: Tensor, member: Tensor) -> Tensor:
    """Keep each item's top min(50, K_i - 1) entries by attention score, plus the no-bias entry.

    scores, member (B, K) -> counts (B, K). As in the reference, the no-bias entry competes in
    the top-k and is appended once more, so it can appear twice: that doubles its attention
    weight, which a count of 2 (log 2 added to its logit) reproduces exactly.
    """
    sizes = member.sum(-1)
    keep = torch.clamp(sizes - 1, max=HOTWORD_FILTER)
    masked = scores.float().masked_fill(~member, float("-inf"))
    order = masked.argsort(dim=-1, descending=True, stable=True)
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(order.shape[1], device=order.device).expand_as(order))
    counts = ((ranks < keep[:, None]) & member).to(scores.dtype)
    counts[:, 0] += 1  # entry 0, the no-bias entry, is always appended
    # Items at or under the limit keep their whole list unfiltered.
    small = sizes <= HOTWORD_FILTER
    return torch.where(small[:, None], member.to(scores.dtype), counts)


def log_bias(counts: Tensor) -> Tensor:
    """(B, K) entry multiplicities -> additive attention bias (B, 1, 1, K)."""
    return torch.log(counts)[:, None, None, :]
