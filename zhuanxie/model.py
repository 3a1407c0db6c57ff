"""The Paraformer family as pure PyTorch modules: tensors in, tensors out.

Paraformer (Gao et al., 2022, arXiv:2206.08317) is a non-autoregressive recogniser:

    LFR features ─► SANM encoder ─► CIF predictor ─► SANM decoder ─► token logits
                                    (token count and one
                                     acoustic embedding per token)

SeACo-Paraformer (Shi et al., 2023, arXiv:2308.03266) adds a hotword ("bias") encoder and a bias
decoder whose output replaces the main decoder's wherever it does not predict NO_BIAS. BiCif and
SeACo use the CIF-v3 predictor, whose extra up-sampled branch yields token timestamps.

Module and attribute names mirror the official checkpoint keys, so loading is a near one-to-one
mapping (see ``checkpoint.py`` for the few renames).

Shape legend: B batch, T' LFR frames, D model dim, N tokens, V vocab, H heads, K hotwords, L
hotword length in tokens.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Family = Literal["paraformer", "bicif", "seaco"]

# FunASR's LayerNorm uses eps=1e-12 everywhere (funasr/models/transformer/layer_norm.py).
LAYER_NORM_EPS = 1e-12


@dataclass(frozen=True)
class EncoderDims:
    input_size: int  # LFR feature dim (80 mel bins x lfr_m 7 = 560)
    d_model: int
    heads: int
    linear_units: int
    num_blocks: int  # including the first block, which maps input_size -> d_model
    kernel_size: int  # FSMN memory kernel
    sanm_shift: int


@dataclass(frozen=True)
class DecoderDims:
    d_model: int
    heads: int
    linear_units: int
    att_layer_num: int  # full layers: FFN + FSMN + cross-attention
    num_blocks: int  # att_layer_num full layers, then num_blocks - att_layer_num FSMN-only layers
    kernel_size: int
    sanm_shift: int
    vocab_size: int | None  # None: no output layer (the SeACo bias decoder)


@dataclass(frozen=True)
class PredictorDims:
    d_model: int
    l_order: int
    r_order: int
    threshold: float
    tail_threshold: float
    smooth_factor: float
    noise_threshold: float
    # CIF-v3 (BiCif / SeACo) timestamp branch; upsample_times 0 means plain CIF-v2.
    upsample_times: int = 0
    smooth_factor2: float = 1.0
    noise_threshold2: float = 0.0


@dataclass(frozen=True)
class SeacoDims:
    inner_dim: int
    bias_layers: int  # LSTM layers of the hotword encoder
    decoder: DecoderDims  # the bias decoder (no output layer)
    no_bias_id: int  # token id the bias branch predicts where no hotword applies


@dataclass(frozen=True)
class ModelDims:
    family: Family
    vocab_size: int
    encoder: EncoderDims
    decoder: DecoderDims
    predictor: PredictorDims
    seaco: SeacoDims | None = None
    sos_id: int = 1
    eos_id: int = 2
    blank_id: int = 0


def sequence_mask(lengths: Tensor, max_len: int) -> Tensor:
    """(B,) lengths -> (B, max_len) bool, True on valid positions."""
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


def layer_norm(dim: int) -> nn.LayerNorm:
    return nn.LayerNorm(dim, eps=LAYER_NORM_EPS)


def sinusoidal_positions(length: int, depth: int, device: torch.device) -> Tensor:
    """FunASR's SinusoidalPositionEncoder: positions 1..T, sin and cos halves concatenated.

    Returns (T, depth) float32.
    """
    positions = torch.arange(1, length + 1, device=device, dtype=torch.float32)
    increment = math.log(10000.0) / (depth / 2 - 1)
    inv_timescales = torch.exp(
        torch.arange(depth // 2, device=device, dtype=torch.float32) * -increment
    )
    scaled = positions[:, None] * inv_timescales[None, :]
    return torch.cat([torch.sin(scaled), torch.cos(scaled)], dim=1)


def fsmn_memory(conv: nn.Conv1d, padding: tuple[int, int], x: Tensor, mask: Tensor) -> Tensor:
    """Feedforward sequential memory: a depthwise 1-D convolution over time plus a residual.

    x (B, T, D), mask (B, T, 1) -> (B, T, D); padded frames are zeroed on the way in and out.
    """
    x = x * mask
    y = conv(F.pad(x.transpose(1, 2), padding)).transpose(1, 2)
    return (y + x) * mask


def fsmn_padding(kernel_size: int, shift: int) -> tuple[int, int]:
    left = (kernel_size - 1) // 2 + shift
    return left, kernel_size - 1 - left


class Fsmn(nn.Module):
    """The decoder's FSMN block, which stands where self-attention would."""

    def __init__(self, dim: int, kernel_size: int, shift: int) -> None:
        super().__init__()
        self.fsmn_block = nn.Conv1d(dim, dim, kernel_size, groups=dim, bias=False)
        self.padding = fsmn_padding(kernel_size, shift)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        return fsmn_memory(self.fsmn_block, self.padding, x, mask)


