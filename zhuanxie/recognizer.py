"""The Python API: load an official model directory, transcribe waveforms.

model = zhuanxie.load_model("path/to/seaco-paraformer", device="cpu", dtype="float32")
recognizer = zhuanxie.Recognizer(model)
transcript = recognizer.transcribe(wave, hotwords=["魔搭"])
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from zhuanxie.checkpoint import (
    dims_from_config,
    load_weights,
    locate_files,
    read_config,
    read_state_dict,
)
from zhuanxie.decoding import Decoded, decode_batch
from zhuanxie.frontend import SAMPLE_RATE, Frontend, load_cmvn, options_from_config
from zhuanxie.hotwords import HotwordEncoder, hotwords_found, normalize_hotwords
from zhuanxie.model import ModelDims, Paraformer
from zhuanxie.result import Segment, Token, Transcript
from zhuanxie.text import postprocess
from zhuanxie.tokenizer import TokenList, load_seg_dict, load_token_list

# "int8" keeps float32 activations and quantises Linear weights dynamically (CPU only).
DTYPES = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "int8": torch.float32,
}

Audio = np.ndarray | Tensor


@dataclass(frozen=True)
class Model:
    """A loaded model directory: the network plus everything needed around it."""

    network: Paraformer
    dims: ModelDims
    frontend: Frontend
    tokens: TokenList
    seg_dict: dict[str, list[str]] | None
    directory: Path
    device: torch.device
    dtype: torch.dtype


def load_model(path: str | Path, device: str = "cpu", dtype: str = "float32") -> Model:
    """Load an official model directory (``model.pt``, ``config.yaml``, ``am.mvn``, tokens…)."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r} is not one of {', '.join(DTYPES)}")
    torch_device = torch.device(device)
    torch_dtype = DTYPES[dtype]
    if torch_device.type == "cpu" and torch_dtype == torch.float16:
        warnings.warn(
            "float16 on CPU is slow and less accurate; use bfloat16 or float32 on CPU",
            stacklevel=2,
        )
    if dtype == "int8" and torch_device.type != "cpu":
        raise ValueError(f"dtype 'int8' runs on the CPU only, not on {device}")
    files = locate_files(path)
    config = read_config(files.config)
    tokens = load_token_list(files.tokens)
    dims = dims_from_config(config, len(tokens), source=str(files.config))
    network = Paraformer(dims)
    load_weights(network, read_state_dict(files.weights), str(files.weights))
    network.eval().to(torch_device, torch_dtype)
    # CIF integrates weights over hundreds of frames: keep it in float32 at any model dtype.
    network.predictor.float()
    if dtype == "int8":
        quantize_int8(network)
    frontend = Frontend(
        load_cmvn(files.cmvn), options_from_config(config.get("frontend_conf") or {})
    ).to(torch_device)
    seg_dict = load_seg_dict(files.seg_dict) if files.seg_dict else None
    return Model(
        network, dims, frontend, tokens, seg_dict, files.directory, torch_device, torch_dtype
    )


def quantize_int8(network: Paraformer) -> None:
    """Dynamic int8 quantisation of the Linear layers of the encoder and decoders, and of the
    timestamp BLSTM, in place.

    The CIF weights stay float32: they decide how many tokens there are, and a quantisation
    error there changes the transcript's length rather than one token. The BLSTM only places
    tokens in time, and as float32 it was a fifth of the int8 model's time (a step per 20 ms,
    each reading all its weights); int8 makes it three times faster.
    """
    from torch.ao.quantization import quantize_dynamic

    targets: list[tuple[torch.nn.Module, str, type[torch.nn.Module]]] = [
        (network, name, torch.nn.Linear)
        for name in ("encoder", "decoder", "seaco_decoder", "hotword_output_layer")
        if hasattr(network, name)
    ]
    if network.predictor.dims.upsample_times:
        targets.append((network.predictor, "blstm", torch.nn.LSTM))
    with warnings.catch_warnings():
        # Deprecated in favour of torchao, which this project does not depend on; still the
        # eager-mode path PyTorch ships for CPU int8 Linear and LSTM layers.
        warnings.simplefilter("ignore")
        for owner, name, kind in targets:
            wrapped = torch.nn.Sequential(getattr(owner, name))  # it skips a bare root module
            quantized = quantize_dynamic(wrapped, {kind}, torch.qint8)  # type: ignore[no-untyped-call]
            setattr(owner, name, quantized[0])


