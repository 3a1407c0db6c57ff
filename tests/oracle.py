"""funasr as the reference implementation: the harness every parity test compares against.

Test-only; nothing under zhuanxie/ may import funasr. funasr is imported lazily, so collecting tests
stays fast and a missing funasr fails only the tests that need it.

Which funasr path each function follows (funasr 1.4.16):
- `funasr_model`: `AutoModel(model=<dir>, ...)`. A local dir with configuration.json goes through
  `download_from_ms` (paths from `file_path_metas` merged over config.yaml, our kwargs over both),
  then `AutoModel.build_model` (tokenizer, `WavFrontend`, model class from the registry,
  `load_pretrained_model`, `.eval()`).
- `funasr_transcribe`: `AutoModel.generate(wave, hotword=..., output_timestamp=...)` for the
  text and timestamps users see, then the same steps the model's own `inference` takes, called one
  by one to capture the tensors: `load_audio_text_image_video` + `extract_fbank` (features),
  `model.encode`, `model.calc_predictor` (CIF), then `model.cal_decoder_with_predictor`
  (Paraformer, BiCif) or `generate_hotwords_list` + `_seaco_decode_with_ASF` (SeACo), and
  `calc_predictor_timestamp` (the upsampled CIF used for timestamps by CifPredictorV3 models).
- `funasr_state_dict`: the registered model class built from a config the way `build_model`
  does, under `torch.manual_seed(seed)`, i.e. PyTorch's default initialisation.
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

SAMPLE_RATE = 16000
# Token ids funasr removes from a hypothesis (blank, sos, eos), in `Paraformer.inference`.
FILTERED_IDS = frozenset({0, 1, 2})


@dataclass(frozen=True)
class FunasrResult:
    """funasr's output for one utterance, decoded alone (batch size 1)."""

    text: str
    """`generate()`'s text (space-joined words whenever timestamps are produced)."""
    timestamps: list[tuple[int, int]]
    """`generate()`'s [start_ms, end_ms] per word; empty when funasr produced none."""
    token_ids: list[int]
    """Greedy ids with blank/sos/eos removed, as `inference` computes them."""
    tokens: list[str]
    """`token_ids` as token strings."""
    features: Tensor
    """(T', 560) LFR + CMVN features, the encoder input."""
    encoder_out: Tensor
    """(T', D) encoder output."""
    alphas: Tensor
    """(T'+1,) CIF weights after the tail frame is appended (tail_threshold 0.45 at T')."""
    peaks: Tensor
    """(T'+1,) CIF integrate-and-fire peaks (cumulative weight at fire frames)."""
    token_count: int
    """round(sum(alphas)): N, the number of decoder positions (incl. the trailing </s>)."""
    acoustic_embeds: Tensor
    """(N, D) CIF acoustic embeddings, the decoder input."""
    log_probs: Tensor
    """(N, V) log-softmax of the final distribution (SeACo: after merging the bias branch)."""
    upsampled_alphas: Tensor | None
    """(3*T',) CifPredictorV3's upsampled alphas that drive timestamps; None for Paraformer."""
    upsampled_peaks: Tensor | None
    """(3*T',) peaks of the upsampled alphas; None for Paraformer."""
    hotword_ids: list[list[int]] | None
    """SeACo's hotword token ids as funasr builds them (last entry [sos]); None without."""


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence funasr's prints and log records, and shield the caller's global RNG state.

    `AutoModel.build_model` reseeds random, numpy and torch (`set_all_random_seed(0)`); restoring
    the states keeps a test's own seeded draws independent of whether a model was cached.
    """
    states = (random.getstate(), np.random.get_state(), torch.random.get_rng_state())
    previous_disable = logging.root.manager.disable
    logging.disable(logging.CRITICAL)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        logging.disable(previous_disable)
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.random.set_rng_state(states[2])


def funasr_model(model_dir: Path | str, device: str = "cpu") -> Any:
    """funasr's `AutoModel` for a local model dir, cached per (resolved dir, device).

    dither is forced to 0 (also in our configs) so features are deterministic; `ncpu` is the
    current torch thread count because AutoModel calls `torch.set_num_threads(ncpu)` globally.
    """
    return _cached_model(str(Path(model_dir).resolve()), device)


@functools.cache
def _cached_model(model_dir: str, device: str) -> Any:
    with _quiet():
        from funasr import AutoModel

        return AutoModel(
            model=model_dir,
            device=device,
            ncpu=torch.get_num_threads(),
            batch_size=1,
            frontend_conf={"dither": 0.0},
            disable_update=True,
            disable_pbar=True,
            disable_log=True,
            log_level="ERROR",
        )


def hotword_argument(hotwords: list[str] | None) -> str | None:
    """funasr's `hotword` kwarg: one space-separated string (a list crashes in funasr).

    funasr splits the string on whitespace, so a hotword may not contain any; `[]` becomes `""`,
    which funasr turns into a bias list holding only `[sos]`.
    """
    if hotwords is None:
        return None
    for word in hotwords:
        if not word or word != "".join(word.split()):
            raise ValueError(f"hotword {word!r} is empty or contains whitespace")
    return " ".join(hotwords)


def funasr_transcribe(
    model_dir: Path,
    wave: np.ndarray,
    hotwords: list[str] | None = None,
    *,
    output_timestamp: bool = False,
) -> FunasrResult:
    """Decode one float32 16 kHz mono `wave` with funasr, capturing intermediate tensors.

    `output_timestamp` matters only for plain Paraformer (SeACo and BiCif always produce
    timestamps); with it funasr also switches the text to space-joined words.
    """
    if wave.dtype != np.float32 or wave.ndim != 1:
        raise ValueError(f"wave must be 1-D float32, got {wave.ndim}-D {wave.dtype}")
    auto = funasr_model(model_dir)
    is_seaco = type(auto.model).__name__ == "SeacoParaformer"
    if hotwords is not None and not is_seaco:
        raise ValueError(f"hotwords given for {type(auto.model).__name__}, which ignores them")
    hotword = hotword_argument(hotwords)
    with _quiet(), torch.no_grad():
        results = auto.generate(wave, hotword=hotword, output_timestamp=output_timestamp)
        captured = _capture(auto, wave, hotword)
    # With no CIF token at all, Paraformer yields [{"text": ""}] but SeACo yields no result.
    result: dict[str, Any] = results[0] if results else {"text": ""}
    tokenizer = auto.kwargs["tokenizer"]
    return FunasrResult(
        text=result["text"],
        timestamps=[(int(start), int(end)) for start, end in result.get("timestamp", [])],
        tokens=list(tokenizer.ids2tokens(captured["token_ids"])),
        **captured,
    )


def _capture(auto: Any, wave: np.ndarray, hotword: str | None) -> dict[str, Any]:
    """Re-run the steps of `model.inference` one by one, keeping each step's output."""
    from funasr.utils.load_utils import extract_fbank, load_audio_text_image_video

    model, frontend, tokenizer = auto.model, auto.kwargs["frontend"], auto.kwargs["tokenizer"]
    is_seaco = type(model).__name__ == "SeacoParaformer"
    hotword_ids = None
    if is_seaco:
        hotword_ids = model.generate_hotwords_list(hotword, tokenizer=tokenizer, frontend=frontend)
    audio = load_audio_text_image_video([wave], fs=frontend.fs, audio_fs=SAMPLE_RATE)
    features, feature_lens = extract_fbank(audio, data_type="sound", frontend=frontend)
    encoder_out, encoder_lens = model.encode(features, feature_lens)
    embeds, count, alphas, peaks = model.calc_predictor(encoder_out, encoder_lens)[:4]
    count = count.round().long()
    n = int(count[0])
    log_probs = encoder_out.new_zeros(1, 0, len(tokenizer.token_list))
    upsampled_alphas = upsampled_peaks = None
    if n >= 1:  # otherwise funasr's inference returns before decoding
        if is_seaco:
            log_probs = model._seaco_decode_with_ASF(
                encoder_out, encoder_lens, embeds, count, hw_list=hotword_ids
            )
        else:
            log_probs, _ = model.cal_decoder_with_predictor(
                encoder_out, encoder_lens, embeds, count
            )
        if hasattr(model, "calc_predictor_timestamp"):
            _, _, up_alphas, up_peaks = model.calc_predictor_timestamp(
                encoder_out, encoder_lens, count
            )
            upsampled_alphas, upsampled_peaks = up_alphas[0], up_peaks[0]
    return {
        "token_ids": [i for i in log_probs[0].argmax(-1).tolist() if i not in FILTERED_IDS],
        "features": features[0],
        "encoder_out": encoder_out[0],
        "alphas": alphas[0],
        "peaks": peaks[0],
        "token_count": n,
        "acoustic_embeds": embeds[0, :n],
        "log_probs": log_probs[0, :n],
        "upsampled_alphas": upsampled_alphas,
        "upsampled_peaks": upsampled_peaks,
        "hotword_ids": hotword_ids,
    }


def funasr_state_dict(config: Mapping[str, Any], seed: int) -> dict[str, Tensor]:
    """Weights of funasr's own model class for `config`, default-initialised under `seed`.

    `config` is a config.yaml mapping plus `vocab_size` (funasr takes the vocab size from the
    token list). The input size is n_mels * lfr_m, as AutoModel takes it from the frontend.
    """
    with _quiet():
        from funasr.register import tables

        model_class = tables.model_classes.get(config["model"])
    if model_class is None:
        raise ValueError(f"funasr has no model class {config['model']!r}")
    frontend_conf = config["frontend_conf"]
    kwargs = {**config["model_conf"], **config}
    kwargs["input_size"] = frontend_conf["n_mels"] * frontend_conf["lfr_m"]
    torch.manual_seed(seed)
    with _quiet():
        model = model_class(**kwargs)
    return dict(model.state_dict())