class SanmAttention(nn.Module):
    """Self-attention plus an FSMN memory over the values (SAN-M, arXiv:2006.01713)."""

    def __init__(self, in_dim: int, dim: int, heads: int, kernel_size: int, shift: int) -> None:
        super().__init__()
        self.heads = heads
        self.linear_q_k_v = nn.Linear(in_dim, 3 * dim)
        self.linear_out = nn.Linear(dim, dim)
        self.fsmn_block = nn.Conv1d(dim, dim, kernel_size, groups=dim, bias=False)
        self.padding = fsmn_padding(kernel_size, shift)

    def forward(self, x: Tensor, mask: Tensor, attn_mask: Tensor) -> Tensor:
        """x (B, T, Din), mask (B, T, 1), attn_mask (B, 1, 1, T) bool -> (B, T, D)."""
        b, t, _ = x.shape
        q, k, v = self.linear_q_k_v(x).chunk(3, dim=-1)  # (B, T, D) each
        memory = fsmn_memory(self.fsmn_block, self.padding, v, mask)
        q, k, v = (z.view(b, t, self.heads, -1).transpose(1, 2) for z in (q, k, v))  # (B,H,T,Dh)
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        attended = attended.transpose(1, 2).reshape(b, t, -1)
        return self.linear_out(attended) + memory


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.w_1 = nn.Linear(dim, hidden)
        self.w_2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.w_2(torch.relu(self.w_1(x)))


class EncoderLayer(nn.Module):
    """Pre-LN SAN-M block. The first block changes width (560 -> D) and so has no residual."""

    def __init__(self, in_dim: int, dims: EncoderDims) -> None:
        super().__init__()
        self.residual = in_dim == dims.d_model
        self.norm1 = layer_norm(in_dim)
        self.self_attn = SanmAttention(
            in_dim, dims.d_model, dims.heads, dims.kernel_size, dims.sanm_shift
        )
        self.norm2 = layer_norm(dims.d_model)
        self.feed_forward = FeedForward(dims.d_model, dims.linear_units)

    def forward(self, x: Tensor, mask: Tensor, attn_mask: Tensor) -> Tensor:
        attended = self.self_attn(self.norm1(x), mask, attn_mask)
        x = x + attended if self.residual else attended
        return x + self.feed_forward(self.norm2(x))


class Encoder(nn.Module):
    def __init__(self, dims: EncoderDims) -> None:
        super().__init__()
        self.dims = dims
        self.encoders0 = nn.ModuleList([EncoderLayer(dims.input_size, dims)])
        self.encoders = nn.ModuleList(
            [EncoderLayer(dims.d_model, dims) for _ in range(dims.num_blocks - 1)]
        )
        self.after_norm = layer_norm(dims.d_model)

    def forward(self, feats: Tensor, feat_lens: Tensor) -> Tensor:
        """feats (B, T', 560), feat_lens (B,) -> (B, T', D), zero on padded frames."""
        t = feats.shape[1]
        valid = sequence_mask(feat_lens, t)  # (B, T')
        mask = valid[:, :, None].to(feats.dtype)
        attn_mask = valid[:, None, None, :]
        positions = sinusoidal_positions(t, feats.shape[2], feats.device).to(feats.dtype)
        x = feats * self.dims.d_model**0.5 + positions
        for layer in (*self.encoders0, *self.encoders):
            x = layer(x, mask, attn_mask)
        # Zero padded frames: the reference leaves garbage there, which leaks into CIF.
        return self.after_norm(x) * mask


