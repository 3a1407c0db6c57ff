"""What the engine needs from a recogniser: features, a batch cost, and batched decoding.

The engine (scheduling, memory, regrouping) is the same for every model family; a backend adapts
one family to it. ``ParaformerBackend`` runs our Paraformer models; other families (Whisper)
implement the same protocol.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import torch

from zhuanxie.decoding import decode_batch
from zhuanxie.hotwords import HotwordEncoder
from zhuanxie.recognizer import Model, make_segment
from zhuanxie.result import Segment

LFR_SECONDS = 0.06  # one Paraformer encoder frame: 6 fbank frames of 10 ms


class Backend(Protocol):
    """One model on one device. ``decode`` is only ever called from one thread at a time."""

    name: str
    device: torch.device
    supports_hotwords: bool

    def features(self, audio: np.ndarray) -> Any:
        """Model input for one segment of 16 kHz samples; runs on CPU worker threads."""
        ...

    def frames(self, features: Any) -> int:
        """The segment's cost in the batch budget's units (60 ms frames)."""
        ...

    def decode(
        self,
        features: Sequence[Any],
        hotwords: Sequence[tuple[str, ...]],
        starts: Sequence[float],
        durations: Sequence[float],
    ) -> list[Segment | None]:
        """One batch -> a segment per item on its input's timeline (None: nothing recognised)."""
        ...

    def warm_up(self, frames: int) -> None:
        """Decode a batch of about ``frames`` padded frames of the longest kind, for measuring."""
        ...


class ParaformerBackend:
    """Paraformer, BiCif and SeACo-Paraformer models loaded with ``load_model``."""

    def __init__(self, model: Model) -> None:
        self.model = model
        self.name = str(model.directory)
        self.device = model.device
        self.supports_hotwords = model.dims.seaco is not None
        # Features are computed on the CPU by the decode workers, leaving the device to models.
        self.frontend = copy.deepcopy(model.frontend).cpu()
        self.hotword_encoder = (
            HotwordEncoder(model.network, model.tokens, model.seg_dict)
            if self.supports_hotwords
            else None
        )

    def features(self, audio: np.ndarray) -> torch.Tensor:
        """(S,) samples -> (T', 560) float32 features."""
        wave = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))[None]
        feats, lens = self.frontend(wave, torch.tensor([wave.shape[1]]))
        return feats[0, : int(lens[0])]

    def frames(self, features: torch.Tensor) -> int:
        return int(features.shape[0])

    def decode(
        self,
        features: Sequence[torch.Tensor],
        hotwords: Sequence[tuple[str, ...]],
        starts: Sequence[float],
        durations: Sequence[float],
    ) -> list[Segment | None]:
        model = self.model
        lens = torch.tensor([f.shape[0] for f in features])
        batch = torch.zeros(len(features), int(lens.max()), features[0].shape[1])
        for i, f in enumerate(features):
            batch[i, : f.shape[0]] = f
        encoder = self.hotword_encoder
        plan = encoder.batch(list(hotwords)) if encoder else None
        batch, lens = batch.to(model.device, model.dtype), lens.to(model.device)
        decoded = decode_batch(model.network, batch, lens, plan)
        return [
            make_segment(model, d, s, t) for d, s, t in zip(decoded, starts, durations, strict=True)
        ]

    def warm_up(self, frames: int) -> None:
        # Normalised features look like noise; zeros could give CIF no tokens and so skip the
        # decoder, whose memory the warm-up must include.
        generator = torch.Generator().manual_seed(0)
        size = self.model.dims.encoder.input_size
        feats = torch.randn(2, max(1, frames // 2), size, generator=generator)
        lens = torch.full((2,), feats.shape[1])
        model = self.model
        decode_batch(model.network, feats.to(model.device, model.dtype), lens.to(model.device))