class Recognizer:
    """Transcribes 16 kHz mono waveforms with one model, a batch at a time."""

    def __init__(self, model: Model) -> None:
        self.model = model
        self.hotword_encoder = (
            HotwordEncoder(model.network, model.tokens, model.seg_dict)
            if model.dims.seaco is not None
            else None
        )

    def transcribe(self, audio: Audio, *, hotwords: Sequence[str] = ()) -> Transcript:
        """One waveform (float in [-1, 1] or int16, 16 kHz, mono) -> its transcript."""
        return self.transcribe_batch([audio], hotwords=[hotwords])[0]

    def transcribe_batch(
        self, audios: Sequence[Audio], *, hotwords: Sequence[Sequence[str]] | None = None
    ) -> list[Transcript]:
        """Several waveforms decoded together -> one transcript each, in order.

        ``hotwords`` gives one phrase list per waveform (SeACo models only). Each result is
        the same as decoding that waveform alone.
        """
        if hotwords is None:
            hotwords = [()] * len(audios)
        if len(hotwords) != len(audios):
            raise ValueError(f"{len(hotwords)} hotword lists for {len(audios)} waveforms")
        lists = [normalize_hotwords(h) for h in hotwords]
        if any(lists) and self.hotword_encoder is None:
            raise ValueError(
                f"hotwords need a SeACo-Paraformer model; {self.model.directory} is "
                f"'{self.model.dims.family}'"
            )
        if not audios:
            return []
        waves = [as_waveform(a, i) for i, a in enumerate(audios)]
        lengths = torch.tensor([len(w) for w in waves])
        batch = torch.zeros(len(waves), int(lengths.max()))
        for i, w in enumerate(waves):
            batch[i, : len(w)] = w
        device = self.model.device
        feats, feat_lens = self.model.frontend(batch.to(device), lengths.to(device))
        # Audio too short for one analysis frame (< 25 ms) has nothing to decode.
        keep = [i for i, n in enumerate(feat_lens.tolist()) if n > 0]
        decoded = [Decoded([], []) for _ in waves]
        if keep:
            index = torch.tensor(keep, device=device)
            encoder = self.hotword_encoder
            plan = encoder.batch([lists[i] for i in keep]) if encoder else None
            feats = feats[index].to(self.model.dtype)
            results = decode_batch(self.model.network, feats, feat_lens[index], plan)
            for i, d in zip(keep, results):
                decoded[i] = d
        return [
            self.transcript(d, len(w) / SAMPLE_RATE, h) for d, w, h in zip(decoded, waves, lists)
        ]

    def transcript(
        self, decoded: Decoded, duration: float, hotwords: tuple[str, ...]
    ) -> Transcript:
        segment = make_segment(self.model, decoded, 0.0, duration)
        text = segment.text if segment else ""
        return Transcript(
            text=text,
            duration=duration,
            segments=(segment,) if segment else (),
            hotwords=hotwords,
            hotwords_found=hotwords_found(text, hotwords),
        )


def make_segment(model: Model, decoded: Decoded, start: float, duration: float) -> Segment | None:
    """A decoded stretch of audio starting ``start`` seconds into its input -> a ``Segment``
    with times on the input's timeline, or None if nothing was recognised."""
    text, words = postprocess(model.tokens.to_tokens(decoded.ids), decoded.spans)
    if not text:
        return None
    # The reference can place a first token before 0 (its 1.5-frame shift) and the last past
    # the end (LFR frames overhang the audio); times outside the segment help no one.
    tokens = tuple(
        Token(w.text, start + clamp(w.start, duration), start + clamp(w.end, duration))
        for w in words
    )
    return Segment(start, start + duration, text, tokens, tuple(decoded.ids))


def clamp(seconds: float, duration: float) -> float:
    return min(max(seconds, 0.0), duration)


def as_waveform(audio: Audio, index: int) -> Tensor:
    """Validate and convert one input to a float32 1-D tensor in [-1, 1]."""
    array = audio.detach().cpu().numpy() if isinstance(audio, Tensor) else np.asarray(audio)
    if array.ndim != 1:
        raise ValueError(
            f"waveform {index} has shape {array.shape}; expected mono 1-D samples at 16 kHz"
        )
    if array.dtype == np.int16:
        array = array.astype(np.float32) / 32768.0
    elif not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"waveform {index} has dtype {array.dtype}; expected float or int16")
    if not np.isfinite(array).all():
        raise ValueError(f"waveform {index} contains NaN or infinite samples")
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