class CrossAttention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.linear_q = nn.Linear(dim, dim)
        self.linear_k_v = nn.Linear(dim, 2 * dim)
        self.linear_out = nn.Linear(dim, dim)

    def forward(self, x: Tensor, memory: Tensor, memory_bias: Tensor) -> Tensor:
        """x (B, N, D), memory (B, T, D), memory_bias (B, 1, 1, T) additive -> (B, N, D)."""
        b, n, _ = x.shape
        q = self.linear_q(x).view(b, n, self.heads, -1).transpose(1, 2)  # (B, H, N, Dh)
        k, v = self.linear_k_v(memory).chunk(2, dim=-1)
        k, v = (
            z.view(b, -1, self.heads, z.shape[-1] // self.heads).transpose(1, 2) for z in (k, v)
        )
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=memory_bias)
        return self.linear_out(attended.transpose(1, 2).reshape(b, n, -1))

    def weights(self, x: Tensor, memory: Tensor, memory_bias: Tensor) -> Tensor:
        """The attention probabilities (B, H, N, T) for the same inputs as ``forward``."""
        b, n, _ = x.shape
        q = self.linear_q(x).view(b, n, self.heads, -1).transpose(1, 2)
        k, _ = self.linear_k_v(memory).chunk(2, dim=-1)
        k = k.view(b, -1, self.heads, k.shape[-1] // self.heads).transpose(1, 2)
        scores = q @ k.transpose(-1, -2) * (q.shape[-1] ** -0.5) + memory_bias
        return torch.softmax(scores, dim=-1)


class DecoderFeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.w_1 = nn.Linear(dim, hidden)
        self.norm = layer_norm(hidden)
        self.w_2 = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.w_2(self.norm(torch.relu(self.w_1(x))))


class DecoderLayer(nn.Module):
    """Paraformer's decoder block, quirks included (ParaformerSANMDecoder in the reference).

    The FFN comes first and has no residual of its own; the FSMN output is added to the block's
    input. A block without FSMN (``decoders3``) is a bare FFN with no residual at all.
    """

    def __init__(self, dims: DecoderDims, *, fsmn: bool, cross: bool, shift: int) -> None:
        super().__init__()
        self.norm1 = layer_norm(dims.d_model)
        self.feed_forward = DecoderFeedForward(dims.d_model, dims.linear_units)
        self.norm2 = layer_norm(dims.d_model) if fsmn else None
        self.self_attn = Fsmn(dims.d_model, dims.kernel_size, shift) if fsmn else None
        self.norm3 = layer_norm(dims.d_model) if cross else None
        self.src_attn = CrossAttention(dims.d_model, dims.heads) if cross else None

    def self_block(self, x: Tensor, mask: Tensor) -> Tensor:
        h = self.feed_forward(self.norm1(x))
        if self.self_attn is None or self.norm2 is None:
            return h
        return x + self.self_attn(self.norm2(h), mask)

    def forward(self, x: Tensor, mask: Tensor, memory: Tensor, memory_bias: Tensor) -> Tensor:
        x = self.self_block(x, mask)
        if self.src_attn is None or self.norm3 is None:
            return x
        return x + self.src_attn(self.norm3(x), memory, memory_bias)


class Decoder(nn.Module):
    def __init__(self, dims: DecoderDims, *, embed: bool) -> None:
        super().__init__()
        self.dims = dims
        # The token embedding is unused by Paraformer's own decoding; SeACo embeds hotwords with it.
        self.embed = (
            nn.Embedding(dims.vocab_size, dims.d_model) if embed and dims.vocab_size else None
        )
        self.decoders = nn.ModuleList(
            [
                DecoderLayer(dims, fsmn=True, cross=True, shift=dims.sanm_shift)
                for _ in range(dims.att_layer_num)
            ]
        )
        # The reference builds these FSMN-only layers with shift 0 whatever the config says.
        extra = dims.num_blocks - dims.att_layer_num
        self.decoders2 = (
            nn.ModuleList(
                [DecoderLayer(dims, fsmn=True, cross=False, shift=0) for _ in range(extra)]
            )
            if extra > 0
            else None
        )
        self.decoders3 = nn.ModuleList([DecoderLayer(dims, fsmn=False, cross=False, shift=0)])
        self.after_norm = layer_norm(dims.d_model)
        self.output_layer = nn.Linear(dims.d_model, dims.vocab_size) if dims.vocab_size else None

    def forward(self, tgt: Tensor, tgt_lens: Tensor, memory: Tensor, memory_bias: Tensor) -> Tensor:
        """tgt (B, N, D), tgt_lens (B,), memory (B, T, D), memory_bias (B, 1, 1|N, T) additive.

        Returns the hidden states (B, N, D) after the final norm.
        """
        mask = sequence_mask(tgt_lens, tgt.shape[1])[:, :, None].to(tgt.dtype)
        x = tgt
        for layer in self.decoders:
            x = layer(x, mask, memory, memory_bias)
        for layer in (*(self.decoders2 or ()), *self.decoders3):
            x = layer.self_block(x, mask)
        return self.after_norm(x)

    def last_attention(
        self, tgt: Tensor, tgt_lens: Tensor, memory: Tensor, memory_bias: Tensor
    ) -> Tensor:
        """Cross-attention weights (B, H, N, T) of the last full layer, as SeACo's hotword filter
        reads them (``forward_asf6`` in the reference: layers 0-4, then layer 5's attention)."""
        mask = sequence_mask(tgt_lens, tgt.shape[1])[:, :, None].to(tgt.dtype)
        layers = cast(list[DecoderLayer], list(self.decoders))
        *first, last = layers
        x = tgt
        for layer in first:
            x = layer(x, mask, memory, memory_bias)
        assert last.src_attn is not None
        assert last.norm3 is not None
        x = last.self_block(x, mask)
        return last.src_attn.weights(last.norm3(x), memory, memory_bias)


@dataclass(frozen=True)
class CifOutput:
    embeds: Tensor  # (B, N, D) one acoustic embedding per token, zero beyond token_lens
    token_lens: Tensor  # (B,) int64
    alphas: Tensor  # (B, T'+1) float32 weights incl. the tail weight, zero on padding


class CifPredictor(nn.Module):
    """Continuous integrate-and-fire (Dong & Xu, 2020): per-frame weights that sum to the token
    count; each time the running sum crosses an integer, one token embedding fires."""

    def __init__(self, dims: PredictorDims) -> None:
        super().__init__()
        self.dims = dims
        d = dims.d_model
        self.cif_conv1d = nn.Conv1d(d, d, dims.l_order + dims.r_order + 1)
        self.cif_output = nn.Linear(d, 1)
        if dims.upsample_times:
            self.upsample_cnn = nn.ConvTranspose1d(d, d, dims.upsample_times, dims.upsample_times)
            self.blstm = nn.LSTM(d, d, 1, batch_first=True, bidirectional=True)
            self.cif_output2 = nn.Linear(2 * d, 1)

    def forward(self, enc: Tensor, enc_lens: Tensor) -> CifOutput:
        """enc (B, T', D) zero-padded, enc_lens (B,) -> token embeddings and counts."""
        dims = self.dims
        b, t, _ = enc.shape
        enc = enc.float()
        h = F.pad(enc.transpose(1, 2), (dims.l_order, dims.r_order))
        h = torch.relu(self.cif_conv1d(h)).transpose(1, 2)
        alphas = torch.sigmoid(self.cif_output(h)).squeeze(-1)
        alphas = torch.relu(alphas * dims.smooth_factor - dims.noise_threshold)
        alphas = alphas * sequence_mask(enc_lens, t)
        # The tail weight sits on the first frame after each item, whose hidden state is zero;
        # it lets a trailing partial token fire (reference: tail_process_fn with tail_mask).
        alphas = F.pad(alphas, (0, 1))
        alphas[torch.arange(b, device=enc.device), enc_lens] += dims.tail_threshold
        hidden = F.pad(enc, (0, 0, 0, 1))
        embeds, token_lens = integrate_and_fire(hidden, alphas, dims.threshold)
        return CifOutput(embeds, token_lens, alphas)

    def upsampled_alphas(self, enc: Tensor, enc_lens: Tensor, token_lens: Tensor) -> Tensor:
        """CIF-v3 timestamp weights on a 3x finer grid: enc (B, T', D) -> (B, 3T'), each row
        rescaled to sum to its token count (which includes the final ``</s>``)."""
        dims = self.dims
        up = self.upsample_cnn(enc.float().transpose(1, 2)).transpose(1, 2)  # (B, 3T', D)
        up_lens = enc_lens * dims.upsample_times
        # Packing keeps the backward direction from reading padding (the reference runs the
        # BLSTM over padded batches, so its timestamps depend on the batch's composition).
        packed = nn.utils.rnn.pack_padded_sequence(
            up, up_lens.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False
        )
        out, _ = self.blstm(packed)
        out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=up.shape[1])
        alphas = torch.sigmoid(self.cif_output2(out)).squeeze(-1)
        alphas = torch.relu(alphas * dims.smooth_factor2 - dims.noise_threshold2)
        alphas = alphas * sequence_mask(up_lens, up.shape[1])
        total = alphas.sum(-1, keepdim=True)
        return alphas * (token_lens[:, None].float() / total.clamp(min=1e-30))


