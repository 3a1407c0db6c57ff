"""FSMN-VAD: FunASR's feed-forward sequential memory network VAD and its endpoint state machine.

A drop-in alternative to `zhuanxie.vad.SileroVad`: `FsmnVad(model_dir).segments(chunks, options)`
takes float32 mono 16 kHz chunks of any sizes and yields `SpeechSegment`s (16 kHz sample offsets,
with their audio) while the input is still being read. Segment boundaries are those of funasr
1.4.16's `FsmnVADStreaming` (`AutoModel(model="fsmn-vad").generate(...)`), frame for frame. Given
the same features the scores are bit-identical to funasr's; the features themselves come from
zhuanxie.frontend, within 1e-4 of funasr's kaldi-native-fbank (0 difference for most values), so a
frame whose p_sil lies within about 1e-6 of the speech threshold could be decided differently.
No clip or generated signal in the tests shows a difference in segments.

How a stream becomes segments:
- Features, per 10 ms frame: Kaldi fbank (zhuanxie.frontend), LFR stacking of 5 frames around each
  frame (2 left, 2 right, edges repeated), CMVN from the checkpoint's 400-dim am.mvn. The 2-frame
  look-ahead is held back until the next chunk arrives, as funasr's WavFrontendOnline does.
- Scores: the FSMN (4 layers of causal depthwise memory over 20 frames) runs once per chunk on all
  its new frames, carrying each layer's last 19 inputs to the next chunk, so any chunking gives the
  same scores as the whole file.
- Frame decisions, vectorised: speech iff (1 - p_sil) >= p_sil + speech_noise_thres (funasr's
  exp/log form, with speech_2_noise_ratio), the frame energy is above decibel_thres and its SNR
  against a running noise level (a 100-frame moving average over non-speech frames) above
  snr_thres.
- Endpoints: funasr's state machine (`DetectOneFrame`), which funasr runs as a Python call chain
  per 10 ms frame, here jumps from event to event: a 20-frame window count switches to speech at
  >= 15 speech frames and back at <= 15; a segment starts 40 frames (window + 200 ms look-back)
  before the switch, ends `max_end_silence_ms` into a silence (minus the 100 ms look-ahead kept),
  is cut at `max_single_segment_ms`, and the window restarts after every end. Window counts are
  cumulative sums; the next switch is found with `argmax` over precomputed comparisons.

Shapes: T' LFR frames (one per 10 ms), D = 400 features, C = 248 output classes.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor, nn

from zhuanxie.checkpoint import CheckpointError, read_config, read_json, read_state_dict, require
from zhuanxie.frontend import Cmvn, fbank, load_cmvn, options_from_config
from zhuanxie.vad import SAMPLE_RATE, Samples, SpeechSegment, _checked_pieces, _Tape

FRAME_SHIFT = 160  # samples per 10 ms frame: every FSMN-VAD decision is one frame
FRAME_LENGTH = 400  # samples in a frame's 25 ms analysis window (fbank and decibels)
FRAME_MS = 10
LFR_M = 5  # fbank frames stacked per LFR frame: 2 before, the frame itself, 2 after
LFR_CONTEXT = (LFR_M - 1) // 2
N_MELS = 80

# funasr 1.4.16's non-streaming schedule (`DEFAULT_SILENCE_SCHEDULE`): (limit, end silence) in ms.
# At each 60 s processing chunk funasr adds 60000 to an "accumulated speech" count if the chunk
# starts inside a segment (or the count is already running), resets it after a chunk that ended a
# segment, and takes the end silence of the first limit not below the count.
DEFAULT_SILENCE_SCHEDULE: tuple[tuple[float, int], ...] = (
    (10000, 2000),
    (20000, 1000),
    (30000, 800),
    (40000, 600),
    (50000, 400),
    (60000, 200),
    (math.inf, 100),
)
SCHEDULE_CHUNK_MS = 60000  # funasr's offline processing chunk, the step of the schedule
DYNAMIC_SPEECH_NOISE_THRES = 0.5  # funasr forces this whenever the schedule is on
# Audio gathered before each model step: tiny chunks would cost a model call per few frames, and a
# segment is final only after hundreds of milliseconds of silence anyway.
MIN_STEP = SAMPLE_RATE


@dataclass(frozen=True)
class FsmnDims:
    """Sizes of the FSMN encoder (`encoder_conf` of config.yaml); defaults are the published."""

    input_dim: int = 400
    input_affine_dim: int = 140
    fsmn_layers: int = 4
    linear_dim: int = 250
    proj_dim: int = 128
    lorder: int = 20
    output_affine_dim: int = 140
    output_dim: int = 248


@dataclass(frozen=True)
class FsmnVadOptions:
    """How frame scores become segments; funasr's `VADXOptions` defaults. Vary with `replace()`.

    Our default is the fixed 800 ms end silence with speech_noise_thres 0.6: the values in the
    published model's config.yaml, which funasr applied until 1.3.9 and its C++/ONNX runtimes still
    apply. funasr >= 1.3.9, unless the caller passes max_end_silence_time, applies a dynamic
    schedule instead (`dynamic_silence=True` here): speech_noise_thres 0.5 and 1850 ms of end
    silence, except in a 60 s processing chunk (of the whole input) that starts inside a segment:
    50 ms there, and 0 ms if that segment already spanned the whole chunk before. Its segments thus
    depend on where the 60 s chunk edges fall, are long (often several sentences) in the first
    chunk and after pauses, and are chopped at every breath after a chunk edge inside speech;
    sentence-sized segments suit Paraformer better. It is here for parity with funasr's default.
    """

    max_end_silence_ms: int = 800
    """Silence that ends a segment (funasr's max_end_silence_time), unless dynamic_silence."""
    speech_noise_thres: float = 0.6
    """A frame is speech if 1 - p_sil >= p_sil + this, unless dynamic_silence (then 0.5)."""
    dynamic_silence: bool = False
    """funasr >= 1.3.9's default: end silence from silence_schedule per 60 s processing chunk."""
    silence_schedule: tuple[tuple[float, int], ...] = DEFAULT_SILENCE_SCHEDULE
    """(accumulated speech ms, end silence ms) steps of the dynamic schedule."""
    max_single_segment_ms: int = 60000
    """Segments are cut when they reach this length."""
    window_size_ms: int = 200
    """Span of the speech/silence vote (20 frames)."""
    sil_to_speech_ms: int = 150
    """Speech frames in the window that switch it to speech (15)."""
    speech_to_sil_ms: int = 150
    """The window switches back to silence when it holds at most this much speech (15 frames);
    funasr also subtracts it from max_end_silence_ms."""
    do_extend: bool = True
    """Widen segments by lookback_start_ms before and lookahead_end_ms after the speech."""
    lookback_start_ms: int = 200
    """Audio kept before a start (on top of the window's latency)."""
    lookahead_end_ms: int = 100
    """Audio kept after the end of speech."""
    speech_2_noise_ratio: float = 1.0
    """Exponent on p_sil in the speech test: 1 - p_sil >= p_sil ** ratio + threshold."""
    decibel_thres: float = -100.0
    """Frames quieter than this (dB of the 25 ms window's sum of squares) are silence."""
    snr_thres: float = -100.0
    """Frames whose energy is less than this above the running noise level are silence."""
    noise_frames_for_snr: int = 100
    """Length of the noise level's moving average, over non-speech frames."""
    sil_pdf_ids: tuple[int, ...] = (0,)
    """Output classes whose probabilities add up to p_sil."""

    def __post_init__(self) -> None:
        for name in ("window_size_ms", "max_single_segment_ms", "noise_frames_for_snr"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, not {getattr(self, name)!r}")
        for name in ("lookback_start_ms", "lookahead_end_ms", "sil_to_speech_ms"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, not {getattr(self, name)!r}")
        if self.window_size_ms < FRAME_MS:
            raise ValueError(f"window_size_ms must be at least one frame ({FRAME_MS} ms)")
        if not self.do_extend and self.max_end_silence_ms < self.speech_to_sil_ms:
            # funasr would end such segments in frames it has not yet seen
            raise ValueError("without do_extend, max_end_silence_ms must be >= speech_to_sil_ms")
        if not self.sil_pdf_ids or min(self.sil_pdf_ids) < 0:
            raise ValueError(f"sil_pdf_ids must be non-empty class ids, not {self.sil_pdf_ids!r}")
        if self.speech_2_noise_ratio <= 0:
            raise ValueError(f"speech_2_noise_ratio must be > 0, not {self.speech_2_noise_ratio}")
        limits = [limit for limit, _ in self.silence_schedule]
        if not limits or limits != sorted(limits) or limits[-1] != math.inf:
            raise ValueError("silence_schedule limits must increase and end with math.inf")

    def end_silence_ms(self, accumulated_ms: float) -> float:
        """The end-silence threshold funasr compares a silence's length against (ms)."""
        if not self.dynamic_silence:
            return self.max_end_silence_ms - self.speech_to_sil_ms
        silence = next(ms for limit, ms in self.silence_schedule if accumulated_ms <= limit)
        return max(silence - self.speech_to_sil_ms, 0)

    @property
    def speech_threshold(self) -> float:
        """The speech_noise_thres in force."""
        return DYNAMIC_SPEECH_NOISE_THRES if self.dynamic_silence else self.speech_noise_thres


# config.yaml model_conf keys -> our option names.
_CONFIG_OPTIONS = {
    "max_end_silence_time": "max_end_silence_ms",
    "speech_noise_thres": "speech_noise_thres",
    "max_single_segment_time": "max_single_segment_ms",
    "window_size_ms": "window_size_ms",
    "sil_to_speech_time_thres": "sil_to_speech_ms",
    "speech_to_sil_time_thres": "speech_to_sil_ms",
    "do_extend": "do_extend",
    "lookback_time_start_point": "lookback_start_ms",
    "lookahead_time_end_point": "lookahead_end_ms",
    "speech_2_noise_ratio": "speech_2_noise_ratio",
    "decibel_thres": "decibel_thres",
    "snr_thres": "snr_thres",
    "noise_frame_num_used_for_snr": "noise_frames_for_snr",
    "sil_pdf_ids": "sil_pdf_ids",
}
# model_conf keys that must hold the value funasr's inference path needs from them.
_CONFIG_FIXED: dict[str, Any] = {
    "sample_rate": SAMPLE_RATE,
    "frame_in_ms": FRAME_MS,
    "frame_length_ms": 25,
    "detect_mode": 1,  # multiple utterances; single-utterance mode stops at the first end
}
# model_conf keys funasr reads but that cannot change offline segments.
_CONFIG_INERT = {
    "snr_mode",  # never read
    "max_start_silence_time",  # single-utterance mode only
    "do_start_point_detection",  # both only guard `pass` statements
    "do_end_point_detection",
    "nn_eval_block_size",  # overwritten with the chunk's frame count
    "dcd_block_size",
    "silence_pdf_num",  # must equal len(sil_pdf_ids): checked
    "fe_prior_thres",  # compared with 1.0: inert below 1, checked
    "speech_noise_thresh_low",
    "speech_noise_thresh_high",
    "output_frame_probs",  # debugging output
}


def options_from_model_conf(conf: Mapping[str, Any], source: str = "config") -> FsmnVadOptions:
    """Options from the `model_conf` of an FSMN-VAD config.yaml (missing keys: funasr defaults)."""
    unknown = sorted(set(conf) - set(_CONFIG_OPTIONS) - set(_CONFIG_FIXED) - _CONFIG_INERT)
    if unknown:
        raise CheckpointError(f"{source}: model_conf has unknown keys {unknown}")
    for key, want in _CONFIG_FIXED.items():
        if key in conf and conf[key] != want:
            raise CheckpointError(f"{source}: model_conf.{key} is {conf[key]!r}; only {want!r}")
    if float(conf.get("fe_prior_thres", 1e-4)) >= 1.0:
        raise CheckpointError(f"{source}: model_conf.fe_prior_thres >= 1 silences every frame")
    ids = tuple(int(i) for i in conf.get("sil_pdf_ids", [0]))
    if int(conf.get("silence_pdf_num", len(ids))) != len(ids):
        raise CheckpointError(f"{source}: model_conf.silence_pdf_num != len(sil_pdf_ids)")
    kinds = {f.name: type(getattr(FsmnVadOptions(), f.name)) for f in fields(FsmnVadOptions)}
    values: dict[str, Any] = {}
    for key, name in _CONFIG_OPTIONS.items():
        if key in conf:
            values[name] = ids if name == "sil_pdf_ids" else kinds[name](conf[key])
    try:
        return FsmnVadOptions(**values)
    except ValueError as error:
        raise CheckpointError(f"{source}: model_conf: {error}") from None


class Affine(nn.Module):
    """A linear map under funasr's `<name>.linear.*` keys."""

    def __init__(self, d_in: int, d_out: int, bias: bool = True) -> None:
        super().__init__()
        self.linear = nn.Linear(d_in, d_out, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(x)


class Memory(nn.Module):
    """Causal depthwise memory: y_t = x_t + sum_k w_k x_{t-19+k} (funasr `FSMNBlock`, rorder 0)."""

    def __init__(self, dim: int, lorder: int) -> None:
        super().__init__()
        self.conv_left = nn.Conv2d(dim, dim, (lorder, 1), groups=dim, bias=False)

    def forward(self, x: Tensor, history: Tensor) -> tuple[Tensor, Tensor]:
        """(B, T', P) inputs and (B, lorder-1, P) previous inputs -> outputs, new history."""
        padded = torch.cat([history, x], dim=1)  # (B, lorder-1+T', P)
        # As a (B, P, time, 1) view this is channels-last, which the depthwise convolution reads
        # and writes natively: no transposed copies.
        memory = self.conv_left(padded.unsqueeze(2).permute(0, 3, 1, 2))  # (B, P, T', 1)
        return x + memory.permute(0, 2, 3, 1).flatten(2), padded[:, x.shape[1] :]


class FsmnLayer(nn.Module):
    """Project, add memory, expand, ReLU (funasr `BasicBlock`)."""

    def __init__(self, dims: FsmnDims) -> None:
        super().__init__()
        self.linear = Affine(dims.linear_dim, dims.proj_dim, bias=False)
        self.fsmn_block = Memory(dims.proj_dim, dims.lorder)
        self.affine = Affine(dims.proj_dim, dims.linear_dim)

    def forward(self, x: Tensor, history: Tensor) -> tuple[Tensor, Tensor]:
        memory, history = self.fsmn_block(self.linear(x), history)
        return torch.relu_(self.affine(memory)), history


class Fsmn(nn.Module):
    """The FSMN encoder: (B, T', D) features -> (B, T', C) class probabilities."""

    def __init__(self, dims: FsmnDims) -> None:
        super().__init__()
        self.dims = dims
        self.in_linear1 = Affine(dims.input_dim, dims.input_affine_dim)
        self.in_linear2 = Affine(dims.input_affine_dim, dims.linear_dim)
        self.fsmn = nn.ModuleList(FsmnLayer(dims) for _ in range(dims.fsmn_layers))
        self.out_linear1 = Affine(dims.linear_dim, dims.output_affine_dim)
        self.out_linear2 = Affine(dims.output_affine_dim, dims.output_dim)

    def initial_state(self, batch: int = 1) -> list[Tensor]:
        """Per layer, (B, lorder-1, P) zeros: the memory's left padding before the first frame."""
        weight = self.out_linear2.linear.weight
        shape = (batch, self.dims.lorder - 1, self.dims.proj_dim)
        return [weight.new_zeros(shape) for _ in self.fsmn]

    def forward(self, x: Tensor, state: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
        """Probabilities for (B, T', D) features, continuing from `state`; returns the new state."""
        x = torch.relu_(self.in_linear2(self.in_linear1(x)))  # (B, T', linear_dim)
        new_state = []
        for layer, history in zip(self.fsmn, state, strict=True):
            x, history = layer(x, history)
            new_state.append(history)
        logits = self.out_linear2(self.out_linear1(x))  # (B, T', C)
        return torch.softmax(logits, dim=-1), new_state


class FsmnVadModel(nn.Module):
    """The network of a `FsmnVADStreaming` checkpoint; keys match model.pt one to one."""

    def __init__(self, dims: FsmnDims) -> None:
        super().__init__()
        self.encoder = Fsmn(dims)


def dims_from_config(config: Mapping[str, Any], source: str = "config") -> FsmnDims:
    """Encoder sizes from an FSMN-VAD config.yaml, which must describe funasr's streaming VAD."""
    if config.get("model") != "FsmnVADStreaming":
        raise CheckpointError(f"{source}: model is {config.get('model')!r}, not FsmnVADStreaming")
    if config.get("encoder") != "FSMN":
        raise CheckpointError(f"{source}: encoder is {config.get('encoder')!r}, not FSMN")
    conf = config.get("encoder_conf") or {}
    if not isinstance(conf, Mapping):
        raise CheckpointError(f"{source}: encoder_conf must be a mapping")
    for key, want in (("rorder", 0), ("lstride", 1), ("use_softmax", True)):
        if conf.get(key, want) != want:
            raise CheckpointError(f"{source}: encoder_conf.{key} must be {want!r}")
    defaults = FsmnDims()
    try:
        dims = FsmnDims(
            **{f.name: int(conf.get(f.name, getattr(defaults, f.name))) for f in fields(FsmnDims)}
        )
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"{source}: encoder_conf has a non-integer size ({error})") from None
    if dims.input_dim != N_MELS * LFR_M:
        raise CheckpointError(f"{source}: encoder_conf.input_dim must be {N_MELS * LFR_M}")
    return dims


@dataclass(frozen=True)
class FsmnVadFiles:
    """Where the parts of an official FSMN-VAD directory are."""

    config: Path
    weights: Path
    cmvn: Path


def locate_fsmn_vad(directory: str | Path) -> FsmnVadFiles:
    """The files of an official FSMN-VAD directory, honouring configuration.json."""
    root = Path(directory)
    if not root.is_dir():
        raise CheckpointError(f"model directory {root} does not exist or is not a directory")
    names = {"init_param": "model.pt", "config": "config.yaml", "cmvn_file": "am.mvn"}
    meta = root / "configuration.json"
    if meta.exists():
        metas = read_json(meta).get("file_path_metas", {})
        if not isinstance(metas, dict):
            raise CheckpointError(f"{meta}: 'file_path_metas' must be an object")
        frontend = metas.get("frontend_conf", {})
        if isinstance(frontend, dict) and isinstance(frontend.get("cmvn_file"), str):
            names["cmvn_file"] = frontend["cmvn_file"]
        names |= {k: v for k, v in metas.items() if k in names and isinstance(v, str)}
    return FsmnVadFiles(
        config=require(root / names["config"], "the model configuration"),
        weights=require(root / names["init_param"], "the model weights"),
        cmvn=require(root / names["cmvn_file"], "the feature normalisation statistics (CMVN)"),
    )


def check_frontend(config: Mapping[str, Any], source: str) -> None:
    """The front end must be funasr's fbank with LFR 5/1, all this module implements."""
    if config.get("frontend") not in ("WavFrontendOnline", "WavFrontend"):
        raise CheckpointError(f"{source}: frontend {config.get('frontend')!r} is not supported")
    try:
        options = options_from_config(config.get("frontend_conf") or {})
    except ValueError as error:
        raise CheckpointError(f"{source}: {error}") from None
    if (options.n_mels, options.lfr_m, options.lfr_n) != (N_MELS, LFR_M, 1):
        raise CheckpointError(f"{source}: frontend_conf must have n_mels 80, lfr_m 5, lfr_n 1")
    if (options.frame_length_ms, options.frame_shift_ms) != (25, FRAME_MS):
        raise CheckpointError(f"{source}: frontend_conf must have 25 ms frames every 10 ms")


def load_weights(model: FsmnVadModel, state: Mapping[str, Tensor], source: str) -> None:
    """Fill every parameter from an official state dict, or fail listing what does not fit."""
    ours = model.state_dict()
    missing = sorted(set(ours) - set(state))
    unexpected = sorted(set(state) - set(ours))
    mis_shaped = [
        f"{k}: checkpoint {tuple(v.shape)}, model {tuple(ours[k].shape)}"
        for k, v in state.items()
        if k in ours and v.shape != ours[k].shape
    ]
    problems = [
        f"{what} ({len(keys)}): {', '.join(keys[:20])}"
        for what, keys in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("shape mismatches", mis_shaped),
        )
        if keys
    ]
    if problems:
        raise CheckpointError(f"{source} does not match config.yaml: " + " | ".join(problems))
    model.load_state_dict(state, strict=True)


class _Features:
    """One stream's fbank -> LFR(5, 1) -> CMVN frames and frame decibels, chunk by chunk.

    LFR frame t stacks fbank frames t-2 .. t+2 (clamped to the stream), so frame t is emitted
    once fbank frame t+2 exists, or at `finish`. Frame t's 25 ms window is samples
    [160 t, 160 t + 400), the window of fbank frame t.
    """

    def __init__(self, cmvn: Cmvn) -> None:
        self._cmvn = cmvn
        self._rest = np.zeros(0, dtype=np.float32)  # samples from fbank frame `_fbanks` on
        self._fbanks = 0  # fbank frames computed
        self._emitted = 0  # LFR frames emitted
        self._recent = torch.zeros(0, N_MELS)  # fbank frames max(0, _emitted - 2) .. _fbanks
        self.samples = 0  # samples received

    def push(self, samples: Samples) -> tuple[Tensor, npt.NDArray[np.float64]]:
        """(T', D) new feature frames and their (T',) decibels."""
        self.samples += len(samples)
        wave = np.concatenate([self._rest, samples])
        count = (len(wave) - FRAME_LENGTH) // FRAME_SHIFT + 1 if len(wave) >= FRAME_LENGTH else 0
        used = (count - 1) * FRAME_SHIFT + FRAME_LENGTH if count else 0
        feats = torch.zeros(0, N_MELS)
        if count:
            waves = torch.from_numpy(wave[:used])[None]
            feats = fbank(waves, torch.tensor([used]))[0][0]
        self._rest = wave[count * FRAME_SHIFT :]
        self._fbanks += count
        self._recent = torch.cat([self._recent, feats])
        return self._stack(self._fbanks - LFR_CONTEXT), _decibels(wave[:used], count)

    def finish(self) -> Tensor:
        """The last frames (right context clamped to the last fbank frame); decibels came before."""
        return self._stack(self._fbanks)

    def _stack(self, end: int) -> Tensor:
        """LFR + CMVN frames _emitted .. end."""
        first = max(0, self._emitted - LFR_CONTEXT)  # fbank index of _recent[0]
        if end <= self._emitted:
            return torch.zeros(0, N_MELS * LFR_M)
        frames = torch.arange(self._emitted, end)[:, None] + torch.arange(
            -LFR_CONTEXT, LFR_CONTEXT + 1
        )
        index = frames.clamp(0, self._fbanks - 1) - first
        stacked = self._recent[index].reshape(end - self._emitted, N_MELS * LFR_M)
        self._emitted = end
        self._recent = self._recent[max(0, end - LFR_CONTEXT) - first :]
        return (stacked + self._cmvn.shift) * self._cmvn.scale  # CMVN, in funasr's op order


def _decibels(wave: Samples, count: int) -> npt.NDArray[np.float64]:
    """10 log10(sum of squares + 1e-6) over each frame's 400 samples, bit for bit as funasr's
    `np.sum(np.square(frames), axis=1)`, without gathering the overlapping frames (6x faster).

    numpy adds 400 float32 values pairwise: two halves of 200, each split 96 + 104, each of those
    summed in 8 interleaved lanes that are then combined as ((0+1)+(2+3))+((4+5)+(6+7)). Frames
    start every 160 samples, a multiple of 8, so one lane of one block is a strided column of the
    squared wave viewed as rows of 8, for all frames at once. tests/test_fsmn_vad.py checks the
    bits against np.sum.
    """
    if count == 0:
        return np.zeros(0)
    rows = np.square(wave[: (count - 1) * FRAME_SHIFT + FRAME_LENGTH]).reshape(-1, 8)
    hop = FRAME_SHIFT // 8
    span = hop * (count - 1) + 1  # rows from a frame's first row to the last frame's

    def block(first: int, size: int) -> npt.NDArray[np.float32]:
        lanes = rows[first : first + span : hop].copy()  # (count, 8)
        for row in range(first + 1, first + size // 8):
            lanes += rows[row : row + span : hop]
        pairs = lanes[:, 0::2] + lanes[:, 1::2]
        return (pairs[:, 0] + pairs[:, 1]) + (pairs[:, 2] + pairs[:, 3])

    energy = (block(0, 96) + block(12, 104)) + (block(25, 96) + block(37, 104))
    return (10 * np.log10(energy + np.float32(1e-6))).astype(np.float64)


class _FrameJudge:
    """Speech/silence per frame (funasr `GetFrameState`), with the running noise level."""

    def __init__(self, options: FsmnVadOptions) -> None:
        self._options = options
        self._threshold = options.speech_threshold
        self._noise_db = -100.0  # funasr's initial noise_average_decibel, "unset" below -99.9

    def __call__(
        self, p_sil: npt.NDArray[np.float64], decibels: npt.NDArray[np.float64]
    ) -> npt.NDArray[np.bool_]:
        """(T',) speech flags for frames with silence probabilities p_sil and decibels."""
        opts = self._options
        loud = decibels >= opts.decibel_thres
        voiced = _speech_test(p_sil, opts.speech_2_noise_ratio, self._threshold)
        # The noise level each frame is judged against: the moving average after the loud
        # non-voiced frames before it (funasr updates it only on those).
        noise = np.flatnonzero(loud & ~voiced)
        levels = np.array([self._noise_db, *self._noise_levels(decibels[noise])])
        level = levels[np.searchsorted(noise, np.arange(len(p_sil)))]
        return loud & voiced & (decibels - level >= opts.snr_thres)

    def _noise_levels(self, decibels: npt.NDArray[np.float64]) -> list[float]:
        """The noise level after each of these noise frames (a sequential recurrence)."""
        n = self._options.noise_frames_for_snr
        level, out = self._noise_db, []
        for db in decibels.tolist():
            level = db if level < -99.9 else (db + level * (n - 1)) / n
            out.append(level)
        self._noise_db = level
        return out


def _speech_test(
    p_sil: npt.NDArray[np.float64], ratio: float, threshold: float
) -> npt.NDArray[np.bool_]:
    """funasr's test exp(log(1 - p)) >= exp(log(p) * ratio) + threshold, per frame.

    numpy's exp/log may differ from the math module's in the last bit, so frames within a hair
    of the threshold are decided again with `math`, as funasr does. (funasr raises on p_sil of
    exactly 0 or 1; the limits are taken here.)
    """
    with np.errstate(divide="ignore"):
        speech = np.exp(np.log(1.0 - p_sil))
        noise = np.exp(np.log(p_sil) * ratio) + threshold
    voiced = speech >= noise
    inside = (p_sil > 0.0) & (p_sil < 1.0)
    for i in np.flatnonzero(inside & (np.abs(speech - noise) <= 1e-12)).tolist():
        p = float(p_sil[i])
        voiced[i] = math.exp(math.log(1.0 - p)) >= math.exp(math.log(p) * ratio) + threshold
    return voiced


class _Endpointer:
    """funasr's endpoint state machine (`DetectOneFrame` and the `On*` callbacks it drives).

    Fed speech flags frame by frame, it returns finished segments as (first frame, end frame)
    pairs. Frame by frame, funasr keeps a 20-frame window count, a silence run length and the
    "data buffer start" frame; this class keeps the same state but only visits the frames where
    something happens: a window switch, the end silence reached, the length limit, the last
    frame, or (dynamic schedule) a 60 s processing-chunk edge.
    """

    def __init__(self, options: FsmnVadOptions) -> None:
        self._opts = options
        frames = options.window_size_ms // FRAME_MS
        self._win = frames
        self._to_speech = options.sil_to_speech_ms // FRAME_MS
        self._to_silence = options.speech_to_sil_ms // FRAME_MS
        lookback = options.lookback_start_ms // FRAME_MS if options.do_extend else 0
        self._latency = frames + lookback  # frames a start is moved back from the switch
        self._kept = options.lookahead_end_ms // FRAME_MS if options.do_extend else 0
        self._max_offset = math.floor(options.max_single_segment_ms / FRAME_MS)
        # Frames, from _base on, with their window prefix sums and switch conditions.
        self._base = 0
        self._flags = np.zeros(0, dtype=np.bool_)
        self._sums = np.zeros(1, dtype=np.int64)
        self._high = self._low = np.zeros(0, dtype=np.bool_)
        # funasr's state.
        self._t = 0  # next frame to decide
        self._reset_at = 0  # the window counts frames from here
        self._in_segment = False
        self._window_speech = False  # the window detector's state
        self._silence_run = 0  # continous_silence_frame_count
        self._buffer_start = 0  # data_buf_start_frame: new starts are not before it
        self._last_pop = -1  # last frame added to the open segment
        self._start = -1  # first frame of the open segment
        # The end-silence rule in force, and the dynamic schedule's bookkeeping.
        self._accumulated = 0
        self._accumulating = False
        self._ended_in_chunk = False
        self._chunk = 0
        self._set_end_silence(options.end_silence_ms(0))

    @property
    def keep_from(self) -> int:
        """No future segment starts before this frame."""
        if self._in_segment:
            return self._start
        return max(self._buffer_start, self._t - self._latency, 0)

    def push(
        self, flags: npt.NDArray[np.bool_], samples: int, final: bool
    ) -> list[tuple[int, int]]:
        """Decide new frames; without `final` the newest frame waits, as it may be the last.

        samples: all samples received so far (chunk edges of the schedule depend on it).
        """
        self._flags = np.concatenate([self._flags, flags])
        self._refresh()
        end = self._base + len(self._flags)
        last = end - 1 if final else None
        limit = end if final else end - 1
        found: list[tuple[int, int]] = []
        while self._t < limit:
            stop = limit
            if self._opts.dynamic_silence:
                edge, chunk_samples = self._chunk_edge(self._chunk + 1)
                if self._t == edge and samples >= chunk_samples:
                    self._next_chunk()
                    continue
                if self._t < edge:
                    stop = min(stop, edge)
            while self._t < stop:
                if not self._in_segment:
                    self._silence_step(stop)
                elif (segment := self._segment_step(stop, last)) is not None:
                    found.append(segment)
        if final and self._in_segment:
            found.append((self._start, self._last_pop + 1))  # opened on the last frame
            self._in_segment = False
        self._trim()
        return found

    def _chunk_edge(self, chunk: int) -> tuple[int, int]:
        """First frame funasr decides in processing chunk `chunk`, and that chunk's first sample."""
        first_sample = chunk * SCHEDULE_CHUNK_MS * SAMPLE_RATE // 1000
        return (first_sample - FRAME_LENGTH) // FRAME_SHIFT - 1, first_sample

    def _next_chunk(self) -> None:
        """The schedule at a chunk edge (funasr `inference`, before each chunk's features)."""
        if self._ended_in_chunk:
            self._accumulated, self._accumulating = 0, False
        self._ended_in_chunk = False
        if self._in_segment or self._accumulating:
            self._accumulated += SCHEDULE_CHUNK_MS
            self._accumulating = True
        self._set_end_silence(self._opts.end_silence_ms(self._accumulated))
        self._chunk += 1

    def _set_end_silence(self, threshold_ms: float) -> None:
        # A silence run of n frames ends the segment once n * 10 ms >= threshold_ms (n >= 1),
        # at the frame `back` frames before; funasr keeps `lookahead` of the silence.
        self._end_run = max(1, math.ceil(threshold_ms / FRAME_MS))
        back = int(threshold_ms / FRAME_MS)
        if self._opts.do_extend:
            back = max(0, back - self._opts.lookahead_end_ms // FRAME_MS - 1)
        self._end_back = back

    def _silence_step(self, stop: int) -> None:
        """Outside a segment: skip to the window's switch to speech and open a segment there."""
        switch = self._find(True, self._t, stop)
        quiet_end = switch - 1  # funasr moves the buffer start along during the silence
        if quiet_end >= self._t and quiet_end >= self._latency:
            self._buffer_start = max(self._buffer_start, quiet_end - self._latency)
        if switch == stop:
            self._t = stop
            return
        self._start = max(self._buffer_start, switch - self._latency)
        self._in_segment = self._window_speech = True
        self._silence_run = 0
        self._last_pop = switch
        self._t = switch + 1

    def _segment_step(self, stop: int, last: int | None) -> tuple[int, int] | None:
        """Inside a segment: skip to the next window switch, or end the segment on the way."""
        deadline = self._start + self._max_offset  # funasr: t - start + 1 > max frames
        final = last if last is not None else stop  # `stop` is never decided in this call
        if self._window_speech:
            # Speech frames up to and including the switch to silence: only the length limit
            # or the last frame can end the segment there.
            switch = self._find(False, self._t, stop)
            event = min(deadline, final)
            if event <= min(switch, stop - 1):
                return self._end(event, event)
            self._last_pop = min(switch, stop - 1)
            self._t = min(switch + 1, stop)
            if switch < stop:
                self._window_speech, self._silence_run = False, 0
            return None
        # A silence run: the end silence (checked first), the length limit or the last frame
        # may come before the window switches back to speech.
        run = self._silence_run
        switch = self._find(True, self._t, stop)
        quiet = self._t + max(0, self._end_run - run - 1)  # frame where the run is long enough
        event = min(quiet, deadline, final)
        if event < min(switch, stop):
            self._pop_silence(event, run)
            return self._end(event - self._end_back if event == quiet else event, event)
        upto = min(switch, stop)
        self._pop_silence(upto, run)
        self._silence_run = run + upto - self._t
        self._t = upto
        if switch == stop:
            return None
        self._window_speech, self._silence_run = True, 0
        if switch >= deadline or switch == final:
            return self._end(switch, switch)
        self._last_pop = switch
        self._t = switch + 1
        return None

    def _pop_silence(self, stop: int, run: int) -> None:
        """funasr keeps the first `lookahead` frames of a silence run in the segment."""
        last = min(stop - 1, self._t + self._kept - run - 1)
        if last >= self._t:
            self._last_pop = max(self._last_pop, last)

    def _end(self, end: int, decided_at: int) -> tuple[int, int]:
        """Close the segment at frame `end` (funasr `OnVoiceEnd`, then `ResetDetection`)."""
        self._last_pop = max(self._last_pop, end - 1)
        self._buffer_start = max(self._last_pop + 1, end) + 1
        segment = (self._start, end + 1)
        self._in_segment = self._window_speech = False
        self._silence_run = 0
        self._reset_at = self._t = decided_at + 1
        self._ended_in_chunk = True
        return segment

    def _refresh(self) -> None:
        """Window counts of every held frame as if the window never restarted, and switches."""
        sums = np.zeros(len(self._flags) + 1, dtype=np.int64)
        np.cumsum(self._flags, out=sums[1:])
        frames = np.arange(len(self._flags))
        counts = sums[1:] - sums[np.maximum(frames - self._win + 1, 0)]
        self._sums = sums
        self._high = counts >= self._to_speech
        self._low = counts <= self._to_silence

    def _find(self, to_speech: bool, start: int, stop: int) -> int:
        """First frame in [start, stop) where the window switches to speech (or to silence)."""
        base = self._base
        partial_end = min(stop, self._reset_at + self._win - 1)
        if start < partial_end:  # the window restarted less than a window ago
            counts = self._sums[start - base + 1 : partial_end - base + 1]
            counts = counts - self._sums[self._reset_at - base]
            hits = counts >= self._to_speech if to_speech else counts <= self._to_silence
            if hits.any():
                return start + int(np.argmax(hits))
            start = partial_end
        if start >= stop:
            return stop
        hits = (self._high if to_speech else self._low)[start - base : stop - base]
        first = int(np.argmax(hits))
        return start + first if hits[first] else stop

    def _trim(self) -> None:
        """Forget frames no window needs any more."""
        drop = max(0, self._t - (self._win - 1)) - self._base
        if drop > 0:
            self._flags = self._flags[drop:]
            self._base += drop


class FsmnVad:
    """FunASR's FSMN-VAD, loaded from an official model directory (CPU; small enough for it).

    Safe to share between threads: each call keeps its own stream state.
    """

    def __init__(self, model_dir: str | Path) -> None:
        """Load config.yaml, am.mvn and model.pt strictly; CheckpointError names a bad file."""
        files = locate_fsmn_vad(model_dir)
        config = read_config(files.config)
        source = str(files.config)
        self.dims = dims_from_config(config, source)
        check_frontend(config, source)
        # The checkpoint's own options (its config.yaml model_conf), for calls that give none.
        self.options = options_from_model_conf(config.get("model_conf") or {}, source)
        try:
            self._cmvn = load_cmvn(files.cmvn)
        except ValueError as error:
            raise CheckpointError(str(error)) from None
        if self._cmvn.dim != self.dims.input_dim:
            raise CheckpointError(
                f"{files.cmvn} has {self._cmvn.dim} dims; the model takes {self.dims.input_dim}"
            )
        self.model = FsmnVadModel(self.dims).eval()
        load_weights(self.model, read_state_dict(files.weights), str(files.weights))

    def silence_probabilities(
        self, chunks: Iterable[Samples], sil_pdf_ids: tuple[int, ...] = (0,)
    ) -> npt.NDArray[np.float64]:
        """(T',) p_sil of every 10 ms frame: the sum of the sil_pdf_ids class probabilities."""
        parts = [scores.p_sil for scores in self._scores(chunks, sil_pdf_ids)]
        return np.concatenate(parts)

    def segments(
        self, chunks: Iterable[Samples], options: FsmnVadOptions | None = None
    ) -> Iterator[SpeechSegment]:
        """Speech segments of one stream, in order, each yielded as soon as it is final."""
        options = options or self.options
        judge, endpointer, audio = _FrameJudge(options), _Endpointer(options), _Tape()
        for scores in self._scores(chunks, options.sil_pdf_ids):
            audio.append(scores.audio)
            flags = judge(scores.p_sil, scores.decibels)
            for first, end in endpointer.push(flags, scores.samples, scores.final):
                start, stop = first * FRAME_SHIFT, end * FRAME_SHIFT
                yield SpeechSegment(start, stop, audio.take(start, stop))
            audio.drop_before(endpointer.keep_from * FRAME_SHIFT)

    @torch.inference_mode()
    def _scores(self, chunks: Iterable[Samples], sil_pdf_ids: tuple[int, ...]) -> Iterator[_Scores]:
        """Frame scores chunk by chunk, with the audio they were computed from; the last is final."""
        if max(sil_pdf_ids) >= self.dims.output_dim:
            raise ValueError(
                f"sil_pdf_ids {sil_pdf_ids} must be below the model's {self.dims.output_dim} classes"
            )
        features = _Features(self._cmvn)
        state = self.model.encoder.initial_state()
        decibels = np.zeros(0)  # of fbank frames whose LFR frame is not out yet

        def scored(feats: Tensor, audio: Samples, final: bool) -> _Scores:
            nonlocal state, decibels
            p_sil = np.zeros(len(feats))
            if len(feats):
                probs, state = self.model.encoder(feats[None], state)
                for index in sil_pdf_ids:  # added in order, in float64, as funasr's sum()
                    p_sil = p_sil + probs[0, :, index].double().numpy()
            frame_db, decibels = decibels[: len(feats)], decibels[len(feats) :]
            return _Scores(audio, p_sil, frame_db, features.samples, final)

        for piece in _gathered(_checked_pieces(chunks), MIN_STEP):
            feats, piece_db = features.push(piece)
            decibels = np.concatenate([decibels, piece_db])
            yield scored(feats, piece, False)
        yield scored(features.finish(), np.zeros(0, dtype=np.float32), True)


def _gathered(pieces: Iterable[Samples], minimum: int) -> Iterator[Samples]:
    """The pieces joined into runs of at least `minimum` samples (the last may be shorter)."""
    held: list[Samples] = []
    size = 0
    for piece in pieces:
        held.append(piece)
        size += len(piece)
        if size >= minimum:
            yield np.concatenate(held) if len(held) > 1 else held[0]
            held, size = [], 0
    if held:
        yield np.concatenate(held)


@dataclass(frozen=True, eq=False)
class _Scores:
    """What one chunk of a stream adds: its audio and its new frames' scores."""

    audio: Samples
    p_sil: npt.NDArray[np.float64] = field(repr=False)
    decibels: npt.NDArray[np.float64] = field(repr=False)
    samples: int  # received so far
    final: bool
