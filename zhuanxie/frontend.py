"""Acoustic features for Paraformer: Kaldi log-mel fbank, low frame rate (LFR) stacking, CMVN.

The numbers follow funasr 1.4.16 `WavFrontend.forward` on its kaldi-native-fbank backend (used
when torchaudio is absent) with dither 0, but the work is batched: padded waves travel with their
lengths and every step is a tensor op over the whole batch, on whatever device the waves are on.

Shapes: B batch, S samples, T fbank frames, T' LFR frames, F feature dim.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

SAMPLE_RATE = 16000  # Hz; every Paraformer checkpoint is trained on 16 kHz audio
INT16_SCALE = 32768.0  # funasr scales [-1, 1] audio to the 16-bit range before Kaldi fbank
PREEMPHASIS = 0.97  # Kaldi's default pre-emphasis coefficient
LOW_FREQ_HZ = 20.0  # Kaldi's default lower edge of the first mel bin; the upper edge is Nyquist
MEL_SCALE = 1127.0  # Kaldi's mel scale: mel(f) = 1127 * ln(1 + f / 700 Hz)
MEL_BREAK_HZ = 700.0
LOG_FLOOR = torch.finfo(torch.float32).eps  # Kaldi floors mel energies at FLT_EPSILON before log


@dataclass(frozen=True)
class FrontendOptions:
    """Feature settings; the defaults are those of every Paraformer-large checkpoint."""

    n_mels: int = 80
    """Mel bins per fbank frame."""
    frame_length_ms: int = 25
    """Analysis window length in milliseconds (400 samples at 16 kHz)."""
    frame_shift_ms: int = 10
    """Hop between fbank frames in milliseconds (160 samples at 16 kHz)."""
    lfr_m: int = 7
    """Fbank frames stacked into one LFR frame."""
    lfr_n: int = 6
    """Fbank frames between the starts of consecutive LFR frames."""

    def __post_init__(self) -> None:
        for name in ("n_mels", "frame_length_ms", "frame_shift_ms", "lfr_m", "lfr_n"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"FrontendOptions.{name} must be a positive int, got {value!r}")
        if self.n_mels < 3:
            raise ValueError(
                f"FrontendOptions.n_mels must be at least 3 (Kaldi), got {self.n_mels}"
            )
        # Raises if some mel bin would cover no FFT bin, as Kaldi does.
        _mel_matrix_cpu(self.n_mels, self.fft_size)

    @property
    def window_size(self) -> int:
        """Samples per analysis window."""
        return SAMPLE_RATE * self.frame_length_ms // 1000

    @property
    def hop_size(self) -> int:
        """Samples between the starts of consecutive fbank frames."""
        return SAMPLE_RATE * self.frame_shift_ms // 1000

    @property
    def fft_size(self) -> int:
        """FFT length: the window zero-padded to a power of two, as Kaldi does."""
        return 1 << (self.window_size - 1).bit_length()

    @property
    def min_samples(self) -> int:
        """Shortest wave that yields a frame (see `fbank` on short waves)."""
        return self.fft_size // 2 + 1

    @property
    def feature_dim(self) -> int:
        """Size of one LFR frame: `n_mels * lfr_m`."""
        return self.n_mels * self.lfr_m


@functools.lru_cache(maxsize=8)
def _mel_matrix_cpu(n_mels: int, fft_size: int) -> Tensor:
    """(fft/2 + 1, n_mels) Kaldi triangular mel weights, built in float32 as kaldi-native-fbank.

    Kaldi's bins cover FFT bins 0 .. fft/2 - 1; the Nyquist row stays 0.
    """

    def mel_scale(freq: Tensor) -> Tensor:
        return MEL_SCALE * torch.log(1.0 + freq / MEL_BREAK_HZ)

    nyquist = torch.tensor(SAMPLE_RATE / 2, dtype=torch.float32)
    mel_low = mel_scale(torch.tensor(LOW_FREQ_HZ, dtype=torch.float32))
    mel_delta = (mel_scale(nyquist) - mel_low) / (n_mels + 1)
    edges = mel_low + torch.arange(n_mels + 2, dtype=torch.float32) * mel_delta
    left, center, right = edges[:-2], edges[1:-1], edges[2:]  # (n_mels,) each

    bin_width = torch.tensor(SAMPLE_RATE / fft_size, dtype=torch.float32)
    fft_mel = mel_scale(bin_width * torch.arange(fft_size // 2, dtype=torch.float32))[:, None]
    rising = (fft_mel - left) / (center - left)
    falling = (right - fft_mel) / (right - center)
    inside = (fft_mel > left) & (fft_mel < right)
    weights = torch.where(inside, torch.where(fft_mel <= center, rising, falling), 0.0)
    if not bool(inside.any(0).all()):
        raise ValueError(
            f"n_mels={n_mels} is too many for a {fft_size}-point FFT: some mel bins are empty"
        )
    return nn.functional.pad(weights, (0, 0, 0, 1))


@functools.lru_cache(maxsize=8)
def _mel_matrix(n_mels: int, fft_size: int, device: torch.device) -> Tensor:
    return _mel_matrix_cpu(n_mels, fft_size).to(device)


@functools.lru_cache(maxsize=8)
def _window_table(window_size: int, min_size: int, device: torch.device) -> Tensor:
    """(window_size - min_size + 1, window_size) zero-padded Hamming windows.

    Row k is the window of `min_size + k` samples, computed in float64 and rounded to float32 as
    kaldi-native-fbank does.
    """
    sizes = torch.arange(min_size, window_size + 1, dtype=torch.float64)[:, None]
    index = torch.arange(window_size, dtype=torch.float64)
    window = 0.54 - 0.46 * torch.cos(2 * math.pi / (sizes - 1) * index)
    return torch.where(index < sizes, window, 0.0).to(device=device, dtype=torch.float32)


DEFAULT_OPTIONS = FrontendOptions()

# funasr's WavFrontend constructor defaults, which apply to keys a config leaves out. Note that
# they differ from ours for LFR: a config without lfr_m/lfr_n means no stacking.
_CONFIG_DEFAULTS: dict[str, Any] = {
    "fs": SAMPLE_RATE,
    "window": "hamming",
    "n_mels": 80,
    "frame_length": 25,
    "frame_shift": 10,
    "lfr_m": 1,
    "lfr_n": 1,
    "snip_edges": True,
    "upsacle_samples": True,  # sic: funasr's spelling
}
# Keys accepted in a config and deliberately not used here.
_CONFIG_IGNORED = {
    "dither",  # training-time noise; inference features are deterministic (funasr issue #2111)
    "cmvn_file",  # the checkpoint loader reads am.mvn
    "filter_length_min",  # training-data length filters
    "filter_length_max",
}


def options_from_config(conf: Mapping[str, Any]) -> FrontendOptions:
    """Build options from the `frontend_conf` mapping of a FunASR config.yaml.

    Missing keys take funasr's `WavFrontend` defaults. Raises ValueError for unknown keys and for
    values this frontend does not implement (a rate other than 16 kHz, a window other than
    Hamming, snip_edges or upsacle_samples false).
    """
    unknown = sorted(set(conf) - set(_CONFIG_DEFAULTS) - _CONFIG_IGNORED)
    if unknown:
        known = sorted(set(_CONFIG_DEFAULTS) | _CONFIG_IGNORED)
        raise ValueError(f"frontend_conf has unknown keys {unknown}; known keys are {known}")
    merged = {**_CONFIG_DEFAULTS, **conf}
    for key, expected in (("fs", SAMPLE_RATE), ("window", "hamming")):
        if merged[key] != expected:
            raise ValueError(
                f"frontend_conf.{key}={merged[key]!r} is not supported; only {expected!r} is"
            )
    for key in ("snip_edges", "upsacle_samples"):
        if merged[key] is not True:
            raise ValueError(f"frontend_conf.{key}={merged[key]!r} is not supported; only True is")
    return FrontendOptions(
        n_mels=_config_int(merged, "n_mels"),
        frame_length_ms=_config_int(merged, "frame_length"),
        frame_shift_ms=_config_int(merged, "frame_shift"),
        lfr_m=_config_int(merged, "lfr_m"),
        lfr_n=_config_int(merged, "lfr_n"),
    )


def _config_int(conf: Mapping[str, Any], key: str) -> int:
    value = conf[key]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"frontend_conf.{key} must be an integer, got {value!r}")
    return value


def fbank(
    waves: Tensor, lengths: Tensor, options: FrontendOptions = DEFAULT_OPTIONS
) -> tuple[Tensor, Tensor]:
    """Kaldi log-mel filterbank of a padded batch of waves.

    Args:
        waves: (B, S) float audio in [-1, 1] at 16 kHz; samples past each length are ignored.
        lengths: (B,) int valid samples per wave.

    Returns:
        feats: (B, T, n_mels) float32, T = frames of an S-sample wave; frames past an item's
            count are 0.
        feat_lens: (B,) int64 frames per item, 1 + (length - 400) // 160 at the defaults.

    Per frame, as Kaldi: remove the DC offset, pre-emphasise (the first sample against itself),
    apply a Hamming window, zero-pad to the FFT size, take the power spectrum, project on
    triangular mel bins and take the log of the energies floored at FLT_EPSILON.

    Short waves: funasr shortens the window to the whole wave when it is under 25 ms, so a wave of
    `min_samples` (257) to 399 samples gives one frame over all its samples; this does the same.
    Shorter waves give no frames here (T = 0 for that item), where funasr raises.
    """
    _check_batch(waves, lengths, "waves")
    device = waves.device
    batch, num_samples = waves.shape
    win, hop, min_win = options.window_size, options.hop_size, options.min_samples
    lengths = lengths.to(device=device, dtype=torch.long)
    num_frames = _num_frames(lengths, options)
    max_frames = int(_num_frames(torch.tensor([num_samples]), options))
    feats = waves.new_empty(batch, max_frames, options.n_mels, dtype=torch.float32)
    if max_frames == 0:
        return feats, num_frames

    # Zero the padding: a short item's only frame reaches past its end, into the padding.
    invalid = torch.arange(num_samples, device=device) >= lengths[:, None]
    samples = waves.to(torch.float32).mul(INT16_SCALE).masked_fill_(invalid, 0.0)
    if num_samples < win:
        samples = nn.functional.pad(samples, (0, win - num_samples))
    frames = samples.unfold(1, win, hop)  # (B, T, win), a view

    # Each item's window length: `win`, or its whole length when that is shorter.
    item_win = lengths.clamp(min_win, win)
    window = _window_table(win, min_win, device)[item_win - min_win]  # (B, win)
    mel = _mel_matrix(options.n_mels, options.fft_size, device)
    step = max(1, _chunk_frames(device) // batch)
    for start in range(0, max_frames, step):
        feats[:, start : start + step] = _log_mel(
            frames[:, start : start + step], item_win, window, mel, options.fft_size
        )
    padded = torch.arange(max_frames, device=device) >= num_frames[:, None]
    return feats.masked_fill_(padded[..., None], 0.0), num_frames


def _chunk_frames(device: torch.device) -> int:
    """Frames per step of `fbank`, over the whole batch.

    On CPU the work is memory-bound: chunks whose temporaries stay in cache run several times
    faster than whole-batch tensors. On an accelerator, big chunks keep the kernel-launch count
    low, and the bound only caps the temporaries (about 12 KB per frame).
    """
    return 1024 if device.type == "cpu" else 65536


def _log_mel(
    frames: Tensor, item_win: Tensor, window: Tensor, mel: Tensor, fft_size: int
) -> Tensor:
    """Kaldi's per-frame steps on (B, t, win) frames -> (B, t, n_mels) log-mel energies.

    `item_win` (B,) holds each item's window length and `window` (B, win) its zero-padded
    Hamming window; samples past the window length must be 0.
    """
    frames = frames - frames.sum(-1, keepdim=True) / item_win[:, None, None]
    previous = torch.cat([frames[..., :1], frames[..., :-1]], dim=-1)
    frames = (frames - PREEMPHASIS * previous) * window[:, None, :]
    spectrum = torch.fft.rfft(frames, n=fft_size)  # (B, t, fft/2 + 1)
    power = spectrum.real.square() + spectrum.imag.square()
    rows = power.reshape(-1, power.shape[-1])
    if rows.shape[0] == 1:
        # BLAS computes a one-row product as gemv, which rounds differently from gemm; a zero
        # second row keeps a lone frame bitwise equal to the same frame inside a batch.
        rows = torch.cat([rows, torch.zeros_like(rows)])
    energies = torch.mm(rows, mel)[: power.shape[0] * power.shape[1]]
    return energies.clamp_min(LOG_FLOOR).log().reshape(*power.shape[:-1], -1)


def _num_frames(lengths: Tensor, options: FrontendOptions) -> Tensor:
    """Frames per wave with Kaldi's snip_edges and funasr's short-wave window."""
    whole = 1 + (lengths - options.window_size).clamp(min=0) // options.hop_size
    return torch.where(lengths < options.min_samples, 0, whole)


def apply_lfr(feats: Tensor, lengths: Tensor, m: int = 7, n: int = 6) -> tuple[Tensor, Tensor]:
    """Stack `m` frames every `n` frames (low frame rate), as funasr's `apply_lfr`.

    Args:
        feats: (B, T, F) frames; frames past each length are ignored.
        lengths: (B,) int valid frames per item.

    Returns:
        (B, T', F * m) with T' = ceil(T / n), and (B,) int64 lengths ceil(length / n). LFR frame i
        concatenates frames n*i - (m-1)//2 ... n*i + m//2, clamped to the item's valid frames:
        the first frame is repeated on the left, the item's last valid frame on the right. Frames
        past an item's length are 0.
    """
    if m < 1 or n < 1:
        raise ValueError(f"apply_lfr needs m >= 1 and n >= 1, got m={m}, n={n}")
    _check_batch(feats, lengths, "feats", dims=3)
    batch, num_frames, dim = feats.shape
    device = feats.device
    lengths = lengths.to(device=device, dtype=torch.long)
    out_frames = -(-num_frames // n)
    out_lengths = -(-lengths // n)

    starts = torch.arange(out_frames, device=device) * n - (m - 1) // 2
    source = (starts[:, None] + torch.arange(m, device=device)).clamp(min=0)  # (T', m)
    last = (lengths - 1).clamp(min=0)
    source = torch.minimum(source, last[:, None, None])  # (B, T', m)
    rows = torch.arange(batch, device=device)[:, None, None]
    stacked = feats[rows, source].reshape(batch, out_frames, m * dim)
    padded = torch.arange(out_frames, device=device) >= out_lengths[:, None]
    return stacked.masked_fill(padded[..., None], 0.0), out_lengths


@dataclass(frozen=True)
class Cmvn:
    """Global mean/variance normalisation from a checkpoint's am.mvn: y = (x + shift) * scale."""

    shift: Tensor
    """(F,) float32, the negated feature means."""
    scale: Tensor
    """(F,) float32, the inverse feature standard deviations."""

    def __post_init__(self) -> None:
        if self.shift.dim() != 1 or self.shift.shape != self.scale.shape:
            raise ValueError(
                "Cmvn.shift and Cmvn.scale must be 1-D of one size, got "
                f"{tuple(self.shift.shape)} and {tuple(self.scale.shape)}"
            )

    @property
    def dim(self) -> int:
        """Feature size F."""
        return self.shift.shape[0]


def apply_cmvn(feats: Tensor, lengths: Tensor, cmvn: Cmvn) -> Tensor:
    """(feats + shift) * scale on (B, T', F) feats; frames past each length stay 0."""
    _check_batch(feats, lengths, "feats", dims=3)
    if feats.shape[-1] != cmvn.dim:
        raise ValueError(f"feats have {feats.shape[-1]} features but the CMVN has {cmvn.dim}")
    device = feats.device
    shift, scale = cmvn.shift.to(device), cmvn.scale.to(device)
    padded = torch.arange(feats.shape[1], device=device) >= lengths.to(device)[:, None]
    return ((feats + shift) * scale).masked_fill(padded[..., None], 0.0)


def load_cmvn(path: str | os.PathLike[str]) -> Cmvn:
    """Read a Kaldi nnet1 text CMVN file (am.mvn): its <AddShift> and <Rescale> vectors.

    Raises FileNotFoundError if the file is missing and ValueError, naming the file, if it is
    malformed.
    """
    path = Path(path)
    try:
        tokens = path.read_text(encoding="utf-8").split()
    except FileNotFoundError:
        raise FileNotFoundError(f"CMVN file {path} does not exist") from None
    except UnicodeDecodeError as error:
        raise ValueError(f"CMVN file {path} is not UTF-8 text ({error})") from None
    shift = _read_component(tokens, "<AddShift>", path)
    scale = _read_component(tokens, "<Rescale>", path)
    if shift.shape != scale.shape:
        raise ValueError(
            f"CMVN file {path}: <AddShift> has {shift.numel()} values, <Rescale> {scale.numel()}"
        )
    return Cmvn(shift=shift, scale=scale)


def _read_component(tokens: list[str], tag: str, path: Path) -> Tensor:
    """Parse `<Tag> out in <LearnRateCoef> c [ v1 ... vn ]` from a token list."""
    if tag not in tokens:
        raise ValueError(f"CMVN file {path}: no {tag} component")
    at = tokens.index(tag)
    dims = tokens[at + 1 : at + 3]
    if len(dims) != 2 or not all(d.isdigit() for d in dims) or dims[0] != dims[1]:
        raise ValueError(f"CMVN file {path}: {tag} must be followed by two equal dims, got {dims}")
    at += 3
    if tokens[at : at + 1] == ["<LearnRateCoef>"]:
        at += 2
    if tokens[at : at + 1] != ["["]:
        raise ValueError(f"CMVN file {path}: {tag} values do not start with '['")
    if "]" not in tokens[at:]:
        raise ValueError(f"CMVN file {path}: {tag} values have no closing ']' (truncated file?)")
    end = tokens.index("]", at)
    try:
        values = [float(token) for token in tokens[at + 1 : end]]
    except ValueError as error:
        raise ValueError(f"CMVN file {path}: {tag} has a non-number ({error})") from None
    if len(values) != int(dims[0]):
        raise ValueError(f"CMVN file {path}: {tag} declares {dims[0]} values but has {len(values)}")
    return torch.tensor(values, dtype=torch.float32)


def write_cmvn(path: str | os.PathLike[str], cmvn: Cmvn) -> None:
    """Write `cmvn` as a Kaldi nnet1 text file in the layout of FunASR's am.mvn files."""

    def vector(values: Tensor) -> str:
        # 9 significant digits round-trip any float32 exactly.
        return " ".join(f"{value:.9g}" for value in values.tolist())

    dim = cmvn.dim
    lines = [
        "<Nnet>",
        f"<Splice> {dim} {dim}",
        "[ 0 ]",
        f"<AddShift> {dim} {dim}",
        f"<LearnRateCoef> 0 [ {vector(cmvn.shift)} ]",
        f"<Rescale> {dim} {dim}",
        f"<LearnRateCoef> 0 [ {vector(cmvn.scale)} ]",
        "</Nnet>",
    ]
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")


class Frontend(nn.Module):
    """Waves to Paraformer encoder input: fbank, then LFR, then CMVN.

    The CMVN vectors are non-persistent buffers, so `.to(device)` moves them and the module adds
    no keys to a state dict.
    """

    shift: Tensor
    scale: Tensor

    def __init__(self, cmvn: Cmvn, options: FrontendOptions = DEFAULT_OPTIONS) -> None:
        super().__init__()
        if cmvn.dim != options.feature_dim:
            raise ValueError(
                f"CMVN has {cmvn.dim} dims but the options give {options.feature_dim} "
                f"(n_mels {options.n_mels} x lfr_m {options.lfr_m})"
            )
        self.options = options
        self.register_buffer("shift", cmvn.shift.to(torch.float32), persistent=False)
        self.register_buffer("scale", cmvn.scale.to(torch.float32), persistent=False)

    def forward(self, waves: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """(B, S) waves in [-1, 1] and (B,) lengths -> (B, T', F) float32 feats and (B,) lengths.

        The feats are on the waves' device; the module's buffers must be there too.
        """
        feats, feat_lens = fbank(waves, lengths, self.options)
        feats, feat_lens = apply_lfr(feats, feat_lens, self.options.lfr_m, self.options.lfr_n)
        return apply_cmvn(feats, feat_lens, Cmvn(self.shift, self.scale)), feat_lens


_INT_DTYPES = (torch.int64, torch.int32, torch.int16, torch.uint8, torch.int8)


def _check_batch(x: Tensor, lengths: Tensor, name: str, dims: int = 2) -> None:
    if x.dim() != dims or not x.is_floating_point():
        raise ValueError(f"{name} must be a {dims}-D float tensor, got {x.dtype} {tuple(x.shape)}")
    if lengths.shape != (x.shape[0],) or lengths.dtype not in _INT_DTYPES:
        raise ValueError(
            f"lengths must be a ({x.shape[0]},) int tensor matching {name}, "
            f"got {lengths.dtype} {tuple(lengths.shape)}"
        )
    if bool(((lengths < 0) | (lengths > x.shape[1])).any()):
        raise ValueError(
            f"lengths must lie in [0, {x.shape[1]}] for {name}, got {lengths.tolist()}"
        )