def integrate_and_fire(hidden: Tensor, alphas: Tensor, threshold: float) -> tuple[Tensor, Tensor]:
    """Vectorised CIF with threshold 1: hidden (B, T, D), alphas (B, T) -> (B, N, D), (B,).

    Token k integrates every frame's weight that falls inside [k, k+1) of the running sum; a
    token is emitted only once its integral completes (the trailing remainder is dropped), so N_b
    = floor(sum of alphas). The running sum is taken in float64, as the reference does for
    CIF-v2, so boundaries are found exactly; weights never exceed 1, so a frame feeds at most
    two tokens.
    """
    if threshold != 1.0:
        raise ValueError(f"CIF threshold {threshold} is not supported; published models use 1.0")
    b, _, d = hidden.shape
    cum = torch.cumsum(alphas.double(), dim=1)  # (B, T) running sum after each frame
    prev = F.pad(cum[:, :-1], (1, 0))  # running sum before each frame
    token_lens = torch.floor(cum[:, -1]).long()
    n_max = int(token_lens.max()) if b else 0
    first = torch.floor(prev)  # token each frame starts in
    boundary = first + 1
    w_first = (torch.minimum(cum, boundary) - prev).float()  # weight into token `first`
    w_next = (cum - boundary).clamp(min=0).float()  # spill-over into token `first + 1`
    idx_first = first.long()
    idx_next = idx_first + 1
    # Token indices stay <= N_b + 1, so two spare slots per item hold the incomplete remainder.
    slots = n_max + 2
    base = (torch.arange(b, device=hidden.device) * slots)[:, None]
    flat = torch.zeros(b * slots, d, dtype=hidden.dtype, device=hidden.device)
    flat.index_add_(0, (base + idx_first).reshape(-1), (w_first[..., None] * hidden).reshape(-1, d))
    flat.index_add_(0, (base + idx_next).reshape(-1), (w_next[..., None] * hidden).reshape(-1, d))
    embeds = flat.view(b, slots, d)[:, :n_max]
    embeds = embeds * sequence_mask(token_lens, n_max)[:, :, None].to(embeds.dtype)
    return embeds, token_lens


class Paraformer(nn.Module):
    """Paraformer, BiCif-Paraformer or SeACo-Paraformer, depending on ``dims.family``."""

    def __init__(self, dims: ModelDims) -> None:
        super().__init__()
        self.dims = dims
        self.encoder = Encoder(dims.encoder)
        self.predictor = CifPredictor(dims.predictor)
        self.decoder = Decoder(dims.decoder, embed=True)
        if dims.seaco is not None:
            s = dims.seaco
            self.bias_encoder = nn.LSTM(s.inner_dim, s.inner_dim, s.bias_layers, batch_first=True)
            self.seaco_decoder = Decoder(s.decoder, embed=False)
            self.hotword_output_layer = nn.Linear(s.inner_dim, dims.vocab_size)

    def encode(self, feats: Tensor, feat_lens: Tensor) -> Tensor:
        """feats (B, T', 560), feat_lens (B,) -> encoder output (B, T', D)."""
        return self.encoder(feats, feat_lens)

    def predict(self, enc: Tensor, enc_lens: Tensor) -> CifOutput:
        return self.predictor(enc, enc_lens)

    def decode(
        self, enc: Tensor, enc_lens: Tensor, embeds: Tensor, token_lens: Tensor
    ) -> tuple[Tensor, Tensor]:
        """-> (logits (B, N, V), hidden (B, N, D))."""
        memory_bias = padding_bias(enc_lens, enc.shape[1], enc.dtype)
        hidden = self.decoder(embeds.to(enc.dtype), token_lens, enc, memory_bias)
        assert self.decoder.output_layer is not None
        return self.decoder.output_layer(hidden), hidden

    def encode_hotwords(self, ids: Tensor, lens: Tensor) -> Tensor:
        """SeACo bias encoder: hotword token ids (K, L) padded, lens (K,) -> (K, D)."""
        assert self.decoder.embed is not None
        packed = nn.utils.rnn.pack_padded_sequence(
            self.decoder.embed(ids), lens.cpu(), batch_first=True, enforce_sorted=False
        )
        out, _ = self.bias_encoder(packed)
        out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True)
        return out[torch.arange(ids.shape[0], device=ids.device), lens - 1]

    def hotword_filter_scores(
        self, hidden: Tensor, token_lens: Tensor, hotwords: Tensor, hotword_bias: Tensor
    ) -> Tensor:
        """Attention mass each hotword receives from the decoded tokens: -> (B, K).

        hidden (B, N, D) decoder states; hotwords (K, D); hotword_bias (B, 1, 1, K) additive.
        """
        memory = hotwords.to(hidden.dtype).expand(hidden.shape[0], -1, -1)
        weights = self.seaco_decoder.last_attention(hidden, token_lens, memory, hotword_bias)
        valid = sequence_mask(token_lens, hidden.shape[1])[:, None, :, None].to(weights.dtype)
        return (weights * valid).sum(dim=(1, 2))

    def bias_logits(
        self,
        embeds: Tensor,
        hidden: Tensor,
        token_lens: Tensor,
        hotwords: Tensor,
        hotword_bias: Tensor,
    ) -> Tensor:
        """SeACo bias branch: -> logits (B, N, V) over tokens plus NO_BIAS.

        embeds (B, N, D) CIF embeddings, hidden (B, N, D) decoder states, hotwords (K, D),
        hotword_bias (B, 1, 1, K) additive: 0 for an item's hotwords, -inf for others, log(c)
        for an entry counted c times.
        """
        memory = hotwords.to(hidden.dtype).expand(hidden.shape[0], -1, -1)
        cif_attended = self.seaco_decoder(embeds.to(hidden.dtype), token_lens, memory, hotword_bias)
        dec_attended = self.seaco_decoder(hidden, token_lens, memory, hotword_bias)
        return self.hotword_output_layer(cif_attended + dec_attended)


def padding_bias(lengths: Tensor, max_len: int, dtype: torch.dtype) -> Tensor:
    """(B,) lengths -> additive attention bias (B, 1, 1, max_len): 0 valid, -inf padding."""
    valid = sequence_mask(lengths, max_len)
    bias = torch.zeros(valid.shape, dtype=dtype, device=lengths.device)
    return bias.masked_fill(~valid, float("-inf"))[:, None, None, :]
